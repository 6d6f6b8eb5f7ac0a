// Tools for DeepSeek-V3 / R1: describing a request's functions to the model, and reading the calls
// it writes back.
//
// The calls are written in DeepSeek's tool-call tokens (the format the published chat templates
// render for earlier assistant turns):
//   <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>NAME\n```json\nARGS\n```<｜tool▁call▁end｜>
//   [more <｜tool▁call▁begin｜>…<｜tool▁call▁end｜>]<｜tool▁calls▁end｜>
// The published R1 template does not describe tools to the model, so the description is a
// system-prompt section written here (ToolsSection), in the same format the model is asked to use.
// Its fixed text holds control tokens (the format example); the request's names, descriptions
// and schemas go in through `quote` as plain text, so they can never become control tokens.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "coordinator/chat/chat_template.h"

namespace r1 {

struct ToolSpec {
  std::string name;
  std::string description;  // may be empty
  std::string parameters;   // JSON Schema text; may be empty
};

inline constexpr absl::string_view kToolCallsBegin = "<｜tool▁calls▁begin｜>";
inline constexpr absl::string_view kToolCallsEnd = "<｜tool▁calls▁end｜>";
inline constexpr absl::string_view kToolCallBegin = "<｜tool▁call▁begin｜>";
inline constexpr absl::string_view kToolCallEnd = "<｜tool▁call▁end｜>";
inline constexpr absl::string_view kToolSep = "<｜tool▁sep｜>";

// The system-prompt section describing `tools`. `quote` turns a request string into what stands
// for it in the template text (the prompt encoder's markers).
std::string ToolsSection(const std::vector<ToolSpec>& tools,
                         const std::function<std::string(const std::string&)>& quote);

// Parses the text of one tool-call block (from kToolCallsBegin, control tokens as text, to
// kToolCallsEnd or the end of the generation). INVALID_ARGUMENT when it is not well formed (the
// caller then returns the text as plain content). Arguments are returned as written (JSON text);
// `complete` is false when the block was cut off (no kToolCallsEnd).
absl::StatusOr<std::vector<ToolCall>> ParseToolCallBlock(absl::string_view block, bool* complete);

// A valid function name for the APIs: 1..64 of [A-Za-z0-9_-.] (OpenAI's rule plus '.').
bool IsValidToolName(absl::string_view name);

}  // namespace r1

// DeepSeek-V3 / R1 chat templates in C++. The model folder's tokenizer_config.json carries a Jinja
// template; rather than run a Jinja interpreter, we recognise which DeepSeek template it is and
// render the same string (tests/tokenizer checks every conversation of a set against the Jinja
// rendering by @huggingface/jinja). The two published templates differ in a few switches, kept in
// ChatDialect; a template we do not recognise is an error, never a best guess.
//
// The output is text with control tokens in it: encode it with Tokenizer::Encode(text,
// /*parse_special=*/true). User text must never be encoded that way on its own.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace r1 {

struct ToolCall {
  std::string type = "function";
  std::string name;
  std::string arguments;  // JSON text, inserted verbatim
};

struct ChatMessage {
  std::string role;                    // "system", "user", "assistant" or "tool"
  std::optional<std::string> content;  // nullopt: JSON null (an assistant turn of tool calls only)
  std::optional<std::vector<ToolCall>> tool_calls;  // nullopt: the message has no "tool_calls" key
};

// What distinguishes the DeepSeek templates.
struct ChatDialect {
  // V3: an assistant turn renders its tool calls only when its content is null, and the closing
  // "<｜tool▁calls▁end｜><｜end▁of▁sentence｜>" follows each call after the first (a single call is
  // never closed; the published template does this). R1: tool calls render whenever the message
  // has "tool_calls", after its content, and are closed once after the last call.
  enum class ToolCalls { kV3, kR1 } tool_calls = ToolCalls::kV3;
  // R1: an assistant turn keeps only the text after its last "</think>".
  bool drop_reasoning = false;
  // Between consecutive tool outputs: "\n" in V3, nothing in R1.
  std::string tool_output_separator;
  // Appended when add_generation_prompt: "<｜Assistant｜>" (V3), "<｜Assistant｜><think>\n" (R1).
  std::string generation_prompt;
};

class ChatTemplate {
 public:
  // Recognises `jinja_source` (tokenizer_config.json's chat_template); `bos_token` is what the
  // template's {{ bos_token }} prints.
  static absl::StatusOr<ChatTemplate> FromJinja(absl::string_view jinja_source,
                                                std::string bos_token);

  // The prompt text for `messages`, as the Jinja template renders it.
  absl::StatusOr<std::string> Render(absl::Span<const ChatMessage> messages,
                                     bool add_generation_prompt) const;

  const ChatDialect& dialect() const { return dialect_; }
  // True when the generation prompt opens the reasoning block (R1): the reply starts inside it.
  bool generation_starts_in_reasoning() const;

 private:
  ChatDialect dialect_;
  std::string bos_token_;
};

}  // namespace r1

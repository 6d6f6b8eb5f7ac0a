// Prompt text → token ids such that only the chat template inserts control tokens. A user who
// types "<｜User｜>" or "<｜end▁of▁sentence｜>" gets those characters as plain text.
//
// How: every string a request supplies (message contents, tool-call names and arguments) is
// replaced by a unique marker before rendering; the rendered text is split at the markers; control
// tokens are looked for only in the template's own text; each run of plain text between control
// tokens (template text and user text together, exactly the runs Hugging Face's tokenizer would
// encode on their own) is encoded with parse_special off. For text with no control-token strings
// in it, the ids equal Encode(Render(messages), parse_special=true).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "coordinator/chat/chat_template.h"
#include "coordinator/chat/tool_calls.h"
#include "coordinator/tokenizer/tokenizer.h"

namespace r1::http {

class PromptEncoder {
 public:
  // `chat_template` may be absent (a model folder without one): chat requests then fail.
  PromptEncoder(const Tokenizer& tokenizer, std::optional<ChatTemplate> chat_template);

  // The ids of the templated conversation; with add_generation_prompt, then `assistant_prefix`
  // (template text: it may hold control tokens, e.g. "</think>\n\n" to skip the reasoning).
  // `tools` are described in the system prompt (ToolsSection, appended to the first system
  // message or in a new one), their strings as plain text.
  absl::StatusOr<std::vector<int32_t>> EncodeChat(absl::Span<const ChatMessage> messages,
                                                  bool add_generation_prompt,
                                                  absl::string_view assistant_prefix = "",
                                                  absl::Span<const ToolSpec> tools = {}) const;
  // A raw completion prompt: BOS (when the tokenizer has one and `add_bos`), then the text as
  // plain text.
  std::vector<int32_t> EncodeRaw(absl::string_view text, bool add_bos) const;

  const std::optional<ChatTemplate>& chat_template() const { return template_; }
  const Tokenizer& tokenizer() const { return tokenizer_; }
  // True when the reply starts inside <think> (R1's generation prompt opens it).
  bool starts_in_reasoning() const;

 private:
  // Appends template text: control tokens become ids, other text joins `plain` (flushed first).
  void AppendTemplateText(absl::string_view text, std::string* plain,
                          std::vector<int32_t>* ids) const;
  void FlushPlain(std::string* plain, std::vector<int32_t>* ids) const;

  const Tokenizer& tokenizer_;
  std::optional<ChatTemplate> template_;
  // The added tokens' texts, by first byte, longest first (leftmost-longest matching).
  std::vector<std::vector<std::pair<std::string, int32_t>>> control_by_first_byte_;
};

}  // namespace r1::http

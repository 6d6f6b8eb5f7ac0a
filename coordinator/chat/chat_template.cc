#include "coordinator/chat/chat_template.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"

namespace r1 {
namespace {

constexpr absl::string_view kEos = "<｜end▁of▁sentence｜>";
constexpr absl::string_view kGenerationPromptTag =
    "{% if add_generation_prompt and not ns.is_tool %}{{'";

std::string ToolCallBody(const ToolCall& call) {
  return absl::StrCat(call.type, "<｜tool▁sep｜>", call.name, "\n```json\n", call.arguments,
                      "\n```<｜tool▁call▁end｜>");
}

absl::Status MissingContent(size_t index, absl::string_view role) {
  return absl::InvalidArgumentError(
      absl::StrCat("message ", index, " (", role, "): content is null"));
}

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplate::FromJinja(absl::string_view jinja_source,
                                                     std::string bos_token) {
  // Jinja string literals may write a newline as \n or as the character itself.
  const std::string src = absl::StrReplaceAll(jinja_source, {{"\\n", "\n"}});
  if (!absl::StrContains(src, "<｜User｜>") || !absl::StrContains(src, "<｜Assistant｜>") ||
      !absl::StrContains(src, "ns.system_prompt")) {
    return absl::UnimplementedError("chat_template is not a DeepSeek-V3/R1 template");
  }
  if (absl::StrContains(src, "is_last_user") || absl::StrContains(src, "thinking")) {
    return absl::UnimplementedError(
        "chat_template is a later DeepSeek template (V3-0324 / R1-0528 / V3.1), not supported yet");
  }
  ChatTemplate t;
  t.bos_token_ = std::move(bos_token);
  ChatDialect& d = t.dialect_;
  if (absl::StrContains(src, "'tool_calls' in message")) {
    d.tool_calls = ChatDialect::ToolCalls::kR1;
  } else if (absl::StrContains(src, "message['content'] is none")) {
    d.tool_calls = ChatDialect::ToolCalls::kV3;
  } else {
    return absl::UnimplementedError("chat_template: unrecognised tool-call rendering");
  }
  d.drop_reasoning = absl::StrContains(src, "split('</think>')[-1]");
  // (A count, not a literal: GCC 12 warns falsely on assigning a 1-char literal here.)
  d.tool_output_separator.assign(absl::StrContains(src, "'\n<｜tool▁output▁begin｜>'") ? 1 : 0,
                                 '\n');
  const size_t g = absl::string_view(src).find(kGenerationPromptTag);
  if (g == std::string::npos) {
    return absl::UnimplementedError("chat_template: no generation prompt found");
  }
  const size_t start = g + kGenerationPromptTag.size();
  const size_t end = src.find("'}}", start);
  if (end == std::string::npos)
    return absl::UnimplementedError("chat_template: bad generation prompt");
  d.generation_prompt = src.substr(start, end - start);
  return t;
}

bool ChatTemplate::generation_starts_in_reasoning() const {
  const std::string& p = dialect_.generation_prompt;
  return absl::EndsWith(p, "<think>") || absl::EndsWith(p, "<think>\n");
}

absl::StatusOr<std::string> ChatTemplate::Render(absl::Span<const ChatMessage> messages,
                                                 bool add_generation_prompt) const {
  const ChatDialect& d = dialect_;
  // The template's namespace.
  bool is_first = false, is_tool = false, is_output_first = true, is_first_sp = true;
  std::string system_prompt;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role != "system") continue;
    if (!m.content) return MissingContent(i, m.role);
    if (is_first_sp) {
      system_prompt += *m.content;
      is_first_sp = false;
    } else {
      absl::StrAppend(&system_prompt, "\n\n", *m.content);
    }
  }
  std::string out = absl::StrCat(bos_token_, system_prompt);
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role == "user") {
      if (!m.content) return MissingContent(i, m.role);
      is_tool = false;
      absl::StrAppend(&out, "<｜User｜>", *m.content);
    } else if (m.role == "assistant") {
      const bool renders_calls = d.tool_calls == ChatDialect::ToolCalls::kR1
                                     ? m.tool_calls.has_value()
                                     : !m.content.has_value();
      if (renders_calls) {
        if (!m.tool_calls) {
          return absl::InvalidArgumentError(
              absl::StrCat("message ", i, " (assistant): no content and no tool_calls"));
        }
        is_tool = false;
        for (const ToolCall& call : *m.tool_calls) {
          if (!is_first) {
            absl::StrAppend(&out, "<｜Assistant｜>", m.content.value_or(""),
                            "<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>", ToolCallBody(call));
            is_first = true;
          } else {
            absl::StrAppend(&out, "\n<｜tool▁call▁begin｜>", ToolCallBody(call));
            if (d.tool_calls == ChatDialect::ToolCalls::kV3) {
              absl::StrAppend(&out, "<｜tool▁calls▁end｜>", kEos);
            }
          }
        }
        if (d.tool_calls == ChatDialect::ToolCalls::kR1)
          absl::StrAppend(&out, "<｜tool▁calls▁end｜>", kEos);
      } else {
        if (!m.content) return MissingContent(i, m.role);
        if (is_tool) {
          absl::StrAppend(&out, "<｜tool▁outputs▁end｜>", *m.content, kEos);
          is_tool = false;
        } else {
          absl::string_view content = *m.content;
          if (d.drop_reasoning) {
            const size_t end_think = content.rfind("</think>");
            if (end_think != absl::string_view::npos) content.remove_prefix(end_think + 8);
          }
          absl::StrAppend(&out, "<｜Assistant｜>", content, kEos);
        }
      }
    } else if (m.role == "tool") {
      if (!m.content) return MissingContent(i, m.role);
      is_tool = true;
      if (is_output_first) {
        absl::StrAppend(&out, "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>", *m.content,
                        "<｜tool▁output▁end｜>");
        is_output_first = false;
      } else {
        absl::StrAppend(&out, d.tool_output_separator, "<｜tool▁output▁begin｜>", *m.content,
                        "<｜tool▁output▁end｜>");
      }
    } else if (m.role != "system") {
      return absl::InvalidArgumentError(
          absl::StrCat("message ", i, ": unknown role '", m.role, "'"));
    }
  }
  if (is_tool) out += "<｜tool▁outputs▁end｜>";
  if (add_generation_prompt && !is_tool) out += d.generation_prompt;
  return out;
}

}  // namespace r1

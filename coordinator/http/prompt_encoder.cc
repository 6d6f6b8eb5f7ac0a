#include "coordinator/http/prompt_encoder.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace r1::http {
namespace {

constexpr absl::string_view kMarkerOpen = "\xEE\x80\x80";   // U+E000 (private use)
constexpr absl::string_view kMarkerClose = "\xEE\x80\x81";  // U+E001

}  // namespace

PromptEncoder::PromptEncoder(const Tokenizer& tokenizer, std::optional<ChatTemplate> chat_template)
    : tokenizer_(tokenizer), template_(std::move(chat_template)), control_by_first_byte_(256) {
  for (int32_t id = 0; id < tokenizer_.id_end(); ++id) {
    if (!tokenizer_.IsAdded(id)) continue;
    const std::string text(tokenizer_.TokenString(id));
    if (text.empty()) continue;
    control_by_first_byte_[static_cast<unsigned char>(text[0])].emplace_back(text, id);
  }
  for (auto& bucket : control_by_first_byte_) {
    std::sort(bucket.begin(), bucket.end(),
              [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  }
}

bool PromptEncoder::starts_in_reasoning() const {
  return template_ && template_->generation_starts_in_reasoning();
}

void PromptEncoder::FlushPlain(std::string* plain, std::vector<int32_t>* ids) const {
  if (plain->empty()) return;
  tokenizer_.Encode(*plain, /*parse_special=*/false, ids);
  plain->clear();
}

void PromptEncoder::AppendTemplateText(absl::string_view text, std::string* plain,
                                       std::vector<int32_t>* ids) const {
  size_t i = 0;
  while (i < text.size()) {
    const auto& bucket = control_by_first_byte_[static_cast<unsigned char>(text[i])];
    const std::pair<std::string, int32_t>* match = nullptr;
    for (const auto& candidate : bucket) {
      if (absl::StartsWith(text.substr(i), candidate.first)) {
        match = &candidate;
        break;
      }
    }
    if (match == nullptr) {
      plain->push_back(text[i]);
      ++i;
      continue;
    }
    FlushPlain(plain, ids);
    ids->push_back(match->second);
    i += match->first.size();
  }
}

absl::StatusOr<std::vector<int32_t>> PromptEncoder::EncodeChat(
    absl::Span<const ChatMessage> messages, bool add_generation_prompt,
    absl::string_view assistant_prefix, absl::Span<const ToolSpec> tools) const {
  if (!template_) {
    return absl::FailedPreconditionError(
        "this model folder has no usable chat template; use /v1/completions or raw prompts");
  }
  const ChatDialect& dialect = template_->dialect();
  // The request's own strings, each replaced by a marker. R1 drops an earlier assistant turn's
  // reasoning inside the template; a marker hides the "</think>" from it, so that one case is
  // applied here, on the same condition as ChatTemplate::Render (a plain assistant turn that does
  // not follow tool output).
  std::vector<std::string> user_text;
  std::vector<ChatMessage> marked(messages.begin(), messages.end());
  bool after_tool = false;
  for (ChatMessage& m : marked) {
    if (m.role == "user") {
      after_tool = false;
    } else if (m.role == "tool") {
      after_tool = true;
    } else if (m.role == "assistant") {
      const bool renders_calls = dialect.tool_calls == ChatDialect::ToolCalls::kR1
                                     ? m.tool_calls.has_value()
                                     : !m.content.has_value();
      if (!renders_calls && !after_tool && dialect.drop_reasoning && m.content) {
        const size_t end = m.content->rfind("</think>");
        if (end != std::string::npos) m.content = m.content->substr(end + 8);
      }
      after_tool = false;
    }
  }
  // A marker prefix that no request string contains.
  std::string prefix;
  for (uint64_t nonce = 0;; ++nonce) {
    prefix = absl::StrCat(kMarkerOpen, nonce, ":");
    bool clash = false;
    for (const ChatMessage& m : marked) {
      if (m.content && absl::StrContains(*m.content, prefix)) clash = true;
      if (m.tool_calls) {
        for (const ToolCall& c : *m.tool_calls) {
          if (absl::StrContains(c.name, prefix) || absl::StrContains(c.arguments, prefix)) {
            clash = true;
          }
        }
      }
    }
    for (const ToolSpec& t : tools) {
      for (const std::string* s : {&t.name, &t.description, &t.parameters}) {
        if (absl::StrContains(*s, prefix)) clash = true;
      }
    }
    if (!clash) break;
  }
  auto mark = [&](std::string* s) {
    user_text.push_back(std::move(*s));
    *s = absl::StrCat(prefix, user_text.size() - 1, kMarkerClose);
  };
  for (ChatMessage& m : marked) {
    if (m.content) mark(&*m.content);
    if (m.tool_calls) {
      for (ToolCall& c : *m.tool_calls) {
        mark(&c.name);
        mark(&c.arguments);
      }
    }
  }
  if (!tools.empty()) {
    const std::string section = ToolsSection(
        std::vector<ToolSpec>(tools.begin(), tools.end()), [&](const std::string& s) {
          std::string copy = s;
          mark(&copy);
          return copy;
        });
    if (!marked.empty() && marked.front().role == "system") {
      ChatMessage& system = marked.front();
      system.content = system.content && !system.content->empty()
                           ? absl::StrCat(*system.content, "\n\n", section)
                           : section;
    } else {
      ChatMessage system;
      system.role = "system";
      system.content = section;
      marked.insert(marked.begin(), std::move(system));
    }
  }
  auto rendered = template_->Render(marked, add_generation_prompt);
  if (!rendered.ok()) return rendered.status();
  if (add_generation_prompt && absl::EndsWith(*rendered, dialect.generation_prompt)) {
    rendered->append(assistant_prefix.data(), assistant_prefix.size());
  }

  std::vector<int32_t> ids;
  std::string plain;
  const absl::string_view text = *rendered;
  size_t from = 0;
  while (from < text.size()) {
    const size_t at = text.find(prefix, from);
    AppendTemplateText(text.substr(from, at == absl::string_view::npos ? at : at - from), &plain,
                       &ids);
    if (at == absl::string_view::npos) break;
    const size_t digits = at + prefix.size();
    const size_t close = text.find(kMarkerClose, digits);
    size_t index = 0;
    if (close == absl::string_view::npos ||
        !absl::SimpleAtoi(text.substr(digits, close - digits), &index) ||
        index >= user_text.size()) {
      return absl::InternalError("prompt encoder: a marker was damaged by the template");
    }
    plain += user_text[index];
    from = close + kMarkerClose.size();
  }
  FlushPlain(&plain, &ids);
  return ids;
}

std::vector<int32_t> PromptEncoder::EncodeRaw(absl::string_view text, bool add_bos) const {
  std::vector<int32_t> ids;
  if (add_bos) {
    if (auto bos = tokenizer_.bos_id()) ids.push_back(*bos);
  }
  tokenizer_.Encode(text, /*parse_special=*/false, &ids);
  return ids;
}

}  // namespace r1::http

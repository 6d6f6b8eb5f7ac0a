#include "coordinator/http/completion_text.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "coordinator/tokenizer/utf8.h"

namespace r1::http {

StopMatcher::StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {
  stops_.erase(std::remove(stops_.begin(), stops_.end(), std::string()), stops_.end());
}

std::string StopMatcher::Feed(absl::string_view text, bool* matched) {
  *matched = false;
  if (stops_.empty()) return std::string(text);
  held_.append(text.data(), text.size());
  size_t first = std::string::npos;
  for (const std::string& s : stops_) first = std::min(first, held_.find(s));
  if (first != std::string::npos) {
    *matched = true;
    std::string out = held_.substr(0, first);
    held_.clear();
    return out;
  }
  // Keep the longest tail that is a proper prefix of some stop string. Stop strings are valid
  // UTF-8 and so is the text, so the cut falls between characters.
  size_t keep = 0;
  for (const std::string& s : stops_) {
    for (size_t n = std::min(held_.size(), s.size() - 1); n > keep; --n) {
      if (absl::EndsWith(held_, absl::string_view(s).substr(0, n))) {
        keep = n;
        break;
      }
    }
  }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string StopMatcher::Flush() {
  std::string out;
  out.swap(held_);
  return out;
}

CompletionText::CompletionText(const Tokenizer& tokenizer, Options options)
    : tokenizer_(tokenizer),
      options_(std::move(options)),
      decoder_(tokenizer, /*skip_special=*/true),
      stop_(options_.stop),
      parser_(options_.starts_in_reasoning) {}

void CompletionText::Route(const ReasoningParser::Delta& d, TextDelta* out) {
  out->reasoning += d.reasoning;
  absl::string_view content = d.content;
  if (!content_started_) {
    // R1 writes "</think>\n\n" before its answer; the answer starts at its first character.
    while (!content.empty() && (content.front() == '\n' || content.front() == '\r')) {
      content.remove_prefix(1);
    }
    if (!content.empty()) content_started_ = true;
  }
  out->content.append(content.data(), content.size());
}

TextDelta CompletionText::Push(const GenerationEvent& event) {
  TextDelta out;
  if (finished_) return out;
  if (event.token) {
    const int32_t id = *event.token;
    ++completion_tokens_;
    // A token counts as reasoning while the reasoning block is open (its closing tag included).
    if (options_.split_reasoning && !parser_.reasoning_ended() &&
        (parser_.in_reasoning() || options_.starts_in_reasoning)) {
      ++reasoning_tokens_;
    }
    if (options_.logprobs) {
      auto info = [&](int32_t token, float logprob) {
        TokenLogprobInfo t;
        t.id = token;
        t.bytes = std::string(tokenizer_.TokenBytes(token));
        AppendUtf8Lossy(t.bytes, /*final=*/true, &t.text);
        t.logprob = logprob;
        return t;
      };
      TokenLogprobInfo t = info(id, event.logprob);
      for (const TokenLogprob& alt : event.top_logprobs)
        t.top.push_back(info(alt.token, alt.logprob));
      out.logprobs.push_back(std::move(t));
    }
    bool matched = false;
    const std::string text = stop_.Feed(decoder_.Push(id), &matched);
    if (options_.split_reasoning) {
      Route(parser_.Feed(text), &out);
    } else {
      out.content += text;
    }
    if (matched) {
      if (options_.split_reasoning) Route(parser_.Finish(), &out);
      out.finished = true;
      out.finish = FinishReason::kStop;
      out.stopped_by_string = true;
      finished_ = true;
      return out;
    }
  }
  if (event.finish != FinishReason::kNone) {
    bool matched = false;
    std::string text = stop_.Feed(decoder_.Finish(), &matched);
    if (!matched) text += stop_.Flush();
    if (options_.split_reasoning) {
      Route(parser_.Feed(text), &out);
      Route(parser_.Finish(), &out);
    } else {
      out.content += text;
    }
    out.finished = true;
    out.finish = matched ? FinishReason::kStop : event.finish;
    out.stopped_by_string = matched;
    out.error = event.error;
    finished_ = true;
  }
  return out;
}

const char* OpenAiFinishReason(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return "stop";
    case FinishReason::kLength:
      return "length";
    case FinishReason::kCancelled:
      return "abort";
    case FinishReason::kError:
      return "error";
    case FinishReason::kNone:
      break;
  }
  return "stop";
}

const char* OllamaDoneReason(FinishReason reason) {
  switch (reason) {
    case FinishReason::kLength:
      return "length";
    case FinishReason::kCancelled:
      return "abort";
    case FinishReason::kError:
      return "error";
    default:
      return "stop";
  }
}

}  // namespace r1::http

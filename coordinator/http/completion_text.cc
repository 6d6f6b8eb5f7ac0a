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
      parser_(options_.starts_in_reasoning) {
  if (options_.parse_tool_calls) {
    tools_begin_id_ = tokenizer_.TokenToId(kToolCallsBegin);
    tools_end_id_ = tokenizer_.TokenToId(kToolCallsEnd);
  }
}

void CompletionText::EndToolBlock(bool at_finish, TextDelta* out) {
  in_tool_block_ = false;
  const std::string text = tokenizer_.Decode(tool_block_, /*skip_special=*/false);
  tool_block_.clear();
  bool complete = false;
  auto calls = ParseToolCallBlock(text, &complete);
  if (calls.ok() && (complete || at_finish)) {
    out->tool_calls.insert(out->tool_calls.end(), calls->begin(), calls->end());
    return;
  }
  // Not a tool call after all: the model's text, as it wrote it.
  ReasoningParser::Delta d;
  d.content = text;
  Route(d, out);
}

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
    // A tool-call block in the answer is collected whole, outside the text path.
    const bool answering = !options_.split_reasoning ||
                           !(parser_.in_reasoning() ||
                             (options_.starts_in_reasoning && !parser_.reasoning_ended()));
    if (in_tool_block_ || (tools_begin_id_ && id == *tools_begin_id_ && answering)) {
      in_tool_block_ = true;
      // Special tokens (EOS ending the generation inside the block, …) are not text: the decoder
      // drops them everywhere else, and kept here they would break the block's parse and show in
      // the content.
      if (!tokenizer_.IsSpecial(id)) tool_block_.push_back(id);
      if (tools_end_id_ && id == *tools_end_id_) EndToolBlock(/*at_finish=*/false, &out);
      if (event.finish != FinishReason::kNone) {
        if (in_tool_block_) EndToolBlock(/*at_finish=*/true, &out);
        if (options_.split_reasoning) Route(parser_.Finish(), &out);
        out.finished = true;
        out.finish = event.finish;
        out.error = event.error;
        finished_ = true;
      }
      return out;
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
    if (in_tool_block_) EndToolBlock(/*at_finish=*/true, &out);
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

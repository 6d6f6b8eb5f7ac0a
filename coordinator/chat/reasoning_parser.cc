#include "coordinator/chat/reasoning_parser.h"

#include <algorithm>

#include "absl/strings/match.h"

namespace r1 {
namespace {

constexpr absl::string_view kOpen = "<think>";
constexpr absl::string_view kClose = "</think>";

// The length of the longest suffix of `text` that is a proper prefix of `tag`.
size_t PartialTagSuffix(absl::string_view text, absl::string_view tag) {
  for (size_t n = std::min(text.size(), tag.size() - 1); n > 0; --n) {
    if (absl::EndsWith(text, tag.substr(0, n))) return n;
  }
  return 0;
}

}  // namespace

ReasoningParser::Delta ReasoningParser::Feed(absl::string_view text) {
  held_.append(text.data(), text.size());
  Delta delta;
  Run(&delta);
  return delta;
}

void ReasoningParser::Run(Delta* delta) {
  if (state_ == State::kStart) {
    // Wait until the text either opens with "<think>" or cannot.
    const size_t n = std::min(held_.size(), kOpen.size());
    if (absl::string_view(held_).substr(0, n) != kOpen.substr(0, n)) {
      state_ = starts_in_reasoning_ ? State::kReasoning : State::kAnswer;
    } else if (held_.size() >= kOpen.size()) {
      held_.erase(0, kOpen.size());
      state_ = State::kReasoning;
    } else {
      return;
    }
  }
  if (state_ == State::kReasoning) {
    const size_t end = absl::string_view(held_).find(kClose);
    if (end == std::string::npos) {
      const size_t keep = PartialTagSuffix(held_, kClose);
      delta->reasoning.append(held_, 0, held_.size() - keep);
      held_.erase(0, held_.size() - keep);
      return;
    }
    delta->reasoning.append(held_, 0, end);
    held_.erase(0, end + kClose.size());
    state_ = State::kAnswer;
    saw_end_ = true;
  }
  delta->content += held_;
  held_.clear();
}

ReasoningParser::Delta ReasoningParser::Finish() {
  Delta delta;
  if (state_ == State::kStart) state_ = starts_in_reasoning_ ? State::kReasoning : State::kAnswer;
  (state_ == State::kReasoning ? delta.reasoning : delta.content) += held_;
  held_.clear();
  return delta;
}

}  // namespace r1

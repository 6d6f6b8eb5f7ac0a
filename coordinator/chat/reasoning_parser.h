// Splits a generated stream into reasoning and answer as it arrives. R1 reasons inside
// <think>…</think> and its generation prompt already opens the block ("<｜Assistant｜><think>\n"),
// so the reply usually starts inside it with no <think> of its own. The parser:
//   - starts in the reasoning block when told so (R1), else in the answer (V3);
//   - drops a leading "<think>" if the model writes one anyway (and enters the block);
//   - ends the block at the first "</think>", even when it arrives split over several tokens
//     (a tail that may be the start of "</think>" is held back until it is decided);
//   - with no "</think>" at all, everything stays reasoning (the reply was cut off mid-thought).
// It works on text, so it is the same whether "</think>" is one control token (R1's id 128799) or
// spelled out in plain tokens; feed it the pieces of an IncrementalDecoder.
#pragma once

#include <string>

#include "absl/strings/string_view.h"

namespace r1 {

class ReasoningParser {
 public:
  struct Delta {
    std::string reasoning;  // new text of the reasoning block
    std::string content;    // new text of the answer
  };

  explicit ReasoningParser(bool starts_in_reasoning) : starts_in_reasoning_(starts_in_reasoning) {}

  Delta Feed(absl::string_view text);
  // The end of the stream: releases any held-back text.
  Delta Finish();

  bool in_reasoning() const { return state_ == State::kReasoning; }
  bool reasoning_ended() const { return state_ == State::kAnswer && saw_end_; }

 private:
  enum class State { kStart, kReasoning, kAnswer };
  void Run(Delta* delta);

  bool starts_in_reasoning_;
  bool saw_end_ = false;
  State state_ = State::kStart;
  std::string held_;  // text not yet assigned: a possible "<think>" / "</think>" prefix
};

}  // namespace r1

// Generated tokens → the text an API returns, one completion at a time:
//   token ids → IncrementalDecoder (whole UTF-8 characters, specials such as EOS dropped)
//             → StopMatcher (stop strings found across token boundaries; never emitted)
//             → ReasoningParser (R1's <think>…</think> → reasoning, the rest → content)
// Streaming and non-streaming responses are built from the same deltas, so they carry the same
// text. Stop strings apply to the whole generated text (reasoning included), as in vLLM and
// Ollama.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "coordinator/chat/reasoning_parser.h"
#include "coordinator/chat/tool_calls.h"
#include "coordinator/engine/engine.h"
#include "coordinator/tokenizer/incremental_decoder.h"
#include "coordinator/tokenizer/tokenizer.h"

namespace r1::http {

// Holds back text that may be the start of a stop string until it is decided.
class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops);
  // The text that is safe to emit. When a stop string is found, `*matched` becomes true, the text
  // before it is returned and everything from it on is dropped.
  std::string Feed(absl::string_view text, bool* matched);
  // End of the stream: the held-back text.
  std::string Flush();

 private:
  std::vector<std::string> stops_;
  std::string held_;
};

// One token with its log-probability and alternatives, ready for either logprobs format.
struct TokenLogprobInfo {
  int32_t id = 0;
  std::string text;  // the token's bytes, invalid UTF-8 repaired (a token may hold part of one)
  std::string bytes;
  float logprob = 0;
  std::vector<TokenLogprobInfo> top;  // alternatives, most likely first
};

struct TextDelta {
  std::string reasoning, content;
  std::vector<ToolCall> tool_calls;  // a complete tool-call block, parsed
  std::vector<TokenLogprobInfo> logprobs;
  bool finished = false;
  FinishReason finish = FinishReason::kNone;
  bool stopped_by_string = false;
  absl::Status error;
  bool empty() const {
    return reasoning.empty() && content.empty() && tool_calls.empty() && logprobs.empty() &&
           !finished;
  }
};

class CompletionText {
 public:
  struct Options {
    std::vector<std::string> stop;
    bool split_reasoning = true;       // false: everything is content (raw completions)
    bool starts_in_reasoning = false;  // the prompt opened <think>
    bool logprobs = false;
    // The request described tools: a <｜tool▁calls▁begin｜>…<｜tool▁calls▁end｜> block in the
    // answer becomes tool_calls (a block that does not parse stays content, as text).
    bool parse_tool_calls = false;
  };
  CompletionText(const Tokenizer& tokenizer, Options options);

  // Consumes one engine event of this completion. After `finished`, later events are ignored.
  TextDelta Push(const GenerationEvent& event);

  bool finished() const { return finished_; }
  int64_t completion_tokens() const { return completion_tokens_; }
  int64_t reasoning_tokens() const { return reasoning_tokens_; }

 private:
  // Text released by the stop matcher → reasoning / content.
  void Route(const ReasoningParser::Delta& d, TextDelta* out);
  // The collected tool-call block → out->tool_calls, or content when it does not parse.
  void EndToolBlock(bool at_finish, TextDelta* out);

  const Tokenizer& tokenizer_;
  Options options_;
  IncrementalDecoder decoder_;
  StopMatcher stop_;
  ReasoningParser parser_;
  bool content_started_ = false;  // leading newlines of the answer are dropped
  std::optional<int32_t> tools_begin_id_, tools_end_id_;
  bool in_tool_block_ = false;
  std::vector<int32_t> tool_block_;  // ids of the block being written
  bool finished_ = false;
  int64_t completion_tokens_ = 0, reasoning_tokens_ = 0;
};

const char* OpenAiFinishReason(FinishReason reason);
const char* OllamaDoneReason(FinishReason reason);

}  // namespace r1::http

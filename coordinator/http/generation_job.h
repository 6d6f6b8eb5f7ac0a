// One HTTP generation request in flight: submits to the Engine, turns each completion's events
// into text deltas (CompletionText), accumulates the results, times them, and ends the request
// early when every completion has met a stop string. Both APIs drive it; they differ only in how
// they format deltas and the final result.
//
// Events are processed on the engine's thread under the job's mutex (a few µs per token); the
// callbacks only format and hand bytes to an HttpExchange, which never blocks. Engine::Cancel is
// never called from inside an engine callback (the engine may hold its own lock there): it goes
// through the Canceller's thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/engine/engine.h"
#include "coordinator/http/completion_text.h"
#include "coordinator/http/metrics.h"

namespace r1::http {

// Calls Engine::Cancel on its own thread.
class Canceller {
 public:
  explicit Canceller(Engine* engine);
  ~Canceller();
  void Cancel(RequestId id);

 private:
  Engine* engine_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<RequestId> queue_;
  bool stop_ = false;
  std::thread thread_;
};

struct CompletionResult {
  std::string reasoning, content;
  std::vector<ToolCall> tool_calls;
  std::vector<TokenLogprobInfo> logprobs;
  FinishReason finish = FinishReason::kNone;
  absl::Status error;
  int64_t completion_tokens = 0, reasoning_tokens = 0;
};

class GenerationJob : public std::enable_shared_from_this<GenerationJob> {
 public:
  using Clock = std::chrono::steady_clock;
  struct Callbacks {
    // A completion's new text (streaming); may be empty. Called under the job's lock, in order.
    std::function<void(GenerationJob&, int index, const TextDelta&)> on_delta;
    // Every completion has finished. Called once, under the job's lock.
    std::function<void(GenerationJob&)> on_done;
    // The engine accepted the request; runs before any on_delta (e.g. to send response headers).
    std::function<void(GenerationJob&)> on_submitted;
    // Where the engine's events are processed (decoded, formatted, written): handed to `post`
    // in order (an HTTP connection's strand), so the engine's thread only queues them. Empty:
    // processed on the engine's thread.
    std::function<void(std::function<void()>)> post;
  };

  // Submits; an error known at once (prompt too long, engine draining, queue full) comes back here
  // and no callback runs.
  static absl::StatusOr<std::shared_ptr<GenerationJob>> Start(
      Engine& engine, Canceller& canceller, Metrics& metrics, const Tokenizer& tokenizer,
      GenerationRequest request, CompletionText::Options text_options, Callbacks callbacks,
      Clock::time_point arrival);

  // The client went away: cancel in the engine (its completions finish with kCancelled).
  void CancelByClient();

  const std::vector<CompletionResult>& results() const { return results_; }
  int64_t prompt_tokens() const { return prompt_tokens_; }
  int64_t completion_tokens() const;
  int64_t reasoning_tokens() const;
  // Nanoseconds: arrival → first token (prompt evaluation), first → last token (generation),
  // arrival → last token (total).
  int64_t prompt_eval_ns() const;
  int64_t eval_ns() const;
  int64_t total_ns() const;

 private:
  GenerationJob(Engine& engine, Canceller& canceller, Metrics& metrics, Clock::time_point arrival)
      : engine_(engine), canceller_(canceller), metrics_(metrics), arrival_(arrival) {}
  void OnEvent(const GenerationEvent& event);
  void Process(const GenerationEvent& event);  // under mu_

  Engine& engine_;
  Canceller& canceller_;
  Metrics& metrics_;
  Callbacks callbacks_;
  std::function<void(std::function<void()>)> post_;
  std::mutex mu_;
  std::vector<CompletionText> texts_;
  std::vector<CompletionResult> results_;
  std::vector<Clock::time_point> last_token_time_;
  int32_t unfinished_ = 0;
  bool done_ = false, cancel_requested_ = false, cancelled_ = false;
  // Events that arrived before Submit returned wait here (the engine's thread may run first).
  bool submitted_ = false;
  std::vector<GenerationEvent> early_;
  std::optional<RequestId> id_;
  int64_t prompt_tokens_ = 0;
  Clock::time_point arrival_, first_token_, last_token_;
  bool have_first_token_ = false;
};

}  // namespace r1::http

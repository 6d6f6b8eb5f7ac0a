// LocalEngine: the scheduler, running in this process. One scheduler thread runs continuous
// batching; its forward steps run on a StepExecutor: by default the in-process DeepseekV3Model
// (CPU reference) and its PagedKvCache (single-process mode, `r1 serve`), or the worker group
// (PoolExecutor, `r1-coordinator --http-listen`).
//
// Scheduling policy (one step = one StepExecutor::Forward):
//  - Every running sequence that is decoding contributes its one token first (oldest first).
//  - Then prefill chunks — sequences still prefilling, oldest first, then newly admitted ones
//    from the FIFO queue — fill what is left of the per-step token budget (chunked prefill): a
//    long prompt is spread over several steps and never stops the decodes already running.
//  - KV blocks are allocated as sequences grow, not reserved for the worst case. When a running
//    sequence needs a block and none is free (after evicting unused cached prefix blocks), the
//    youngest running sequence is preempted: its blocks are released and it goes back to the
//    front of the queue, to be recomputed later (its tokens so far become its prompt; its full
//    blocks usually survive in the prefix cache, so the recompute is cheap). The oldest sequence
//    can always grow to the context limit, so there is always progress: no deadlock, no crash.
//    A new sequence is admitted only while blocks for its first chunk are free.
//  - Prefix reuse: full blocks of computed tokens are registered by a chained content hash
//    (BlockManager); a sequence admitted with the same leading tokens takes those blocks instead
//    of recomputing them (at least its last prompt token is always computed, for its logits).
//  - n > 1: the completions run as separate sequences. Completion 0 is admitted first; the others
//    wait until its prompt is computed and then take its full prompt blocks from the prefix cache.
//  - Admission at Submit: a prompt with prompt + 1 > max_context, an empty prompt, an id outside
//    the vocabulary, n outside 1..16, or bad sampling fields are refused with the reason. A
//    max_new_tokens that does not fit the context is clamped to it (0 means "up to the context"):
//    the APIs pass client values straight through and the final event says kLength.
//  - Stops: EOS (unless ignore_eos), stop_token_ids, max_new_tokens, context limit.
//  - Cancel and Drain release blocks at the next step boundary (the step in flight, at most one,
//    finishes first), before the completion's final kCancelled event is delivered.
//  - Callbacks run on the scheduler thread with no lock held (they may call Stats or Cancel).
//  - An executor that is not ready (a worker group missing a rank): Submit answers UNAVAILABLE
//    with the reason and Stats().ready is false; no step runs; requests already accepted wait up
//    to not_ready_timeout_ms for it to come back, then fail with UNAVAILABLE. A failed step fails
//    its sequences with the executor's error. When the executor's cache_epoch() changes (the
//    group formed again: the workers' caches are new), the prefix cache is dropped and running
//    sequences are recomputed from their tokens, so no sequence reads KV content that is gone.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/engine/block_manager.h"
#include "coordinator/engine/engine.h"
#include "coordinator/engine/sampling.h"
#include "coordinator/engine/step_executor.h"
#include "worker/model/deepseek_v3.h"

namespace r1 {

class LocalEngine : public Engine {
 public:
  struct Options {
    std::string model_dir;
    // An already loaded model to use instead of loading model_dir (tests share one).
    std::shared_ptr<const DeepseekV3Model> model;
    // Where steps run instead of an in-process model (model_dir and model are then unused).
    std::shared_ptr<StepExecutor> executor;
    int64_t not_ready_timeout_ms = 30'000;  // accepted requests wait this long for the executor
    int64_t block_size = 16;              // tokens per KV block
    int64_t kv_blocks = 0;                // 0: from kv_memory_bytes
    int64_t kv_memory_bytes = 1ll << 30;  // the cache's budget when kv_blocks is 0 (float32 on CPU)
    int64_t max_context = 0;              // 0: min(max_position_embeddings, what the cache holds)
    int64_t max_queued_requests = 256;    // requests accepted but not yet started
    int64_t max_step_tokens = 512;        // token budget of one forward step
    int64_t max_batch_size = 64;          // sequences in one step
    bool prefix_caching = true;
    // Threads choosing a step's tokens (sampling.h, ChooseTokens); 0: as many as OpenMP offers;
    // at most 1024.
    // The tokens are the same for every count.
    int sampling_threads = 0;
  };

  static absl::StatusOr<std::unique_ptr<LocalEngine>> Create(Options options);
  ~LocalEngine() override;  // cancels what is left (final events delivered) and joins the thread

  absl::StatusOr<RequestId> Submit(GenerationRequest request,
                                   std::function<void(const GenerationEvent&)> on_event) override;
  void Cancel(RequestId id) override;
  EngineStats Stats() const override;
  void Drain(int64_t deadline_ms) override;
  int64_t max_context() const override { return max_context_; }
  int32_t eos_token_id() const override { return eos_token_id_; }

  const ModelConfig& config() const { return executor_->config(); }
  // Tests: while paused the scheduler runs no step (requests queue up, Submit still answers).
  void SetPausedForTesting(bool paused);

 private:
  struct Request;
  struct Sequence;
  struct Delivery {  // an event to hand to a callback outside the lock
    std::shared_ptr<Request> request;
    GenerationEvent event;
  };

  explicit LocalEngine(Options options) : options_(std::move(options)) {}
  void Loop();
  // Hands events to their callbacks (no lock held).
  void Deliver(std::vector<Delivery>& out);
  // The rest, under mu_:
  // The next step: its sequences and their chunk lengths; empty when nothing can run.
  std::vector<Sequence*> Schedule(std::vector<int64_t>* chunks);
  // Blocks so that `seq` covers positions [0, end), preempting younger sequences that are not in
  // this step; false (nothing changed for `seq`) when older ones hold the blocks.
  bool Grow(Sequence* seq, int64_t end);
  // Takes `seq`'s cached prefix and the blocks of its first chunk: the chunk's length, or 0 (and
  // nothing taken) when there is no room in this step.
  int64_t Admit(Sequence* seq, int64_t budget);
  void Preempt(Sequence* seq);
  void RegisterFullBlocks(Sequence* seq);
  // Applies a step's answers: takes the tokens the executor chose or chooses them from the
  // logits, checks stops, queues events.
  void Finish(const std::vector<Sequence*>& step, const std::vector<int64_t>& chunks,
              absl::StatusOr<std::vector<StepRow>>& rows, std::vector<Delivery>* out);
  // Releases the sequence's blocks and queues its final event (`last` carries a new token).
  void EndSequence(Sequence* seq, FinishReason reason, const absl::Status& error,
                   std::vector<Delivery>* out, std::optional<GenerationEvent> last = std::nullopt);
  void CancelAllLocked(std::vector<Delivery>* out);
  void FailAllLocked(const absl::Status& error, std::vector<Delivery>* out);
  // The executor's cache was replaced: forget cached prefixes, recompute running sequences.
  void ResyncCacheLocked();
  void ProcessCancellationsLocked(std::vector<Delivery>* out);
  bool IdleLocked() const { return running_.empty() && waiting_.empty(); }
  std::shared_ptr<Request> live_request(const Request* r) const;

  Options options_;
  std::shared_ptr<StepExecutor> executor_;
  uint64_t epoch_ = 0;  // the executor's cache_epoch() the block state belongs to
  std::optional<std::chrono::steady_clock::time_point> not_ready_since_;
  std::unique_ptr<BlockManager> blocks_;
  int64_t max_context_ = 0;
  int32_t eos_token_id_ = -1;

  mutable std::mutex mu_;
  std::condition_variable work_cv_;  // the scheduler waits for work
  std::condition_variable idle_cv_;  // Drain waits for the engine to empty
  std::deque<Sequence*> waiting_;    // not running: new, blocked completions, preempted (front)
  std::vector<Sequence*> running_;   // admitted, oldest first
  std::vector<std::shared_ptr<Request>> cancel_requests_;
  std::vector<std::shared_ptr<Request>> live_;  // requests with unfinished sequences
  RequestId next_id_ = 1;
  int64_t queued_requests_ = 0;     // accepted requests none of whose sequences has started
  int64_t deliveries_pending_ = 0;  // events queued but not yet handed to their callbacks
  bool stop_ = false, draining_ = false, paused_ = false;
  EngineStats stats_;
  std::thread thread_;
};

}  // namespace r1

// The engine: what the public APIs (OpenAI / Ollama HTTP, r1serve gRPC, `r1 chat`) call to turn
// prompt token ids into generated tokens. It owns the scheduler (continuous batching, chunked
// prefill, KV-block accounting and admission, prefix reuse, stop conditions, cancellation) and
// drives a StepExecutor: the in-process model (single-process mode) or the worker pool.
//
// Text is not its business: the APIs tokenize and apply the chat template before Submit, and
// detokenize the tokens they receive (stop *strings* are matched by the APIs on the decoded text;
// the engine matches stop token ids, EOS, max_tokens and the context limit).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace r1 {

struct EngineSampling {
  float temperature = 0.6f;  // R1's recommended defaults when a request gives none
  float top_p = 0.95f;
  int64_t top_k = 0;         // 0 = off
  float min_p = 0.0f;        // 0 = off
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  float repetition_penalty = 1.0f;  // 1 = off
  std::optional<uint64_t> seed;     // same seed, same prompt, same params → same tokens
  int32_t top_logprobs = 0;         // 0..20: alternatives reported per token (needs logprobs)
  bool logprobs = false;
};

struct GenerationRequest {
  std::vector<int32_t> prompt;          // token ids, already templated
  int64_t max_new_tokens = 0;           // 0 → up to the context limit
  EngineSampling sampling;
  std::vector<int32_t> stop_token_ids;  // in addition to EOS
  bool ignore_eos = false;
  int32_t n = 1;                        // independent completions sharing the prompt (1..16)
};

enum class FinishReason { kNone, kStop, kLength, kCancelled, kError };

struct TokenLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
};

// One event of one completion (index among the request's n), delivered in order.
struct GenerationEvent {
  int32_t index = 0;
  std::optional<int32_t> token;       // a new token (absent on the final event if nothing new)
  float logprob = 0.0f;               // of `token`, when logprobs were asked for
  std::vector<TokenLogprob> top_logprobs;
  FinishReason finish = FinishReason::kNone;  // set on the completion's last event
  absl::Status error;                 // set with kError
};

struct EngineStats {
  int64_t running = 0, waiting = 0;          // sequences
  int64_t kv_blocks_used = 0, kv_blocks_total = 0;
  int64_t max_context = 0;                   // tokens per sequence
  int64_t prompt_tokens = 0, generated_tokens = 0;  // totals since start
  int64_t last_batch_size = 0;
  bool ready = false;
  // Additions (LocalEngine fills them; a remote engine may leave them 0):
  int64_t prefill_tokens = 0;     // prompt tokens run through the model (prefix-cache hits excluded)
  int64_t prefix_hit_tokens = 0;  // prompt tokens taken from the prefix cache instead
  int64_t kv_blocks_cached = 0;   // unused blocks still holding a reusable prefix (evictable)
  int64_t preemptions = 0;        // sequences sent back to the queue to free their blocks
  int64_t steps = 0;              // forward steps run
  // What the steps moved between the engine and an executor in other processes (PoolExecutor;
  // 0 for in-process executors): rows whose token the executor chose where the logits are, rows
  // whose logits came back, and block-table entries sent against the entries the steps' tables held.
  int64_t rows_chosen_remotely = 0, rows_with_logits = 0;
  int64_t block_table_entries_sent = 0, block_table_entries = 0;
};

using RequestId = uint64_t;

class Engine {
 public:
  virtual ~Engine() = default;
  // Queues a request. `on_event` is called from the engine's thread, in order, one completion's
  // events never interleaved out of order; it must not block for long. Errors known at once
  // (a prompt longer than the context, n out of range, …) come back here as INVALID_ARGUMENT /
  // OUT_OF_RANGE; a full queue as RESOURCE_EXHAUSTED.
  virtual absl::StatusOr<RequestId> Submit(GenerationRequest request,
                                           std::function<void(const GenerationEvent&)> on_event) = 0;
  // Stops a request (client gone): its blocks are freed at once; its completions finish with
  // kCancelled. Unknown or finished ids are ignored.
  virtual void Cancel(RequestId id) = 0;
  virtual EngineStats Stats() const = 0;
  // Refuse new requests, finish running ones until `deadline_ms` from now, cancel the rest.
  virtual void Drain(int64_t deadline_ms) = 0;
  virtual int64_t max_context() const = 0;
  virtual int32_t eos_token_id() const = 0;
};

}  // namespace r1

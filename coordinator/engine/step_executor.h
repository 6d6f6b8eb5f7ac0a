// StepExecutor: where the scheduler's forward steps run. The engine (LocalEngine) decides what
// each step holds — which sequences, which tokens, which KV blocks — and an executor runs it and
// returns the logits of each sequence's last new token:
//  - ModelExecutor: the in-process model and its paged cache (single-process mode, `r1 serve`);
//  - PoolExecutor (coordinator/pool): the W workers of the group, over gRPC (`r1-coordinator
//    --http-listen`), where the KV blocks live in each worker's memory.
// The engine's block ids index the executor's cache, so the prefix cache and preemption work the
// same in both. An executor that can lose cache content (a worker group formed again after a rank
// died) says so through cache_epoch(); the engine then recomputes what it had.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/config.h"
#include "coordinator/engine/engine.h"
#include "worker/kv_cache.h"
#include "worker/model/deepseek_v3.h"

namespace r1 {

// What the engine needs back for one row of a step (ForwardRows).
struct RowRequest {
  // The sequence's identity across steps (never 0; unique for the engine's life), so an executor
  // may send only what changed of its block table since the last step.
  uint64_t key = 0;
  // false: the row's token is not chosen after this step (a prefill chunk before the last), so
  // nothing of it need come back.
  bool needed = true;
  // Set: the executor may choose the token itself where the logits are (ChooseToken with this
  // sampling and SamplerState::FromStream(rng_key, draws)) and return it instead of the logits.
  // Only for rows whose choice has no history (SamplerState::HasHistory false).
  struct Choice {
    EngineSampling sampling;
    uint64_t rng_key = 0, draws = 0;
  };
  std::optional<Choice> choice;
};
// One row's answer: the chosen token (with its logprobs when asked), or the logits.
struct StepRow {
  std::optional<int32_t> token;
  float logprob = 0.0f;
  std::vector<TokenLogprob> top_logprobs;
  std::vector<float> logits;  // [vocab] when no token
};

class StepExecutor {
 public:
  virtual ~StepExecutor() = default;
  // The model's configuration (vocabulary, EOS, positions, layers, latent width).
  virtual const ModelConfig& config() const = 0;
  // A cache whose size the executor does not choose (0) is made by the engine through
  // CreateCache; a fixed one (the workers made theirs at load) gives its blocks and block size.
  virtual int64_t fixed_kv_blocks() const { return 0; }
  virtual int64_t fixed_block_size() const { return 0; }
  virtual absl::Status CreateCache(int64_t num_blocks, int64_t block_size) = 0;
  // Runs one step; on success one row of vocab_size logits per batch entry. `epoch` is the
  // cache_epoch() the engine scheduled against: a step on a cache of another epoch must fail.
  virtual absl::StatusOr<std::vector<std::vector<float>>> Forward(
      const std::vector<SequenceStep>& batch, uint64_t epoch) = 0;
  // Runs one step and answers each row as asked. The default returns every row's logits
  // (Forward); an executor whose logits are costly to move (PoolExecutor: 517 KB per row for R1,
  // over the network) chooses the tokens where they are.
  virtual absl::StatusOr<std::vector<StepRow>> ForwardRows(const std::vector<SequenceStep>& batch,
                                                           const std::vector<RowRequest>& requests,
                                                           uint64_t epoch);
  // Adds the executor's traffic counters (EngineStats' rows_* and block_table_* fields) to `s`.
  virtual void AddTraffic(EngineStats* s) const { (void)s; }
  // Whether steps can run now; otherwise `why` says what is missing.
  virtual bool Ready(std::string* why) const = 0;
  // Changes whenever content written by earlier steps may be gone.
  virtual uint64_t cache_epoch() const = 0;
};

// The in-process model (CPU reference) with a PagedKvCache of the engine's size.
class ModelExecutor : public StepExecutor {
 public:
  explicit ModelExecutor(std::shared_ptr<const DeepseekV3Model> model) : model_(std::move(model)) {}
  const ModelConfig& config() const override { return model_->config(); }
  absl::Status CreateCache(int64_t num_blocks, int64_t block_size) override;
  absl::StatusOr<std::vector<std::vector<float>>> Forward(const std::vector<SequenceStep>& batch,
                                                          uint64_t epoch) override;
  bool Ready(std::string*) const override { return cache_ != nullptr; }
  uint64_t cache_epoch() const override { return 0; }

 private:
  std::shared_ptr<const DeepseekV3Model> model_;
  std::unique_ptr<PagedKvCache> cache_;
};

}  // namespace r1

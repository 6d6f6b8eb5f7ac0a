// PoolExecutor: the scheduler's steps (LocalEngine) run on the worker group. Each step goes to
// every rank (WorkerPool::RunStep); rank 0 answers with the logits of each sequence's last new
// token, and the engine samples them exactly as in single-process mode (penalties, seeds,
// logprobs), so the group gives the same tokens as `r1 serve` on one process.
//
// The KV cache lives in the workers (--kv-blocks blocks of --block-size tokens each): at start the
// executor takes every block of the pool for the engine, so the engine's block ids 0..N-1 map to
// the pool's. Its epoch is the group: when a rank is lost the group breaks (not ready, with the
// pool's reason) and when it forms again the workers' caches are new, so the engine recomputes.
//
// Cost: the logits cross the network as float32 (vocab × 4 bytes per sequence per step: 517 KB
// for R1's vocabulary). Sampling on rank 0 for requests without penalties or logprobs would cut
// that to a token; see docs/design.md.
#pragma once

#include <atomic>
#include <string>
#include <unordered_map>
#include <vector>

#include "coordinator/engine/step_executor.h"
#include "coordinator/pool/worker_pool.h"

namespace r1 {

class PoolExecutor : public StepExecutor {
 public:
  // `config` is the coordinator's copy of the model's config.json (its --model folder): the
  // group's rank 0 must report the same vocabulary and EOS, or the executor stays not ready.
  // `choose_on_rank0`: rows without sampling history have their tokens chosen on rank 0
  // (ForwardRows); false: every needed row's logits come here.
  static absl::StatusOr<std::unique_ptr<PoolExecutor>> Create(WorkerPool* pool, ModelConfig config,
                                                              bool choose_on_rank0 = true);
  ~PoolExecutor() override;

  const ModelConfig& config() const override { return config_; }
  int64_t fixed_kv_blocks() const override { return static_cast<int64_t>(blocks_.size()); }
  int64_t fixed_block_size() const override { return pool_->options().block_size; }
  absl::Status CreateCache(int64_t, int64_t) override {
    return absl::FailedPreconditionError("the workers make their own KV cache");
  }
  absl::StatusOr<std::vector<std::vector<float>>> Forward(const std::vector<SequenceStep>& batch,
                                                          uint64_t epoch) override;
  // Rows with a choice are chosen on rank 0 (worker.proto EngineChoice): a token and its
  // logprobs come back instead of vocab_size floats; rows not needed bring nothing back.
  absl::StatusOr<std::vector<StepRow>> ForwardRows(const std::vector<SequenceStep>& batch,
                                                   const std::vector<RowRequest>& requests,
                                                   uint64_t epoch) override;
  void AddTraffic(EngineStats* s) const override;
  bool Ready(std::string* why) const override;
  uint64_t cache_epoch() const override;

 private:
  PoolExecutor(WorkerPool* pool, ModelConfig config, bool choose_on_rank0)
      : pool_(pool), config_(std::move(config)), choose_on_rank0_(choose_on_rank0) {}
  // The group's model, checked against config_; the reason when not ready.
  absl::StatusOr<uint64_t> CheckedGroup() const;

  WorkerPool* pool_;
  ModelConfig config_;
  bool choose_on_rank0_ = true;
  std::vector<int32_t> blocks_;  // the engine's block i is the pool's blocks_[i]
  mutable std::atomic<uint64_t> last_group_{0};
  // The block tables (pool ids) the workers hold by RowRequest::key after the last keyed step,
  // and the group (epoch) they belong to; steps send only what lies past them.
  std::unordered_map<uint64_t, std::vector<int32_t>> sent_tables_;
  uint64_t tables_epoch_ = 0;
  std::atomic<int64_t> rows_chosen_{0}, rows_with_logits_{0}, entries_sent_{0}, entries_{0};
};

}  // namespace r1

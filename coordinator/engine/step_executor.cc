#include "coordinator/engine/step_executor.h"

#include "common/status.h"

namespace r1 {

absl::StatusOr<std::vector<StepRow>> StepExecutor::ForwardRows(const std::vector<SequenceStep>& batch,
                                                               const std::vector<RowRequest>&, uint64_t epoch) {
  R1_ASSIGN_OR_RETURN(std::vector<std::vector<float>> logits, Forward(batch, epoch));
  std::vector<StepRow> rows(logits.size());
  for (size_t i = 0; i < logits.size(); ++i) rows[i].logits = std::move(logits[i]);
  return rows;
}

absl::Status ModelExecutor::CreateCache(int64_t num_blocks, int64_t block_size) {
  const ModelConfig& c = model_->config();
  R1_ASSIGN_OR_RETURN(PagedKvCache cache, PagedKvCache::Create(num_blocks, block_size,
                                                               c.num_hidden_layers,
                                                               c.kv_latent_dim()));
  cache_ = std::make_unique<PagedKvCache>(std::move(cache));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::vector<float>>> ModelExecutor::Forward(
    const std::vector<SequenceStep>& batch, uint64_t) {
  if (!cache_) return absl::FailedPreconditionError("the KV cache was not created");
  return model_->Forward(batch, *cache_);
}

}  // namespace r1

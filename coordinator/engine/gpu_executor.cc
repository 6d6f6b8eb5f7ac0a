#include "coordinator/engine/gpu_executor.h"

#include "common/status.h"

namespace r1 {

absl::Status GpuModelExecutor::CreateCache(int64_t num_blocks, int64_t block_size) {
  R1_ASSIGN_OR_RETURN(GpuKvCache cache, GpuKvCache::Create(model_->config(), num_blocks, block_size));
  cache_ = std::make_unique<GpuKvCache>(std::move(cache));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::vector<float>>> GpuModelExecutor::Forward(
    const std::vector<SequenceStep>& batch, uint64_t) {
  if (!cache_) return absl::FailedPreconditionError("the KV cache was not created");
  // The model's workspace holds max_step_tokens; the engine's step budget must not exceed it.
  return model_->Forward(batch, *cache_);
}

}  // namespace r1

// GpuModelExecutor: the scheduler's steps on the GPU model (one GPU; `r1 serve --gpu`). The latent
// KV cache lives in device memory with the engine's block layout; steps return the float32
// logits of each sequence's last token, which the engine samples as on the CPU (penalties, seeds,
// logprobs), so the serving code is the same for both backends.
#pragma once

#include <memory>

#include "coordinator/engine/step_executor.h"
#include "worker/model/gpu_model.h"

namespace r1 {

class GpuModelExecutor : public StepExecutor {
 public:
  explicit GpuModelExecutor(std::unique_ptr<GpuDeepseekV3Model> model) : model_(std::move(model)) {}
  const ModelConfig& config() const override { return model_->config(); }
  absl::Status CreateCache(int64_t num_blocks, int64_t block_size) override;
  absl::StatusOr<std::vector<std::vector<float>>> Forward(const std::vector<SequenceStep>& batch,
                                                          uint64_t epoch) override;
  bool Ready(std::string*) const override { return cache_ != nullptr; }
  uint64_t cache_epoch() const override { return 0; }

 private:
  std::unique_ptr<GpuDeepseekV3Model> model_;
  std::unique_ptr<GpuKvCache> cache_;
};

}  // namespace r1

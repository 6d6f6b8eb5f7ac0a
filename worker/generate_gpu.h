// Single-sequence generation on the GPU model: the prompt prefilled in chunks, then decode token
// by token through the paged bf16 latent cache (decode steps replay a captured CUDA graph), the
// next token sampled on the GPU at every step (cuda::Sample: greedy, temperature, top-k, top-p;
// the Philox stream keyed by the seed and the step, so a seed always gives the same text). Used
// by `r1 generate --gpu` and the GPU tests; only token ids cross to the host.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/generate.h"
#include "worker/model/gpu_model.h"

namespace r1 {

// As Generate (worker/generate.h), on the GPU. GenerateResult.margins stays empty: the logits
// never leave the device. Prefill chunks are capped at the model's max_step_tokens.
absl::StatusOr<GenerateResult> GenerateOnGpu(GpuDeepseekV3Model& model, const std::vector<int32_t>& prompt,
                                             const GenerateOptions& options);

}  // namespace r1

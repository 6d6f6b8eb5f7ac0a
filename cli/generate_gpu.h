// `r1 generate --gpu`: the GPU model (worker/model/gpu_model.h) with sampling on the GPU.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "worker/generate.h"

namespace r1 {

// Loads the model onto GPU 0 with the given activation numerics ("f32", "bf16" or "fp8"),
// generates, prints the new token ids on stdout (as the CPU path does) and timings on stderr.
// Unimplemented when this `r1` was built without the CUDA backend.
absl::Status RunGpuGenerate(const std::string& model_dir, const std::vector<int32_t>& prompt,
                            const GenerateOptions& options, const std::string& activations);

}  // namespace r1

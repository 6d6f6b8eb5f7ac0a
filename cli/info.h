// `r1 info`: what a model folder holds and what it needs.
#pragma once

#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "common/config.h"
#include "common/safetensors.h"

namespace r1 {

struct ModelInfo {
  ModelConfig config;
  int64_t parameters = 0;          // main layers, embedding, norms, lm_head (no MTP, no scales)
  int64_t mtp_parameters = 0;      // the MTP layer(s), not loaded
  std::map<std::string, size_t> bytes_by_dtype;
  size_t weight_bytes = 0;         // checkpoint bytes that are loaded (MTP excluded)
  size_t kv_bytes_per_1k_bf16 = 0; // latent cache per 1K tokens, all layers, bf16 (GPU)
  size_t kv_bytes_per_1k_f32 = 0;  // same in float32 (CPU reference)
};

absl::StatusOr<ModelInfo> InspectModel(const std::string& model_dir);
int RunInfo(const std::string& model_dir);

}  // namespace r1

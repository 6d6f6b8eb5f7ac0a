// Single-sequence generation on one model: prefill the prompt (in chunks), then decode token by
// token through the paged cache. Used by `r1 generate` and the tests; the server's scheduler
// drives DeepseekV3Model::Forward directly with many sequences at once.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/deepseek_v3.h"
#include "worker/sampler.h"

namespace r1 {

struct GenerateOptions {
  int64_t max_new_tokens = 32;
  SamplingParams sampling;
  int64_t block_size = 16;           // tokens per KV block
  int64_t prefill_chunk = 512;       // prompt tokens per forward step
  bool stop_at_eos = true;           // stop after config.eos_token_id
};

struct GenerateResult {
  std::vector<int32_t> tokens;       // the new tokens
  std::vector<float> margins;        // top-1 minus top-2 logit at each step
  double prefill_seconds = 0, decode_seconds = 0;
  int64_t prompt_tokens = 0;
};

absl::StatusOr<GenerateResult> Generate(const DeepseekV3Model& model, const std::vector<int32_t>& prompt,
                                        const GenerateOptions& options);

}  // namespace r1

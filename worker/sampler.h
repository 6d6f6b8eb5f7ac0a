// Token sampling on the CPU: greedy, or temperature with top-k and top-p (nucleus), seeded.
#pragma once

#include <cstdint>
#include <random>

#include "absl/status/status.h"

namespace r1 {

struct SamplingParams {
  float temperature = 0.0f;  // <= 0: greedy (argmax)
  float top_p = 1.0f;        // keep the smallest set of tokens whose probability reaches top_p
  int64_t top_k = 0;         // keep the k most likely tokens; 0 = all
  uint64_t seed = 0;
};

absl::Status ValidateSampling(const SamplingParams& p);

// Picks a token from logits [vocab]. Ties in greedy go to the lowest id.
int32_t SampleToken(const float* logits, int64_t vocab, const SamplingParams& params, std::mt19937_64& rng);

// The largest minus the second largest logit.
float TopTwoMargin(const float* logits, int64_t vocab);

}  // namespace r1

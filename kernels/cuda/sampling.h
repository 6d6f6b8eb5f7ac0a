// Token sampling on the GPU: greedy, or temperature with top-k and top-p (nucleus), from a
// counter-based random stream, so a (seed, step) pair always gives the same token.
// Semantics follow the CPU sampler (worker/sampler.cc): top-k first (ties to the lowest id), then
// the smallest prefix of those, most likely first, whose share of their mass reaches top_p.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace r1::cuda {

// One row's sampling settings; an array of them lives in device memory.
struct SamplingRow {
  float temperature = 0.0f;  // <= 0 (or NaN): greedy, the lowest id among the largest logits
  float top_p = 1.0f;     // keep the most likely tokens until their share reaches top_p; >= 1: off
  int32_t top_k = 0;      // keep the k most likely tokens; <= 0 or >= vocab: off; 1: greedy
  uint32_t reserved = 0;  // padding, keeps the struct the same on host and device
  uint64_t seed = 0;      // Philox key: one per request
  uint64_t step = 0;      // Philox subsequence: the decode step (or any counter the caller keeps)
};

struct SampleParams {
  const float* logits =
      nullptr;  // [rows, vocab] float32, row r at logits + r * stride; finite or -inf
  const SamplingRow* row_params = nullptr;  // device [rows]
  int32_t* token_ids = nullptr;             // device [rows] out
  int64_t rows = 0;
  int64_t vocab = 0;   // 1 .. 2^24
  int64_t stride = 0;  // floats between rows, >= vocab
};

absl::Status Sample(const SampleParams& p, cudaStream_t stream);

}  // namespace r1::cuda

// MoE token permutation on the GPU: the router's (token, expert) choices grouped by expert, so
// each expert's tokens form one contiguous run that a grouped GEMM (or GatherRows /
// ScatterAddWeighted of model_ops.h) can take directly.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace r1::cuda {

struct MoePermuteParams {
  const int32_t* expert_ids = nullptr;  // [tokens, top_k] the router's choices (global expert ids)
  const float* weights = nullptr;       // [tokens, top_k] their routing weights
  int64_t tokens = 0;
  int64_t top_k = 0;         // choices per token, >= 1
  int64_t first_expert = 0;  // experts [first_expert, first_expert + num_experts) are grouped
  int64_t num_experts = 0;   // 1..1024 (all experts, or one expert-parallel rank's share)
  int32_t* expert_offsets = nullptr;   // [num_experts + 1] out: expert e's entries are
                                       // [offsets[e], offsets[e+1]) of the permuted arrays
  int32_t* expert_counts = nullptr;    // optional [num_experts] out: offsets[e+1] - offsets[e]
  int32_t* permuted_tokens = nullptr;  // [tokens * top_k] out: token index of each entry; the first
                                       // offsets[num_experts] are valid, ascending within an expert
  float* permuted_weights = nullptr;   // [tokens * top_k] out: the matching weights
  int32_t* entry_slot = nullptr;  // optional [tokens, top_k] out: where choice (t, j) went in the
                                  // permuted arrays, -1 if its expert is outside the range
  int32_t* workspace = nullptr;   // MoePermuteWorkspaceInts(tokens, top_k, num_experts) int32s
};

// Scratch the launcher needs (int32 elements); 0 when tokens * top_k is 0.
int64_t MoePermuteWorkspaceInts(int64_t tokens, int64_t top_k, int64_t num_experts);

// Choices whose expert lies outside [first_expert, first_expert + num_experts) are dropped
// (expert parallelism: each rank permutes only the tokens of its experts). Deterministic: within
// an expert, entries are in order of (token, choice).
absl::Status MoePermute(const MoePermuteParams& p, cudaStream_t stream);

}  // namespace r1::cuda

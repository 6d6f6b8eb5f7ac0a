// The MoE router on the GPU, fused: from router logits to each token's chosen experts and weights,
// exactly as the CPU reference SelectExperts (worker/model/deepseek_v3.cc) chooses them.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace r1::cuda {

struct RouterParams {
  const float* logits = nullptr;  // [tokens, experts] router logits, float32, before the sigmoid
  const float* score_bias = nullptr;  // [experts] e_score_correction_bias (steers selection only)
  int32_t* expert_ids = nullptr;  // [tokens, top_k] out: chosen experts, best biased score first
  float* weights = nullptr;       // [tokens, top_k] out: routing weight of each chosen expert
  int64_t tokens = 0;
  int64_t experts = 0;  // n_routed_experts, 1..1024
  int64_t n_group = 1;  // expert groups, 1..32, dividing `experts` (>= 2 experts per group if > 1)
  int64_t topk_group = 1;      // groups kept per token, 1..n_group
  int64_t top_k = 0;           // num_experts_per_tok, 1..32 and <= topk_group * experts / n_group
  bool norm_topk_prob = true;  // divide the k weights by their sum (+1e-20)
  float routed_scaling_factor = 1.0f;  // applied to every weight last
};

// Per token: s = sigmoid(logits); b = s + score_bias; when n_group > 1 each group scores the sum
// of its two best b and only the topk_group best groups stay eligible; the top_k eligible experts
// by b are chosen (ties to the lowest id); weight = s (/ (sum of the k s + 1e-20) if
// norm_topk_prob) * routed_scaling_factor.
absl::Status Router(const RouterParams& p, cudaStream_t stream);

}  // namespace r1::cuda

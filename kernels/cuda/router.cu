// Fused MoE router: sigmoid, group-limited top-k and weights for every token in one kernel.
// Shape: one warp per token, four tokens per block. The warp writes the token's sigmoid scores s
// and biased scores b (E values each, E <= 1024) to its slice of shared memory; lane g scans
// group g for its top-2 (n_group <= 32, so one group per lane) and topk_group rounds of a warp
// argmax pick the groups; then top_k rounds of a warp argmax over b pick the experts (a chosen
// expert is set to NaN, which no comparison prefers). Work per token is O(top_k * E / 32) per
// lane: microseconds for a whole prefill batch, so nothing cleverer is warranted.
// Matching the reference bit for bit: the sigmoid goes through a double exp rounded to float,
// i.e. the correctly rounded expf that glibc's expf (used by the CPU reference) returns all but
// vanishingly rarely; the weight sum runs in the reference's order (best biased score first).
// Ties (equal biased scores) go to the lowest expert id; the reference's partial_sort leaves
// their order unspecified, so tests use tie-free random inputs.
// Test: tests/cuda/kernels2_test.cc (Router*: against SelectExperts on R1 and golden-model
// configs, T in {1, 3, 63, 200}).
#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/router.h"

namespace r1::cuda {
namespace {

constexpr int kWarpsPerBlock = 4;
constexpr int kMaxExperts = 1024;
constexpr int kMaxGroups = 32;
constexpr int kMaxTopK = 32;
constexpr unsigned kFullMask = 0xffffffffu;

__device__ float Sigmoid(float x) {
  return 1.0f / (1.0f + static_cast<float>(exp(-static_cast<double>(x))));
}

// (value, index) is better than (best, best_index): larger value, then lower index. NaN marks
// "nothing": it is never better, and anything else is better than it.
__device__ bool Better(float value, int index, float best, int best_index) {
  if (isnan(value)) return false;
  if (isnan(best)) return true;
  return value > best || (value == best && index < best_index);
}

// The warp's best (value, index) pair; every lane gets it.
__device__ void WarpArgmax(float& value, int& index) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float v = __shfl_xor_sync(kFullMask, value, offset);
    const int i = __shfl_xor_sync(kFullMask, index, offset);
    if (Better(v, i, value, index)) {
      value = v;
      index = i;
    }
  }
}

__global__ void RouterKernel(RouterParams p) {
  extern __shared__ float shared[];  // [kWarpsPerBlock][2][experts]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t token = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + warp;
  if (token >= p.tokens) return;  // whole warps leave; no block-wide barrier follows
  const int experts = static_cast<int>(p.experts);
  float* s = shared + static_cast<int64_t>(warp) * 2 * experts;  // [experts] sigmoid scores
  float* b = s + experts;                                        // [experts] biased, then masked
  const float* x = p.logits + token * experts;
  for (int e = lane; e < experts; e += 32) {
    s[e] = Sigmoid(x[e]);
    b[e] = s[e] + p.score_bias[e];
  }
  __syncwarp();

  if (p.n_group > 1) {
    const int groups = static_cast<int>(p.n_group), per_group = experts / groups;
    float group_score = NAN;  // lanes without a group never win
    if (lane < groups) {
      float b1 = -INFINITY, b2 = -INFINITY;
      for (int e = lane * per_group; e < (lane + 1) * per_group; ++e) {
        if (b[e] > b1) {
          b2 = b1;
          b1 = b[e];
        } else if (b[e] > b2) {
          b2 = b[e];
        }
      }
      group_score = b1 + b2;
    }
    unsigned keep = 0;  // bit g: group g stays eligible
    for (int round = 0; round < p.topk_group; ++round) {
      float best = group_score;
      int best_group = lane;
      WarpArgmax(best, best_group);
      keep |= 1u << best_group;
      if (lane == best_group) group_score = NAN;
    }
    for (int e = lane; e < experts; e += 32) {
      if (((keep >> (e / per_group)) & 1u) == 0) b[e] = -INFINITY;
    }
    __syncwarp();
  }

  // top_k rounds of argmax over b; lane j keeps the j-th choice.
  int my_choice = 0;
  for (int j = 0; j < p.top_k; ++j) {
    float best = NAN;
    int best_e = 0x7fffffff;
    for (int e = lane; e < experts; e += 32) {
      if (Better(b[e], e, best, best_e)) {
        best = b[e];
        best_e = e;
      }
    }
    WarpArgmax(best, best_e);
    if (best_e >= experts) best_e = -1;  // only with NaN logits: the launcher guarantees k eligible
    if (lane == j) my_choice = best_e;
    __syncwarp();
    if (lane == 0 && best_e >= 0) b[best_e] = NAN;
    __syncwarp();
  }

  // Every lane sums the k unbiased scores in choice order, as the reference does.
  float sum = 0.0f;
  for (int j = 0; j < p.top_k; ++j) {
    const int e = __shfl_sync(kFullMask, my_choice, j);
    if (e >= 0) sum += s[e];
  }
  if (lane < p.top_k) {
    float w = my_choice >= 0 ? s[my_choice] : 0.0f;
    if (p.norm_topk_prob) w /= (sum + 1e-20f);
    p.expert_ids[token * p.top_k + lane] = my_choice;
    p.weights[token * p.top_k + lane] = w * p.routed_scaling_factor;
  }
}

}  // namespace

absl::Status Router(const RouterParams& p, cudaStream_t stream) {
  if (p.logits == nullptr) return absl::InvalidArgumentError("router: logits is null");
  if (p.score_bias == nullptr) return absl::InvalidArgumentError("router: score_bias is null");
  if (p.expert_ids == nullptr) return absl::InvalidArgumentError("router: expert_ids is null");
  if (p.weights == nullptr) return absl::InvalidArgumentError("router: weights is null");
  if (p.tokens < 0)
    return absl::InvalidArgumentError(absl::StrCat("router: tokens=", p.tokens, " is negative"));
  if (p.experts < 1 || p.experts > kMaxExperts) {
    return absl::InvalidArgumentError(
        absl::StrCat("router: experts=", p.experts, " outside [1, ", kMaxExperts, "]"));
  }
  if (p.n_group < 1 || p.n_group > kMaxGroups || p.experts % p.n_group != 0) {
    return absl::InvalidArgumentError(absl::StrCat("router: n_group=", p.n_group,
                                                   " must be in [1, ", kMaxGroups,
                                                   "] and divide experts=", p.experts));
  }
  if (p.n_group > 1 && p.experts / p.n_group < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("router: n_group=", p.n_group,
                     " leaves fewer than 2 experts per group (experts=", p.experts, ")"));
  }
  if (p.topk_group < 1 || p.topk_group > p.n_group) {
    return absl::InvalidArgumentError(
        absl::StrCat("router: topk_group=", p.topk_group, " outside [1, n_group=", p.n_group, "]"));
  }
  const int64_t eligible = p.topk_group * (p.experts / p.n_group);
  if (p.top_k < 1 || p.top_k > kMaxTopK || p.top_k > eligible) {
    return absl::InvalidArgumentError(absl::StrCat("router: top_k=", p.top_k, " outside [1, min(",
                                                   kMaxTopK, ", eligible experts=", eligible,
                                                   ")]"));
  }
  if (p.tokens == 0) return absl::OkStatus();
  const int64_t blocks = (p.tokens + kWarpsPerBlock - 1) / kWarpsPerBlock;
  if (blocks > 0x7fffffff)
    return absl::InvalidArgumentError(absl::StrCat("router: tokens=", p.tokens, " too many"));
  const size_t shared_bytes = sizeof(float) * 2 * kWarpsPerBlock * static_cast<size_t>(p.experts);
  RouterKernel<<<static_cast<unsigned>(blocks), kWarpsPerBlock * 32, shared_bytes, stream>>>(p);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    return absl::InternalError(absl::StrCat("router: launch failed: ", cudaGetErrorString(err)));
  return absl::OkStatus();
}

}  // namespace r1::cuda

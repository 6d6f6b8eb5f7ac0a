// Fused MoE router: sigmoid, group-limited top-k and weights for every token in one kernel.
// Shape: one warp per token, four tokens per block. The warp writes the token's sigmoid scores s
// and biased scores b (E values each, E <= 1024) to its slice of shared memory; lane g scans
// group g for its top-2 (n_group <= 32, so one group per lane) and topk_group rounds of a warp
// argmax pick the groups; then top_k rounds of a warp argmax over b pick the experts (a chosen
// expert is set to NaN, which no comparison prefers). Work per token is O(top_k * E / 32) per
// lane: microseconds for a whole prefill batch. A decode batch (up to 16 tokens) takes
// RouterBlockKernel instead, a block per token and a thread per expert, with the same results:
// at one token the warp's serial work was the whole launch (17 us on an H100 for R1's router).
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

// The same selection for a decode batch: one block per token, thread e for expert e (blockDim =
// experts rounded up to a warp), so that a token's work is spread over the block instead of one
// warp's lanes walking all experts (at one token the kernel is the whole launch). Each step
// reproduces RouterKernel's values exactly: the same sigmoid and biased scores; a group's two best
// biased scores as the same multiset (lanes' serial top-2 merged by the same insertion rule), so
// the same sum; topk_group and top_k rounds of an argmax under the same total order (Better),
// which any reduction tree resolves alike; the weights summed in choice order.
constexpr int kBlockRouterMaxTokens = 16;
__device__ void Insert(float v, float& b1, float& b2) {
  if (v > b1) {
    b2 = b1;
    b1 = v;
  } else if (v > b2) {
    b2 = v;
  }
}

__global__ void RouterBlockKernel(RouterParams p) {
  __shared__ float group_scores[kMaxGroups];
  __shared__ float warp_best[kMaxExperts / 32];
  __shared__ int warp_best_e[kMaxExperts / 32];
  __shared__ float chosen_s[kMaxTopK];
  __shared__ int chosen[kMaxTopK];
  __shared__ unsigned keep_groups;
  __shared__ float biased[kMaxExperts];
  const int e = threadIdx.x, lane = e % 32, warp = e / 32, warps = blockDim.x / 32;
  const int experts = static_cast<int>(p.experts);
  const int64_t token = blockIdx.x;
  const bool mine = e < experts;
  const float s = mine ? Sigmoid(p.logits[token * experts + e]) : 0.0f;
  float b = mine ? s + p.score_bias[e] : NAN;

  if (p.n_group > 1) {
    const int groups = static_cast<int>(p.n_group), per_group = experts / groups;
    if (mine) biased[e] = b;
    __syncthreads();
    // Warp w takes groups w, w + warps, ...: each lane's top-2 over its strided share of the
    // group, then the lanes' pairs inserted into lane 0's in turn.
    for (int g = warp; g < groups; g += warps) {
      float b1 = -INFINITY, b2 = -INFINITY;
      for (int i = lane; i < per_group; i += 32) Insert(biased[g * per_group + i], b1, b2);
      for (int l = 1; l < 32; ++l) {
        const float o1 = __shfl_sync(kFullMask, b1, l), o2 = __shfl_sync(kFullMask, b2, l);
        if (lane == 0) {
          Insert(o1, b1, b2);
          Insert(o2, b1, b2);
        }
      }
      if (lane == 0) group_scores[g] = b1 + b2;
    }
    __syncthreads();
    if (warp == 0) {
      float group_score = lane < groups ? group_scores[lane] : NAN;
      unsigned keep = 0;
      for (int round = 0; round < p.topk_group; ++round) {
        float best = group_score;
        int best_group = lane;
        WarpArgmax(best, best_group);
        keep |= 1u << best_group;
        if (lane == best_group) group_score = NAN;
      }
      if (lane == 0) keep_groups = keep;
    }
    __syncthreads();
    if (mine && ((keep_groups >> (e / per_group)) & 1u) == 0) b = -INFINITY;
  }

  // top_k rounds of a block argmax over b; the chosen expert's thread masks itself with NaN.
  for (int j = 0; j < p.top_k; ++j) {
    float best = b;
    int best_e = mine ? e : 0x7fffffff;
    WarpArgmax(best, best_e);
    if (lane == 0) warp_best[warp] = best, warp_best_e[warp] = best_e;
    __syncthreads();
    if (warp == 0) {
      float v = lane < warps ? warp_best[lane] : NAN;
      int ve = lane < warps ? warp_best_e[lane] : 0x7fffffff;
      WarpArgmax(v, ve);
      if (lane == 0) chosen[j] = ve < experts ? ve : -1;
    }
    __syncthreads();
    if (mine && e == chosen[j]) {
      b = NAN;
      chosen_s[j] = s;
    }
    __syncthreads();
  }
  if (e == 0) {
    float sum = 0.0f;
    for (int j = 0; j < p.top_k; ++j) {
      if (chosen[j] >= 0) sum += chosen_s[j];
    }
    for (int j = 0; j < p.top_k; ++j) {
      float w = chosen[j] >= 0 ? chosen_s[j] : 0.0f;
      if (p.norm_topk_prob) w /= (sum + 1e-20f);
      p.expert_ids[token * p.top_k + j] = chosen[j];
      p.weights[token * p.top_k + j] = w * p.routed_scaling_factor;
    }
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
  if (p.tokens <= kBlockRouterMaxTokens) {
    const unsigned threads = static_cast<unsigned>((p.experts + 31) / 32 * 32);
    RouterBlockKernel<<<static_cast<unsigned>(p.tokens), threads, 0, stream>>>(p);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess)
      return absl::InternalError(absl::StrCat("router: launch failed: ", cudaGetErrorString(err)));
    return absl::OkStatus();
  }
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

// Sampling a token per row of logits: greedy, or temperature with top-k and top-p.
// Shape: one block of 1024 threads per row; the row (V <= 2^23 floats, 505 KiB for R1's 129280)
// is read several times and stays in L2 between passes. Passes over the row:
//   1. argmax, which is also the max logit m; greedy rows (temperature <= 0, top_k == 1) stop here.
//   2. top-k (only when 0 < top_k < V): a 4-pass MSB-first radix select over the float keys (an
//      order-preserving uint32 of each logit, 8 bits a pass, 256-bin shared histogram) finds the
//      k-th largest key; ties at that key keep the lowest indices (one more ordered pass, only when
//      a tie straddles the cut), as the CPU's stable comparator does.
//   3. top-p (only when top_p < 1): the total mass W of the kept tokens, each token's mass being
//      exp((x - m) / T) in 2^-40 fixed point so sums are exact and deterministic (float atomics
//      would make the cut depend on thread timing); then the same radix select on mass finds the
//      key where the running mass, largest first, reaches ceil(top_p * W), with ties again cut by
//      index. The kept set is "key above a threshold, or at it with index <= a cut-off".
//   4. the sample itself, by the Gumbel-max trick: argmax over kept tokens of (x - m) / T + G_i,
//      G_i = -log(-log u_i), u_i from Philox-4x32-10 keyed by the row's seed, subsequence = step,
//      counter = token index / 4. Exactly softmax-distributed over the kept set, one pass, no
//      prefix sums, and the same (seed, step) gives the same token wherever the row runs.
// Cost: O(V) per pass; 1 pass greedy, 2 for plain temperature, up to 2 + 4 (+1) + 1 + 4 (+1) with
// both top-k and top-p. Histogram adds are warp-aggregated (__match_any_sync), because in the
// first radix pass nearly all logits share a few top bytes and plain shared atomics would
// serialise. Test: tests/cuda/kernels2_test.cc (Sample*: greedy against the CPU argmax, exact
// distributions on a 6-token vocabulary, nucleus/top-k membership and ties on V = 129280,
// determinism).
#include <curand_kernel.h>

#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/sampling.h"

namespace r1::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr int kBins = 256;
constexpr int kMaxAggregatedBins = 4;  // more distinct bins in a warp: plain atomics are cheaper
constexpr int64_t kMaxVocab = int64_t{1} << 23;  // keeps vocab * 2^40 (the total mass) below 2^63
constexpr float kMassScale = 1099511627776.0f;   // 2^40
constexpr int kNoIndex = 0x7fffffff;
constexpr unsigned kFullMask = 0xffffffffu;

// Order-preserving key of a float: a larger logit has a larger key; -0 and +0 share one.
__device__ uint32_t Key(float x) {
  const uint32_t u = __float_as_uint(x + 0.0f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ float KeyValue(uint32_t key) {
  return __uint_as_float((key & 0x80000000u) ? (key & 0x7fffffffu) : ~key);
}

// The kept set: tokens with a key above `key`, and those at `key` with index <= last_index.
struct Cut {
  uint32_t key;
  int last_index;
};
constexpr Cut kKeepAll{0u, kNoIndex};
__device__ bool Keeps(Cut c, uint32_t key, int index) {
  return key > c.key || (key == c.key && index <= c.last_index);
}

struct RowContext {
  const float* row;
  int vocab;
  float max_logit;
  float temperature;
};
// A token's unnormalised probability exp((x - m) / T) <= 1, in 2^-40 fixed point.
__device__ uint64_t Mass(const RowContext& r, float x) {
  return static_cast<uint64_t>(expf((x - r.max_logit) / r.temperature) * kMassScale);
}

// (value, index) beats (best, best_index): larger value, then lower index. NaN is "nothing".
__device__ bool Better(float value, int index, float best, int best_index) {
  if (isnan(value)) return false;
  if (isnan(best)) return true;
  return value > best || (value == best && index < best_index);
}

__device__ void BlockArgmax(float& value, int& index) {
  __shared__ float values[kWarps];
  __shared__ int indices[kWarps];
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float v = __shfl_xor_sync(kFullMask, value, offset);
    const int i = __shfl_xor_sync(kFullMask, index, offset);
    if (Better(v, i, value, index)) {
      value = v;
      index = i;
    }
  }
  if (threadIdx.x % 32 == 0) {
    values[threadIdx.x / 32] = value;
    indices[threadIdx.x / 32] = index;
  }
  __syncthreads();
  value = values[0];
  index = indices[0];
  for (int w = 1; w < kWarps; ++w) {
    if (Better(values[w], indices[w], value, index)) {
      value = values[w];
      index = indices[w];
    }
  }
  __syncthreads();
}

__device__ uint64_t BlockSum(uint64_t v) {
  __shared__ uint64_t partial[kWarps];
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  uint64_t total = 0;
  for (int w = 0; w < kWarps; ++w) total += partial[w];
  __syncthreads();
  return total;
}

// hist[bin] += amount for the active lanes of a full warp. Lanes sharing a bin are summed first
// when the warp touches few bins (the common case in a radix select's first passes).
__device__ void HistogramAdd(unsigned long long* hist, bool active, uint32_t bin, uint64_t amount) {
  const int lane = threadIdx.x % 32;
  const unsigned peers = __match_any_sync(kFullMask, active ? bin : 0xffffffffu);
  const unsigned leaders = __ballot_sync(kFullMask, active && __ffs(peers) - 1 == lane);
  if (__popc(leaders) > kMaxAggregatedBins) {
    if (active) atomicAdd(&hist[bin], static_cast<unsigned long long>(amount));
    return;
  }
  for (unsigned rest = leaders; rest != 0; rest &= rest - 1) {
    const int leader = __ffs(rest) - 1;
    const uint32_t leader_bin = __shfl_sync(kFullMask, bin, leader);
    unsigned long long sum = active && bin == leader_bin ? amount : 0;
    for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(kFullMask, sum, offset);
    if (lane == leader) atomicAdd(&hist[leader_bin], sum);
  }
}

// Among the tokens `prior` keeps, the key t with amount(key > t) < target <= amount(key >= t),
// where a token's amount is 1 (kMass false: a k-th largest search) or its Mass. `above` is
// amount(key > t), `at` is amount(key == t). Needs 1 <= target <= the total amount.
struct Threshold {
  uint32_t key;
  uint64_t above, at;
};
template <bool kMass>
__device__ Threshold FindThreshold(const RowContext& r, Cut prior, uint64_t target) {
  __shared__ unsigned long long hist[kBins];
  __shared__ uint32_t chosen_bin;
  __shared__ uint64_t chosen_above;
  uint32_t prefix = 0, prefix_mask = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < kBins; i += kThreads) hist[i] = 0;
    __syncthreads();
    for (int base = 0; base < r.vocab; base += kThreads) {  // uniform: every warp stays whole
      const int i = base + static_cast<int>(threadIdx.x);
      bool active = false;
      uint32_t key = 0;
      uint64_t amount = 0;
      if (i < r.vocab) {
        const float x = r.row[i];
        key = Key(x);
        if ((key & prefix_mask) == prefix && Keeps(prior, key, i)) amount = kMass ? Mass(r, x) : 1;
        active = amount > 0;
      }
      HistogramAdd(hist, active, (key >> shift) & 0xffu, amount);
    }
    __syncthreads();
    if (threadIdx.x == 0) {  // walk the bins from the top until the running amount reaches target
      uint64_t acc = 0;
      int bin = kBins - 1;
      if (shift < 24) acc = chosen_above;
      for (; bin > 0 && acc + hist[bin] < target; --bin) acc += hist[bin];
      chosen_bin = static_cast<uint32_t>(bin);
      chosen_above = acc;
    }
    __syncthreads();
    prefix |= chosen_bin << shift;
    prefix_mask |= 0xffu << shift;
  }
  const Threshold t{prefix, chosen_above, hist[prefix & 0xffu]};
  __syncthreads();  // before a later call rewrites the histogram
  return t;
}

// The index of the n-th (from 1, in index order) token at `key` among those `prior` keeps.
__device__ int NthIndexAtKey(const RowContext& r, Cut prior, uint32_t key, uint64_t n) {
  __shared__ int warp_hits[kWarps];
  __shared__ int found;
  if (threadIdx.x == 0) found = kNoIndex;
  __syncthreads();
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  uint64_t seen = 0;  // the same in every thread
  for (int base = 0; base < r.vocab && seen < n; base += kThreads) {
    const int i = base + static_cast<int>(threadIdx.x);
    const bool hit = i < r.vocab && Key(r.row[i]) == key && Keeps(prior, key, i);
    const unsigned ballot = __ballot_sync(kFullMask, hit);
    if (lane == 0) warp_hits[warp] = __popc(ballot);
    __syncthreads();
    uint64_t before = seen + __popc(ballot & ((1u << lane) - 1u)), total = 0;
    for (int w = 0; w < kWarps; ++w) {
      if (w < warp) before += warp_hits[w];
      total += warp_hits[w];
    }
    if (hit && before + 1 == n) found = i;
    seen += total;
    __syncthreads();
  }
  const int result = found;
  __syncthreads();
  return result;
}

// Gumbel-max over the kept tokens: the index maximising (x - m) / T - log(E_i), E_i ~ Exp(1).
__device__ int GumbelArgmax(const RowContext& r, Cut cut, uint64_t seed, uint64_t step) {
  float best = NAN;
  int best_index = kNoIndex;
  for (int group = threadIdx.x; 4 * group < r.vocab; group += kThreads) {
    curandStatePhilox4_32_10_t state;
    curand_init(seed, step, 4ull * static_cast<unsigned long long>(group), &state);
    const uint4 bits = curand4(&state);
    const uint32_t words[4] = {bits.x, bits.y, bits.z, bits.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int i = 4 * group + j;
      if (i >= r.vocab) break;
      const float x = r.row[i];
      if (!Keeps(cut, Key(x), i)) continue;
      // u in (0, 1]; u = 1 (rounding of the top 2^-25) gives E = inf: that token sits this draw
      // out.
      const float u = (static_cast<float>(words[j]) + 0.5f) * 2.3283064365386963e-10f;
      const float e = -log1pf(-u);
      const float score = (x - r.max_logit) / r.temperature - logf(e);
      if (Better(score, i, best, best_index)) {
        best = score;
        best_index = i;
      }
    }
  }
  BlockArgmax(best, best_index);
  return best_index;
}

__global__ void __launch_bounds__(kThreads) SampleKernel(SampleParams p) {
  const SamplingRow rp = p.row_params[blockIdx.x];
  RowContext r{p.logits + static_cast<int64_t>(blockIdx.x) * p.stride, static_cast<int>(p.vocab),
               0.0f, rp.temperature};
  int32_t* out = p.token_ids + blockIdx.x;

  float max_logit = NAN;
  int argmax = kNoIndex;
  for (int i = threadIdx.x; i < r.vocab; i += kThreads) {
    if (Better(r.row[i], i, max_logit, argmax)) {
      max_logit = r.row[i];
      argmax = i;
    }
  }
  BlockArgmax(max_logit, argmax);
  const bool greedy = !(rp.temperature > 0.0f) || rp.top_k == 1;
  if (greedy || argmax == kNoIndex || max_logit == -INFINITY) {  // the last two: no finite logit
    if (threadIdx.x == 0) *out = argmax == kNoIndex ? 0 : argmax;
    return;
  }
  r.max_logit = max_logit;

  Cut cut = kKeepAll;
  if (rp.top_k > 0 && rp.top_k < r.vocab) {
    const uint64_t k = static_cast<uint64_t>(rp.top_k);
    const Threshold t = FindThreshold<false>(r, kKeepAll, k);
    cut.key = t.key;
    if (k - t.above < t.at) cut.last_index = NthIndexAtKey(r, kKeepAll, t.key, k - t.above);
  }
  if (rp.top_p < 1.0f) {
    uint64_t local = 0;
    for (int i = threadIdx.x; i < r.vocab; i += kThreads) {
      const float x = r.row[i];
      if (Keeps(cut, Key(x), i)) local += Mass(r, x);
    }
    const uint64_t total = BlockSum(local);  // >= 2^40: the max token is always kept
    const double wanted = ceil(static_cast<double>(rp.top_p) * static_cast<double>(total));
    uint64_t target = total;
    if (wanted < 1.0) {
      target = 1;
    } else if (wanted < static_cast<double>(total)) {
      target = static_cast<uint64_t>(wanted);
    }
    const Threshold t = FindThreshold<true>(r, cut, target);
    const uint64_t unit = Mass(r, KeyValue(t.key));  // every token at t.key has this mass, > 0
    const uint64_t needed = (target - t.above + unit - 1) / unit;
    Cut nucleus{t.key, kNoIndex};
    if (needed < t.at / unit) nucleus.last_index = NthIndexAtKey(r, cut, t.key, needed);
    if (t.key == cut.key) nucleus.last_index = min(nucleus.last_index, cut.last_index);
    cut = nucleus;
  }
  const int token = GumbelArgmax(r, cut, rp.seed, rp.step);
  if (threadIdx.x == 0) *out = token == kNoIndex ? argmax : token;
}

}  // namespace

absl::Status Sample(const SampleParams& p, cudaStream_t stream) {
  if (p.logits == nullptr) return absl::InvalidArgumentError("sample: logits is null");
  if (p.row_params == nullptr) return absl::InvalidArgumentError("sample: row_params is null");
  if (p.token_ids == nullptr) return absl::InvalidArgumentError("sample: token_ids is null");
  if (p.rows < 0 || p.rows > 0x7fffffff) {
    return absl::InvalidArgumentError(
        absl::StrCat("sample: rows=", p.rows, " outside [0, 2^31-1]"));
  }
  if (p.vocab < 1 || p.vocab > kMaxVocab) {
    return absl::InvalidArgumentError(
        absl::StrCat("sample: vocab=", p.vocab, " outside [1, ", kMaxVocab, "]"));
  }
  if (p.stride < p.vocab) {
    return absl::InvalidArgumentError(
        absl::StrCat("sample: stride=", p.stride, " below vocab=", p.vocab));
  }
  if (p.rows == 0) return absl::OkStatus();
  SampleKernel<<<static_cast<unsigned>(p.rows), kThreads, 0, stream>>>(p);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    return absl::InternalError(absl::StrCat("sample: launch failed: ", cudaGetErrorString(err)));
  return absl::OkStatus();
}

}  // namespace r1::cuda

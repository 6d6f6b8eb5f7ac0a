// MoE token permutation: a stable counting sort of the T*k router choices by expert.
// Shape: the choices are cut into tiles of 1024 consecutive entries, one warp per tile, and
// three kernels run on the stream:
//   1. count: each warp counts its tile's entries per expert in a private shared-memory row
//      (E <= 1024 int32s); __match_any_sync groups the lanes of a 32-entry chunk that share an
//      expert so one lane adds the group's size (no atomics, no races);
//   2. offsets: one block, a thread per expert, turns the per-tile counts into each tile's start
//      within each expert (a prefix over tiles) and the experts' offsets (a block scan over
//      experts);
//   3. scatter: each warp walks its tile again in order; an entry's slot is its tile's start for
//      the expert, plus the entries of that expert earlier in the tile, plus its rank among the
//      chunk's lanes with the same expert (popc of the match mask below its lane).
// The result is deterministic and, within an expert, in entry order, i.e. by token. Work is
// O(T*k + tiles*E); for a decode batch or a 16k-token prefill chunk this is a few microseconds.
// Up to 256 choices (a decode batch of up to 32 tokens at R1's top-8) take one block and one
// launch instead (SmallPermuteKernel): at one token the three launches were most of the time.
// Test: tests/cuda/kernels2_test.cc (MoePermute*: against a CPU counting sort, T in
// {1, 3, 63, 4096}, E in {8, 16, 256}, idle experts and an expert-parallel slice).
#include <algorithm>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/moe_permute.h"

namespace r1::cuda {
namespace {

constexpr int64_t kMaxExperts = 1024;
constexpr int64_t kMaxTopK = 1024;
constexpr int kTileEntries = 1024;  // entries per warp
constexpr int kWarpsPerBlock = 4;
constexpr unsigned kFullMask = 0xffffffffu;

// Block-wide inclusive sum of `value` in thread order (warp scans by shuffles, then the earlier
// warps' totals from shared memory). Every thread of the block must call it.
__device__ __forceinline__ int32_t BlockInclusiveSum(int32_t value, int32_t (&warp_totals)[32], int lane, int warp) {
  int32_t inclusive = value;
  for (int offset = 1; offset < 32; offset <<= 1) {
    const int32_t v = __shfl_up_sync(kFullMask, inclusive, offset);
    if (lane >= offset) inclusive += v;
  }
  if (lane == 31) warp_totals[warp] = inclusive;
  __syncthreads();
  for (int w = 0; w < warp; ++w) inclusive += warp_totals[w];
  return inclusive;
}

int64_t Tiles(int64_t entries) { return (entries + kTileEntries - 1) / kTileEntries; }

// Entry i's expert relative to first_expert, or -1 when it is not one of ours.
__device__ int LocalExpert(const MoePermuteParams& p, int64_t i, int64_t entries) {
  if (i >= entries) return -1;
  const int64_t e = static_cast<int64_t>(p.expert_ids[i]) - p.first_expert;
  return e >= 0 && e < p.num_experts ? static_cast<int>(e) : -1;
}

// kScatter false: workspace[tile, e] = entries of expert e in the tile.
// kScatter true: workspace[tile, e] holds the tile's first slot for expert e; place the entries.
template <bool kScatter>
__global__ void TileKernel(MoePermuteParams p, int64_t entries, int64_t tiles) {
  extern __shared__ int32_t shared_counters[];  // [kWarpsPerBlock][num_experts]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t tile = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + warp;
  if (tile >= tiles) return;  // whole warps leave; only warp-level sync below
  const int experts = static_cast<int>(p.num_experts);
  int32_t* counter = shared_counters + static_cast<int64_t>(warp) * experts;
  int32_t* tile_row = p.workspace + tile * experts;
  for (int e = lane; e < experts; e += 32) counter[e] = kScatter ? tile_row[e] : 0;
  __syncwarp();
  const int64_t end = std::min<int64_t>(entries, (tile + 1) * kTileEntries);
  for (int64_t base = tile * kTileEntries; base < end; base += 32) {  // uniform within the warp
    const int64_t i = base + lane;
    const int e = LocalExpert(p, i, entries);
    const unsigned peers = __match_any_sync(kFullMask, e);
    const bool leader = __ffs(peers) - 1 == lane;
    if (kScatter) {
      if (e >= 0) {
        const int32_t slot = counter[e] + __popc(peers & ((1u << lane) - 1u));
        p.permuted_tokens[slot] = static_cast<int32_t>(i / p.top_k);
        p.permuted_weights[slot] = p.weights[i];
        if (p.entry_slot != nullptr) p.entry_slot[i] = slot;
      } else if (i < entries && p.entry_slot != nullptr) {
        p.entry_slot[i] = -1;
      }
      __syncwarp();  // every lane has read counter[e] before the leaders advance it
    }
    if (e >= 0 && leader) counter[e] += __popc(peers);
    __syncwarp();
  }
  if (!kScatter) {
    for (int e = lane; e < experts; e += 32) tile_row[e] = counter[e];
  }
}

// One block, thread e for expert e: offsets, counts, and each tile's first slot per expert.
__global__ void OffsetsKernel(MoePermuteParams p, int64_t tiles) {
  __shared__ int32_t warp_totals[32];
  const int experts = static_cast<int>(p.num_experts);
  const int e = threadIdx.x, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int32_t total = 0;
  if (e < experts) {
    for (int64_t t = 0; t < tiles; ++t) total += p.workspace[t * experts + e];
  }
  const int32_t inclusive = BlockInclusiveSum(total, warp_totals, lane, warp);  // over experts
  const int32_t start = inclusive - total;
  if (e < experts) {
    p.expert_offsets[e] = start;
    if (p.expert_counts != nullptr) p.expert_counts[e] = total;
    int32_t running = start;
    for (int64_t t = 0; t < tiles; ++t) {
      const int32_t count = p.workspace[t * experts + e];
      p.workspace[t * experts + e] = running;
      running += count;
    }
  }
  if (e == experts - 1) p.expert_offsets[experts] = inclusive;
}

// A decode batch's few choices (entries <= kSmallEntries) in one launch instead of three: one
// block, thread i for choice i and thread e for expert e. The counts come from shared-memory
// atomics (a count does not depend on the order of the adds), the offsets from the block scan of
// OffsetsKernel, and a choice's rank within its expert is the number of earlier choices of that
// expert: the same stable order, so the same outputs, as the three kernels.
constexpr int kSmallEntries = 256;
__global__ void __launch_bounds__(kMaxExperts) SmallPermuteKernel(MoePermuteParams p, int entries) {
  __shared__ int32_t count[kMaxExperts], start[kMaxExperts], local[kSmallEntries], warp_totals[32];
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int experts = static_cast<int>(p.num_experts);
  if (tid < experts) count[tid] = 0;
  const int e = tid < entries ? LocalExpert(p, tid, entries) : -1;
  if (tid < entries) local[tid] = e;
  __syncthreads();
  if (e >= 0) atomicAdd(&count[e], 1);
  __syncthreads();
  const int32_t total = tid < experts ? count[tid] : 0;
  const int32_t inclusive = BlockInclusiveSum(total, warp_totals, lane, warp);
  if (tid < experts) {
    start[tid] = inclusive - total;
    p.expert_offsets[tid] = inclusive - total;
    if (p.expert_counts != nullptr) p.expert_counts[tid] = total;
  }
  if (tid == experts - 1) p.expert_offsets[experts] = inclusive;
  __syncthreads();
  if (tid >= entries) return;
  if (e < 0) {
    if (p.entry_slot != nullptr) p.entry_slot[tid] = -1;
    return;
  }
  int32_t rank = 0;
  for (int j = 0; j < tid; ++j) rank += local[j] == e;
  const int32_t slot = start[e] + rank;
  p.permuted_tokens[slot] = static_cast<int32_t>(tid / p.top_k);
  p.permuted_weights[slot] = p.weights[tid];
  if (p.entry_slot != nullptr) p.entry_slot[tid] = slot;
}

absl::Status Launched(const char* kernel) {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat("moe permute: ", kernel, " launch failed: ", cudaGetErrorString(err)));
}

}  // namespace

int64_t MoePermuteWorkspaceInts(int64_t tokens, int64_t top_k, int64_t num_experts) {
  if (tokens <= 0 || top_k <= 0 || num_experts <= 0) return 0;
  return Tiles(tokens * top_k) * num_experts;
}

absl::Status MoePermute(const MoePermuteParams& p, cudaStream_t stream) {
  if (p.expert_ids == nullptr) return absl::InvalidArgumentError("moe permute: expert_ids is null");
  if (p.weights == nullptr) return absl::InvalidArgumentError("moe permute: weights is null");
  if (p.expert_offsets == nullptr)
    return absl::InvalidArgumentError("moe permute: expert_offsets is null");
  if (p.permuted_tokens == nullptr)
    return absl::InvalidArgumentError("moe permute: permuted_tokens is null");
  if (p.permuted_weights == nullptr)
    return absl::InvalidArgumentError("moe permute: permuted_weights is null");
  if (p.tokens < 0 || p.tokens > 0x7fffffff) {
    return absl::InvalidArgumentError(
        absl::StrCat("moe permute: tokens=", p.tokens, " outside [0, 2^31-1]"));
  }
  if (p.top_k < 1 || p.top_k > kMaxTopK) {
    return absl::InvalidArgumentError(
        absl::StrCat("moe permute: top_k=", p.top_k, " outside [1, ", kMaxTopK, "]"));
  }
  if (p.num_experts < 1 || p.num_experts > kMaxExperts) {
    return absl::InvalidArgumentError(absl::StrCat("moe permute: num_experts=", p.num_experts,
                                                   " outside [1, ", kMaxExperts, "]"));
  }
  if (p.first_expert < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("moe permute: first_expert=", p.first_expert, " is negative"));
  }
  const int64_t entries = p.tokens * p.top_k;
  if (entries > 0x7fffffff) {
    return absl::InvalidArgumentError(
        absl::StrCat("moe permute: tokens*top_k=", entries, " exceeds 2^31-1 (int32 slots)"));
  }
  const int64_t tiles = Tiles(entries);
  if (tiles > 0 && p.workspace == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("moe permute: workspace is null (needs ",
                     MoePermuteWorkspaceInts(p.tokens, p.top_k, p.num_experts), " int32s)"));
  }
  if (entries > 0 && entries <= kSmallEntries) {
    SmallPermuteKernel<<<1, static_cast<unsigned>(kMaxExperts), 0, stream>>>(p, static_cast<int>(entries));
    return Launched("small permute");
  }
  const unsigned blocks = static_cast<unsigned>((tiles + kWarpsPerBlock - 1) / kWarpsPerBlock);
  const size_t shared_bytes = sizeof(int32_t) * kWarpsPerBlock * static_cast<size_t>(p.num_experts);
  if (tiles > 0) {
    TileKernel<false><<<blocks, kWarpsPerBlock * 32, shared_bytes, stream>>>(p, entries, tiles);
    if (absl::Status s = Launched("count"); !s.ok()) return s;
  }
  OffsetsKernel<<<1, static_cast<unsigned>(kMaxExperts), 0, stream>>>(
      p, tiles);  // also zeroes offsets when empty
  if (absl::Status s = Launched("offsets"); !s.ok()) return s;
  if (tiles > 0) {
    TileKernel<true><<<blocks, kWarpsPerBlock * 32, shared_bytes, stream>>>(p, entries, tiles);
    if (absl::Status s = Launched("scatter"); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace r1::cuda

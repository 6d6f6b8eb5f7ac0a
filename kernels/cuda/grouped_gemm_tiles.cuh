// Shared by the grouped GEMM kernels (grouped_gemm.cu, grouped_gemm_wgmma.cu): the device-side
// tile schedule, and the wgmma kernel's entry points for GroupedFp8Gemm's dispatch.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/grouped_gemm.h"

namespace r1::cuda {
namespace grouped_gemm {

constexpr int kBN = 128;  // output columns per tile: one block row of the weight scales
constexpr int64_t kMaxExperts = 8192;  // the offsets scan is staged in the kernels' shared memory

// Finds block's tile: the experts' tile counts ceil(rows_e / BM), scanned in order by warp 0
// over the offsets staged in s_off (kMaxExperts + 1 ints). Sets s_tile = {expert, first row, end
// row} or {-1} (no tile). Ends with a barrier, after which s_off's shared memory is free.
template <int BM, int kBlockThreads>
__device__ __forceinline__ void FindTile(const GroupedFp8GemmParams& p, int tile, int* s_off,
                                         int* s_tile) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  for (int i = tid; i <= p.experts; i += kBlockThreads) s_off[i] = p.offsets[i];
  if (tid == 0) s_tile[0] = -1;
  __syncthreads();
  if (warp == 0) {
    int before = 0;  // tiles of the experts before this 32-expert group
    for (int base = 0; base < p.experts; base += 32) {
      const int e = base + lane;
      const int rows = e < p.experts ? max(s_off[e + 1] - s_off[e], 0) : 0;
      const int tiles = (rows + BM - 1) / BM;
      int incl = tiles;
#pragma unroll
      for (int d = 1; d < 32; d <<= 1) {
        const int v = __shfl_up_sync(0xffffffffu, incl, d);
        if (lane >= d) incl += v;
      }
      const int first = before + incl - tiles;
      if (tile >= first && tile < first + tiles) {
        const int r0 = s_off[e] + (tile - first) * BM;
        s_tile[0] = e, s_tile[1] = r0, s_tile[2] = min(r0 + BM, s_off[e + 1]);
      }
      before += __shfl_sync(0xffffffffu, incl, 31);
      if (before > tile) break;
    }
  }
  __syncthreads();
}

// Tiles of BM rows the launch covers: Σ_e ceil(rows_e / BM) <= floor(max_rows / BM) + (experts
// with a partial tile); surplus blocks find no tile and exit.
inline int64_t MaxTiles(const GroupedFp8GemmParams& p, int bm) {
  return p.max_rows / bm + (p.experts < p.max_rows ? p.experts : p.max_rows);
}

// The FP8 × FP8 product on wgmma (grouped_gemm_wgmma.cu), for parameters that GroupedFp8Gemm
// has already checked: whether it applies (n a multiple of 8, y 16-byte aligned, the bulk-copy
// tensor maps encodable), and the launch with tiles of `bm` rows (16, 32, 64 or 128).
bool WgmmaApplies(const GroupedFp8GemmParams& p);
absl::Status LaunchWgmma(const GroupedFp8GemmParams& p, int bm, cudaStream_t stream);

}  // namespace grouped_gemm
}  // namespace r1::cuda

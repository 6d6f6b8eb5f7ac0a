// Grouped FP8-weight GEMM over the routed experts (mma.sync, bf16 in, float32 accumulate).
//
// y[r, :] = x[r, :] · W_e^T for every row r of expert e. A block computes one tile: BM rows of one
// expert (BM = 16, 32, 64 or 128; rows past the expert's end are zero-filled and not stored) ×
// 128 output columns (exactly one 128-row block of W's scales). Which (expert, rows) a block
// takes is found on the device: block b takes tile b / n_tiles of the list "for each expert,
// ceil(rows_e / BM) tiles", computed by a scan of the offsets at the block's start; the grid is
// sized on the host for the most tiles max_rows can make, and surplus blocks exit. Blocks that
// share a row tile are adjacent (x read once from HBM), and an expert's row tiles run n_tiles
// blocks apart, close enough in time that its weight tiles come from L2 for the later ones.
//
// Pipeline: 4 stages (3 where they would not fit) of BK = 64 or 128 brought by cp.async: the
// bf16 x tile, the FP8 weight tile and its block scale. Fragments are read straight from shared
// memory with 8-byte (x) and 4-byte (codes) loads; the reduction index is permuted so that both
// fit the mma.sync m16n8k16 register layout: thread (g, q) holds k = 4q..4q+3 of a 16-wide slice
// of its rows and feeds them to the MMA as its logical k = 2q, 2q+1, 2q+8, 2q+9. The same
// permutation on both operands leaves the sum unchanged. Each code pair is converted in
// registers, exactly: e4m3x2 → f16x2 → float → bf16x2; the block scales multiply the float32
// accumulators (see compute()), so the result is x · (code × scale) in float32 like the GEMV's,
// and a batch that runs here matches one that runs the GEMV up to summation order. Shared rows
// are XOR-swizzled in 16-byte chunks so that both the cp.async stores and the fragment loads are
// free of bank conflicts.
//
// Warps: 4 per block, splitting the 128 columns: each warp converts only its own 32 weight rows,
// once for all BM rows, so a converted code feeds BM / 16 MMAs.
// Test: tests/cuda/grouped_gemm_test.cc. Bench: bench_gpu --only moelayer.
#include <cuda_fp16.h>

#include <algorithm>
#include <climits>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/grouped_gemm.h"
#include "kernels/cuda/grouped_gemm_tiles.cuh"
#include "kernels/cuda/sm90_util.cuh"

namespace r1::cuda {
namespace {

using grouped_gemm::FindTile;
using grouped_gemm::kBN;
using grouped_gemm::kMaxExperts;
using grouped_gemm::MaxTiles;

constexpr int kThreads = 128;

// BM rows × kBN columns per block, BK of k per pipeline stage (64 or 128: half a scale block
// or one).
template <int BM, int BK, bool kFp8>
struct Tile {
  static constexpr int kWarpCols = kBN / (kThreads / 32);   // each warp: all BM rows × 32 columns
  static constexpr int kMi = BM / 16, kNi = kWarpCols / 8;  // 16 x 8 MMA tiles per warp
  static constexpr int kWBytes = kFp8 ? 1 : 2;              // bytes per weight element
  static constexpr int kARowBytes = BK * 2, kBRowBytes = BK * kWBytes;
  static constexpr int kABytes = BM * kARowBytes;
  static constexpr int kBBytes = kBN * kBRowBytes;
  static constexpr int kStageBytes = kABytes + kBBytes + 16;  // + the stage's block scale
  static constexpr int kStages =
      4 * kStageBytes <= 200 * 1024 ? 4 : 3;  // within the 227 KB per block
  static constexpr int kSmemBytes = kStages * kStageBytes;
  static_assert(BK == 64 || BK == 128, "BK");
  static_assert(kMi >= 1 && kNi >= 1 && BM * kARowBytes / 16 % kThreads == 0, "tile shape");
  static_assert((kMaxExperts + 1) * 4 <= kSmemBytes, "offsets scan does not fit");
};

// Byte offset of 16-byte chunk `ch` of row `r` in a tile of bf16 rows (x; bf16 weights) of
// kRowBytes = 128 or 256. A fragment load reads 8 bytes of rows g = 0..3 (per half warp) from
// the same two chunks; the XOR with 2 × (r % 4) puts those four rows' 32-byte pieces in disjoint
// banks, and a row's 8 chunks of 128 bytes stay a permutation of themselves (conflict-free stores).
template <int kRowBytes>
__device__ __forceinline__ uint32_t SwzBf16(int r, int ch) {
  return r * kRowBytes + ((ch ^ ((r & 3) << 1)) << 4);
}
// The same for FP8 weight rows of 64 or 128 bytes, read 4 bytes of rows 0..7 from one chunk: the
// chunks of rows that share a bank offset are spread by XOR with (r / 2) % 4 (64-byte rows: two
// rows per 128 bytes) or r % 8 (128-byte rows).
template <int kRowBytes>
__device__ __forceinline__ uint32_t SwzFp8(int r, int ch) {
  return r * kRowBytes + ((ch ^ (kRowBytes == 64 ? (r >> 1) & 3 : r & 7)) << 4);
}

__device__ __forceinline__ void CpAsync16(uint32_t dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src));
}
// Copies 16 bytes, or writes 16 zero bytes when !valid (src is not read then).
__device__ __forceinline__ void CpAsync16Zfill(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void StsZero16(uint32_t dst) {
  asm volatile("st.shared.v4.u32 [%0], {%1,%1,%1,%1};\n" ::"r"(dst), "r"(0));
}
__device__ __forceinline__ void CpAsync4(uint32_t dst, const void* src) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(dst), "l"(src));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void Mma(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                    uint32_t a3, uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Two e4m3 codes (low byte first) → bf16x2, exactly (every e4m3 value is a bf16 value).
__device__ __forceinline__ uint32_t Fp8x2ToBf16x2(uint32_t codes) {
  const __half2_raw h =
      __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(codes & 0xffffu), __NV_E4M3);
  const float2 f = __half22float2(__half2(h));
  const __nv_bfloat162 b = __floats2bfloat162_rn(f.x, f.y);
  return *reinterpret_cast<const uint32_t*>(&b);
}

template <int BM, int BK, bool kFp8>
__global__ void __launch_bounds__(kThreads, BM >= 64 ? 2 : 4)
    GroupedGemmKernel(GroupedFp8GemmParams p, int n_tiles) {
  using T = Tile<BM, BK, kFp8>;
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ int s_tile[3];  // expert, first row, end row of this block's tile (expert -1: none)
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int tile = static_cast<int>(blockIdx.x / n_tiles),
            nt = static_cast<int>(blockIdx.x % n_tiles);

  // 1. Find the tile.
  int* s_off = reinterpret_cast<int*>(smem);
  FindTile<BM, kThreads>(p, tile, s_off, s_tile);
  const int e = s_tile[0];
  if (e < 0) return;
  const int row0 = s_tile[1], rows = s_tile[2] - row0;

  const int64_t k = p.k, n = p.n, col0 = static_cast<int64_t>(nt) * kBN;
  const __nv_bfloat16* xg = p.x + static_cast<int64_t>(row0) * k;
  const unsigned char* wg = kFp8 ? reinterpret_cast<const unsigned char*>(p.w)
                                 : reinterpret_cast<const unsigned char*>(p.w_bf16);
  wg += (static_cast<int64_t>(e) * n + col0) * p.w_stride * T::kWBytes;
  const int64_t w_row_bytes = p.w_stride * T::kWBytes;
  const float* sg =
      kFp8 ? p.scales + (static_cast<int64_t>(e) * ((n + 127) / 128) + nt) * p.scale_stride
           : nullptr;
  const uint32_t sbase = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const int ktiles = static_cast<int>((k + BK - 1) / BK);

  // 2. Stage loads. Each thread copies the same 16-byte column chunk of kAChunks (kBChunks) rows,
  // kARowStep (kBRowStep) apart. Rows past the expert's end (x) or past n (W) are never loaded:
  // their shared rows are zeroed here once, in every stage. A tile wholly inside k takes the
  // short path; the last one, if k ends inside it, zero-fills the columns past k.
  constexpr int kAChunksPerRow = T::kARowBytes / 16, kBChunksPerRow = T::kBRowBytes / 16;
  constexpr int kBElemsPerChunk = 16 / T::kWBytes;
  constexpr int kARowStep = kThreads / kAChunksPerRow,
                kBRowStep = kThreads / kBChunksPerRow;  // multiples of 8
  constexpr int kAChunks = BM / kARowStep, kBChunks = kBN / kBRowStep;
  const int a_r = tid / kAChunksPerRow, a_ch = tid % kAChunksPerRow;
  const int b_r = tid / kBChunksPerRow, b_ch = tid % kBChunksPerRow;
  const int a_valid = rows > a_r ? min(kAChunks, (rows - a_r + kARowStep - 1) / kARowStep) : 0;
  const int64_t n_left = n - col0;
  const int b_valid = n_left > b_r
                          ? static_cast<int>(min(static_cast<int64_t>(kBChunks),
                                                 (n_left - b_r + kBRowStep - 1) / kBRowStep))
                          : 0;
  const unsigned char* a_src =
      reinterpret_cast<const unsigned char*>(xg + static_cast<int64_t>(a_r) * k + a_ch * 8);
  const unsigned char* b_src = wg + b_r * w_row_bytes + b_ch * 16;
  const int64_t a_step = static_cast<int64_t>(kARowStep) * k * 2, b_step = kBRowStep * w_row_bytes;
  // The swizzles depend on r % 8 only, the same for all of a thread's rows.
  const uint32_t a_dst = SwzBf16<T::kARowBytes>(a_r, a_ch);
  const uint32_t b_dst =
      kFp8 ? SwzFp8<T::kBRowBytes>(b_r, b_ch) : SwzBf16<T::kBRowBytes>(b_r, b_ch);
  if (a_valid < kAChunks || b_valid < kBChunks) {
    for (int s = 0; s < T::kStages; ++s) {
      const uint32_t sa = sbase + s * T::kStageBytes, sb = sa + T::kABytes;
#pragma unroll
      for (int i = 0; i < kAChunks; ++i)
        if (i >= a_valid) StsZero16(sa + a_dst + i * kARowStep * T::kARowBytes);
#pragma unroll
      for (int i = 0; i < kBChunks; ++i)
        if (i >= b_valid) StsZero16(sb + b_dst + i * kBRowStep * T::kBRowBytes);
    }
  }
  auto load = [&](int kt, int stage) {
    const uint32_t sa = sbase + stage * T::kStageBytes, sb = sa + T::kABytes;
    const int64_t kc = static_cast<int64_t>(kt) * BK;
    const unsigned char* pa = a_src + kc * 2;
    const unsigned char* pb = b_src + kc * T::kWBytes;
    if (kc + BK <= k) {
#pragma unroll
      for (int i = 0; i < kAChunks; ++i)
        if (i < a_valid) CpAsync16(sa + a_dst + i * kARowStep * T::kARowBytes, pa + i * a_step);
#pragma unroll
      for (int i = 0; i < kBChunks; ++i)
        if (i < b_valid) CpAsync16(sb + b_dst + i * kBRowStep * T::kBRowBytes, pb + i * b_step);
    } else {
      const bool a_col_ok = kc + a_ch * 8 < k;
#pragma unroll
      for (int i = 0; i < kAChunks; ++i) {
        if (i < a_valid) {
          CpAsync16Zfill(sa + a_dst + i * kARowStep * T::kARowBytes,
                         a_col_ok ? pa + i * a_step : static_cast<const void*>(p.x), a_col_ok);
        }
      }
      const int64_t b_col = kc + b_ch * kBElemsPerChunk;
#pragma unroll
      for (int i = 0; i < kBChunks; ++i) {
        if (i >= b_valid) continue;
        const unsigned char* src = pb + i * b_step;
        const uint32_t dst = sb + b_dst + i * kBRowStep * T::kBRowBytes;
        if (kFp8 && b_col < k && b_col + kBElemsPerChunk > k) {
          // The chunk straddles k (k % 16 == 8): the codes past k may be anything, NaN
          // included, and NaN × the zero-filled x would poison the sum, so they are zeroed.
          uint4 v = *reinterpret_cast<const uint4*>(src);
          const int keep = static_cast<int>(k - b_col);
          uint32_t* w = &v.x;
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            const int kb = min(max(keep - 4 * j, 0), 4);
            w[j] &= kb >= 4 ? 0xffffffffu : (1u << (8 * kb)) - 1u;
          }
          asm volatile("st.shared.v4.u32 [%0], {%1,%2,%3,%4};\n" ::"r"(dst), "r"(v.x), "r"(v.y),
                       "r"(v.z), "r"(v.w));
        } else {
          CpAsync16Zfill(dst, b_col < k ? src : wg, b_col < k);
        }
      }
    }
    if (kFp8 && tid == 0) CpAsync4(sb + T::kBBytes, sg + kc / 128);
  };

  // 3. Warp tiles: all BM rows × columns [warp * kWarpCols, +kWarpCols).
  const int g = lane >> 2, q = lane & 3;
  const uint32_t a_lane = g * T::kARowBytes + q * 8, a_x = (g & 3) << 5;
  const uint32_t b_lane = (warp * T::kWarpCols + g) * T::kBRowBytes + q * (kFp8 ? 4 : 8);
  const uint32_t b_x = kFp8 ? (T::kBRowBytes == 64 ? (g >> 1) & 3 : g & 7) << 4 : (g & 3) << 5;
  float acc[T::kMi][T::kNi][4];
#pragma unroll
  for (int mi = 0; mi < T::kMi; ++mi)
#pragma unroll
    for (int ni = 0; ni < T::kNi; ++ni)
      acc[mi][ni][0] = acc[mi][ni][1] = acc[mi][ni][2] = acc[mi][ni][3] = 0.0f;

  // The block scales are applied to the float32 accumulators, not to the codes: acc holds the
  // sum in units of `acc_scale`, the scale of the k block last added, and is rescaled by
  // acc_scale / s when a block of another scale s begins (the same idea as an online softmax's
  // rescaling). So the MMAs see the exact code values and the sum equals x · (code × scale) in
  // float32 up to summation order, as GroupedFp8Gemv computes it.
  float acc_scale = 1.0f;
  auto compute = [&](int stage) {
    const unsigned char* sa = smem + stage * T::kStageBytes;
    const unsigned char* sb = sa + T::kABytes;
    if constexpr (kFp8) {
      const float s = *reinterpret_cast<const float*>(sb + T::kBBytes);
      if (s == 0.0f) return;  // the block adds nothing (the same value in every thread)
      if (s != acc_scale) {
        const float r = acc_scale / s;
#pragma unroll
        for (int mi = 0; mi < T::kMi; ++mi)
#pragma unroll
          for (int ni = 0; ni < T::kNi; ++ni)
#pragma unroll
            for (int j = 0; j < 4; ++j) acc[mi][ni][j] *= r;
        acc_scale = s;
      }
    }
#pragma unroll
    for (int kk = 0; kk < BK / 16; ++kk) {
      // SwzBf16(r, 2 kk + q / 2) + 8 (q % 2) and SwzFp8(wr, kk) + 4 q with the parts that vary
      // per thread (rows g, g + 8 and weight row warp * 32 + g: their swizzle terms depend on g)
      // hoisted out of the loop, and the per-slice XOR applied here.
      const uint32_t ao = a_lane + (a_x ^ (kk << 5));
      const uint32_t bo = b_lane + (b_x ^ (kFp8 ? kk << 4 : kk << 5));
      uint2 a[T::kMi][2];  // x[row g / g+8][4q .. 4q+3] of this 16-wide slice
#pragma unroll
      for (int mi = 0; mi < T::kMi; ++mi) {
        a[mi][0] = *reinterpret_cast<const uint2*>(sa + ao + mi * 16 * T::kARowBytes);
        a[mi][1] = *reinterpret_cast<const uint2*>(sa + ao + (mi * 16 + 8) * T::kARowBytes);
      }
#pragma unroll
      for (int ni = 0; ni < T::kNi; ++ni) {
        uint32_t b0, b1;  // W[warp * 32 + ni * 8 + g][4q .. 4q+3] of this slice, as bf16 pairs
        if constexpr (kFp8) {
          const uint32_t codes =
              *reinterpret_cast<const uint32_t*>(sb + bo + ni * 8 * T::kBRowBytes);
          b0 = Fp8x2ToBf16x2(codes);
          b1 = Fp8x2ToBf16x2(codes >> 16);
        } else {
          const uint2 v = *reinterpret_cast<const uint2*>(sb + bo + ni * 8 * T::kBRowBytes);
          b0 = v.x, b1 = v.y;
        }
#pragma unroll
        for (int mi = 0; mi < T::kMi; ++mi)
          Mma(acc[mi][ni], a[mi][0].x, a[mi][1].x, a[mi][0].y, a[mi][1].y, b0, b1);
      }
    }
  };

  // 4. The pipeline: kStages - 1 tiles in flight while one is consumed; one barrier per tile.
#pragma unroll
  for (int s = 0; s < T::kStages - 1; ++s) {
    if (s < ktiles) load(s, s);
    CpAsyncCommit();
  }
  for (int kt = 0; kt < ktiles; ++kt) {
    CpAsyncWait<T::kStages - 2>();
    __syncthreads();  // tile kt visible to all; the stage refilled below is no longer read
    const int next = kt + T::kStages - 1;
    if (next < ktiles) load(next, next % T::kStages);
    CpAsyncCommit();
    compute(kt % T::kStages);
  }

  // 5. Epilogue: bf16 pairs straight from the accumulators (n is even, so a pair never straddles
  // n).
#pragma unroll
  for (int mi = 0; mi < T::kMi; ++mi) {
    const int r = mi * 16 + g;
#pragma unroll
    for (int ni = 0; ni < T::kNi; ++ni) {
      const int64_t c = col0 + warp * T::kWarpCols + ni * 8 + 2 * q;
      if (c >= n) continue;
      __nv_bfloat16* yr = p.y + static_cast<int64_t>(row0 + r) * n + c;
      if (r < rows) {
        *reinterpret_cast<__nv_bfloat162*>(yr) =
            __floats2bfloat162_rn(acc[mi][ni][0] * acc_scale, acc[mi][ni][1] * acc_scale);
      }
      if (r + 8 < rows) {
        *reinterpret_cast<__nv_bfloat162*>(yr + 8 * n) =
            __floats2bfloat162_rn(acc[mi][ni][2] * acc_scale, acc[mi][ni][3] * acc_scale);
      }
    }
  }
}

// FP8 × FP8 (GroupedFp8GemmParams::x_q): the same tile schedule and pipeline with both operands
// e4m3 codes, BK = 128 (one scale block per stage: 128-byte rows for x and W, both swizzled as
// SwzBf16<128>), multiplied by mma.sync m16n8k32 e4m3 with no conversion. Thread (g, q) reads 8
// codes k = 8q..8q+7 of each 32-wide slice and feeds them as its logical k = 4q..4q+3 (a0/a1,
// b0) and 16+4q..16+4q+3 (a2/a3, b1); the same permutation on both operands.
//
// Each stage also brings the tile rows' x scales for its k block and the weight block's scale.
// The accumulators of each row hold the sum in units of that row's combined scale
// s = x_scale[row, kb] · w_scale[kb] of the block last added, and are multiplied by s_old / s
// when a block begins (the bf16 kernel's rescaling, per row): the MMAs accumulate code products
// straight into them, and the epilogue multiplies by the last s.
//
// On sm_90 ptxas lowers the e4m3 mma.sync to conversions to f16 (F2FP.F16.E4M3.UNPACK_B) and
// HMMA.16816.F32 (there is no QMMA; Hopper's FP8 tensor-core rate needs wgmma). The conversions
// are shared: each A code pair feeds kNi MMAs, each B pair kMi. Measured on an H100 against the
// bf16-activation kernel (bench_gpu --only moelayer --moe-tokens 4096, 128 rows per expert):
// gate 2048x7168 5032 us at 64 rows vs 5355 us (its default 128x64), down 5058 vs 5563 us.
// BM = 128 spills (255 registers); tile_rows 0 picks at most 64. Since then the FP8 × FP8 path
// runs on wgmma (grouped_gemm_wgmma.cu) where its shapes allow; this kernel is the fallback (n not
// a multiple of 8, y not 16-byte aligned) and GroupedFp8GemmParams::mma_sync's choice.
template <int BM>
struct QTile {
  static constexpr int kWarpCols = kBN / (kThreads / 32);
  static constexpr int kMi = BM / 16, kNi = kWarpCols / 8;
  static constexpr int kRowBytes = 128;  // BK = 128 codes
  static constexpr int kABytes = BM * kRowBytes, kBBytes = kBN * kRowBytes;
  static constexpr int kSBytes = BM * 4 + 16;  // x scales of the BM rows, then the weight's
  static constexpr int kStageBytes = kABytes + kBBytes + kSBytes;
  // 4 stages where two blocks still fit an SM's shared memory, else 3.
  static constexpr int kStages = 4 * kStageBytes <= 112 * 1024 ? 4 : 3;
  static constexpr int kSmemBytes = kStages * kStageBytes;
  static_assert((kMaxExperts + 1) * 4 <= kSmemBytes, "offsets scan does not fit");
  static_assert(BM % 16 == 0 && BM <= kThreads, "tile shape");
};

template <int BM>
__global__ void __launch_bounds__(kThreads, BM >= 64 ? 2 : 3)
    GroupedQGemmKernel(GroupedFp8GemmParams p, int n_tiles) {
  using T = QTile<BM>;
  constexpr int BK = 128;
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ int s_tile[3];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int tile = static_cast<int>(blockIdx.x / n_tiles),
            nt = static_cast<int>(blockIdx.x % n_tiles);
  FindTile<BM, kThreads>(p, tile, reinterpret_cast<int*>(smem), s_tile);
  const int e = s_tile[0];
  if (e < 0) return;
  const int row0 = s_tile[1], rows = s_tile[2] - row0;

  const int64_t k = p.k, n = p.n, col0 = static_cast<int64_t>(nt) * kBN;
  const unsigned char* xg =
      reinterpret_cast<const unsigned char*>(p.x_q) + static_cast<int64_t>(row0) * p.x_stride;
  const float* xsg = p.x_scales + static_cast<int64_t>(row0) * p.x_scale_stride;
  const unsigned char* wg = reinterpret_cast<const unsigned char*>(p.w) +
                            (static_cast<int64_t>(e) * n + col0) * p.w_stride;
  const float* sg = p.scales + (static_cast<int64_t>(e) * ((n + 127) / 128) + nt) * p.scale_stride;
  const uint32_t sbase = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const int ktiles = static_cast<int>((k + BK - 1) / BK);

  // 2. Stage loads: 8 chunks of 16 codes per row, 16 rows per pass of the 128 threads. Rows past
  // the expert's end or past n are zeroed once in every stage and never loaded; their x scales
  // are set to 1 (their sums are 0 and not stored). k is a multiple of 16: a chunk is wholly
  // inside k or wholly past it (zero-filled).
  constexpr int kRowStep = kThreads / 8, kAChunks = BM / kRowStep, kBChunks = kBN / kRowStep;
  const int r_ = tid / 8, ch = tid % 8;
  const int a_valid = rows > r_ ? min(kAChunks, (rows - r_ + kRowStep - 1) / kRowStep) : 0;
  const int64_t n_left = n - col0;
  const int b_valid = n_left > r_ ? static_cast<int>(min(static_cast<int64_t>(kBChunks),
                                                         (n_left - r_ + kRowStep - 1) / kRowStep))
                                  : 0;
  const unsigned char* a_src = xg + r_ * p.x_stride + ch * 16;
  const unsigned char* b_src = wg + r_ * p.w_stride + ch * 16;
  const int64_t a_step = kRowStep * p.x_stride, b_step = kRowStep * p.w_stride;
  const uint32_t dst0 = SwzBf16<T::kRowBytes>(r_, ch);
  for (int s = 0; s < T::kStages; ++s) {
    const uint32_t sa = sbase + s * T::kStageBytes, sb = sa + T::kABytes, ss = sb + T::kBBytes;
#pragma unroll
    for (int i = 0; i < kAChunks; ++i)
      if (i >= a_valid) StsZero16(sa + dst0 + i * kRowStep * T::kRowBytes);
#pragma unroll
    for (int i = 0; i < kBChunks; ++i)
      if (i >= b_valid) StsZero16(sb + dst0 + i * kRowStep * T::kRowBytes);
    if (tid < BM && tid >= rows)
      asm volatile("st.shared.f32 [%0], %1;\n" ::"r"(ss + tid * 4), "f"(1.0f));
  }
  auto load = [&](int kt, int stage) {
    const uint32_t sa = sbase + stage * T::kStageBytes, sb = sa + T::kABytes, ss = sb + T::kBBytes;
    const int64_t kc = static_cast<int64_t>(kt) * BK;
    const unsigned char* pa = a_src + kc;
    const unsigned char* pb = b_src + kc;
    if (kc + BK <= k) {
#pragma unroll
      for (int i = 0; i < kAChunks; ++i)
        if (i < a_valid) CpAsync16(sa + dst0 + i * kRowStep * T::kRowBytes, pa + i * a_step);
#pragma unroll
      for (int i = 0; i < kBChunks; ++i)
        if (i < b_valid) CpAsync16(sb + dst0 + i * kRowStep * T::kRowBytes, pb + i * b_step);
    } else {
      const bool col_ok = kc + ch * 16 < k;
#pragma unroll
      for (int i = 0; i < kAChunks; ++i)
        if (i < a_valid)
          CpAsync16Zfill(sa + dst0 + i * kRowStep * T::kRowBytes,
                         col_ok ? pa + i * a_step : static_cast<const void*>(xg), col_ok);
#pragma unroll
      for (int i = 0; i < kBChunks; ++i)
        if (i < b_valid)
          CpAsync16Zfill(sb + dst0 + i * kRowStep * T::kRowBytes,
                         col_ok ? pb + i * b_step : static_cast<const void*>(wg), col_ok);
    }
    if (tid < rows && tid < BM) CpAsync4(ss + tid * 4, xsg + tid * p.x_scale_stride + kt);
    if (tid == kThreads - 1) CpAsync4(ss + BM * 4, sg + kt);
  };

  // 3. Warp tiles: all BM rows × columns [warp * 32, +32).
  const int g = lane >> 2, q = lane & 3;
  const uint32_t a_lane = g * T::kRowBytes + q * 8, x_g = (g & 3) << 5;
  const uint32_t b_lane = (warp * T::kWarpCols + g) * T::kRowBytes + q * 8;
  float acc[T::kMi][T::kNi][4];
  float acc_scale[T::kMi][2];  // the units of rows mi * 16 + g (0) and + 8 (1)
#pragma unroll
  for (int mi = 0; mi < T::kMi; ++mi) {
    acc_scale[mi][0] = acc_scale[mi][1] = 1.0f;
#pragma unroll
    for (int ni = 0; ni < T::kNi; ++ni)
      acc[mi][ni][0] = acc[mi][ni][1] = acc[mi][ni][2] = acc[mi][ni][3] = 0.0f;
  }
  auto compute = [&](int stage) {
    const unsigned char* sa = smem + stage * T::kStageBytes;
    const unsigned char* sb = sa + T::kABytes;
    const float* ss = reinterpret_cast<const float*>(sb + T::kBBytes);
    const float ws = ss[BM];
    if (ws == 0.0f) return;  // the block adds nothing (the same value in every thread)
#pragma unroll
    for (int mi = 0; mi < T::kMi; ++mi) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float sc = ss[mi * 16 + h * 8 + g] * ws;
        const float r = __fdividef(acc_scale[mi][h], sc);
        acc_scale[mi][h] = sc;
#pragma unroll
        for (int ni = 0; ni < T::kNi; ++ni) acc[mi][ni][2 * h] *= r, acc[mi][ni][2 * h + 1] *= r;
      }
    }
#pragma unroll 2
    for (int kk = 0; kk < BK / 32; ++kk) {
      const uint32_t sw = x_g ^ (kk << 5);  // SwzBf16<128>(row, 2 kk + q / 2) + 8 (q % 2)
      uint2 a[T::kMi][2];  // codes x[row g / g+8][8q .. 8q+7] of this 32-wide slice
#pragma unroll
      for (int mi = 0; mi < T::kMi; ++mi) {
        a[mi][0] = *reinterpret_cast<const uint2*>(sa + a_lane + sw + mi * 16 * T::kRowBytes);
        a[mi][1] =
            *reinterpret_cast<const uint2*>(sa + a_lane + sw + (mi * 16 + 8) * T::kRowBytes);
      }
#pragma unroll
      for (int ni = 0; ni < T::kNi; ++ni) {
        const uint2 b = *reinterpret_cast<const uint2*>(sb + b_lane + sw + ni * 8 * T::kRowBytes);
#pragma unroll
        for (int mi = 0; mi < T::kMi; ++mi)
          MmaE4m3(acc[mi][ni], a[mi][0].x, a[mi][1].x, a[mi][0].y, a[mi][1].y, b.x, b.y);
      }
    }
  };

  // 4. The pipeline, as in GroupedGemmKernel.
#pragma unroll
  for (int s = 0; s < T::kStages - 1; ++s) {
    if (s < ktiles) load(s, s);
    CpAsyncCommit();
  }
  for (int kt = 0; kt < ktiles; ++kt) {
    CpAsyncWait<T::kStages - 2>();
    __syncthreads();
    const int next = kt + T::kStages - 1;
    if (next < ktiles) load(next, next % T::kStages);
    CpAsyncCommit();
    compute(kt % T::kStages);
  }

  // 5. Epilogue.
#pragma unroll
  for (int mi = 0; mi < T::kMi; ++mi) {
    const int r = mi * 16 + g;
#pragma unroll
    for (int ni = 0; ni < T::kNi; ++ni) {
      const int64_t c = col0 + warp * T::kWarpCols + ni * 8 + 2 * q;
      if (c >= n) continue;
      __nv_bfloat16* yr = p.y + static_cast<int64_t>(row0 + r) * n + c;
      if (r < rows) {
        *reinterpret_cast<__nv_bfloat162*>(yr) = __floats2bfloat162_rn(
            acc[mi][ni][0] * acc_scale[mi][0], acc[mi][ni][1] * acc_scale[mi][0]);
      }
      if (r + 8 < rows) {
        *reinterpret_cast<__nv_bfloat162*>(yr + 8 * n) = __floats2bfloat162_rn(
            acc[mi][ni][2] * acc_scale[mi][1], acc[mi][ni][3] * acc_scale[mi][1]);
      }
    }
  }
}

// One warp per (row, 128-column group of q_stride): 4 columns per lane.
__global__ void QuantizeRowsKernel(QuantizeRowsParams p, int64_t groups) {
  const int64_t item = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (item >= p.rows * groups) return;
  const int64_t row = item / groups, grp = item % groups, c = grp * 128 + lane * 4;
  float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  if (c < p.k) {
    const uint2 raw = *reinterpret_cast<const uint2*>(p.x + row * p.k + c);
    const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.x));
    const float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&raw.y));
    v[0] = lo.x, v[1] = lo.y, v[2] = hi.x, v[3] = hi.y;
  }
  float amax = fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3])));
#pragma unroll
  for (int d = 16; d > 0; d >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, d));
  const float scale = fmaxf(amax, 1e-10f) / 448.0f;
  if (c < p.q_stride) {
    const uint32_t lo = __nv_cvt_float2_to_fp8x2(make_float2(v[0] / scale, v[1] / scale),
                                                 __NV_SATFINITE, __NV_E4M3);
    const uint32_t hi = __nv_cvt_float2_to_fp8x2(make_float2(v[2] / scale, v[3] / scale),
                                                 __NV_SATFINITE, __NV_E4M3);
    *reinterpret_cast<uint32_t*>(reinterpret_cast<unsigned char*>(p.q) + row * p.q_stride + c) =
        lo | hi << 16;
  }
  if (lane == 0 && grp * 128 < p.k) p.scales[row * p.scale_stride + grp] = scale;
}


// cudaFuncSetAttribute costs host time (tens of µs); it is called once per device and kernel.
constexpr int kMaxDevices = 64, kKernels = 16;  // + 4 FP8 x FP8 kernels
std::mutex g_smem_mu;
bool g_smem_set[kMaxDevices][kKernels + 4] = {};

// Launches `kernel` over the worst-case tile count for tiles of BM rows (MaxTiles).
template <typename Kernel>
absl::Status LaunchTiles(Kernel* kernel, int kernel_slot, int smem_bytes, int bm, const GroupedFp8GemmParams& p,
                         cudaStream_t stream) {
  const int64_t n_tiles = (p.n + kBN - 1) / kBN;
  const int64_t blocks = MaxTiles(p, bm) * n_tiles;
  if (blocks > INT_MAX)
    return absl::InvalidArgumentError(absl::StrCat("grouped gemm: ", blocks, " blocks"));
  {
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= kMaxDevices) dev = 0;
    std::lock_guard<std::mutex> lock(g_smem_mu);
    if (!g_smem_set[dev][kernel_slot]) {
      const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
      if (err != cudaSuccess) {
        return absl::InternalError(
            absl::StrCat("grouped gemm: shared memory attribute: ", cudaGetErrorString(err)));
      }
      g_smem_set[dev][kernel_slot] = true;
    }
  }
  kernel<<<static_cast<unsigned>(blocks), kThreads, smem_bytes, stream>>>(p, static_cast<int>(n_tiles));
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    return absl::InternalError(absl::StrCat("grouped gemm: launch failed: ", cudaGetErrorString(err)));
  return absl::OkStatus();
}

template <int BM, int BK, bool kFp8>
absl::Status Launch(const GroupedFp8GemmParams& p, cudaStream_t stream) {
  const int bm_index = BM == 16 ? 0 : BM == 32 ? 1 : BM == 64 ? 2 : 3;
  const int kernel_slot = (bm_index * 2 + (BK == 128)) * 2 + kFp8;
  return LaunchTiles(GroupedGemmKernel<BM, BK, kFp8>, kernel_slot, Tile<BM, BK, kFp8>::kSmemBytes, BM, p, stream);
}

template <int BM>
absl::Status LaunchQ(const GroupedFp8GemmParams& p, cudaStream_t stream) {
  const int kernel_slot = kKernels + (BM == 16 ? 0 : BM == 32 ? 1 : BM == 64 ? 2 : 3);
  return LaunchTiles(GroupedQGemmKernel<BM>, kernel_slot, QTile<BM>::kSmemBytes, BM, p, stream);
}

bool Aligned(const void* ptr, uintptr_t bytes) {
  return reinterpret_cast<uintptr_t>(ptr) % bytes == 0;
}

}  // namespace

int GroupedFp8GemmTileRows(int64_t max_rows, int64_t experts) {
  // Tiles no taller than the average expert's rows: a decode batch (a few rows per expert) is
  // bound by the weight bytes, and a taller tile would only add zero rows to every MMA.
  const int64_t avg = max_rows / std::max<int64_t>(experts, 1);
  if (avg >= 96) return 128;
  if (avg >= 48) return 64;
  if (avg >= 24) return 32;
  return 16;
}

int GroupedFp8GemmTileK(int tile_rows) { return tile_rows <= 32 ? 128 : 64; }

absl::Status GroupedFp8Gemm(const GroupedFp8GemmParams& p, cudaStream_t stream) {
  const bool fp8 = p.w != nullptr;
  if (p.x_q) {
    if (!p.x_scales || !p.offsets || !p.y || !p.w || !p.scales || p.w_bf16) {
      return absl::InvalidArgumentError(
          "grouped gemm: null pointer (FP8 x FP8: give x_q, x_scales, offsets, y, w, scales)");
    }
    if (p.experts <= 0 || p.experts > kMaxExperts || p.n <= 0 || p.k <= 0 || p.max_rows < 0 ||
        p.max_rows > INT_MAX || p.w_stride < p.k || p.x_stride < p.k ||
        p.scale_stride < (p.k + 127) / 128 || p.x_scale_stride < (p.k + 127) / 128 ||
        p.k % 16 != 0 || p.n % 2 != 0 || p.w_stride % 16 != 0 || p.x_stride % 16 != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "grouped gemm (fp8 x fp8): bad shape experts=", p.experts, " n=", p.n, " k=", p.k,
          " w_stride=", p.w_stride, " x_stride=", p.x_stride, " scale_stride=", p.scale_stride,
          " x_scale_stride=", p.x_scale_stride, " max_rows=", p.max_rows,
          " (k, w_stride and x_stride multiples of 16, n even)"));
    }
    if (!Aligned(p.x_q, 16) || !Aligned(p.w, 16) || !Aligned(p.y, 4) || !Aligned(p.x_scales, 4)) {
      return absl::InvalidArgumentError(
          "grouped gemm: x_q and the weights must be 16-byte aligned, y 4-byte aligned");
    }
    if (p.max_rows == 0) return absl::OkStatus();
    // The wgmma kernel (grouped_gemm_wgmma.cu) where it applies, at any tile height.
    if (!p.mma_sync && grouped_gemm::WgmmaApplies(p)) {
      const int wbm = p.tile_rows ? p.tile_rows : GroupedFp8GemmTileRows(p.max_rows, p.experts);
      return grouped_gemm::LaunchWgmma(p, wbm, stream);
    }
    // mma.sync: at most 64 rows by default, 128 needs more registers than a thread has (spills).
    const int bm =
        p.tile_rows ? p.tile_rows : std::min(64, GroupedFp8GemmTileRows(p.max_rows, p.experts));
    switch (bm) {
      case 16: return LaunchQ<16>(p, stream);
      case 32: return LaunchQ<32>(p, stream);
      case 64: return LaunchQ<64>(p, stream);
      case 128: return LaunchQ<128>(p, stream);
      default:
        return absl::InvalidArgumentError(
            absl::StrCat("grouped gemm: tile rows ", bm, " (16, 32, 64 or 128)"));
    }
  }
  if (!p.x || !p.offsets || !p.y || (fp8 ? (!p.scales || p.w_bf16) : !p.w_bf16)) {
    return absl::InvalidArgumentError(
        "grouped gemm: null pointer (give x, offsets, y, and w + scales or w_bf16)");
  }
  if (p.experts <= 0 || p.experts > kMaxExperts || p.n <= 0 || p.k <= 0 || p.max_rows < 0 ||
      p.w_stride < p.k || (fp8 && p.scale_stride < (p.k + 127) / 128) || p.max_rows > INT_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(
        "grouped gemm: bad shape experts=", p.experts, " n=", p.n, " k=", p.k,
        " w_stride=", p.w_stride, " scale_stride=", p.scale_stride, " max_rows=", p.max_rows));
  }
  if (p.k % 8 != 0 || p.n % 2 != 0 || p.w_stride % (fp8 ? 16 : 8) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("grouped gemm: needs k % 8 == 0, even n and w_stride % ", fp8 ? 16 : 8,
                     " == 0; got n=", p.n, " k=", p.k, " w_stride=", p.w_stride));
  }
  if (!Aligned(p.x, 16) || !Aligned(fp8 ? static_cast<const void*>(p.w) : p.w_bf16, 16) ||
      !Aligned(p.y, 4)) {
    return absl::InvalidArgumentError(
        "grouped gemm: x and the weights must be 16-byte aligned, y 4-byte aligned");
  }
  const int bm = p.tile_rows ? p.tile_rows : GroupedFp8GemmTileRows(p.max_rows, p.experts);
  const int bk = p.tile_k ? p.tile_k : GroupedFp8GemmTileK(bm);
  if (p.max_rows == 0) return absl::OkStatus();
  // One instance per (tile rows, tile k, weight type).
  using LaunchFn = absl::Status (*)(const GroupedFp8GemmParams&, cudaStream_t);
  static constexpr LaunchFn kLaunch[4][2][2] = {
      {{Launch<16, 64, false>, Launch<16, 64, true>},
       {Launch<16, 128, false>, Launch<16, 128, true>}},
      {{Launch<32, 64, false>, Launch<32, 64, true>},
       {Launch<32, 128, false>, Launch<32, 128, true>}},
      {{Launch<64, 64, false>, Launch<64, 64, true>},
       {Launch<64, 128, false>, Launch<64, 128, true>}},
      {{Launch<128, 64, false>, Launch<128, 64, true>},
       {Launch<128, 128, false>, Launch<128, 128, true>}}};
  const int mi = bm == 16 ? 0 : bm == 32 ? 1 : bm == 64 ? 2 : bm == 128 ? 3 : -1;
  if (mi < 0 || (bk != 64 && bk != 128)) {
    return absl::InvalidArgumentError(absl::StrCat("grouped gemm: tile ", bm, " x ", bk,
                                                   " (rows 16, 32, 64 or 128; k 64 or 128)"));
  }
  return kLaunch[mi][bk == 128][fp8](p, stream);
}

absl::Status QuantizeRowsFp8Group128(const QuantizeRowsParams& p, cudaStream_t stream) {
  if (!p.x || !p.q || !p.scales || p.rows < 0 || p.k <= 0 || p.k % 4 != 0 || p.q_stride < p.k ||
      p.q_stride % 16 != 0 || p.scale_stride < (p.k + 127) / 128 || !Aligned(p.x, 8) ||
      !Aligned(p.q, 4)) {
    return absl::InvalidArgumentError(absl::StrCat("quantize rows: bad arguments rows=", p.rows,
                                                   " k=", p.k, " q_stride=", p.q_stride,
                                                   " scale_stride=", p.scale_stride));
  }
  if (p.rows == 0) return absl::OkStatus();
  const int64_t groups = (p.q_stride + 127) / 128, warps = p.rows * groups;
  const int64_t blocks = (warps + 7) / 8;
  if (blocks > INT_MAX) return absl::InvalidArgumentError("quantize rows: too many rows");
  QuantizeRowsKernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(p, groups);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    return absl::InternalError(
        absl::StrCat("quantize rows: launch failed: ", cudaGetErrorString(err)));
  return absl::OkStatus();
}

}  // namespace r1::cuda

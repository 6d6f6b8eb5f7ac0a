// Grouped FP8 GEMV over the experts, the dense GEMV for a few rows, and the deterministic MoE
// combine.
//
// GroupedFp8Gemv / DenseGemv: y[r, :] = x[r, :] · dequant(W_e)^T for the rows r of each expert e
// (DenseGemv: one expert). Decode reads each touched weight once and does a few multiply-adds per
// byte, so the kernel is built around the weight stream:
//  - A persistent grid (SMs x resident blocks). Each block first lists the experts that have rows
//    (a scan of the device offsets into shared memory: no host knowledge of the routing, so the
//    launch stays graph-capturable, and an expert without rows costs only its place in the scan),
//    then takes an even share of the work items (active expert, tile of output columns).
//  - 8 warps per block. A warp owns kCols = 4 output columns and `ks` warps split k between them
//    (ks = 1 for R1's expert shapes; up to 8 for narrow dense layers, so that a 576-column
//    projection still spreads over every SM). A step is one 16-element chunk per lane of each of
//    the warp's columns: four 16-byte loads.
//  - The weight stream is a per-thread ring of kStages steps in shared memory filled by cp.async
//    (each thread reads back only what it copied, so the ring needs no barrier): while a step is
//    used the next kStages - 1 are in flight, across k-tiles, passes and work items. The chunk
//    past k is zero-filled by the copy itself.
//  - The expert's rows (up to kRows per pass; more rows take more passes) are staged k-tile by
//    k-tile in shared memory as float32, converted from bf16 or dequantised from FP8 codes with
//    their per-token scales, laid out so that each lane's 16-byte reads are bank-conflict free.
//    Each weight element, dequantised once (code x block scale in float32), meets every staged row.
//  - Sums are float32: per lane in k order, lanes combined by shuffles and the ks warps through
//    shared memory, in a fixed order: a row's result depends on (n, k, experts) and its own inputs
//    only, never on the other rows or their number.
// MoeCombine: one thread per (token, column) sums its k choices in order (then the shared expert's
// output, when given).
// Tests: tests/cuda/gemv_test.cc (both GEMVs against a double-precision CPU reference),
// tests/cuda/kernels_test.cc and kernels3_test.cc (GroupedGemv*). Bench: bench_gpu --only gemm|moe.
#include <algorithm>
#include <map>
#include <mutex>
#include <type_traits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/act_type.cuh"
#include "kernels/cuda/grouped_gemv.h"

namespace r1::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kCols = 4;    // output columns per warp
constexpr int kChunk = 16;  // k elements per lane and step (16 FP8 codes: one 16-byte copy)
constexpr int kWarpSpan = 32 * kChunk;       // k elements of one step of a warp
constexpr int64_t kMaxExperts = 4096;        // the active-expert list lives in shared memory
constexpr int64_t kMaxK = int64_t{1} << 30;  // k offsets are 32-bit
constexpr int kRowsMany = 8;                 // rows per pass of the many-row kernels

enum class XKind { kF32, kBf16, kFp8 };

// Row-staging quads in flight per thread (fewer where the accumulators of 8 rows and float4
// quads would not leave the registers).
template <XKind kX, int kRows>
constexpr int StageBatch() {
  return kRows == 1 || kX != XKind::kF32 ? 8 : 4;
}

// Ring depth: three steps in flight while one is used (two for bf16 weights, whose steps are
// twice the bytes); the one-row kernel keeps one step fewer so that three blocks fit an SM.
template <bool kFp8W, int kRows>
constexpr int Stages() {
  return !kFp8W ? 2 : kRows == 1 ? 3 : 4;
}
// Staged k per tile (the tile is a whole number of steps) and the bytes the staged rows may use.
template <int kRows>
constexpr int TileTarget() {
  return kRows == 1 ? 4096 : 1024;
}
template <int kRows>
constexpr int64_t RowBytes() {
  return kRows == 1 ? 16 << 10 : 40 << 10;
}

// What one launch computes (both entry points reduce to this).
struct GemvArgs {
  const void* x = nullptr;  // [rows, x_stride] float32, bf16 or e4m3 codes
  int64_t x_stride = 0;
  const float* x_scales = nullptr;  // kFp8: [ceil(k/128), x_scale_rows] token-minor
  int64_t x_scale_rows = 0;
  const int32_t* offsets = nullptr;  // [experts + 1]; null: one group of `rows` rows
  int64_t experts = 1, rows = 0;
  const void* w = nullptr;          // [experts, n, w_stride] e4m3 codes or bf16
  const float* w_scales = nullptr;  // [experts, ceil(n/128), scale_stride] (FP8 weights)
  void* y = nullptr;                // [rows, n]
  int64_t n = 0, k = 0, w_stride = 0, scale_stride = 0;
  int ks = 1;          // warps splitting k
  int tile_steps = 1;  // steps per staged k-tile (a power of two)
  int pass_rows = 1;   // rows staged per pass (<= the kernel's kRows)
  bool vec = true;     // weight rows 16-byte aligned: cp.async; else element loads
  bool x_vec = true;   // activation rows aligned for 4-element loads
};

__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem, int src_bytes) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void CpAsync4(void* smem, const void* gmem, int src_bytes) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(gmem),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void CpAsyncCommit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// Staging of four consecutive activations [kk, kk + 4) of a row: the raw bits of a whole,
// aligned quad (float4, four bf16, four e4m3 codes) loaded first, converted after; quads at the
// end of k or on unaligned rows go element by element (LoadXQuadSlow).
template <XKind kX>
using XRaw = std::conditional_t<kX == XKind::kF32, float4,
                                std::conditional_t<kX == XKind::kBf16, uint2, uint32_t>>;

template <XKind kX>
__device__ __forceinline__ XRaw<kX> LoadXRaw(const GemvArgs& a, int64_t row, int kk) {
  if constexpr (kX == XKind::kF32) {
    return __ldg(
        reinterpret_cast<const float4*>(static_cast<const float*>(a.x) + row * a.x_stride + kk));
  } else if constexpr (kX == XKind::kBf16) {
    return __ldg(reinterpret_cast<const uint2*>(static_cast<const __nv_bfloat16*>(a.x) +
                                                row * a.x_stride + kk));
  } else {
    return __ldg(reinterpret_cast<const unsigned int*>(static_cast<const unsigned char*>(a.x) +
                                                       row * a.x_stride + kk));
  }
}

__device__ __forceinline__ float4 Fp8QuadToFloat(uint32_t codes, float scale) {
  const float2 lo = __half22float2(__half2(
      __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(codes & 0xffffu), __NV_E4M3)));
  const float2 hi = __half22float2(__half2(
      __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(codes >> 16), __NV_E4M3)));
  return make_float4(lo.x * scale, lo.y * scale, hi.x * scale, hi.y * scale);
}

// kFp8: `scale` is the quad's per-token group scale (one 128-group per quad).
template <XKind kX>
__device__ __forceinline__ float4 ConvertX(const XRaw<kX>& raw, float scale) {
  if constexpr (kX == XKind::kF32) {
    return raw;
  } else if constexpr (kX == XKind::kBf16) {
    return make_float4(__uint_as_float(raw.x << 16), __uint_as_float(raw.x & 0xffff0000u),
                       __uint_as_float(raw.y << 16), __uint_as_float(raw.y & 0xffff0000u));
  } else {
    return Fp8QuadToFloat(raw, scale);
  }
}

template <XKind kX>
__device__ __forceinline__ float4 LoadXQuadSlow(const GemvArgs& a, int64_t row, int kk, int k,
                                                float scale) {
  float v[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    v[i] = 0.0f;
    if (kk + i >= k) continue;
    if constexpr (kX == XKind::kF32) {
      v[i] = __ldg(static_cast<const float*>(a.x) + row * a.x_stride + kk + i);
    } else if constexpr (kX == XKind::kBf16) {
      v[i] = __bfloat162float(
          __ldg(static_cast<const __nv_bfloat16*>(a.x) + row * a.x_stride + kk + i));
    } else {
      __nv_fp8_e4m3 code;
      code.__x = __ldg(static_cast<const unsigned char*>(a.x) + row * a.x_stride + kk + i);
      v[i] = static_cast<float>(code) * scale;
    }
  }
  return make_float4(v[0], v[1], v[2], v[3]);
}

// Weight elements [4q, 4q + 4) of a step's chunk (FP8: one uint4 of codes; bf16: two uint4) as
// float32: FP8 codes as they are (the block scale goes on the activations), or with kRoundW the
// dequantised weight code x scale rounded to bf16.
template <bool kFp8W, bool kRoundW>
__device__ __forceinline__ void WeightQuad(const uint4 (&raw)[kFp8W ? 1 : 2], int q, float scale,
                                           float (&w)[4]) {
  if constexpr (kFp8W) {
    const uint32_t word = q == 0 ? raw[0].x : q == 1 ? raw[0].y : q == 2 ? raw[0].z : raw[0].w;
    const float2 lo = __half22float2(__half2(
        __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(word & 0xffffu), __NV_E4M3)));
    const float2 hi = __half22float2(__half2(
        __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(word >> 16), __NV_E4M3)));
    w[0] = lo.x, w[1] = lo.y, w[2] = hi.x, w[3] = hi.y;
    if constexpr (kRoundW) {
#pragma unroll
      for (int i = 0; i < 4; ++i) w[i] = __bfloat162float(__float2bfloat16(w[i] * scale));
    }
  } else {
    const uint4& h = raw[q / 2];
    const uint32_t w0 = q % 2 == 0 ? h.x : h.z, w1 = q % 2 == 0 ? h.y : h.w;
    w[0] = __uint_as_float(w0 << 16), w[1] = __uint_as_float(w0 & 0xffff0000u);
    w[2] = __uint_as_float(w1 << 16), w[3] = __uint_as_float(w1 & 0xffff0000u);
  }
}

// Unaligned weight rows: 16 bytes from `p` byte by byte, of which `bytes` (0..16) are valid.
__device__ __forceinline__ uint4 LoadBytes(const char* p, int bytes) {
  const auto* b = reinterpret_cast<const unsigned char*>(p);
  auto word = [&](int i0) {
    uint32_t w = 0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if (i0 + i < bytes) w |= static_cast<uint32_t>(__ldg(b + i0 + i)) << (8 * i);
    }
    return w;
  };
  return make_uint4(word(0), word(4), word(8), word(12));
}

// Shared memory, in order: the weight ring [kStages][kCols * kLoads][kThreads] uint4, the scale
// ring [kStages][kThreads] float (FP8 weights), the staged rows [pass_rows][kt] float32, the ks
// partial sums [kWarps][kRows * kCols], the active experts [groups] int32.
// Staged layout: within each kWarpSpan-element span, element (lane * 16 + q * 4 + i) sits at
// (q * 128 + lane * 4 + i), so that a warp's float4 reads of quarter q are consecutive.
template <bool kFp8W, int kRows>
constexpr int64_t RingBytes() {
  return int64_t{Stages<kFp8W, kRows>()} * kThreads * (kCols * (kFp8W ? 1 : 2) * 16 + 4);
}

// kRoundW (FP8 weights): each dequantised weight is rounded to bf16 before use, as
// DequantizeFp8ToBf16 does for the bf16 GEMM. kVec: weight rows 16-byte aligned (cp.async);
// otherwise they are read byte by byte into the ring.
template <XKind kX, bool kFp8W, bool kRoundW, bool kVec, typename OutT, int kRows>
__global__ void __launch_bounds__(kThreads, kRows == 1 ? 3 : 2) GemvKernel(const GemvArgs a) {
  constexpr int kStages = Stages<kFp8W, kRows>();
  constexpr int kLoads = kFp8W ? 1 : 2;  // 16-byte copies per column and step
  constexpr int kElem = kFp8W ? 1 : 2;   // bytes per weight element
  extern __shared__ float4 smem4[];
  __shared__ int warp_count[kWarps];
  __shared__ int active_count;
  const int span = kWarpSpan * a.ks;   // k elements per step
  const int kt = span * a.tile_steps;  // k elements per staged tile, a power of two
  const int kt_shift = __ffs(kt) - 1;
  uint4* ring = reinterpret_cast<uint4*>(smem4);
  float* scale_ring = reinterpret_cast<float*>(ring + kStages * kCols * kLoads * kThreads);
  float* xs = scale_ring + kStages * kThreads;
  float* red = xs + a.pass_rows * kt;
  int* active = reinterpret_cast<int*>(red + kWarps * kRows * kCols);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int ksi = warp % a.ks, group = warp / a.ks;
  const int block_cols = kCols * (kWarps / a.ks);
  const int64_t col_tiles = (a.n + block_cols - 1) / block_cols;

  // The experts with rows, in expert order.
  if (a.offsets == nullptr) {
    if (tid == 0) active[0] = 0, active_count = 1;
  } else {
    int listed = 0;
    for (int64_t e0 = 0; e0 < a.experts; e0 += kThreads) {
      const int64_t e = e0 + tid;
      const bool has = e < a.experts && __ldg(a.offsets + e + 1) > __ldg(a.offsets + e);
      const unsigned ballot = __ballot_sync(0xffffffffu, has);
      if (lane == 0) warp_count[warp] = __popc(ballot);
      __syncthreads();
      int before = listed;
      for (int w = 0; w < kWarps; ++w) {
        if (w < warp) before += warp_count[w];
        listed += warp_count[w];
      }
      if (has) active[before + __popc(ballot & ((1u << lane) - 1u))] = static_cast<int>(e);
      __syncthreads();
    }
    if (tid == 0) active_count = listed;
  }
  __syncthreads();

  const int64_t items = active_count * col_tiles;
  const int64_t first = items * blockIdx.x / gridDim.x, last = items * (blockIdx.x + 1) / gridDim.x;
  const int k = static_cast<int>(a.k);
  const int steps_per_pass = (k + span - 1) / span;
  const int64_t scale_rows = (a.n + 127) / 128, w_row_bytes = a.w_stride * kElem;

  // A work item: its expert, its block's first column, its rows and passes.
  struct Item {
    int e = 0, tile_col0 = 0, row_begin = 0, row_end = 0, passes = 0;
  };
  auto item_at = [&](int64_t item) {
    Item it;
    it.e = active[item / col_tiles];
    it.tile_col0 = static_cast<int>(item % col_tiles) * block_cols;
    it.row_end = static_cast<int>(a.rows);
    if (a.offsets != nullptr)
      it.row_begin = __ldg(a.offsets + it.e), it.row_end = __ldg(a.offsets + it.e + 1);
    it.passes = (it.row_end - it.row_begin + a.pass_rows - 1) / a.pass_rows;
    return it;
  };

  // Producer: copies step after step of this thread's chunks into the ring, kStages - 1 ahead.
  // Its cursor: column 0's chunk of the step, the row bytes left from there (<= 0 past k), and
  // the chunk's block scale; advanced by one step's span, reset at each pass and item.
  const int kc0 = (ksi * 32 + lane) * kChunk;  // this lane's chunk within a step
  int64_t p_item = first;
  int p_pass = 0, p_step = 0, p_live = 0, p_left = 0;
  const char* p_src = nullptr;
  const float* p_scale = nullptr;
  Item p_it;
  auto p_begin_pass = [&]() {
    const int64_t col0 = p_it.tile_col0 + group * kCols;
    p_src = static_cast<const char*>(a.w) +
            (static_cast<int64_t>(p_it.e) * a.n + col0) * w_row_bytes +
            static_cast<int64_t>(kc0) * kElem;
    p_left = (k - kc0) * kElem;
    if constexpr (kFp8W)
      p_scale = a.w_scales + (p_it.e * scale_rows + col0 / 128) * a.scale_stride + kc0 / 128;
    p_step = 0;
  };
  auto p_begin_item = [&]() {
    p_it = item_at(p_item);
    p_live =
        static_cast<int>(min(static_cast<int64_t>(kCols), a.n - (p_it.tile_col0 + group * kCols)));
    p_begin_pass();
  };
  if (first < last) p_begin_item();
  auto issue = [&](int slot) {
    if (p_item < last) {
      uint4* dst = ring + slot * kCols * kLoads * kThreads + tid;
      if (kVec && p_left >= 16 * kLoads && p_live == kCols) {  // whole chunks: the common case
#pragma unroll
        for (int c = 0; c < kCols; ++c)
#pragma unroll
          for (int h = 0; h < kLoads; ++h)
            CpAsync16(dst + (c * kLoads + h) * kThreads, p_src + c * w_row_bytes + 16 * h, 16);
      } else {
#pragma unroll
        for (int c = 0; c < kCols; ++c)
#pragma unroll
          for (int h = 0; h < kLoads; ++h) {
            const int bytes = c < p_live ? max(0, min(16, p_left - 16 * h)) : 0;
            const char* src =
                bytes > 0 ? p_src + c * w_row_bytes + 16 * h : static_cast<const char*>(a.w);
            if constexpr (kVec) {
              CpAsync16(dst + (c * kLoads + h) * kThreads, src, bytes);
            } else {
              dst[(c * kLoads + h) * kThreads] = LoadBytes(src, bytes);
            }
          }
      }
      if constexpr (kFp8W) {
        const bool live = p_live > 0 && p_left > 0;
        CpAsync4(scale_ring + slot * kThreads + tid, live ? p_scale : a.w_scales, live ? 4 : 0);
        p_scale += span / 128;
      }
      p_src += static_cast<int64_t>(span) * kElem;
      p_left -= span * kElem;
      if (++p_step == steps_per_pass) {
        if (++p_pass < p_it.passes) {
          p_begin_pass();
        } else {
          p_pass = 0;
          if (++p_item < last) p_begin_item();
        }
      }
    }
    CpAsyncCommit();  // empty past the end: the group count stays in step
  };
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) issue(s);

  // Consumer: stages rows at each k-tile, multiplies, and writes each pass's outputs.
  auto* y = static_cast<OutT*>(a.y);
  int64_t c_item = first;
  int c_pass = 0, c_step = 0, slot = 0;
  Item c_it = first < last ? item_at(first) : Item{};
  float acc[kRows][kCols];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int c = 0; c < kCols; ++c) acc[r][c] = 0.0f;

  while (c_item < last) {
    issue(slot == 0 ? kStages - 1 : slot - 1);
    CpAsyncWait<kStages - 1>();  // this thread's copies of the current step have landed
    const int row0 = c_it.row_begin + c_pass * a.pass_rows;
    const int nr = min(a.pass_rows, c_it.row_end - row0);
    const int st = c_step & (a.tile_steps - 1);
    if (st == 0) {
      __syncthreads();  // the previous tile's rows are no longer read
      const int k0 = c_step * span, quads = nr * kt / 4;
      constexpr int kStageBatch = StageBatch<kX, kRows>();
      for (int base = 0; base < quads; base += kThreads * kStageBatch) {
        // All of the batch's loads first, then the conversions and stores.
        XRaw<kX> raw[kStageBatch];
        float qscale[kStageBatch];
        int where[kStageBatch];  // -1: outside the staged rows; -2 - kk: element by element; else
                                 // kk
#pragma unroll
        for (int j = 0; j < kStageBatch; ++j) {
          const int i4 = base + j * kThreads + tid;
          const int r = (i4 * 4) >> kt_shift, s = (i4 * 4) & (kt - 1), pos = s & (kWarpSpan - 1);
          const int kk = k0 + (s - pos) + ((pos >> 2) & 31) * kChunk + (pos >> 7) * 4;
          const bool whole = a.x_vec && kk + 3 < k;
          where[j] = i4 >= quads ? -1 : whole ? kk : -2 - kk;
          raw[j] = XRaw<kX>{};
          qscale[j] = 1.0f;
          if (i4 < quads && whole) raw[j] = LoadXRaw<kX>(a, row0 + r, kk);
          if constexpr (kX == XKind::kFp8) {
            if (i4 < quads && kk < k)
              qscale[j] = __ldg(a.x_scales + (kk / 128) * a.x_scale_rows + row0 + r);
          }
        }
#pragma unroll
        for (int j = 0; j < kStageBatch; ++j) {
          if (where[j] == -1) continue;
          const int i4 = base + j * kThreads + tid;
          float4 v;
          if (where[j] >= 0) {
            v = ConvertX<kX>(raw[j], qscale[j]);
          } else {
            v = LoadXQuadSlow<kX>(a, row0 + ((i4 * 4) >> kt_shift), -2 - where[j], k, qscale[j]);
          }
          reinterpret_cast<float4*>(xs)[i4] = v;
        }
      }
      __syncthreads();
    }

    uint4 raw[kCols][kLoads];
#pragma unroll
    for (int c = 0; c < kCols; ++c)
#pragma unroll
      for (int h = 0; h < kLoads; ++h)
        raw[c][h] = ring[((slot * kCols + c) * kLoads + h) * kThreads + tid];
    const float scale = kFp8W ? scale_ring[slot * kThreads + tid] : 1.0f;
    const float* xb = xs + (st * a.ks + ksi) * kWarpSpan + lane * 4;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      float wq[kCols][4];
#pragma unroll
      for (int c = 0; c < kCols; ++c) WeightQuad<kFp8W, kRoundW>(raw[c], q, scale, wq[c]);
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        if (r >= nr) break;
        float4 v = *reinterpret_cast<const float4*>(xb + r * kt + q * 128);
        if constexpr (kFp8W && !kRoundW) v.x *= scale, v.y *= scale, v.z *= scale, v.w *= scale;
#pragma unroll
        for (int c = 0; c < kCols; ++c) {
          acc[r][c] = fmaf(v.x, wq[c][0], acc[r][c]);
          acc[r][c] = fmaf(v.y, wq[c][1], acc[r][c]);
          acc[r][c] = fmaf(v.z, wq[c][2], acc[r][c]);
          acc[r][c] = fmaf(v.w, wq[c][3], acc[r][c]);
        }
      }
    }
    slot = slot + 1 == kStages ? 0 : slot + 1;

    if (++c_step < steps_per_pass) continue;
    // The pass is done: lanes, then the ks warps of a column group, in a fixed order.
    const int64_t col0 = c_it.tile_col0 + group * kCols;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (r >= nr) break;
#pragma unroll
      for (int c = 0; c < kCols; ++c) {
        float v = acc[r][c];
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
        acc[r][c] = v;
      }
    }
    if (a.ks == 1) {
#pragma unroll
      for (int r = 0; r < kRows; ++r)
#pragma unroll
        for (int c = 0; c < kCols; ++c) {
          if (r < nr && lane == r * kCols + c && col0 + c < a.n) {
            y[static_cast<int64_t>(row0 + r) * a.n + col0 + c] = FromFloat<OutT>(acc[r][c]);
          }
        }
    } else {
#pragma unroll
      for (int r = 0; r < kRows; ++r)
#pragma unroll
        for (int c = 0; c < kCols; ++c) {
          if (r < nr && lane == r * kCols + c)
            red[warp * kRows * kCols + r * kCols + c] = acc[r][c];
        }
      __syncthreads();
      // `red` is written again only after the next pass's first staging barrier.
      const int per_group = nr * kCols;
      for (int i = tid; i < (kWarps / a.ks) * per_group; i += kThreads) {
        const int g = i / per_group, r = (i % per_group) / kCols, c = i % kCols;
        float v = 0.0f;
        for (int s = 0; s < a.ks; ++s) v += red[(g * a.ks + s) * kRows * kCols + r * kCols + c];
        const int64_t col = c_it.tile_col0 + g * kCols + c;
        if (col < a.n) y[static_cast<int64_t>(row0 + r) * a.n + col] = FromFloat<OutT>(v);
      }
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r)
#pragma unroll
      for (int c = 0; c < kCols; ++c) acc[r][c] = 0.0f;
    c_step = 0;
    if (++c_pass == c_it.passes) {
      c_pass = 0;
      if (++c_item < last) c_it = item_at(c_item);
    }
  }
  CpAsyncWait<0>();
}

// Per device: the SM count; per (kernel, device): resident blocks per SM. Queried once each
// (attribute and occupancy queries cost host time an eager decode step would pay per layer).
struct Facts {
  std::mutex mu;
  std::map<int, int> sms;
  std::map<std::pair<const void*, int>, int> resident;
};
Facts& GetFacts() {
  static Facts* f = new Facts();
  return *f;
}

template <bool kFp8W, int kRows>
constexpr int64_t SmemBytes(int64_t staged_floats, int64_t groups) {
  return RingBytes<kFp8W, kRows>() + staged_floats * 4 + kWarps * kRows * kCols * 4 + groups * 4;
}

template <XKind kX, bool kFp8W, bool kRoundW, typename OutT, int kRows>
absl::Status LaunchGemv(GemvArgs a, int64_t rows_hint, cudaStream_t stream, const char* what) {
  auto* kernel = a.vec ? GemvKernel<kX, kFp8W, kRoundW, true, OutT, kRows>
                       : GemvKernel<kX, kFp8W, kRoundW, false, OutT, kRows>;
  int dev = 0, sms = 0, resident = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err != cudaSuccess)
    return absl::InternalError(absl::StrCat(what, ": no device: ", cudaGetErrorString(err)));
  {
    Facts& f = GetFacts();
    std::lock_guard<std::mutex> lock(f.mu);
    auto s = f.sms.find(dev);
    if (s == f.sms.end()) {
      int count = 0;
      if (cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
          count <= 0)
        count = 132;
      s = f.sms.emplace(dev, count).first;
    }
    sms = s->second;
    const auto key = std::make_pair(reinterpret_cast<const void*>(kernel), dev);
    auto r = f.resident.find(key);
    if (r == f.resident.end()) {
      const int64_t most = SmemBytes<kFp8W, kRows>(RowBytes<kRows>() / 4, kMaxExperts);
      err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 static_cast<int>(most));
      if (err != cudaSuccess) {
        return absl::InternalError(
            absl::StrCat(what, ": shared memory attribute: ", cudaGetErrorString(err)));
      }
      // Occupancy at the shared memory of a full pass over 256 experts (R1's routed experts).
      int blocks = 0;
      err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(
          &blocks, kernel, kThreads,
          static_cast<size_t>(SmemBytes<kFp8W, kRows>(RowBytes<kRows>() / 4, 256)));
      if (err != cudaSuccess || blocks <= 0) blocks = 1;
      r = f.resident.emplace(key, blocks).first;
    }
    resident = r->second;
  }
  // Column split: fewer columns per block mean more blocks (weight streams) and more, smaller
  // items; the model takes the time as the larger of a block's share of columns (counting a last
  // round of items only some blocks get) and all columns over about two streams per SM. It assumes
  // two resident blocks per SM whatever this kernel's occupancy, so that the split (and with it
  // the order of the sums) is the same for every row count. The grouped form counts every expert
  // (the routing is not known on the host). Ties go to fewer warps per column.
  const int64_t groups = a.offsets ? a.experts : 1;
  const int64_t model_blocks = 2 * static_cast<int64_t>(sms);
  double best = 0;
  for (int ks = 1; ks <= kWarps; ks *= 2) {
    const int64_t block_cols = kCols * (kWarps / ks);
    const int64_t items = groups * ((a.n + block_cols - 1) / block_cols);
    const int64_t blocks = std::min(items, model_blocks);
    const double per_block = static_cast<double>((items + blocks - 1) / blocks * block_cols);
    const double cost = std::max(per_block, static_cast<double>(groups * a.n) / model_blocks);
    if (ks == 1 || cost < best * 0.97) best = cost, a.ks = ks;
  }
  const int64_t span = kWarpSpan * a.ks;
  a.tile_steps = static_cast<int>(std::max<int64_t>(1, TileTarget<kRows>() / span));
  const int64_t kt = span * a.tile_steps;
  a.pass_rows = static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>({kRows, rows_hint, RowBytes<kRows>() / (kt * 4)})));
  const int64_t smem = SmemBytes<kFp8W, kRows>(a.pass_rows * kt, groups);
  const int64_t block_cols = kCols * (kWarps / a.ks);
  const int64_t items = groups * ((a.n + block_cols - 1) / block_cols);
  const int64_t grid = std::min(items, static_cast<int64_t>(sms) * resident);
  kernel<<<static_cast<unsigned>(grid), kThreads, static_cast<size_t>(smem), stream>>>(a);
  err = cudaGetLastError();
  if (err != cudaSuccess)
    return absl::InternalError(absl::StrCat(what, ": launch failed: ", cudaGetErrorString(err)));
  return absl::OkStatus();
}

bool Aligned(const void* p, int64_t stride_bytes, int64_t align) {
  return reinterpret_cast<uintptr_t>(p) % align == 0 && stride_bytes % align == 0;
}

template <typename T>
absl::Status GroupedGemv(const GroupedFp8GemvParamsT<T>& p, cudaStream_t stream) {
  const bool fp8 = p.w != nullptr;
  if (!p.x || !p.offsets || !p.y || (fp8 ? (!p.scales || p.w_bf16) : !p.w_bf16)) {
    return absl::InvalidArgumentError(
        "grouped gemv: null pointer (give x, offsets, y, and w + scales or w_bf16)");
  }
  if (p.experts <= 0 || p.experts > kMaxExperts || p.n <= 0 || p.k <= 0 || p.k > kMaxK ||
      p.w_stride < p.k || (fp8 && p.scale_stride < (p.k + 127) / 128)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "grouped gemv: bad shape experts=", p.experts, " (at most ", kMaxExperts, ") n=", p.n,
        " k=", p.k, " w_stride=", p.w_stride, " scale_stride=", p.scale_stride));
  }
  GemvArgs a;
  a.x = p.x;
  a.x_stride = p.k;
  a.x_vec =
      Aligned(p.x, p.k * static_cast<int64_t>(sizeof(T)), 4 * static_cast<int64_t>(sizeof(T)));
  a.offsets = p.offsets;
  a.experts = p.experts;
  a.w = fp8 ? static_cast<const void*>(p.w) : static_cast<const void*>(p.w_bf16);
  a.w_scales = p.scales;
  a.y = p.y;
  a.n = p.n;
  a.k = p.k;
  a.w_stride = p.w_stride;
  a.scale_stride = p.scale_stride;
  a.vec = Aligned(a.w, p.w_stride * (fp8 ? 1 : 2), 16);
  constexpr XKind kX = std::is_same_v<T, float> ? XKind::kF32 : XKind::kBf16;
  if (fp8) return LaunchGemv<kX, true, false, T, kRowsMany>(a, kRowsMany, stream, "grouped gemv");
  return LaunchGemv<kX, false, false, T, kRowsMany>(a, kRowsMany, stream, "grouped gemv");
}

template <typename T>
__global__ void MoeCombineKernel(MoeCombineParamsT<T> p) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.tokens * p.dim) return;
  const int64_t t = i / p.dim, c = i % p.dim;
  float acc = 0.0f;
  for (int64_t j = 0; j < p.top_k; ++j) {
    const int32_t s = p.slot[t * p.top_k + j];
    if (s >= 0)
      acc += p.weights[t * p.top_k + j] * ToFloat(p.y[static_cast<int64_t>(s) * p.dim + c]);
  }
  float o = p.out[i] + acc;
  if (p.shared != nullptr) o += ToFloat(p.shared[i]);
  p.out[i] = o;
}

template <typename T>
absl::Status LaunchMoeCombine(const MoeCombineParamsT<T>& p, cudaStream_t stream) {
  if (!p.y || !p.slot || !p.weights || !p.out)
    return absl::InvalidArgumentError("moe combine: null pointer");
  if (p.tokens < 0 || p.top_k <= 0 || p.dim <= 0)
    return absl::InvalidArgumentError("moe combine: bad shape");
  if (p.tokens == 0) return absl::OkStatus();
  MoeCombineKernel<T><<<static_cast<unsigned>((p.tokens * p.dim + 255) / 256), 256, 0, stream>>>(p);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    return absl::InternalError(
        absl::StrCat("moe combine: launch failed: ", cudaGetErrorString(err)));
  return absl::OkStatus();
}

}  // namespace

absl::Status GroupedFp8Gemv(const GroupedFp8GemvParamsT<__nv_bfloat16>& p, cudaStream_t stream) {
  return GroupedGemv(p, stream);
}
absl::Status GroupedFp8Gemv(const GroupedFp8GemvParamsT<float>& p, cudaStream_t stream) {
  return GroupedGemv(p, stream);
}

absl::Status DenseGemv(const DenseGemvParams& p, cudaStream_t stream) {
  const bool fp8_x = p.x_q != nullptr, fp8_w = p.w != nullptr;
  if ((!p.x == !fp8_x) || !p.y || (fp8_x && !p.x_scales) ||
      (fp8_w ? (!p.scales || p.w_bf16) : !p.w_bf16)) {
    return absl::InvalidArgumentError(
        "dense gemv: null pointer (give one of x and x_q + x_scales, y, and w + scales or w_bf16)");
  }
  if (fp8_x && !fp8_w)
    return absl::InvalidArgumentError("dense gemv: FP8 activations need an FP8 weight");
  if (fp8_x && p.w_round_bf16)
    return absl::InvalidArgumentError("dense gemv: w_round_bf16 is for bf16 activations");
  const int64_t x_stride = p.x_stride == 0 ? p.k : p.x_stride;
  if (p.m < 0 || p.n <= 0 || p.k <= 0 || p.k > kMaxK || x_stride < p.k || p.w_stride < p.k ||
      (fp8_w && p.scale_stride < (p.k + 127) / 128) || (fp8_x && p.x_scale_rows < p.m)) {
    return absl::InvalidArgumentError(
        absl::StrCat("dense gemv: bad shape m=", p.m, " n=", p.n, " k=", p.k,
                     " x_stride=", x_stride, " w_stride=", p.w_stride,
                     " scale_stride=", p.scale_stride, " x_scale_rows=", p.x_scale_rows));
  }
  if (p.m == 0) return absl::OkStatus();
  GemvArgs a;
  a.x = fp8_x ? static_cast<const void*>(p.x_q) : static_cast<const void*>(p.x);
  a.x_stride = x_stride;
  a.x_scales = p.x_scales;
  a.x_scale_rows = p.x_scale_rows;
  a.rows = p.m;
  a.w = fp8_w ? static_cast<const void*>(p.w) : static_cast<const void*>(p.w_bf16);
  a.w_scales = p.scales;
  a.y = p.y;
  a.n = p.n;
  a.k = p.k;
  a.w_stride = p.w_stride;
  a.scale_stride = p.scale_stride;
  a.vec = Aligned(a.w, p.w_stride * (fp8_w ? 1 : 2), 16);
  a.x_vec = fp8_x ? Aligned(p.x_q, x_stride, 4) : Aligned(p.x, x_stride * 2, 8);
  using Bf16 = __nv_bfloat16;
  const char* what = "dense gemv";
  const bool one = p.m == 1;
  if (fp8_x) {
    return one ? LaunchGemv<XKind::kFp8, true, false, Bf16, 1>(a, 1, stream, what)
               : LaunchGemv<XKind::kFp8, true, false, Bf16, kRowsMany>(a, p.m, stream, what);
  }
  if (fp8_w && p.w_round_bf16) {
    return one ? LaunchGemv<XKind::kBf16, true, true, Bf16, 1>(a, 1, stream, what)
               : LaunchGemv<XKind::kBf16, true, true, Bf16, kRowsMany>(a, p.m, stream, what);
  }
  if (fp8_w) {
    return one ? LaunchGemv<XKind::kBf16, true, false, Bf16, 1>(a, 1, stream, what)
               : LaunchGemv<XKind::kBf16, true, false, Bf16, kRowsMany>(a, p.m, stream, what);
  }
  return one ? LaunchGemv<XKind::kBf16, false, false, Bf16, 1>(a, 1, stream, what)
             : LaunchGemv<XKind::kBf16, false, false, Bf16, kRowsMany>(a, p.m, stream, what);
}

absl::Status MoeCombine(const MoeCombineParamsT<__nv_bfloat16>& p, cudaStream_t stream) {
  return LaunchMoeCombine(p, stream);
}
absl::Status MoeCombine(const MoeCombineParamsT<float>& p, cudaStream_t stream) {
  return LaunchMoeCombine(p, stream);
}

}  // namespace r1::cuda

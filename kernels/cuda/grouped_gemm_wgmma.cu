// Grouped FP8 × FP8 expert GEMM on Hopper's warpgroup MMA (wgmma, sm_90a): the x_q path of
// GroupedFp8Gemm (grouped_gemm.h) where its shapes allow, with the e4m3 codes multiplied at the
// tensor cores' FP8 rate (QGMMA in SASS; mma.sync e4m3 runs as f16 HMMA on Hopper).
//
// y[r, :] = Σ_kb x_scales[r, kb] · scales[nb, kb] · (x_q[r, kb block] · W_e[:, kb block]^T).
// A block computes one tile: 128 weight rows (n; one block row of the weight scales) × BM rows of
// one expert (BM = 16, 32, 64 or 128), found on the device from the offsets as in the mma.sync
// kernels (grouped_gemm_tiles.cuh). The expert's rows are the wgmma N dimension, the weights its
// M: each of the two math warpgroups takes 64 weight rows × all BM rows, so an expert with few
// rows costs a narrow MMA, not a 64-row one.
//
// Pipeline, per 128-wide k block (one scale block): a producer warp waits for a free stage, then
// brings the 128 × 128 weight tile and the BM × 128 x tile by bulk tensor copies (tensor maps
// made on the host: the weights as [experts · n, k] and x_q as [max_rows, k], 128-byte swizzle,
// zero fill past k, past max_rows and past the last expert) that complete the transaction count
// of the stage's "full" mbarrier, and the tile rows' x scales and the weight block's scale by
// cp.async, each lane's copies arriving on the same mbarrier when they land (so the producer
// runs ahead without waiting for any load). Rows of the tile past the expert's end are loaded as
// they are (the next expert's rows, or anything up to max_rows): a wgmma output column depends on
// its own x row only, so they are computed and never stored. Each math warpgroup waits for the
// stage, issues 4 wgmma m64nBMk32 into float32 partial sums, waits for them, frees the stage (one
// arrive per warp), and adds partial × x_scale[row] × w_scale to its float32 accumulators (the
// promotion of each k block's exact code sums, so the block scales never touch the codes).
// Epilogue: the accumulators as bf16 through shared memory, 16-byte coalesced stores of the
// tile's rows that belong to the expert and columns below n.
//
// Shared memory per stage: weights 16 KB, x BM × 128 bytes (both 1024-byte aligned, the
// swizzle's period), scales (BM + 4) floats. BM <= 32: two blocks per SM (5–6 stages); 64, 128:
// one block per SM, 6–8 stages, registers moved from the producer to the math warpgroups
// (setmaxnreg).
//
// Measured on an H100 (bench_gpu --only moelayer, 4096 tokens, ~128 rows per expert): gate
// 2048 × 7168 at 390 TFLOP/s with 128-row tiles (401 with 64) against 217 for the mma.sync
// kernel's best tile; down 7168 × 2048 at 354 against 209. Clusters of 2 CTAs sharing the x tile
// by multicast (tried) were slower: 277 / 241 TFLOP/s at 128 rows, and about 0.6× at 64 rows.
// Test: tests/cuda/grouped_gemm_test.cc (Fp8xFp8*). Bench: bench_gpu --only moelayer.
#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <climits>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/sm90_util.cuh"
#include "kernels/cuda/grouped_gemm_tiles.cuh"

namespace r1::cuda::grouped_gemm {
namespace {

constexpr int kMathThreads = 256;             // two warpgroups, 64 weight rows each
constexpr int kThreads = kMathThreads + 128;  // + the producer's warpgroup (one warp works)
constexpr int kBK = 128;                      // k per stage: one scale block, 128 codes
constexpr int kRowBytes = kBK;                // one 128-byte swizzle row per tile row
constexpr int kEpiPitch = kBN + 8;            // bf16 per staged output row (bank spread)

template <int BM>
struct WgTile {
  static constexpr int kMinBlocks = BM <= 32 ? 2 : 1;
  static constexpr int kWBytes = kBN * kRowBytes, kXBytes = BM * kRowBytes;
  static constexpr int kSFloats = BM + 4;  // x scales of the BM rows, then the weight's
  static constexpr int kStageBytes = kWBytes + kXBytes + kSFloats * 4;
  static constexpr int kBudget = (kMinBlocks == 2 ? 110 : 200) * 1024 - 1024;
  static constexpr int kStages = kBudget / kStageBytes < 8 ? kBudget / kStageBytes : 8;
  static constexpr int kXOff = kStages * kWBytes, kSOff = kXOff + kStages * kXBytes;
  static constexpr int kSmemBytes = kSOff + kStages * kSFloats * 4 + 1024;  // + alignment slack
  static constexpr int kAcc = BM / 2;  // accumulator floats per thread (wgmma m64nBM)
  static_assert(BM == 16 || BM == 32 || BM == 64 || BM == 128, "tile rows");
  static_assert(kStages >= 3, "stages");
  static_assert((kMaxExperts + 1) * 4 <= kSOff, "offsets scan does not fit");
  static_assert(BM * kEpiPitch * 2 <= kSOff, "epilogue staging does not fit");
};

// wgmma shared-memory descriptor of a K-major tile with the 128-byte swizzle: start address,
// leading byte offset (unused with this swizzle: 16), stride byte offset 1024 (8 rows of 128
// bytes), each >> 4. The k-th 32-byte slice of the rows starts 32 k bytes on (the hardware
// applies the swizzle to the final addresses, relative to the 1024-byte aligned tile).
__device__ __forceinline__ uint64_t Desc(uint32_t addr) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) | (static_cast<uint64_t>(16 >> 4) << 16) |
         (static_cast<uint64_t>(1024 >> 4) << 32) | (uint64_t{1} << 62);
}

__device__ __forceinline__ void MbarArrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// Raises the transaction count of the current phase (no arrival).
__device__ __forceinline__ void MbarExpectTx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
}
// Copies 4 bytes, or writes 4 zero bytes when !valid (src is not read then).
__device__ __forceinline__ void CpAsync4(uint32_t dst, const void* src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 4 : 0)
               : "memory");
}
// One arrival on bar (counted in its init count) once this thread's cp.async copies have landed.
__device__ __forceinline__ void CpAsyncArriveNoinc(uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void WgmmaWait0() {
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
}
__device__ __forceinline__ void MathBarrier() {
  asm volatile("bar.sync 1, %0;\n" ::"n"(kMathThreads) : "memory");
}

// d[64 x 16] (+)= A[64 x 32] · B[16 x 32]^T, e4m3 codes, both K-major in shared memory.
__device__ __forceinline__ void Wgmma(float (&d)[8], uint64_t a, uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n16k32.f32.e4m3.e4m3 "
      "{%0,%1,%2,%3,%4,%5,%6,%7}, "
      "%8, %9, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7])
      : "l"(a), "l"(b), "r"(accumulate));
}

// d[64 x 32] (+)= A[64 x 32] · B[32 x 32]^T, e4m3 codes, both K-major in shared memory.
__device__ __forceinline__ void Wgmma(float (&d)[16], uint64_t a, uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n32k32.f32.e4m3.e4m3 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, "
      "%16, %17, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15])
      : "l"(a), "l"(b), "r"(accumulate));
}

// d[64 x 64] (+)= A[64 x 32] · B[64 x 32]^T, e4m3 codes, both K-major in shared memory.
__device__ __forceinline__ void Wgmma(float (&d)[32], uint64_t a, uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k32.f32.e4m3.e4m3 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%"
      "25,%26,%27,%28,%29,%30,%31}, "
      "%32, %33, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(a), "l"(b), "r"(accumulate));
}

// d[64 x 128] (+)= A[64 x 32] · B[128 x 32]^T, e4m3 codes, both K-major in shared memory.
__device__ __forceinline__ void Wgmma(float (&d)[64], uint64_t a, uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k32.f32.e4m3.e4m3 "
      "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%"
      "25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%"
      "48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, "
      "%64, %65, p, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]),
        "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
        "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]),
        "+f"(d[63])
      : "l"(a), "l"(b), "r"(accumulate));
}

template <int BM>
__global__ void __launch_bounds__(kThreads, WgTile<BM>::kMinBlocks)
    GroupedQGemmWgmmaKernel(const __grid_constant__ CUtensorMap w_map,
                            const __grid_constant__ CUtensorMap x_map, GroupedFp8GemmParams p,
                            int n_tiles) {
  using T = WgTile<BM>;
  extern __shared__ unsigned char smem_raw[];
  __shared__ int s_tile[3];
  __shared__ __align__(8) uint64_t full_bar[T::kStages], empty_bar[T::kStages];
  unsigned char* smem = reinterpret_cast<unsigned char*>(
      (reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~static_cast<uintptr_t>(1023));
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int tile = static_cast<int>(blockIdx.x / n_tiles),
            nt = static_cast<int>(blockIdx.x % n_tiles);

  FindTile<BM, kThreads>(p, tile, reinterpret_cast<int*>(smem), s_tile);
  const int e = s_tile[0];
  if (e < 0) return;
  const int row0 = s_tile[1], rows = s_tile[2] - row0;
  const int ktiles = static_cast<int>((p.k + kBK - 1) / kBK);
  const uint32_t sbase = SmemAddr(smem);
  float* sscale = reinterpret_cast<float*>(smem + T::kSOff);

  if (tid == 0) {
    for (int s = 0; s < T::kStages; ++s) {
      MbarInit(SmemAddr(&full_bar[s]), 32);  // the producer lanes' cp.async arrivals
      MbarInit(SmemAddr(&empty_bar[s]), kMathThreads / 32);  // one per math warp
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  // The offsets staged by FindTile were read through the generic proxy; the copies overwrite them.
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
  __syncthreads();

  if (warp >= kMathThreads / 32) {
    // Producer warpgroup: one warp issues, the others leave.
    if constexpr (T::kMinBlocks == 1) asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
    if (warp != kMathThreads / 32) return;
    const float* xs = p.x_scales + static_cast<int64_t>(row0) * p.x_scale_stride;
    const float* ws =
        p.scales + (static_cast<int64_t>(e) * ((p.n + kBN - 1) / kBN) + nt) * p.scale_stride;
    const int wrow = static_cast<int>(static_cast<int64_t>(e) * p.n + nt * kBN);
    // The scales come by cp.async, each lane's completion arriving on the stage's mbarrier, so
    // the producer never waits for their latency (which would bound a tile of few rows).
    for (int kt = 0; kt < ktiles; ++kt) {
      const int s = kt % T::kStages, round = kt / T::kStages;
      MbarWait(SmemAddr(&empty_bar[s]), (round & 1) ^ 1);
      const uint32_t bar = SmemAddr(&full_bar[s]);
      const uint32_t ss = sbase + T::kSOff + s * T::kSFloats * 4;
      if (lane == 0) {
        MbarExpectTx(bar, T::kWBytes + T::kXBytes);
        TmaLoad2d(sbase + s * T::kWBytes, &w_map, kt * kBK, wrow, bar);
        TmaLoad2d(sbase + T::kXOff + s * T::kXBytes, &x_map, kt * kBK, row0, bar);
        CpAsync4(ss + BM * 4, ws + kt, true);
      }
#pragma unroll
      for (int i = 0; i < (BM + 31) / 32; ++i) {
        const int r = lane + 32 * i;  // rows past the expert's end get scale 0
        if (r < BM)
          CpAsync4(ss + r * 4, r < rows ? xs + static_cast<int64_t>(r) * p.x_scale_stride + kt : xs,
                   r < rows);
      }
      CpAsyncArriveNoinc(bar);
    }
    asm volatile("cp.async.wait_all;\n" ::: "memory");
    return;
  }

  // Math warpgroups: warpgroup wg owns weight rows [64 wg, 64 wg + 64) of the tile. Accumulator
  // layout (wgmma m64nBM): warp wq of the warpgroup holds weight rows 16 wq + g and 16 wq + g + 8,
  // in d[4 i + 0, 1] and d[4 i + 2, 3], of x rows (tile columns) 8 i + 2 q and 8 i + 2 q + 1.
  if constexpr (T::kMinBlocks == 1) asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
  const int wg = warp >> 2, wq = warp & 3, g = lane >> 2, q = lane & 3;
  float acc[T::kAcc], part[T::kAcc];
#pragma unroll
  for (int j = 0; j < T::kAcc; ++j) acc[j] = 0.0f, part[j] = 0.0f;
  for (int kt = 0; kt < ktiles; ++kt) {
    const int s = kt % T::kStages, round = kt / T::kStages;
    MbarWait(SmemAddr(&full_bar[s]), round & 1);
    const uint32_t a = sbase + s * T::kWBytes + wg * 64 * kRowBytes;
    const uint32_t b = sbase + T::kXOff + s * T::kXBytes;
    WgmmaFence();
#pragma unroll
    for (int kk = 0; kk < kBK / 32; ++kk) Wgmma(part, Desc(a + kk * 32), Desc(b + kk * 32), kk);
    WgmmaCommit();
    WgmmaWait0();
    const float* ss = sscale + s * T::kSFloats;
    const float wsc = ss[BM];
    float2 sc[BM / 8];
#pragma unroll
    for (int i = 0; i < BM / 8; ++i) {
      const float2 xv = *reinterpret_cast<const float2*>(ss + 8 * i + 2 * q);
      sc[i] = make_float2(xv.x * wsc, xv.y * wsc);
    }
    __syncwarp();
    if (lane == 0) MbarArrive(SmemAddr(&empty_bar[s]));
#pragma unroll
    for (int i = 0; i < BM / 8; ++i) {
      acc[4 * i + 0] = fmaf(part[4 * i + 0], sc[i].x, acc[4 * i + 0]);
      acc[4 * i + 1] = fmaf(part[4 * i + 1], sc[i].y, acc[4 * i + 1]);
      acc[4 * i + 2] = fmaf(part[4 * i + 2], sc[i].x, acc[4 * i + 2]);
      acc[4 * i + 3] = fmaf(part[4 * i + 3], sc[i].y, acc[4 * i + 3]);
    }
  }

  // Epilogue: out[x row][weight row] as bf16 in the weight stages' memory (free once both math
  // warpgroups are past their last wgmma), then each x row of the expert written with 16-byte
  // stores of the columns below n (n is a multiple of 8).
  MathBarrier();
  __nv_bfloat16* out = reinterpret_cast<__nv_bfloat16*>(smem);
  const int m0 = wg * 64 + wq * 16 + g;
#pragma unroll
  for (int i = 0; i < BM / 8; ++i) {
    const int c = 8 * i + 2 * q;
    out[c * kEpiPitch + m0] = __float2bfloat16_rn(acc[4 * i + 0]);
    out[(c + 1) * kEpiPitch + m0] = __float2bfloat16_rn(acc[4 * i + 1]);
    out[c * kEpiPitch + m0 + 8] = __float2bfloat16_rn(acc[4 * i + 2]);
    out[(c + 1) * kEpiPitch + m0 + 8] = __float2bfloat16_rn(acc[4 * i + 3]);
  }
  MathBarrier();
  const int64_t col0 = static_cast<int64_t>(nt) * kBN;
  const int chunks = static_cast<int>(std::min<int64_t>(kBN, p.n - col0) / 8);
  for (int idx = tid; idx < BM * (kBN / 8); idx += kMathThreads) {
    const int r = idx / (kBN / 8), ch = idx % (kBN / 8);
    if (r >= rows || ch >= chunks) continue;
    const uint4 v = *reinterpret_cast<const uint4*>(out + r * kEpiPitch + ch * 8);
    *reinterpret_cast<uint4*>(p.y + static_cast<int64_t>(row0 + r) * p.n + col0 + ch * 8) = v;
  }
}

// A [rows, k] matrix of e4m3 codes (row stride `stride` bytes) as a 2-d tensor map with boxes of
// 128 codes × box_rows rows, 128-byte swizzle; reads past k or past `rows` give zeros.
bool EncodeCodes(CUtensorMap* map, const void* base, int64_t k, int64_t rows, int64_t stride,
                 int box_rows) {
  const TensorMapEncoder encode = TensorMapEncoderFromDriver();
  if (encode == nullptr) return false;
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(k), static_cast<cuuint64_t>(rows)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(stride)};
  const cuuint32_t box[2] = {static_cast<cuuint32_t>(kBK), static_cast<cuuint32_t>(box_rows)};
  const cuuint32_t elem_strides[2] = {1, 1};
  return encode(map, CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, const_cast<void*>(base), dims, strides, box,
                elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

// cudaFuncSetAttribute costs host time (tens of µs); it is called once per device and kernel.
constexpr int kMaxDevices = 64;
std::mutex g_smem_mu;
bool g_smem_set[kMaxDevices][4] = {};

template <int BM>
absl::Status Launch(const GroupedFp8GemmParams& p, cudaStream_t stream) {
  using T = WgTile<BM>;
  alignas(64) CUtensorMap w_map{}, x_map{};
  if (!EncodeCodes(&w_map, p.w, p.k, p.experts * p.n, p.w_stride, kBN) ||
      !EncodeCodes(&x_map, p.x_q, p.k, p.max_rows, p.x_stride, BM)) {
    return absl::InternalError("grouped gemm (wgmma): tensor map encoding failed");
  }
  const int64_t n_tiles = (p.n + kBN - 1) / kBN;
  const int64_t blocks = MaxTiles(p, BM) * n_tiles;
  if (blocks > INT_MAX)
    return absl::InvalidArgumentError(absl::StrCat("grouped gemm (wgmma): ", blocks, " blocks"));
  auto* kernel = GroupedQGemmWgmmaKernel<BM>;
  {
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= kMaxDevices) dev = 0;
    const int slot = BM == 16 ? 0 : BM == 32 ? 1 : BM == 64 ? 2 : 3;
    std::lock_guard<std::mutex> lock(g_smem_mu);
    if (!g_smem_set[dev][slot]) {
      const cudaError_t err =
          cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, T::kSmemBytes);
      if (err != cudaSuccess) {
        return absl::InternalError(absl::StrCat("grouped gemm (wgmma): shared memory attribute: ",
                                                cudaGetErrorString(err)));
      }
      g_smem_set[dev][slot] = true;
    }
  }
  kernel<<<static_cast<unsigned>(blocks), kThreads, T::kSmemBytes, stream>>>(
      w_map, x_map, p, static_cast<int>(n_tiles));
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return absl::InternalError(
        absl::StrCat("grouped gemm (wgmma): launch failed: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

}  // namespace

bool WgmmaApplies(const GroupedFp8GemmParams& p) {
  // Bulk copies: 16-byte aligned bases and row strides (GroupedFp8Gemm checks those for x_q and
  // w), row coordinates in int32. The epilogue: 16-byte stores of 8 columns.
  return p.n % 8 == 0 && reinterpret_cast<uintptr_t>(p.y) % 16 == 0 && p.experts * p.n <= INT_MAX &&
         p.max_rows <= INT_MAX && p.k <= INT_MAX && TensorMapEncoderFromDriver() != nullptr;
}

absl::Status LaunchWgmma(const GroupedFp8GemmParams& p, int bm, cudaStream_t stream) {
  switch (bm) {
    case 16:
      return Launch<16>(p, stream);
    case 32:
      return Launch<32>(p, stream);
    case 64:
      return Launch<64>(p, stream);
    case 128:
      return Launch<128>(p, stream);
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("grouped gemm: tile rows ", bm, " (16, 32, 64 or 128)"));
  }
}

}  // namespace r1::cuda::grouped_gemm

// RowGemvFp8: y [m, n] = x [m, k] · dequant(W)^T for m = 1..4 FP8 rows (decode), built around
// the weight stream.
//
// At one to four rows a linear layer does a handful of multiply-adds per weight byte, so the
// kernel's only job is to keep enough 16-byte loads of the weight in flight on every SM:
//  - A block owns one tile of 16 weight rows (output columns) and its warps split k between them
//    in contiguous ranges of whole 128-wide scale groups (the host picks warps per block so that
//    the grid has about 16 warps per SM, whatever n: 576-column kv_a gets 14 warps per tile,
//    o_proj 5). No block waits for another, so the blocks drift apart in k instead of all reading
//    the same slice.
//  - Each lane streams 16-byte pieces of two weight rows (g and g + 8 of the tile) with
//    ld.global.nc.L1::no_allocate (the weight is read once; L1 keeps x), two scale groups of
//    loads issued before the first is used. The codes go into the tensor cores as loaded:
//    mma.sync m16n8k32 e4m3 x e4m3 with the tile's rows as M and the tokens as N (4 of 8 used).
//    The 16 bytes a lane holds for a row are 16 consecutive k; the mma's k order within a step
//    is a permutation of the true one, and the lane loads its x codes (B) at the same 16 k, so the
//    dot products are the true ones.
//  - x (codes) comes from global memory through L1 (k bytes per row: it stays in L1/L2).
//  - Per 128-wide group the mma sums the code products in float32 from zero; the group's sum is
//    then scaled by (block scale x token scale) and added to a float32 accumulator in k order:
//    the promotion cuBLASLt's block-scaled FP8 GEMM does. The warps' partial sums are added in
//    warp order through shared memory (no atomics, no second launch). Nothing depends on m: a row's
//    result is the same at m = 1 and m = 4.
//  - k % 16 != 0: the bytes of the last piece past k are masked to zero in both operands (the
//    padding of the stored rows may hold anything, NaN codes included).
// Tests: tests/cuda/gemv_test.cc (RowGemvFp8*). Bench: bench_gpu --only gemv.
#include <algorithm>
#include <atomic>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/dense_gemv.h"
#include "kernels/cuda/sm90_util.cuh"

namespace r1::cuda {
namespace {

constexpr int kTile = 16;        // weight rows per block: the mma's M
constexpr int kGroup = 128;      // k per scale group
constexpr int kMaxWarps = 16;    // warps splitting k in one block
constexpr int kWarpsPerSm = 16;  // the grid's target
constexpr int kUnroll = 2;       // scale groups loaded before the first is used
constexpr int kMaxSms = 64;      // devices whose SM count is cached

struct RowArgs {
  const uint8_t* x = nullptr;  // [m, x_stride] e4m3 codes
  int64_t x_stride = 0;
  const float* x_scales = nullptr;  // [groups, x_scale_rows] token-minor
  int64_t x_scale_rows = 0;
  const uint8_t* w = nullptr;       // [n, w_stride] e4m3 codes
  const float* w_scales = nullptr;  // [ceil(n/128), scale_stride]
  int64_t w_stride = 0, scale_stride = 0;
  __nv_bfloat16* y = nullptr;  // [m, n]
  int m = 0, n = 0, k = 0;
  int groups = 0;           // ceil(k / 128)
  int groups_per_warp = 0;  // each warp's share of the groups, a contiguous range
};


// Keeps the first `bytes` (0..16) bytes of v, zeroes the rest.
__device__ __forceinline__ uint4 KeepBytes(uint4 v, int bytes) {
  auto keep = [&](uint32_t word, int first) -> uint32_t {
    const int n = bytes - first;
    return n >= 4 ? word : n <= 0 ? 0u : word & ((1u << (8 * n)) - 1u);
  };
  return make_uint4(keep(v.x, 0), keep(v.y, 4), keep(v.z, 8), keep(v.w, 12));
}

__global__ void __launch_bounds__(kMaxWarps * 32) RowGemvFp8Kernel(const RowArgs a) {
  __shared__ float red[kMaxWarps][kTile][4];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  // mma fragment coordinates: lane (g, t) feeds rows g and g + 8 of the tile (A), token g (B),
  // and holds the sums of rows g, g + 8 for tokens 2t, 2t + 1 (C).
  const int g = lane >> 2, t = lane & 3;
  const int row0 = static_cast<int>(blockIdx.x) * kTile;
  const int ra = row0 + g, rb = ra + 8;
  const bool has_a = ra < a.n, has_b = rb < a.n, has_x = g < a.m;
  const uint8_t* wa = a.w + static_cast<int64_t>(has_a ? ra : row0) * a.w_stride + t * 16;
  const uint8_t* wb = a.w + static_cast<int64_t>(has_b ? rb : row0) * a.w_stride + t * 16;
  const uint8_t* xp = a.x + static_cast<int64_t>(has_x ? g : 0) * a.x_stride + t * 16;
  const float* ws = a.w_scales + static_cast<int64_t>(row0 / 128) * a.scale_stride;
  const int j0 = 2 * t;
  const bool tail = (a.k & 15) != 0;
  const uint4 zero = make_uint4(0, 0, 0, 0);

  float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
  // Each warp streams its own contiguous range of k (measured faster on an H100 than the warps
  // of a tile taking steps round robin: o_proj 52.9 against 59.4 us).
  const int gbeg = warp * a.groups_per_warp;
  const int gend = min(a.groups, gbeg + a.groups_per_warp);
  for (int gi = gbeg; gi < gend; gi += kUnroll) {
    uint4 va[kUnroll][2], vb[kUnroll][2], vx[kUnroll][2];
    float s0[kUnroll], s1[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int grp = gi + u;
      const bool live = grp < gend;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int off = grp * kGroup + h * 64;  // the lane's piece: [off + 16t, off + 16t + 16)
        const int left = a.k - off - t * 16;    // bytes of it inside k
        const bool in = live && left > 0;
        va[u][h] = in && has_a ? LoadStream16(wa + off) : zero;
        vb[u][h] = in && has_b ? LoadStream16(wb + off) : zero;
        vx[u][h] = in && has_x ? __ldg(reinterpret_cast<const uint4*>(xp + off)) : zero;
        if (tail && in && left < 16) {
          va[u][h] = KeepBytes(va[u][h], left);
          vb[u][h] = KeepBytes(vb[u][h], left);
          vx[u][h] = KeepBytes(vx[u][h], left);
        }
      }
      const float wsc = live ? __ldg(ws + grp) : 0.0f;
      const float* xs = a.x_scales + static_cast<int64_t>(grp) * a.x_scale_rows;
      s0[u] = live && j0 < a.m ? wsc * __ldg(xs + j0) : 0.0f;
      s1[u] = live && j0 + 1 < a.m ? wsc * __ldg(xs + j0 + 1) : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (gi + u >= gend) break;  // warp-uniform
      float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        MmaE4m3(c, va[u][h].x, vb[u][h].x, va[u][h].y, vb[u][h].y, vx[u][h].x, vx[u][h].y);
        MmaE4m3(c, va[u][h].z, vb[u][h].z, va[u][h].w, vb[u][h].w, vx[u][h].z, vx[u][h].w);
      }
      acc[0] = fmaf(c[0], s0[u], acc[0]);
      acc[1] = fmaf(c[1], s1[u], acc[1]);
      acc[2] = fmaf(c[2], s0[u], acc[2]);
      acc[3] = fmaf(c[3], s1[u], acc[3]);
    }
  }
  if (t < 2) {
    red[warp][g][j0] = acc[0];
    red[warp][g][j0 + 1] = acc[1];
    red[warp][g + 8][j0] = acc[2];
    red[warp][g + 8][j0 + 1] = acc[3];
  }
  __syncthreads();
  // 64 sums (16 rows x 4 tokens) and as few as 32 threads.
  for (int i = threadIdx.x; i < kTile * 4; i += blockDim.x) {
    const int r = i >> 2, j = i & 3;
    if (row0 + r >= a.n || j >= a.m) continue;
    float v = 0.0f;  // in warp order
    for (int w = 0; w < warps; ++w) v += red[w][r][j];
    a.y[static_cast<int64_t>(j) * a.n + row0 + r] = __float2bfloat16(v);
  }
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// The SM count per device, queried once (an eager decode step pays host time per layer).
int SmCount(int dev) {
  static std::atomic<int> cached[kMaxSms] = {};
  if (dev >= 0 && dev < kMaxSms) {
    const int known = cached[dev].load(std::memory_order_relaxed);
    if (known > 0) return known;
  }
  int count = 0;
  if (cudaDeviceGetAttribute(&count, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
      count <= 0)
    count = 132;
  if (dev >= 0 && dev < kMaxSms) cached[dev].store(count, std::memory_order_relaxed);
  return count;
}

}  // namespace

bool RowGemvFp8Supports(const DenseGemvParams& p) {
  const int64_t x_stride = p.x_stride == 0 ? p.k : p.x_stride;
  return p.x_q != nullptr && p.x_scales != nullptr && p.w != nullptr && p.scales != nullptr &&
         p.x == nullptr && p.w_bf16 == nullptr && !p.w_round_bf16 && p.y != nullptr && p.m >= 1 &&
         p.m <= kRowGemvMaxRows && p.n > 0 && p.n <= (int64_t{1} << 30) && p.k > 0 &&
         p.k <= (int64_t{1} << 30) && x_stride >= p.k && x_stride % 16 == 0 && p.w_stride >= p.k &&
         p.w_stride % 16 == 0 && Aligned16(p.x_q) && Aligned16(p.w) &&
         p.scale_stride >= (p.k + kGroup - 1) / kGroup && p.x_scale_rows >= p.m;
}

absl::Status RowGemvFp8(const DenseGemvParams& p, cudaStream_t stream) {
  if (!RowGemvFp8Supports(p)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "row gemv fp8: unsupported call (needs x_q + x_scales, w + scales, y; 1 <= m <= ",
        kRowGemvMaxRows, "; 16-byte aligned x_q and w with strides multiples of 16): m=", p.m,
        " n=", p.n, " k=", p.k, " x_stride=", p.x_stride, " w_stride=", p.w_stride,
        " scale_stride=", p.scale_stride, " x_scale_rows=", p.x_scale_rows));
  }
  int dev = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err != cudaSuccess)
    return absl::InternalError(absl::StrCat("row gemv fp8: no device: ", cudaGetErrorString(err)));
  RowArgs a;
  a.x = reinterpret_cast<const uint8_t*>(p.x_q);
  a.x_stride = p.x_stride == 0 ? p.k : p.x_stride;
  a.x_scales = p.x_scales;
  a.x_scale_rows = p.x_scale_rows;
  a.w = reinterpret_cast<const uint8_t*>(p.w);
  a.w_scales = p.scales;
  a.w_stride = p.w_stride;
  a.scale_stride = p.scale_stride;
  a.y = p.y;
  a.m = static_cast<int>(p.m);
  a.n = static_cast<int>(p.n);
  a.k = static_cast<int>(p.k);
  a.groups = static_cast<int>((p.k + kGroup - 1) / kGroup);
  // About kWarpsPerSm warps per SM over the whole grid: more warps per tile where there are few
  // tiles, each with an even share of the groups (and no warp without one). (Tried, together
  // with the round-robin steps: the few tiles of narrow layers split over clusters of blocks
  // adding their sums through distributed shared memory, kv_a 4 x 36 blocks: slower, kv_a 6.7
  // against 5.8 us, q_a 8.8 against 7.6.)
  const int64_t tiles = (p.n + kTile - 1) / kTile;
  const int64_t target = static_cast<int64_t>(SmCount(dev)) * kWarpsPerSm;
  int64_t warps =
      std::clamp<int64_t>((target + tiles - 1) / tiles, 1, std::min<int64_t>(kMaxWarps, a.groups));
  a.groups_per_warp = static_cast<int>((a.groups + warps - 1) / warps);
  warps = (a.groups + a.groups_per_warp - 1) / a.groups_per_warp;
  RowGemvFp8Kernel<<<static_cast<unsigned>(tiles), static_cast<unsigned>(warps * 32), 0, stream>>>(
      a);
  err = cudaGetLastError();
  if (err != cudaSuccess)
    return absl::InternalError(
        absl::StrCat("row gemv fp8: launch failed: ", cudaGetErrorString(err)));
  return absl::OkStatus();
}

}  // namespace r1::cuda

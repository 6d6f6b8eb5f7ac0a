// MLA decode, absorbed form, on Hopper's warpgroup MMA (wgmma, sm_90a) for R1's latent shape:
// kv_lora 512 + rope 64, heads a multiple of 64, bf16 cache (MlaDecodeParams::Algo::kWgmma, and
// kTensorCore for that shape).
//
// Why this shape: per cached token R1's 128 heads do 128 x (576 + 512) multiply-adds against 1152
// bytes (~240 flop/byte), so at HBM speed the work needs ~70% of the dense bf16 tensor rate.
// mma.sync (mla_decode_tc.cu) keeps the accumulators and the operand traffic in the warps and
// stalls on their latencies; wgmma reads its operands from shared memory and runs asynchronously.
//   * One block = 64 heads of one row (sequence) over one slice of its context (R1's 128 heads: two
//     blocks on neighbouring SMs, the second read of each cache line mostly from L2); 2 warpgroups.
//   * Shared memory (~226 KB, one block per SM): q (64 heads x 576, bf16), two stages of 64 cached
//     tokens x 576, and P (64 x 64 bf16). Every panel is stored as the wgmma "128-byte swizzle"
//     layout: 64-dim column chunks of 64 rows x 128 bytes, 16-byte unit u of row r at unit
//     u ^ (r % 8), so the MMAs read them bank-conflict free.
//   * Loads: pages of 8, 16, 32 or 64 slots (or multiples of 64) arrive by bulk tensor copies (TMA,
//     one 64-dim x page box per chunk, the hardware applying the swizzle), each column chunk on
//     its own mbarrier so that the scores' k-steps for chunk c go out as soon as it has landed;
//     issued by one thread of warpgroup 1 as soon as warpgroup 0 frees the stage, the page id
//     read from the block table a tile ahead; other page sizes are gathered token by token with
//     cp.async by warpgroup 1. Slots past the context in the last tile are zeroed (NaN-free V for
//     P · V; their scores are masked).
//   * Warpgroup 0 computes the scores S = q · K^T (64 x 64, K = 576: 36 wgmma m64n64k16, q and K
//     both from shared memory), the online softmax in registers (base 2, on the raw scores with
//     the scale folded into one FMA per exponent), hands P (bf16) and the rescale factors to
//     warpgroup 1 through shared memory, and accumulates output dims 0..255: O += P · V with P
//     from its registers (the score accumulators are already in the A-operand layout) and V = the
//     first 512 dims of the same tile read as an N-major operand (no second read). Warpgroup 1
//     accumulates dims 256..511 from P in shared memory. Each thread holds 128 float accumulators.
//   * Handshakes: the chunks' mbarriers (landed, bulk copies), named barriers for "tile landed"
//     (cp.async, or a zeroed partial last tile), P ready, P consumed and tile consumed;
//     fence.proxy.async.shared::cta after ordinary stores that wgmma reads next.
//   * Split context and its workspace are those of mla_decode_tc.cu (PlanMlaSplits,
//     LaunchMlaCombine); slices are whole 64-token tiles.
//   * What bounds it (ncu, batch 64 x 4K, 75% of the copy rate): DRAM 67% busy, the tensor pipe
//     55%, 0.28 instructions issued per scheduler-cycle, 40% of warp stalls at barriers: one
//     block per SM, and warpgroup 0's chain per tile (scores, softmax, P hand-over, P · V) leaves
//     the tensor pipe idle during the softmax. Per-chunk mbarriers with the page id read a tile
//     ahead: 74.5 / 82.2 / 78.5% of the copy rate at 64 x 4K / 64 x 32K / 256 x 4K, against
//     71.0 / 77.2 / 74.4% for the same kernel waiting on the whole tile with the page id read at
//     issue (one run, back to back). Tried and slower: three warpgroups and three stages (q's
//     latent dims in warpgroup 0's registers, P over the tile's rope chunk, setmaxnreg
//     184/160/160): 64-72%, as q (128 registers) and S leave warpgroup 0 room only for m64n32
//     score MMAs, 72 per tile (with m64n64 ptxas serializes the wgmmas, C7512); issuing the next
//     tile's scores behind P · V in warpgroup 0: ~43% (255 registers, wgmmas serialized, C7518).
// Test: tests/cuda/mla_wgmma_test.cc. Bench: bench_gpu --only mla (bench/README.md).
#include <cuda.h>  // CUtensorMap and its enums (the encoder is fetched from the driver at run time)
#include <cudaTypedefs.h>
#include <cuda_bf16.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/sm90_util.cuh"
#include "kernels/cuda/mla_decode.h"

namespace r1::cuda {
namespace {

constexpr int kHeads = 64;  // heads per block: the M of every wgmma
constexpr int kTile = 64;   // cached tokens per pipeline stage
constexpr int kKvr = 512, kRope = 64, kLatent = kKvr + kRope;
constexpr int kRowBytes = 128;                      // one swizzle row: 64 bf16 dims
constexpr int kChunkBytes = 64 * kRowBytes;         // 64 rows x 64 dims
constexpr int kChunks = kLatent / 64;               // 9 column chunks per panel
constexpr int kPanelBytes = kChunks * kChunkBytes;  // 64 rows x 576 dims
constexpr int kUnits = kLatent / 8;                 // 16-byte units per row
constexpr int kThreads = 256;                       // two warpgroups
constexpr int kHalf = kKvr / 2;                     // output dims per warpgroup
constexpr float kLog2e = 1.4426950408889634f;

// Shared-memory map, from a base aligned to 1024 bytes (the 128-byte swizzle's period).
constexpr int kQOff = 0;
constexpr int kKOff = kQOff + kPanelBytes;       // two stages
constexpr int kPOff = kKOff + 2 * kPanelBytes;   // P: 64 heads x 64 tokens, one chunk
constexpr int kAlphaOff = kPOff + kChunkBytes;   // float[64]: this tile's rescale factor per head
constexpr int kInvOff = kAlphaOff + kHeads * 4;  // float[64]: 1 / softmax denominator per head
// uint64[2][9]: per stage and column chunk, "chunk landed" (bulk copies)
constexpr int kBarOff = kInvOff + kHeads * 4;
constexpr int kSmemBytes = kBarOff + 2 * kChunks * 8 + 1024;  // + slack for the alignment
constexpr int kIssuer = kThreads / 2;  // the thread of warpgroup 1 that issues bulk copies

enum : int { kBarTileFull = 1, kBarPFull = 2, kBarPFree = 3, kBarTileFree = 4 };

// Byte offset of 16-byte unit u (of 72) of row r in a panel.
__device__ inline uint32_t PanelOffset(int r, int u) {
  return (u >> 3) * kChunkBytes + r * kRowBytes + (((u & 7) ^ (r & 7)) << 4);
}

// wgmma shared-memory descriptor, 128-byte swizzle: start address, leading and stride byte offsets
// (each >> 4). K-major operands (q, K, P): stride = 1024 (8 rows of 128 bytes), leading unused.
// N-major V: leading = 8192 (the next 64 dims, one chunk on), stride = 1024 (the next 8 tokens).
__device__ inline uint64_t Desc(uint32_t addr, uint32_t leading, uint32_t stride) {
  return static_cast<uint64_t>((addr & 0x3FFFF) >> 4) |
         (static_cast<uint64_t>(leading >> 4) << 16) | (static_cast<uint64_t>(stride >> 4) << 32) |
         (uint64_t{1} << 62);
}
__device__ inline uint64_t KDesc(uint32_t addr) { return Desc(addr, 16, 1024); }
__device__ inline uint64_t VDesc(uint32_t addr) { return Desc(addr, kChunkBytes, 1024); }

__device__ inline void CpAsync16(uint32_t dst, const void* src, bool valid) {
  const int n = valid ? 16 : 0;  // 0: fill zeros (past the context: no NaNs into P · V)
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n)
               : "memory");
}
__device__ inline void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ inline void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
// Orders this thread's generic-proxy shared-memory writes before later async-proxy (wgmma) reads.
__device__ inline void FenceProxyAsync() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
__device__ inline void BarSync(int id) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "n"(kThreads) : "memory");
}
__device__ inline void BarArrive(int id) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "n"(kThreads) : "memory");
}

// Bulk tensor copies (TMA) completing on an mbarrier.
__device__ inline void MbarExpectTx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
}
// Box (64 dims, rows, 1 page) at (dim c0, slot c1, page c2) of the cache's tensor map into dst.
__device__ inline void TmaLoad(uint32_t dst, const CUtensorMap* map, int c0, int c1, int c2,
                               uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, "
      "%3, %4}], [%5];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(bar)
      : "memory");
}

template <int N>
__device__ inline void WgmmaWait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

#define MLA_F8(d, i)                                                                    \
  "+f"(d[(i)]), "+f"(d[(i) + 1]), "+f"(d[(i) + 2]), "+f"(d[(i) + 3]), "+f"(d[(i) + 4]), \
      "+f"(d[(i) + 5]), "+f"(d[(i) + 6]), "+f"(d[(i) + 7])
#define MLA_F32(d, i) MLA_F8(d, (i)), MLA_F8(d, (i) + 8), MLA_F8(d, (i) + 16), MLA_F8(d, (i) + 24)
#define MLA_R32                                                             \
  "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19," \
  "%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31"
#define MLA_R128                                                                                   \
  MLA_R32                                                                                          \
      ",%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%" \
      "54,"                                                                                        \
      "%55,%56,%57,%58,%59,%60,%61,%62,%63,%64,%65,%66,%67,%68,%69,%70,%71,%72,%73,%74,%75,%76,%"  \
      "77,"                                                                                        \
      "%78,%79,%80,%81,%82,%83,%84,%85,%86,%87,%88,%89,%90,%91,%92,%93,%94,%95,%96,%97,%98,%99,%"  \
      "100,"                                                                                       \
      "%101,%102,%103,%104,%105,%106,%107,%108,%109,%110,%111,%112,%113,%114,%115,%116,%117,%118," \
      "%119,%120,%121,%122,%123,%124,%125,%126,%127"

// d[64 x 64] (+)= A[64 x 16] · B[64 x 16]^T, both K-major in shared memory.
__device__ inline void WgmmaScores(float (&d)[32], uint64_t a, uint64_t b, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " MLA_R32
      "}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : MLA_F32(d, 0)
      : "l"(a), "l"(b), "r"(accumulate));
}

// d[64 x 256] += A[64 x 16] (registers) · B[16 x 256] (N-major in shared memory).
__device__ inline void WgmmaPvRegs(float (&d)[128], const uint32_t (&a)[4], uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %133, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 " MLA_R128
      "}, {%128,%129,%130,%131}, %132, p, 1, 1, 1;\n}\n"
      : MLA_F32(d, 0), MLA_F32(d, 32), MLA_F32(d, 64), MLA_F32(d, 96)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(1));
}

// d[64 x 256] += A[64 x 16] (K-major in shared memory) · B[16 x 256] (N-major in shared memory).
__device__ inline void WgmmaPvSmem(float (&d)[128], uint64_t a, uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 " MLA_R128
      "}, %128, %129, p, 1, 1, 0, 1;\n}\n"
      : MLA_F32(d, 0), MLA_F32(d, 32), MLA_F32(d, 64), MLA_F32(d, 96)
      : "l"(a), "l"(b), "r"(1));
}

__device__ inline float Exp2(float x) {  // 2^x; -inf gives 0
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

__device__ inline uint32_t PackBf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// kTma: tiles arrive by bulk tensor copies of whole pages (cache_map; page sizes that divide 64 or
// are multiples of it, >= 8); otherwise by cp.async, token by token (cache_map unused).
template <bool kTma>
__global__ void __launch_bounds__(kThreads, 1)
    MlaDecodeWgmmaKernel(const __grid_constant__ CUtensorMap cache_map, MlaDecodeParams p,
                         int splits, int hgroups, float* part_lse, float* part_o) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t raw = SmemAddr(smem_raw);
  const uint32_t base = (raw + 1023) & ~1023u;
  unsigned char* smem = smem_raw + (base - raw);
  const uint32_t q_s = base + kQOff, k_s = base + kKOff, p_s = base + kPOff;
  auto* s_alpha = reinterpret_cast<float*>(smem + kAlphaOff);
  auto* s_inv = reinterpret_cast<float*>(smem + kInvOff);

  int64_t bid = blockIdx.x;
  const int hg =
      static_cast<int>(bid % hgroups);  // head group fastest: its twin reads the same slice from L2
  bid /= hgroups;
  const int split = static_cast<int>(bid % splits);
  const int64_t row = bid / splits;
  const int tid = threadIdx.x, wg = tid / 128, warp = (tid % 128) / 32, lane = tid % 32;
  const int ctx = p.context_lens[row];
  const int per = ((ctx + splits - 1) / splits + kTile - 1) / kTile * kTile;
  const int start = split * per, end = min(ctx, start + per);
  const int64_t h0 = static_cast<int64_t>(hg) * kHeads;
  if (start >= end) {  // an empty slice (short context): its partial counts for nothing
    if (splits > 1) {
      if (tid < kHeads) part_lse[(split * p.rows + row) * p.heads + h0 + tid] = -INFINITY;
    } else {
      for (int i = tid; i < kHeads * kKvr; i += kThreads)
        p.o_lat[(row * p.heads + h0) * kKvr + i] = 0.0f;
    }
    return;
  }

  // Tile `tile` of the slice into stage `stage` (warpgroup 1): warp w gathers tokens 16w..16w+15,
  // a lane every 32nd 16-byte unit of each; lanes 0..15 resolve the 16 tokens' pages once.
  const int32_t* table = p.block_tables + row * p.max_blocks;
  const int ntiles = (end - start + kTile - 1) / kTile;
  auto load_tile = [&](int tile, int stage) {
    const int tok0 = warp * 16, j0 = start + tile * kTile + tok0;
    int64_t src_off = -1;
    if (lane < 16 && j0 + lane < end) {
      const int j = j0 + lane;
      src_off = static_cast<int64_t>(table[j / p.block_size]) * p.block_stride +
                static_cast<int64_t>(j % p.block_size) * kLatent;
    }
    const uint32_t dst = k_s + stage * kPanelBytes;
#pragma unroll 4
    for (int r = 0; r < 16; ++r) {
      const int64_t off = __shfl_sync(0xffffffffu, src_off, r);
      const bool valid = off >= 0;
      const __nv_bfloat16* src = p.cache + (valid ? off : 0);
#pragma unroll
      for (int c = 0; c < 3; ++c) {
        const int u = lane + 32 * c;
        if (u < kUnits) CpAsync16(dst + PanelOffset(tok0 + r, u), src + u * 8, valid);
      }
    }
  };
  // The bulk-copy path: thread kIssuer copies each page's 9 chunk boxes (64 dims x page slots, the
  // hardware applying the 128-byte swizzle), chunk by chunk, each chunk on its own mbarrier so
  // the scores start on the first chunks while the rest are in flight. With pages of >= 64 slots
  // the tile's page id comes from `page` (read a tile ahead: the table read stays off the issue).
  const uint32_t full_bar = base + kBarOff;
  const int bs = static_cast<int>(p.block_size);
  auto chunk_bar = [&](int stage, int c) { return full_bar + (stage * kChunks + c) * 8; };
  auto issue_tile = [&](int tile, int stage, int page) {
    const int t0 = start + tile * kTile;
    const uint32_t dst = k_s + stage * kPanelBytes;
    if (bs >= kTile) {  // the tile is 64 slots of one page
      const int slot = t0 % bs;
      for (int c = 0; c < kChunks; ++c) {
        MbarExpectTx(chunk_bar(stage, c), kChunkBytes);
        TmaLoad(dst + c * kChunkBytes, &cache_map, c * 64, slot, page, chunk_bar(stage, c));
      }
    } else {  // whole pages; those past the context are not read
      const int pages = min(kTile / bs, (end - t0 + bs - 1) / bs);
      for (int c = 0; c < kChunks; ++c) {
        MbarExpectTx(chunk_bar(stage, c), pages * bs * kRowBytes);
        for (int q = 0; q < pages; ++q) {
          TmaLoad(dst + c * kChunkBytes + q * bs * kRowBytes, &cache_map, c * 64, 0,
                  table[t0 / bs + q], chunk_bar(stage, c));
        }
      }
    }
  };
  // Page id of tile t's first slot when pages hold >= 64 slots (else unused).
  auto tile_page = [&](int t) { return bs >= kTile ? table[(start + t * kTile) / bs] : 0; };
  int next_page = 0;  // kIssuer: tile_page of the next tile to issue
  if (wg == 1) {
    if (kTma) {
      if (tid == kIssuer) {
        for (int i = 0; i < 2 * kChunks; ++i) MbarInit(full_bar + i * 8, 1);
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
        issue_tile(0, 0, tile_page(0));
        if (ntiles > 1) next_page = tile_page(1);
      }
    } else {
      load_tile(0, 0);
      CpAsyncCommit();
    }
  }
  // q for the block's 64 heads, bf16, latent then rope.
  for (int i = tid; i < kHeads * kUnits; i += kThreads) {
    const int h = i / kUnits, u = i % kUnits;
    const int64_t rh = row * p.heads + h0 + h;
    const float* src =
        u < kKvr / 8 ? p.q_lat + rh * kKvr + u * 8 : p.q_pe + rh * kRope + (u - kKvr / 8) * 8;
    const float4 a = *reinterpret_cast<const float4*>(src),
                 b = *reinterpret_cast<const float4*>(src + 4);
    const uint4 v =
        make_uint4(PackBf16(a.x, a.y), PackBf16(a.z, a.w), PackBf16(b.x, b.y), PackBf16(b.z, b.w));
    *reinterpret_cast<uint4*>(smem + kQOff + PanelOffset(h, u)) = v;
  }
  FenceProxyAsync();
  __syncthreads();

  // Accumulator layout (wgmma m64nN, per warpgroup): warp w holds rows 16w + g and 16w + g + 8
  // (g = lane / 4); element 4n + i is column 8n + 2 (lane % 4) + (i & 1) of row r0 (i < 2) or r1.
  const int g = lane / 4, tq = lane % 4;
  const int r0 = warp * 16 + g, r1 = r0 + 8;
  float o[128];
#pragma unroll
  for (int i = 0; i < 128; ++i) o[i] = 0.0f;
  // Running max of the raw scores and this thread's share of the sums of 2^((score - max) * sl).
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;
  const float sl = p.softmax_scale * kLog2e;  // > 0 (MlaDecodeWgmmaSupported)

  if (wg == 0) {
    for (int tile = 0; tile < ntiles; ++tile) {
      const uint32_t kt = k_s + (tile & 1) * kPanelBytes;
      const int t0 = start + tile * kTile;
      const bool partial = end - t0 < kTile;
      // Bulk copies: each column chunk's mbarrier says it landed (the chunk's 4 k-steps go out as
      // soon as it has); warpgroup 1 only hands over the last tile when it is partial (after
      // zeroing its tail). cp.async: warpgroup 1 hands over each.
      if (!kTma || partial) BarSync(kBarTileFull);
      float s[32];
      WgmmaFence();
#pragma unroll
      for (int c = 0; c < kChunks; ++c) {
        if (kTma) {
          MbarWait(chunk_bar(tile & 1, c), (tile >> 1) & 1);
          WgmmaFence();
        }
#pragma unroll
        for (int kk = 0; kk < 4; ++kk) {
          const uint32_t off = c * kChunkBytes + kk * 32;
          WgmmaScores(s, KDesc(q_s + off), KDesc(kt + off), c + kk > 0);
        }
      }
      WgmmaCommit();
      WgmmaWait<0>();

      // Online softmax in base 2 on the raw scores (the scale folded into one FMA per exponent);
      // past-the-end tokens of a partial tile get -inf (every tile has a valid one).
      if (partial) {
#pragma unroll
        for (int n = 0; n < 8; ++n) {
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            if (t0 + n * 8 + 2 * tq + (i & 1) >= end) s[4 * n + i] = -INFINITY;
          }
        }
      }
      float mx0 = m0, mx1 = m1;
#pragma unroll
      for (int n = 0; n < 8; ++n) {
        mx0 = fmaxf(mx0, fmaxf(s[4 * n], s[4 * n + 1]));
        mx1 = fmaxf(mx1, fmaxf(s[4 * n + 2], s[4 * n + 3]));
      }
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
      const float al0 = Exp2((m0 - mx0) * sl), al1 = Exp2((m1 - mx1) * sl);
      m0 = mx0;
      m1 = mx1;
      const float ms0 = mx0 * sl, ms1 = mx1 * sl;
      float rs0 = 0.0f, rs1 = 0.0f;
#pragma unroll
      for (int n = 0; n < 8; ++n) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float e = Exp2(fmaf(s[4 * n + i], sl, -(i < 2 ? ms0 : ms1)));
          s[4 * n + i] = e;
          if (i < 2)
            rs0 += e;
          else
            rs1 += e;
        }
      }
      l0 = l0 * al0 + rs0;
      l1 = l1 * al1 + rs1;
      // P in bf16: pr[n] = row r0's pair of n8 tile n, pr[8 + n] = row r1's. As the A operand of
      // k-step kk (tokens 16kk..): {r0 tile 2kk, r1 tile 2kk, r0 tile 2kk+1, r1 tile 2kk+1}.
      uint32_t pr[16];
#pragma unroll
      for (int n = 0; n < 8; ++n) {
        pr[n] = PackBf16(s[4 * n], s[4 * n + 1]);
        pr[8 + n] = PackBf16(s[4 * n + 2], s[4 * n + 3]);
      }
      if (tile > 0) BarSync(kBarPFree);  // warpgroup 1 has read the previous P
#pragma unroll
      for (int n = 0; n < 8; ++n) {  // r0 % 8 == r1 % 8 == g
        *reinterpret_cast<uint32_t*>(smem + kPOff + r0 * kRowBytes + ((n ^ g) << 4) + 4 * tq) =
            pr[n];
        *reinterpret_cast<uint32_t*>(smem + kPOff + r1 * kRowBytes + ((n ^ g) << 4) + 4 * tq) =
            pr[8 + n];
      }
      if (tq == 0) {
        s_alpha[r0] = al0;
        s_alpha[r1] = al1;
      }
      FenceProxyAsync();
      BarArrive(kBarPFull);
      // Rescale only when some row's running max moved (it settles early in a long context).
      if (__any_sync(0xffffffffu, al0 != 1.0f || al1 != 1.0f)) {
#pragma unroll
        for (int n = 0; n < 32; ++n)
          o[4 * n] *= al0, o[4 * n + 1] *= al0, o[4 * n + 2] *= al1, o[4 * n + 3] *= al1;
      }
      WgmmaFence();
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        const uint32_t a[4] = {pr[2 * kk], pr[8 + 2 * kk], pr[2 * kk + 1], pr[8 + 2 * kk + 1]};
        WgmmaPvRegs(o, a, VDesc(kt + kk * 16 * kRowBytes));
      }
      WgmmaCommit();
      WgmmaWait<0>();
      if (tile + 2 < ntiles)
        BarArrive(kBarTileFree);  // warpgroup 1 refills this stage with tile + 2
    }
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    if (tq == 0) {
      s_inv[r0] = 1.0f / l0;
      s_inv[r1] = 1.0f / l1;
      if (splits > 1) {
        part_lse[(split * p.rows + row) * p.heads + h0 + r0] = m0 * sl + log2f(l0);
        part_lse[(split * p.rows + row) * p.heads + h0 + r1] = m1 * sl + log2f(l1);
      }
    }
  } else {
    for (int tile = 0; tile < ntiles; ++tile) {
      const uint32_t kt = k_s + (tile & 1) * kPanelBytes;
      if (tile + 1 < ntiles) {
        if (tile >= 1)
          BarSync(kBarTileFree);  // warpgroup 0 is done with tile - 1, this stage's last
        if (!kTma) load_tile(tile + 1, (tile + 1) & 1);
        if (kTma && tid == kIssuer) {
          issue_tile(tile + 1, (tile + 1) & 1, next_page);
          if (tile + 2 < ntiles) next_page = tile_page(tile + 2);
        }
      }
      if (kTma) {
        for (int c = 0; c < kChunks; ++c) MbarWait(chunk_bar(tile & 1, c), (tile >> 1) & 1);
        const int valid = end - (start + tile * kTile);
        if (valid < kTile) {
          // Slots past the context in the last page (and pages not read) hold whatever was there:
          // V rows of zeros keep NaNs out of P · V (their scores are masked).
          for (int i = tid - kThreads / 2; i < (kTile - valid) * (kKvr / 8); i += kThreads / 2) {
            const int r = valid + i / (kKvr / 8), u = i % (kKvr / 8);
            *reinterpret_cast<uint4*>(smem + kKOff + (tile & 1) * kPanelBytes + PanelOffset(r, u)) =
                make_uint4(0, 0, 0, 0);
          }
          FenceProxyAsync();
          BarArrive(kBarTileFull);
        }
      } else {
        CpAsyncCommit();
        CpAsyncWait<1>();  // this tile's copies (this thread's) landed
        FenceProxyAsync();
        BarArrive(kBarTileFull);
      }
      BarSync(kBarPFull);
      const float al0 = s_alpha[r0], al1 = s_alpha[r1];
      if (__any_sync(0xffffffffu, al0 != 1.0f || al1 != 1.0f)) {
#pragma unroll
        for (int n = 0; n < 32; ++n)
          o[4 * n] *= al0, o[4 * n + 1] *= al0, o[4 * n + 2] *= al1, o[4 * n + 3] *= al1;
      }
      WgmmaFence();
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        WgmmaPvSmem(o, KDesc(p_s + kk * 32), VDesc(kt + 4 * kChunkBytes + kk * 16 * kRowBytes));
      }
      WgmmaCommit();
      WgmmaWait<0>();
      if (tile + 1 < ntiles) BarArrive(kBarPFree);
    }
  }
  __syncthreads();  // s_inv written

  const float inv0 = s_inv[r0], inv1 = s_inv[r1];
  float* out = p.o_lat;
  int64_t base0 = (row * p.heads + h0 + r0) * kKvr, base1 = (row * p.heads + h0 + r1) * kKvr;
  if (splits > 1) {
    out = part_o;
    base0 = ((split * p.rows + row) * p.heads + h0 + r0) * kKvr;
    base1 = ((split * p.rows + row) * p.heads + h0 + r1) * kKvr;
  }
#pragma unroll
  for (int n = 0; n < 32; ++n) {
    const int d = wg * kHalf + n * 8 + 2 * tq;
    *reinterpret_cast<float2*>(out + base0 + d) = make_float2(o[4 * n] * inv0, o[4 * n + 1] * inv0);
    *reinterpret_cast<float2*>(out + base1 + d) =
        make_float2(o[4 * n + 2] * inv1, o[4 * n + 3] * inv1);
  }
}

#undef MLA_F8
#undef MLA_F32
#undef MLA_R32
#undef MLA_R128

// The layer's cache as a 3-d tensor [pages][block_size][576] bf16 with boxes of 64 dims x
// min(block_size, 64) slots, 128-byte swizzle; false where the page size does not tile (then the
// kernel gathers with cp.async). The page count is unknown here: any int32 page id is in range.
bool EncodeCacheMap(const MlaDecodeParams& p, CUtensorMap* map) {
  const int64_t bs = p.block_size;
  if (!(bs % kTile == 0 || (kTile % bs == 0 && bs % 8 == 0)) || bs > INT_MAX) return false;
  const TensorMapEncoder encode = TensorMapEncoderFromDriver();
  if (encode == nullptr) return false;
  const cuuint64_t dims[3] = {kLatent, static_cast<cuuint64_t>(bs),
                              static_cast<cuuint64_t>(INT_MAX)};
  const cuuint64_t strides[2] = {kLatent * 2, static_cast<cuuint64_t>(p.block_stride) * 2};
  const cuuint32_t box[3] = {64, static_cast<cuuint32_t>(std::min<int64_t>(bs, kTile)), 1};
  const cuuint32_t elem_strides[3] = {1, 1, 1};
  return encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, const_cast<__nv_bfloat16*>(p.cache), dims,
                strides, box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

}  // namespace

namespace internal {

bool MlaDecodeWgmmaSupported(const MlaDecodeParams& p) {
  if (p.kv_lora_rank != kKvr || p.rope_dim != kRope || p.heads % kHeads != 0) return false;
  if (p.block_stride % 8 != 0 || reinterpret_cast<uintptr_t>(p.cache) % 16 != 0) return false;
  if (reinterpret_cast<uintptr_t>(p.q_lat) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(p.q_pe) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(p.o_lat) % 8 != 0) {
    return false;
  }
  // The softmax takes the running max of the raw scores: the scale must be positive.
  return p.softmax_scale > 0.0f && MlaDeviceCc() == 90 && MlaSmemOptin() >= kSmemBytes;
}

bool MlaWgmmaBulkCopies(const MlaDecodeParams& p) {
  alignas(64) CUtensorMap map{};
  return EncodeCacheMap(p, &map);
}

absl::Status MlaDecodeWgmma(const MlaDecodeParams& p, cudaStream_t stream) {
  const int64_t hgroups = p.heads / kHeads;
  const MlaSplitPlan plan = PlanMlaSplits(p);
  const int64_t blocks = p.rows * hgroups * plan.splits;
  if (blocks > 0x7fffffff)
    return absl::InvalidArgumentError(absl::StrCat("mla decode wgmma: ", blocks, " blocks"));
  alignas(64) CUtensorMap map{};
  const bool tma = EncodeCacheMap(p, &map);
  auto* kernel = tma ? MlaDecodeWgmmaKernel<true> : MlaDecodeWgmmaKernel<false>;
  const absl::Status st = MlaRaiseSmemLimit(reinterpret_cast<const void*>(kernel), kSmemBytes);
  if (!st.ok()) return st;
  kernel<<<static_cast<unsigned>(blocks), kThreads, kSmemBytes, stream>>>(
      map, p, plan.splits, static_cast<int>(hgroups), plan.part_lse, plan.part_o);
  LaunchMlaCombine(p, plan, stream);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    return absl::InternalError(
        absl::StrCat("mla decode wgmma: launch failed: ", cudaGetErrorString(err)));
  }
  return absl::OkStatus();
}

}  // namespace internal
}  // namespace r1::cuda

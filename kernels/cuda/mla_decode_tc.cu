// MLA decode, absorbed form, on the tensor cores (MlaDecodeParams::Algo::kTensorCore).
//
// Why this shape: per cached token the 128 heads do 128 x (576 + 512) multiply-adds against 1152
// bytes (~240 flop/byte), so at HBM speed the work needs ~70% of the dense bf16 tensor rate: the
// products must be MMAs and every cached byte must be read once per block for many heads.
//   * One block = 64 heads of one row (sequence) over one slice of its context; R1's 128 heads are
//     two blocks that read the same cache slice (the second read mostly from L2).
//   * 8 warps: warp w owns heads 16*(w%4).. and half (w/4) of the latent. Scores: each warp of a
//     pair multiplies its half of the 576 latent dims, the pair swaps partial scores through
//     shared memory and both hold the full 16 x 32 score tile (same sum, same bits). Output: each
//     warp accumulates its 256 of the 512 output dims (128 float registers).
//   * The cache streams through a 3-stage cp.async pipeline of 32 tokens (each token's 1152 bytes
//     gathered from its page), rows padded by 16 bytes so ldmatrix is conflict-free.
//   * q is rounded to bf16 once into shared memory; the softmax weights are rounded to bf16 for the
//     second product (FlashAttention's register reuse of the score fragment); float32 accumulate.
//   * Split context: when rows x head-groups cannot fill the GPU, each row's context is cut into
//     `splits` slices written as normalised partials with their log-sum-exp, merged by a second
//     kernel. The split count depends on the row count and the table capacity only (known when a
//     decode graph is captured); each block finds its slice from the row's context on the device.
// Test: tests/cuda/kernels_test.cc (MlaDecodeTensorCore*). Bench: bench/gpu/gpu_bench.cc.
#include <cuda_bf16.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/mla_decode.h"

namespace r1::cuda {
namespace {

constexpr int kHeadsPerBlock = 64;
constexpr int kTokens = 32;  // tokens per pipeline stage
constexpr int kStages = 3;
constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;
constexpr int kMaxKvr = 512;
constexpr int kMaxNTiles = kMaxKvr / 2 / 8;  // n8 output tiles of one warp (its half of kv_lora)
constexpr int kMaxSplits = 64;
constexpr int kCtasPerSmForSplits = 4;  // split only while rows x groups x splits <= 4 x SMs
constexpr float kLog2e = 1.4426950408889634f;

struct SmemLayout {
  int pitch;  // bf16 elements per shared-memory row (latent + 8: 16 bytes of padding)
  size_t k_off, x_off, total;
};

__host__ __device__ inline SmemLayout Layout(int latent) {
  SmemLayout l{};
  l.pitch = latent + 8;
  l.k_off = static_cast<size_t>(kHeadsPerBlock) * l.pitch * 2;
  l.x_off = l.k_off + static_cast<size_t>(kStages) * kTokens * l.pitch * 2;
  l.total = l.x_off + static_cast<size_t>(kWarps) * 16 * 32 * 4;
  return l;
}

__device__ inline uint32_t SmemAddr(const void* p) { return static_cast<uint32_t>(__cvta_generic_to_shared(p)); }

// 16-byte asynchronous copy; `valid` false fills zeros (past-the-end tokens must not bring NaNs).
__device__ inline void CpAsync16(uint32_t dst, const void* src, bool valid) {
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n));
}
__device__ inline void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ inline void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ inline void Ldsm4(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}
__device__ inline void Ldsm4T(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2, uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}
__device__ inline void Mma(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                           uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}
__device__ inline uint32_t PackBf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// kKvr / kRope: R1's sizes as constants (fully unrolled loops), or 0 for sizes read from p.
template <int kKvr, int kRope>
__global__ void __launch_bounds__(kThreads, 1)
    MlaDecodeTcKernel(MlaDecodeParams p, int splits, int hgroups, float* part_lse, float* part_o) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int kvr = kKvr > 0 ? kKvr : static_cast<int>(p.kv_lora_rank);
  const int latent = kKvr > 0 ? kKvr + kRope : static_cast<int>(p.kv_lora_rank + p.rope_dim);
  const SmemLayout L = Layout(latent);
  auto* sq = reinterpret_cast<__nv_bfloat16*>(smem);
  auto* sk = reinterpret_cast<__nv_bfloat16*>(smem + L.k_off);
  auto* sx = reinterpret_cast<float*>(smem + L.x_off);
  int64_t bid = blockIdx.x;
  const int hg = static_cast<int>(bid % hgroups);  // head group fastest: its twin reads the same slice from L2
  bid /= hgroups;
  const int split = static_cast<int>(bid % splits);
  const int64_t row = bid / splits;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int ctx = p.context_lens[row];
  const int per = ((ctx + splits - 1) / splits + kTokens - 1) / kTokens * kTokens;
  const int start = split * per, end = min(ctx, start + per);
  const int64_t h0 = static_cast<int64_t>(hg) * kHeadsPerBlock;
  if (start >= end) {  // an empty slice (short context): its partial counts for nothing
    if (splits > 1) {
      for (int h = tid; h < kHeadsPerBlock; h += kThreads)
        if (h0 + h < p.heads) part_lse[(split * p.rows + row) * p.heads + h0 + h] = -INFINITY;
    } else {
      for (int i = tid; i < kHeadsPerBlock * kvr; i += kThreads)
        if (h0 + i / kvr < p.heads) p.o_lat[(row * p.heads + h0) * kvr + i] = 0.0f;
    }
    return;
  }

  // The slice's tiles: token j of the row sits in page table[j / block_size], slot j % block_size.
  const int32_t* table = p.block_tables + row * p.max_blocks;
  const int chunks = latent / 8;  // 16-byte pieces per token
  const int ntiles = (end - start + kTokens - 1) / kTokens;
  auto load_tile = [&](int tile, int stage) {
    // Warp w gathers tokens 4w..4w+3 of the tile, a lane every 32nd 16-byte piece of each: one
    // page lookup per token instead of per piece.
    const int t0 = start + tile * kTokens;
    __nv_bfloat16* dst = sk + static_cast<size_t>(stage) * kTokens * L.pitch;
#pragma unroll
    for (int r = 0; r < kTokens / kWarps; ++r) {
      const int tok = warp * (kTokens / kWarps) + r, j = t0 + tok;
      const bool valid = j < end;
      const __nv_bfloat16* src = p.cache;
      if (valid) {
        src = p.cache + static_cast<int64_t>(table[j / p.block_size]) * p.block_stride +
              static_cast<int64_t>(j % p.block_size) * latent;
      }
      const uint32_t d = SmemAddr(dst + tok * L.pitch);
#pragma unroll
      for (int c = lane; c < chunks; c += 32) CpAsync16(d + c * 16, valid ? src + c * 8 : p.cache, valid);
    }
  };
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < ntiles) load_tile(s, s);
    CpAsyncCommit();
  }
  // q for the block's 64 heads, bf16, latent then rope (heads past the end are zero).
  for (int i = tid; i < kHeadsPerBlock * latent / 2; i += kThreads) {
    const int h = i / (latent / 2), d = (i % (latent / 2)) * 2;
    const int64_t head = h0 + h;
    float2 v = make_float2(0.0f, 0.0f);
    if (head < p.heads) {
      v = d < kvr ? *reinterpret_cast<const float2*>(p.q_lat + (row * p.heads + head) * kvr + d)
                  : *reinterpret_cast<const float2*>(p.q_pe + (row * p.heads + head) * p.rope_dim + (d - kvr));
    }
    *reinterpret_cast<__nv_bfloat162*>(sq + h * L.pitch + d) = __floats2bfloat162_rn(v.x, v.y);
  }

  const int ht = warp % 4, half = warp / 4;
  const int ksteps = latent / 16, kmid = (ksteps + 1) / 2;
  const int kbeg = half ? kmid : 0, kend = half ? ksteps : kmid;
  const int dn = kvr / 2, npairs = dn / 16;  // this warp's output dims [half*dn, half*dn + dn)
  const int mi = lane / 8;                   // which 8x8 matrix this lane addresses in ldmatrix.x4
  float o[kMaxNTiles][4];
#pragma unroll
  for (int n = 0; n < kMaxNTiles; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m0 = -INFINITY, m1 = -INFINITY, l0 = 0.0f, l1 = 0.0f;  // rows g and g+8 of the warp's tile
  const float sl = p.softmax_scale * kLog2e;
  const uint32_t q_addr = SmemAddr(sq + (ht * 16 + (mi % 2) * 8 + lane % 8) * L.pitch + (mi / 2) * 8);

  for (int tile = 0; tile < ntiles; ++tile) {
    CpAsyncWait<kStages - 2>();
    __syncthreads();  // tile's stage landed for all; the stage refilled below is free; sx is free
    {
      const int next = tile + kStages - 1;
      if (next < ntiles) load_tile(next, next % kStages);
      CpAsyncCommit();
    }
    const uint32_t k_addr = SmemAddr(sk + static_cast<size_t>(tile % kStages) * kTokens * L.pitch);
    // Scores over this warp's half of the latent: s[n] is tokens n*8.. of the tile.
    float s[4][4];
#pragma unroll
    for (int n = 0; n < 4; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
    const uint32_t kb_addr = k_addr + ((((mi / 2) * 8 + lane % 8) * L.pitch) + (mi % 2) * 8) * 2;
#pragma unroll
    for (int ks = kbeg; ks < kend; ++ks) {
      uint32_t a0, a1, a2, a3;
      Ldsm4(q_addr + ks * 32, a0, a1, a2, a3);
#pragma unroll
      for (int np = 0; np < 2; ++np) {
        uint32_t b0, b1, b2, b3;
        Ldsm4(kb_addr + (np * 16 * L.pitch) * 2 + ks * 32, b0, b1, b2, b3);
        Mma(s[np * 2], a0, a1, a2, a3, b0, b1);
        Mma(s[np * 2 + 1], a0, a1, a2, a3, b2, b3);
      }
    }
    // Swap halves with the partner warp (w ^ 4): both then hold the same full scores.
#pragma unroll
    for (int i = 0; i < 16; ++i) sx[(warp * 16 + i) * 32 + lane] = s[i / 4][i % 4];
    // Only the pair meets here (named barrier 1 + w % 4 over its 64 threads); the block-wide
    // barrier at the top of the next tile keeps sx from being rewritten before the partner read it.
    asm volatile("bar.sync %0, 64;\n" ::"r"(1 + ht));
#pragma unroll
    for (int i = 0; i < 16; ++i) s[i / 4][i % 4] += sx[((warp ^ 4) * 16 + i) * 32 + lane];

    // Online softmax in base 2; past-the-end tokens get -inf (the tile has at least one valid).
    const int t0 = start + tile * kTokens;
    float mx0 = m0, mx1 = m1;
#pragma unroll
    for (int n = 0; n < 4; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int j = t0 + n * 8 + 2 * (lane % 4) + (i & 1);
        const float v = j < end ? s[n][i] * sl : -INFINITY;
        s[n][i] = v;
        if (i < 2) mx0 = fmaxf(mx0, v); else mx1 = fmaxf(mx1, v);
      }
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
    mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
    mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
    const float al0 = exp2f(m0 - mx0), al1 = exp2f(m1 - mx1);
    m0 = mx0;
    m1 = mx1;
    float rs0 = 0.0f, rs1 = 0.0f;
#pragma unroll
    for (int n = 0; n < 4; ++n)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float e = exp2f(s[n][i] - (i < 2 ? mx0 : mx1));
        s[n][i] = e;
        if (i < 2) rs0 += e; else rs1 += e;
      }
    l0 = l0 * al0 + rs0;
    l1 = l1 * al1 + rs1;
    // Rescale only when some row's running max moved (it settles early in a long context).
    if (__any_sync(0xffffffffu, al0 != 1.0f || al1 != 1.0f)) {
#pragma unroll
      for (int n = 0; n < kMaxNTiles; ++n) {
        if (n < 2 * npairs) {
          o[n][0] *= al0, o[n][1] *= al0, o[n][2] *= al1, o[n][3] *= al1;
        }
      }
    }
    // o += P · V over the tile's 32 tokens (two k-steps of 16), this warp's output dims.
#pragma unroll
    for (int kk = 0; kk < 2; ++kk) {
      const uint32_t a0 = PackBf16(s[2 * kk][0], s[2 * kk][1]), a1 = PackBf16(s[2 * kk][2], s[2 * kk][3]);
      const uint32_t a2 = PackBf16(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      const uint32_t a3 = PackBf16(s[2 * kk + 1][2], s[2 * kk + 1][3]);
      const uint32_t v_addr =
          k_addr + ((kk * 16 + (mi % 2) * 8 + lane % 8) * L.pitch + half * dn + (mi / 2) * 8) * 2;
#pragma unroll
      for (int np = 0; np < kMaxNTiles / 2; ++np) {
        if (np < npairs) {
          uint32_t b0, b1, b2, b3;
          Ldsm4T(v_addr + np * 32, b0, b1, b2, b3);
          Mma(o[2 * np], a0, a1, a2, a3, b0, b1);
          Mma(o[2 * np + 1], a0, a1, a2, a3, b2, b3);
        }
      }
    }
  }
  CpAsyncWait<0>();

  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  const float inv0 = 1.0f / l0, inv1 = 1.0f / l1;
  const int g = lane / 4, tq = lane % 4;
  const int64_t ha = h0 + ht * 16 + g, hb = ha + 8;
  float* out = p.o_lat;
  int64_t base_a = (row * p.heads + ha) * kvr, base_b = (row * p.heads + hb) * kvr;
  if (splits > 1) {
    out = part_o;
    base_a = ((split * p.rows + row) * p.heads + ha) * kvr;
    base_b = ((split * p.rows + row) * p.heads + hb) * kvr;
    if (half == 0 && tq == 0) {
      if (ha < p.heads) part_lse[(split * p.rows + row) * p.heads + ha] = m0 + log2f(l0);
      if (hb < p.heads) part_lse[(split * p.rows + row) * p.heads + hb] = m1 + log2f(l1);
    }
  }
#pragma unroll
  for (int n = 0; n < kMaxNTiles; ++n) {
    if (n < 2 * npairs) {
      const int d = half * dn + n * 8 + 2 * tq;
      if (ha < p.heads) *reinterpret_cast<float2*>(out + base_a + d) = make_float2(o[n][0] * inv0, o[n][1] * inv0);
      if (hb < p.heads) *reinterpret_cast<float2*>(out + base_b + d) = make_float2(o[n][2] * inv1, o[n][3] * inv1);
    }
  }
}

// Merges the split partials of one (row, head): weights 2^(lse_s - max) over the slices.
__global__ void __launch_bounds__(128) MlaCombineKernel(MlaDecodeParams p, int splits, const float* part_lse,
                                                        const float* part_o) {
  const int64_t rh = blockIdx.x, n = p.rows * p.heads, kvr = p.kv_lora_rank;
  __shared__ float w[kMaxSplits];
  if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    const float v0 = lane < splits ? part_lse[lane * n + rh] : -INFINITY;
    const float v1 = lane + 32 < splits ? part_lse[(lane + 32) * n + rh] : -INFINITY;
    float mx = fmaxf(v0, v1);
    for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    const float e0 = v0 == -INFINITY ? 0.0f : exp2f(v0 - mx), e1 = v1 == -INFINITY ? 0.0f : exp2f(v1 - mx);
    float sum = e0 + e1;
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    w[lane] = e0 / sum;
    w[lane + 32] = e1 / sum;
  }
  __syncthreads();
  for (int64_t d = threadIdx.x * 4; d < kvr; d += blockDim.x * 4) {
    float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int s = 0; s < splits; ++s) {
      const float ws = w[s];
      if (ws == 0.0f) continue;
      const float4 v = *reinterpret_cast<const float4*>(part_o + (s * n + rh) * kvr + d);
      acc.x += ws * v.x, acc.y += ws * v.y, acc.z += ws * v.z, acc.w += ws * v.w;
    }
    *reinterpret_cast<float4*>(p.o_lat + rh * kvr + d) = acc;
  }
}

// Per-device facts, queried once: attribute queries and cudaFuncSetAttribute cost tens of µs of
// host time per call, which an eager (not graph-replayed) decode step would pay every layer.
struct DeviceInfo {
  int sms = 0, optin = 0, cc = 0;  // cc: compute capability, major * 10 + minor
  bool smem_set[2] = {false, false};  // MaxDynamicSharedMemorySize raised, per kernel instance
  struct Raised {
    const void* kernel = nullptr;
    size_t bytes = 0;
  } raised[4];  // MlaRaiseSmemLimit's kernels
};
constexpr int kMaxDevices = 64;
std::mutex g_info_mu;
DeviceInfo g_info[kMaxDevices];

DeviceInfo& Info() {
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= kMaxDevices) dev = 0;
  DeviceInfo& d = g_info[dev];
  if (d.sms == 0) {
    int sms = 0, optin = 0, major = 0, minor = 0;
    if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) sms = 132;
    if (cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) != cudaSuccess) optin = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) major = 0;
    if (cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev) != cudaSuccess) minor = 0;
    d.optin = optin;
    d.cc = major * 10 + minor;
    d.sms = sms;
  }
  return d;
}

int DeviceSms() {
  std::lock_guard<std::mutex> lock(g_info_mu);
  return Info().sms;
}

int64_t LseFloats(int64_t splits, const MlaDecodeParams& p) { return (splits * p.rows * p.heads + 3) / 4 * 4; }

size_t NeedBytes(int64_t splits, const MlaDecodeParams& p) {
  return static_cast<size_t>(LseFloats(splits, p) + splits * p.rows * p.heads * p.kv_lora_rank) * 4;
}

// Picks the split count with the least modelled time: waves of one-block-per-SM work, each block
// moving its cache slice, its q (64 heads of float32) and, when split, its partial out and back.
// Slices hold >= 256 table tokens: shorter ones were faster at batch 1 but split the golden
// models' short tables too, where the rounding of a split row against its unsplit prefill
// showed (bench/README.md, "Small batches").
constexpr int64_t kMinSliceTokens = 256;
int PlanSplits(const MlaDecodeParams& p, int64_t hgroups, int sms) {
  const int64_t base = p.rows * hgroups, capacity = p.max_blocks * p.block_size;
  const int64_t latent = p.kv_lora_rank + p.rope_dim;
  const int64_t smax = std::min<int64_t>(kMaxSplits, std::max<int64_t>(1, capacity / kMinSliceTokens));
  int best = 1;
  double best_cost = 1e300;
  for (int64_t s = 1; s <= smax; ++s) {
    if (s > 1 && (base * s > int64_t{kCtasPerSmForSplits} * sms || !p.workspace || NeedBytes(s, p) > p.workspace_bytes))
      break;
    const int64_t waves = (base * s + sms - 1) / sms;
    const double per_block = static_cast<double>(capacity) / s * latent * 2 + kHeadsPerBlock * latent * 4.0 +
                             (s > 1 ? kHeadsPerBlock * p.kv_lora_rank * 8.0 : 0.0);
    const double cost = waves * per_block;
    if (cost < best_cost * 0.97) best_cost = cost, best = static_cast<int>(s);
  }
  return best;
}

}  // namespace

size_t MlaDecodeWorkspaceBytes(int64_t heads, int64_t kv_lora_rank) {
  const int64_t slots = int64_t{kCtasPerSmForSplits} * DeviceSms() * std::min<int64_t>(heads, kHeadsPerBlock);
  return static_cast<size_t>(slots * (kv_lora_rank + 1) + 4) * 4;
}

namespace internal {

MlaSplitPlan PlanMlaSplits(const MlaDecodeParams& p) {
  MlaSplitPlan plan;
  const int64_t hgroups = (p.heads + kHeadsPerBlock - 1) / kHeadsPerBlock;
  plan.splits = PlanSplits(p, hgroups, DeviceSms());
  if (plan.splits > 1) {
    plan.part_lse = p.workspace;
    plan.part_o = p.workspace + LseFloats(plan.splits, p);
  }
  return plan;
}

void LaunchMlaCombine(const MlaDecodeParams& p, const MlaSplitPlan& plan, cudaStream_t stream) {
  if (plan.splits <= 1) return;
  MlaCombineKernel<<<static_cast<unsigned>(p.rows * p.heads), 128, 0, stream>>>(p, plan.splits, plan.part_lse,
                                                                              plan.part_o);
}

int MlaDeviceCc() {
  std::lock_guard<std::mutex> lock(g_info_mu);
  return Info().cc;
}

int MlaSmemOptin() {
  std::lock_guard<std::mutex> lock(g_info_mu);
  return Info().optin;
}

absl::Status MlaRaiseSmemLimit(const void* kernel, size_t bytes) {
  std::lock_guard<std::mutex> lock(g_info_mu);
  DeviceInfo& d = Info();
  for (const DeviceInfo::Raised& r : d.raised) {
    if (r.kernel == kernel && r.bytes >= bytes) return absl::OkStatus();
  }
  const cudaError_t err =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  if (err != cudaSuccess) {
    return absl::InternalError(absl::StrCat("mla decode: smem attribute (", bytes, " bytes): ", cudaGetErrorString(err)));
  }
  for (DeviceInfo::Raised& r : d.raised) {
    if (r.kernel == nullptr || r.kernel == kernel) {
      r = {kernel, bytes};
      break;
    }
  }
  return absl::OkStatus();
}

bool MlaDecodeTcSupported(const MlaDecodeParams& p) {
  const int64_t latent = p.kv_lora_rank + p.rope_dim;
  if (p.kv_lora_rank % 32 != 0 || p.kv_lora_rank > kMaxKvr || p.rope_dim % 16 != 0) return false;
  if (p.block_stride % 8 != 0 || reinterpret_cast<uintptr_t>(p.cache) % 16 != 0) return false;
  if (reinterpret_cast<uintptr_t>(p.q_lat) % 8 != 0 || reinterpret_cast<uintptr_t>(p.q_pe) % 8 != 0 ||
      reinterpret_cast<uintptr_t>(p.o_lat) % 16 != 0) {
    return false;
  }
  int optin = 0;
  {
    std::lock_guard<std::mutex> lock(g_info_mu);
    optin = Info().optin;
  }
  return Layout(static_cast<int>(latent)).total <= static_cast<size_t>(optin);
}

absl::Status MlaDecodeTc(const MlaDecodeParams& p, cudaStream_t stream) {
  const int64_t latent = p.kv_lora_rank + p.rope_dim;
  const int64_t hgroups = (p.heads + kHeadsPerBlock - 1) / kHeadsPerBlock;
  const MlaSplitPlan plan = PlanMlaSplits(p);
  const int splits = plan.splits;
  const int64_t blocks = p.rows * hgroups * splits;
  if (blocks > 0x7fffffff) return absl::InvalidArgumentError(absl::StrCat("mla decode: ", blocks, " blocks"));
  const size_t smem = Layout(static_cast<int>(latent)).total;
  const bool r1_dims = p.kv_lora_rank == 512 && p.rope_dim == 64;
  auto* kernel = r1_dims ? MlaDecodeTcKernel<512, 64> : MlaDecodeTcKernel<0, 0>;
  cudaError_t err = cudaSuccess;
  {
    // Raised once per device to the largest layout the kernel can use (kMaxKvr + 64 rope).
    std::lock_guard<std::mutex> lock(g_info_mu);
    DeviceInfo& d = Info();
    const size_t most = std::min<size_t>(Layout(kMaxKvr + 64).total, static_cast<size_t>(d.optin));
    if (!d.smem_set[r1_dims] || smem > most) {
      err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 static_cast<int>(std::max(smem, most)));
      d.smem_set[r1_dims] = err == cudaSuccess && smem <= most;
    }
  }
  if (err != cudaSuccess) return absl::InternalError(absl::StrCat("mla decode: smem attribute: ", cudaGetErrorString(err)));
  kernel<<<static_cast<unsigned>(blocks), kThreads, smem, stream>>>(p, splits, static_cast<int>(hgroups),
                                                                   plan.part_lse, plan.part_o);
  LaunchMlaCombine(p, plan, stream);
  err = cudaGetLastError();
  if (err != cudaSuccess) return absl::InternalError(absl::StrCat("mla decode: launch failed: ", cudaGetErrorString(err)));
  return absl::OkStatus();
}

}  // namespace internal
}  // namespace r1::cuda

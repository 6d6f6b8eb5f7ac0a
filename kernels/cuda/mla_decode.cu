// MLA decode, absorbed form. kExact (here): one block of 4 warps per (row, head). Each warp walks a quarter of the
// context with an online softmax, holding its share of the latent dimensions in registers
// (lane d, d+32, …), then the warps merge their (max, sum, output) in shared memory. Correct first:
// this is the reference GPU path. The tensor-core kernels (mla_decode_tc.cu: mma.sync,
// mla_decode_wgmma.cu: wgmma) are the fast ones behind the same Params; MlaDecode dispatches.
// Test: tests/cuda/kernels_test.cc (MlaDecode*).
#include <cfloat>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/mla_decode.h"

namespace r1::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kMaxLatent = 1024;
constexpr int kPerLane = kMaxLatent / 32;

__global__ void __launch_bounds__(kWarps * 32) MlaDecodeKernel(MlaDecodeParams p) {
  const int64_t row = blockIdx.x, head = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t kvr = p.kv_lora_rank, latent = p.kv_lora_rank + p.rope_dim;
  const float* ql = p.q_lat + (row * p.heads + head) * kvr;
  const float* qp = p.q_pe + (row * p.heads + head) * p.rope_dim;
  float q[kPerLane], o[kPerLane];
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int64_t d = lane + 32 * i;
    q[i] = d < kvr ? ql[d] : (d < latent ? qp[d - kvr] : 0.0f);
    o[i] = 0.0f;
  }
  float m = -FLT_MAX, l = 0.0f;
  const int32_t ctx = p.context_lens[row];
  const int32_t* table = p.block_tables + row * p.max_blocks;
  for (int32_t j = warp; j < ctx; j += kWarps) {
    const __nv_bfloat16* c = p.cache + table[j / p.block_size] * p.block_stride + (j % p.block_size) * latent;
    float cv[kPerLane];
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int64_t d = lane + 32 * i;
      cv[i] = d < latent ? __bfloat162float(c[d]) : 0.0f;
      s += q[i] * cv[i];
    }
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    s *= p.softmax_scale;
    const float m_new = fmaxf(m, s);
    const float alpha = __expf(m - m_new), pj = __expf(s - m_new);
    l = l * alpha + pj;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) o[i] = o[i] * alpha + pj * cv[i];
    m = m_new;
  }
  // Merge the warps: rescale each to the global max and sum.
  __shared__ float sm[kWarps], sl[kWarps];
  __shared__ float so[kWarps][kMaxLatent];
  if (lane == 0) {
    sm[warp] = m;
    sl[warp] = l;
  }
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int64_t d = lane + 32 * i;
    if (d < kvr) so[warp][d] = o[i];
  }
  __syncthreads();
  float gm = -FLT_MAX;
  for (int w = 0; w < kWarps; ++w) gm = fmaxf(gm, sm[w]);
  float gl = 0.0f, wscale[kWarps];
  for (int w = 0; w < kWarps; ++w) {
    wscale[w] = sl[w] > 0.0f ? __expf(sm[w] - gm) : 0.0f;
    gl += sl[w] * wscale[w];
  }
  float* out = p.o_lat + (row * p.heads + head) * kvr;
  for (int64_t d = threadIdx.x; d < kvr; d += blockDim.x) {
    float acc = 0.0f;
    for (int w = 0; w < kWarps; ++w) acc += so[w][d] * wscale[w];
    out[d] = acc / gl;
  }
}

}  // namespace

absl::Status MlaDecode(const MlaDecodeParams& p, cudaStream_t stream) {
  if (!p.q_lat || !p.q_pe || !p.cache || !p.block_tables || !p.context_lens || !p.o_lat) {
    return absl::InvalidArgumentError("mla decode: null pointer");
  }
  const int64_t latent = p.kv_lora_rank + p.rope_dim;
  if (p.kv_lora_rank <= 0 || p.rope_dim < 0 || latent > kMaxLatent) {
    return absl::InvalidArgumentError(absl::StrCat("mla decode: latent ", p.kv_lora_rank, " + ", p.rope_dim,
                                                   " outside (0, ", kMaxLatent, "]"));
  }
  if (p.rows < 0 || p.heads <= 0 || p.block_size <= 0 || p.max_blocks <= 0 ||
      p.block_stride < p.block_size * latent) {
    return absl::InvalidArgumentError(absl::StrCat("mla decode: bad shape rows=", p.rows, " heads=", p.heads,
                                                   " block_size=", p.block_size, " max_blocks=", p.max_blocks,
                                                   " block_stride=", p.block_stride));
  }
  if (p.rows > 0x7fffffff || p.heads > 65535) return absl::InvalidArgumentError("mla decode: grid too large");
  if (p.rows == 0) return absl::OkStatus();
  using Algo = MlaDecodeParams::Algo;
  if (p.algo != Algo::kExact) {
    if (p.algo != Algo::kMmaSync && internal::MlaDecodeWgmmaSupported(p)) return internal::MlaDecodeWgmma(p, stream);
    if (internal::MlaDecodeTcSupported(p)) return internal::MlaDecodeTc(p, stream);
  }
  MlaDecodeKernel<<<dim3(static_cast<unsigned>(p.rows), static_cast<unsigned>(p.heads)), kWarps * 32, 0, stream>>>(p);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return absl::InternalError(absl::StrCat("mla decode: launch failed: ", cudaGetErrorString(err)));
  return absl::OkStatus();
}

}  // namespace r1::cuda

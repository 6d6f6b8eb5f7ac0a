// The glue ops of the GPU model path: RMSNorm from the float32 residual stream, residual adds,
// latent cache writes, the MLA absorption products, a float32 router product, and the gather /
// weighted scatter of MoE token permutation. Ops that move activations take bf16 or float32 ones
// (the GPU model's serving and reference-precision paths); the latent cache is bf16 in both.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace r1::cuda {

// out [rows, dim] bf16 = rmsnorm(x [rows, dim] float32) * weight; out_f32, when given, gets the
// same values in float32 (the router reads those, so near-tied experts are chosen as the
// float32 reference chooses them). Either output may be null, not both.
absl::Status RmsNormF32(const float* x, const float* weight, __nv_bfloat16* out, int64_t rows, int64_t dim,
                        float eps, cudaStream_t stream, float* out_f32 = nullptr);
// The residual add fused with the norm that follows it: x [rows, dim] += delta (bf16 or float32,
// exactly as AddBf16 / AddF32 with scale 1 add it), then as RmsNormF32 on the new x.
absl::Status AddRmsNormF32(float* x, const __nv_bfloat16* delta, const float* weight, __nv_bfloat16* out,
                           int64_t rows, int64_t dim, float eps, cudaStream_t stream, float* out_f32 = nullptr);
absl::Status AddRmsNormF32(float* x, const float* delta, const float* weight, __nv_bfloat16* out, int64_t rows,
                           int64_t dim, float eps, cudaStream_t stream, float* out_f32 = nullptr);

// x [n] float32 += scale * delta [n] bf16 (AddBf16) or float32 (AddF32).
absl::Status AddBf16(float* x, const __nv_bfloat16* delta, int64_t n, float scale, cudaStream_t stream);
absl::Status AddF32(float* x, const float* delta, int64_t n, float scale, cudaStream_t stream);

// Writes latent rows [rows, latent] into the paged cache of one layer at each row's position:
// cache + block_tables[row * max_blocks + pos / block_size] * block_stride + (pos % block_size) * latent.
template <typename T>
struct ScatterLatentParamsT {
  const T* latent = nullptr;              // [rows, latent] (float32 latents are rounded to bf16)
  __nv_bfloat16* cache = nullptr;
  const int32_t* block_tables = nullptr;  // [rows, max_blocks]
  const int64_t* positions = nullptr;     // [rows]
  int64_t rows = 0, latent_dim = 0, block_size = 0, max_blocks = 0, block_stride = 0;
};
using ScatterLatentParams = ScatterLatentParamsT<__nv_bfloat16>;
absl::Status ScatterLatent(const ScatterLatentParamsT<__nv_bfloat16>& p, cudaStream_t stream);
absl::Status ScatterLatent(const ScatterLatentParamsT<float>& p, cudaStream_t stream);

// q_lat[t, h, c] = sum_d q[t, h, d] * w_uk[h, d, c] for d < nope, and q_pe[t, h, :] = q[t, h, nope:]
// (q rows of qk_dim = nope + rope per head, bf16 or float32; w_uk float32 [heads, nope, kvr]).
// With w_uk null only q_pe is written (q_lat then comes from a tensor-core product, which reads
// q_f32: the kernel writes that copy too when given, saving a cast launch).
template <typename T>
struct AbsorbQueryParamsT {
  const T* q = nullptr;              // [rows, heads, nope + rope]
  const float* w_uk = nullptr;       // [heads, nope, kvr]
  float* q_lat = nullptr;            // [rows, heads, kvr]
  float* q_pe = nullptr;             // [rows, heads, rope]
  int64_t rows = 0, heads = 0, nope = 0, rope = 0, kvr = 0;
  float* q_f32 = nullptr;            // optional [rows, heads, nope + rope]: q widened to float32
};
using AbsorbQueryParams = AbsorbQueryParamsT<__nv_bfloat16>;
absl::Status AbsorbQuery(const AbsorbQueryParamsT<__nv_bfloat16>& p, cudaStream_t stream);
absl::Status AbsorbQuery(const AbsorbQueryParamsT<float>& p, cudaStream_t stream);

// out[i] = bf16(x[i]) / float(x[i]) for i < n.
absl::Status CastToBf16(const float* x, __nv_bfloat16* out, int64_t n, cudaStream_t stream);
absl::Status CastToF32(const __nv_bfloat16* x, float* out, int64_t n, cudaStream_t stream);

// out[t, h * v + i] = sum_c w_uv[h, i, c] * o_lat[t, h, c]   (bf16 or float32 out, float32 math)
template <typename T>
struct ApplyValueParamsT {
  const float* o_lat = nullptr;  // [rows, heads, kvr]
  const float* w_uv = nullptr;   // [heads, v, kvr]
  T* out = nullptr;              // [rows, heads * v]
  int64_t rows = 0, heads = 0, v = 0, kvr = 0;
};
using ApplyValueParams = ApplyValueParamsT<__nv_bfloat16>;
absl::Status ApplyValue(const ApplyValueParamsT<__nv_bfloat16>& p, cudaStream_t stream);
absl::Status ApplyValue(const ApplyValueParamsT<float>& p, cudaStream_t stream);

// y [rows, n] float32 = x [rows, k] float32 · w [n, k] float32^T (the router, in float32 like the reference).
absl::Status LinearF32(const float* x, const float* w, float* y, int64_t rows, int64_t n, int64_t k,
                       cudaStream_t stream);

// out [count, dim] = x [index[i], :]
absl::Status GatherRows(const __nv_bfloat16* x, const int32_t* index, __nv_bfloat16* out, int64_t count,
                        int64_t dim, cudaStream_t stream);
absl::Status GatherRows(const float* x, const int32_t* index, float* out, int64_t count, int64_t dim,
                        cudaStream_t stream);

// x [index[i], :] += weight[i] * y [i, :]  (float32 x; rows of one expert hit distinct tokens)
absl::Status ScatterAddWeighted(const __nv_bfloat16* y, const int32_t* index, const float* weight, float* x,
                                int64_t count, int64_t dim, cudaStream_t stream);

}  // namespace r1::cuda

// Glue ops of the GPU model path; simple one-thread-per-output or block-per-row kernels, written
// for correctness first (tests/cuda/gpu_model_test.cc checks the whole model against golden data).
// Activation-moving kernels are templates over the element type (act_type.cuh): bf16 or float32.
#include "absl/strings/str_cat.h"
#include "kernels/cuda/act_type.cuh"
#include "kernels/cuda/model_ops.h"

namespace r1::cuda {
namespace {

absl::Status Launched(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": launch failed: ", cudaGetErrorString(err)));
}
unsigned Blocks(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

constexpr int kThreads = 256;

__device__ float BlockSum(float v) {
  __shared__ float part[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = v;
  __syncthreads();
  float s = 0.0f;
  for (int i = 0; i < kThreads / 32; ++i) s += part[i];
  __syncthreads();
  return s;
}

__global__ void RmsNormF32Kernel(const float* x, const float* w, __nv_bfloat16* out, float* out_f32, int64_t dim,
                                 float eps) {
  const float* xr = x + blockIdx.x * dim;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) ss += xr[i] * xr[i];
  const float inv = rsqrtf(BlockSum(ss) / static_cast<float>(dim) + eps);
  for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
    const float v = xr[i] * inv * w[i];
    if (out != nullptr) out[blockIdx.x * dim + i] = __float2bfloat16(v);
    if (out_f32 != nullptr) out_f32[blockIdx.x * dim + i] = v;
  }
}

template <typename T>
__global__ void AddKernel(float* x, const T* d, int64_t n, float scale) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] += scale * ToFloat(d[i]);
}

template <typename T>
__global__ void ScatterLatentKernel(ScatterLatentParamsT<T> p) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.rows * p.latent_dim) return;
  const int64_t r = i / p.latent_dim, c = i % p.latent_dim, pos = p.positions[r];
  const int64_t block = p.block_tables[r * p.max_blocks + pos / p.block_size];
  p.cache[block * p.block_stride + (pos % p.block_size) * p.latent_dim + c] = __float2bfloat16(ToFloat(p.latent[i]));
}

template <typename T>
__global__ void AbsorbQueryKernel(AbsorbQueryParamsT<T> p) {
  const int64_t t = blockIdx.x, h = blockIdx.y, qk = p.nope + p.rope;
  const T* q = p.q + (t * p.heads + h) * qk;
  const float* w = p.w_uk + h * p.nope * p.kvr;
  for (int64_t c = threadIdx.x; p.w_uk != nullptr && c < p.kvr; c += blockDim.x) {
    float acc = 0.0f;
    for (int64_t d = 0; d < p.nope; ++d) acc += ToFloat(q[d]) * w[d * p.kvr + c];
    p.q_lat[(t * p.heads + h) * p.kvr + c] = acc;
  }
  for (int64_t d = threadIdx.x; d < p.rope; d += blockDim.x) {
    p.q_pe[(t * p.heads + h) * p.rope + d] = ToFloat(q[p.nope + d]);
  }
}

// One warp per output value: a dot product of kvr values.
template <typename T>
__global__ void ApplyValueKernel(ApplyValueParamsT<T> p) {
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= p.rows * p.heads * p.v) return;
  const int64_t t = warp / (p.heads * p.v), h = (warp / p.v) % p.heads, i = warp % p.v;
  const float* o = p.o_lat + (t * p.heads + h) * p.kvr;
  const float* w = p.w_uv + (h * p.v + i) * p.kvr;
  float acc = 0.0f;
  for (int64_t c = lane; c < p.kvr; c += 32) acc += o[c] * w[c];
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if (lane == 0) p.out[t * p.heads * p.v + h * p.v + i] = FromFloat<T>(acc);
}

__global__ void LinearF32Kernel(const float* x, const float* w, float* y, int64_t rows, int64_t n, int64_t k) {
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= rows * n) return;
  const int64_t r = warp / n, j = warp % n;
  float acc = 0.0f;
  for (int64_t c = lane; c < k; c += 32) acc += x[r * k + c] * w[j * k + c];
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if (lane == 0) y[warp] = acc;
}

__global__ void CastToBf16Kernel(const float* x, __nv_bfloat16* out, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __float2bfloat16(x[i]);
}

__global__ void CastToF32Kernel(const __nv_bfloat16* x, float* out, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __bfloat162float(x[i]);
}

template <typename T>
__global__ void GatherRowsKernel(const T* x, const int32_t* index, T* out, int64_t count, int64_t dim) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < count * dim) out[i] = x[static_cast<int64_t>(index[i / dim]) * dim + i % dim];
}

__global__ void ScatterAddWeightedKernel(const __nv_bfloat16* y, const int32_t* index, const float* weight, float* x,
                                         int64_t count, int64_t dim) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= count * dim) return;
  const int64_t r = i / dim;
  x[static_cast<int64_t>(index[r]) * dim + i % dim] += weight[r] * __bfloat162float(y[i]);
}

template <typename T>
absl::Status LaunchAdd(float* x, const T* delta, int64_t n, float scale, cudaStream_t stream) {
  if (!x || !delta || n < 0) return absl::InvalidArgumentError("add to the residual: bad arguments");
  if (n == 0) return absl::OkStatus();
  AddKernel<T><<<Blocks(n, kThreads), kThreads, 0, stream>>>(x, delta, n, scale);
  return Launched("add to the residual");
}

template <typename T>
absl::Status LaunchScatterLatent(const ScatterLatentParamsT<T>& p, cudaStream_t stream) {
  if (!p.latent || !p.cache || !p.block_tables || !p.positions || p.latent_dim <= 0 || p.block_size <= 0 ||
      p.max_blocks <= 0 || p.block_stride < p.block_size * p.latent_dim) {
    return absl::InvalidArgumentError("scatter latent: bad arguments");
  }
  if (p.rows == 0) return absl::OkStatus();
  ScatterLatentKernel<T><<<Blocks(p.rows * p.latent_dim, kThreads), kThreads, 0, stream>>>(p);
  return Launched("scatter latent");
}

template <typename T>
absl::Status LaunchAbsorbQuery(const AbsorbQueryParamsT<T>& p, cudaStream_t stream) {
  if (!p.q || (p.w_uk && !p.q_lat) || !p.q_pe || p.heads <= 0 || p.nope <= 0 || p.kvr <= 0 || p.heads > 65535) {
    return absl::InvalidArgumentError("absorb query: bad arguments");
  }
  if (p.rows == 0) return absl::OkStatus();
  AbsorbQueryKernel<T><<<dim3(static_cast<unsigned>(p.rows), static_cast<unsigned>(p.heads)), 128, 0, stream>>>(p);
  return Launched("absorb query");
}

template <typename T>
absl::Status LaunchApplyValue(const ApplyValueParamsT<T>& p, cudaStream_t stream) {
  if (!p.o_lat || !p.w_uv || !p.out || p.heads <= 0 || p.v <= 0 || p.kvr <= 0) {
    return absl::InvalidArgumentError("apply value: bad arguments");
  }
  if (p.rows == 0) return absl::OkStatus();
  ApplyValueKernel<T><<<Blocks(p.rows * p.heads * p.v * 32, kThreads), kThreads, 0, stream>>>(p);
  return Launched("apply value");
}

template <typename T>
absl::Status LaunchGatherRows(const T* x, const int32_t* index, T* out, int64_t count, int64_t dim,
                              cudaStream_t stream) {
  if (!x || !index || !out || count < 0 || dim <= 0) return absl::InvalidArgumentError("gather rows: bad arguments");
  if (count == 0) return absl::OkStatus();
  GatherRowsKernel<T><<<Blocks(count * dim, kThreads), kThreads, 0, stream>>>(x, index, out, count, dim);
  return Launched("gather rows");
}

}  // namespace

absl::Status RmsNormF32(const float* x, const float* weight, __nv_bfloat16* out, int64_t rows, int64_t dim, float eps,
                        cudaStream_t stream, float* out_f32) {
  if (!x || !weight || (!out && !out_f32) || rows < 0 || dim <= 0) {
    return absl::InvalidArgumentError("rmsnorm f32: bad arguments");
  }
  if (rows == 0) return absl::OkStatus();
  RmsNormF32Kernel<<<static_cast<unsigned>(rows), kThreads, 0, stream>>>(x, weight, out, out_f32, dim, eps);
  return Launched("rmsnorm f32");
}

absl::Status AddBf16(float* x, const __nv_bfloat16* delta, int64_t n, float scale, cudaStream_t stream) {
  return LaunchAdd(x, delta, n, scale, stream);
}
absl::Status AddF32(float* x, const float* delta, int64_t n, float scale, cudaStream_t stream) {
  return LaunchAdd(x, delta, n, scale, stream);
}

absl::Status ScatterLatent(const ScatterLatentParamsT<__nv_bfloat16>& p, cudaStream_t stream) {
  return LaunchScatterLatent(p, stream);
}
absl::Status ScatterLatent(const ScatterLatentParamsT<float>& p, cudaStream_t stream) {
  return LaunchScatterLatent(p, stream);
}

absl::Status AbsorbQuery(const AbsorbQueryParamsT<__nv_bfloat16>& p, cudaStream_t stream) {
  return LaunchAbsorbQuery(p, stream);
}
absl::Status AbsorbQuery(const AbsorbQueryParamsT<float>& p, cudaStream_t stream) { return LaunchAbsorbQuery(p, stream); }

absl::Status CastToBf16(const float* x, __nv_bfloat16* out, int64_t n, cudaStream_t stream) {
  if (!x || !out || n < 0) return absl::InvalidArgumentError("cast to bf16: bad arguments");
  if (n == 0) return absl::OkStatus();
  CastToBf16Kernel<<<Blocks(n, kThreads), kThreads, 0, stream>>>(x, out, n);
  return Launched("cast to bf16");
}

absl::Status CastToF32(const __nv_bfloat16* x, float* out, int64_t n, cudaStream_t stream) {
  if (!x || !out || n < 0) return absl::InvalidArgumentError("cast to f32: bad arguments");
  if (n == 0) return absl::OkStatus();
  CastToF32Kernel<<<Blocks(n, kThreads), kThreads, 0, stream>>>(x, out, n);
  return Launched("cast to f32");
}

absl::Status ApplyValue(const ApplyValueParamsT<__nv_bfloat16>& p, cudaStream_t stream) {
  return LaunchApplyValue(p, stream);
}
absl::Status ApplyValue(const ApplyValueParamsT<float>& p, cudaStream_t stream) { return LaunchApplyValue(p, stream); }

absl::Status LinearF32(const float* x, const float* w, float* y, int64_t rows, int64_t n, int64_t k,
                       cudaStream_t stream) {
  if (!x || !w || !y || n <= 0 || k <= 0 || rows < 0) return absl::InvalidArgumentError("linear f32: bad arguments");
  if (rows == 0) return absl::OkStatus();
  LinearF32Kernel<<<Blocks(rows * n * 32, kThreads), kThreads, 0, stream>>>(x, w, y, rows, n, k);
  return Launched("linear f32");
}

absl::Status GatherRows(const __nv_bfloat16* x, const int32_t* index, __nv_bfloat16* out, int64_t count, int64_t dim,
                        cudaStream_t stream) {
  return LaunchGatherRows(x, index, out, count, dim, stream);
}
absl::Status GatherRows(const float* x, const int32_t* index, float* out, int64_t count, int64_t dim,
                        cudaStream_t stream) {
  return LaunchGatherRows(x, index, out, count, dim, stream);
}

absl::Status ScatterAddWeighted(const __nv_bfloat16* y, const int32_t* index, const float* weight, float* x,
                                int64_t count, int64_t dim, cudaStream_t stream) {
  if (!y || !index || !weight || !x || count < 0 || dim <= 0) {
    return absl::InvalidArgumentError("scatter add: bad arguments");
  }
  if (count == 0) return absl::OkStatus();
  ScatterAddWeightedKernel<<<Blocks(count * dim, kThreads), kThreads, 0, stream>>>(y, index, weight, x, count, dim);
  return Launched("scatter add");
}

}  // namespace r1::cuda

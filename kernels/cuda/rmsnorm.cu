// RMSNorm, bf16 (or float32) in and out, float32 statistics.
// One block per row: each thread sums squares over a strided slice of the row in float32, a
// warp-shuffle then shared-memory reduction gives the row's mean square, and the same threads
// write the normalised values. Memory-bound: one read and one write of the row. Aligned bf16
// rows of up to 8192 values load in 16-byte chunks kept in registers (RmsNormVecKernel).
// Test: tests/cuda/kernels_test.cc (compares with kernels/cpu on random rows of awkward sizes).
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/act_type.cuh"
#include "kernels/cuda/rmsnorm.h"

namespace r1::cuda {
namespace {

constexpr int kThreads = 256;

__device__ float RowSum(float sum) {
  for (int offset = 16; offset > 0; offset >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  __shared__ float warp_sums[kThreads / 32];
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = sum;
  __syncthreads();
  if (threadIdx.x < 32) {
    float s = threadIdx.x < kThreads / 32 ? warp_sums[threadIdx.x] : 0.0f;
    for (int offset = 16; offset > 0; offset >>= 1) s += __shfl_xor_sync(0xffffffffu, s, offset);
    if (threadIdx.x == 0) warp_sums[0] = s;
  }
  __syncthreads();
  return warp_sums[0];
}

template <typename T>
__global__ void RmsNormKernel(RmsNormParamsT<T> p) {
  const int64_t row = blockIdx.x;
  const T* x = p.x + row * p.x_stride;
  T* out = p.out + row * p.out_stride;
  float sum = 0.0f;
  for (int64_t i = threadIdx.x; i < p.dim; i += blockDim.x) {
    const float v = ToFloat(x[i]);
    sum += v * v;
  }
  const float inv = rsqrtf(RowSum(sum) / static_cast<float>(p.dim) + p.eps);
  for (int64_t i = threadIdx.x; i < p.dim; i += blockDim.x) {
    out[i] = FromFloat<T>(ToFloat(x[i]) * inv * p.weight[i]);
  }
}

// bf16 rows of whole aligned 8-value chunks (16 bytes), at most kVecChunks per thread: the row is
// loaded once into registers with every load in flight at once (at one decode row the kernel's
// time is its load latency), then normalised from the registers. The same arithmetic as above.
constexpr int kVecChunks = 4;
__global__ void RmsNormVecKernel(RmsNormParamsT<__nv_bfloat16> p) {
  const int64_t row = blockIdx.x;
  const uint4* x = reinterpret_cast<const uint4*>(p.x + row * p.x_stride);
  uint4* out = reinterpret_cast<uint4*>(p.out + row * p.out_stride);
  const int chunks = static_cast<int>(p.dim / 8);
  uint4 raw[kVecChunks];
#pragma unroll
  for (int j = 0; j < kVecChunks; ++j) {
    const int c = threadIdx.x + j * kThreads;
    if (c < chunks) raw[j] = x[c];
  }
  float sum = 0.0f;
#pragma unroll
  for (int j = 0; j < kVecChunks; ++j) {
    if (static_cast<int>(threadIdx.x) + j * kThreads >= chunks) break;
    const __nv_bfloat16* v = reinterpret_cast<const __nv_bfloat16*>(&raw[j]);
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const float f = __bfloat162float(v[e]);
      sum += f * f;
    }
  }
  const float inv = rsqrtf(RowSum(sum) / static_cast<float>(p.dim) + p.eps);
#pragma unroll
  for (int j = 0; j < kVecChunks; ++j) {
    const int c = threadIdx.x + j * kThreads;
    if (c >= chunks) break;
    const float4 w0 = reinterpret_cast<const float4*>(p.weight)[2 * c];
    const float4 w1 = reinterpret_cast<const float4*>(p.weight)[2 * c + 1];
    const float w[8] = {w0.x, w0.y, w0.z, w0.w, w1.x, w1.y, w1.z, w1.w};
    const __nv_bfloat16* v = reinterpret_cast<const __nv_bfloat16*>(&raw[j]);
    uint4 o;
    __nv_bfloat16* ob = reinterpret_cast<__nv_bfloat16*>(&o);
#pragma unroll
    for (int e = 0; e < 8; ++e) ob[e] = __float2bfloat16(__bfloat162float(v[e]) * inv * w[e]);
    out[c] = o;
  }
}

template <typename T>
absl::Status LaunchRmsNorm(const RmsNormParamsT<T>& p, cudaStream_t stream) {
  if (p.x == nullptr || p.weight == nullptr || p.out == nullptr) {
    return absl::InvalidArgumentError("rmsnorm: null pointer");
  }
  if (p.rows < 0 || p.dim <= 0 || p.x_stride < p.dim || p.out_stride < p.dim) {
    return absl::InvalidArgumentError(absl::StrCat("rmsnorm: bad shape rows=", p.rows, " dim=", p.dim,
                                                   " x_stride=", p.x_stride, " out_stride=", p.out_stride));
  }
  if (p.rows > 0x7fffffff) return absl::InvalidArgumentError("rmsnorm: more than 2^31-1 rows");
  if (p.rows == 0) return absl::OkStatus();
  bool vec = false;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    auto aligned = [](const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; };
    vec = p.dim % 8 == 0 && p.dim <= int64_t{8} * kVecChunks * kThreads && p.x_stride % 8 == 0 &&
          p.out_stride % 8 == 0 && aligned(p.x) && aligned(p.out) && aligned(p.weight);
  }
  if (vec) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>) {
      RmsNormVecKernel<<<static_cast<unsigned>(p.rows), kThreads, 0, stream>>>(p);
    }
  } else {
    RmsNormKernel<T><<<static_cast<unsigned>(p.rows), kThreads, 0, stream>>>(p);
  }
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return absl::InternalError(absl::StrCat("rmsnorm: launch failed: ", cudaGetErrorString(err)));
  return absl::OkStatus();
}

}  // namespace

absl::Status RmsNorm(const RmsNormParamsT<__nv_bfloat16>& p, cudaStream_t stream) { return LaunchRmsNorm(p, stream); }
absl::Status RmsNorm(const RmsNormParamsT<float>& p, cudaStream_t stream) { return LaunchRmsNorm(p, stream); }

}  // namespace r1::cuda

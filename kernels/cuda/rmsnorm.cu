// RMSNorm, bf16 (or float32) in and out, float32 statistics.
// One block per row: each thread sums squares over a strided slice of the row in float32, a
// warp-shuffle then shared-memory reduction gives the row's mean square, and the same threads
// write the normalised values. Memory-bound: one read and one write of the row.
// Test: tests/cuda/kernels_test.cc (compares with kernels/cpu on random rows of awkward sizes).
#include "absl/strings/str_cat.h"
#include "kernels/cuda/act_type.cuh"
#include "kernels/cuda/rmsnorm.h"

namespace r1::cuda {
namespace {

constexpr int kThreads = 256;

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
  const float inv = rsqrtf(warp_sums[0] / static_cast<float>(p.dim) + p.eps);
  for (int64_t i = threadIdx.x; i < p.dim; i += blockDim.x) {
    out[i] = FromFloat<T>(ToFloat(x[i]) * inv * p.weight[i]);
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
  RmsNormKernel<T><<<static_cast<unsigned>(p.rows), kThreads, 0, stream>>>(p);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return absl::InternalError(absl::StrCat("rmsnorm: launch failed: ", cudaGetErrorString(err)));
  return absl::OkStatus();
}

}  // namespace

absl::Status RmsNorm(const RmsNormParamsT<__nv_bfloat16>& p, cudaStream_t stream) { return LaunchRmsNorm(p, stream); }
absl::Status RmsNorm(const RmsNormParamsT<float>& p, cudaStream_t stream) { return LaunchRmsNorm(p, stream); }

}  // namespace r1::cuda

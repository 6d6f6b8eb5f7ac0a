// RMSNorm on the GPU: out[r, :] = x[r, :] * rsqrt(mean(x[r, :]^2) + eps) * weight.
// The host launcher checks shapes and alignment and says which check failed.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace r1::cuda {

template <typename T>
struct RmsNormParamsT {
  const T* x = nullptr;              // [rows, dim] activations (bf16 or float32), row stride x_stride
  const float* weight = nullptr;     // [dim] float32 norm weight
  T* out = nullptr;                  // [rows, dim], row stride out_stride elements
  int64_t rows = 0;
  int64_t dim = 0;
  int64_t x_stride = 0;
  int64_t out_stride = 0;
  float eps = 1e-6f;
};
using RmsNormParams = RmsNormParamsT<__nv_bfloat16>;

absl::Status RmsNorm(const RmsNormParamsT<__nv_bfloat16>& p, cudaStream_t stream);
absl::Status RmsNorm(const RmsNormParamsT<float>& p, cudaStream_t stream);

}  // namespace r1::cuda

// RMSNorm on the GPU: out[r, :] = x[r, :] * rsqrt(mean(x[r, :]^2) + eps) * weight.
// The host launcher checks shapes and alignment and says which check failed.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace r1::cuda {

struct RmsNormParams {
  const __nv_bfloat16* x = nullptr;  // [rows, dim] bf16 activations, row stride x_stride elements
  const float* weight = nullptr;     // [dim] float32 norm weight
  __nv_bfloat16* out = nullptr;      // [rows, dim] bf16, row stride out_stride elements
  int64_t rows = 0;
  int64_t dim = 0;
  int64_t x_stride = 0;
  int64_t out_stride = 0;
  float eps = 1e-6f;
};

absl::Status RmsNorm(const RmsNormParams& p, cudaStream_t stream);

}  // namespace r1::cuda

// Products whose activations are not quantised, for the GPU model's bf16 and float32 activation
// modes (worker/model/gpu_model.h, GpuActivations). The weight stays as stored in device memory
// (FP8 e4m3 with 128x128 weight_scale_inv blocks, or bf16) and is dequantised on the way:
//   DequantLinearF32: y [m, n] float32 = x [m, k] float32 · dequant(W)^T, dequantised per tile in
//     shared memory (float32 FMAs on the CUDA cores; the reference-precision path, not a fast one).
//   DequantizeFp8ToBf16: W → bf16 [n, k] in a scratch buffer, which the cuBLASLt bf16 GEMM
//     (GemmRunner::Bf16) then multiplies (the bf16-activation path).
// Test: tests/cuda/kernels2_test.cc (DequantLinear*, DequantizeFp8*).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace r1::cuda {

struct DequantLinearParams {
  const float* x = nullptr;               // [m, k] row-major
  const __nv_fp8_e4m3* w = nullptr;       // [n, w_stride] e4m3 codes, with
  const float* scales = nullptr;          //   [ceil(n/128), scale_stride] block scales; or
  const __nv_bfloat16* w_bf16 = nullptr;  // [n, w_stride] bf16 (w and scales null)
  float* y = nullptr;                     // [m, n] row-major
  int64_t m = 0, n = 0, k = 0;
  int64_t w_stride = 0;      // elements per weight row (>= k)
  int64_t scale_stride = 0;  // scales per block row (>= ceil(k/128)); FP8 only
};
absl::Status DequantLinearF32(const DequantLinearParams& p, cudaStream_t stream);

struct DequantizeParams {
  const __nv_fp8_e4m3* w = nullptr;  // [n, w_stride] codes
  const float* scales = nullptr;     // [ceil(n/128), scale_stride]
  __nv_bfloat16* out = nullptr;      // [n, k] (the padding columns beyond k are dropped)
  int64_t n = 0, k = 0, w_stride = 0, scale_stride = 0;
};
absl::Status DequantizeFp8ToBf16(const DequantizeParams& p, cudaStream_t stream);

}  // namespace r1::cuda

// Expert products without a host round trip: every routed expert's rows in one launch.
// x holds the tokens permuted by expert (MoePermute's order: expert e's rows are
// [offsets[e], offsets[e+1])); each expert's FP8 weight is dequantised on the fly with its
// 128x128 block scales. Suited to decode, where each expert sees a handful of tokens and the
// cost is reading the expert weights once; graph-capturable (the row counts stay on the device).
// DenseGemv is the same kernel for one dense weight and a few rows: the decode path of the
// model's linear layers.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace r1::cuda {

// Activations (x, y) are bf16, or float32 for the GPU model's reference-precision path (float32
// products and sums throughout; the bf16 form rounds only its output to bf16).
template <typename T>
struct GroupedFp8GemvParamsT {
  const T* x = nullptr;              // [rows, k] permuted activations (rows = offsets[experts])
  const int32_t* offsets = nullptr;  // [experts + 1] device
  const __nv_fp8_e4m3* w = nullptr;  // [experts, n, w_stride] e4m3 codes, experts back to back
  const float* scales = nullptr;     // [experts, ceil(n/128), scale_stride] block scales
  const __nv_bfloat16* w_bf16 =
      nullptr;     // instead of w + scales: unquantised [experts, n, w_stride]
  T* y = nullptr;  // [rows, n]
  int64_t experts = 0, n = 0, k = 0;
  int64_t w_stride = 0;      // codes per weight row (>= k)
  int64_t scale_stride = 0;  // scales per block row (>= ceil(k/128))
};
using GroupedFp8GemvParams = GroupedFp8GemvParamsT<__nv_bfloat16>;
absl::Status GroupedFp8Gemv(const GroupedFp8GemvParamsT<__nv_bfloat16>& p, cudaStream_t stream);
absl::Status GroupedFp8Gemv(const GroupedFp8GemvParamsT<float>& p, cudaStream_t stream);

// y [m, n] bf16 = x [m, k] · dequant(W)^T for a few rows, float32 sums. x is bf16, or FP8 codes
// with per-token 1x128 group scales exactly as QuantizeFp8PerToken128 writes them; then y is the
// function cuBLASLt's block-scaled FP8 GEMM (GemmRunner::Fp8) computes, to float32 rounding. The
// weight is FP8 with block scales (code x scale, in float32 or rounded to bf16) or bf16. Every
// row's sums run in an order fixed by (n, k) alone, so a row's result does not depend on m or on
// the other rows (the grouped form: by (n, k, experts)). The weight is read once per pass over up
// to 8 rows (fewer for narrow layers); for more rows cuBLASLt is the better tool.
struct DenseGemvParams {
  const __nv_bfloat16* x = nullptr;    // [m, x_stride] bf16 activations; or
  const __nv_fp8_e4m3* x_q = nullptr;  //   [m, x_stride] e4m3 codes with
  const float* x_scales = nullptr;     //   [ceil(k/128), x_scale_rows] token-minor group scales
  int64_t x_stride = 0;                // elements per activation row (>= k; 0: k)
  int64_t x_scale_rows = 0;  // rows of the scale grid (>= m; the quantiser's Fp8PaddedRows(m))
  const __nv_fp8_e4m3* w = nullptr;       // [n, w_stride] e4m3 codes with
  const float* scales = nullptr;          //   [ceil(n/128), scale_stride] block scales; or
  const __nv_bfloat16* w_bf16 = nullptr;  // [n, w_stride] bf16
  // FP8 weight, bf16 x: round each dequantised weight to bf16 first, as DequantizeFp8ToBf16 does
  // for the bf16 GEMM (then y is that GEMM's function, to float32 rounding).
  bool w_round_bf16 = false;
  __nv_bfloat16* y = nullptr;  // [m, n]
  int64_t m = 0, n = 0, k = 0;
  int64_t w_stride = 0;      // elements per weight row (>= k)
  int64_t scale_stride = 0;  // scales per block row (>= ceil(k/128)); FP8 weights only
};
absl::Status DenseGemv(const DenseGemvParams& p, cudaStream_t stream);

// out[t, :] += sum_j weights[t, j] * y[slot[t, j], :] for slot >= 0, j in a fixed order (so the
// result does not depend on thread timing), then += shared[t, :] when given. y bf16 (or
// float32), out float32 (the residual stream).
template <typename T>
struct MoeCombineParamsT {
  const T* y = nullptr;            // [entries, dim] expert outputs in permuted order
  const int32_t* slot = nullptr;   // [tokens, top_k] entry of each choice (-1: not on this rank)
  const float* weights = nullptr;  // [tokens, top_k] routing weights
  float* out = nullptr;            // [tokens, dim]
  int64_t tokens = 0, top_k = 0, dim = 0;
  // [tokens, dim] (the shared expert's output), added after the routed sum, as a second residual
  // add would add it: out = (out + routed) + shared. Or null.
  const T* shared = nullptr;
};
using MoeCombineParams = MoeCombineParamsT<__nv_bfloat16>;
absl::Status MoeCombine(const MoeCombineParamsT<__nv_bfloat16>& p, cudaStream_t stream);
absl::Status MoeCombine(const MoeCombineParamsT<float>& p, cudaStream_t stream);

}  // namespace r1::cuda

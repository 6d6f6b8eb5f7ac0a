// FP8 × FP8 GEMM with DeepSeek's block scales, through cuBLASLt (CUDA ≥ 12.9 on Hopper):
//   y[m, n] = sum_k (xq[m, k] * xs[m, k/128]) * (w[n, k] * ws[n/128, k/128])
// x: activations quantised per token in 1×128 groups (QuantizeFp8PerToken128); w: the checkpoint's
// e4m3 weight [n, k] with its weight_scale_inv [ceil(n/128), ceil(k/128)], exactly as published.
// Output bf16 [m, n], row-major. Also a plain BF16 GEMM y = x · w^T for the unquantised weights.
#pragma once

#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"

namespace r1::cuda {

// cuBLASLt's block-scaled FP8 path on Hopper refuses token counts that are not a multiple of 16
// (measured: 1, 3 and 63 are refused, 200 runs). Activation, scale and output buffers are therefore
// sized for Fp8PaddedRows(m) rows; the quantiser fills the padding rows with zeros (scale 1), so
// their outputs are zero and are ignored.
inline int64_t Fp8PaddedRows(int64_t m) { return (m + 15) / 16 * 16; }
// Weights and activations are stored with k padded by zero columns to whole 128-blocks, so every
// scale block covers a full block of codes (a precaution for the small test models; DeepSeek's
// real dimensions are all multiples of 128 and need no padding).
inline int64_t Fp8PaddedK(int64_t k) { return (k + 127) / 128 * 128; }
// The weight-scale grid's row stride: ceil(k/128) rounded up to a multiple of 4 (16 bytes).
// Measured: with a stride of 1 or 3 (n = 192, k = 384 or 48; n = 384, k = 96) cuBLASLt reads the
// wrong scales; strides that are multiples of 4 (all of R1's: 4, 12, 16, 56, 128, 144) are right.
inline int64_t Fp8ScaleStride(int64_t k) { return ((k + 127) / 128 + 3) / 4 * 4; }

struct Fp8GemmParams {
  const __nv_fp8_e4m3* x = nullptr;  // [Fp8PaddedRows(m), k] row-major activations
  const float* x_scales = nullptr;   // [ceil(k/128), Fp8PaddedRows(m)]: token-minor group scales
  const __nv_fp8_e4m3* w = nullptr;  // [n, k] row-major weight (k already padded, see Fp8PaddedK)
  const float* w_scales = nullptr;   // [ceil(n/128), Fp8ScaleStride(k)] row-major: weight_scale_inv,
                                     // each row padded to the stride
  __nv_bfloat16* y = nullptr;        // [Fp8PaddedRows(m), n] row-major output
  int64_t m = 0, n = 0, k = 0;
  // The token-minor scale layout (m contiguous for each 128-column group) is what cuBLASLt's
  // VEC128 mode reads for the B operand (the activations are B in the column-major product);
  // measured: the token-major layout gives wrong results.
};

struct Bf16GemmParams {
  const __nv_bfloat16* x = nullptr;  // [m, k]
  const __nv_bfloat16* w = nullptr;  // [n, k]
  __nv_bfloat16* y = nullptr;        // [m, n]
  int64_t m = 0, n = 0, k = 0;
  float* y_f32 = nullptr;            // instead of y: a float32 output [m, n] (logits)
};

// A batch of products, row-major, float32 accumulation: for b < batch,
//   y_b[m, n] = x_b[m, k] · w_b^T   (w_b stored [n, k]; w_kn = false), or x_b · w_b (w_b [k, n]).
// Each operand is given by its first matrix, its row stride (ld*, elements) and the distance
// between consecutive matrices of the batch (stride_*): so per-head slices of [rows, heads, dim]
// tensors are read in place (x = base + head offset, ldx = heads * dim, stride_x = dim).
// kBf16: x, w bf16; y bf16 or float32 (y_f32). kTf32: x, w, y float32, the tensor cores' TF32
// (inputs rounded to 10 mantissa bits, float32 accumulation).
struct BatchedGemmParams {
  enum class Type { kBf16, kTf32 };
  Type type = Type::kBf16;
  const void* x = nullptr;
  int64_t ldx = 0, stride_x = 0;
  const void* w = nullptr;
  int64_t ldw = 0, stride_w = 0;
  bool w_kn = false;
  void* y = nullptr;
  bool y_f32 = false;  // kBf16 only; kTf32 always writes float32
  int64_t ldy = 0, stride_y = 0;
  int64_t m = 0, n = 0, k = 0, batch = 0;
};

// Owns the cuBLASLt handle and workspace; one per stream.
class GemmRunner {
 public:
  static absl::StatusOr<std::unique_ptr<GemmRunner>> Create(size_t workspace_bytes = 32u << 20);
  ~GemmRunner();
  absl::Status Fp8(const Fp8GemmParams& p, cudaStream_t stream);
  absl::Status Bf16(const Bf16GemmParams& p, cudaStream_t stream);
  absl::Status Batched(const BatchedGemmParams& p, cudaStream_t stream);

 private:
  GemmRunner() = default;
  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
};

// x bf16 [m, k] → xq e4m3 [Fp8PaddedRows(m), q_stride] and scales [ceil(k/128), Fp8PaddedRows(m)]
// (token-minor, as Fp8GemmParams wants); padding rows and columns get code 0, padding rows scale 1.
struct QuantizeParams {
  const __nv_bfloat16* x = nullptr;
  __nv_fp8_e4m3* q = nullptr;
  float* scales = nullptr;
  int64_t m = 0, k = 0;
  int64_t q_stride = 0;  // columns of q; 0 means k. Columns [k, q_stride) are written as zeros.
};
absl::Status QuantizeFp8PerToken128(const QuantizeParams& p, cudaStream_t stream);

}  // namespace r1::cuda

// One to four rows of FP8 activations times one FP8 weight at the speed of the weight stream: the
// decode path of the model's linear layers in the FP8 activation mode (batch-1..4 steps), where
// the whole cost is reading the weight once.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "kernels/cuda/grouped_gemv.h"

namespace r1::cuda {

// The most rows RowGemvFp8 takes in one launch.
inline constexpr int64_t kRowGemvMaxRows = 4;

// y [m, n] bf16 = x [m, k] · dequant(W)^T for m = 1..kRowGemvMaxRows, with x as FP8 codes and
// per-token 1x128 group scales (p.x_q, p.x_scales, p.x_scale_rows, exactly as
// QuantizeFp8PerToken128 writes them) and W as FP8 codes with 128x128 block scales (p.w, p.scales).
// The function is cuBLASLt's block-scaled FP8 GEMM (GemmRunner::Fp8) to float32 rounding: per
// 128-wide k group the code products are summed (tensor cores, float32), then scaled by the
// token's and the block's scale and added in k order. A row's result depends on (n, k) and the
// device's SM count only, never on m or on the other rows. Takes the DenseGemvParams fields above
// (p.x, p.w_bf16 and p.w_round_bf16 must be unset); requires 16-byte aligned x_q and w with
// x_stride and w_stride multiples of 16 (the model's padded storage; bytes past k may hold
// anything). RowGemvFp8Supports says whether a call is in that set.
bool RowGemvFp8Supports(const DenseGemvParams& p);
absl::Status RowGemvFp8(const DenseGemvParams& p, cudaStream_t stream);

}  // namespace r1::cuda

// Grouped tensor-core GEMM over the routed experts: every expert's rows in one launch, for
// batches where the experts see many rows each (large decode batches, prefill). Same inputs as
// GroupedFp8Gemv (grouped_gemv.h): x holds the rows permuted by expert (MoePermute's order),
// each expert's FP8 weight is dequantised on the fly with its 128x128 block scales, and the row
// counts stay on the device (graph-capturable, no host round trip). Where GroupedFp8Gemv reads
// an expert's weights once per row, this kernel reads them once per tile of up to 128 rows.
// bf16 activations (the float32 reference mode keeps the GEMV), or FP8 activations quantised
// per row in 1×128 groups multiplied on the FP8 tensor cores (x_q below).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace r1::cuda {

struct GroupedFp8GemmParams {
  const __nv_bfloat16* x = nullptr;  // [rows, k] permuted activations (rows = offsets[experts])
  const int32_t* offsets = nullptr;  // [experts + 1] device: expert e has rows offsets[e]..[e+1]
  const __nv_fp8_e4m3* w = nullptr;  // [experts, n, w_stride] e4m3 codes, experts back to back
  const float* scales = nullptr;     // [experts, ceil(n/128), scale_stride] block scales
  // FP8 × FP8 instead of x (needs w + scales): the rows quantised in 1×128 groups
  // (QuantizeRowsFp8Group128), e4m3 codes [rows, x_stride] and positive float scales
  // [rows, x_scale_stride]; row r's group kb holds x[r, 128 kb .. 128 kb + 127] / x_scales[r, kb].
  // The product is then sum over kb of x_scales[r, kb] · scales[nb, kb] · (codes · codes), the
  // code products summed exactly by the tensor cores' e4m3 MMA, the rest in float32.
  const __nv_fp8_e4m3* x_q = nullptr;
  const float* x_scales = nullptr;
  int64_t x_stride = 0, x_scale_stride = 0;
  // Instead of w + scales: unquantised weights [experts, n, w_stride].
  const __nv_bfloat16* w_bf16 = nullptr;
  __nv_bfloat16* y = nullptr;  // [rows, n]
  int64_t experts = 0, n = 0, k = 0;
  int64_t w_stride = 0;      // elements per weight row (>= k)
  int64_t scale_stride = 0;  // scales per block row (>= ceil(k/128))
  // Host-side upper bound of offsets[experts] (tokens × top_k): sizes the launch, which covers
  // every tile the device-side row counts can produce. Rows past it are not computed.
  int64_t max_rows = 0;
  // Rows per tile: 16, 32, 64 or 128; 0 picks from the average rows per expert.
  int tile_rows = 0;
  // k per pipeline stage: 64 or 128; 0 picks from the tile rows.
  int tile_k = 0;
  // FP8 × FP8: run the mma.sync kernel even where the wgmma one applies (comparisons, and the
  // fallback's tests).
  bool mma_sync = false;
};

// Requirements (InvalidArgument otherwise, so that a caller can fall back to the GEMV): k a
// multiple of 8, n even, w_stride a multiple of 16 (FP8) or 8 (bf16), x and the weights 16-byte
// aligned, y 4-byte aligned, experts <= 8192. With x_q: FP8 weights, k and x_stride multiples of
// 16, x_q 16-byte aligned, x_scale_stride >= ceil(k/128); tile_k is not used (always 128).
// x_q must hold max_rows rows (the wgmma kernel copies whole tiles of rows, up to max_rows; the
// rows past offsets[experts] are read but never change y). Where n is a multiple of 8 and y is
// 16-byte aligned the product runs on wgmma (FP8 tensor-core rate), else on mma.sync.
absl::Status GroupedFp8Gemm(const GroupedFp8GemmParams& p, cudaStream_t stream);

// Quantises bf16 rows [rows, k] (row stride k) for the FP8 × FP8 path, per row in 1×128 groups:
// scale = max(amax, 1e-10) / 448, codes = e4m3(x / scale) (saturating, round to nearest even).
// q: [rows, q_stride] (q_stride >= k, a multiple of 16; columns [k, q_stride) get code 0);
// scales: [rows, scale_stride] (scale_stride >= ceil(k/128)). k a multiple of 4, x 8-byte aligned,
// q 4-byte aligned. Graph-capturable.
struct QuantizeRowsParams {
  const __nv_bfloat16* x = nullptr;
  __nv_fp8_e4m3* q = nullptr;
  float* scales = nullptr;
  int64_t rows = 0, k = 0, q_stride = 0, scale_stride = 0;
};
absl::Status QuantizeRowsFp8Group128(const QuantizeRowsParams& p, cudaStream_t stream);

// The tile height GroupedFp8Gemm uses when tile_rows is 0, and the tile k when tile_k is 0.
int GroupedFp8GemmTileRows(int64_t max_rows, int64_t experts);
int GroupedFp8GemmTileK(int tile_rows);

}  // namespace r1::cuda

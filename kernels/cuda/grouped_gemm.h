// Grouped tensor-core GEMM over the routed experts: every expert's rows in one launch, for
// batches where the experts see many rows each (large decode batches, prefill). Same inputs as
// GroupedFp8Gemv (grouped_gemv.h): x holds the rows permuted by expert (MoePermute's order),
// each expert's FP8 weight is dequantised on the fly with its 128x128 block scales, and the row
// counts stay on the device (graph-capturable, no host round trip). Where GroupedFp8Gemv reads
// an expert's weights once per row, this kernel reads them once per tile of up to 128 rows.
// bf16 activations only (the float32 reference mode keeps the GEMV).
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
};

// Requirements (InvalidArgument otherwise, so that a caller can fall back to the GEMV): k a
// multiple of 8, n even, w_stride a multiple of 16 (FP8) or 8 (bf16), x and the weights 16-byte
// aligned, y 4-byte aligned, experts <= 8192.
absl::Status GroupedFp8Gemm(const GroupedFp8GemmParams& p, cudaStream_t stream);

// The tile height GroupedFp8Gemm uses when tile_rows is 0, and the tile k when tile_k is 0.
int GroupedFp8GemmTileRows(int64_t max_rows, int64_t experts);
int GroupedFp8GemmTileK(int tile_rows);

}  // namespace r1::cuda

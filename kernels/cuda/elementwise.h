// Small memory-bound ops of the forward pass on the GPU: rotary embedding, SwiGLU, embedding
// gather and greedy argmax. Each launcher checks its arguments and names the bad one.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace r1::cuda {

// The activation-moving ops come in two element types: bf16 (the serving path) and float32 (the
// reference-precision path of the GPU model); the math is float32 in both.
template <typename T>
struct RopeParamsT {
  T* x = nullptr;                    // rows of `dim` values, `stride` elements apart, rotated in place
  int64_t rows = 0;
  int64_t rows_per_position = 1;     // row r uses positions[r / rows_per_position] (heads of a token)
  int64_t dim = 0;                   // even
  int64_t stride = 0;
  const int64_t* positions = nullptr;  // device
  const float* inv_freq = nullptr;     // device, dim / 2 values (YaRN applied)
  float factor = 1.0f;                 // cos/sin scale (YaRN attention factor)
  bool interleave = true;              // pairs (2i, 2i+1), else (i, i + dim/2)
};
using RopeParams = RopeParamsT<__nv_bfloat16>;
absl::Status Rope(const RopeParamsT<__nv_bfloat16>& p, cudaStream_t stream);
absl::Status Rope(const RopeParamsT<float>& p, cudaStream_t stream);

// out[i] = silu(gate[i]) * up[i] for n values; gate and up are the two halves of one [rows, 2I]
// buffer or separate buffers alike.
template <typename T>
struct SwigluParamsT {
  const T* gate = nullptr;
  const T* up = nullptr;
  T* out = nullptr;
  int64_t rows = 0, cols = 0;
  int64_t gate_stride = 0, up_stride = 0, out_stride = 0;  // elements between rows
};
using SwigluParams = SwigluParamsT<__nv_bfloat16>;
absl::Status Swiglu(const SwigluParamsT<__nv_bfloat16>& p, cudaStream_t stream);
absl::Status Swiglu(const SwigluParamsT<float>& p, cudaStream_t stream);

// out[r, :] = table[ids[r] - first_id, :] for ids in [first_id, first_id + table_rows), else 0
// (vocabulary-parallel embedding: each rank fills its slice, an all-reduce sums them).
template <typename T>
struct EmbeddingParamsT {
  const __nv_bfloat16* table = nullptr;  // [table_rows, dim]
  const int32_t* ids = nullptr;          // device [rows]
  T* out = nullptr;                      // [rows, dim]
  int64_t rows = 0, dim = 0, table_rows = 0, first_id = 0;
};
using EmbeddingParams = EmbeddingParamsT<__nv_bfloat16>;
absl::Status Embedding(const EmbeddingParamsT<__nv_bfloat16>& p, cudaStream_t stream);
absl::Status Embedding(const EmbeddingParamsT<float>& p, cudaStream_t stream);

// ids[r] = argmax over cols of logits[r, :] (float32), lowest index on ties.
struct ArgmaxParams {
  const float* logits = nullptr;  // [rows, cols]
  int32_t* ids = nullptr;         // [rows]
  int64_t rows = 0, cols = 0;
};
absl::Status Argmax(const ArgmaxParams& p, cudaStream_t stream);

}  // namespace r1::cuda

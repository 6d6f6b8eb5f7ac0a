// MLA decode attention in the absorbed form over the paged latent cache (one layer).
// For query row t (one decode token of one sequence) and head h:
//   score_j = (q_lat[t,h,:] · c_j[:kv_lora] + q_pe[t,h,:] · c_j[kv_lora:]) * softmax_scale
//   o_lat[t,h,:] = sum_j softmax(score)_j * c_j[:kv_lora]
// over the positions j < context_lens[t], where c_j is the cached latent (kv_lora_rank + rope
// values, bf16). q_lat is q_nope already folded through the K half of kv_b_proj; the caller
// applies the V half to o_lat afterwards.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace r1::cuda {

struct MlaDecodeParams {
  const float* q_lat = nullptr;          // [rows, heads, kv_lora_rank]
  const float* q_pe = nullptr;           // [rows, heads, rope_dim] (rotated)
  const __nv_bfloat16* cache = nullptr;  // this layer: block b, slot s at cache + b*block_stride + s*latent_dim
  int64_t block_stride = 0;              // elements between consecutive blocks of this layer
  const int32_t* block_tables = nullptr; // [rows, max_blocks] block ids, row-major
  const int32_t* context_lens = nullptr; // [rows] positions visible to each row (>= 1)
  float* o_lat = nullptr;                // [rows, heads, kv_lora_rank]
  int64_t rows = 0, heads = 0;
  int64_t kv_lora_rank = 0, rope_dim = 0;  // latent_dim = kv_lora_rank + rope_dim <= 1024
  int64_t block_size = 0, max_blocks = 0;
  float softmax_scale = 1.0f;
  // kExact: float32 products on CUDA cores (the float32 model's path). kTensorCore: q and the
  // softmax weights rounded to bf16 for tensor-core MMA with float32 accumulation, 64 heads per
  // block reading each cached byte once, the context split over blocks when rows are few
  // (mla_decode_tc.cu). kTensorCore needs kv_lora_rank % 32 == 0, rope_dim % 16 == 0 and 16-byte
  // aligned cache rows; other shapes take kExact.
  enum class Algo { kExact, kTensorCore };
  Algo algo = Algo::kExact;
  // kTensorCore's split-context partials (MlaDecodeWorkspaceBytes); without it (or if too small)
  // the context is not split.
  float* workspace = nullptr;
  size_t workspace_bytes = 0;
};

absl::Status MlaDecode(const MlaDecodeParams& p, cudaStream_t stream);

// Workspace that lets kTensorCore split the context at any row count (depends on the device's
// multiprocessor count, heads and kv_lora_rank only).
size_t MlaDecodeWorkspaceBytes(int64_t heads, int64_t kv_lora_rank);

namespace internal {
// The tensor-core launcher (mla_decode_tc.cu); false when the shape is not supported.
bool MlaDecodeTcSupported(const MlaDecodeParams& p);
absl::Status MlaDecodeTc(const MlaDecodeParams& p, cudaStream_t stream);
}  // namespace internal

}  // namespace r1::cuda

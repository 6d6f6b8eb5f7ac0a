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
  // kExact: float32 products on CUDA cores (the float32 model's path). The tensor-core kernels
  // round q and the softmax weights to bf16 and accumulate in float32, 64 heads per block reading
  // each cached byte once, the context split over blocks when rows are few:
  //   kMmaSync: mma.sync (mla_decode_tc.cu); needs kv_lora_rank % 32 == 0, rope_dim % 16 == 0 and
  //     16-byte aligned cache rows.
  //   kWgmma: Hopper's warpgroup MMA (mla_decode_wgmma.cu, sm_90 only); needs R1's latent
  //     (kv_lora_rank 512, rope_dim 64), heads % 64 == 0, 16-byte aligned cache rows and q.
  //   kTensorCore: wgmma where it applies (2.1-3.4x faster than mma.sync at every batch 1-256 x
  //     context 1K-32K measured, bench/README.md), else mma.sync.
  // A shape a kernel cannot take falls back: kWgmma to kMmaSync, kMmaSync to kExact.
  enum class Algo { kExact, kTensorCore, kMmaSync, kWgmma };
  Algo algo = Algo::kExact;
  // The tensor-core kernels' split-context partials (MlaDecodeWorkspaceBytes); without it (or if
  // too small) the context is not split.
  float* workspace = nullptr;
  size_t workspace_bytes = 0;
};

absl::Status MlaDecode(const MlaDecodeParams& p, cudaStream_t stream);

// Workspace that lets the tensor-core kernels split the context at any row count (depends on the
// device's multiprocessor count, heads and kv_lora_rank only).
size_t MlaDecodeWorkspaceBytes(int64_t heads, int64_t kv_lora_rank);

namespace internal {
// The tensor-core launchers (mla_decode_tc.cu, mla_decode_wgmma.cu); *Supported is false when the
// shape, alignment or device does not suit the kernel.
bool MlaDecodeTcSupported(const MlaDecodeParams& p);
absl::Status MlaDecodeTc(const MlaDecodeParams& p, cudaStream_t stream);
bool MlaDecodeWgmmaSupported(const MlaDecodeParams& p);
absl::Status MlaDecodeWgmma(const MlaDecodeParams& p, cudaStream_t stream);
// Whether the wgmma kernel brings p's cache pages by bulk tensor copies (TMA) rather than cp.async.
bool MlaWgmmaBulkCopies(const MlaDecodeParams& p);

// Shared by the tensor-core kernels (defined in mla_decode_tc.cu). The split-context plan: each
// row's context is cut into `splits` slices whose normalised partials and log-sum-exps go to
// p.workspace and are merged into p.o_lat by LaunchMlaCombine.
struct MlaSplitPlan {
  int splits = 1;
  // [splits, rows, heads]: log2 of the slice's sum of 2^(score * scale * log2 e); -inf: empty.
  float* part_lse = nullptr;
  float* part_o = nullptr;  // [splits, rows, heads, kv_lora_rank] each slice's normalised output
};
MlaSplitPlan PlanMlaSplits(const MlaDecodeParams& p);
void LaunchMlaCombine(const MlaDecodeParams& p, const MlaSplitPlan& plan, cudaStream_t stream);
// Device facts, queried once per device: compute capability (major * 10 + minor) and the opt-in
// shared memory per block; MlaRaiseSmemLimit sets a kernel's dynamic shared-memory limit once.
int MlaDeviceCc();
int MlaSmemOptin();
absl::Status MlaRaiseSmemLimit(const void* kernel, size_t bytes);
}  // namespace internal

}  // namespace r1::cuda

// DeepseekV3ForCausalLM on one GPU: the same batch interface as the CPU reference
// (SequenceStep, block tables), FP8 weights kept FP8 in device memory and multiplied with
// cuBLASLt's block-scaled GEMM, bf16 activations, a float32 residual stream, the latent cache in
// bf16 on the device, MLA in the absorbed form for prefill and decode alike.
//
// Status: correctness path. Routing is decided on the host (one device→host copy per MoE layer),
// experts run one after another, temporaries are allocated per step and no CUDA graph is captured
// yet: the performance work replaces those pieces behind this interface.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/config.h"
#include "kernels/cuda/fp8_gemm.h"
#include "worker/model/deepseek_v3.h"

namespace r1 {

// Device memory owned by one object.
struct DeviceMemory {
  void* ptr = nullptr;
  size_t bytes = 0;
  DeviceMemory() = default;
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  DeviceMemory(DeviceMemory&& o) noexcept : ptr(o.ptr), bytes(o.bytes) { o.ptr = nullptr; o.bytes = 0; }
  DeviceMemory& operator=(DeviceMemory&& o) noexcept;
  ~DeviceMemory();
  static absl::StatusOr<DeviceMemory> Allocate(size_t bytes);
  template <typename T> T* as() const { return static_cast<T*>(ptr); }
};

// A linear layer's weight on the device: FP8 e4m3 + block scales, or bf16.
struct GpuLinear {
  int64_t n = 0, k = 0;  // [out, in]
  int64_t k_stored = 0;  // k, or Fp8PaddedK(k) for FP8 (zero columns appended)
  DeviceMemory w;        // [n, k_stored] e4m3 or [n, k] bf16
  DeviceMemory scales;   // [ceil(n/128), Fp8ScaleStride(k)] float32 (FP8 only)
  bool fp8 = false;
};

// The latent cache on the device: bf16 [layers][blocks][block_size][latent].
struct GpuKvCache {
  int64_t layers = 0, blocks = 0, block_size = 0, latent = 0;
  DeviceMemory data;
  int64_t layer_stride() const { return blocks * block_size * latent; }
  int64_t block_stride() const { return block_size * latent; }
  static absl::StatusOr<GpuKvCache> Create(const ModelConfig& c, int64_t blocks, int64_t block_size);
};

class GpuDeepseekV3Model {
 public:
  static absl::StatusOr<std::unique_ptr<GpuDeepseekV3Model>> Load(const std::string& model_dir);
  // As DeepseekV3Model::Forward: logits (float32, host) per sequence.
  absl::StatusOr<std::vector<std::vector<float>>> Forward(const std::vector<SequenceStep>& batch, GpuKvCache& cache);
  const ModelConfig& config() const { return config_; }
  size_t device_weight_bytes() const { return weight_bytes_; }

 private:
  struct Mlp { GpuLinear gate, up, down; };
  struct Layer {
    DeviceMemory input_norm, post_norm;  // float32 [H]
    GpuLinear q_a, q_b, q, kv_a, o;
    DeviceMemory q_a_norm, kv_a_norm;    // float32
    DeviceMemory w_uk, w_uv;             // float32 [NH, nope, kvr], [NH, v, kvr] (kv_b_proj halves)
    bool is_moe = false;
    Mlp mlp;
    DeviceMemory router;                 // float32 [E, H]
    std::vector<float> score_bias;       // host: routing is decided on the host for now
    std::vector<Mlp> experts;
    bool has_shared = false;
    Mlp shared;
  };
  GpuDeepseekV3Model() = default;
  absl::Status LoadWeights(const Checkpoint& ckpt);
  // y [Fp8PaddedRows(m), n] bf16 = x [m, k] bf16 · W^T
  absl::Status Linear(const __nv_bfloat16* x, int64_t m, const GpuLinear& w, __nv_bfloat16* y);
  // x [m, H] float32 += mlp(h [m, H] bf16)
  absl::Status RunMlp(const Mlp& w, const __nv_bfloat16* h, int64_t m, float* x);

  ModelConfig config_;
  std::unique_ptr<cuda::GemmRunner> gemm_;
  DeviceMemory inv_freq_;  // float32 [rope / 2]
  DeviceMemory embed_;     // bf16 [V, H]
  std::vector<Layer> layers_;
  DeviceMemory final_norm_;
  GpuLinear lm_head_;      // bf16 [V, H]
  size_t weight_bytes_ = 0;
  // Scratch for the activation quantiser, grown on demand.
  DeviceMemory quant_q_, quant_scales_;
};

}  // namespace r1

// DeepseekV3ForCausalLM on one GPU: the same batch interface as the CPU reference
// (SequenceStep, block tables), FP8 weights kept FP8 in device memory, a float32 residual stream,
// the latent cache in bf16 on the device, MLA in the absorbed form for prefill and decode alike.
//
// Activation numerics are an option (GpuActivations, docs/design.md "GPU" has the measurements):
// float32 activations with the weights dequantised per tile (the default: the only mode within
// the golden bound), bf16 activations with the FP8 weights dequantised per GEMM, or DeepSeek's
// own FP8 per-token activation quantisation through cuBLASLt's block-scaled GEMM (the fast path
// the benchmarks use). Logits are float32 in every mode.
//
// A step runs entirely on the device with no host round trip inside it: the router, the token
// permutation and the routed experts (one grouped launch over all experts) stay on the GPU, and
// all buffers come from a workspace sized at load for `max_step_tokens`. Decode-only steps (one
// new token per sequence) are captured once per (batch size, cache) as a CUDA graph and replayed.
// ForwardSample also samples the next tokens on the device (kernels/cuda/sampling.h).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cuda_fp8.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <tuple>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/config.h"
#include "kernels/cuda/absorb_fp8.h"
#include "kernels/cuda/fp8_gemm.h"
#include "kernels/cuda/sampling.h"
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
  int64_t scale_stride = 0;
  DeviceMemory w;        // [n, k_stored] e4m3 or [n, k] bf16
  DeviceMemory scales;   // [ceil(n/128), Fp8ScaleStride(k)] float32 (FP8 only)
  bool fp8 = false;
  int gemm = -1;         // its GpuGemm, -1 for lm_head
};

// The latent cache on the device: bf16 [layers][blocks][block_size][latent].
struct GpuKvCache {
  int64_t layers = 0, blocks = 0, block_size = 0, latent = 0;
  DeviceMemory data;
  int64_t layer_stride() const { return blocks * block_size * latent; }
  int64_t block_stride() const { return block_size * latent; }
  static absl::StatusOr<GpuKvCache> Create(const ModelConfig& c, int64_t blocks, int64_t block_size);
};

// How activations meet the weights in every linear layer (routed experts included). The weights
// stay as stored in device memory in all three; the residual stream, router input, attention
// scores and logits are float32 in all three.
enum class GpuActivations {
  // float32 activations; each FP8 (or bf16) weight tile is dequantised in shared memory and
  // multiplied in float32 (cuda::DequantLinearF32, CUDA cores). Within the golden bound on every
  // golden model: the reference-precision mode, and the default.
  kFloat32,
  // bf16 activations; FP8 weights dequantised into a per-GEMM bf16 scratch, then cuBLASLt's bf16
  // GEMM (tensor cores); one-row steps of narrow layers run DenseGemv on the FP8 weight instead
  // (each weight rounded to bf16 as the scratch holds it). Within the golden L2 bound; near-tied
  // router choices can flip.
  kBf16,
  // DeepSeek's inference numerics: bf16 activations quantised per token in 1x128 groups to FP8,
  // cuBLASLt's block-scaled FP8 GEMM (RowGemvFp8 on the same codes for one-row steps, DenseGemv
  // where that does not apply; see GpuModelOptions); routed experts FP8 x FP8 too (grouped GEMM, inputs quantised the same way;
  // fp8_routed_experts). The fast path (bench/), outside the golden bound on the tiny golden
  // models (see docs/design.md).
  kFp8,
};
// The dense linear layers, for GpuModelOptions::fp8_gemms (bit i = 1 << GpuGemm value).
enum GpuGemm : int {
  kGemmQA = 0,         // q_a_proj
  kGemmQB = 1,         // q_b_proj (or q_proj without q_lora_rank)
  kGemmKvA = 2,        // kv_a_proj_with_mqa
  kGemmO = 3,          // o_proj
  kGemmMlpGateUp = 4,  // dense MLP gate_proj and up_proj
  kGemmMlpDown = 5,    // dense MLP down_proj
  kGemmSharedGateUp = 6,
  kGemmSharedDown = 7,
  kGemmCount = 8,
};
constexpr uint32_t kAllFp8Gemms = (1u << kGemmCount) - 1;

// "f32", "bf16", "fp8".
absl::StatusOr<GpuActivations> ParseGpuActivations(absl::string_view name);
const char* GpuActivationsName(GpuActivations a);

struct GpuModelOptions {
  int64_t max_step_tokens = 2048;  // tokens of one Forward call (workspace size)
  bool cuda_graphs = true;         // capture and replay decode steps
  GpuActivations activations = GpuActivations::kFloat32;
  // kFp8 only: the layers that quantise their input (bits of GpuGemm); the others take the kBf16
  // path. All by default; single bits measure each layer's share of the error (bench_gpu_numerics).
  uint32_t fp8_gemms = kAllFp8Gemms;
  // kFp8 only: the routed experts' grouped GEMM (cuda::GroupedFp8Gemm) takes its input rows
  // quantised per row in 1×128 groups, e4m3 × e4m3 products (DeepSeek's scheme); false: the bf16
  // rows times the FP8 weights, as in kBf16.
  bool fp8_routed_experts = true;
  // kBf16 and kFp8: linear layers of at most gemv_max_rows rows (decode) and at most
  // gemv_max_cols output columns run the GEMV (cuda::DenseGemv: the same function as the GEMM
  // path, summed in another order) instead of cuBLASLt; gemv_max_rows = 0: cuBLASLt always.
  // Measured on an H100 (bench_gpu --only gemv, CUDA graphs, weights cold in L2): at one row the
  // GEMV is 1.1-1.6x faster than cuBLASLt on the narrow layers (kv_a 576, q_a 1536, shared
  // gate/up 2048 columns) and slower on the wide ones (o_proj, shared down 7168, q_b 24576), and
  // from two rows on it is slower on all but kv_a. The kFloat32 mode keeps its one kernel for
  // every row count.
  int64_t gemv_max_rows = 1;
  int64_t gemv_max_cols = 4096;
  // kFp8, layers that quantise their input: products of at most fp8_row_gemv_max_rows rows (at
  // most cuda::kRowGemvMaxRows) and at most fp8_row_gemv_max_k input columns run
  // cuda::RowGemvFp8 (the same FP8 x FP8 function as cuBLASLt's GEMM, promoted per 128-wide group
  // as it is), before the rules above; 0: never. Measured on an H100 at one row (bench_gpu --only
  // gemv, CUDA graphs, weights cold in L2), RowGemvFp8 / cuBLASLt us: q_a 7.6 / 14.8, q_b 16.2 /
  // 18.1, kv_a 5.8 / 14.5, shared gate/up 8.6 / 14.9, shared down 8.0 / 9.2, dense MLP gate/up
  // (18432 x 7168) 58.9 / 62.8; slower only at the longest rows: o_proj (k = 16384) 52.9 / 50.2,
  // dense MLP down (k = 18432) 61.7 / 55.8. Its time hardly moves from 1 to 4 rows (o_proj 53.4
  // at 4), but one row is the default (batch-1 decode; decode of 2-4 rows then keeps running
  // the kernels prefill runs).
  int64_t fp8_row_gemv_max_rows = 1;
  int64_t fp8_row_gemv_max_k = 8192;
  // kBf16 and kFp8 with an FP8 kv_b_proj: steps of at most fp8_absorb_max_rows rows (at most
  // cuda::kAbsorbFp8MaxRows) run MLA's two absorbed per-head products from the FP8 codes
  // (cuda::AbsorbQueryFp8 / ApplyValueFp8: float32 products of the dequantised weight, 8.4 MB read
  // per product at R1's size) instead of the batched TF32 product over the float32 copies (33.5
  // MB); 0: never (and kv_b_proj's codes are not kept on the device). Off by default until the
  // kernels' tests and timings have run on a GPU (bench_gpu --only absorb, bench_gpu_layer
  // --no-fp8-absorb for the comparison; docs/design.md, "GPU").
  int64_t fp8_absorb_max_rows = 0;
  // Independent work of a layer on parallel streams (the latent's projection beside the query's,
  // the shared expert beside the routed experts, up_proj beside gate_proj); false: one stream
  // (for measuring what the overlap gains). Outputs are the same either way.
  bool parallel_lanes = true;
  // Loading: reader threads, each copying checkpoint pieces of `load_piece_bytes` into its own
  // pinned buffers and on to the device, so several disk reads and copies are in flight at once.
  int load_threads = 8;
  size_t load_piece_bytes = size_t{16} << 20;
  // Benchmarks only: when > 0, only the checkpoint's first `weight_layers` layers are loaded and
  // every later layer of the config runs on the last loaded layer's weights (with a cache layer of
  // its own), so that a full-depth step at real size fits one GPU (bench_gpu_layer). The later
  // layers must be of the last loaded layer's kind (dense or MoE).
  int64_t weight_layers = 0;
  // Benchmarks only: when > 0, the KV cache holds this many layers and model layer l keeps its
  // latents in cache layer l % kv_layers. Every layer still writes and reads its batch's full
  // cache rows (the bytes and work of a real step), but later layers overwrite earlier ones'
  // entries, so the outputs mean nothing; it lets a full-depth step at hundreds of sequences fit
  // one GPU's memory (bench_gpu_layer --ep-shard).
  int64_t kv_layers = 0;
};

class GpuDeepseekV3Model {
 public:
  static absl::StatusOr<std::unique_ptr<GpuDeepseekV3Model>> Load(const std::string& model_dir,
                                                                  const GpuModelOptions& options = {});
  ~GpuDeepseekV3Model();
  // As DeepseekV3Model::Forward: logits (float32, host) per sequence.
  absl::StatusOr<std::vector<std::vector<float>>> Forward(const std::vector<SequenceStep>& batch, GpuKvCache& cache);
  // As Forward, then the next token of each sequence is sampled on the device from the logits of
  // its last new token (cuda::Sample with sampling[s]: greedy, temperature, top-k, top-p, seeded
  // by (seed, step)); only the token ids come back to the host.
  absl::StatusOr<std::vector<int32_t>> ForwardSample(const std::vector<SequenceStep>& batch, GpuKvCache& cache,
                                                     const std::vector<cuda::SamplingRow>& sampling);
  const ModelConfig& config() const { return config_; }
  const GpuModelOptions& options() const { return options_; }
  size_t device_weight_bytes() const { return weight_bytes_; }
  // Decode steps replayed from a captured graph so far (for tests and logs).
  int64_t graph_replays() const { return graph_replays_; }
  // Whether a step of `rows` rows runs MLA's absorbed products from kv_b_proj's FP8 codes
  // (GpuModelOptions::fp8_absorb_max_rows) in every layer.
  bool UsesFp8Absorb(int64_t rows) const;
  // Benchmarks: the rows each routed expert received in the last MoE layer of the last step
  // (waits for the stream).
  absl::StatusOr<std::vector<int32_t>> LastExpertRows();

 private:
  struct Mlp { GpuLinear gate, up, down; };
  // All routed experts of a layer back to back, for the grouped launch.
  struct ExpertBank {
    int64_t n = 0, k = 0, w_stride = 0, scale_stride = 0;
    bool fp8 = false;
    DeviceMemory w, scales;  // [E, n, w_stride] codes (or bf16), [E, ceil(n/128), scale_stride]
  };
  struct Layer {
    DeviceMemory input_norm, post_norm;  // float32 [H]
    GpuLinear q_a, q_b, q, kv_a, o;
    DeviceMemory q_a_norm, kv_a_norm;    // float32
    DeviceMemory w_uk, w_uv;             // float32 [NH, nope, kvr], [NH, v, kvr] (kv_b_proj halves)
    GpuLinear kv_b;                      // FP8 as stored, for the few-row absorbed products (or empty)
    bool is_moe = false;
    Mlp mlp;
    DeviceMemory router;                 // float32 [E, H]
    DeviceMemory score_bias;             // float32 [E]
    ExpertBank gate, up, down;           // routed experts
    bool has_shared = false;
    Mlp shared;
  };
  class Uploader;
  // A stream of the step and what work on it may use alone: its cuBLASLt runner (one workspace
  // each) and the activation quantiser's output buffers (kFp8). Independent work of a layer runs
  // on lanes of their own (the latent's projection beside the query's, the shared expert beside
  // the routed experts, the routed up projection beside the gate), forked from and joined back
  // into stream_ by events, so that a decode step's small kernels overlap instead of queueing
  // (captured into the decode graph as parallel branches). Where lanes would share a scratch
  // buffer (the kBf16 weight dequantisation), every lane is the main one.
  struct Lane {
    cudaStream_t stream = nullptr;
    cuda::GemmRunner* gemm = nullptr;
    DeviceMemory* quant_q = nullptr;
    DeviceMemory* quant_scales = nullptr;
  };
  enum LaneId { kMainLane = 0, kSideLane = 1, kThirdLane = 2, kLaneCount = 3 };
  GpuDeepseekV3Model() = default;
  absl::Status LoadWeights(const Checkpoint& ckpt);
  absl::Status AllocateWorkspace();
  // The lanes: extra streams, runners and events where lanes may run in parallel.
  absl::Status SetUpLanes();
  // The quantiser of Linear alone (kFp8 layers that quantise their input; nothing otherwise),
  // so that a second lane can be forked after it and before the first product.
  absl::Status Quantise(const __nv_bfloat16* x, int64_t m, const GpuLinear& w, const Lane& lane);
  absl::Status Quantise(const float*, int64_t, const GpuLinear&, const Lane&) { return absl::OkStatus(); }
  bool Quantises(const GpuLinear& w) const;
  // Uploads the step's inputs and runs (or replays) the step; returns the token rows.
  absl::StatusOr<int64_t> Launch(const std::vector<SequenceStep>& batch, GpuKvCache& cache);
  // The whole step for t rows whose inputs are already in the workspace: launches only, on stream_.
  // T: the activation element type (float for kFloat32, bf16 otherwise).
  template <typename T>
  absl::Status RunStep(int64_t t, GpuKvCache& cache, int64_t table_stride);
  // kv_b_proj's FP8 codes for the absorbed products of a t-row step, when the layer holds them and
  // t <= options_.fp8_absorb_max_rows; nullopt: the TF32 (or float32) products.
  std::optional<cuda::AbsorbFp8Weight> KvBFp8(const Layer& L, int64_t t) const;
  // y [m, n] = x [m, k] · W^T in the configured numerics (buffers sized Fp8PaddedRows(m) rows);
  // the GEMVs for few rows (options_.fp8_row_gemv_max_rows / fp8_row_gemv_max_k: RowGemvFp8;
  // options_.gemv_max_rows / gemv_max_cols: DenseGemv), cuBLASLt otherwise.
  // On `lane`; `quantised`: the lane's quantiser buffers already hold x (kFp8: the same input
  // as the previous product on them, e.g. up_proj after gate_proj), so it is not quantised again.
  absl::Status Linear(const __nv_bfloat16* x, int64_t m, const GpuLinear& w, __nv_bfloat16* y, const Lane& lane,
                      bool quantised = false);
  absl::Status Linear(const float* x, int64_t m, const GpuLinear& w, float* y, const Lane& lane,
                      bool quantised = false);
  // Makes `to` wait for the work queued so far on `from` (nothing when they are one stream).
  absl::Status Fork(const Lane& from, const Lane& to);
  // A lane that runs on `stream`'s lane but reads the quantiser buffers of `inputs` (which hold
  // the input already): for two products of one input on two lanes.
  static Lane Borrow(const Lane& stream, const Lane& inputs);
  // logits [m, V] float32 = h [m, H] · lm_head^T
  absl::Status Logits(const __nv_bfloat16* h, int64_t m);
  absl::Status Logits(const float* h, int64_t m);
  // ws_.d [m, H] = mlp(h [m, H]), on lane `a` (gate_proj and up_proj beside it on `b`); the
  // caller adds it to the residual.
  template <typename T>
  absl::Status RunMlp(const Mlp& w, const T* h, int64_t m, const Lane& a, const Lane& b);

  ModelConfig config_;
  std::unique_ptr<cuda::GemmRunner> gemm_;
  DeviceMemory inv_freq_;  // float32 [rope / 2]
  DeviceMemory embed_;     // bf16 [V, H]
  std::vector<Layer> layers_;
  DeviceMemory final_norm_;
  GpuLinear lm_head_;      // bf16 [V, H]
  size_t weight_bytes_ = 0;
  int64_t max_fp8_weight_ = 0;  // the largest FP8 linear's n * k (the kBf16 dequantisation scratch)
  GpuModelOptions options_;
  cudaStream_t stream_ = nullptr;
  // The lanes (kMainLane is stream_ with gemm_); the extra streams, runners and fork events.
  Lane lanes_[kLaneCount];
  cudaStream_t side_streams_[kLaneCount - 1] = {};
  std::unique_ptr<cuda::GemmRunner> side_gemms_[kLaneCount - 1];
  std::vector<cudaEvent_t> events_;
  size_t next_event_ = 0;
  // Workspace: every buffer a step needs, sized for options_.max_step_tokens. Activation buffers
  // hold T elements (float32 or bf16, by options_.activations).
  struct Workspace {
    DeviceMemory ids, pos, ctx, tables;   // step inputs
    int64_t table_capacity = 0;           // int32 entries in `tables`
    DeviceMemory x, hf, hb, emb, qa, q, kv, q_lat, q_pe, o_lat, attn, o;
    // bf16/fp8 modes: q in float32 and the value product's float32 output, for the per-head TF32
    // products (q_lat = q_nope · w_uk, attn = o_lat · w_uv^T) batched over the heads.
    DeviceMemory q_f32, attn_f32;
    DeviceMemory mla;                     // MLA decode split-context partials (bf16 / fp8 modes)
    DeviceMemory g, u, d;                 // dense / shared MLP
    DeviceMemory router_logits, expert_ids, expert_w, offsets, perm_tokens, perm_w, slot, perm_ws;
    DeviceMemory xe, eg, eu, ey;          // routed experts, permuted rows
    DeviceMemory logits;                  // float32 [rows, V]
    DeviceMemory quant_q, quant_scales;   // activation quantiser (kFp8), main lane
    DeviceMemory quant_q2, quant_scales2; // the same for kSideLane
    DeviceMemory moe_q, moe_qs;           // routed experts' quantised rows (kFp8)
    DeviceMemory w_scratch;               // dequantised weight (kBf16)
    DeviceMemory sampling, sampled;       // SamplingRow [rows], int32 [rows]
  } ws_;
  // Captured decode graphs, by (rows, cache data pointer, table stride).
  struct GraphKey {
    int64_t rows;
    const void* cache;
    int64_t stride;
    bool operator<(const GraphKey& o) const {
      return std::tie(rows, cache, stride) < std::tie(o.rows, o.cache, o.stride);
    }
  };
  std::map<GraphKey, cudaGraphExec_t> graphs_;
  int64_t graph_replays_ = 0;
};

}  // namespace r1

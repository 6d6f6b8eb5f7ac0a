// The hardware planner behind `r1 plan`: given a model (a published config, a config.json, or a
// checkpoint's safetensors headers) and a cluster (GPU kind, GPUs per node, nodes), it works out
// whether r1serve's parallel layout fits, the weight bytes every GPU holds, the KV-cache capacity
// left over, and how to launch it. Pure arithmetic on the checkpoint layout: no GPU, no services.
//
// The layout is this codebase's (docs/design.md, "One forward step"): W = every GPU of the
// cluster; attention tensor-parallel over heads (NH/W heads per GPU), the dense MLP and the shared
// experts split on their intermediate dimension, routed experts E/W per GPU, embedding and lm_head
// split on the vocabulary; q_a_proj, kv_a_proj_with_mqa, the router, its bias and every norm are
// replicated. Each GPU holds the whole latent KV cache (kv_lora_rank + qk_rope_head_dim values per
// token per layer) of every sequence.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/config.h"
#include "common/dtype.h"
#include "nlohmann/json.hpp"

namespace r1::planner {

// ---- GPUs -------------------------------------------------------------------------------------

struct GpuSpec {
  std::string name;         // preset key: "h200"
  std::string description;  // "NVIDIA H200 SXM 141 GB"
  int64_t memory_mib = 0;   // total memory as nvidia-smi reports it (MiB)
  double hbm_tb_s = 0;      // HBM bandwidth, TB/s (1e12 bytes/s)
  bool fp8 = true;          // FP8 tensor cores (Hopper and later)
  std::string note;         // caveats for r1serve on this GPU

  uint64_t memory_bytes() const { return static_cast<uint64_t>(memory_mib) << 20; }
  double memory_gib() const { return memory_mib / 1024.0; }
};

const std::vector<GpuSpec>& GpuPresets();
// The preset called `name` (case-insensitive); an error listing the known names otherwise.
absl::StatusOr<GpuSpec> FindGpu(const std::string& name);

// ---- Models -----------------------------------------------------------------------------------

struct ModelPreset {
  std::string name;         // "deepseek-r1"
  std::string description;  // what it is, and which published config.json it copies
  std::string config_json;  // the config.json text (embedded at build time)
};
const std::vector<ModelPreset>& ModelPresets();
absl::StatusOr<ModelConfig> LoadModelPreset(const std::string& name);

// One tensor of a checkpoint: name, element type and shape, as its safetensors header says.
struct TensorRecord {
  std::string name;
  DType dtype = DType::kBF16;
  std::vector<int64_t> shape;
  uint64_t bytes() const;
};

// The tensors of a checkpoint of `config` laid out as DeepSeek publishes it (MTP layers included):
// linear weights of the decoder layers FP8 e4m3 with F32 `weight_scale_inv` blocks when the
// config has a quantization_config (BF16 otherwise); embed_tokens, lm_head, the router weight and
// every norm BF16; e_score_correction_bias F32.
std::vector<TensorRecord> PublishedTensors(const ModelConfig& config);
// The tensors of the checkpoint in `model_dir`, from its safetensors headers.
absl::StatusOr<std::vector<TensorRecord>> CheckpointTensors(const std::string& model_dir);
// Whether `model_dir` holds safetensors (model.safetensors.index.json or model.safetensors).
bool HasSafetensors(const std::string& model_dir);

// Where a tensor's bytes go in the breakdown.
enum class Part { kAttention, kDenseMlp, kSharedExperts, kRoutedExperts, kVocab, kNormsRouter, kOther };
inline constexpr int kNumParts = 7;
const char* PartName(Part part);  // "attention", "dense MLP", ...
const char* PartKey(Part part);   // "attention", "dense_mlp", ... (JSON)

struct WeightTally {
  std::array<uint64_t, kNumParts> bytes{};
  uint64_t total() const;
  uint64_t& operator[](Part p) { return bytes[static_cast<int>(p)]; }
  uint64_t operator[](Part p) const { return bytes[static_cast<int>(p)]; }
};

// The whole model as loaded (MTP excluded) and the MTP layers apart.
struct ModelWeights {
  WeightTally by_part;                         // all GPUs together
  std::map<std::string, uint64_t> by_dtype;    // "F8_E4M3" -> bytes (loaded tensors)
  int64_t parameters = 0;                      // loaded, scales not counted
  uint64_t mtp_bytes = 0;                      // MTP layers: in the checkpoint, not loaded
  int64_t mtp_parameters = 0;
  std::vector<std::string> unknown_tensors;    // not recognised: counted as replicated "other"
};
ModelWeights TallyModel(const ModelConfig& config, const std::vector<TensorRecord>& tensors);

// ---- Layout -----------------------------------------------------------------------------------

// Why W GPUs cannot split `config`: one line per dimension that W does not divide; empty when W is
// a valid layout. Agrees with DeepseekV3Model::CheckLayout (which stops at the first).
std::vector<std::string> LayoutProblems(const ModelConfig& config, int64_t world);
// Every valid W in [1, up_to], ascending.
std::vector<int64_t> ValidWorldSizes(const ModelConfig& config, int64_t up_to);
// The largest W any layout of `config` can have (the gcd of the split dimensions).
int64_t MaxWorldSize(const ModelConfig& config);

// The weight bytes rank `rank` of a valid layout of W holds, by part. Slices of FP8 weights carry
// every 128x128 scale block they overlap.
WeightTally RankWeights(const ModelConfig& config, const std::vector<TensorRecord>& tensors, int64_t world,
                        int64_t rank);
struct GpuWeights {
  WeightTally worst;       // the rank holding the most bytes
  int64_t worst_rank = 0;
  uint64_t least = 0;      // the rank holding the fewest bytes (equal to worst.total() when uniform)
};
GpuWeights PerGpuWeights(const ModelConfig& config, const std::vector<TensorRecord>& tensors, int64_t world);

// ---- Memory rules -----------------------------------------------------------------------------

// The reserve kept free of weights and KV cache on every GPU:
//   kFixedReserveBytes (4 GiB: CUDA context, cuBLASLt and NCCL workspaces, the logits buffer,
//   allocator slack) + prefill_chunk x WorkspacePerToken.
inline constexpr uint64_t kFixedReserveBytes = 4ull << 30;
// Activation workspace per token of a step, conservative: 16 H (fp32 residual and two fp32 partial
// sums, bf16 normed input and attention output) + 7 k H (top-k dispatch: bf16 and FP8 copies of
// the input and the fp32 weighted output, as if all k routed copies land on one GPU) + 6 x
// max(k I_moe, I_dense / W) (bf16 gate, up and activation). Attention kernels are assumed not to
// materialise the score matrix (flash-style). R1 at W = 8: 614,400 bytes.
uint64_t WorkspacePerToken(const ModelConfig& config, int64_t world);
// Latent KV bytes per token on one GPU: layers x (kv_lora_rank + qk_rope_head_dim) x dtype bytes.
uint64_t KvBytesPerToken(const ModelConfig& config, int kv_dtype_bytes);

// ---- The plan ---------------------------------------------------------------------------------

struct PlanRequest {
  ModelConfig config;
  std::string model_label;                  // "preset deepseek-r1", "config FILE", "model DIR"
  std::string model_dir;                    // for the launch commands; empty: MODEL_DIR placeholder
  std::vector<TensorRecord> tensors;        // the checkpoint's tensors (or PublishedTensors)
  bool exact_from_checkpoint = false;       // tensors came from safetensors headers
  GpuSpec gpu;
  int64_t gpus_per_node = 8;
  int64_t nodes = 1;
  std::optional<double> host_memory_gib;    // per node
  int64_t max_context = 0;                  // target context per sequence; 0: none (4096 minimum)
  int64_t concurrency = 0;                  // target sequences at max_context; 0: none (1)
  std::string kv_dtype = "bf16";            // bf16 | fp8
  int64_t prefill_chunk = 8192;             // tokens per step (workspace rule)
  int64_t block_size = 16;                  // tokens per KV block (r1-coordinator --block-size)
  std::string coordinator = "COORDINATOR_HOST:50051";
};

// Memory of one GPU under a layout of W.
struct MemoryPlan {
  int64_t world = 0;
  GpuWeights weights;
  uint64_t reserve_bytes = 0;
  uint64_t gpu_bytes = 0;
  int64_t free_bytes = 0;  // gpu - weights - reserve (negative: weights do not fit)
  int64_t kv_blocks = 0;   // blocks of block_size tokens
  int64_t kv_tokens = 0;   // kv_blocks x block_size
  bool meets_target = false;
};

struct ContextRow {
  int64_t context = 0;
  int64_t sequences = 0;  // how many sequences of this context fit at once
};

struct PlanResult {
  PlanRequest request;
  ModelWeights model;
  int64_t world = 0;                        // GPUs in the cluster
  std::vector<std::string> layout_problems; // why W is impossible (empty: valid)
  std::vector<int64_t> valid_worlds;        // every valid W up to MaxWorldSize
  uint64_t kv_bytes_per_token = 0;
  int64_t target_context = 0, target_sequences = 0, target_tokens = 0;
  std::optional<MemoryPlan> memory;         // when W is valid
  bool fits = false;                        // valid W, weights fit, target met, FP8 ok
  std::string verdict;                      // one line
  int64_t max_context_one_sequence = 0;     // min(kv tokens, max_position_embeddings)
  std::vector<ContextRow> contexts;
  std::vector<std::string> suggestions;     // what would fit instead
  std::optional<int64_t> smallest_world_same_gpu;  // smallest valid W of this GPU meeting the target
  uint64_t min_gpu_bytes_at_world = 0;      // memory a GPU needs at this W for the target (valid W)
  std::vector<std::string> larger_gpus;     // presets that meet the target at this W
  std::vector<std::string> notes;
};

absl::StatusOr<PlanResult> MakePlan(const PlanRequest& request);
std::string RenderText(const PlanResult& plan);
nlohmann::json RenderJson(const PlanResult& plan);

}  // namespace r1::planner

// DeepseekV3ForCausalLM (DeepSeek-V3 / R1) on the CPU: the float32 reference every other backend
// is checked against. Reads top to bottom like the architecture; shapes in comments use
// T = tokens in the step, H = hidden_size, NH = heads, L = context length of one sequence.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/config.h"
#include "common/safetensors.h"
#include "worker/kv_cache.h"
#include "worker/model/weights.h"
#include "worker/parallel/communicator.h"

namespace r1 {

// One sequence's share of a forward step: the interface the scheduler drives.
struct SequenceStep {
  std::vector<int32_t> tokens;       // new tokens: a prefill chunk, or one decode token
  int64_t start_position = 0;        // position of tokens[0]; the cache holds [0, start_position)
  std::vector<int32_t> block_table;  // blocks covering positions [0, start_position + tokens.size())
  bool all_logits = false;           // logits for every new token; otherwise for the last only
};

// How attention reads the latent cache. Expanded: decompress cached latents to per-head K and V
// through kv_b_proj (cheap per query when many queries share the context: prefill). Absorbed:
// fold kv_b_proj's K half into the query and its V half after the weighted sum, so scores and
// values stay in the 512-wide latent space (cheap per token: decode). Both are exact in float32.
enum class AttentionForm { kAuto, kExpanded, kAbsorbed };

struct MlpWeights {
  Matrix gate, up;  // [I, H]
  Matrix down;      // [H, I]
};

struct MlaWeights {
  Matrix q_a;                   // [q_lora_rank, H]             (q_lora_rank set)
  std::vector<float> q_a_norm;  // [q_lora_rank]
  Matrix q_b;                   // [NH * qk_head_dim, q_lora_rank]
  Matrix q;                     // [NH * qk_head_dim, H]         (q_lora_rank null)
  Matrix kv_a;                  // [kv_lora_rank + rope, H]
  std::vector<float> kv_a_norm; // [kv_lora_rank]
  Matrix kv_b;                  // [NH * (nope + v), kv_lora_rank]
  Matrix o;                     // [H, NH * v]
};

struct MoeWeights {
  Matrix router;                  // [E, H]
  std::vector<float> score_bias;  // [E] e_score_correction_bias: selection only
  std::vector<MlpWeights> experts;  // this rank's experts, expert_begin_ first
  bool has_shared = false;
  MlpWeights shared;  // intermediate moe_intermediate_size * n_shared_experts
};

struct LayerWeights {
  std::vector<float> input_norm, post_attention_norm;  // [H]
  MlaWeights attn;
  bool is_moe = false;
  MlpWeights mlp;  // dense layers
  MoeWeights moe;  // MoE layers
};

// Called during a load, at most about once a second and at the end: checkpoint bytes passed over
// so far, the total, and the stage ("layer 7").
using LoadProgressFn = std::function<void(size_t done, size_t total, const std::string& stage)>;

class DeepseekV3Model {
 public:
  // Loads DIR/config.json and this rank's share of the weights (FP8 dequantised to float32),
  // logging progress. With layout.world_size W > 1, `comm` connects the W ranks (it must outlive
  // the model) and each rank reads only its slices: NH/W heads, 1/W of the dense and shared-expert
  // intermediate columns, E/W routed experts, V/W vocabulary rows. A layout that does not divide
  // evenly is an error naming the dimension.
  static absl::StatusOr<std::unique_ptr<DeepseekV3Model>> Load(const std::string& model_dir,
                                                               const ParallelLayout& layout = {},
                                                               Communicator* comm = nullptr,
                                                               const LoadProgressFn& progress = nullptr);
  // Checks that `config` can be split W ways.
  static absl::Status CheckLayout(const ModelConfig& config, int world_size);

  // Runs one step for a batch of sequences: writes their new latents into `cache` and returns,
  // per sequence, logits [rows, vocab] flattened (rows = tokens.size() if all_logits, else 1).
  // Every rank calls it with the same batch (collectives inside); every rank gets all logits.
  absl::StatusOr<std::vector<std::vector<float>>> Forward(const std::vector<SequenceStep>& batch,
                                                          PagedKvCache& cache,
                                                          AttentionForm form = AttentionForm::kAuto) const;

  const ModelConfig& config() const { return config_; }
  // Quantise the activations entering every FP8-weight product per token in 1x128 groups, as
  // DeepSeek's inference (and the GPU backend) does: the reference for the GPU's numerics.
  // Only for FP8 checkpoints; off by default (plain float32).
  void set_emulate_fp8_activations(bool on) { emulate_fp8_activations_ = on && config_.fp8.has_value(); }
  // Resident float32 weight bytes: all, those split across ranks, those every rank holds.
  size_t weight_bytes() const { return sharded_bytes_ + replicated_bytes_; }
  size_t sharded_bytes() const { return sharded_bytes_; }
  size_t replicated_bytes() const { return replicated_bytes_; }
  const ParallelLayout& layout() const { return layout_; }
  // The rotary inverse frequencies (qk_rope_head_dim / 2), YaRN applied.
  const std::vector<float>& inv_freq() const { return inv_freq_; }

 private:
  DeepseekV3Model() = default;
  absl::Status LoadWeights(const Checkpoint& ckpt, const LoadProgressFn& progress);
  absl::Status Validate(const std::vector<SequenceStep>& batch, const PagedKvCache& cache) const;

  // x [T, H] += sum over ranks of delta [T, H]; delta is consumed.
  absl::Status AddAllReduced(std::vector<float>& delta, std::vector<float>& x) const;
  // out [T, H] += this rank's share of attention(h [T, H]) for layer `layer`.
  void Attention(int64_t layer, const float* h, const std::vector<SequenceStep>& batch,
                 const std::vector<int64_t>& positions, PagedKvCache& cache, AttentionForm form, float* x) const;
  // y [m, n] (+)= x [m, k] · w^T for a checkpoint linear layer (FP8 activation emulation aware).
  void Project(const float* x, int64_t m, int64_t k, const Matrix& w, int64_t n, float* y, bool accumulate) const;
  // out [T, H] += this rank's share of mlp(h)
  void DenseMlp(const MlpWeights& w, const float* h, int64_t t, float* out) const;
  // out [T, H] += this rank's share of moe(h): its routed experts and its shared-expert slice
  void Moe(const MoeWeights& w, const float* h, int64_t t, float* out) const;
  // For each of T tokens: the chosen experts [T, topk] and their weights [T, topk].
  void Route(const MoeWeights& w, const float* h, int64_t t, std::vector<int32_t>* experts,
             std::vector<float>* weights) const;

  ModelConfig config_;
  ParallelLayout layout_;
  Communicator* comm_ = nullptr;
  int64_t local_heads_ = 0;          // NH / W
  int64_t expert_begin_ = 0, expert_end_ = 0;  // routed experts held here
  int64_t vocab_begin_ = 0, vocab_end_ = 0;    // vocabulary rows held here
  std::vector<float> inv_freq_;
  float rope_factor_ = 1.0f;
  float softmax_scale_ = 1.0f;
  Matrix embed_;                   // [V / W, H]
  std::vector<LayerWeights> layers_;
  std::vector<float> final_norm_;  // [H]
  Matrix lm_head_;                 // [V / W, H]
  size_t sharded_bytes_ = 0, replicated_bytes_ = 0;
  bool emulate_fp8_activations_ = false;
};

// The router's choice for t tokens from their router logits [T, E] (overwritten with the sigmoid
// scores): sigmoid, correction bias for selection only, group-limited top-k, weights from the
// unbiased scores (normalised if norm_topk_prob) times routed_scaling_factor. Shared by backends.
void SelectExperts(const ModelConfig& config, float* router_logits, const float* score_bias, int64_t t,
                   std::vector<int32_t>* experts, std::vector<float>* weights);

// The YaRN (or plain) rotary inverse frequencies of a config, computed as transformers does.
std::vector<float> RopeInverseFrequencies(const ModelConfig& config);

}  // namespace r1

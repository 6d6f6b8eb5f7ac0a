// DeepseekV3ForCausalLM (DeepSeek-V3 / R1) on the CPU: the float32 reference every other backend
// is checked against. Reads top to bottom like the architecture; shapes in comments use
// T = tokens in the step, H = hidden_size, NH = heads, L = context length of one sequence.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/config.h"
#include "common/safetensors.h"
#include "worker/kv_cache.h"
#include "worker/model/weights.h"

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
  std::vector<MlpWeights> experts;
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

class DeepseekV3Model {
 public:
  // Loads DIR/config.json and the weights (FP8 dequantised to float32), logging progress.
  static absl::StatusOr<std::unique_ptr<DeepseekV3Model>> Load(const std::string& model_dir);

  // Runs one step for a batch of sequences: writes their new latents into `cache` and returns,
  // per sequence, logits [rows, vocab] flattened (rows = tokens.size() if all_logits, else 1).
  absl::StatusOr<std::vector<std::vector<float>>> Forward(const std::vector<SequenceStep>& batch,
                                                          PagedKvCache& cache,
                                                          AttentionForm form = AttentionForm::kAuto) const;

  const ModelConfig& config() const { return config_; }
  // Resident float32 weight bytes.
  size_t weight_bytes() const { return weight_bytes_; }
  // The rotary inverse frequencies (qk_rope_head_dim / 2), YaRN applied.
  const std::vector<float>& inv_freq() const { return inv_freq_; }

 private:
  DeepseekV3Model() = default;
  absl::Status LoadWeights(const Checkpoint& ckpt);
  absl::Status Validate(const std::vector<SequenceStep>& batch, const PagedKvCache& cache) const;

  // x [T, H] += attention(h [T, H]) for layer `layer`.
  void Attention(int64_t layer, const float* h, const std::vector<SequenceStep>& batch,
                 const std::vector<int64_t>& positions, PagedKvCache& cache, AttentionForm form, float* x) const;
  // x [T, H] += mlp(h)
  void DenseMlp(const MlpWeights& w, const float* h, int64_t t, float* x) const;
  // x [T, H] += moe(h)
  void Moe(const MoeWeights& w, const float* h, int64_t t, float* x) const;
  // For each of T tokens: the chosen experts [T, topk] and their weights [T, topk].
  void Route(const MoeWeights& w, const float* h, int64_t t, std::vector<int32_t>* experts,
             std::vector<float>* weights) const;

  ModelConfig config_;
  std::vector<float> inv_freq_;
  float rope_factor_ = 1.0f;
  float softmax_scale_ = 1.0f;
  Matrix embed_;                   // [V, H]
  std::vector<LayerWeights> layers_;
  std::vector<float> final_norm_;  // [H]
  Matrix lm_head_;                 // [V, H]
  size_t weight_bytes_ = 0;
};

// The YaRN (or plain) rotary inverse frequencies of a config, computed as transformers does.
std::vector<float> RopeInverseFrequencies(const ModelConfig& config);

}  // namespace r1

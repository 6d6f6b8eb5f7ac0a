// The typed model configuration of DeepseekV3ForCausalLM (DeepSeek-V3, V3-0324, R1, R1-0528,
// V3.1), read from the model folder's config.json. An unsupported value is an error naming the
// field, never a silent default; fields that are absent take transformers' defaults.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace r1 {

struct YarnScaling {
  double factor = 1.0;                          // context extension factor (R1: 40)
  int64_t original_max_position_embeddings = 0; // pretraining context (R1: 4096)
  double beta_fast = 32.0;                      // rotations below which a dim is extrapolated
  double beta_slow = 1.0;                       // rotations above which a dim is interpolated
  double mscale = 1.0;                          // numerator mscale of the cos/sin factor
  double mscale_all_dim = 0.0;                  // softmax-scale correction; 0 = none
  bool truncate = true;                         // floor/ceil the correction range
};

struct Fp8Quantization {
  int64_t block_rows = 128;  // weight_scale_inv block along the output dim
  int64_t block_cols = 128;  // … along the input dim
};

struct ModelConfig {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;       // dense MLP
  int64_t moe_intermediate_size = 0;   // one routed expert
  int64_t num_hidden_layers = 0;
  int64_t num_nextn_predict_layers = 0;  // MTP layers stored after the main ones (skipped)
  int64_t first_k_dense_replace = 0;   // the first k layers use the dense MLP
  int64_t moe_layer_freq = 1;
  int64_t num_attention_heads = 0;
  std::optional<int64_t> q_lora_rank;  // nullopt: q_proj directly from hidden
  int64_t kv_lora_rank = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t v_head_dim = 0;
  int64_t n_routed_experts = 0;
  int64_t n_shared_experts = 0;
  int64_t num_experts_per_tok = 0;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  bool norm_topk_prob = true;
  double routed_scaling_factor = 1.0;
  int64_t max_position_embeddings = 0;
  double rope_theta = 10000.0;
  bool rope_interleave = true;  // rope pairs are adjacent (2i, 2i+1), as DeepSeek trains it
  std::optional<YarnScaling> yarn;
  double rms_norm_eps = 1e-6;
  std::optional<Fp8Quantization> fp8;  // quantization_config: fp8 e4m3 with block scales
  int64_t bos_token_id = -1;
  int64_t eos_token_id = -1;

  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  // Latent values cached per token per layer: kv_lora_rank + qk_rope_head_dim (576 for R1).
  int64_t kv_latent_dim() const { return kv_lora_rank + qk_rope_head_dim; }
  bool is_moe_layer(int64_t layer) const {
    return n_routed_experts > 0 && layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
  }
  // The attention softmax scale, with YaRN's mscale correction when configured.
  double softmax_scale() const;
  // Factor on cos/sin (YaRN's attention factor; 1 otherwise).
  double rope_attention_factor() const;
};

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text, const std::string& source);
// Reads DIR/config.json.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir);

}  // namespace r1

// Fuzz target: config.json through ParseModelConfig (common/config.h), which turns a model
// folder's config into the typed ModelConfig every worker sizes its weights and caches from.
//
// The input is the config's text. Oracle, when it parses: the constraints the parser promises
// hold (sizes positive and at most 2^40, rope dims even, dense layers within the layer count,
// expert groups that divide the experts and hold the experts per token, YaRN factor ≥ 1, FP8
// blocks positive, RoPE base positive), and the quantities ModelConfig derives from them (head
// dims, latent size, softmax scale, RoPE attention factor) are finite and positive.
#include <cmath>
#include <cstdint>
#include <string>

#include "absl/strings/match.h"
#include "common/config.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

constexpr int64_t kMaxSize = int64_t{1} << 40;

void RequireSize(int64_t v, int64_t min, const char* field) {
  R1_FUZZ_REQUIRE(v >= min && v <= kMaxSize, field, " = ", v, " was accepted");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto parsed = r1::ParseModelConfig(text, "config.json");
  if (!parsed.ok()) {
    R1_FUZZ_REQUIRE(parsed.status().code() == absl::StatusCode::kInvalidArgument,
                    parsed.status().ToString());
    R1_FUZZ_REQUIRE(absl::StartsWith(parsed.status().message(), "config.json: "),
                    "an error that does not name the file: ", parsed.status().ToString());
    return 0;
  }
  const r1::ModelConfig& c = *parsed;
  RequireSize(c.vocab_size, 1, "vocab_size");
  RequireSize(c.hidden_size, 1, "hidden_size");
  RequireSize(c.intermediate_size, 1, "intermediate_size");
  RequireSize(c.num_hidden_layers, 1, "num_hidden_layers");
  RequireSize(c.num_nextn_predict_layers, 0, "num_nextn_predict_layers");
  RequireSize(c.num_attention_heads, 1, "num_attention_heads");
  RequireSize(c.kv_lora_rank, 1, "kv_lora_rank");
  RequireSize(c.qk_rope_head_dim, 1, "qk_rope_head_dim");
  RequireSize(c.qk_nope_head_dim, 1, "qk_nope_head_dim");
  RequireSize(c.v_head_dim, 1, "v_head_dim");
  RequireSize(c.max_position_embeddings, 1, "max_position_embeddings");
  if (c.q_lora_rank) RequireSize(*c.q_lora_rank, 1, "q_lora_rank");
  R1_FUZZ_REQUIRE(c.qk_rope_head_dim % 2 == 0, "odd qk_rope_head_dim ", c.qk_rope_head_dim);
  R1_FUZZ_REQUIRE(c.first_k_dense_replace >= 0 && c.first_k_dense_replace <= c.num_hidden_layers,
                  "first_k_dense_replace ", c.first_k_dense_replace);
  R1_FUZZ_REQUIRE(c.moe_layer_freq == 1, "moe_layer_freq ", c.moe_layer_freq);
  if (c.n_routed_experts > 0) {
    RequireSize(c.n_routed_experts, 1, "n_routed_experts");
    RequireSize(c.moe_intermediate_size, 1, "moe_intermediate_size");
    RequireSize(c.num_experts_per_tok, 1, "num_experts_per_tok");
    RequireSize(c.n_shared_experts, 0, "n_shared_experts");
    R1_FUZZ_REQUIRE(c.n_group >= 1 && c.n_routed_experts % c.n_group == 0, "n_group ", c.n_group);
    R1_FUZZ_REQUIRE(c.topk_group >= 1 && c.topk_group <= c.n_group, "topk_group ", c.topk_group);
    R1_FUZZ_REQUIRE(c.num_experts_per_tok <= c.topk_group * (c.n_routed_experts / c.n_group),
                    "num_experts_per_tok ", c.num_experts_per_tok);
    R1_FUZZ_REQUIRE(std::isfinite(c.routed_scaling_factor), "routed_scaling_factor");
  } else {
    R1_FUZZ_REQUIRE(c.n_routed_experts == 0, "n_routed_experts ", c.n_routed_experts);
  }
  R1_FUZZ_REQUIRE(c.bos_token_id >= -1 && c.eos_token_id >= -1, "token ids");
  R1_FUZZ_REQUIRE(std::isfinite(c.rope_theta) && c.rope_theta > 0, "rope_theta ", c.rope_theta);
  R1_FUZZ_REQUIRE(std::isfinite(c.rms_norm_eps), "rms_norm_eps ", c.rms_norm_eps);
  if (c.yarn) {
    R1_FUZZ_REQUIRE(c.yarn->factor >= 1.0 && std::isfinite(c.yarn->factor), "yarn factor ",
                    c.yarn->factor);
    RequireSize(c.yarn->original_max_position_embeddings, 1, "original_max_position_embeddings");
  }
  if (c.fp8) {
    R1_FUZZ_REQUIRE(c.fp8->block_rows >= 1 && c.fp8->block_cols >= 1, "fp8 block");
  }
  R1_FUZZ_REQUIRE(c.qk_head_dim() == c.qk_nope_head_dim + c.qk_rope_head_dim, "qk_head_dim");
  R1_FUZZ_REQUIRE(c.kv_latent_dim() == c.kv_lora_rank + c.qk_rope_head_dim, "kv_latent_dim");
  const double softmax_scale = c.softmax_scale();
  const double rope_factor = c.rope_attention_factor();
  R1_FUZZ_REQUIRE(std::isfinite(softmax_scale) && softmax_scale > 0, "softmax_scale ",
                  softmax_scale, " from an accepted config");
  R1_FUZZ_REQUIRE(std::isfinite(rope_factor) && rope_factor > 0, "rope_attention_factor ",
                  rope_factor, " from an accepted config");
  return 0;
}

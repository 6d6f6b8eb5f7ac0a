#include "cli/info.h"

#include <cstdio>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace r1 {

absl::StatusOr<ModelInfo> InspectModel(const std::string& model_dir) {
  ModelInfo info;
  R1_ASSIGN_OR_RETURN(info.config, LoadModelConfig(model_dir));
  R1_ASSIGN_OR_RETURN(auto ckpt, Checkpoint::Open(model_dir));
  const ModelConfig& c = info.config;
  for (const std::string& name : ckpt->Names()) {
    R1_ASSIGN_OR_RETURN(TensorView t, ckpt->Get(name));
    bool mtp = false;
    for (int64_t i = c.num_hidden_layers; i < c.num_hidden_layers + c.num_nextn_predict_layers; ++i) {
      mtp |= name.starts_with(absl::StrCat("model.layers.", i, "."));
    }
    const bool scale = name.ends_with("_scale_inv");
    if (mtp) {
      if (!scale) info.mtp_parameters += t.numel();
      continue;
    }
    if (!scale) info.parameters += t.numel();
    info.bytes_by_dtype[std::string(DTypeName(t.dtype))] += t.nbytes;
    info.weight_bytes += t.nbytes;
  }
  const size_t per_token = static_cast<size_t>(c.num_hidden_layers * c.kv_latent_dim());
  info.kv_bytes_per_1k_bf16 = per_token * 1000 * 2;
  info.kv_bytes_per_1k_f32 = per_token * 1000 * 4;
  return info;
}

int RunInfo(const std::string& model_dir) {
  auto info = InspectModel(model_dir);
  if (!info.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(info.status().message()).c_str());
    return 1;
  }
  const ModelConfig& c = info->config;
  auto gb = [](double b) { return b / 1e9; };
  std::printf("model            %s\n", model_dir.c_str());
  std::printf("architecture     DeepseekV3ForCausalLM, %ld layers (%ld dense, %ld MoE) + %ld MTP (not loaded)\n",
              static_cast<long>(c.num_hidden_layers), static_cast<long>(c.first_k_dense_replace),
              static_cast<long>(c.num_hidden_layers - c.first_k_dense_replace),
              static_cast<long>(c.num_nextn_predict_layers));
  std::printf("hidden           %ld, vocab %ld, context %ld\n", static_cast<long>(c.hidden_size),
              static_cast<long>(c.vocab_size), static_cast<long>(c.max_position_embeddings));
  std::printf("attention (MLA)  %ld heads, q_lora_rank %s, kv_lora_rank %ld, qk nope %ld + rope %ld, v %ld\n",
              static_cast<long>(c.num_attention_heads),
              c.q_lora_rank ? std::to_string(*c.q_lora_rank).c_str() : "null", static_cast<long>(c.kv_lora_rank),
              static_cast<long>(c.qk_nope_head_dim), static_cast<long>(c.qk_rope_head_dim),
              static_cast<long>(c.v_head_dim));
  std::printf("rope             theta %g, %s\n", c.rope_theta,
              c.yarn ? absl::StrCat("YaRN factor ", c.yarn->factor, " from ", c.yarn->original_max_position_embeddings).c_str()
                     : "no scaling");
  if (c.n_routed_experts > 0) {
    std::printf("experts          %ld routed (%ld active, %ld groups keep %ld), %ld shared, intermediate %ld, "
                "scaling %g, norm_topk_prob %s\n",
                static_cast<long>(c.n_routed_experts), static_cast<long>(c.num_experts_per_tok),
                static_cast<long>(c.n_group), static_cast<long>(c.topk_group), static_cast<long>(c.n_shared_experts),
                static_cast<long>(c.moe_intermediate_size), c.routed_scaling_factor, c.norm_topk_prob ? "true" : "false");
  }
  std::printf("weights          %s\n", c.fp8 ? absl::StrCat("FP8 e4m3, ", c.fp8->block_rows, "x", c.fp8->block_cols,
                                                           " block scales").c_str() : "unquantised");
  std::printf("parameters       %ld (%.3f B) + MTP %ld\n", static_cast<long>(info->parameters), info->parameters / 1e9,
              static_cast<long>(info->mtp_parameters));
  for (const auto& [dtype, bytes] : info->bytes_by_dtype) {
    std::printf("  %-8s       %.3f GB\n", dtype.c_str(), gb(static_cast<double>(bytes)));
  }
  std::printf("weight memory    %.3f GB as stored (GPU); %.3f GB as float32 (CPU reference)\n",
              gb(static_cast<double>(info->weight_bytes)), gb(4.0 * static_cast<double>(info->parameters)));
  std::printf("KV cache         %.3f MB per 1K tokens in bf16 (%ld layers x %ld latent values); %.3f MB in float32\n",
              info->kv_bytes_per_1k_bf16 / 1e6, static_cast<long>(c.num_hidden_layers),
              static_cast<long>(c.kv_latent_dim()), info->kv_bytes_per_1k_f32 / 1e6);
  return 0;
}

}  // namespace r1

#include "common/config.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace r1 {
namespace {

using nlohmann::json;

class Reader {
 public:
  Reader(const json& j, std::string source) : j_(j), source_(std::move(source)) {}

  absl::Status Error(absl::string_view field, absl::string_view what) const {
    return absl::InvalidArgumentError(absl::StrCat(source_, ": ", field, ": ", what));
  }

  // A required positive integer.
  absl::StatusOr<int64_t> Int(const char* field, int64_t min = 1) const {
    if (!j_.contains(field) || j_[field].is_null()) return Error(field, "missing");
    return IntValue(field, j_[field], min);
  }
  absl::StatusOr<int64_t> IntOr(const char* field, int64_t dflt, int64_t min = 0) const {
    if (!j_.contains(field) || j_[field].is_null()) return dflt;
    return IntValue(field, j_[field], min);
  }
  absl::StatusOr<double> Num(const char* field, double dflt) const {
    if (!j_.contains(field) || j_[field].is_null()) return dflt;
    if (!j_[field].is_number()) return Error(field, "must be a number");
    double v = j_[field].get<double>();
    if (!std::isfinite(v)) return Error(field, "must be finite");
    return v;
  }
  absl::StatusOr<bool> Bool(const char* field, bool dflt) const {
    if (!j_.contains(field) || j_[field].is_null()) return dflt;
    if (!j_[field].is_boolean()) return Error(field, "must be true or false");
    return j_[field].get<bool>();
  }
  absl::StatusOr<std::string> Str(const char* field, const std::string& dflt) const {
    if (!j_.contains(field) || j_[field].is_null()) return dflt;
    if (!j_[field].is_string()) return Error(field, "must be a string");
    return j_[field].get<std::string>();
  }
  // Fails unless the field is absent or equals one of `allowed`.
  absl::Status Expect(const char* field, std::initializer_list<const char*> allowed) const {
    if (!j_.contains(field) || j_[field].is_null()) return absl::OkStatus();
    std::string v = j_[field].is_string() ? j_[field].get<std::string>() : j_[field].dump();
    for (const char* a : allowed) {
      if (v == a) return absl::OkStatus();
    }
    std::string list;
    for (const char* a : allowed) absl::StrAppend(&list, list.empty() ? "" : ", ", a);
    return Error(field, absl::StrCat("'", v, "' is not supported (supported: ", list, ")"));
  }

 private:
  absl::StatusOr<int64_t> IntValue(const char* field, const json& v, int64_t min) const {
    if (!v.is_number_integer()) return Error(field, "must be an integer");
    int64_t x = v.get<int64_t>();
    if (x < min) return Error(field, absl::StrCat("must be at least ", min, ", got ", x));
    if (x > (int64_t{1} << 40)) return Error(field, "is implausibly large");
    return x;
  }

  const json& j_;
  std::string source_;
};

}  // namespace

double ModelConfig::softmax_scale() const {
  double scale = 1.0 / std::sqrt(static_cast<double>(qk_head_dim()));
  if (yarn && yarn->mscale_all_dim != 0.0 && yarn->factor > 1.0) {
    double m = 0.1 * yarn->mscale_all_dim * std::log(yarn->factor) + 1.0;
    scale *= m * m;
  }
  return scale;
}

double ModelConfig::rope_attention_factor() const {
  if (!yarn) return 1.0;
  auto get_mscale = [](double scale, double m) {
    return scale <= 1.0 ? 1.0 : 0.1 * m * std::log(scale) + 1.0;
  };
  if (yarn->mscale != 0.0 && yarn->mscale_all_dim != 0.0) {
    return get_mscale(yarn->factor, yarn->mscale) / get_mscale(yarn->factor, yarn->mscale_all_dim);
  }
  return get_mscale(yarn->factor, 1.0);
}

absl::StatusOr<ModelConfig> ParseModelConfig(const std::string& json_text, const std::string& source) {
  json j = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": not a valid JSON object"));
  }
  Reader r(j, source);
  R1_RETURN_IF_ERROR(r.Expect("model_type", {"deepseek_v3"}));
  if (j.contains("architectures")) {
    const json& a = j["architectures"];
    if (!a.is_array() || a.size() != 1 || a[0] != "DeepseekV3ForCausalLM") {
      return r.Error("architectures", absl::StrCat(a.dump(), " is not supported (supported: [\"DeepseekV3ForCausalLM\"])"));
    }
  }
  R1_RETURN_IF_ERROR(r.Expect("hidden_act", {"silu"}));
  R1_RETURN_IF_ERROR(r.Expect("topk_method", {"noaux_tc"}));
  R1_RETURN_IF_ERROR(r.Expect("scoring_func", {"sigmoid"}));
  R1_RETURN_IF_ERROR(r.Expect("attention_bias", {"false"}));
  R1_RETURN_IF_ERROR(r.Expect("tie_word_embeddings", {"false"}));

  ModelConfig c;
  R1_ASSIGN_OR_RETURN(c.vocab_size, r.Int("vocab_size"));
  R1_ASSIGN_OR_RETURN(c.hidden_size, r.Int("hidden_size"));
  R1_ASSIGN_OR_RETURN(c.intermediate_size, r.Int("intermediate_size"));
  R1_ASSIGN_OR_RETURN(c.num_hidden_layers, r.Int("num_hidden_layers"));
  R1_ASSIGN_OR_RETURN(c.num_nextn_predict_layers, r.IntOr("num_nextn_predict_layers", 0));
  R1_ASSIGN_OR_RETURN(c.num_attention_heads, r.Int("num_attention_heads"));
  R1_ASSIGN_OR_RETURN(int64_t kv_heads, r.IntOr("num_key_value_heads", c.num_attention_heads, 1));
  if (kv_heads != c.num_attention_heads) {
    return r.Error("num_key_value_heads", "must equal num_attention_heads (MLA has no KV head groups)");
  }
  if (j.contains("q_lora_rank") && !j["q_lora_rank"].is_null()) {
    R1_ASSIGN_OR_RETURN(c.q_lora_rank, r.Int("q_lora_rank"));
  }
  R1_ASSIGN_OR_RETURN(c.kv_lora_rank, r.Int("kv_lora_rank"));
  R1_ASSIGN_OR_RETURN(c.qk_rope_head_dim, r.Int("qk_rope_head_dim"));
  if (c.qk_rope_head_dim % 2 != 0) return r.Error("qk_rope_head_dim", "must be even");
  R1_ASSIGN_OR_RETURN(c.qk_nope_head_dim, r.Int("qk_nope_head_dim"));
  R1_ASSIGN_OR_RETURN(c.v_head_dim, r.Int("v_head_dim"));
  R1_ASSIGN_OR_RETURN(c.n_routed_experts, r.IntOr("n_routed_experts", 0));
  R1_ASSIGN_OR_RETURN(c.first_k_dense_replace, r.IntOr("first_k_dense_replace", 0));
  R1_ASSIGN_OR_RETURN(c.moe_layer_freq, r.IntOr("moe_layer_freq", 1, 1));
  if (c.moe_layer_freq != 1) return r.Error("moe_layer_freq", "only 1 is supported (every layer after the dense ones is MoE)");
  if (c.first_k_dense_replace > c.num_hidden_layers) {
    return r.Error("first_k_dense_replace", "exceeds num_hidden_layers");
  }
  if (c.n_routed_experts > 0) {
    R1_ASSIGN_OR_RETURN(c.moe_intermediate_size, r.Int("moe_intermediate_size"));
    R1_ASSIGN_OR_RETURN(c.n_shared_experts, r.IntOr("n_shared_experts", 0));
    R1_ASSIGN_OR_RETURN(c.num_experts_per_tok, r.Int("num_experts_per_tok"));
    R1_ASSIGN_OR_RETURN(c.n_group, r.IntOr("n_group", 1, 1));
    R1_ASSIGN_OR_RETURN(c.topk_group, r.IntOr("topk_group", 1, 1));
    R1_ASSIGN_OR_RETURN(c.norm_topk_prob, r.Bool("norm_topk_prob", true));
    R1_ASSIGN_OR_RETURN(c.routed_scaling_factor, r.Num("routed_scaling_factor", 1.0));
    if (c.n_routed_experts % c.n_group != 0) return r.Error("n_group", "must divide n_routed_experts");
    if (c.topk_group > c.n_group) return r.Error("topk_group", "exceeds n_group");
    if (c.n_group > 1 && c.n_routed_experts / c.n_group < 2) {
      return r.Error("n_group", "group scores take the top 2 of each group: groups need at least 2 experts");
    }
    if (c.num_experts_per_tok > c.topk_group * (c.n_routed_experts / c.n_group)) {
      return r.Error("num_experts_per_tok", "exceeds the experts in the kept groups");
    }
  }
  R1_ASSIGN_OR_RETURN(c.max_position_embeddings, r.Int("max_position_embeddings"));
  R1_ASSIGN_OR_RETURN(c.rope_theta, r.Num("rope_theta", 10000.0));
  R1_ASSIGN_OR_RETURN(c.rope_interleave, r.Bool("rope_interleave", true));
  R1_ASSIGN_OR_RETURN(c.rms_norm_eps, r.Num("rms_norm_eps", 1e-6));
  R1_ASSIGN_OR_RETURN(c.bos_token_id, r.IntOr("bos_token_id", -1, -1));
  if (j.contains("eos_token_id") && j["eos_token_id"].is_array()) {
    return r.Error("eos_token_id", "a list of EOS ids is not supported");
  }
  R1_ASSIGN_OR_RETURN(c.eos_token_id, r.IntOr("eos_token_id", -1, -1));

  // rope_scaling (transformers ≤ 4) or rope_parameters (transformers 5).
  const char* rope_field = j.contains("rope_scaling") ? "rope_scaling" : "rope_parameters";
  if (j.contains(rope_field) && !j[rope_field].is_null()) {
    const json& rs = j[rope_field];
    if (!rs.is_object()) return r.Error(rope_field, "must be an object or null");
    Reader rr(rs, absl::StrCat(source, ": ", rope_field));
    const char* type_field = rs.contains("rope_type") ? "rope_type" : "type";
    if (rs.contains(type_field) && !rs[type_field].is_string()) return rr.Error(type_field, "must be a string");
    std::string type = rs.value(type_field, "");
    if (type == "yarn") {
      YarnScaling y;
      R1_ASSIGN_OR_RETURN(y.factor, rr.Num("factor", 1.0));
      R1_ASSIGN_OR_RETURN(y.original_max_position_embeddings, rr.Int("original_max_position_embeddings"));
      R1_ASSIGN_OR_RETURN(y.beta_fast, rr.Num("beta_fast", 32.0));
      R1_ASSIGN_OR_RETURN(y.beta_slow, rr.Num("beta_slow", 1.0));
      R1_ASSIGN_OR_RETURN(y.mscale, rr.Num("mscale", 1.0));
      R1_ASSIGN_OR_RETURN(y.mscale_all_dim, rr.Num("mscale_all_dim", 0.0));
      R1_ASSIGN_OR_RETURN(y.truncate, rr.Bool("truncate", true));
      if (rs.contains("attention_factor") && !rs["attention_factor"].is_null()) {
        return rr.Error("attention_factor", "an explicit attention_factor is not supported");
      }
      if (y.factor < 1.0) return rr.Error("factor", "must be at least 1");
      // The correction range takes log(original_max_position_embeddings / (2π·beta)): a beta of
      // zero or below gives NaN RoPE frequencies.
      if (!(std::isfinite(y.beta_fast) && y.beta_fast > 0)) return rr.Error("beta_fast", "must be a positive number");
      if (!(std::isfinite(y.beta_slow) && y.beta_slow > 0)) return rr.Error("beta_slow", "must be a positive number");
      if (rs.contains("rope_theta")) {
        R1_ASSIGN_OR_RETURN(c.rope_theta, rr.Num("rope_theta", c.rope_theta));
      }
      c.yarn = y;
      // mscale and mscale_all_dim enter the attention as 0.1·m·ln(factor) + 1 (squared in the
      // softmax scale, as a ratio in the RoPE factor): values that make either zero, negative or
      // infinite would give a model of NaNs rather than an error here.
      const double softmax_scale = c.softmax_scale(), rope_factor = c.rope_attention_factor();
      if (!(std::isfinite(softmax_scale) && softmax_scale > 0 && std::isfinite(rope_factor) &&
            rope_factor > 0)) {
        return rr.Error("mscale", absl::StrCat("mscale ", y.mscale, " and mscale_all_dim ",
                                               y.mscale_all_dim, " with factor ", y.factor,
                                               " give softmax scale ", softmax_scale,
                                               " and RoPE attention factor ", rope_factor,
                                               "; both must be positive and finite"));
      }
    } else if (type == "default" || type.empty()) {
      if (rs.contains("rope_theta")) {
        R1_ASSIGN_OR_RETURN(c.rope_theta, rr.Num("rope_theta", c.rope_theta));
      }
    } else {
      return r.Error(rope_field, absl::StrCat("type '", type, "' is not supported (supported: yarn, or null)"));
    }
  }

  // The RoPE base: a non-positive one turns the inverse frequencies into inf / NaN.
  if (!(c.rope_theta > 0)) {
    return r.Error("rope_theta", absl::StrCat("must be positive, got ", c.rope_theta));
  }

  if (j.contains("quantization_config") && !j["quantization_config"].is_null()) {
    const json& q = j["quantization_config"];
    if (!q.is_object()) return r.Error("quantization_config", "must be an object");
    Reader qr(q, absl::StrCat(source, ": quantization_config"));
    R1_RETURN_IF_ERROR(qr.Expect("quant_method", {"fp8"}));
    R1_RETURN_IF_ERROR(qr.Expect("fmt", {"e4m3"}));
    R1_RETURN_IF_ERROR(qr.Expect("activation_scheme", {"dynamic"}));
    if (!q.contains("quant_method")) return qr.Error("quant_method", "missing");
    Fp8Quantization f;
    if (q.contains("weight_block_size")) {
      const json& b = q["weight_block_size"];
      if (!b.is_array() || b.size() != 2 || !b[0].is_number_integer() || !b[1].is_number_integer() ||
          b[0].get<int64_t>() < 1 || b[1].get<int64_t>() < 1) {
        return qr.Error("weight_block_size", "must be two positive integers");
      }
      f.block_rows = b[0].get<int64_t>();
      f.block_cols = b[1].get<int64_t>();
    }
    c.fp8 = f;
  }
  return c;
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& model_dir) {
  const std::string path = (std::filesystem::path(model_dir) / "config.json").string();
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (ss.str().size() > (16u << 20)) return absl::InvalidArgumentError(absl::StrCat(path, ": larger than 16 MB"));
  return ParseModelConfig(ss.str(), path);
}

}  // namespace r1

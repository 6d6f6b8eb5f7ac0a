// common/config: the published config.json files of DeepSeek-R1, V3 and V3.1 (tests/data/configs)
// parse to the values the model needs; every unsupported value is an error naming the field.
#include "common/config.h"

#include <cmath>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/unit/test_util.h"

namespace r1 {
namespace {

using nlohmann::json;

std::string PublishedPath(const std::string& name) {
  return std::string(R1_SOURCE_DIR) + "/tests/data/configs/" + name + ".json";
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json Published(const std::string& name) { return json::parse(ReadText(PublishedPath(name))); }

// The source name edited configs are parsed under; errors must carry it.
constexpr char kSource[] = "edited/config.json";

absl::StatusOr<ModelConfig> Parse(const json& j) { return ParseModelConfig(j.dump(), kSource); }

// R1's config.json after `edit`.
absl::StatusOr<ModelConfig> ParseEditedR1(const std::function<void(json&)>& edit) {
  json j = Published("deepseek-r1");
  edit(j);
  return Parse(j);
}

// Checks that the edited R1 config is rejected with an error naming the source and `field`.
void ExpectRejected(const std::function<void(json&)>& edit, const std::string& field) {
  auto c = ParseEditedR1(edit);
  ASSERT_FALSE(c.ok()) << "an edit of " << field << " was accepted";
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
  const std::string msg(c.status().message());
  EXPECT_NE(msg.find(kSource), std::string::npos) << msg;
  EXPECT_NE(msg.find(field), std::string::npos) << "'" << field << "' is not named in: " << msg;
}

// ---- the published configs ---------------------------------------------------------------

// The architecture values R1, V3 and V3.1 share.
void ExpectDeepseekV3Architecture(const ModelConfig& c) {
  EXPECT_EQ(c.vocab_size, 129280);
  EXPECT_EQ(c.hidden_size, 7168);
  EXPECT_EQ(c.intermediate_size, 18432);
  EXPECT_EQ(c.moe_intermediate_size, 2048);
  EXPECT_EQ(c.num_hidden_layers, 61);
  EXPECT_EQ(c.num_nextn_predict_layers, 1);
  EXPECT_EQ(c.first_k_dense_replace, 3);
  EXPECT_EQ(c.moe_layer_freq, 1);
  EXPECT_EQ(c.num_attention_heads, 128);
  ASSERT_TRUE(c.q_lora_rank.has_value());
  EXPECT_EQ(*c.q_lora_rank, 1536);
  EXPECT_EQ(c.kv_lora_rank, 512);
  EXPECT_EQ(c.qk_rope_head_dim, 64);
  EXPECT_EQ(c.qk_nope_head_dim, 128);
  EXPECT_EQ(c.v_head_dim, 128);
  EXPECT_EQ(c.qk_head_dim(), 192);
  EXPECT_EQ(c.kv_latent_dim(), 576);
  EXPECT_EQ(c.n_routed_experts, 256);
  EXPECT_EQ(c.n_shared_experts, 1);
  EXPECT_EQ(c.num_experts_per_tok, 8);
  EXPECT_EQ(c.n_group, 8);
  EXPECT_EQ(c.topk_group, 4);
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_DOUBLE_EQ(c.routed_scaling_factor, 2.5);
  EXPECT_EQ(c.max_position_embeddings, 163840);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_TRUE(c.rope_interleave);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.bos_token_id, 0);
  EXPECT_EQ(c.eos_token_id, 1);
  ASSERT_TRUE(c.yarn.has_value());
  EXPECT_DOUBLE_EQ(c.yarn->factor, 40.0);
  EXPECT_EQ(c.yarn->original_max_position_embeddings, 4096);
  EXPECT_DOUBLE_EQ(c.yarn->beta_fast, 32.0);
  EXPECT_DOUBLE_EQ(c.yarn->beta_slow, 1.0);
  EXPECT_DOUBLE_EQ(c.yarn->mscale, 1.0);
  EXPECT_DOUBLE_EQ(c.yarn->mscale_all_dim, 1.0);
  ASSERT_TRUE(c.fp8.has_value());
  EXPECT_EQ(c.fp8->block_rows, 128);
  EXPECT_EQ(c.fp8->block_cols, 128);
  EXPECT_FALSE(c.is_moe_layer(2));
  EXPECT_TRUE(c.is_moe_layer(3));
  EXPECT_TRUE(c.is_moe_layer(60));
}

TEST(Config, DeepseekR1) {
  auto c = ParseModelConfig(ReadText(PublishedPath("deepseek-r1")), "deepseek-r1.json");
  ASSERT_TRUE(c.ok()) << c.status();
  ExpectDeepseekV3Architecture(*c);
}

TEST(Config, DeepseekV3) {
  auto c = ParseModelConfig(ReadText(PublishedPath("deepseek-v3")), "deepseek-v3.json");
  ASSERT_TRUE(c.ok()) << c.status();
  ExpectDeepseekV3Architecture(*c);
}

TEST(Config, DeepseekV31) {
  // V3.1 adds quantization_config.scale_fmt "ue8m0": its float32 scales are powers of two, read
  // the same way.
  auto c = ParseModelConfig(ReadText(PublishedPath("deepseek-v3.1")), "deepseek-v3.1.json");
  ASSERT_TRUE(c.ok()) << c.status();
  ExpectDeepseekV3Architecture(*c);
}

TEST(Config, LoadModelConfigReadsFolder) {
  const std::string dir = testing::TempDir("config_load");
  std::ofstream(dir + "/config.json") << ReadText(PublishedPath("deepseek-r1"));
  auto c = LoadModelConfig(dir);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->hidden_size, 7168);

  auto missing = LoadModelConfig(dir + "/nowhere");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(std::string(missing.status().message()).find(dir + "/nowhere/config.json"), std::string::npos)
      << missing.status();

  std::ofstream(dir + "/config.json") << "{\"hidden_size\": ";
  auto bad = LoadModelConfig(dir);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(std::string(bad.status().message()).find(dir + "/config.json"), std::string::npos) << bad.status();
}

TEST(Config, R1SoftmaxScaleHasYarnCorrection) {
  auto c = ParseModelConfig(ReadText(PublishedPath("deepseek-r1")), "deepseek-r1.json");
  ASSERT_TRUE(c.ok()) << c.status();
  const double m = 0.1 * std::log(40.0) + 1.0;
  EXPECT_NEAR(c->softmax_scale(), std::pow(192.0, -0.5) * m * m, 1e-12);
  // mscale == mscale_all_dim: the cos/sin factor cancels to 1.
  EXPECT_NEAR(c->rope_attention_factor(), 1.0, 1e-12);
}

// ---- accepted variations -----------------------------------------------------------------

TEST(Config, NullQLoraRankMeansNoQCompression) {
  auto c = ParseEditedR1([](json& j) { j["q_lora_rank"] = nullptr; });
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->q_lora_rank.has_value());
}

TEST(Config, NullRopeScalingMeansNoYarn) {
  auto c = ParseEditedR1([](json& j) { j["rope_scaling"] = nullptr; });
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->yarn.has_value());
  EXPECT_NEAR(c->softmax_scale(), std::pow(192.0, -0.5), 1e-12);
  EXPECT_DOUBLE_EQ(c->rope_attention_factor(), 1.0);
}

TEST(Config, NoQuantizationConfigMeansNoFp8) {
  auto c = ParseEditedR1([](json& j) { j.erase("quantization_config"); });
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_FALSE(c->fp8.has_value());
}

TEST(Config, Transformers5RopeParameters) {
  // transformers 5 writes rope_parameters, with rope_type and rope_theta inside.
  auto c = ParseEditedR1([](json& j) {
    j.erase("rope_scaling");
    j.erase("rope_theta");
    j["rope_parameters"] = {{"rope_type", "yarn"},       {"factor", 40.0},     {"original_max_position_embeddings", 4096},
                            {"beta_fast", 32.0},         {"beta_slow", 1.0},   {"mscale", 1.0},
                            {"mscale_all_dim", 1.0},     {"rope_theta", 50000.0}};
  });
  ASSERT_TRUE(c.ok()) << c.status();
  ASSERT_TRUE(c->yarn.has_value());
  EXPECT_DOUBLE_EQ(c->yarn->factor, 40.0);
  EXPECT_EQ(c->yarn->original_max_position_embeddings, 4096);
  EXPECT_DOUBLE_EQ(c->yarn->mscale_all_dim, 1.0);
  EXPECT_DOUBLE_EQ(c->rope_theta, 50000.0);

  auto plain = ParseEditedR1([](json& j) {
    j.erase("rope_scaling");
    j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 20000.0}};
  });
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE(plain->yarn.has_value());
  EXPECT_DOUBLE_EQ(plain->rope_theta, 20000.0);
}

// ---- rejected values: each error names the field -----------------------------------------

TEST(ConfigRejects, SoftmaxScoring) {
  ExpectRejected([](json& j) { j["scoring_func"] = "softmax"; }, "scoring_func");
}
TEST(ConfigRejects, GreedyTopkMethod) {
  ExpectRejected([](json& j) { j["topk_method"] = "greedy"; }, "topk_method");
}
TEST(ConfigRejects, GeluActivation) {
  ExpectRejected([](json& j) { j["hidden_act"] = "gelu"; }, "hidden_act");
}
TEST(ConfigRejects, Fp8E5M2) {
  ExpectRejected([](json& j) { j["quantization_config"]["fmt"] = "e5m2"; }, "quantization_config: fmt");
}
TEST(ConfigRejects, QuantMethodOtherThanFp8) {
  ExpectRejected([](json& j) { j["quantization_config"]["quant_method"] = "awq"; }, "quant_method");
  ExpectRejected([](json& j) { j["quantization_config"].erase("quant_method"); }, "quant_method");
}
TEST(ConfigRejects, BadWeightBlockSize) {
  ExpectRejected([](json& j) { j["quantization_config"]["weight_block_size"] = {128}; }, "weight_block_size");
}
TEST(ConfigRejects, LinearRopeScaling) {
  ExpectRejected([](json& j) { j["rope_scaling"] = {{"type", "linear"}, {"factor", 4.0}}; }, "rope_scaling");
}
TEST(ConfigRejects, RopeTypeNotAString) {
  ExpectRejected([](json& j) { j["rope_scaling"]["type"] = 7; }, "rope_scaling");
  ExpectRejected([](json& j) { j["rope_scaling"]["rope_type"] = {"yarn"}; }, "rope_scaling");
}
TEST(ConfigRejects, NonPositiveYarnBetas) {
  ExpectRejected([](json& j) { j["rope_scaling"]["beta_fast"] = 0; }, "beta_fast");
  ExpectRejected([](json& j) { j["rope_scaling"]["beta_slow"] = -1; }, "beta_slow");
}
TEST(ConfigRejects, MoeLayerFreq2) {
  ExpectRejected([](json& j) { j["moe_layer_freq"] = 2; }, "moe_layer_freq");
}
TEST(ConfigRejects, GroupsNotDividingExperts) {
  ExpectRejected([](json& j) { j["n_group"] = 7; }, "n_group");
}
TEST(ConfigRejects, TopkGroupAboveGroups) {
  ExpectRejected([](json& j) { j["topk_group"] = 9; }, "topk_group");
}
TEST(ConfigRejects, KvHeadsNotEqualHeads) {
  ExpectRejected([](json& j) { j["num_key_value_heads"] = 16; }, "num_key_value_heads");
}
TEST(ConfigRejects, MissingHiddenSize) {
  ExpectRejected([](json& j) { j.erase("hidden_size"); }, "hidden_size");
}
TEST(ConfigRejects, HiddenSizeString) {
  ExpectRejected([](json& j) { j["hidden_size"] = "7168"; }, "hidden_size");
}
TEST(ConfigRejects, NegativeVocabSize) {
  ExpectRejected([](json& j) { j["vocab_size"] = -129280; }, "vocab_size");
}
TEST(ConfigRejects, OddRopeHeadDim) {
  ExpectRejected([](json& j) { j["qk_rope_head_dim"] = 63; }, "qk_rope_head_dim");
}
TEST(ConfigRejects, TiedEmbeddings) {
  ExpectRejected([](json& j) { j["tie_word_embeddings"] = true; }, "tie_word_embeddings");
}
TEST(ConfigRejects, OtherArchitecture) {
  ExpectRejected([](json& j) { j["architectures"] = {"DeepseekV2ForCausalLM"}; }, "architectures");
  ExpectRejected([](json& j) { j["model_type"] = "deepseek_v2"; }, "model_type");
}
TEST(ConfigRejects, InvalidJson) {
  auto c = ParseModelConfig("{\"hidden_size\": 7168,", kSource);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(std::string(c.status().message()).find(kSource), std::string::npos) << c.status();
}
TEST(ConfigRejects, JsonArray) {
  auto c = ParseModelConfig("[{\"hidden_size\": 7168}]", kSource);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(std::string(c.status().message()).find(kSource), std::string::npos) << c.status();
}

}  // namespace
}  // namespace r1

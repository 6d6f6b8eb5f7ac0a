// The model `r1 make-tiny` wrote (fixture engine_tiny): it loads, serves through the engine like
// r1::Generate, and its tokenizer files are DeepSeek-R1's — the same JSON and the same ids as the
// tokenizer tests' R1 reference folder (fixture tokenizer_reference, built by prepare.js).
#include <fstream>
#include <sstream>

#include "coordinator/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"
#include "tests/engine/engine_test_util.h"
#include "worker/generate.h"

namespace r1 {
namespace {

using testing::Collector;
using testing::Greedy;

constexpr const char* kTiny = R1_TINY_MODEL_DIR;
constexpr const char* kReference = R1_TOKENIZER_R1_REFERENCE_DIR;

nlohmann::json ReadJson(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  std::stringstream ss;
  ss << in.rdbuf();
  return nlohmann::json::parse(ss.str(), nullptr, false);
}

std::shared_ptr<const DeepseekV3Model> Tiny() {
  static std::shared_ptr<const DeepseekV3Model> model = [] {
    auto m = DeepseekV3Model::Load(kTiny);
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? std::shared_ptr<const DeepseekV3Model>(std::move(*m)) : nullptr;
  }();
  return model;
}

TEST(TinyModel, TokenizerFilesAreR1s) {
  for (const char* file : {"tokenizer.json", "tokenizer_config.json"}) {
    const nlohmann::json got = ReadJson(std::string(kTiny) + "/" + file);
    const nlohmann::json want = ReadJson(std::string(kReference) + "/" + file);
    ASSERT_FALSE(got.is_discarded()) << file;
    ASSERT_FALSE(want.is_discarded()) << file;
    EXPECT_TRUE(got == want) << file << " differs from the R1 reference folder";
  }
  auto tiny = Tokenizer::Load(kTiny);
  auto reference = Tokenizer::Load(kReference);
  ASSERT_TRUE(tiny.ok()) << tiny.status();
  ASSERT_TRUE(reference.ok()) << reference.status();
  for (const char* text : {"Hello", "Hello, world! 你好", "<｜User｜>Hi<think>\nok</think>"}) {
    EXPECT_EQ((*tiny)->Encode(text, false), (*reference)->Encode(text, false)) << text;
    EXPECT_EQ((*tiny)->Encode(text, true), (*reference)->Encode(text, true)) << text;
  }
  EXPECT_EQ((*tiny)->TokenToId("<think>"), 128798);
  EXPECT_EQ((*tiny)->bos_id(), 0);
  EXPECT_EQ((*tiny)->eos_id(), 1);
}

TEST(TinyModel, ServesThroughTheEngineLikeGenerate) {
  ASSERT_NE(Tiny(), nullptr);
  const ModelConfig& c = Tiny()->config();
  EXPECT_EQ(c.vocab_size, 129280);
  EXPECT_TRUE(c.q_lora_rank.has_value());
  EXPECT_TRUE(c.yarn.has_value());
  EXPECT_GT(c.n_group, 1);
  EXPECT_EQ(c.num_nextn_predict_layers, 1);
  EXPECT_TRUE(c.fp8.has_value());

  auto tokenizer = Tokenizer::Load(kTiny);
  ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
  std::vector<int32_t> prompt = {*(*tokenizer)->bos_id()};
  (*tokenizer)->Encode("<｜User｜>Tell me a story.<｜Assistant｜><think>\n", true, &prompt);

  GenerateOptions g;
  g.max_new_tokens = 20;
  g.stop_at_eos = false;
  auto want = Generate(*Tiny(), prompt, g);
  ASSERT_TRUE(want.ok()) << want.status();

  LocalEngine::Options o;
  o.model = Tiny();
  o.kv_blocks = 256;
  auto engine = LocalEngine::Create(o);
  ASSERT_TRUE(engine.ok()) << engine.status();
  EXPECT_EQ((*engine)->eos_token_id(), 1);
  EXPECT_EQ((*engine)->max_context(), 256 * 16);
  // Several streams at once, each with the same prompt: the prefix cache serves the later ones.
  std::vector<std::unique_ptr<Collector>> cs;
  for (int i = 0; i < 4; ++i) {
    cs.push_back(std::make_unique<Collector>());
    ASSERT_TRUE((*engine)->Submit(Greedy(prompt, 20), cs.back()->Callback()).ok());
  }
  for (auto& col : cs) {
    ASSERT_TRUE(col->Wait());
    EXPECT_EQ(col->completion().tokens, want->tokens);
  }
  const std::string text = (*tokenizer)->Decode(cs[0]->completion().tokens);
  EXPECT_FALSE(text.empty());
  EXPECT_EQ((*engine)->Stats().kv_blocks_used, 0);
}

// Throughput on the demo model (not a test: --gtest_also_run_disabled_tests).
TEST(TinyModel, DISABLED_Throughput) {
  ASSERT_NE(Tiny(), nullptr);
  for (int streams : {1, 8, 32}) {
    LocalEngine::Options o;
    o.model = Tiny();
    o.kv_blocks = 4096;
    auto engine = LocalEngine::Create(o);
    ASSERT_TRUE(engine.ok());
    std::vector<std::unique_ptr<Collector>> cs;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < streams; ++i) {
      cs.push_back(std::make_unique<Collector>());
      ASSERT_TRUE(
          (*engine)
              ->Submit(Greedy(testing::RandomPrompt(32, 128000, i), 128), cs.back()->Callback())
              .ok());
    }
    for (auto& col : cs) ASSERT_TRUE(col->Wait(600));
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf(
        "make-tiny: %2d streams: %.0f generated tokens/s (%d x 128 in %.2f s, prompts 32)\n",
        streams, streams * 128 / s, streams, s);
  }
}

}  // namespace
}  // namespace r1

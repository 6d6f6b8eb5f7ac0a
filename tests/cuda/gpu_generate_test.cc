// Generation on the GPU (worker/generate_gpu.h and `r1 generate --gpu`): greedy text equals the
// CPU reference's and transformers' golden continuation for as long as golden's top-2 margins are
// clear (> 0.05; after the first unclear step either choice is right and the texts may part),
// and seeded sampling (temperature, top-k, top-p) gives the same text for the same seed.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "gtest/gtest.h"
#include "tests/unit/test_util.h"
#include "worker/generate.h"
#include "worker/generate_gpu.h"
#include "worker/model/gpu_model.h"

namespace r1 {
namespace {

using testing::GoldenData;
using testing::GoldenModel;
using testing::ReadF32;
using testing::ReadI32;

constexpr float kClearMargin = 0.05f;

bool HaveGpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

struct GoldenGreedy {
  std::vector<int32_t> prompt, tokens;
  size_t clear = 0;  // steps before the first one whose golden margin is not clear
};

GoldenGreedy ReadGreedy(const std::string& model) {
  auto f = SafetensorsFile::Open(GoldenData(model));
  EXPECT_TRUE(f.ok());
  GoldenGreedy g;
  g.prompt = ReadI32(**f, "greedy.prompt");
  g.tokens = ReadI32(**f, "greedy.tokens");
  const auto margins = ReadF32(**f, "greedy.margins");
  while (g.clear < margins.size() && margins[g.clear] > kClearMargin) ++g.clear;
  return g;
}

std::vector<int32_t> Prefix(const std::vector<int32_t>& v, size_t n) {
  return {v.begin(), v.begin() + std::min(n, v.size())};
}

// Runs `r1 ARGS` (bounded by timeout(1)) and returns its stdout's first line.
std::string RunR1(const std::string& args) {
  const std::string cmd = "timeout 120 " + std::string(R1_BINARY_DIR) + "/cli/r1 " + args + " 2>/dev/null";
  std::unique_ptr<FILE, int (*)(FILE*)> p(popen(cmd.c_str(), "r"), pclose);
  if (!p) return "";
  std::string out;
  char buf[4096];
  while (fgets(buf, sizeof buf, p.get()) != nullptr) out += buf;
  return out.substr(0, out.find('\n'));
}

std::vector<int32_t> ParseIds(const std::string& line) {
  std::vector<int32_t> ids;
  for (absl::string_view s : absl::StrSplit(line, ',', absl::SkipEmpty())) {
    int32_t v;
    if (!absl::SimpleAtoi(s, &v)) return {};
    ids.push_back(v);
  }
  return ids;
}

class GpuGenerateTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_P(GpuGenerateTest, GreedyEqualsCpuAndGoldenWhileMarginsAreClear) {
  const std::string dir = GetParam(), name = dir.substr(0, dir.rfind('-'));
  const GoldenGreedy g = ReadGreedy(name);
  ASSERT_GE(g.clear, 5u) << "golden's greedy continuation has too few clear steps to compare";
  GenerateOptions o;
  o.max_new_tokens = static_cast<int64_t>(g.tokens.size());
  o.stop_at_eos = false;
  auto cpu = DeepseekV3Model::Load(GoldenModel(dir));
  ASSERT_TRUE(cpu.ok());
  auto want = Generate(**cpu, g.prompt, o);
  ASSERT_TRUE(want.ok());
  ASSERT_EQ(Prefix(want->tokens, g.clear), Prefix(g.tokens, g.clear));  // the CPU reference itself
  for (GpuActivations mode : {GpuActivations::kFloat32, GpuActivations::kBf16, GpuActivations::kFp8}) {
    GpuModelOptions mo;
    mo.activations = mode;
    mo.max_step_tokens = 64;
    auto gpu = GpuDeepseekV3Model::Load(GoldenModel(dir), mo);
    ASSERT_TRUE(gpu.ok()) << gpu.status();
    auto got = GenerateOnGpu(**gpu, g.prompt, o);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->tokens.size(), g.tokens.size());
    size_t agree = 0;
    while (agree < g.tokens.size() && got->tokens[agree] == g.tokens[agree]) ++agree;
    std::printf("[ gpu ] %s greedy (%s activations): %zu of %zu golden tokens before the first difference "
                "(%zu clear)\n", dir.c_str(), GpuActivationsName(mode), agree, g.tokens.size(), g.clear);
    // The claim holds for the f32 mode; bf16 and fp8 are printed for the record.
    if (mode == GpuActivations::kFloat32) {
      EXPECT_EQ(Prefix(got->tokens, g.clear), Prefix(g.tokens, g.clear));
      EXPECT_GE((*gpu)->graph_replays(), static_cast<int64_t>(g.tokens.size()) - 2);  // decode replays graphs
    }
  }
}

TEST_P(GpuGenerateTest, SeededSamplingRepeats) {
  const std::string dir = GetParam();
  GpuModelOptions mo;
  mo.max_step_tokens = 64;
  auto gpu = GpuDeepseekV3Model::Load(GoldenModel(dir), mo);
  ASSERT_TRUE(gpu.ok());
  const GoldenGreedy g = ReadGreedy(dir.substr(0, dir.rfind('-')));
  GenerateOptions o;
  o.max_new_tokens = 24;
  o.stop_at_eos = false;
  o.sampling.temperature = 1.0f;
  o.sampling.top_k = 50;
  o.sampling.top_p = 0.95f;
  o.sampling.seed = 7;
  auto a = GenerateOnGpu(**gpu, g.prompt, o), b = GenerateOnGpu(**gpu, g.prompt, o);
  o.sampling.seed = 8;
  auto c = GenerateOnGpu(**gpu, g.prompt, o);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->tokens, b->tokens);
  EXPECT_NE(a->tokens, c->tokens);  // 24 draws at temperature 1 over top-50: equal only by accident
  for (int32_t t : a->tokens) EXPECT_TRUE(t >= 0 && t < (*gpu)->config().vocab_size);
}

// The command line end to end: `r1 generate --gpu` against `r1 generate` on the CPU.
TEST_P(GpuGenerateTest, CommandLineGpuEqualsCpu) {
  const std::string dir = GetParam();
  const GoldenGreedy g = ReadGreedy(dir.substr(0, dir.rfind('-')));
  const std::string args = "generate --model " + GoldenModel(dir) + " --tokens " + absl::StrJoin(g.prompt, ",") +
                           " --max-new-tokens 32 --no-eos-stop";
  const auto cpu = ParseIds(RunR1(args));
  const auto gpu = ParseIds(RunR1(args + " --gpu"));
  ASSERT_EQ(cpu.size(), 32u) << "r1 generate (CPU) printed no tokens";
  ASSERT_EQ(gpu.size(), 32u) << "r1 generate --gpu printed no tokens";
  EXPECT_EQ(Prefix(gpu, g.clear), Prefix(cpu, g.clear));
  std::printf("[ gpu ] r1 generate --gpu vs CPU on %s: %s\n", dir.c_str(),
              gpu == cpu ? "all 32 tokens equal" : "equal over the clear-margin prefix only");
  const std::string sampled = args + " --gpu --temperature 0.9 --top-k 40 --top-p 0.9 --seed 11";
  const auto s1 = ParseIds(RunR1(sampled)), s2 = ParseIds(RunR1(sampled));
  ASSERT_EQ(s1.size(), 32u);
  EXPECT_EQ(s1, s2);
}

INSTANTIATE_TEST_SUITE_P(Golden, GpuGenerateTest, ::testing::Values("golden-a-fp8", "golden-b-fp8"),
                         [](const auto& info) {
                           std::string s = info.param;
                           std::replace(s.begin(), s.end(), '-', '_');
                           return s;
                         });

}  // namespace
}  // namespace r1

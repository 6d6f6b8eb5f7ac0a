// The scheduler (LocalEngine) on the GPU model (GpuModelExecutor, as `r1 serve --gpu` runs it):
// eight requests of different lengths at once — a mixed batch of prefill chunks and decodes
// through the device's paged cache, graph-replayed decode — each give the CPU reference's greedy
// tokens for as long as the reference's top-2 margin is clear (> 0.05), and every KV block is
// returned afterwards.
#include <cuda_runtime.h>

#include <memory>
#include <vector>

#include "coordinator/engine/gpu_executor.h"
#include "tests/engine/engine_test_util.h"
#include "worker/generate.h"

namespace r1 {
namespace {

constexpr float kClearMargin = 0.05f;

TEST(GpuEngine, MixedBatchGivesTheCpuReferenceTokens) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) GTEST_SKIP() << "no GPU";
  const std::string dir = testing::GoldenModelDir("golden-a-fp8");
  auto cpu = DeepseekV3Model::Load(dir);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  GpuModelOptions g;
  g.max_step_tokens = 256;
  auto gpu = GpuDeepseekV3Model::Load(dir, g);
  ASSERT_TRUE(gpu.ok()) << gpu.status();
  LocalEngine::Options o;
  o.executor = std::make_shared<GpuModelExecutor>(std::move(*gpu));
  o.kv_blocks = 512;
  o.block_size = 16;
  o.max_step_tokens = 256;
  o.max_batch_size = 16;
  auto engine = LocalEngine::Create(o);
  ASSERT_TRUE(engine.ok()) << engine.status();

  const int64_t vocab = (*cpu)->config().vocab_size;
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::unique_ptr<testing::Collector>> collectors;
  for (int i = 0; i < 8; ++i) {
    prompts.push_back(testing::RandomPrompt(1 + 41 * i, vocab, 900 + i));
    collectors.push_back(std::make_unique<testing::Collector>());
    ASSERT_TRUE((*engine)->Submit(testing::Greedy(prompts.back(), 24), collectors.back()->Callback()).ok());
  }
  int64_t compared = 0;
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(collectors[i]->Wait(120));
    GenerateOptions go;
    go.max_new_tokens = 24;
    go.stop_at_eos = false;
    auto want = Generate(**cpu, prompts[i], go);
    ASSERT_TRUE(want.ok()) << want.status();
    const std::vector<int32_t>& got = collectors[i]->completion().tokens;
    ASSERT_EQ(got.size(), 24u) << "request " << i;
    for (size_t t = 0; t < got.size(); ++t) {
      ASSERT_EQ(got[t], want->tokens[t]) << "request " << i << " token " << t;
      ++compared;
      if (want->margins[t] <= kClearMargin) break;  // either choice is right from here on
    }
  }
  std::printf("GPU engine: %ld greedy tokens compared with the CPU reference, all equal\n",
              static_cast<long>(compared));
  EXPECT_GE(compared, 40);
  const EngineStats s = (*engine)->Stats();
  EXPECT_EQ(s.kv_blocks_used, 0);
  EXPECT_GT(s.steps, 24);
}

}  // namespace
}  // namespace r1

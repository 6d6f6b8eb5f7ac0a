// Tensor + expert parallel execution of the CPU model: W ranks as threads of this process,
// connected by the Gloo communicator (TCP on loopback, rendezvous through an in-process store).
// Each rank's logits must equal the single-process run, and each rank must hold exactly its share.
#include <thread>
#include <vector>

#include "gloo/rendezvous/hash_store.h"
#include "gtest/gtest.h"
#include "tests/unit/test_util.h"
#include "worker/model/deepseek_v3.h"
#include "worker/parallel/gloo_communicator.h"

namespace r1 {
namespace {

using testing::GoldenData;
using testing::GoldenModel;
using testing::ReadI32;
using testing::RelL2;

struct RankResult {
  absl::Status status;
  std::vector<std::vector<float>> prefill, decode;
  size_t sharded = 0, replicated = 0;
};

// Runs a prefill of `prompt` then 3 decode steps on W ranks; returns each rank's logits.
std::vector<RankResult> RunRanks(const std::string& model, int world, const std::vector<int32_t>& prompt) {
  auto store = std::make_shared<gloo::rendezvous::HashStore>();
  std::vector<RankResult> results(world);
  std::vector<std::thread> threads;
  for (int rank = 0; rank < world; ++rank) {
    threads.emplace_back([&, rank] {
      RankResult& res = results[rank];
      ParallelLayout layout{rank, world};
      std::unique_ptr<Communicator> comm;
      if (world > 1) {
        auto c = CreateGlooCommunicator(layout, store, {});
        if (!c.ok()) { res.status = c.status(); return; }
        comm = std::move(*c);
      }
      auto m = DeepseekV3Model::Load(GoldenModel(model), layout, comm.get());
      if (!m.ok()) { res.status = m.status(); return; }
      res.sharded = (*m)->sharded_bytes();
      res.replicated = (*m)->replicated_bytes();
      const ModelConfig& c = (*m)->config();
      auto cache = PagedKvCache::Create(8, 64, c.num_hidden_layers, c.kv_latent_dim());
      std::vector<int32_t> blocks = {3, 1, 4, 0, 2, 5, 6, 7};
      auto p = (*m)->Forward({{prompt, 0, blocks, true}}, *cache);
      if (!p.ok()) { res.status = p.status(); return; }
      res.prefill = *p;
      int32_t next = 7;
      for (int i = 0; i < 3; ++i) {
        auto d = (*m)->Forward({{{next}, static_cast<int64_t>(prompt.size()) + i, blocks, false}}, *cache);
        if (!d.ok()) { res.status = d.status(); return; }
        res.decode.push_back((*d)[0]);
        next = (next * 31 + 5) % 1000;
      }
    });
  }
  for (auto& t : threads) t.join();
  return results;
}

TEST(ParallelModel, TensorAndExpertParallelMatchesSingleProcess) {
  auto golden = SafetensorsFile::Open(GoldenData("golden-a"));
  ASSERT_TRUE(golden.ok());
  const std::vector<int32_t> prompt = ReadI32(**golden, "prompt.2.tokens");
  std::vector<RankResult> single = RunRanks("golden-a-fp8", 1, prompt);
  ASSERT_TRUE(single[0].status.ok()) << single[0].status;
  for (int world : {2, 4}) {
    std::vector<RankResult> ranks = RunRanks("golden-a-fp8", world, prompt);
    for (int r = 0; r < world; ++r) {
      ASSERT_TRUE(ranks[r].status.ok()) << "rank " << r << ": " << ranks[r].status;
      const auto& got = ranks[r].prefill[0];
      const auto& want = single[0].prefill[0];
      ASSERT_EQ(got.size(), want.size());
      EXPECT_LE(RelL2(got.data(), want.data(), want.size()), 1e-5) << "W=" << world << " rank " << r;
      for (size_t d = 0; d < 3; ++d) {
        EXPECT_LE(RelL2(ranks[r].decode[d].data(), single[0].decode[d].data(), want.size() / prompt.size()), 1e-5)
            << "W=" << world << " rank " << r << " decode " << d;
      }
      // Exactly 1/W of the split tensors plus all of the replicated ones.
      EXPECT_EQ(ranks[r].sharded * world, single[0].sharded) << "W=" << world << " rank " << r;
      EXPECT_EQ(ranks[r].replicated, single[0].replicated) << "W=" << world << " rank " << r;
    }
    std::printf("[ parallel ] W=%d: rank weights %.3f MB (%.3f MB split + %.3f MB replicated) vs %.3f MB alone\n",
                world, (ranks[0].sharded + ranks[0].replicated) / 1e6, ranks[0].sharded / 1e6,
                ranks[0].replicated / 1e6, (single[0].sharded + single[0].replicated) / 1e6);
  }
}

TEST(ParallelModel, ImpossibleLayoutIsAClearError) {
  // golden-b has 3 attention heads: 2 or 4 ranks cannot split them.
  auto c = LoadModelConfig(GoldenModel("golden-b-fp8"));
  ASSERT_TRUE(c.ok());
  absl::Status s = DeepseekV3Model::CheckLayout(*c, 2);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("num_attention_heads = 3 is not divisible by 2"), std::string::npos) << s;
  EXPECT_TRUE(DeepseekV3Model::CheckLayout(*c, 1).ok());
  auto a = LoadModelConfig(GoldenModel("golden-a-fp8"));
  ASSERT_TRUE(a.ok());
  s = DeepseekV3Model::CheckLayout(*a, 8);  // 4 heads
  EXPECT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("num_attention_heads"), std::string::npos) << s;
  EXPECT_FALSE(DeepseekV3Model::Load(GoldenModel("golden-b-fp8"), {0, 2}, nullptr).ok());
}

}  // namespace
}  // namespace r1

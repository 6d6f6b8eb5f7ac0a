// planner/ and `r1 plan`: every figure for DeepSeek-R1 is checked against a computation written out
// by hand from the published config (tests/data/configs/deepseek-r1.json), to the byte.
#include "planner/planner.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "cli/plan.h"
#include "common/config.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "worker/model/deepseek_v3.h"

namespace r1::planner {
namespace {

using nlohmann::json;

std::string ReadText(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << path;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string SourcePath(const std::string& rel) { return std::string(R1_SOURCE_DIR) + "/" + rel; }

ModelConfig R1() {
  auto c = LoadModelPreset("deepseek-r1");
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

// R1's published config with `n_routed_experts` changed (a V3-sized model with another expert count).
ModelConfig R1WithExperts(int64_t experts) {
  json j = json::parse(ReadText(SourcePath("tests/data/configs/deepseek-r1.json")));
  j["n_routed_experts"] = experts;
  auto c = ParseModelConfig(j.dump(), "edited");
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

GpuSpec Gpu(const std::string& name) {
  auto g = FindGpu(name);
  EXPECT_TRUE(g.ok()) << g.status();
  return *g;
}

PlanResult Plan(const ModelConfig& c, const std::string& gpu, int64_t per_node, int64_t nodes = 1) {
  PlanRequest q;
  q.config = c;
  q.model_label = "test";
  q.tensors = PublishedTensors(c);
  q.gpu = Gpu(gpu);
  q.gpus_per_node = per_node;
  q.nodes = nodes;
  auto r = MakePlan(q);
  EXPECT_TRUE(r.ok()) << r.status();
  return *r;
}

// ---- The hand computation of R1 (FP8 e4m3 = 1 byte, F32 scale per 128x128 block, BF16 = 2) ----

constexpr uint64_t kH = 7168, kV = 129280, kI = 18432, kIMoe = 2048, kLayers = 61, kDense = 3, kMoe = 58;

uint64_t Blocks(uint64_t n) { return (n + 127) / 128; }
// An FP8 linear weight [rows, cols] with its F32 weight_scale_inv [ceil(rows/128), ceil(cols/128)].
uint64_t Fp8(uint64_t rows, uint64_t cols) { return rows * cols + 4 * Blocks(rows) * Blocks(cols); }
// A row or column slice of such a weight aligned to the 128-blocks: `part` of `rows` (or cols).
uint64_t Fp8Rows(uint64_t part_rows, uint64_t cols) { return part_rows * cols + 4 * Blocks(part_rows) * Blocks(cols); }

// Attention of one layer: q_a [1536, 7168], q_b [128*192, 1536], kv_a [576, 7168],
// kv_b [128*256, 512], o [7168, 128*128].
constexpr uint64_t kAttentionLayer = 11012736 + 37757952 + 4129888 + 16781312 + 117469184;  // = 187,151,072
uint64_t AttentionLayer() {
  return Fp8(1536, kH) + Fp8(128 * 192, 1536) + Fp8(576, kH) + Fp8(128 * 256, 512) + Fp8(kH, 128 * 128);
}
uint64_t Expert() { return 3 * Fp8(kIMoe, kH); }  // gate, up [2048, 7168]; down [7168, 2048]: 14,683,648 each
uint64_t DenseLayer() { return 3 * Fp8(kI, kH); }
uint64_t NormsAndRouter() {
  const uint64_t norms = kLayers * (2 * kH + 1536 + 512) * 2 + kH * 2;  // input, post-attention, q_a, kv_a; final
  const uint64_t router = kMoe * (256 * kH * 2 + 256 * 4);               // gate.weight BF16, bias F32
  return norms + router;
}
uint64_t EmbedAndHead() { return 2 * kV * kH * 2; }

// Per GPU at W (8 or 16: every slice is a whole number of 128-blocks).
WeightTally R1PerGpu(uint64_t w) {
  WeightTally t;
  t[Part::kAttention] = kLayers * (Fp8(1536, kH) + Fp8(576, kH)                 // replicated
                                   + Fp8Rows(128 * 192 / w, 1536)               // q_b rows of NH/W heads
                                   + Fp8Rows(128 * 256 / w, 512)                // kv_b rows
                                   + Fp8Rows(128 * 128 / w, kH));               // o columns (same count, transposed)
  t[Part::kDenseMlp] = kDense * 3 * Fp8Rows(kI / w, kH);
  t[Part::kSharedExperts] = kMoe * 3 * Fp8Rows(kIMoe / w, kH);
  t[Part::kRoutedExperts] = kMoe * (256 / w) * Expert();
  t[Part::kVocab] = 2 * (kV / w) * kH * 2;
  t[Part::kNormsRouter] = NormsAndRouter();
  return t;
}

TEST(PlanR1, WholeModelBytesByHand) {
  EXPECT_EQ(AttentionLayer(), kAttentionLayer);
  EXPECT_EQ(kAttentionLayer, 187151072u);
  EXPECT_EQ(Expert(), 3u * (2048 * 7168 + 4 * 16 * 56));
  // Per MoE layer, routed experts: 256 x 3 x 7168 x 2048 bytes + scales.
  EXPECT_EQ(256 * Expert(), 256ull * 3 * 7168 * 2048 + 256ull * 3 * 4 * 16 * 56);
  const ModelConfig c = R1();
  const ModelWeights m = TallyModel(c, PublishedTensors(c));
  EXPECT_EQ(m.by_part[Part::kAttention], kLayers * AttentionLayer());
  EXPECT_EQ(m.by_part[Part::kDenseMlp], kDense * DenseLayer());
  EXPECT_EQ(m.by_part[Part::kSharedExperts], kMoe * Expert());
  EXPECT_EQ(m.by_part[Part::kRoutedExperts], kMoe * 256 * Expert());
  EXPECT_EQ(m.by_part[Part::kVocab], EmbedAndHead());
  EXPECT_EQ(m.by_part[Part::kVocab], 2ull * 129280 * 7168 * 2);
  EXPECT_EQ(m.by_part[Part::kNormsRouter], NormsAndRouter());
  EXPECT_EQ(m.by_part[Part::kOther], 0u);
  const uint64_t total = kLayers * AttentionLayer() + kDense * DenseLayer() + kMoe * 257 * Expert() + EmbedAndHead() +
                         NormsAndRouter();
  EXPECT_EQ(m.by_part.total(), total);
  EXPECT_EQ(total, 673150611808u);  // 673.15 GB = 626.9 GiB: FP8 + scales + BF16, MTP excluded
  // The FP8 bytes alone: every linear weight of the 61 layers.
  const uint64_t fp8 = kLayers * (1536 * kH + 128 * 192 * 1536 + 576 * kH + 128 * 256 * 512 + kH * 128 * 128) +
                       kDense * 3 * kI * kH + kMoe * 257 * 3 * kIMoe * kH;
  EXPECT_EQ(m.by_dtype.at("F8_E4M3"), fp8);
  EXPECT_EQ(m.by_dtype.at("BF16"), EmbedAndHead() + kLayers * (2 * kH + 1536 + 512) * 2 + kH * 2 + kMoe * 256 * kH * 2);
  EXPECT_EQ(m.by_dtype.size(), 3u);  // F8_E4M3, F32, BF16
  // Parameters: 671.0 B loaded; the MTP layer 61 is in the checkpoint but not loaded.
  EXPECT_EQ(m.parameters, 671026419200);
  EXPECT_GT(m.mtp_bytes, 0u);
  EXPECT_EQ(m.mtp_parameters, 13463426304);
  // MTP layer: one MoE layer + embed_tokens, shared_head.head [V, H] BF16, eh_proj [H, 2H] FP8, 4 norms.
  const uint64_t mtp = AttentionLayer() + 257 * Expert() + (2 * kH + 1536 + 512) * 2 + 256 * kH * 2 + 256 * 4 +
                       EmbedAndHead() + Fp8(kH, 2 * kH) + 3 * kH * 2;
  EXPECT_EQ(m.mtp_bytes, mtp);
}

TEST(PlanR1, PerGpuBytesByHand) {
  const ModelConfig c = R1();
  const auto tensors = PublishedTensors(c);
  for (uint64_t w : {8ull, 16ull}) {
    const GpuWeights g = PerGpuWeights(c, tensors, static_cast<int64_t>(w));
    const WeightTally want = R1PerGpu(w);
    for (int p = 0; p < kNumParts; ++p) {
      EXPECT_EQ(g.worst.bytes[p], want.bytes[p]) << "W = " << w << ", " << PartName(static_cast<Part>(p));
    }
    EXPECT_EQ(g.least, g.worst.total()) << "every rank holds the same bytes at W = " << w;
  }
  EXPECT_EQ(R1PerGpu(8).total(), 85140130848u);   // 85.14 GB = 79.29 GiB
  EXPECT_EQ(R1PerGpu(16).total(), 43139382208u);  // 43.14 GB = 40.18 GiB
  // W = 1 holds the whole model.
  EXPECT_EQ(PerGpuWeights(c, tensors, 1).worst.total(), 673150611808u);
}

TEST(PlanR1, KvBytesPerToken) {
  const ModelConfig c = R1();
  EXPECT_EQ(KvBytesPerToken(c, 2), 61u * 576 * 2);
  EXPECT_EQ(KvBytesPerToken(c, 2), 70272u);
  EXPECT_EQ(KvBytesPerToken(c, 1), 35136u);
}

TEST(PlanR1, ReserveRule) {
  const ModelConfig c = R1();
  // 16 H + 7 k H + 6 max(k I_moe, I / W)
  EXPECT_EQ(WorkspacePerToken(c, 8), 16 * kH + 7 * 8 * kH + 6 * 8 * kIMoe);
  EXPECT_EQ(WorkspacePerToken(c, 8), 614400u);
  EXPECT_EQ(WorkspacePerToken(c, 1), 16 * kH + 7 * 8 * kH + 6 * kI);  // the dense MLP unsplit is wider
}

// The capacity the planner must report for R1 on W GPUs of `gpu_mib` MiB, by hand.
int64_t HandKvBlocks(uint64_t gpu_mib, uint64_t w) {
  const int64_t free = static_cast<int64_t>(gpu_mib << 20) - static_cast<int64_t>(R1PerGpu(w).total()) -
                       static_cast<int64_t>((4ull << 30) + 8192ull * 614400);
  return free > 0 ? free / (16 * 70272) : 0;
}

TEST(PlanR1, EightH200Fits) {
  const PlanResult r = Plan(R1(), "h200", 8);
  ASSERT_TRUE(r.memory.has_value());
  EXPECT_TRUE(r.layout_problems.empty());
  EXPECT_TRUE(r.fits) << r.verdict;
  EXPECT_EQ(r.memory->gpu_bytes, 143771ull << 20);  // 140.40 GiB as nvidia-smi reports
  EXPECT_EQ(r.memory->weights.worst.total(), R1PerGpu(8).total());
  EXPECT_EQ(r.memory->kv_blocks, HandKvBlocks(143771, 8));
  EXPECT_EQ(r.memory->kv_blocks, 50061);
  EXPECT_EQ(r.memory->kv_tokens, 800976);
  EXPECT_EQ(r.max_context_one_sequence, 163840);  // max_position_embeddings caps it
  for (const ContextRow& row : r.contexts) EXPECT_EQ(row.sequences, 50061 / ((row.context + 15) / 16)) << row.context;
  ASSERT_GE(r.contexts.size(), 4u);
  EXPECT_EQ(r.contexts[0].context, 4096);
  EXPECT_EQ(r.contexts[0].sequences, 195);
  EXPECT_EQ(r.contexts[3].context, 131072);
  EXPECT_EQ(r.contexts[3].sequences, 6);
  const std::string text = RenderText(r);
  EXPECT_NE(text.find("mpirun -np 8 r1-worker --model MODEL_DIR --coordinator COORDINATOR_HOST:50051"), std::string::npos) << text;
  EXPECT_NE(text.find("r1-coordinator --workers 8 --listen 0.0.0.0:50051 --kv-blocks 50061 --block-size 16"), std::string::npos);
  EXPECT_NE(text.find("not loaded"), std::string::npos);
  EXPECT_NE(text.find("page cache"), std::string::npos);
  const json j = RenderJson(r);
  EXPECT_EQ(j["fits"], true);
  EXPECT_EQ(j["per_gpu"]["weights"]["total"], R1PerGpu(8).total());
  EXPECT_EQ(j["kv"]["bytes_per_token"], 70272);
  EXPECT_EQ(j["launch"]["kubernetes"]["workers_per_group"], 8);
  EXPECT_EQ(j["launch"]["kubernetes"]["gpus_per_pod"], 8);
  EXPECT_EQ(j["launch"]["kubernetes"]["pods"], 1);
  EXPECT_NE(text.find("1 pod(s) of 8 GPUs (LeaderWorkerSet size 1, nvidia.com/gpu: 8"), std::string::npos) << text;
  EXPECT_EQ(j["model"]["mtp_loaded"], false);
}

TEST(PlanR1, EightH100DoesNotFit) {
  // 673 GB / 8 = 85.1 GB of weights per GPU against the 85.5 GB (79.65 GiB) an H100 reports: the
  // weights alone leave 0.4 GB, less than the reserve.
  const PlanResult r = Plan(R1(), "h100", 8);
  ASSERT_TRUE(r.memory.has_value());
  EXPECT_FALSE(r.fits);
  EXPECT_LT(r.memory->free_bytes, 0);
  EXPECT_EQ(r.memory->kv_tokens, 0);
  EXPECT_GT(static_cast<uint64_t>(81559) << 20, R1PerGpu(8).total());  // the weights alone would squeeze in
  ASSERT_TRUE(r.smallest_world_same_gpu.has_value());
  EXPECT_EQ(*r.smallest_world_same_gpu, 16);  // two nodes
  // A GPU with more memory at W = 8: H200 and B200 (H100 NVL and H20 too).
  EXPECT_NE(std::find(r.larger_gpus.begin(), r.larger_gpus.end(), "h200"), r.larger_gpus.end());
  EXPECT_NE(std::find(r.larger_gpus.begin(), r.larger_gpus.end(), "b200"), r.larger_gpus.end());
  EXPECT_EQ(std::find(r.larger_gpus.begin(), r.larger_gpus.end(), "a100-80g"), r.larger_gpus.end());
  EXPECT_EQ(RenderText(r).find("mpirun"), std::string::npos) << "no launch line for a plan that cannot load";
}

TEST(PlanR1, SixteenH100TwoNodesFit) {
  const PlanResult r = Plan(R1(), "h100", 8, 2);
  ASSERT_TRUE(r.memory.has_value());
  EXPECT_TRUE(r.fits) << r.verdict;
  EXPECT_EQ(r.world, 16);
  EXPECT_EQ(r.memory->weights.worst.total(), R1PerGpu(16).total());
  EXPECT_EQ(r.memory->kv_blocks, HandKvBlocks(81559, 16));
  EXPECT_EQ(r.memory->kv_tokens, 470352);
  const std::string text = RenderText(r);
  EXPECT_NE(text.find("mpirun -np 16 --host node0:8,node1:8 r1-worker"), std::string::npos) << text;
  EXPECT_NE(text.find("r1-coordinator --workers 16"), std::string::npos);
}

TEST(PlanR1, FourH200DoNotFit) {
  const PlanResult r = Plan(R1(), "h200", 4);
  ASSERT_TRUE(r.memory.has_value());
  EXPECT_FALSE(r.fits);
  EXPECT_EQ(r.memory->weights.worst.total(), 169141628128u);  // ~169 GB per GPU > 150.75 GB
  EXPECT_LT(r.memory->free_bytes, 0);
  ASSERT_TRUE(r.smallest_world_same_gpu.has_value());
  EXPECT_EQ(*r.smallest_world_same_gpu, 8);
  EXPECT_EQ(r.larger_gpus, std::vector<std::string>{"b200"});
}

TEST(PlanR1, OneH200DoesNotFit) {
  const PlanResult r = Plan(R1(), "h200", 1);
  ASSERT_TRUE(r.memory.has_value());
  EXPECT_FALSE(r.fits);
  EXPECT_EQ(r.memory->weights.worst.total(), 673150611808u);
  EXPECT_EQ(*r.smallest_world_same_gpu, 8);
  EXPECT_TRUE(r.larger_gpus.empty());
}

TEST(PlanR1, ImpossibleWorldSizesExplained) {
  for (int64_t per_node : {3, 6, 12}) {
    const PlanResult r = Plan(R1(), "h200", per_node);
    EXPECT_FALSE(r.fits);
    EXPECT_FALSE(r.memory.has_value());
    ASSERT_FALSE(r.layout_problems.empty());
    EXPECT_EQ(r.layout_problems[0], "num_attention_heads = 128 is not divisible by " + std::to_string(per_node));
    EXPECT_NE(r.verdict.find("impossible layout"), std::string::npos);
    // Never an impossible W suggested: 8 is the smallest H200 layout that fits.
    ASSERT_TRUE(r.smallest_world_same_gpu.has_value());
    EXPECT_EQ(*r.smallest_world_same_gpu, 8);
    for (const std::string& s : r.suggestions) EXPECT_EQ(s.find(absl::StrCat(" ", per_node, " x ")), std::string::npos) << s;
  }
  const PlanResult r3 = Plan(R1(), "h200", 3);
  // 3 fails heads, vocab (129280 = 2^8 x 5 x 101), experts and the shared intermediate, not 18432 = 2^11 x 9.
  EXPECT_EQ(r3.layout_problems.size(), 4u);
  EXPECT_EQ(r3.valid_worlds, (std::vector<int64_t>{1, 2, 4, 8, 16, 32, 64, 128}));
}

TEST(PlanR1, TargetsDecideTheVerdict) {
  PlanRequest q;
  q.config = R1();
  q.tensors = PublishedTensors(q.config);
  q.gpu = Gpu("h200");
  q.max_context = 131072;
  q.concurrency = 6;  // 6 x 8192 blocks = 49,152 <= 50,061
  auto r = MakePlan(q);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->fits) << r->verdict;
  q.concurrency = 7;  // 57,344 blocks > 50,061
  r = MakePlan(q);
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(r->fits);
  EXPECT_NE(r->verdict.find("does not fit the target"), std::string::npos) << r->verdict;
  ASSERT_TRUE(r->smallest_world_same_gpu.has_value());
  EXPECT_EQ(*r->smallest_world_same_gpu, 16);  // the next valid W with more room per GPU
  q.kv_dtype = "fp8";  // half the bytes per token: 100,123 blocks
  r = MakePlan(q);
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->fits) << r->verdict;
  q.max_context = 163841;  // past max_position_embeddings
  EXPECT_FALSE(MakePlan(q).ok());
}

// ---- Other expert counts and layouts ------------------------------------------------------------

TEST(PlanLayout, OtherExpertCounts) {
  // 160 experts: W must divide 160 too, so the largest W is gcd(128, 129280, 18432, 160, 2048) = 32.
  const ModelConfig c160 = R1WithExperts(160);
  EXPECT_EQ(MaxWorldSize(c160), 32);
  EXPECT_EQ(ValidWorldSizes(c160, 128), (std::vector<int64_t>{1, 2, 4, 8, 16, 32}));
  EXPECT_EQ(LayoutProblems(c160, 64), std::vector<std::string>{"n_routed_experts = 160 is not divisible by 64"});
  const GpuWeights g = PerGpuWeights(c160, PublishedTensors(c160), 8);
  EXPECT_EQ(g.worst[Part::kRoutedExperts], kMoe * 20 * Expert());
  EXPECT_EQ(g.worst[Part::kAttention], R1PerGpu(8)[Part::kAttention]);
  // 12 fewer experts per GPU, and a router (replicated) of 96 fewer rows: gate.weight BF16, bias F32.
  EXPECT_EQ(g.worst.total(), R1PerGpu(8).total() - kMoe * 12 * Expert() - kMoe * 96 * (kH * 2 + 4));
  const PlanResult r = Plan(c160, "h100", 8);  // 160/256 of R1's experts: 53.8 GB per GPU
  EXPECT_TRUE(r.fits) << r.verdict;
  const int64_t free160 = static_cast<int64_t>(81559ull << 20) - static_cast<int64_t>(g.worst.total()) -
                          static_cast<int64_t>((4ull << 30) + 8192ull * 614400);
  EXPECT_EQ(r.memory->kv_blocks, free160 / (16 * 70272));
  // 64 experts: W up to 64; 128 fails on the experts alone.
  const ModelConfig c64 = R1WithExperts(64);
  EXPECT_EQ(MaxWorldSize(c64), 64);
  EXPECT_EQ(LayoutProblems(c64, 128), std::vector<std::string>{"n_routed_experts = 64 is not divisible by 128"});
  EXPECT_EQ(PerGpuWeights(c64, PublishedTensors(c64), 8).worst[Part::kRoutedExperts], kMoe * 8 * Expert());
  // A 160-expert model on 64 GPUs: impossible, and the suggestion stays within the valid layouts.
  const PlanResult bad = Plan(c160, "h100", 8, 8);
  EXPECT_FALSE(bad.fits);
  EXPECT_FALSE(bad.layout_problems.empty());
  ASSERT_TRUE(bad.smallest_world_same_gpu.has_value());
  EXPECT_TRUE(LayoutProblems(c160, *bad.smallest_world_same_gpu).empty());
}

TEST(PlanLayout, AgreesWithCheckLayout) {
  std::vector<ModelConfig> configs = {R1(), R1WithExperts(160), R1WithExperts(64)};
  for (const char* golden : {"golden-a-fp8", "golden-b-fp8"}) {
    auto c = LoadModelConfig(SourcePath(std::string("tests/golden/models/") + golden));
    ASSERT_TRUE(c.ok()) << c.status();
    configs.push_back(*c);
  }
  for (const ModelConfig& c : configs) {
    for (int w = 1; w <= 256; ++w) {
      const auto problems = LayoutProblems(c, w);
      const absl::Status s = DeepseekV3Model::CheckLayout(c, w);
      EXPECT_EQ(s.ok(), problems.empty()) << "W = " << w << ": " << s;
      if (!s.ok() && !problems.empty()) {
        const std::string msg(s.message());
        EXPECT_TRUE(msg.ends_with(problems[0])) << msg << " vs " << problems[0];
      }
    }
  }
}

// Scale blocks shared by two ranks' slices count on both.
TEST(PlanLayout, UnalignedSlicesCarryEveryOverlappedScaleBlock) {
  auto c = LoadModelConfig(SourcePath("tests/golden/models/golden-a-fp8"));
  ASSERT_TRUE(c.ok());
  // q_b_proj [4 heads x 96, 96] and its [3, 1] scales: at W = 4 each rank has 96 rows.
  const std::vector<TensorRecord> t = {{"model.layers.0.self_attn.q_b_proj.weight", DType::kF8E4M3, {384, 96}},
                                       {"model.layers.0.self_attn.q_b_proj.weight_scale_inv", DType::kF32, {3, 1}}};
  const std::vector<uint64_t> want = {96 * 96 + 4, 96 * 96 + 8, 96 * 96 + 8, 96 * 96 + 4};  // blocks {0}, {0,1}, {1,2}, {2}
  for (int64_t r = 0; r < 4; ++r) EXPECT_EQ(RankWeights(*c, t, 4, r).total(), want[r]) << "rank " << r;
  const GpuWeights g = PerGpuWeights(*c, t, 4);
  EXPECT_EQ(g.worst.total(), 96u * 96 + 8);
  EXPECT_EQ(g.worst_rank, 1);
  EXPECT_EQ(g.least, 96u * 96 + 4);
}

// The published layout generated from config.json equals the real checkpoints' headers.
TEST(PlanCheckpoint, PublishedLayoutMatchesSafetensorsHeaders) {
  for (const char* golden : {"golden-a-fp8", "golden-a-bf16", "golden-b-fp8", "golden-b-bf16"}) {
    const std::string dir = SourcePath(std::string("tests/golden/models/") + golden);
    ASSERT_TRUE(HasSafetensors(dir)) << dir;
    auto c = LoadModelConfig(dir);
    ASSERT_TRUE(c.ok()) << c.status();
    auto real = CheckpointTensors(dir);
    ASSERT_TRUE(real.ok()) << real.status();
    const auto published = PublishedTensors(*c);
    const ModelWeights a = TallyModel(*c, *real), b = TallyModel(*c, published);
    EXPECT_TRUE(a.unknown_tensors.empty()) << golden << ": " << a.unknown_tensors.front();
    EXPECT_EQ(a.by_part.bytes, b.by_part.bytes) << golden;
    EXPECT_EQ(a.by_dtype, b.by_dtype) << golden;
    EXPECT_EQ(a.parameters, b.parameters) << golden;
    for (int64_t w : ValidWorldSizes(*c, MaxWorldSize(*c))) {
      for (int64_t r = 0; r < w; ++r) {
        EXPECT_EQ(RankWeights(*c, *real, w, r).bytes, RankWeights(*c, published, w, r).bytes) << golden << " W " << w << " r " << r;
      }
    }
    // Loaded + MTP = every byte of the checkpoint.
    uint64_t all = 0;
    for (const TensorRecord& t : *real) all += t.bytes();
    EXPECT_EQ(a.by_part.total() + a.mtp_bytes, all) << golden;
  }
}

TEST(PlanPresets, PresetsAreThePublishedConfigs) {
  for (const auto& [preset, file] : std::vector<std::pair<std::string, std::string>>{
           {"deepseek-r1", "deepseek-r1"}, {"deepseek-v3", "deepseek-v3"}, {"deepseek-v3.1", "deepseek-v3.1"}}) {
    bool found = false;
    for (const ModelPreset& p : ModelPresets()) {
      if (p.name == preset) {
        found = true;
        EXPECT_EQ(json::parse(p.config_json), json::parse(ReadText(SourcePath("tests/data/configs/" + file + ".json"))));
      }
    }
    EXPECT_TRUE(found) << preset;
    EXPECT_TRUE(LoadModelPreset(preset).ok()) << preset;
  }
  EXPECT_FALSE(LoadModelPreset("deepseek-r2").ok());
  EXPECT_TRUE(FindGpu("H200").ok());
  EXPECT_EQ(Gpu("h200").memory_mib, 143771);
  EXPECT_EQ(Gpu("h100").memory_mib, 81559);
  EXPECT_FALSE(Gpu("a100-80g").fp8);
  const auto unknown = FindGpu("h300");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(std::string(unknown.status().message()).find("h200"), std::string::npos);
}

TEST(PlanPresets, NoFp8GpuIsNotAFit) {
  // Two nodes of A100-80G hold the bytes but have no FP8 tensor cores.
  const PlanResult r = Plan(R1(), "a100-80g", 8, 2);
  ASSERT_TRUE(r.memory.has_value());
  EXPECT_GT(r.memory->kv_blocks, 0);
  EXPECT_FALSE(r.fits);
  EXPECT_NE(r.verdict.find("FP8"), std::string::npos) << r.verdict;
}

// ---- The command ---------------------------------------------------------------------------------

TEST(PlanCommand, BadInputExitsWithTwo) {
  EXPECT_EQ(RunPlan({"--preset", "deepseek-r2", "--gpu", "h200"}), 2);             // unknown preset
  EXPECT_EQ(RunPlan({"--preset", "deepseek-r1", "--gpu", "h300"}), 2);             // unknown GPU
  EXPECT_EQ(RunPlan({"--preset", "deepseek-r1", "--gpu", "h200", "--gpus-per-node", "0"}), 2);
  EXPECT_EQ(RunPlan({"--preset", "deepseek-r1", "--gpu", "h200", "--nodes", "0"}), 2);
  EXPECT_EQ(RunPlan({"--preset", "deepseek-r1", "--gpu-memory-gib", "-80"}), 2);   // negative memory
  EXPECT_EQ(RunPlan({"--preset", "deepseek-r1", "--gpu-memory-gib", "lots"}), 2);
  EXPECT_EQ(RunPlan({"--preset", "deepseek-r1"}), 2);                              // no GPU
  EXPECT_EQ(RunPlan({"--gpu", "h200"}), 2);                                        // no model
  EXPECT_EQ(RunPlan({"--preset", "deepseek-r1", "--config", "x.json", "--gpu", "h200"}), 2);
  EXPECT_EQ(RunPlan({"--preset", "deepseek-r1", "--gpu", "h200", "--kv-dtype", "int4"}), 2);
  EXPECT_EQ(RunPlan({"--preset", "deepseek-r1", "--gpu", "h200", "--max-context", "200000"}), 2);
  EXPECT_EQ(RunPlan({"--preset", "deepseek-r1", "--gpu", "h200", "--no-such-flag"}), 2);
  EXPECT_EQ(RunPlan({"--model", SourcePath("tests/no-such-model"), "--gpu", "h200"}), 2);
}

TEST(PlanCommand, GoodInputExitsWithZero) {
  EXPECT_EQ(RunPlan({"--preset", "deepseek-r1", "--gpu", "h200"}), 0);
  EXPECT_EQ(RunPlan({"--preset", "deepseek-r1", "--gpu", "h100", "--json"}), 0);  // no fit is still a plan
  EXPECT_EQ(RunPlan({"--preset", "deepseek-r1", "--gpu", "h200", "--gpus-per-node", "6"}), 0);
  EXPECT_EQ(RunPlan({"--config", SourcePath("tests/data/configs/deepseek-v3.json"), "--gpu-memory-gib", "96",
                     "--host-memory-gib", "1024", "--nodes", "2"}),
            0);
  EXPECT_EQ(RunPlan({"--model", SourcePath("tests/golden/models/golden-a-fp8"), "--gpu", "h100", "--gpus-per-node", "4"}), 0);
  EXPECT_EQ(RunPlan({"--help"}), 0);
  EXPECT_EQ(RunPlan({"--list"}), 0);
}

}  // namespace
}  // namespace r1::planner

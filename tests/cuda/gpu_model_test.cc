// The whole model on the GPU, in each activation mode (GpuActivations): token-by-token decode
// through the paged bf16 latent cache against prefill, a mixed batch against each sequence alone,
// and prefill (and decode) against the CPU reference and transformers' golden logits. Bound:
// relative L2 <= 3e-2 and the same argmax wherever the reference's top-2 margin exceeds 0.05.
// The float32 mode is held to the whole bound on every golden model; bf16 to the L2 half (a
// near-tied router choice can flip); fp8 (DeepSeek's activation quantisation) to the L2 half
// against the CPU reference emulating the same quantisation. docs/design.md ("GPU") has the
// measured per-op error table behind these choices.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <tuple>

#include "common/safetensors.h"
#include "common/safetensors_writer.h"
#include "gtest/gtest.h"
#include "tests/unit/test_util.h"
#include "worker/model/gpu_model.h"

namespace r1 {
namespace {

using testing::GoldenData;
using testing::GoldenModel;
using testing::ReadF32;
using testing::ReadI32;
using testing::RelL2;

constexpr double kTolerance = 3e-2;
constexpr float kClearMargin = 0.05f;

bool HaveGpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

struct Check {
  double worst_err = 0, num = 0, den = 0;
  int argmax_checked = 0, argmax_wrong = 0;
  double overall() const { return std::sqrt(num / den); }
  void Row(const float* got, const float* want, int64_t vocab) {
    worst_err = std::max(worst_err, RelL2(got, want, vocab));
    for (int64_t i = 0; i < vocab; ++i) {
      num += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
      den += static_cast<double>(want[i]) * want[i];
    }
    int64_t a = std::max_element(want, want + vocab) - want;
    float best = want[a], second = -1e30f;
    for (int64_t i = 0; i < vocab; ++i) if (i != a) second = std::max(second, want[i]);
    if (best - second > kClearMargin) {
      ++argmax_checked;
      argmax_wrong += (std::max_element(got, got + vocab) - got) != a;
    }
  }
};

using Param = std::tuple<std::string, GpuActivations>;

class GpuModelTest : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  }
  const std::string& dir() const { return std::get<0>(GetParam()); }
  GpuActivations mode() const { return std::get<1>(GetParam()); }
  bool fp8_checkpoint() const { return dir().ends_with("fp8"); }
  std::string label() const { return dir() + " (" + GpuActivationsName(mode()) + ")"; }
  GpuDeepseekV3Model& model() {
    static std::map<Param, std::unique_ptr<GpuDeepseekV3Model>> models;
    auto& m = models[GetParam()];
    if (!m) {
      GpuModelOptions o;
      o.activations = mode();
      auto loaded = GpuDeepseekV3Model::Load(GoldenModel(dir()), o);
      EXPECT_TRUE(loaded.ok()) << loaded.status();
      if (!loaded.ok()) std::abort();
      m = std::move(*loaded);
    }
    return *m;
  }
  const SafetensorsFile& golden() {
    static std::map<std::string, std::unique_ptr<SafetensorsFile>> files;
    const std::string name = dir().substr(0, dir().rfind('-'));
    auto& f = files[name];
    if (!f) f = std::move(*SafetensorsFile::Open(GoldenData(name)));
    return *f;
  }
};

// Runs the prompt as one prefill and as token-by-token decode through a scrambled block table.
struct TwoWays {
  std::vector<float> prefill, decode;  // [T, V] each
};
TwoWays RunBothWays(GpuDeepseekV3Model& m, const std::vector<int32_t>& ids) {
  TwoWays r;
  const int64_t vocab = m.config().vocab_size;
  auto c1 = GpuKvCache::Create(m.config(), (ids.size() + 15) / 16 + 2, 16);
  auto c2 = GpuKvCache::Create(m.config(), (ids.size() + 7) / 8 + 1, 8);
  EXPECT_TRUE(c1.ok() && c2.ok());
  std::vector<int32_t> b1, b2;
  for (int64_t b = c1->blocks - 1; b >= 0; --b) b1.push_back(static_cast<int32_t>(b));
  for (int64_t b = 0; b < c2->blocks; ++b) b2.push_back(static_cast<int32_t>((b * 7 + 3) % c2->blocks));
  auto p = m.Forward({{ids, 0, b1, true}}, *c1);
  EXPECT_TRUE(p.ok()) << p.status();
  if (p.ok()) r.prefill = (*p)[0];
  for (size_t i = 0; i < ids.size(); ++i) {
    auto d = m.Forward({{{ids[i]}, static_cast<int64_t>(i), b2, false}}, *c2);
    EXPECT_TRUE(d.ok()) << d.status();
    if (!d.ok()) break;
    r.decode.insert(r.decode.end(), (*d)[0].begin(), (*d)[0].begin() + vocab);
  }
  return r;
}

TEST_P(GpuModelTest, DecodeThroughPagedCacheEqualsPrefill) {
  const int64_t vocab = model().config().vocab_size;
  const auto ids = ReadI32(golden(), "prompt.3.tokens");
  const int64_t replays_before = model().graph_replays();
  TwoWays r = RunBothWays(model(), ids);
  ASSERT_EQ(r.prefill.size(), r.decode.size());
  // Every decode step after the first of its shape replays the captured CUDA graph.
  EXPECT_GE(model().graph_replays() - replays_before, static_cast<int64_t>(ids.size()));
  Check check;
  for (size_t p = 0; p < ids.size(); ++p) check.Row(r.decode.data() + p * vocab, r.prefill.data() + p * vocab, vocab);
  EXPECT_LE(check.overall(), kTolerance);
  // Decode's one-row linear layers run the GEMV (GpuModelOptions::gemv_max_rows; every golden
  // layer is narrow enough), prefill's run cuBLASLt: the same products summed in another float32
  // order (and cuBLASLt's FP8 accumulation). In the fp8 mode on the FP8 checkpoints that
  // difference is re-quantised at every layer's input (a bf16 ulp can move an FP8 code, or a
  // group's scale and with it all 128 codes), and on the tiny golden models the moved activations
  // flip near-tied router choices at a few positions (measured: worst position 0.17 / 0.24 on
  // golden-a / golden-b, one clear-margin argmax), as far as that mode is from the CPU reference
  // emulating its quantisation (worst position 0.17 / 0.22 there). So, as in
  // PrefillMatchesCpuReference, that mode is held to the L2 half of the bound; the others to all.
  if (!(mode() == GpuActivations::kFp8 && fp8_checkpoint())) {
    EXPECT_LE(check.worst_err, kTolerance);
    EXPECT_EQ(check.argmax_wrong, 0);
  }
  std::printf("[ gpu ] %s decode vs prefill, %zu positions: rel L2 %.3g (worst %.3g), argmax %d/%d\n",
              label().c_str(), ids.size(), check.overall(), check.worst_err,
              check.argmax_checked - check.argmax_wrong, check.argmax_checked);
}

TEST_P(GpuModelTest, MixedBatchEqualsEachSequenceAlone) {
  const int64_t vocab = model().config().vocab_size;
  const auto a = ReadI32(golden(), "prompt.1.tokens"), b = ReadI32(golden(), "prompt.2.tokens");
  auto run_alone = [&](const std::vector<int32_t>& ids) {
    auto c = GpuKvCache::Create(model().config(), 8, 16);
    std::vector<int32_t> t = {5, 2, 7, 1, 0, 3, 4, 6};
    auto r = model().Forward({{ids, 0, t, true}}, *c);
    EXPECT_TRUE(r.ok());
    return (*r)[0];
  };
  const auto la = run_alone(a), lb = run_alone(b);
  auto cache = GpuKvCache::Create(model().config(), 40, 16);
  ASSERT_TRUE(cache.ok());
  std::vector<int32_t> ta = {30, 31}, tb;
  for (int i = 0; i < 20; ++i) tb.push_back(i);
  ASSERT_TRUE(model().Forward({{{b.begin(), b.end() - 1}, 0, tb, false}}, *cache).ok());
  auto got = model().Forward({{a, 0, ta, true}, {{b.back()}, static_cast<int64_t>(b.size()) - 1, tb, false}}, *cache);
  ASSERT_TRUE(got.ok()) << got.status();
  Check check;
  for (size_t p = 0; p < a.size(); ++p) check.Row((*got)[0].data() + p * vocab, la.data() + p * vocab, vocab);
  check.Row((*got)[1].data(), lb.data() + (b.size() - 1) * vocab, vocab);
  EXPECT_LE(check.worst_err, kTolerance);
  EXPECT_EQ(check.argmax_wrong, 0);
}

// Against the CPU reference running the same numerics: FP8 activation quantisation emulated in
// the fp8 mode (a no-op for the BF16 checkpoints), plain float32 otherwise. `strict_argmax`: also
// require the same argmax wherever the reference's top-2 margin exceeds 0.05.
void CompareWithCpuReference(GpuDeepseekV3Model& gpu, const std::string& dir, GpuActivations mode,
                             const SafetensorsFile& golden, bool strict_argmax) {
  const int64_t vocab = gpu.config().vocab_size;
  auto cpu = DeepseekV3Model::Load(GoldenModel(dir));
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  (*cpu)->set_emulate_fp8_activations(mode == GpuActivations::kFp8);
  for (int i = 0; i < 4; ++i) {
    const auto ids = ReadI32(golden, "prompt." + std::to_string(i) + ".tokens");
    auto cc = PagedKvCache::Create((ids.size() + 15) / 16, 16, gpu.config().num_hidden_layers,
                                   gpu.config().kv_latent_dim());
    ASSERT_TRUE(cc.ok());
    std::vector<int32_t> table;
    for (int64_t b = 0; b < cc->num_blocks(); ++b) table.push_back(static_cast<int32_t>(b));
    auto want = (*cpu)->Forward({{ids, 0, table, true}}, *cc);
    ASSERT_TRUE(want.ok()) << want.status();
    TwoWays r = RunBothWays(gpu, ids);
    Check check;
    for (size_t p = 0; p < ids.size(); ++p) check.Row(r.prefill.data() + p * vocab, (*want)[0].data() + p * vocab, vocab);
    EXPECT_LE(check.overall(), kTolerance) << "prompt " << i;
    if (strict_argmax) {
      EXPECT_EQ(check.argmax_wrong, 0) << "prompt " << i;
    }
    std::printf("[ gpu ] %s (%s) vs CPU reference, prefill %zu tokens: rel L2 %.3g (worst position %.3g), "
                "argmax %d/%d\n", dir.c_str(), GpuActivationsName(mode), ids.size(), check.overall(),
                check.worst_err, check.argmax_checked - check.argmax_wrong, check.argmax_checked);
  }
}

TEST_P(GpuModelTest, PrefillMatchesCpuReference) {
  CompareWithCpuReference(model(), dir(), mode(), golden(), false);
}

// The argmax half of the bound, against the float32 CPU reference: held by the float32 mode.
// In bf16 a near-tied router choice on golden-a's 300-token prompt goes the other way and moves
// that position's logits by up to 8% (docs/design.md, "GPU").
TEST_P(GpuModelTest, ArgmaxAgreesWithCpuReferenceWhereMarginIsClear) {
  if (mode() != GpuActivations::kFloat32) {
    GTEST_SKIP() << "the argmax bound is claimed for the f32 activation mode only (docs/design.md, GPU)";
  }
  CompareWithCpuReference(model(), dir(), mode(), golden(), true);
}

// Against transformers' golden logits (float32 activations, FP8 checkpoints dequantised), prefill
// and token-by-token decode: L2 in the f32 and bf16 modes, argmax too in f32. The fp8 mode on the
// FP8 checkpoints is outside the bound by construction: quantising kv_a_proj's input alone moves
// golden-a's one-token logits by 5.2% (measured per GEMM, docs/design.md); it is held to the CPU
// reference emulating the same quantisation instead (PrefillMatchesCpuReference).
TEST_P(GpuModelTest, PrefillAndDecodeMatchGolden) {
  if (mode() == GpuActivations::kFp8 && fp8_checkpoint()) {
    GTEST_SKIP() << "FP8 activation quantisation on the tiny golden models exceeds the bound (5.3e-2 on golden-a's "
                    "one-token prompt); checked against the CPU emulation instead";
  }
  const bool strict_argmax = mode() == GpuActivations::kFloat32;
  const int64_t vocab = model().config().vocab_size;
  for (int i = 0; i < 4; ++i) {
    const auto ids = ReadI32(golden(), "prompt." + std::to_string(i) + ".tokens");
    const auto want = ReadF32(golden(), "prompt." + std::to_string(i) + ".logits");
    TwoWays r = RunBothWays(model(), ids);
    for (const auto* got : {&r.prefill, &r.decode}) {
      Check check;
      for (size_t p = 0; p < ids.size(); ++p) check.Row(got->data() + p * vocab, want.data() + p * vocab, vocab);
      const char* how = got == &r.prefill ? "prefill" : "decode";
      EXPECT_LE(check.overall(), kTolerance) << how << ", prompt " << i;
      if (strict_argmax) {
        EXPECT_EQ(check.argmax_wrong, 0) << how << ", prompt " << i;
      }
      std::printf("[ gpu ] %s vs golden, %s %zu tokens: rel L2 %.3g (worst position %.3g), argmax %d/%d\n",
                  label().c_str(), how, ids.size(), check.overall(), check.worst_err,
                  check.argmax_checked - check.argmax_wrong, check.argmax_checked);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Golden, GpuModelTest,
                         ::testing::Combine(::testing::Values("golden-a-fp8", "golden-b-fp8", "golden-a-bf16",
                                                              "golden-b-bf16"),
                                            ::testing::Values(GpuActivations::kFloat32, GpuActivations::kBf16,
                                                              GpuActivations::kFp8)),
                         [](const auto& info) {
                           std::string s = std::get<0>(info.param) + "_" + GpuActivationsName(std::get<1>(info.param));
                           std::replace(s.begin(), s.end(), '-', '_');
                           return s;
                         });

// GpuModelOptions::fp8_absorb_max_rows: decode steps of few rows take MLA's absorbed products
// from kv_b_proj's FP8 codes (float32 products of the dequantised weight) instead of the TF32
// products over the float32 copies. Token-by-token decode of the FP8 golden checkpoints in the
// bf16 mode both ways: the two differ by TF32's rounding only, and the FP8 path stays within the
// golden bound; prefill (more rows than the limit) is unchanged, bit for bit.
TEST(GpuModelFp8AbsorbTest, DecodeMatchesTf32ProductsAndGolden) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  for (const std::string dir : {"golden-a-fp8", "golden-b-fp8"}) {
    SCOPED_TRACE(dir);
    auto load = [&](int64_t max_rows) {
      GpuModelOptions o;
      o.activations = GpuActivations::kBf16;
      o.fp8_absorb_max_rows = max_rows;
      auto m = GpuDeepseekV3Model::Load(GoldenModel(dir), o);
      EXPECT_TRUE(m.ok()) << m.status();
      return m.ok() ? std::move(*m) : nullptr;
    };
    auto fp8 = load(4), tf32 = load(0);
    ASSERT_TRUE(fp8 && tf32);
    EXPECT_TRUE(fp8->UsesFp8Absorb(1));
    EXPECT_TRUE(fp8->UsesFp8Absorb(4));
    EXPECT_FALSE(fp8->UsesFp8Absorb(5));
    EXPECT_FALSE(tf32->UsesFp8Absorb(1));
    auto golden = SafetensorsFile::Open(GoldenData(dir.substr(0, dir.rfind('-'))));
    ASSERT_TRUE(golden.ok()) << golden.status();
    const int64_t vocab = fp8->config().vocab_size;
    const auto ids = ReadI32(**golden, "prompt.3.tokens");
    const auto want = ReadF32(**golden, "prompt.3.logits");
    TwoWays a = RunBothWays(*fp8, ids), b = RunBothWays(*tf32, ids);
    ASSERT_EQ(a.decode.size(), b.decode.size());
    if (ids.size() > 4) {
      EXPECT_EQ(a.prefill, b.prefill);  // past the limit: the same kernels
    }
    Check vs_tf32, vs_golden;
    for (size_t p = 0; p < ids.size(); ++p) {
      vs_tf32.Row(a.decode.data() + p * vocab, b.decode.data() + p * vocab, vocab);
      vs_golden.Row(a.decode.data() + p * vocab, want.data() + p * vocab, vocab);
    }
    EXPECT_LE(vs_tf32.overall(), 1e-2);
    EXPECT_LE(vs_golden.overall(), kTolerance);
    std::printf("[ gpu ] %s (bf16) decode, FP8 absorbed products: vs TF32 products rel L2 %.3g (worst %.3g); vs "
                "golden %.3g (worst %.3g)\n", dir.c_str(), vs_tf32.overall(), vs_tf32.worst_err, vs_golden.overall(),
                vs_golden.worst_err);
  }
}

// GpuModelOptions::weight_layers (layer-aliased full-depth benchmarks): golden-a (layer 0 dense,
// 1 and 2 MoE) loaded with 2 weight layers runs layer 2 on layer 1's weights, so its logits equal,
// bit for bit, those of a checkpoint whose layer-2 tensors are copies of layer 1's, and differ
// from the real model's; 1 weight layer (dense) cannot stand in for MoE layers.
TEST(GpuModelWeightLayersTest, LaterLayersRunTheLastLoadedLayer) {
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device";
  const std::string src = GoldenModel("golden-a-fp8");
  auto ckpt = Checkpoint::Open(src);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  SafetensorsWriter writer;
  const std::string l1 = "model.layers.1.", l2 = "model.layers.2.";
  for (const std::string& name : (*ckpt)->Names()) {
    if (name.starts_with(l2)) continue;
    auto t = (*ckpt)->Get(name);
    ASSERT_TRUE(t.ok()) << t.status();
    const std::string bytes(reinterpret_cast<const char*>(t->data), t->nbytes);
    ASSERT_TRUE(writer.Add(name, t->dtype, t->shape, bytes).ok()) << name;
    if (name.starts_with(l1)) {
      ASSERT_TRUE(writer.Add(l2 + name.substr(l1.size()), t->dtype, t->shape, bytes).ok());
    }
  }
  const std::string copied = testing::TempDir("gpu-weight-layers");
  ASSERT_TRUE(writer.WriteSharded(copied, 1).ok());
  std::filesystem::copy_file(src + "/config.json", copied + "/config.json");

  auto run = [&](const std::string& dir, int64_t weight_layers) {
    GpuModelOptions o;
    o.weight_layers = weight_layers;
    auto m = GpuDeepseekV3Model::Load(dir, o);
    EXPECT_TRUE(m.ok()) << m.status();
    if (!m.ok()) return std::vector<float>{};
    auto cache = GpuKvCache::Create((*m)->config(), 4, 16);
    EXPECT_TRUE(cache.ok()) << cache.status();
    if (!cache.ok()) return std::vector<float>{};
    SequenceStep s{{5, 17, 2, 9, 30, 11}, 0, {0, 1}, true};
    auto prefill = (*m)->Forward({s}, *cache);
    EXPECT_TRUE(prefill.ok()) << prefill.status();
    if (!prefill.ok()) return std::vector<float>{};
    std::vector<float> all = (*prefill)[0];
    for (int i = 0; i < 3; ++i) {  // decode steps: the captured-graph path
      SequenceStep d{{7 + i}, 6 + i, {0, 1}, false};
      auto step = (*m)->Forward({d}, *cache);
      EXPECT_TRUE(step.ok()) << step.status();
      if (!step.ok()) return std::vector<float>{};
      all.insert(all.end(), (*step)[0].begin(), (*step)[0].end());
    }
    return all;
  };
  const std::vector<float> aliased = run(src, 2), reference = run(copied, 0), real = run(src, 0);
  ASSERT_FALSE(aliased.empty());
  ASSERT_EQ(aliased.size(), reference.size());
  EXPECT_TRUE(aliased == reference) << "rel L2 " << RelL2(aliased.data(), reference.data(), aliased.size());
  ASSERT_EQ(aliased.size(), real.size());
  EXPECT_GT(RelL2(aliased.data(), real.data(), aliased.size()), 1e-3);

  GpuModelOptions dense_only;
  dense_only.weight_layers = 1;
  auto refused = GpuDeepseekV3Model::Load(src, dense_only);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
}

}  // namespace
}  // namespace r1

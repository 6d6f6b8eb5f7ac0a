// Where the GPU model's error against transformers comes from, layer type by layer type:
//   build-gpu/bench/gpu/bench_gpu_numerics [--golden tests/golden]
// For each FP8 golden model, prefill of the four golden prompts in each activation mode, then in
// the fp8 mode with DeepSeek's activation quantisation on one kind of linear layer at a time (the
// others on the bf16 path). Prints, per prompt, the relative L2 error of all logits against
// golden, the worst single position, and the positions whose argmax differs where golden's top-2
// margin exceeds 0.05. docs/design.md ("GPU") keeps the table and the decision it led to.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "common/safetensors.h"
#include "worker/model/gpu_model.h"

namespace {

std::vector<float> F32(const r1::SafetensorsFile& f, const std::string& name) {
  const auto& t = f.tensors().at(name);
  std::vector<float> v(t.numel());
  std::memcpy(v.data(), t.data, t.nbytes);
  return v;
}
std::vector<int32_t> I32(const r1::SafetensorsFile& f, const std::string& name) {
  const auto& t = f.tensors().at(name);
  std::vector<int32_t> v(t.numel());
  std::memcpy(v.data(), t.data, t.nbytes);
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  std::string golden = "tests/golden";
  if (argc == 3 && std::string(argv[1]) == "--golden") golden = argv[2];
  const char* gemm_names[] = {"q_a", "q_b", "kv_a", "o", "mlp gate/up", "mlp down", "shared gate/up", "shared down"};
  struct Config {
    std::string name;
    r1::GpuActivations mode;
    uint32_t fp8_gemms;
  };
  std::vector<Config> configs = {{"f32", r1::GpuActivations::kFloat32, r1::kAllFp8Gemms},
                                 {"bf16", r1::GpuActivations::kBf16, r1::kAllFp8Gemms},
                                 {"fp8 (all dense layers)", r1::GpuActivations::kFp8, r1::kAllFp8Gemms}};
  for (int g = 0; g < r1::kGemmCount; ++g) {
    configs.push_back({std::string("fp8 on ") + gemm_names[g] + " only", r1::GpuActivations::kFp8, 1u << g});
  }
  for (const char* model : {"golden-a", "golden-b"}) {
    auto data = r1::SafetensorsFile::Open(golden + "/data/" + model + ".safetensors");
    if (!data.ok()) {
      std::fprintf(stderr, "error: %s\n", std::string(data.status().message()).c_str());
      return 1;
    }
    std::printf("%s-fp8: rel L2 vs golden per prompt (1, 5/9, 37/128, 300/260 tokens), worst position, argmax "
                "misses at clear margins\n", model);
    for (const Config& cfg : configs) {
      r1::GpuModelOptions o;
      o.activations = cfg.mode;
      o.fp8_gemms = cfg.fp8_gemms;
      o.max_step_tokens = 512;
      auto m = r1::GpuDeepseekV3Model::Load(golden + "/models/" + model + "-fp8", o);
      if (!m.ok()) {
        std::fprintf(stderr, "error: %s\n", std::string(m.status().message()).c_str());
        return 1;
      }
      const int64_t vocab = (*m)->config().vocab_size;
      std::printf("  %-26s", cfg.name.c_str());
      for (int i = 0; i < 4; ++i) {
        const auto ids = I32(**data, "prompt." + std::to_string(i) + ".tokens");
        const auto want = F32(**data, "prompt." + std::to_string(i) + ".logits");
        auto cache = r1::GpuKvCache::Create((*m)->config(), (ids.size() + 15) / 16, 16);
        std::vector<int32_t> table;
        for (int64_t b = 0; b < cache->blocks; ++b) table.push_back(static_cast<int32_t>(b));
        auto got = (*m)->Forward({{ids, 0, table, true}}, *cache);
        if (!got.ok()) return 1;
        double num = 0, den = 0, worst = 0;
        int misses = 0, checked = 0;
        for (size_t p = 0; p < ids.size(); ++p) {
          const float* a = (*got)[0].data() + p * vocab;
          const float* b = want.data() + p * vocab;
          double n2 = 0, d2 = 0;
          for (int64_t v = 0; v < vocab; ++v) {
            n2 += (static_cast<double>(a[v]) - b[v]) * (static_cast<double>(a[v]) - b[v]);
            d2 += static_cast<double>(b[v]) * b[v];
          }
          num += n2;
          den += d2;
          worst = std::max(worst, std::sqrt(n2 / d2));
          const int64_t best = std::max_element(b, b + vocab) - b;
          float second = -1e30f;
          for (int64_t v = 0; v < vocab; ++v) if (v != best) second = std::max(second, b[v]);
          if (b[best] - second > 0.05f) {
            ++checked;
            misses += (std::max_element(a, a + vocab) - a) != best;
          }
        }
        std::printf(" | %.2e (%.2e) %d/%d", std::sqrt(num / den), worst, misses, checked);
      }
      std::printf("\n");
    }
  }
  return 0;
}

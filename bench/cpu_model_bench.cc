// CPU reference throughput: prefill and decode tokens/s of a model folder on this machine.
//   build/bench/bench_cpu_model --model tests/golden/models/golden-a-fp8 [--prompt 256] [--decode 64]
// Prints the figures; see bench/README.md for the latest ones.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "worker/generate.h"

int main(int argc, char** argv) {
  std::string model_dir;
  int64_t prompt_len = 256, decode = 64;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--model")) model_dir = argv[i + 1];
    else if (!std::strcmp(argv[i], "--prompt")) prompt_len = std::atol(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--decode")) decode = std::atol(argv[i + 1]);
  }
  if (model_dir.empty() || prompt_len <= 0 || decode <= 1) {
    std::fprintf(stderr, "usage: %s --model DIR [--prompt N>0] [--decode N>1]\n", argv[0]);
    return 2;
  }
  auto model = r1::DeepseekV3Model::Load(model_dir);
  if (!model.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(model.status().message()).c_str());
    return 1;
  }
  std::vector<int32_t> prompt(prompt_len);
  for (int64_t i = 0; i < prompt_len; ++i) prompt[i] = static_cast<int32_t>((i * 7919) % (*model)->config().vocab_size);
  r1::GenerateOptions opt;
  opt.max_new_tokens = decode;
  opt.stop_at_eos = false;
  auto r = r1::Generate(**model, prompt, opt);
  if (!r.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(r.status().message()).c_str());
    return 1;
  }
  std::printf("model %s\nprefill  %ld tokens  %.3f s  %.1f tokens/s\ndecode   %ld tokens  %.3f s  %.1f tokens/s\n",
              model_dir.c_str(), static_cast<long>(prompt_len), r->prefill_seconds, prompt_len / r->prefill_seconds,
              static_cast<long>(decode - 1), r->decode_seconds, (decode - 1) / r->decode_seconds);
  return 0;
}

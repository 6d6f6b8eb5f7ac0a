// CPU reference throughput: prefill and decode tokens/s of a model folder on this machine.
//   build/bench/bench_cpu_model --model tests/golden/models/golden-a-fp8 [--prompt 256] [--decode 64]
// Prints the figures; see bench/README.md for the latest ones.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "kernels/ops.h"
#include "worker/generate.h"

namespace {

// Weight multiply-adds per token (the matrix products; attention scores excluded).
double ActiveMacsPerToken(const r1::ModelConfig& c) {
  const double h = c.hidden_size, nh = c.num_attention_heads, qk = c.qk_head_dim();
  double attn = (c.q_lora_rank ? *c.q_lora_rank * (h + nh * qk) : h * nh * qk) + h * c.kv_latent_dim() +
                c.kv_lora_rank * nh * (c.qk_nope_head_dim + c.v_head_dim) + nh * c.v_head_dim * h;
  double total = 0;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const double inter = c.is_moe_layer(l)
                             ? c.moe_intermediate_size * (c.num_experts_per_tok + c.n_shared_experts)
                             : c.intermediate_size;
    total += attn + 3 * h * inter + (c.is_moe_layer(l) ? h * c.n_routed_experts : 0);
  }
  return total + h * c.vocab_size;
}

// GFLOP/s of the CPU matrix product itself on a 256 x 1024 x 1024 product: the reference rate.
double MatMulGflops() {
  const int64_t m = 256, k = 1024, n = 1024;
  std::vector<float> x(m * k, 0.5f), w(n * k, 0.25f), y(m * n);
  r1::cpu::MatMulNT(x.data(), m, k, w.data(), n, y.data());
  auto t0 = std::chrono::steady_clock::now();
  const int reps = 5;
  for (int i = 0; i < reps; ++i) r1::cpu::MatMulNT(x.data(), m, k, w.data(), n, y.data());
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return 2.0 * m * k * n * reps / s / 1e9;
}

}  // namespace

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
  const double macs = ActiveMacsPerToken((*model)->config());
  const double ref = MatMulGflops();
  const double pf = prompt_len / r->prefill_seconds, dc = (decode - 1) / r->decode_seconds;
  std::printf("model %s: %.2f M weight MACs per token\n", model_dir.c_str(), macs / 1e6);
  std::printf("reference: CPU MatMulNT 256x1024x1024 at %.1f GFLOP/s\n", ref);
  std::printf("prefill  %5ld tokens  %.3f s  %8.1f tokens/s  %6.1f GFLOP/s  %.2f of reference\n",
              static_cast<long>(prompt_len), r->prefill_seconds, pf, 2 * macs * pf / 1e9, 2 * macs * pf / 1e9 / ref);
  std::printf("decode   %5ld tokens  %.3f s  %8.1f tokens/s  %6.1f GFLOP/s  %.2f of reference\n",
              static_cast<long>(decode - 1), r->decode_seconds, dc, 2 * macs * dc / 1e9, 2 * macs * dc / 1e9 / ref);
  return 0;
}

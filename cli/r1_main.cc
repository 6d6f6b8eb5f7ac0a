// `r1`: the command-line tool. Each subcommand parses its flags, builds what it needs, runs, and
// prints; errors go to stderr with a non-zero exit code.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cli/generate_gpu.h"
#include "cli/info.h"
#include "cli/make_tiny.h"
#include "cli/plan.h"
#include "cli/remote_generate.h"
#include "cli/tokenize.h"
#ifdef R1_WITH_SERVICES
#include "cli/chat.h"
#include "cli/serve.h"
#endif
#include "common/status.h"
#include "worker/generate.h"
#include "worker/model/deepseek_v3.h"

namespace r1 {
namespace {

absl::StatusOr<std::vector<int32_t>> ParseTokens(const std::string& text) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int32_t v;
    if (!absl::SimpleAtoi(part, &v)) return absl::InvalidArgumentError(absl::StrCat("--tokens: '", part, "' is not an integer"));
    ids.push_back(v);
  }
  if (ids.empty()) return absl::InvalidArgumentError("--tokens: no token ids given");
  if (ids.size() > (1u << 20)) return absl::InvalidArgumentError("--tokens: more than 1M ids");
  return ids;
}

// Writes float32 [rows, cols] as a NumPy .npy file.
absl::Status WriteNpy(const std::string& path, const std::vector<float>& data, int64_t rows, int64_t cols) {
  std::ofstream out(path, std::ios::binary);
  if (!out) return absl::PermissionDeniedError(absl::StrCat(path, ": cannot write"));
  std::string header = absl::StrCat("{'descr': '<f4', 'fortran_order': False, 'shape': (", rows, ", ", cols, "), }");
  while ((10 + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  const uint16_t len = static_cast<uint16_t>(header.size());
  out.write("\x93NUMPY\x01\x00", 8);
  out.put(static_cast<char>(len & 0xff));
  out.put(static_cast<char>(len >> 8));
  out << header;
  out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size() * sizeof(float)));
  if (!out) return absl::DataLossError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
  return 1;
}

int RunLogits(const std::string& model_dir, const std::string& tokens, const std::string& out_path) {
  auto ids = ParseTokens(tokens);
  if (!ids.ok()) return Fail(ids.status());
  auto model = DeepseekV3Model::Load(model_dir);
  if (!model.ok()) return Fail(model.status());
  const ModelConfig& c = (*model)->config();
  const int64_t bs = 16, n = static_cast<int64_t>(ids->size());
  auto cache = PagedKvCache::Create((n + bs - 1) / bs, bs, c.num_hidden_layers, c.kv_latent_dim());
  if (!cache.ok()) return Fail(cache.status());
  SequenceStep step{*ids, 0, {}, true};
  for (int64_t b = 0; b < cache->num_blocks(); ++b) step.block_table.push_back(static_cast<int32_t>(b));
  auto logits = (*model)->Forward({step}, *cache);
  if (!logits.ok()) return Fail(logits.status());
  const std::vector<float>& l = (*logits)[0];
  if (!out_path.empty()) {
    if (auto s = WriteNpy(out_path, l, n, c.vocab_size); !s.ok()) return Fail(s);
    std::printf("wrote %s: float32 [%ld, %ld]\n", out_path.c_str(), static_cast<long>(n), static_cast<long>(c.vocab_size));
  }
  // The top 5 at the last position.
  const float* last = l.data() + (n - 1) * c.vocab_size;
  std::vector<int32_t> order(c.vocab_size);
  for (int64_t i = 0; i < c.vocab_size; ++i) order[i] = static_cast<int32_t>(i);
  std::partial_sort(order.begin(), order.begin() + std::min<int64_t>(5, c.vocab_size), order.end(),
                    [&](int32_t a, int32_t b) { return last[a] > last[b]; });
  std::printf("position %ld, top 5:", static_cast<long>(n - 1));
  for (int64_t i = 0; i < std::min<int64_t>(5, c.vocab_size); ++i) std::printf(" %d (%.4f)", order[i], last[order[i]]);
  std::printf("\n");
  return 0;
}

int RunGenerate(const std::string& model_dir, const std::string& tokens, GenerateOptions options) {
  auto ids = ParseTokens(tokens);
  if (!ids.ok()) return Fail(ids.status());
  if (auto s = ValidateSampling(options.sampling); !s.ok()) return Fail(s);
  auto model = DeepseekV3Model::Load(model_dir);
  if (!model.ok()) return Fail(model.status());
  auto r = Generate(**model, *ids, options);
  if (!r.ok()) return Fail(r.status());
  std::string out;
  for (size_t i = 0; i < r->tokens.size(); ++i) absl::StrAppend(&out, i ? "," : "", r->tokens[i]);
  std::printf("%s\n", out.c_str());
  const double decode_steps = static_cast<double>(std::max<size_t>(r->tokens.size(), 1) - 1);
  std::fprintf(stderr, "prefill: %ld tokens in %.3f s (%.1f tokens/s); decode: %zu tokens, %.1f tokens/s\n",
               static_cast<long>(r->prompt_tokens), r->prefill_seconds,
               r->prompt_tokens / std::max(r->prefill_seconds, 1e-9), r->tokens.size(),
               decode_steps / std::max(r->decode_seconds, 1e-9));
  return 0;
}

}  // namespace
}  // namespace r1

int main(int argc, char** argv) {
  CLI::App app{"r1: run and serve DeepSeek-V3 / R1 checkpoints (CPU reference backend; `generate --gpu` on an NVIDIA Hopper GPU)"};
  app.require_subcommand(1);

  std::string model_dir, tokens, out_path;
  auto* info = app.add_subcommand("info", "Summarise a model folder: config, parameters, bytes by dtype, memory");
  info->add_option("--model", model_dir, "Model folder (config.json + safetensors)")->required();

  auto* logits = app.add_subcommand("logits", "Print (and optionally save) the logits of a token sequence");
  logits->add_option("--model", model_dir, "Model folder")->required();
  logits->add_option("--tokens", tokens, "Comma-separated token ids, e.g. 0,5,9")->required();
  logits->add_option("--out", out_path, "Write every position's logits as float32 .npy [T, vocab]");

  r1::GenerateOptions gen;
  auto* generate = app.add_subcommand("generate", "Generate tokens after a prompt of token ids");
  std::string coordinator;
  auto* generate_model = generate->add_option("--model", model_dir, "Model folder (unless --coordinator)");
  generate->add_option("--coordinator", coordinator, "HOST:PORT of r1-coordinator: generate on its worker group")
      ->excludes(generate_model);
  generate->add_option("--tokens", tokens, "Comma-separated prompt token ids")->required();
  generate->add_option("--max-new-tokens", gen.max_new_tokens, "Tokens to generate")->default_val(32)->check(CLI::Range(0, 1 << 20));
  generate->add_option("--temperature", gen.sampling.temperature, "0 = greedy")->default_val(0.0f);
  generate->add_option("--top-p", gen.sampling.top_p, "Nucleus sampling threshold in (0, 1]")->default_val(1.0f);
  generate->add_option("--top-k", gen.sampling.top_k, "Keep the k most likely tokens; 0 = all")->default_val(0);
  generate->add_option("--seed", gen.sampling.seed, "Random seed")->default_val(0);
  generate->add_flag("!--no-eos-stop", gen.stop_at_eos, "Keep generating after the EOS token");
  bool use_gpu = false;
  std::string gpu_activations = "f32";
  auto* gpu_flag = generate->add_flag("--gpu", use_gpu, "Run on GPU 0 (the CUDA backend), sampling on the GPU");
  gpu_flag->excludes("--coordinator");
  generate->add_option("--gpu-activations", gpu_activations,
                       "GPU activation numerics: f32 (reference precision), bf16, or fp8 (DeepSeek's FP8 scheme)")
      ->check(CLI::IsMember({"f32", "bf16", "fp8"}))
      ->default_val("f32")
      ->needs(gpu_flag);

  std::string text;
  bool parse_special = false, skip_special = false;
  auto* tokenize = app.add_subcommand("tokenize", "Print the token ids and pieces of a text");
  tokenize->add_option("--model", model_dir, "Model folder (tokenizer.json, tokenizer_config.json)")->required();
  tokenize->add_flag("--special", parse_special, "Parse control tokens such as <｜User｜> in the text (off: plain text)");
  tokenize->add_option("text", text, "The text; - reads stdin")->required();

  auto* detokenize = app.add_subcommand("detokenize", "Print the text of token ids");
  detokenize->add_option("--model", model_dir, "Model folder")->required();
  detokenize->add_option("--tokens", tokens, "Comma-separated token ids")->required();
  detokenize->add_flag("--skip-special", skip_special, "Leave out special tokens (BOS, EOS, ...)");

  r1::MakeTinyOptions tiny;
  auto* make_tiny = r1::AddMakeTinyCommand(app, tiny);

  auto* plan = r1::AddPlanCommand(app);

#ifdef R1_WITH_SERVICES
  r1::ServeCommandOptions serve_options;
  auto* serve = r1::AddServeCommand(app, serve_options);
  r1::ChatCommandOptions chat_options;
  auto* chat = r1::AddChatCommand(app, chat_options);
#endif

  CLI11_PARSE(app, argc, argv);
#ifdef R1_WITH_SERVICES
  if (serve->parsed() || chat->parsed()) {
    const absl::Status s = serve->parsed() ? r1::RunServeCommand(serve_options)
                                           : r1::RunChatCommand(chat_options);
    return s.ok() ? 0 : r1::Fail(s);
  }
#endif
  if (plan->parsed()) return r1::RunPlan(plan->remaining());
  if (make_tiny->parsed()) {
    const absl::Status s = r1::MakeTiny(tiny);
    return s.ok() ? 0 : r1::Fail(s);
  }
  if (info->parsed()) return r1::RunInfo(model_dir);
  if (logits->parsed()) return r1::RunLogits(model_dir, tokens, out_path);
  if (generate->parsed() && !coordinator.empty()) {
    auto ids = r1::ParseTokens(tokens);
    const absl::Status s = ids.ok() ? r1::RunRemoteGenerate(coordinator, *ids, gen) : ids.status();
    return s.ok() ? 0 : r1::Fail(s);
  }
  if (generate->parsed() && model_dir.empty()) return r1::Fail(absl::InvalidArgumentError("--model or --coordinator is required"));
  if (generate->parsed() && use_gpu) {
    auto ids = r1::ParseTokens(tokens);
    const absl::Status s = ids.ok() ? r1::RunGpuGenerate(model_dir, *ids, gen, gpu_activations) : ids.status();
    return s.ok() ? 0 : r1::Fail(s);
  }
  if (generate->parsed()) return r1::RunGenerate(model_dir, tokens, gen);
  if (tokenize->parsed()) {
    const absl::Status s = r1::RunTokenize(model_dir, text, parse_special);
    return s.ok() ? 0 : r1::Fail(s);
  }
  if (detokenize->parsed()) {
    auto ids = r1::ParseTokens(tokens);
    const absl::Status s = ids.ok() ? r1::RunDetokenize(model_dir, *ids, skip_special) : ids.status();
    return s.ok() ? 0 : r1::Fail(s);
  }
  return 1;
}

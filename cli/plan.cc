#include "cli/plan.h"

#include <cstdio>
#include <fstream>
#include <optional>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "planner/planner.h"

namespace r1 {
namespace {

constexpr char kDescription[] =
    "r1 plan: will a DeepSeek-V3/R1 model fit a GPU cluster under r1serve's layout, and how to launch it.\n"
    "\n"
    "Layout: W = every GPU; attention heads, routed experts, the dense and shared-expert intermediate\n"
    "dimension and the vocabulary are split W ways (W must divide each of them); q_a_proj, kv_a_proj,\n"
    "the router and the norms are replicated on every GPU; the MTP layer is not loaded.\n"
    "Weights: bytes as stored (FP8 e4m3 + F32 128x128 scales + BF16), from the checkpoint's safetensors\n"
    "headers with --model, else from config.json as DeepSeek publishes the checkpoint.\n"
    "Reserve per GPU: 4 GiB + prefill chunk x per-token workspace (16 H + 7 k H + 6 max(k I_moe, I/W)).\n"
    "KV cache: layers x (kv_lora_rank + qk_rope_head_dim) x dtype bytes per token, on EVERY GPU\n"
    "(tensor-parallel attention replicates the latent), in blocks of --block-size tokens.\n"
    "A plan is printed with exit code 0 whether or not it fits; bad input exits with code 2.";

constexpr char kFooter[] =
    "\nExamples:\n"
    "  r1 plan --preset deepseek-r1 --gpu h200                         # one node of 8 x H200\n"
    "  r1 plan --preset deepseek-r1 --gpu h100 --nodes 2               # 16 x H100 over two nodes\n"
    "  r1 plan --model /models/DeepSeek-R1 --gpu-memory-gib 96 --gpus-per-node 4 --json\n"
    "  r1 plan --list                                                  # the presets\n";

std::string PresetList() {
  std::string s = "model presets (--preset):\n";
  for (const planner::ModelPreset& p : planner::ModelPresets()) {
    absl::StrAppend(&s, absl::StrFormat("  %-18s %s\n", p.name, p.description));
  }
  s += "GPU presets (--gpu): memory as nvidia-smi reports it\n";
  for (const planner::GpuSpec& g : planner::GpuPresets()) {
    absl::StrAppend(&s, absl::StrFormat("  %-10s %-24s %8.2f GiB  %5.3g TB/s  FP8 %-3s %s\n", g.name, g.description,
                                        g.memory_gib(), g.hbm_tb_s, g.fp8 ? "yes" : "no", g.note));
  }
  return s;
}

absl::StatusOr<int64_t> PositiveInt(const std::string& flag, const std::string& text) {
  int64_t v = 0;
  if (!absl::SimpleAtoi(text, &v)) return absl::InvalidArgumentError(absl::StrCat(flag, " '", text, "': not an integer"));
  if (v < 1) return absl::InvalidArgumentError(absl::StrCat(flag, " ", v, ": must be at least 1"));
  if (v > (int64_t{1} << 40)) return absl::InvalidArgumentError(absl::StrCat(flag, " ", v, ": too large"));
  return v;
}

absl::StatusOr<double> PositiveNumber(const std::string& flag, const std::string& text) {
  double v = 0;
  if (!absl::SimpleAtod(text, &v)) return absl::InvalidArgumentError(absl::StrCat(flag, " '", text, "': not a number"));
  if (!(v > 0) || v > 1e9) return absl::InvalidArgumentError(absl::StrCat(flag, " ", text, ": must be a positive number of GiB"));
  return v;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read"));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Flags {
  std::string model_dir, config_file, preset, gpu, gpu_memory_gib, gpus_per_node = "8", nodes = "1", host_memory_gib,
      max_context, concurrency, kv_dtype = "bf16", prefill_chunk = "8192", block_size = "16",
      coordinator = "COORDINATOR_HOST:50051";
  bool json = false, list = false;
};

absl::StatusOr<planner::PlanRequest> MakeRequest(const Flags& f) {
  planner::PlanRequest q;
  const int sources = !f.model_dir.empty() + !f.config_file.empty() + !f.preset.empty();
  if (sources != 1) return absl::InvalidArgumentError("give exactly one of --model DIR, --config FILE, --preset NAME");
  if (!f.preset.empty()) {
    R1_ASSIGN_OR_RETURN(q.config, planner::LoadModelPreset(f.preset));
    q.model_label = absl::StrCat("preset ", f.preset);
  } else if (!f.config_file.empty()) {
    R1_ASSIGN_OR_RETURN(std::string text, ReadFile(f.config_file));
    R1_ASSIGN_OR_RETURN(q.config, ParseModelConfig(text, f.config_file));
    q.model_label = absl::StrCat("config ", f.config_file);
  } else {
    R1_ASSIGN_OR_RETURN(q.config, LoadModelConfig(f.model_dir));
    q.model_label = absl::StrCat("model ", f.model_dir);
    q.model_dir = f.model_dir;
    if (planner::HasSafetensors(f.model_dir)) {
      R1_ASSIGN_OR_RETURN(q.tensors, planner::CheckpointTensors(f.model_dir));
      q.exact_from_checkpoint = true;
    }
  }
  if (q.tensors.empty()) q.tensors = planner::PublishedTensors(q.config);

  if (f.gpu.empty() && f.gpu_memory_gib.empty()) return absl::InvalidArgumentError("give --gpu NAME or --gpu-memory-gib N");
  if (!f.gpu.empty()) {
    R1_ASSIGN_OR_RETURN(q.gpu, planner::FindGpu(f.gpu));
  } else {
    q.gpu = {"custom", "custom GPU", 0, 0, true, "custom card: FP8 tensor cores and HBM bandwidth unknown (FP8 assumed)"};
  }
  if (!f.gpu_memory_gib.empty()) {
    R1_ASSIGN_OR_RETURN(double gib, PositiveNumber("--gpu-memory-gib", f.gpu_memory_gib));
    q.gpu.memory_mib = static_cast<int64_t>(gib * 1024.0);
    if (!f.gpu.empty()) q.gpu.description += absl::StrCat(" (memory set to ", f.gpu_memory_gib, " GiB)");
  }
  R1_ASSIGN_OR_RETURN(q.gpus_per_node, PositiveInt("--gpus-per-node", f.gpus_per_node));
  R1_ASSIGN_OR_RETURN(q.nodes, PositiveInt("--nodes", f.nodes));
  if (!f.host_memory_gib.empty()) {
    R1_ASSIGN_OR_RETURN(q.host_memory_gib, PositiveNumber("--host-memory-gib", f.host_memory_gib));
  }
  if (!f.max_context.empty()) {
    R1_ASSIGN_OR_RETURN(q.max_context, PositiveInt("--max-context", f.max_context));
  }
  if (!f.concurrency.empty()) {
    R1_ASSIGN_OR_RETURN(q.concurrency, PositiveInt("--concurrency", f.concurrency));
  }
  if (f.kv_dtype != "bf16" && f.kv_dtype != "fp8") {
    return absl::InvalidArgumentError(absl::StrCat("--kv-dtype '", f.kv_dtype, "': must be bf16 or fp8"));
  }
  q.kv_dtype = f.kv_dtype;
  R1_ASSIGN_OR_RETURN(q.prefill_chunk, PositiveInt("--prefill-chunk", f.prefill_chunk));
  R1_ASSIGN_OR_RETURN(q.block_size, PositiveInt("--block-size", f.block_size));
  q.coordinator = f.coordinator;
  return q;
}

int BadInput(const std::string& message) {
  std::fprintf(stderr, "r1 plan: error: %s\n", message.c_str());
  return 2;
}

}  // namespace

CLI::App* AddPlanCommand(CLI::App& app) {
  auto* plan = app.add_subcommand("plan", "Hardware planner: does a model fit a GPU cluster, and how to launch it (r1 plan --help)");
  // Everything after `plan` goes to RunPlan's own parser (and its --help).
  plan->prefix_command();
  plan->set_help_flag();
  return plan;
}

int RunPlan(const std::vector<std::string>& args) {
  Flags f;
  CLI::App app{kDescription, "r1 plan"};
  app.footer(kFooter);
  auto* model = app.add_option("--model", f.model_dir, "Model folder: config.json, and the safetensors headers for exact bytes if present");
  auto* config = app.add_option("--config", f.config_file, "A config.json file (bytes computed as DeepSeek publishes the checkpoint)");
  auto* preset = app.add_option("--preset", f.preset, "A built-in published config: deepseek-r1, deepseek-r1-0528, deepseek-v3, "
                                                      "deepseek-v3-0324, deepseek-v3.1 (see --list)");
  model->type_name("DIR");
  config->type_name("FILE");
  preset->type_name("NAME");
  model->excludes(config)->excludes(preset);
  config->excludes(preset);
  app.add_option("--gpu", f.gpu, "GPU preset: h100, h100-nvl, h20, h200, b200, a100-80g, a100-40g, l40s (see --list)")->type_name("NAME");
  app.add_option("--gpu-memory-gib", f.gpu_memory_gib, "GPU memory in GiB (as nvidia-smi reports it / 1024); overrides the preset's")->type_name("GIB");
  app.add_option("--gpus-per-node", f.gpus_per_node, "GPUs per node (default 8); W = gpus-per-node x nodes")->type_name("N");
  app.add_option("--nodes", f.nodes, "Nodes (default 1)")->type_name("N");
  app.add_option("--host-memory-gib", f.host_memory_gib, "Host memory per node in GiB: checks resident and page-cache needs")->type_name("GIB");
  app.add_option("--max-context", f.max_context, "Target context per sequence in tokens (default 4096, at most max_position_embeddings)")->type_name("TOKENS");
  app.add_option("--concurrency", f.concurrency, "Target sequences at --max-context at once (default 1)")->type_name("N");
  app.add_option("--kv-dtype", f.kv_dtype, "KV cache element type: bf16 (2 bytes, r1serve's today) or fp8 (1 byte)")->type_name("bf16|fp8");
  app.add_option("--prefill-chunk", f.prefill_chunk, "Tokens per forward step, for the workspace reserve (default 8192)")->type_name("TOKENS");
  app.add_option("--block-size", f.block_size, "Tokens per KV block, as r1-coordinator --block-size (default 16)")->type_name("TOKENS");
  app.add_option("--coordinator", f.coordinator, "HOST:PORT for the printed launch commands (default COORDINATOR_HOST:50051)")->type_name("HOST:PORT");
  app.add_flag("--json", f.json, "Print the plan as JSON");
  app.add_flag("--list", f.list, "List the model and GPU presets and exit");
  try {
    app.parse(std::vector<std::string>(args.rbegin(), args.rend()));
  } catch (const CLI::CallForHelp&) {
    std::printf("%s", app.help().c_str());
    return 0;
  } catch (const CLI::ParseError& e) {
    return BadInput(e.what());
  }
  if (f.list) {
    std::printf("%s", PresetList().c_str());
    return 0;
  }
  auto request = MakeRequest(f);
  if (!request.ok()) return BadInput(std::string(request.status().message()));
  auto plan = planner::MakePlan(*request);
  if (!plan.ok()) return BadInput(std::string(plan.status().message()));
  if (f.json) {
    std::printf("%s\n", planner::RenderJson(*plan).dump(2).c_str());
  } else {
    std::printf("%s", planner::RenderText(*plan).c_str());
  }
  return 0;
}

}  // namespace r1

#include "cli/serve.h"

#ifdef R1_WITH_GPU
#include "coordinator/engine/gpu_executor.h"
#endif

#include <cstdio>
#include <cstdlib>

#include "CLI/CLI.hpp"
#include "common/memory.h"
#include "common/status.h"

namespace r1 {

CLI::App* AddServeCommand(CLI::App& app, ServeCommandOptions& o) {
  auto* cmd = app.add_subcommand(
      "serve",
      "Serve a model folder over HTTP: OpenAI-compatible /v1 (chat/completions, completions, "
      "models), Ollama-compatible /api (chat, generate, tags, show, ps, version), /health, "
      "/ready and /metrics (Prometheus); with --grpc-listen also the gRPC API (r1serve.v1). "
      "Single process: the model runs in this process. "
      "SIGTERM or Ctrl-C stops taking requests, finishes running ones (up to --drain-timeout) "
      "and exits; a second signal exits at once.");
  cmd->add_option("--model", o.engine.model_dir,
                  "Model folder: config.json, safetensors, tokenizer.json, tokenizer_config.json")
      ->required();
  cmd->add_option("--listen", o.serve.listen,
                  "HOST:PORT to listen on. The default is loopback only, on Ollama's port, so "
                  "Ollama clients find it; 0.0.0.0:PORT exposes it to the network (set "
                  "--api-key then)")
      ->capture_default_str();
  cmd->add_option("--grpc-listen", o.serve.grpc_listen,
                  "HOST:PORT for the internal gRPC API (proto/r1serve.proto: Generate, Chat, "
                  "Tokenize, ListModels, Health), e.g. 127.0.0.1:50052; off when not given");
  cmd->add_option("--api-key", o.serve.api.api_key,
                  "Require 'Authorization: Bearer KEY' on /v1 and /api, and the metadata "
                  "'authorization: Bearer KEY' on gRPC calls but Health (default: $R1_API_KEY; "
                  "/health, /ready and /metrics stay open)");
  cmd->add_option("--served-model-name", o.serve.api.model_name,
                  "The model's name in the APIs (default: the folder's name)");
  cmd->add_option("--max-context", o.engine.max_context,
                  "Tokens per sequence, prompt and reply together (0: the model's limit, as "
                  "far as the KV cache holds)")
      ->capture_default_str();
  cmd->add_option("--kv-memory-gb", o.kv_memory_gb, "KV-cache memory budget in GB")
      ->capture_default_str();
  cmd->add_option("--max-batch-size", o.engine.max_batch_size, "Sequences per forward step")
      ->capture_default_str();
  cmd->add_option("--max-step-tokens", o.engine.max_step_tokens,
                  "Token budget of one forward step (chunked prefill)")
      ->capture_default_str();
  cmd->add_option("--sampling-threads", o.engine.sampling_threads,
                  "Threads choosing each step's tokens, one sequence each (0: every core, at most "
                  "1024); the tokens do not depend on it")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  cmd->add_option("--max-queued-requests", o.engine.max_queued_requests,
                  "Requests waiting to start; more get 429")
      ->capture_default_str();
  cmd->add_option("--max-tokens", o.serve.api.max_tokens,
                  "Upper bound of a request's max_tokens / num_predict (0: the context)")
      ->capture_default_str();
  cmd->add_option("--max-body-mb", o.max_body_mb, "Largest request body (larger: 413)")
      ->capture_default_str();
  cmd->add_option("--http-threads", o.serve.http_threads, "Threads serving HTTP connections")
      ->capture_default_str();
  auto* gpu = cmd->add_flag("--gpu", o.gpu,
                            "Run the model on GPU 0 (the CUDA backend; FP8 weights stay FP8 in device "
                            "memory, the KV cache in device memory)");
  cmd->add_option("--gpu-activations", o.gpu_activations,
                  "With --gpu: f32 (exact against the reference), bf16, or fp8 (DeepSeek's FP8 "
                  "activations, fastest)")
      ->capture_default_str()
      ->needs(gpu);
  cmd->add_option("--drain-timeout", o.drain_timeout_s,
                  "Seconds running requests may take to finish after SIGTERM")
      ->capture_default_str();
  return cmd;
}

absl::Status RunServeCommand(ServeCommandOptions o) {
  if (o.serve.api.api_key.empty()) {
    if (const char* key = std::getenv("R1_API_KEY")) o.serve.api.api_key = key;
  }
  o.serve.api.model_dir = o.engine.model_dir;
  o.engine.kv_memory_bytes = static_cast<int64_t>(o.kv_memory_gb * (1ll << 30));
  o.serve.max_body_bytes = static_cast<size_t>(o.max_body_mb * (1 << 20));
  o.serve.drain_timeout_ms = static_cast<int64_t>(o.drain_timeout_s * 1000);
  r1::MemoryTrimmer memory_trimmer;  // bounded malloc arenas, free pages handed back (common/memory.h)
  std::fprintf(stderr, "loading %s%s ...\n", o.engine.model_dir.c_str(), o.gpu ? " onto GPU 0" : "");
  if (o.gpu) {
#ifdef R1_WITH_GPU
    GpuModelOptions g;
    R1_ASSIGN_OR_RETURN(g.activations, ParseGpuActivations(o.gpu_activations));
    g.max_step_tokens = o.engine.max_step_tokens;
    auto model = GpuDeepseekV3Model::Load(o.engine.model_dir, g);
    if (!model.ok()) return Annotate(model.status(), "loading the model onto the GPU");
    o.engine.executor = std::make_shared<GpuModelExecutor>(std::move(*model));
#else
    return absl::FailedPreconditionError(
        "--gpu: this build has no CUDA backend (configure with -DR1_CUDA=on where nvcc is found)");
#endif
  }
  auto engine = LocalEngine::Create(o.engine);
  if (!engine.ok()) return Annotate(engine.status(), "starting the engine");
  std::fprintf(stderr, "context %ld tokens\n", static_cast<long>((*engine)->max_context()));
  return RunServer(o.serve, **engine, [&o](const std::string& url) {
    std::printf("listening on %s\n", url.c_str());
    std::printf("  OpenAI:  %s/v1  (e.g. POST %s/v1/chat/completions)\n", url.c_str(), url.c_str());
    std::printf("  Ollama:  %s  (e.g. OLLAMA_HOST=%s)\n", url.c_str(), url.c_str());
    if (!o.serve.api.api_key.empty())
      std::printf("  API key required (Authorization: Bearer ...)\n");
    std::fflush(stdout);
  });
}

}  // namespace r1

// `r1 serve`: single-process serving — a LocalEngine on the model folder plus the HTTP APIs
// (OpenAI /v1, Ollama /api, /health, /ready, /metrics) until SIGTERM / SIGINT, then a drain.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "coordinator/engine/local_engine.h"
#include "coordinator/serve/server.h"

namespace CLI {
class App;
}

namespace r1 {

struct ServeCommandOptions {
  ServeOptions serve;
  LocalEngine::Options engine;
  double kv_memory_gb = 1.0;
  double drain_timeout_s = 30;
  double max_body_mb = 8;
  bool gpu = false;                     // the GPU model on GPU 0 (CUDA builds)
  std::string gpu_activations = "f32";  // f32, bf16 or fp8 (docs/design.md, GPU)
};

// Adds `serve` to `app`, its flags bound to `options`.
CLI::App* AddServeCommand(CLI::App& app, ServeCommandOptions& options);
absl::Status RunServeCommand(ServeCommandOptions options);

}  // namespace r1

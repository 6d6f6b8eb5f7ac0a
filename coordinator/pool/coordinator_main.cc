// r1-coordinator: drives W r1-worker ranks (launched by mpirun, or registering on their own) and
// serves Status / Generate to clients (`r1 generate --coordinator`). With --http-listen it also
// serves the public APIs (OpenAI and Ollama HTTP, and with --grpc-api-listen r1serve.v1) through
// the scheduler (LocalEngine) whose steps run on the group (PoolExecutor): the same serving code
// as `r1 serve`, with the model spread over the workers.
// main(): parse flags -> build the pool and the gRPC server -> wait for the workers (start-up
// timeout naming the missing ranks) -> serve until SIGTERM/SIGINT (with the APIs: drain them) ->
// tell the workers to shut down -> stop.
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/strings/str_join.h"
#include "common/config.h"
#include "common/log.h"
#include "common/memory.h"
#include "coordinator/engine/local_engine.h"
#include "coordinator/pool/pool_executor.h"
#include "coordinator/pool/services.h"
#include "coordinator/serve/server.h"
#include "coordinator/pool/worker_pool.h"
#include "grpcpp/grpcpp.h"

namespace {

std::chrono::milliseconds Ms(double seconds) {
  return std::chrono::milliseconds(static_cast<int64_t>(seconds * 1000));
}

// Waits for SIGTERM/SIGINT (blocked in every thread) up to `timeout`; true if one came.
bool WaitForSignal(const sigset_t& signals, std::chrono::milliseconds timeout) {
  timespec ts{static_cast<time_t>(timeout.count() / 1000), static_cast<long>(timeout.count() % 1000) * 1000000};
  return sigtimedwait(&signals, nullptr, &ts) > 0;
}

// The public APIs on the group until a signal (or the start-up timeout) and the drain; the exit
// code. The start-up timeout is watched on a thread that, when it fires, signals this process
// so the server drains and stops as it would on SIGTERM.
int ServeApis(r1::WorkerPool& pool, const r1::PoolOptions& pool_options, const std::string& model_dir,
              const std::string& http_listen, r1::ServeOptions serve, r1::LocalEngine::Options engine_options,
              double drain_timeout, double max_body_mb, double not_ready_timeout, double startup_timeout,
              bool logits_to_coordinator, std::string* reason) {
  auto config = r1::LoadModelConfig(model_dir);
  if (!config.ok()) {
    std::fprintf(stderr, "r1-coordinator: error: --model %s: %s\n", model_dir.c_str(),
                 std::string(config.status().message()).c_str());
    return 1;
  }
  auto executor = r1::PoolExecutor::Create(&pool, *config, /*choose_on_rank0=*/!logits_to_coordinator);
  if (!executor.ok()) {
    std::fprintf(stderr, "r1-coordinator: error: %s\n", std::string(executor.status().message()).c_str());
    return 1;
  }
  engine_options.executor = std::move(*executor);
  engine_options.not_ready_timeout_ms = static_cast<int64_t>(not_ready_timeout * 1000);
  auto engine = r1::LocalEngine::Create(std::move(engine_options));
  if (!engine.ok()) {
    std::fprintf(stderr, "r1-coordinator: error: starting the scheduler: %s\n",
                 std::string(engine.status().message()).c_str());
    return 1;
  }
  if (serve.api.api_key.empty()) {
    if (const char* key = std::getenv("R1_API_KEY")) serve.api.api_key = key;
  }
  serve.listen = http_listen;
  serve.api.model_dir = model_dir;
  serve.drain_timeout_ms = static_cast<int64_t>(drain_timeout * 1000);
  serve.max_body_bytes = static_cast<size_t>(max_body_mb * (1 << 20));

  std::atomic<bool> done{false}, timed_out{false};
  std::string timeout_reason;
  std::thread watchdog([&] {
    const auto start = std::chrono::steady_clock::now();
    while (!done.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      std::vector<int> missing = pool.NeverRegistered();
      if (missing.empty()) return;
      if (std::chrono::steady_clock::now() - start > Ms(startup_timeout)) {
        timeout_reason = "start-up timeout: after " + std::to_string(static_cast<int>(startup_timeout)) +
                         " s, rank(s) " + absl::StrJoin(missing, ", ") + " of " +
                         std::to_string(pool_options.world_size) + " never registered";
        R1_LOG(ERROR) << timeout_reason;
        std::fprintf(stderr, "r1-coordinator: error: %s\n", timeout_reason.c_str());
        timed_out.store(true);
        kill(getpid(), SIGTERM);
        return;
      }
    }
  });
  absl::Status s = r1::RunServer(serve, **engine, [&](const std::string& url) {
    std::printf("listening on %s (OpenAI: %s/v1, Ollama: %s/api) for %d worker(s); context %ld tokens\n",
                url.c_str(), url.c_str(), url.c_str(), pool_options.world_size,
                static_cast<long>((*engine)->max_context()));
    std::fflush(stdout);
  });
  done.store(true);
  watchdog.join();
  if (!s.ok()) {
    std::fprintf(stderr, "r1-coordinator: error: %s\n", std::string(s.message()).c_str());
    *reason = std::string(s.message());
    return 1;
  }
  if (timed_out.load()) {
    *reason = timeout_reason;
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "r1-coordinator: drives W r1-worker ranks of one model and serves Status/Generate over gRPC.\n"
      "Workers dial it: `mpirun -np W r1-worker --model DIR --coordinator HOST:PORT`, or each\n"
      "`r1-worker --model DIR --coordinator HOST:PORT --rank-from-env` (Kubernetes). Once all W\n"
      "have registered it hands out the layout and the rendezvous; if a worker dies the request in\n"
      "flight fails, the coordinator reports not ready, and the group forms again when the rank\n"
      "comes back (an mpirun job cannot re-form: mpirun restarts the whole job).\n"
      "With --http-listen (and --model) it serves the OpenAI- and Ollama-compatible APIs on the group,\n"
      "as `r1 serve` does in one process; /ready answers 200 only while every worker is loaded."};
  std::string listen = "127.0.0.1:50051";
  r1::PoolOptions pool_options;
  double startup_timeout = 600, heartbeat_timeout = 3, gloo_timeout = 5, step_timeout = 120;
  app.add_option("--listen", listen, "HOST:PORT to serve workers and clients on (0.0.0.0:PORT: every interface)")
      ->default_val(listen);
  app.add_option("--workers", pool_options.world_size, "Number of worker ranks W")->required()->check(CLI::Range(1, 4096));
  app.add_option("--startup-timeout", startup_timeout,
                 "Seconds for all W ranks to register at start; then exit naming the missing ranks")
      ->default_val(startup_timeout)
      ->check(CLI::PositiveNumber);
  app.add_option("--heartbeat-timeout", heartbeat_timeout, "Seconds without a heartbeat before a worker counts as dead")
      ->default_val(heartbeat_timeout)
      ->check(CLI::PositiveNumber);
  app.add_option("--gloo-timeout", gloo_timeout,
                 "Seconds for the Gloo rendezvous and each collective (registration path); a rank waiting "
                 "on a dead peer gives up after this")
      ->default_val(gloo_timeout)
      ->check(CLI::PositiveNumber);
  app.add_option("--step-timeout", step_timeout, "Seconds for all workers to answer one step")
      ->default_val(step_timeout)
      ->check(CLI::PositiveNumber);
  app.add_option("--kv-blocks", pool_options.kv_blocks, "KV cache blocks per worker")
      ->default_val(pool_options.kv_blocks)
      ->check(CLI::PositiveNumber);
  app.add_option("--block-size", pool_options.block_size, "Tokens per KV cache block")
      ->default_val(pool_options.block_size)
      ->check(CLI::PositiveNumber);
  // The public APIs over the group.
  std::string model_dir, http_listen;
  r1::ServeOptions serve;
  serve.listen.clear();
  r1::LocalEngine::Options engine_options;
  double drain_timeout = 30, max_body_mb = 8, not_ready_timeout = 30;
  app.add_option("--model", model_dir,
                 "The model folder (config.json, tokenizer.json, tokenizer_config.json): the same one "
                 "the workers load; needed with --http-listen");
  app.add_option("--http-listen", http_listen,
                 "HOST:PORT for the OpenAI (/v1) and Ollama (/api) HTTP APIs, /health, /ready and "
                 "/metrics; off when not given");
  app.add_option("--grpc-api-listen", serve.grpc_listen,
                 "HOST:PORT for the public gRPC API (proto/r1serve.proto); needs --http-listen");
  app.add_option("--api-key", serve.api.api_key,
                 "Require 'Authorization: Bearer KEY' on /v1, /api and the public gRPC API (default: "
                 "$R1_API_KEY; /health, /ready and /metrics stay open)");
  app.add_option("--served-model-name", serve.api.model_name, "The model's name in the APIs (default: the folder's name)");
  app.add_option("--max-context", engine_options.max_context,
                 "Tokens per sequence, prompt and reply (0: the model's limit, as far as the KV cache holds)")
      ->capture_default_str();
  app.add_option("--max-batch-size", engine_options.max_batch_size, "Sequences per forward step")->capture_default_str();
  app.add_option("--max-step-tokens", engine_options.max_step_tokens, "Token budget of one step (chunked prefill)")
      ->capture_default_str();
  bool logits_to_coordinator = false;
  app.add_flag("--logits-to-coordinator", logits_to_coordinator,
               "Bring every row's logits (vocab x 4 bytes) from rank 0 and choose the tokens here, instead of "
               "rank 0 choosing them with this process's sampler state (same tokens; for comparison)");
  app.add_option("--sampling-threads", engine_options.sampling_threads,
                 "Threads choosing each step's tokens, one sequence each (0: every core, at most 1024); the tokens do "
                 "not depend on it")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  app.add_option("--max-queued-requests", engine_options.max_queued_requests, "Requests waiting to start; more get 429")
      ->capture_default_str();
  app.add_option("--max-tokens", serve.api.max_tokens, "Upper bound of a request's max_tokens (0: the context)")
      ->capture_default_str();
  app.add_option("--max-body-mb", max_body_mb, "Largest request body (larger: 413)")->capture_default_str();
  app.add_option("--http-threads", serve.http_threads, "Threads serving HTTP connections")->capture_default_str();
  app.add_option("--drain-timeout", drain_timeout, "Seconds running requests may take to finish after SIGTERM")
      ->capture_default_str();
  app.add_option("--not-ready-timeout", not_ready_timeout,
                 "Seconds an accepted request waits for a degraded group to come back before it fails")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  // Before the gRPC and HTTP threads start: bounded malloc arenas, free pages handed back (see
  // common/memory.h; the soak's coordinator grew 126 -> 600 MiB without it).
  r1::MemoryTrimmer memory_trimmer;
  const bool serving = !http_listen.empty();
  if (!serving && (!serve.grpc_listen.empty() || !model_dir.empty())) {
    std::fprintf(stderr, "r1-coordinator: error: --grpc-api-listen and --model go with --http-listen\n");
    return 2;
  }
  if (serving && model_dir.empty()) {
    std::fprintf(stderr, "r1-coordinator: error: --http-listen needs --model DIR (the tokenizer and chat template)\n");
    return 2;
  }
  pool_options.heartbeat_timeout = Ms(heartbeat_timeout);
  pool_options.gloo_timeout = Ms(gloo_timeout);
  pool_options.step_timeout = Ms(step_timeout);

  // A peer that died leaves sockets that fail on write: that must be an error (EPIPE), not SIGPIPE
  // killing this process (Gloo does not always write with MSG_NOSIGNAL).
  signal(SIGPIPE, SIG_IGN);
  // Signals are taken by sigtimedwait below; every thread (gRPC's too) starts with them blocked.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  // With the APIs, RunServer installs its own handlers (and drains on the first signal).
  if (!serving) pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  r1::WorkerPool pool(pool_options);
  auto control = r1::CreateWorkerControlService(pool);
  auto clients = r1::CreateCoordinatorService(pool);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  // gRPC sets SO_REUSEPORT by default: a second coordinator on the same port would then start
  // "successfully" and share the workers. Refuse the port instead.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(256 << 20);
  builder.SetMaxSendMessageSize(256 << 20);
  builder.RegisterService(control.get());
  builder.RegisterService(clients.get());
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    std::fprintf(stderr, "r1-coordinator: error: cannot listen on %s (in use by another coordinator? a bad address?)\n",
                 listen.c_str());
    return 1;
  }
  R1_LOG(INFO) << "r1-coordinator listening on " << listen << " for " << pool_options.world_size << " worker(s)";

  int exit_code = 0;
  std::string reason = "coordinator stopped";
  const auto start = std::chrono::steady_clock::now();
  if (serving) {
    exit_code = ServeApis(pool, pool_options, model_dir, http_listen, serve, engine_options, drain_timeout,
                          max_body_mb, not_ready_timeout, startup_timeout, logits_to_coordinator, &reason);
    pool.Shutdown(reason);
    server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    server->Wait();
    R1_LOG(INFO) << "stopped";
    return exit_code;
  }
  bool signalled = false;
  while (!signalled) {
    signalled = WaitForSignal(signals, std::chrono::milliseconds(200));
    if (signalled) break;
    std::vector<int> missing = pool.NeverRegistered();
    if (!missing.empty() && std::chrono::steady_clock::now() - start > Ms(startup_timeout)) {
      reason = "start-up timeout: after " + std::to_string(static_cast<int>(startup_timeout)) + " s, rank(s) " +
               absl::StrJoin(missing, ", ") + " of " + std::to_string(pool_options.world_size) +
               " never registered";
      R1_LOG(ERROR) << reason;
      std::fprintf(stderr, "r1-coordinator: error: %s\n", reason.c_str());
      exit_code = 1;
      break;
    }
  }
  if (signalled) {
    R1_LOG(INFO) << "signal: shutting down";
  }
  pool.Shutdown(reason);
  // Give the workers' streams a moment to carry Shutdown, then stop.
  const auto stop_begin = std::chrono::steady_clock::now();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  server->Wait();
  R1_LOG(INFO) << "server stopped in " << std::chrono::duration<double>(std::chrono::steady_clock::now() - stop_begin).count() << " s";
  R1_LOG(INFO) << "stopped";
  return exit_code;
}

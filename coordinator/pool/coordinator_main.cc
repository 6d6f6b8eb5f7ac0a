// r1-coordinator: drives W r1-worker ranks (launched by mpirun, or registering on their own) and
// serves Status / Generate to clients (`r1 generate --coordinator`). The public APIs (OpenAI,
// Ollama, r1serve.proto) and the scheduler come later on top of the same WorkerPool.
// main(): parse flags -> build the pool and the gRPC server -> wait for the workers (start-up
// timeout naming the missing ranks) -> serve until SIGTERM/SIGINT -> tell the workers to shut
// down -> stop.
#include <pthread.h>
#include <signal.h>
#include <time.h>

#include <cstdio>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "coordinator/pool/services.h"
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

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "r1-coordinator: drives W r1-worker ranks of one model and serves Status/Generate over gRPC.\n"
      "Workers dial it: `mpirun -np W r1-worker --model DIR --coordinator HOST:PORT`, or each\n"
      "`r1-worker --model DIR --coordinator HOST:PORT --rank-from-env` (Kubernetes). Once all W\n"
      "have registered it hands out the layout and the rendezvous; if a worker dies the request in\n"
      "flight fails, the coordinator reports not ready, and the group forms again when the rank\n"
      "comes back (an mpirun job cannot re-form: mpirun restarts the whole job)."};
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
  CLI11_PARSE(app, argc, argv);
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
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

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

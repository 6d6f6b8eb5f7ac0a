// r1-worker: one rank of a model. Two launch paths end in the same runtime:
//   mpirun -np W r1-worker --model DIR --coordinator HOST:PORT      (rank and size from MPI)
//   r1-worker --model DIR --coordinator HOST:PORT --rank-from-env   (Kubernetes: registration,
//       rank from LWS_WORKER_INDEX or the StatefulSet ordinal at the end of HOSTNAME)
// A Kubernetes pod is a whole node (8 GPUs, so NCCL keeps NVLink and shared memory between its
// ranks), so a pod runs one r1-worker per GPU: --ranks-per-pod G --local-rank L makes the rank
// pod index x G + L (deploy/bin/r1-worker-pod starts the G processes).
// main(): parse flags -> work out rank and size -> build the runtime -> run it until the
// coordinator says Shutdown, SIGTERM/SIGINT arrives, or an error (printed, exit code 1).
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

#include "CLI/CLI.hpp"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status.h"
#include "worker/parallel/mpi_communicator.h"
#include "worker/service/worker_runtime.h"

namespace r1 {
namespace {

// The rank a Kubernetes pod was given: LeaderWorkerSet's LWS_WORKER_INDEX, else the ordinal a
// StatefulSet puts at the end of the pod name (HOSTNAME "r1-worker-3" -> 3).
absl::StatusOr<int> RankFromEnvironment() {
  int rank = -1;
  if (const char* lws = std::getenv("LWS_WORKER_INDEX")) {
    if (!absl::SimpleAtoi(lws, &rank) || rank < 0) {
      return absl::InvalidArgumentError(absl::StrCat("LWS_WORKER_INDEX='", lws, "' is not a rank"));
    }
    return rank;
  }
  const char* host = std::getenv("HOSTNAME");
  const std::string name = host ? host : "";
  const size_t dash = name.rfind('-');
  if (dash != std::string::npos && absl::SimpleAtoi(name.substr(dash + 1), &rank) && rank >= 0) return rank;
  return absl::InvalidArgumentError(absl::StrCat(
      "--rank-from-env: neither LWS_WORKER_INDEX nor a StatefulSet-style HOSTNAME (name-N) is set (HOSTNAME='",
      name, "')"));
}

// The rank of local process `local_rank` of a pod running `ranks_per_pod` of them, and the world
// size when LeaderWorkerSet tells the group's pod count (LWS_GROUP_SIZE) and no --world-size was
// given. Refuses what would register as a wrong rank, naming the numbers.
absl::Status RankForPod(int ranks_per_pod, int local_rank, WorkerOptions& options) {
  if (local_rank < 0 || local_rank >= ranks_per_pod) {
    return absl::InvalidArgumentError(absl::StrCat("--local-rank ", local_rank,
                                                   " is outside this pod's ", ranks_per_pod,
                                                   " rank(s) (--ranks-per-pod)"));
  }
  auto pod = RankFromEnvironment();
  if (!pod.ok()) return pod.status();
  options.rank = *pod * ranks_per_pod + local_rank;
  int pods = 0;
  const char* lws_size = std::getenv("LWS_GROUP_SIZE");
  if (options.world_size == 0 && lws_size && absl::SimpleAtoi(lws_size, &pods) && pods > 0) {
    options.world_size = pods * ranks_per_pod;
  }
  if (options.world_size > 0 && options.rank >= options.world_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rank ", options.rank, " (pod ", *pod, " x ", ranks_per_pod, " + local rank ",
        local_rank, ") is outside world size ", options.world_size));
  }
  return absl::OkStatus();
}

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "r1-worker: error: %s\n", std::string(s.message()).c_str());
  return 1;
}

}  // namespace
}  // namespace r1

int main(int argc, char** argv) {
  CLI::App app{
      "r1-worker: one rank of a DeepSeek-V3/R1 model, driven by r1-coordinator.\n"
      "Under mpirun, rank and world size come from MPI and collectives run over MPI. Started on its\n"
      "own (Kubernetes), it registers with the coordinator, which assigns the parallel layout and\n"
      "serves the Gloo rendezvous; the group re-forms when a rank restarts."};
  r1::WorkerOptions options;
  bool rank_from_env = false;
  int ranks_per_pod = 1, local_rank = 0;
  double connect_timeout_s = 30, heartbeat_s = 1;
  app.add_option("--coordinator", options.coordinator, "HOST:PORT of r1-coordinator")->required();
  app.add_option("--model", options.model_dir, "Checkpoint folder on this machine (config.json + safetensors)")
      ->required();
  auto* rank_opt = app.add_option("--rank", options.rank, "This worker's rank (default: the coordinator assigns one)");
  app.add_flag("--rank-from-env", rank_from_env,
               "Rank from LWS_WORKER_INDEX, or the trailing -N of HOSTNAME (StatefulSet ordinal)")
      ->excludes(rank_opt);
  auto* per_pod_opt =
      app.add_option("--ranks-per-pod", ranks_per_pod,
                     "With --rank-from-env: ranks (GPUs) in each pod; rank = pod index x this + "
                     "--local-rank")
          ->default_val(1)
          ->check(CLI::Range(1, 1024))
          ->needs("--rank-from-env");
  app.add_option("--local-rank", local_rank,
                 "With --rank-from-env: this process's index among its pod's ranks")
      ->default_val(0)
      ->needs(per_pod_opt);
  app.add_option("--world-size", options.world_size,
                 "Number of ranks (default: LWS_GROUP_SIZE x --ranks-per-pod if set, else the "
                 "coordinator's --workers)");
  app.add_option("--advertise-address", options.advertise_address,
                 "Address Gloo peers reach this rank at (registration path)")
      ->default_val("127.0.0.1");
  app.add_option("--connect-timeout", connect_timeout_s, "Seconds to wait for the coordinator at start")
      ->default_val(30)
      ->check(CLI::PositiveNumber);
  app.add_option("--heartbeat-interval", heartbeat_s, "Seconds between heartbeats")
      ->default_val(1)
      ->check(CLI::PositiveNumber);
  CLI11_PARSE(app, argc, argv);
  options.connect_timeout = std::chrono::milliseconds(static_cast<int64_t>(connect_timeout_s * 1000));
  options.heartbeat_interval = std::chrono::milliseconds(static_cast<int64_t>(heartbeat_s * 1000));

  // A peer that died leaves sockets that fail on write: that must be an error (EPIPE), not SIGPIPE
  // killing this process (Gloo does not always write with MSG_NOSIGNAL).
  signal(SIGPIPE, SIG_IGN);
  // Signals go to a watcher thread: every other thread (gRPC's included) starts with them blocked.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGUSR2);  // our own wake-up of the watcher at exit
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  options.mpi = r1::LaunchedByMpirun();
  if (options.mpi) {
    auto layout = r1::InitMpi(&argc, &argv);
    if (!layout.ok()) return r1::Fail(layout.status());
    if (options.world_size > 0 && options.world_size != layout->world_size) {
      return r1::Fail(absl::InvalidArgumentError(absl::StrCat("--world-size ", options.world_size, " but mpirun started ",
                                                              layout->world_size, " ranks")));
    }
    options.rank = layout->rank;
    options.world_size = layout->world_size;
  } else if (rank_from_env) {
    const absl::Status s = r1::RankForPod(ranks_per_pod, local_rank, options);
    if (!s.ok()) return r1::Fail(s);
  }

  auto runtime = r1::WorkerRuntime::Create(options);
  if (!runtime.ok()) return r1::Fail(runtime.status());
  std::thread watcher([&] {
    int sig = 0;
    sigwait(&signals, &sig);
    if (sig == SIGUSR2) return;
    R1_LOG(INFO) << "signal " << sig << ": stopping";
    (*runtime)->Stop();
  });
  const absl::Status s = (*runtime)->Run();
  pthread_kill(watcher.native_handle(), SIGUSR2);
  watcher.join();
  runtime->reset();
  if (options.mpi) {
    // A failed rank must not wait in MPI_Finalize for peers that may never get there.
    if (!s.ok()) {
      std::fprintf(stderr, "r1-worker: error: %s\n", std::string(s.message()).c_str());
      std::fflush(stderr);
      std::_Exit(1);
    }
    r1::FinalizeMpi();
  }
  return s.ok() ? 0 : r1::Fail(s);
}

// The worker process's runtime: dials the coordinator, registers, then serves its stream of
// Load / Step / FreeSequences / DropGroup / Shutdown messages (proto/worker.proto) until told to
// stop. The same runtime serves both launch paths: ranks from mpirun (MPI communicator) and
// ranks that register on their own (Gloo over TCP, rendezvous through the coordinator's store).
//
// Threads: Run() does all model work and every collective on the calling thread (the thread
// that initialised MPI: MPI runs at thread level FUNNELED). A reader thread turns the stream
// into a queue; a heartbeat thread writes a Heartbeat every `heartbeat_interval`, also while a
// step or a load is running, so the coordinator can tell slow from dead.
//
// A lost coordinator (killed and restarted, or cut off by the network) is not the end: the
// worker drops its communicator, keeps its weights, dials the same address again for up to
// `reconnect_timeout` and registers as the same rank; the coordinator that answers (the same one,
// or its replacement) forms the group again and only the rendezvous is re-run. A silent
// coordinator is noticed by gRPC keepalive (a ping unanswered for `keepalive_timeout`).
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace r1 {

struct WorkerOptions {
  std::string coordinator;  // HOST:PORT of r1-coordinator
  std::string model_dir;    // the checkpoint on this machine
  int rank = -1;            // -1: the coordinator assigns one
  int world_size = 0;       // 0: the coordinator's
  bool mpi = false;         // rank and size come from mpirun; collectives over MPI
  std::string advertise_address = "127.0.0.1";  // where this rank listens for Gloo peers
  std::chrono::milliseconds connect_timeout{30000};  // to reach the coordinator at start
  std::chrono::milliseconds register_timeout{10000};  // for its answer to Register
  std::chrono::milliseconds heartbeat_interval{1000};
  std::chrono::milliseconds reconnect_timeout{300000};  // to get a lost coordinator back
  std::chrono::milliseconds keepalive_time{5000};       // ping the coordinator after this much quiet
  std::chrono::milliseconds keepalive_timeout{5000};    // unanswered this long: the link is dead
  // Under mpirun, a step still running after the coordinator was lost, longer than this and
  // than 10 times the longest step this rank has run, is stuck in a collective with a rank that
  // never received it (MPI collectives have no timeout and cannot be cancelled): the rank exits so
  // that mpirun ends the job, which its supervisor restarts as a whole.
  std::chrono::milliseconds stuck_step_timeout{5000};
};

// "fnv1a64:<16 hex digits>" over DIR/config.json and, for every *.safetensors file in DIR (by
// name), its name, size, header and the first and last 64 KiB of its tensor data: ranks of one
// group must agree on it. config.json alone is not enough: two checkpoints of one architecture
// (DeepSeek-V3 and R1, or two seeds of `r1 make-tiny`) share it, and ranks holding shards of
// different weights would produce wrong tokens without any error. Reads well under 1 MB per
// shard, so it is cheap even for R1's 163 files.
absl::StatusOr<std::string> CheckpointFingerprint(const std::string& model_dir);

class WorkerRuntime {
 public:
  static absl::StatusOr<std::unique_ptr<WorkerRuntime>> Create(const WorkerOptions& options);
  virtual ~WorkerRuntime() = default;

  // Connects, registers and serves until the coordinator says Shutdown or Stop() is called (OK),
  // or until an error: refused, coordinator unreachable at start or not back within
  // `reconnect_timeout` after it was lost (the message says which).
  virtual absl::Status Run() = 0;
  // Asks Run() to return soon (SIGTERM). Safe from any thread.
  virtual void Stop() = 0;
};

}  // namespace r1

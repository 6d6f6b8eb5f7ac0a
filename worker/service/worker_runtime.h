// The worker process's runtime: dials the coordinator, registers, then serves its stream of
// Load / Step / FreeSequences / DropGroup / Shutdown messages (proto/worker.proto) until told to
// stop. The same runtime serves both launch paths: ranks from mpirun (MPI communicator) and
// ranks that register on their own (Gloo over TCP, rendezvous through the coordinator's store).
//
// Threads: Run() does all model work and every collective on the calling thread (the thread
// that initialised MPI: MPI runs at thread level FUNNELED). A reader thread turns the stream
// into a queue; a heartbeat thread writes a Heartbeat every `heartbeat_interval`, also while a
// step or a load is running, so the coordinator can tell slow from dead.
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
};

// "fnv1a64:<16 hex digits>" of DIR/config.json's bytes: ranks of one group must agree on it.
absl::StatusOr<std::string> ConfigFingerprint(const std::string& model_dir);

class WorkerRuntime {
 public:
  static absl::StatusOr<std::unique_ptr<WorkerRuntime>> Create(const WorkerOptions& options);
  virtual ~WorkerRuntime() = default;

  // Connects, registers and serves until the coordinator says Shutdown or Stop() is called (OK),
  // or until an error: refused, coordinator unreachable or gone (the message says which).
  virtual absl::Status Run() = 0;
  // Asks Run() to return soon (SIGTERM). Safe from any thread.
  virtual void Stop() = 0;
};

}  // namespace r1

// The coordinator's view of its W workers: registration, group formation, load progress,
// health, and the steps it runs on them. Transport-free: the gRPC service (services.h) feeds it
// the workers' messages and gives it a WorkerLink per stream to answer through.
//
// Life of a group:
//   every rank registered and idle -> Load to all (layout, fresh rendezvous prefix) -> all
//   Loaded -> ready. A rank lost (stream closed, or no heartbeat for heartbeat_timeout) -> the
//   step in flight fails at once with UNAVAILABLE naming the rank, not ready, DropGroup to the
//   others; they answer GroupDropped and wait. When the rank registers again, the group forms
//   again (survivors keep their weights and only rejoin the rendezvous).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/pool/rendezvous_store.h"
#include "proto/worker.pb.h"
#include "worker/kv_cache.h"

namespace r1 {

// One worker's stream, as the pool sees it.
class WorkerLink {
 public:
  virtual ~WorkerLink() = default;
  // Queues `m` for the worker; never blocks. Dropped once the link is closed.
  virtual void Send(const worker::v1::CoordinatorMessage& m) = 0;
  // Ends the stream (the worker is considered gone).
  virtual void Close() = 0;
};

struct PoolOptions {
  int world_size = 1;
  int64_t kv_blocks = 1024;    // KV cache blocks per worker
  int64_t block_size = 16;     // tokens per block
  std::chrono::milliseconds heartbeat_timeout{3000};  // silent this long -> dead
  std::chrono::milliseconds gloo_timeout{5000};       // Gloo rendezvous and collective timeout
  std::chrono::milliseconds step_timeout{120000};     // a step not answered by all -> failed
};

// What the group's rank 0 reported about the model.
struct ModelFacts {
  int64_t vocab_size = 0;
  int64_t eos_token_id = -1;
  int64_t max_position_embeddings = 0;
};

class WorkerPool {
 public:
  explicit WorkerPool(const PoolOptions& options);
  ~WorkerPool();

  const PoolOptions& options() const { return options_; }

  // --- from the transport ---
  // A new stream's Register. Returns a link id to pass with the stream's later messages, or
  // the reason it was refused (already sent to the worker through `link`).
  absl::StatusOr<uint64_t> Register(const worker::v1::Register& r, std::shared_ptr<WorkerLink> link);
  void OnMessage(uint64_t link_id, const worker::v1::WorkerMessage& m);
  void OnDisconnect(uint64_t link_id, const std::string& why);

  // --- for the generation loop and the client API ---
  // Runs one step on every worker of the current group, which must be `group` (0: any).
  // Returns rank 0's result once all W answered.
  absl::StatusOr<worker::v1::StepResult> RunStep(worker::v1::Step step, uint64_t group = 0);
  void FreeSequences(const std::vector<uint64_t>& ids);
  // KV blocks of the group (all workers hold the same block layout).
  absl::StatusOr<std::vector<int32_t>> AllocateBlocks(int64_t count);
  void FreeBlocks(const std::vector<int32_t>& blocks);
  uint64_t NextSequenceId();

  bool ready() const;
  // The current group and its model, or UNAVAILABLE saying why not ready.
  absl::StatusOr<std::pair<uint64_t, ModelFacts>> ReadyGroup() const;
  worker::v1::StatusReply Status() const;
  // Ranks that have never registered since start ("1, 3"); empty once all did.
  std::vector<int> NeverRegistered() const;
  // Tells every worker to shut down; later registrations are refused.
  void Shutdown(const std::string& reason);

  RendezvousStore& store() { return store_; }

 private:
  enum class State { kMissing, kIdle, kLoading, kLoaded, kDropping };
  struct Slot {
    State state = State::kMissing;
    std::shared_ptr<WorkerLink> link;
    uint64_t link_id = 0;
    worker::v1::Register info;
    bool ever_registered = false;
    std::chrono::steady_clock::time_point last_heartbeat, load_start, last_progress_log;
    int64_t bytes_done = 0, bytes_total = 0;
    worker::v1::Loaded loaded;
  };
  struct PendingStep {
    uint64_t step_id = 0;
    std::vector<bool> answered;
    int remaining = 0;
    worker::v1::StepResult result;  // rank 0's
    absl::Status error;         // the step is lost: a rank died, the group broke
    absl::Status worker_error;  // a rank answered with an error (the first one)
    std::chrono::steady_clock::time_point worker_error_at;
  };

  static const char* StateName(State s);
  int RankOfLink(uint64_t link_id) const;  // -1: stale
  void Refuse(WorkerLink& link, const std::string& reason);
  void MaybeFormGroupLocked();
  // Marks the group broken: fails the step in flight, not ready, DropGroup to the others.
  void BreakGroupLocked(const std::string& why);
  void LoseRankLocked(int rank, const std::string& why);
  void LogProgressLocked(int rank, bool force);
  std::string ProgressLineLocked() const;
  void WatchHeartbeats();

  PoolOptions options_;
  RendezvousStore store_;
  mutable std::mutex mu_;
  std::condition_variable step_cv_;
  std::vector<Slot> slots_;
  uint64_t next_link_id_ = 1, next_step_id_ = 1, next_sequence_id_ = 1;
  uint64_t group_ = 0;
  bool ready_ = false, shutting_down_ = false;
  // After a failed load the group is formed again when a worker (re)registers, or by itself
  // after hold_retry_ (1 s, doubling to 60 s while loads keep failing; back to 1 s once a group is
  // ready): a transient failure (a peer's address not reachable yet just after a network cut)
  // recovers, and a deterministic one (a bad checkpoint) does not spin.
  bool hold_ = false;
  std::chrono::steady_clock::time_point hold_until_{};
  std::chrono::milliseconds hold_retry_{1000};
  std::string not_ready_reason_ = "waiting for workers to register";
  std::string last_error_;
  std::string launcher_;  // "mpi" or "registration", from the first rank of the group
  ModelFacts facts_;
  std::unique_ptr<PendingStep> pending_;
  std::mutex step_mu_;  // one step at a time
  BlockAllocator blocks_;
  std::thread watcher_;
  std::condition_variable watcher_cv_;
  bool stop_watcher_ = false;
};

}  // namespace r1

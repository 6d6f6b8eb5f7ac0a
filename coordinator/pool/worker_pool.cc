#include "coordinator/pool/worker_pool.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"

namespace r1 {
namespace {

namespace pb = worker::v1;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// "3.2 / 640.0 GB (0.5%), 2.1 GB/s, ETA 301 s"
std::string ProgressText(int64_t done, int64_t total, double seconds) {
  const double rate = seconds > 0 ? done / seconds : 0;
  const double eta = rate > 0 ? std::max<int64_t>(total - done, 0) / rate : 0;
  char buf[160];
  std::snprintf(buf, sizeof buf, "%.1f / %.1f GB (%.1f%%), %.1f GB/s, ETA %.0f s", done / 1e9, total / 1e9,
                total > 0 ? 100.0 * done / total : 0.0, rate / 1e9, eta);
  return buf;
}

}  // namespace

WorkerPool::WorkerPool(const PoolOptions& options)
    : options_(options), slots_(options.world_size), blocks_(options.kv_blocks) {
  watcher_ = std::thread([this] { WatchHeartbeats(); });
}

WorkerPool::~WorkerPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_watcher_ = true;
    watcher_cv_.notify_all();
  }
  watcher_.join();
}

const char* WorkerPool::StateName(State s) {
  switch (s) {
    case State::kMissing: return "missing";
    case State::kIdle: return "registered";
    case State::kLoading: return "loading";
    case State::kLoaded: return "loaded";
    case State::kDropping: return "dropping";
  }
  return "?";
}

int WorkerPool::RankOfLink(uint64_t link_id) const {
  for (size_t r = 0; r < slots_.size(); ++r) {
    if (slots_[r].link && slots_[r].link_id == link_id) return static_cast<int>(r);
  }
  return -1;
}

void WorkerPool::Refuse(WorkerLink& link, const std::string& reason) {
  R1_LOG(WARNING) << "refused a worker: " << reason;
  last_error_ = reason;
  pb::CoordinatorMessage m;
  m.mutable_refused()->set_reason(reason);
  link.Send(m);
}

absl::StatusOr<uint64_t> WorkerPool::Register(const pb::Register& r, std::shared_ptr<WorkerLink> link) {
  std::lock_guard<std::mutex> lock(mu_);
  const int world = options_.world_size;
  const std::string who = absl::StrCat("(host ", r.hostname(), ", pid ", r.pid(), ")");
  auto refuse = [&](const std::string& reason) {
    Refuse(*link, reason);
    return absl::FailedPreconditionError(reason);
  };
  if (shutting_down_) return refuse("the coordinator is shutting down");
  if (r.protocol_version() != pb::PROTOCOL_VERSION) {
    return refuse(absl::StrCat("worker ", who, " speaks protocol version ", r.protocol_version(),
                               ", this coordinator speaks version ", static_cast<int>(pb::PROTOCOL_VERSION),
                               ": run the same r1serve release on the coordinator and every worker"));
  }
  if (r.world_size() != 0 && r.world_size() != world) {
    return refuse(absl::StrCat("world size mismatch: worker ", who, " was started for ", r.world_size(),
                               " ranks, this coordinator runs --workers ", world));
  }
  int rank = r.rank();
  if (rank == -1) {
    for (int i = 0; i < world && rank == -1; ++i) {
      if (!slots_[i].link) rank = i;
    }
    if (rank == -1) {
      return refuse(absl::StrCat("the group is full: all ", world, " ranks are connected; worker ", who,
                                 " is one too many (a second coordinator address, or a stale worker?)"));
    }
  }
  if (rank < 0 || rank >= world) {
    return refuse(absl::StrCat("rank ", rank, " of worker ", who, " is outside [0, ", world,
                               "): this coordinator runs --workers ", world));
  }
  if (!r.model_error().empty()) return refuse(absl::StrCat("rank ", rank, " ", who, ": ", r.model_error()));
  if (slots_[rank].link && slots_[rank].info.hostname() == r.hostname() && slots_[rank].info.pid() == r.pid()) {
    // The same process dialling again: its side of the old stream died (a cut link, seen by its
    // keepalive) before this side noticed. The old stream is stale; the new one replaces it.
    LoseRankLocked(rank, absl::StrCat("worker rank ", rank, " reconnected ", who, " (its old stream is stale)"));
  }
  if (slots_[rank].link) {
    const pb::Register& old = slots_[rank].info;
    return refuse(absl::StrCat("rank ", rank, " is already connected (host ", old.hostname(), ", pid ", old.pid(),
                               "); worker ", who, " is a second rank ", rank,
                               " (a second coordinator address, or a stale worker?)"));
  }
  for (int q = 0; q < world; ++q) {
    const Slot& other = slots_[q];
    if (!other.link) continue;
    if (other.info.config_fingerprint() != r.config_fingerprint()) {
      // The fingerprint covers config.json and samples of every shard (CheckpointFingerprint).
      return refuse(absl::StrCat("rank ", rank, " has a different checkpoint (", r.model_path(), ": fingerprint ",
                                 r.config_fingerprint(), ") than rank ", q, " (", other.info.model_path(),
                                 ": fingerprint ", other.info.config_fingerprint(), ")"));
    }
    if (other.info.launcher() != r.launcher()) {
      return refuse(absl::StrCat("rank ", rank, " was launched by ", r.launcher(), " but rank ", q, " by ",
                                 other.info.launcher(), ": one group, one launch path"));
    }
  }
  Slot& slot = slots_[rank];
  slot = Slot{};
  slot.state = State::kIdle;
  slot.link = std::move(link);
  slot.link_id = next_link_id_++;
  slot.info = r;
  slot.info.set_rank(rank);
  slot.ever_registered = true;
  slot.last_heartbeat = Clock::now();
  hold_ = false;
  pb::CoordinatorMessage m;
  m.mutable_accepted()->set_rank(rank);
  m.mutable_accepted()->set_world_size(world);
  slot.link->Send(m);
  R1_LOG(INFO) << "rank " << rank << " of " << world << " registered " << who << " via " << r.launcher()
               << ", model " << r.model_path();
  MaybeFormGroupLocked();
  return slot.link_id;
}

void WorkerPool::MaybeFormGroupLocked() {
  if (ready_ || hold_ || shutting_down_) return;
  for (const Slot& s : slots_) {
    if (s.state != State::kIdle) return;
  }
  ++group_;
  store_.Clear();
  launcher_ = slots_[0].info.launcher();
  const int world = options_.world_size;
  const std::string backend = world == 1 ? "none" : launcher_ == "mpi" ? "mpi" : "gloo";
  for (int r = 0; r < world; ++r) {
    Slot& s = slots_[r];
    pb::CoordinatorMessage m;
    pb::Load* load = m.mutable_load();
    load->set_group(group_);
    load->set_model_path(s.info.model_path());
    load->set_rank(r);
    load->set_world_size(world);
    load->mutable_rendezvous()->set_backend(backend);
    load->mutable_rendezvous()->set_prefix(absl::StrCat("group", group_, "/"));
    load->mutable_rendezvous()->set_timeout_ms(options_.gloo_timeout.count());
    load->mutable_kv_cache()->set_num_blocks(options_.kv_blocks);
    load->mutable_kv_cache()->set_block_size(options_.block_size);
    s.state = State::kLoading;
    s.load_start = s.last_progress_log = Clock::now();
    s.bytes_done = s.bytes_total = 0;
    s.link->Send(m);
  }
  not_ready_reason_ = absl::StrCat("group ", group_, " is loading");
  R1_LOG(INFO) << "group " << group_ << ": all " << world << " ranks registered; loading (collectives: " << backend
               << ")";
}

void WorkerPool::OnMessage(uint64_t link_id, const pb::WorkerMessage& m) {
  std::lock_guard<std::mutex> lock(mu_);
  const int rank = RankOfLink(link_id);
  if (rank < 0) return;  // a stream the pool already gave up on
  Slot& slot = slots_[rank];
  slot.last_heartbeat = Clock::now();
  switch (m.kind_case()) {
    case pb::WorkerMessage::kHeartbeat:
      break;
    case pb::WorkerMessage::kLoadProgress:
      slot.bytes_done = m.load_progress().bytes_done();
      slot.bytes_total = m.load_progress().bytes_total();
      LogProgressLocked(rank, /*force=*/false);
      break;
    case pb::WorkerMessage::kLoaded: {
      if (slot.state != State::kLoading) break;
      slot.state = State::kLoaded;
      slot.loaded = m.loaded();
      if (slot.bytes_total > 0) slot.bytes_done = slot.bytes_total;
      LogProgressLocked(rank, /*force=*/true);
      R1_LOG(INFO) << "rank " << rank << " loaded in " << m.loaded().seconds() << " s ("
                   << (m.loaded().reused_weights() ? "weights kept" : "weights read") << "): "
                   << m.loaded().sharded_bytes() << " bytes of split weights + " << m.loaded().replicated_bytes()
                   << " replicated, " << m.loaded().kv_cache_bytes() << " of KV cache; collectives "
                   << m.loaded().communicator();
      if (rank == 0) {
        facts_ = {m.loaded().vocab_size(), m.loaded().eos_token_id(), m.loaded().max_position_embeddings()};
      }
      bool all = true;
      for (const Slot& s : slots_) all &= s.state == State::kLoaded;
      if (all) {
        ready_ = true;
        hold_retry_ = std::chrono::seconds(1);
        not_ready_reason_.clear();
        R1_LOG(INFO) << "group " << group_ << " ready: " << options_.world_size << " ranks";
      }
      break;
    }
    case pb::WorkerMessage::kLoadFailed:
      if (slot.state != State::kLoading) break;
      slot.state = State::kIdle;  // it dropped its communicator already
      last_error_ = m.load_failed().error();
      hold_ = true;
      hold_until_ = Clock::now() + hold_retry_;
      R1_LOG(WARNING) << "group " << group_ << " failed to load (" << m.load_failed().error() << "); forming it again in "
                      << hold_retry_.count() / 1000.0 << " s or when a worker registers";
      hold_retry_ = std::min<std::chrono::milliseconds>(hold_retry_ * 2, std::chrono::seconds(60));
      BreakGroupLocked(absl::StrCat("group ", group_, " failed to load: ", m.load_failed().error()));
      break;
    case pb::WorkerMessage::kStepResult: {
      const pb::StepResult& res = m.step_result();
      if (!pending_ || pending_->step_id != res.step_id() || pending_->answered[rank]) break;
      pending_->answered[rank] = true;
      --pending_->remaining;
      if (!res.error().empty() && pending_->worker_error.ok()) {
        pending_->worker_error =
            absl::InternalError(absl::StrCat("step ", res.step_id(), ": rank ", rank, ": ", res.error()));
        pending_->worker_error_at = Clock::now();
      }
      if (rank == 0) pending_->result = res;
      step_cv_.notify_all();
      break;
    }
    case pb::WorkerMessage::kGroupDropped:
      if (slot.state == State::kDropping) slot.state = State::kIdle;
      MaybeFormGroupLocked();
      break;
    default:
      R1_LOG(WARNING) << "rank " << rank << " sent an unexpected message (kind " << m.kind_case() << ")";
  }
}

void WorkerPool::OnDisconnect(uint64_t link_id, const std::string& why) {
  std::lock_guard<std::mutex> lock(mu_);
  const int rank = RankOfLink(link_id);
  if (rank >= 0) LoseRankLocked(rank, absl::StrCat("worker rank ", rank, " lost (", why, ")"));
}

void WorkerPool::LoseRankLocked(int rank, const std::string& why) {
  Slot& slot = slots_[rank];
  if (shutting_down_) {
    R1_LOG(INFO) << "rank " << rank << " disconnected";
  } else {
    R1_LOG(ERROR) << why << " (host " << slot.info.hostname() << ", pid " << slot.info.pid() << ")";
  }
  slot.link->Close();
  slot.link.reset();
  slot.link_id = 0;
  slot.state = State::kMissing;
  last_error_ = why;
  BreakGroupLocked(why);
}

void WorkerPool::BreakGroupLocked(const std::string& why) {
  if (pending_ && pending_->error.ok()) {
    pending_->error = absl::UnavailableError(absl::StrCat(why, " during step ", pending_->step_id));
    step_cv_.notify_all();
  }
  if (ready_) {
    R1_LOG(WARNING) << "group " << group_ << " is down: " << why << "; not ready";
  }
  ready_ = false;
  not_ready_reason_ = why;
  for (Slot& s : slots_) {
    if (!s.link || (s.state != State::kLoading && s.state != State::kLoaded)) continue;
    pb::CoordinatorMessage m;
    m.mutable_drop_group()->set_reason(why);
    s.link->Send(m);
    s.state = State::kDropping;
  }
  MaybeFormGroupLocked();
}

void WorkerPool::WatchHeartbeats() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_watcher_) {
    watcher_cv_.wait_for(lock, std::chrono::milliseconds(200));
    const auto now = Clock::now();
    if (hold_ && now >= hold_until_) {
      hold_ = false;
      MaybeFormGroupLocked();
    }
    for (size_t r = 0; r < slots_.size(); ++r) {
      const Slot& s = slots_[r];
      if (!s.link || now - s.last_heartbeat < options_.heartbeat_timeout) continue;
      char silent[32];
      std::snprintf(silent, sizeof silent, "%.1f", Seconds(now - s.last_heartbeat));
      LoseRankLocked(static_cast<int>(r), absl::StrCat("worker rank ", r, " lost (no heartbeat for ", silent, " s)"));
    }
  }
}

absl::StatusOr<pb::StepResult> WorkerPool::RunStep(pb::Step step, uint64_t group) {
  std::lock_guard<std::mutex> step_lock(step_mu_);
  std::unique_lock<std::mutex> lock(mu_);
  if (!ready_) return absl::UnavailableError(absl::StrCat("the workers are not ready: ", not_ready_reason_));
  if (group != 0 && group != group_) {
    return absl::UnavailableError(absl::StrCat("the worker group re-formed (group ", group, " -> ", group_,
                                               ") and the sequence's KV cache with it"));
  }
  const uint64_t id = next_step_id_++;
  step.set_step_id(id);
  pending_ = std::make_unique<PendingStep>();
  pending_->step_id = id;
  pending_->answered.assign(options_.world_size, false);
  pending_->remaining = options_.world_size;
  pb::CoordinatorMessage m;
  *m.mutable_step() = std::move(step);
  for (Slot& s : slots_) s.link->Send(m);
  // A rank's error often means a peer died under it (a collective saw the connection reset):
  // wait a moment for that death to be reported, so the error names the rank that was lost.
  constexpr auto kDeathGrace = std::chrono::seconds(1);
  const auto deadline = Clock::now() + options_.step_timeout;
  bool done = false;
  while (true) {
    const PendingStep& p = *pending_;
    done = p.remaining == 0 || !p.error.ok();
    if (done) break;
    auto until = deadline;
    if (!p.worker_error.ok()) until = std::min(until, p.worker_error_at + kDeathGrace);
    if (Clock::now() >= until) {
      done = !p.worker_error.ok();
      break;
    }
    step_cv_.wait_until(lock, until);
  }
  std::unique_ptr<PendingStep> p = std::move(pending_);
  if (p->error.ok()) p->error = p->worker_error;
  if (!done) {
    std::vector<int> silent;
    for (int r = 0; r < options_.world_size; ++r) {
      if (!p->answered[r]) silent.push_back(r);
    }
    p->error = absl::DeadlineExceededError(absl::StrCat("step ", id, ": rank(s) ", absl::StrJoin(silent, ", "),
                                                        " did not answer within ",
                                                        Seconds(options_.step_timeout), " s"));
  }
  if (!p->error.ok()) {
    // A rank that failed a step may have left its peers inside a collective: re-form the group.
    if (ready_) BreakGroupLocked(std::string(p->error.message()));
    return p->error;
  }
  return std::move(p->result);
}

void WorkerPool::FreeSequences(const std::vector<uint64_t>& ids) {
  std::lock_guard<std::mutex> lock(mu_);
  pb::CoordinatorMessage m;
  for (uint64_t id : ids) m.mutable_free_sequences()->add_sequence_ids(id);
  for (Slot& s : slots_) {
    if (s.link && s.state == State::kLoaded) s.link->Send(m);
  }
}

absl::StatusOr<std::vector<int32_t>> WorkerPool::AllocateBlocks(int64_t count) {
  std::lock_guard<std::mutex> lock(mu_);
  return blocks_.Allocate(count);
}

void WorkerPool::FreeBlocks(const std::vector<int32_t>& blocks) {
  std::lock_guard<std::mutex> lock(mu_);
  blocks_.Free(blocks);
}

uint64_t WorkerPool::NextSequenceId() {
  std::lock_guard<std::mutex> lock(mu_);
  return next_sequence_id_++;
}

bool WorkerPool::ready() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ready_;
}

absl::StatusOr<std::pair<uint64_t, ModelFacts>> WorkerPool::ReadyGroup() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (!ready_) return absl::UnavailableError(absl::StrCat("the workers are not ready: ", not_ready_reason_));
  return std::make_pair(group_, facts_);
}

std::vector<int> WorkerPool::NeverRegistered() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<int> missing;
  for (size_t r = 0; r < slots_.size(); ++r) {
    if (!slots_[r].ever_registered) missing.push_back(static_cast<int>(r));
  }
  return missing;
}

void WorkerPool::Shutdown(const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  shutting_down_ = true;
  BreakGroupLocked(absl::StrCat("the coordinator is shutting down (", reason, ")"));
  pb::CoordinatorMessage m;
  m.mutable_shutdown()->set_reason(reason);
  for (Slot& s : slots_) {
    if (s.link) s.link->Send(m);
  }
}

void WorkerPool::LogProgressLocked(int rank, bool force) {
  Slot& s = slots_[rank];
  const auto now = Clock::now();
  if (!force && now - s.last_progress_log < std::chrono::seconds(1)) return;
  s.last_progress_log = now;
  R1_LOG(INFO) << "loading: rank " << rank << ": "
               << ProgressText(s.bytes_done, s.bytes_total, Seconds(now - s.load_start));
}

std::string WorkerPool::ProgressLineLocked() const {
  int64_t done = 0, total = 0;
  double seconds = 0;
  bool loading = false;
  for (const Slot& s : slots_) {
    if (s.state != State::kLoading && s.state != State::kLoaded) continue;
    loading |= s.state == State::kLoading;
    done += s.bytes_done;
    total += s.bytes_total;
    seconds = std::max(seconds, s.state == State::kLoading ? Seconds(Clock::now() - s.load_start) : s.loaded.seconds());
  }
  if (total == 0) return "";
  return absl::StrCat(loading ? "loading: " : "loaded: ", ProgressText(done, total, seconds));
}

pb::StatusReply WorkerPool::Status() const {
  std::lock_guard<std::mutex> lock(mu_);
  pb::StatusReply reply;
  reply.set_ready(ready_);
  reply.set_reason(not_ready_reason_);
  reply.set_world_size(options_.world_size);
  reply.set_group(group_);
  reply.set_last_error(last_error_);
  reply.set_progress(ProgressLineLocked());
  const auto now = Clock::now();
  for (size_t r = 0; r < slots_.size(); ++r) {
    const Slot& s = slots_[r];
    pb::WorkerStatus* w = reply.add_workers();
    w->set_rank(static_cast<int>(r));
    w->set_state(StateName(s.state));
    if (s.state == State::kMissing) continue;
    w->set_hostname(s.info.hostname());
    w->set_pid(s.info.pid());
    w->set_model_path(s.info.model_path());
    w->set_bytes_done(s.bytes_done);
    w->set_bytes_total(s.bytes_total);
    const double secs = s.state == State::kLoading ? Seconds(now - s.load_start) : s.loaded.seconds();
    const double rate = secs > 0 ? s.bytes_done / secs : 0;
    w->set_gb_per_s(rate / 1e9);
    w->set_eta_s(rate > 0 ? std::max<int64_t>(s.bytes_total - s.bytes_done, 0) / rate : 0);
    w->set_sharded_bytes(s.loaded.sharded_bytes());
    w->set_replicated_bytes(s.loaded.replicated_bytes());
    w->set_seconds_since_heartbeat(Seconds(now - s.last_heartbeat));
    w->set_communicator(s.loaded.communicator());
  }
  return reply;
}

}  // namespace r1

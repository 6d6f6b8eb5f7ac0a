#include "worker/service/worker_runtime.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <unordered_map>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/safetensors.h"
#include "common/status.h"
#include "grpcpp/grpcpp.h"
#include "proto/worker.grpc.pb.h"
#include "worker/kv_cache.h"
#include "worker/model/deepseek_v3.h"
#include "worker/parallel/gloo_communicator.h"
#include "worker/parallel/mpi_communicator.h"
#include "coordinator/engine/sampling.h"
#include "worker/sampler.h"
#include "worker/service/grpc_store.h"

namespace r1 {
namespace {

namespace pb = worker::v1;
using Clock = std::chrono::steady_clock;

// The protocol this build speaks. Normally the proto's; tests/cluster compiles a second r1-worker
// with another number, to show what a coordinator does with a worker of another release.
#ifdef R1_WORKER_PROTOCOL_VERSION
constexpr uint32_t kProtocolVersion = R1_WORKER_PROTOCOL_VERSION;
#else
constexpr uint32_t kProtocolVersion = pb::PROTOCOL_VERSION;
#endif

double SecondsSince(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The communicator the model is built with. Its inner communicator is replaced when the group
// re-forms after a peer died, so the weights (640 GB for R1) stay loaded across re-formations.
// With no inner communicator every collective fails at once instead of waiting on a dead peer.
class SwappableCommunicator : public Communicator {
 public:
  explicit SwappableCommunicator(const ParallelLayout& layout) : layout_(layout) {}
  void Set(std::unique_ptr<Communicator> inner) { inner_ = std::move(inner); }
  bool has_group() const { return inner_ != nullptr; }

  int rank() const override { return layout_.rank; }
  int world_size() const override { return layout_.world_size; }
  std::string name() const override { return inner_ ? inner_->name() : "none (group dropped)"; }
  absl::Status AllReduceSum(float* data, size_t count) override {
    R1_RETURN_IF_ERROR(Check());
    return inner_->AllReduceSum(data, count);
  }
  absl::Status AllGather(const float* in, size_t count, float* out) override {
    R1_RETURN_IF_ERROR(Check());
    return inner_->AllGather(in, count, out);
  }
  absl::Status Broadcast(void* data, size_t bytes, int root) override {
    R1_RETURN_IF_ERROR(Check());
    return inner_->Broadcast(data, bytes, root);
  }
  absl::Status Barrier() override {
    R1_RETURN_IF_ERROR(Check());
    return inner_->Barrier();
  }

 private:
  absl::Status Check() const {
    return inner_ ? absl::OkStatus() : absl::UnavailableError("the worker group was dropped; awaiting a new Load");
  }
  ParallelLayout layout_;
  std::unique_ptr<Communicator> inner_;
};

// The log-probabilities of `token` and of the top `n` tokens, from raw logits [vocab].
void FillLogprobs(const std::vector<float>& logits, int32_t token, int n, pb::SequenceResult* out) {
  const float max = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float v : logits) sum += std::exp(static_cast<double>(v) - max);
  const double log_z = max + std::log(sum);
  out->set_logprob(static_cast<float>(logits[token] - log_z));
  std::vector<int32_t> order(logits.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int32_t>(i);
  const size_t k = std::min<size_t>(static_cast<size_t>(n), order.size());
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); });
  for (size_t i = 0; i < k; ++i) {
    auto* t = out->add_top_logprobs();
    t->set_token(order[i]);
    t->set_logprob(static_cast<float>(logits[order[i]] - log_z));
  }
}

class WorkerRuntimeImpl : public WorkerRuntime {
 public:
  explicit WorkerRuntimeImpl(const WorkerOptions& options) : options_(options) {}
  ~WorkerRuntimeImpl() override { StopThreads(); }

  absl::Status Run() override {
    absl::Status s = Serve();
    StopThreads();
    return s;
  }

  void Stop() override {
    std::lock_guard<std::mutex> lock(mu_);
    stop_requested_ = true;
    cv_.notify_all();
  }

 private:
  // One event for the main loop: a message from the coordinator, or the end of the stream.
  struct Event {
    std::optional<pb::CoordinatorMessage> message;
    grpc::Status closed;  // when !message
  };

  absl::Status Serve() {
    absl::Status connected = Connect(options_.connect_timeout);
    if (!connected.ok()) return StopRequested() ? absl::OkStatus() : connected;
    absl::StatusOr<pb::Accepted> accepted = Register(options_.rank, options_.world_size);
    if (!accepted.ok()) return StopRequested() ? absl::OkStatus() : accepted.status();
    rank_ = accepted->rank();
    world_size_ = accepted->world_size();
    R1_LOG(INFO) << "registered with " << options_.coordinator << " as rank " << rank_ << " of " << world_size_;
    while (true) {
      const absl::Status lost = ServeStream();
      if (lost.ok()) return lost;
      // The coordinator died or the network cut us off. The weights (the expensive part) stay;
      // the communicator goes, since the group it belonged to is gone with the coordinator's view
      // of it. The same rank registers again, with whichever coordinator answers at the address.
      const auto lost_at = Clock::now();
      R1_LOG(WARNING) << lost.message() << "; keeping the weights and registering again as rank " << rank_
                      << " (for up to " << options_.reconnect_timeout.count() / 1000.0 << " s)";
      EndStream();
      DropCommunicator();
      rngs_.clear();
      absl::Status back = Rejoin(lost_at + options_.reconnect_timeout);
      if (StopRequested()) {
        R1_LOG(INFO) << "stopping (signal)";
        return absl::OkStatus();
      }
      if (!back.ok()) {
        return absl::Status(back.code(), absl::StrCat(lost.message(), "; registering again: ", back.message()));
      }
      R1_LOG(INFO) << "registered again with " << options_.coordinator << " as rank " << rank_ << " of "
                   << world_size_ << ", " << SecondsSince(lost_at) << " s after losing it";
    }
  }

  // Connects and registers again as rank_ until `deadline`. A coordinator that is still starting
  // or a link that drops again is retried; a refusal (another process holds the rank, another
  // world size) is final.
  absl::Status Rejoin(Clock::time_point deadline) {
    while (true) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      absl::Status s = Connect(std::max(left, std::chrono::milliseconds(0)));
      if (s.ok()) s = Register(rank_, world_size_).status();
      if (s.ok() || StopRequested()) return s;
      if (!absl::IsUnavailable(s) && !absl::IsDeadlineExceeded(s)) return s;  // refused: final
      if (Clock::now() >= deadline) {
        return absl::UnavailableError(absl::StrCat("the coordinator at ", options_.coordinator,
                                                   " did not come back within ",
                                                   options_.reconnect_timeout.count() / 1000.0, " s: ", s.message()));
      }
      R1_LOG(WARNING) << "registering again: " << s.message() << "; retrying";
      EndStream();
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }

  // Serves one stream until Shutdown or Stop() (OK) or until the stream ends (UNAVAILABLE).
  absl::Status ServeStream() {
    heartbeat_thread_ = std::thread([this] { HeartbeatLoop(); });
    while (true) {
      std::optional<Event> ev = NextEvent();
      if (!ev) {
        R1_LOG(INFO) << "stopping (signal)";
        return absl::OkStatus();
      }
      if (!ev->message) {
        return absl::UnavailableError(absl::StrCat("lost the coordinator at ", options_.coordinator, ": ",
                                                   ev->closed.error_message().empty() ? "stream closed"
                                                                                      : ev->closed.error_message()));
      }
      const pb::CoordinatorMessage& m = *ev->message;
      switch (m.kind_case()) {
        case pb::CoordinatorMessage::kLoad:
          HandleLoad(m.load());
          break;
        case pb::CoordinatorMessage::kStep:
          HandleStep(m.step());
          break;
        case pb::CoordinatorMessage::kFreeSequences:
          for (uint64_t id : m.free_sequences().sequence_ids()) rngs_.erase(id);
          break;
        case pb::CoordinatorMessage::kDropGroup:
          DropGroup(m.drop_group().reason());
          break;
        case pb::CoordinatorMessage::kShutdown:
          R1_LOG(INFO) << "coordinator asked to shut down: " << m.shutdown().reason();
          return absl::OkStatus();
        default:
          R1_LOG(WARNING) << "ignoring an unexpected message from the coordinator (kind " << m.kind_case() << ")";
      }
    }
  }

  // Opens the stream to the coordinator, waiting up to `timeout` for it to be reachable (it may
  // start after this worker, or be restarting).
  absl::Status Connect(std::chrono::milliseconds timeout) {
    if (!channel_) {
      grpc::ChannelArguments args;
      args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, static_cast<int>(options_.keepalive_time.count()));
      args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, static_cast<int>(options_.keepalive_timeout.count()));
      args.SetInt(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, 256 << 20);
      // A worker may start before the coordinator, or outlive one: retry the connection often,
      // not with gRPC's default backoff (1 s growing to 120 s).
      args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
      args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
      args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
      channel_ = grpc::CreateCustomChannel(options_.coordinator, grpc::InsecureChannelCredentials(), args);
      stub_ = pb::WorkerControl::NewStub(channel_);
    }
    // In slices, so that Stop() is heard while the coordinator is away.
    const auto deadline = Clock::now() + timeout;
    bool connected = false;
    while (!connected && !StopRequested() && Clock::now() < deadline) {
      const auto until = std::min(deadline, Clock::now() + std::chrono::milliseconds(500));
      connected = channel_->WaitForConnected(std::chrono::system_clock::now() + (until - Clock::now()));
    }
    if (!connected) {
      if (StopRequested()) return absl::CancelledError("stopping (signal)");
      return absl::UnavailableError(absl::StrCat("cannot reach the coordinator at ", options_.coordinator, " within ",
                                                 timeout.count() / 1000.0,
                                                 " s: is r1-coordinator running there, and is the address right?"));
    }
    ctx_ = std::make_unique<grpc::ClientContext>();
    stream_closed_ = false;
    stream_ = stub_->Connect(ctx_.get());
    reader_thread_ = std::thread([this] { ReadLoop(); });
    return absl::OkStatus();
  }

  // Registers as `rank` of `world_size` (-1 and 0: the coordinator's choice).
  absl::StatusOr<pb::Accepted> Register(int rank, int world_size) {
    pb::WorkerMessage m;
    pb::Register* r = m.mutable_register_();
    r->set_protocol_version(kProtocolVersion);
    r->set_rank(rank);
    r->set_world_size(world_size);
    r->set_model_path(options_.model_dir);
    r->set_launcher(options_.mpi ? "mpi" : "registration");
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    r->set_hostname(host);
    r->set_pid(getpid());
    // A model this rank cannot use is reported to the coordinator too, so the operator sees it
    // there and not only in this rank's log. The fingerprint is taken once: it describes the
    // checkpoint this process loads, also when it registers again.
    if (!fingerprint_) fingerprint_ = CheckpointFingerprint(options_.model_dir);
    absl::Status model_ok = fingerprint_->status();
    if (fingerprint_->ok()) {
      r->set_config_fingerprint(**fingerprint_);
      auto config = LoadModelConfig(options_.model_dir);
      model_ok = config.status();
      if (config.ok() && world_size > 0) model_ok = DeepseekV3Model::CheckLayout(*config, world_size);
    }
    if (!model_ok.ok()) r->set_model_error(absl::StrCat("--model ", options_.model_dir, ": ", model_ok.message()));
    if (!Send(m)) return absl::UnavailableError(absl::StrCat("the coordinator at ", options_.coordinator,
                                                             " closed the stream before registration"));
    std::optional<Event> ev = NextEvent(Clock::now() + options_.register_timeout);
    if (!ev) {
      if (StopRequested()) return absl::CancelledError("stopping (signal)");
      ctx_->TryCancel();
      return absl::DeadlineExceededError(absl::StrCat(options_.coordinator, " did not answer the registration within ",
                                                      options_.register_timeout.count() / 1000.0,
                                                      " s: is it an r1-coordinator?"));
    }
    if (!ev->message) {
      return absl::UnavailableError(absl::StrCat("the coordinator at ", options_.coordinator,
                                                 " closed the stream during registration: ",
                                                 ev->closed.error_message()));
    }
    if (ev->message->has_refused()) {
      return absl::FailedPreconditionError(absl::StrCat("the coordinator at ", options_.coordinator,
                                                        " refused this worker: ", ev->message->refused().reason()));
    }
    if (!ev->message->has_accepted()) {
      return absl::InternalError("the coordinator's first message was neither Accepted nor Refused");
    }
    if (!model_ok.ok()) return absl::FailedPreconditionError(r->model_error());
    return ev->message->accepted();
  }

  void HandleLoad(const pb::Load& load) {
    const auto t0 = Clock::now();
    tables_.clear();  // a new group: its coordinator starts from whole tables
    absl::Status s = LoadGroup(load);
    pb::WorkerMessage m;
    if (!s.ok()) {
      R1_LOG(ERROR) << "load failed: " << s.message();
      DropCommunicator();
      m.mutable_load_failed()->set_error(absl::StrCat("rank ", load.rank(), ": ", s.message()));
    } else {
      pb::Loaded* l = m.mutable_loaded();
      l->set_sharded_bytes(static_cast<int64_t>(model_->sharded_bytes()));
      l->set_replicated_bytes(static_cast<int64_t>(model_->replicated_bytes()));
      l->set_kv_cache_bytes(static_cast<int64_t>(cache_->bytes()));
      l->set_seconds(SecondsSince(t0));
      l->set_communicator(comm_ && comm_->has_group() ? comm_->name() : "none");
      l->set_reused_weights(reused_weights_);
      const ModelConfig& c = model_->config();
      l->set_vocab_size(c.vocab_size);
      l->set_eos_token_id(c.eos_token_id);
      l->set_max_position_embeddings(c.max_position_embeddings);
      R1_LOG(INFO) << "group " << load.group() << ": rank " << load.rank() << " of " << load.world_size()
                   << " ready in " << l->seconds() << " s (" << l->communicator() << ", weights "
                   << (reused_weights_ ? "kept" : "loaded") << ": " << l->sharded_bytes() / 1e6 << " MB split + "
                   << l->replicated_bytes() / 1e6 << " MB replicated)";
    }
    Send(m);
  }

  absl::Status LoadGroup(const pb::Load& load) {
    const ParallelLayout layout{load.rank(), load.world_size()};
    if (layout.rank != rank_ || layout.world_size != world_size_) {
      return absl::InvalidArgumentError(absl::StrCat("Load for rank ", layout.rank, " of ", layout.world_size,
                                                     " but this worker registered as rank ", rank_, " of ",
                                                     world_size_));
    }
    const bool keep_weights =
        model_ && model_path_ == load.model_path() && model_->layout().world_size == layout.world_size;
    if (!keep_weights) {
      model_.reset();
      comm_.reset();
      cache_.reset();
      comm_ = std::make_unique<SwappableCommunicator>(layout);
    }
    R1_RETURN_IF_ERROR(Annotate(FormGroup(load, layout), "forming the group"));
    reused_weights_ = keep_weights;
    if (!keep_weights) {
      pb::WorkerMessage start;
      auto total = CheckpointBytes(load.model_path());
      if (total.ok()) {
        start.mutable_load_progress()->set_bytes_total(static_cast<int64_t>(*total));
        start.mutable_load_progress()->set_stage("start");
        Send(start);
      }
      auto report = [this](size_t done, size_t total, const std::string& stage) {
        pb::WorkerMessage m;
        m.mutable_load_progress()->set_bytes_done(static_cast<int64_t>(done));
        m.mutable_load_progress()->set_bytes_total(static_cast<int64_t>(total));
        m.mutable_load_progress()->set_stage(stage);
        Send(m);
      };
      R1_ASSIGN_OR_RETURN(model_, DeepseekV3Model::Load(load.model_path(), layout, comm_.get(), report));
      model_path_ = load.model_path();
    }
    const ModelConfig& c = model_->config();
    if (!cache_ || cache_->num_blocks() != load.kv_cache().num_blocks() ||
        cache_->block_size() != load.kv_cache().block_size()) {
      cache_.reset();
      R1_ASSIGN_OR_RETURN(PagedKvCache cache, PagedKvCache::Create(load.kv_cache().num_blocks(),
                                                                   load.kv_cache().block_size(),
                                                                   c.num_hidden_layers, c.kv_latent_dim()));
      cache_ = std::make_unique<PagedKvCache>(std::move(cache));
    }
    rngs_.clear();
    return absl::OkStatus();
  }

  // Connects this rank to its peers for group `load.group()` and checks the group with one
  // broadcast from rank 0 (the step where a GPU build sends the NCCL unique id).
  absl::Status FormGroup(const pb::Load& load, const ParallelLayout& layout) {
    const std::string& backend = load.rendezvous().backend();
    if (layout.world_size == 1) {
      comm_->Set(nullptr);
      return absl::OkStatus();
    }
    std::unique_ptr<Communicator> comm;
    if (backend == "mpi") {
      if (!options_.mpi) return absl::FailedPreconditionError("rendezvous over MPI, but this worker was not started by mpirun");
      R1_ASSIGN_OR_RETURN(comm, CreateMpiCommunicator());
    } else if (backend == "gloo") {
      GlooOptions gloo;
      gloo.hostname = options_.advertise_address;
      gloo.timeout = std::chrono::milliseconds(load.rendezvous().timeout_ms());
      auto store = std::make_shared<GrpcStore>(channel_, load.rendezvous().prefix(), gloo.timeout);
      R1_ASSIGN_OR_RETURN(comm, CreateGlooCommunicator(layout, store, gloo));
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown rendezvous backend '", backend, "'"));
    }
    uint64_t group = layout.rank == 0 ? load.group() : 0;
    R1_RETURN_IF_ERROR(comm->Broadcast(&group, sizeof group, 0));
    if (group != load.group()) {
      return absl::FailedPreconditionError(absl::StrCat("rank 0 is in group ", group, ", this rank in group ",
                                                        load.group(), ": the ranks disagree"));
    }
    comm_->Set(std::move(comm));
    return absl::OkStatus();
  }

  static absl::StatusOr<size_t> CheckpointBytes(const std::string& dir) {
    R1_ASSIGN_OR_RETURN(auto ckpt, Checkpoint::Open(dir));
    return ckpt->total_bytes();
  }

  void HandleStep(const pb::Step& step) {
    SetInStep(true);
    const auto t0 = Clock::now();
    pb::WorkerMessage m;
    pb::StepResult* result = m.mutable_step_result();
    result->set_step_id(step.step_id());
    absl::Status s = RunStep(step, result);
    if (!s.ok()) {
      R1_LOG(ERROR) << "step " << step.step_id() << " failed: " << s.message();
      result->clear_sequences();
      result->set_error(std::string(s.message()));
    }
    result->set_seconds(SecondsSince(t0));
    Send(m);
    SetInStep(false, Clock::now() - t0);
  }

  void SetInStep(bool in_step, Clock::duration took = {}) {
    std::lock_guard<std::mutex> lock(mu_);
    in_step_ = in_step;
    longest_step_ = std::max(longest_step_, took);
    cv_.notify_all();
  }

  // How long a step may still run after the coordinator was lost before it counts as stuck.
  Clock::duration StuckStepTimeout() const {
    return std::max<Clock::duration>(options_.stuck_step_timeout, 10 * longest_step_);
  }

  absl::Status RunStep(const pb::Step& step, pb::StepResult* result) {
    if (!model_ || !cache_) return absl::FailedPreconditionError("no model loaded");
    std::vector<SequenceStep> batch;
    batch.reserve(step.sequences_size());
    // Tables sent as changes (worker.proto, table_key) are completed from the last keyed step's.
    std::unordered_map<uint64_t, std::vector<int32_t>> tables;
    bool keyed = false;
    for (const auto& s : step.sequences()) {
      std::vector<int32_t> table;
      if (s.table_key() != 0) {
        keyed = true;
        const int32_t from = s.table_from();
        if (from < 0) return absl::InvalidArgumentError(absl::StrCat("table_from ", from, " is negative"));
        if (from > 0) {
          auto held = tables_.find(s.table_key());
          if (held == tables_.end() || held->second.size() < static_cast<size_t>(from)) {
            return absl::FailedPreconditionError(absl::StrCat(
                "sequence ", s.sequence_id(), ": the step extends entry ", from, " of block table ", s.table_key(),
                ", which this rank holds ", held == tables_.end() ? "not at all" : "shorter"));
          }
          table.assign(held->second.begin(), held->second.begin() + from);
        }
        table.insert(table.end(), s.block_table().begin(), s.block_table().end());
        if (!tables.emplace(s.table_key(), table).second) {
          return absl::InvalidArgumentError(absl::StrCat("block table ", s.table_key(), " named twice in one step"));
        }
      } else {
        table.assign(s.block_table().begin(), s.block_table().end());
      }
      batch.push_back({{s.tokens().begin(), s.tokens().end()}, s.start_position(), std::move(table), false});
    }
    if (keyed) tables_ = std::move(tables);
    R1_ASSIGN_OR_RETURN(auto logits, model_->Forward(batch, *cache_));
    if (rank_ != 0) return absl::OkStatus();  // rank 0 samples; the others only acknowledge
    const int64_t vocab = model_->config().vocab_size;
    // The serving engine's choices (EngineChoice), the rows in parallel, as the coordinator would
    // make them from these logits.
    std::vector<EngineSampling> choice_params(step.sequences_size());
    std::vector<SamplerState> choice_states(step.sequences_size());
    std::vector<SamplingJob> jobs;
    std::vector<int> job_rows;
    for (int i = 0; i < step.sequences_size(); ++i) {
      const pb::SequenceStep& s = step.sequences(i);
      if (!s.has_choose()) continue;
      const pb::EngineChoice& c = s.choose();
      EngineSampling& es = choice_params[i];
      es.temperature = c.temperature(), es.top_p = c.top_p(), es.top_k = c.top_k(), es.min_p = c.min_p();
      es.logprobs = c.logprobs(), es.top_logprobs = c.top_logprobs();
      R1_RETURN_IF_ERROR(ValidateEngineSampling(es));
      // A sequence draws at most one number per token it generates: a larger count is a broken
      // coordinator, not a position to spend minutes seeking to.
      if (c.draws() > static_cast<uint64_t>(std::max<int64_t>(model_->config().max_position_embeddings, 1))) {
        return absl::InvalidArgumentError(absl::StrCat("sequence ", s.sequence_id(), ": the sampler has drawn ",
                                                       c.draws(), " numbers, more than the model's ",
                                                       model_->config().max_position_embeddings, " positions"));
      }
      choice_states[i] = SamplerState::FromStream(c.rng_key(), c.draws());
      SamplingJob job;
      job.logits = logits[i].data();
      job.sampling = &es;
      job.state = &choice_states[i];
      jobs.push_back(std::move(job));
      job_rows.push_back(i);
    }
    ChooseTokens(absl::MakeSpan(jobs), vocab, /*threads=*/0);
    std::vector<const SamplingJob*> chosen(step.sequences_size(), nullptr);
    for (size_t j = 0; j < jobs.size(); ++j) chosen[job_rows[j]] = &jobs[j];
    for (int i = 0; i < step.sequences_size(); ++i) {
      const pb::SequenceStep& s = step.sequences(i);
      pb::SequenceResult* out = result->add_sequences();
      out->set_sequence_id(s.sequence_id());
      const std::vector<float>& row = logits[i];  // the last new token's logits [vocab]
      if (s.return_logits()) out->mutable_logits()->Assign(row.begin(), row.end());
      if (const SamplingJob* j = chosen[i]) {
        out->set_token(j->token);
        if (j->sampling->logprobs) {
          out->set_logprob(j->logprob);
          for (const TokenLogprob& t : j->top_logprobs) {
            pb::TokenLogprob* o = out->add_top_logprobs();
            o->set_token(t.token);
            o->set_logprob(t.logprob);
          }
        }
        continue;
      }
      if (!s.sample()) continue;
      const SamplingParams params{s.sampling().temperature(), s.sampling().top_p(), s.sampling().top_k(),
                                  s.sampling().seed()};
      R1_RETURN_IF_ERROR(ValidateSampling(params));
      // One generator per sequence for its whole life, as single-process Generate keeps one.
      auto it = rngs_.find(s.sequence_id());
      if (it == rngs_.end()) it = rngs_.emplace(s.sequence_id(), std::mt19937_64(params.seed)).first;
      const int32_t token = SampleToken(row.data(), vocab, params, it->second);
      out->set_token(token);
      if (s.logprobs() > 0) FillLogprobs(row, token, s.logprobs(), out);
    }
    return absl::OkStatus();
  }

  void DropCommunicator() {
    if (comm_) comm_->Set(nullptr);
  }

  void DropGroup(const std::string& reason) {
    R1_LOG(WARNING) << "dropping the worker group: " << reason;
    DropCommunicator();
    rngs_.clear();
    tables_.clear();
    pb::WorkerMessage m;
    m.mutable_group_dropped();
    Send(m);
  }

  // --- the stream ------------------------------------------------------------------------------

  bool Send(const pb::WorkerMessage& m) {
    std::lock_guard<std::mutex> lock(write_mu_);
    if (stream_closed_) return false;
    return stream_->Write(m);
  }

  void ReadLoop() {
    pb::CoordinatorMessage m;
    while (stream_->Read(&m)) {
      std::lock_guard<std::mutex> lock(mu_);
      events_.push_back({m, {}});
      cv_.notify_all();
    }
    grpc::Status status;
    {
      std::lock_guard<std::mutex> lock(write_mu_);
      stream_closed_ = true;
      status = stream_->Finish();
    }
    std::unique_lock<std::mutex> lock(mu_);
    events_.push_back({std::nullopt, status});
    cv_.notify_all();
    if (options_.mpi && in_step_ && !stop_heartbeat_) {
      // The coordinator went away during a step. If some rank never received that step, this
      // rank waits in an MPI collective for it forever; only ending the job frees the others.
      const Clock::duration timeout = StuckStepTimeout();
      if (!cv_.wait_for(lock, timeout, [&] { return !in_step_ || stop_heartbeat_; })) {
        R1_LOG(ERROR) << "lost the coordinator at " << options_.coordinator << " during a step that is still running "
                      << std::chrono::duration<double>(timeout).count()
                      << " s later (stuck in an MPI collective: a rank never received the step): exiting so that "
                         "mpirun ends the job";
        std::fflush(stderr);
        std::_Exit(1);
      }
    }
  }

  void HeartbeatLoop() {
    int64_t seq = 0;
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_heartbeat_) {
      cv_.wait_for(lock, options_.heartbeat_interval, [&] { return stop_heartbeat_; });
      if (stop_heartbeat_) break;
      lock.unlock();
      pb::WorkerMessage m;
      m.mutable_heartbeat()->set_sequence(++seq);
      const bool ok = Send(m);
      lock.lock();
      if (!ok) break;
    }
  }

  bool StopRequested() {
    std::lock_guard<std::mutex> lock(mu_);
    return stop_requested_;
  }

  // The next event, or nullopt on Stop() or at `deadline`.
  std::optional<Event> NextEvent(Clock::time_point deadline = Clock::time_point::max()) {
    std::unique_lock<std::mutex> lock(mu_);
    auto ready = [&] { return stop_requested_ || !events_.empty(); };
    if (deadline == Clock::time_point::max()) {
      cv_.wait(lock, ready);
    } else if (!cv_.wait_until(lock, deadline, ready)) {
      return std::nullopt;
    }
    if (events_.empty()) return std::nullopt;
    Event ev = std::move(events_.front());
    events_.pop_front();
    return ev;
  }

  // Ends the current stream: stops its heartbeat and reader threads. The channel stays.
  void EndStream() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_heartbeat_ = true;
      cv_.notify_all();
    }
    if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
    if (reader_thread_.joinable()) {
      {
        // Closing our half lets a well-behaved coordinator end the stream; cancelling makes sure.
        std::lock_guard<std::mutex> lock(write_mu_);
        if (!stream_closed_) stream_->WritesDone();
      }
      ctx_->TryCancel();
      reader_thread_.join();
    }
    stream_.reset();
    ctx_.reset();
    std::lock_guard<std::mutex> lock(mu_);
    events_.clear();  // the end of the old stream, already acted on
    stop_heartbeat_ = false;
  }

  void StopThreads() {
    EndStream();
    // Collectives may reference the model's communicator: drop the model first.
    model_.reset();
    comm_.reset();
  }

  WorkerOptions options_;
  int rank_ = -1, world_size_ = 0;

  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::WorkerControl::Stub> stub_;
  std::unique_ptr<grpc::ClientContext> ctx_;  // one per stream: a context serves a single call
  std::unique_ptr<grpc::ClientReaderWriter<pb::WorkerMessage, pb::CoordinatorMessage>> stream_;
  std::thread reader_thread_, heartbeat_thread_;
  std::optional<absl::StatusOr<std::string>> fingerprint_;  // of options_.model_dir, taken at the first Register

  std::mutex write_mu_;  // one Write at a time; guards stream_closed_
  bool stream_closed_ = false;

  std::mutex mu_;  // guards events_ and the flags below
  std::condition_variable cv_;
  std::deque<Event> events_;
  bool stop_requested_ = false, stop_heartbeat_ = false;
  bool in_step_ = false;  // the main thread is running a step
  Clock::duration longest_step_{};  // of the steps run so far (guarded by mu_)

  // Main-thread state.
  std::unique_ptr<SwappableCommunicator> comm_;
  std::unique_ptr<DeepseekV3Model> model_;
  std::string model_path_;
  bool reused_weights_ = false;
  std::unique_ptr<PagedKvCache> cache_;
  std::map<uint64_t, std::mt19937_64> rngs_;  // rank 0: per-sequence sampler state
  // The block tables named by the last keyed step (worker.proto, table_key), for the next one.
  std::unordered_map<uint64_t, std::vector<int32_t>> tables_;
};

}  // namespace

namespace {

// FNV-1a 64 over the bytes it is fed, in order.
class Fnv1a64 {
 public:
  void Add(const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) {
      h_ ^= p[i];
      h_ *= 1099511628211ull;
    }
  }
  void Add(const std::string& s) { Add(s.data(), s.size()); }
  uint64_t value() const { return h_; }

 private:
  uint64_t h_ = 1469598103934665603ull;
};

// `n` bytes at `offset` of `in` (fewer at the end of the file).
std::string ReadAt(std::ifstream& in, uint64_t offset, uint64_t n) {
  std::string bytes(n, '\0');
  in.clear();
  in.seekg(static_cast<std::streamoff>(offset));
  in.read(bytes.data(), static_cast<std::streamsize>(n));
  bytes.resize(static_cast<size_t>(std::max<std::streamsize>(in.gcount(), 0)));
  return bytes;
}

}  // namespace

absl::StatusOr<std::string> CheckpointFingerprint(const std::string& model_dir) {
  const std::string config = model_dir + "/config.json";
  std::ifstream in(config, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(config, ": cannot open (no such checkpoint folder?)"));
  std::ostringstream bytes;
  bytes << in.rdbuf();
  Fnv1a64 h;
  h.Add(bytes.str());
  std::vector<std::filesystem::path> shards;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(model_dir, ec)) {
    if (entry.path().extension() == ".safetensors" && entry.is_regular_file(ec)) shards.push_back(entry.path());
  }
  if (ec) return absl::InternalError(absl::StrCat(model_dir, ": cannot list the folder: ", ec.message()));
  std::sort(shards.begin(), shards.end());
  constexpr uint64_t kSample = 64 << 10;
  constexpr uint64_t kMaxHeader = 100 << 20;  // safetensors' own limit on the JSON header
  for (const auto& path : shards) {
    std::ifstream shard(path, std::ios::binary);
    const uint64_t size = std::filesystem::file_size(path, ec);
    if (!shard || ec) return absl::InternalError(absl::StrCat(path.string(), ": cannot read"));
    // Layout: u64 little-endian header length, the JSON header, then the tensor data.
    std::string length_bytes = ReadAt(shard, 0, 8);
    uint64_t header = 0;
    for (size_t i = 0; i < length_bytes.size(); ++i) {
      header |= uint64_t{static_cast<unsigned char>(length_bytes[i])} << (8 * i);
    }
    header = std::min({header, kMaxHeader, size});
    const uint64_t data = std::min(size, 8 + header);
    h.Add(path.filename().string());
    h.Add(&size, sizeof size);
    h.Add(ReadAt(shard, 0, data));
    h.Add(ReadAt(shard, data, kSample));
    h.Add(ReadAt(shard, size - std::min(size - data, kSample), kSample));
  }
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h.value()));
  return absl::StrCat("fnv1a64:", hex);
}

absl::StatusOr<std::unique_ptr<WorkerRuntime>> WorkerRuntime::Create(const WorkerOptions& options) {
  if (options.coordinator.empty()) return absl::InvalidArgumentError("--coordinator HOST:PORT is required");
  if (options.model_dir.empty()) return absl::InvalidArgumentError("--model DIR is required");
  if (options.world_size < 0) return absl::InvalidArgumentError("world size must be positive");
  if (options.world_size > 0 && options.rank >= options.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", options.rank, " outside [0, ", options.world_size, ")"));
  }
  return std::unique_ptr<WorkerRuntime>(new WorkerRuntimeImpl(options));
}

}  // namespace r1

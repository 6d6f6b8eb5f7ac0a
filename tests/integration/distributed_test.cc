// r1-coordinator driving W r1-worker processes on the golden models, through both launch paths
// (mpirun; registration with the Gloo rendezvous served by the coordinator), on loopback:
// - logits and greedy tokens equal to the single-process run, and each rank's resident weights
//   exactly its 1/W share of the split tensors plus the replicated ones;
// - faults: a worker killed mid-generation (the request fails within 10 s, not ready, the group
//   re-forms when the rank comes back), a rank that never arrives, a port with no coordinator, a
//   full group, a wrong model path, mismatched checkpoints, an impossible layout, another
//   protocol version: each a clear error, nothing hangs.
#include <memory>
#include <string>
#include <vector>

#include "harness.h"
#include "tests/unit/test_util.h"
#include "worker/model/deepseek_v3.h"

namespace r1::testing {
namespace {

constexpr double kStartTimeout = 60;  // s: processes up and the group ready (2 cores, ctest -j2)

// The single-process reference: greedy generation with the logits of every sampled token.
struct Reference {
  std::vector<int32_t> prompt, tokens;
  std::vector<std::vector<float>> logits;
  size_t sharded = 0, replicated = 0;
  int64_t vocab = 0;
};

const Reference& GetReference() {
  static const Reference ref = [] {
    Reference r;
    auto golden = SafetensorsFile::Open(GoldenData("golden-a"));
    EXPECT_TRUE(golden.ok()) << golden.status();
    r.prompt = ReadI32(**golden, "prompt.2.tokens");  // 37 tokens
    auto model = DeepseekV3Model::Load(Model("golden-a-fp8"));
    EXPECT_TRUE(model.ok()) << model.status();
    const ModelConfig& c = (*model)->config();
    r.vocab = c.vocab_size;
    r.sharded = (*model)->sharded_bytes();
    r.replicated = (*model)->replicated_bytes();
    auto cache = PagedKvCache::Create(8, 16, c.num_hidden_layers, c.kv_latent_dim());
    SequenceStep step{r.prompt, 0, {0, 1, 2, 3, 4, 5, 6, 7}, false};
    for (int i = 0; i < 12; ++i) {
      auto logits = (*model)->Forward({step}, *cache);
      EXPECT_TRUE(logits.ok()) << logits.status();
      std::vector<float>& row = (*logits)[0];
      const int32_t next = static_cast<int32_t>(std::max_element(row.begin(), row.end()) - row.begin());
      r.tokens.push_back(next);
      r.logits.push_back(std::move(row));
      step.start_position += static_cast<int64_t>(step.tokens.size());
      step.tokens = {next};
    }
    return r;
  }();
  return ref;
}

pb::GenerateRequest GreedyRequest(const Reference& ref, bool logits = true) {
  pb::GenerateRequest req;
  req.mutable_prompt()->Assign(ref.prompt.begin(), ref.prompt.end());
  req.set_max_new_tokens(static_cast<int64_t>(ref.tokens.size()));
  req.set_return_logits(logits);
  return req;
}

// Generates on the group and checks tokens, logits and per-rank weight bytes against the reference.
void ExpectMatchesSingleProcess(CoordinatorClient& client, int world) {
  const Reference& ref = GetReference();
  pb::GenerateReply reply;
  const grpc::Status s = client.Generate(GreedyRequest(ref), &reply);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(reply.tokens_size(), static_cast<int>(ref.tokens.size()));
  EXPECT_EQ(std::vector<int32_t>(reply.tokens().begin(), reply.tokens().end()), ref.tokens) << "W=" << world;
  ASSERT_EQ(reply.logits_size(), static_cast<int>(ref.tokens.size() * ref.vocab));
  double worst = 0;
  for (size_t i = 0; i < ref.tokens.size(); ++i) {
    worst = std::max(worst, RelL2(reply.logits().data() + i * ref.vocab, ref.logits[i].data(), ref.vocab));
  }
  EXPECT_LE(worst, 1e-5) << "W=" << world;
  auto status = client.Status();
  ASSERT_TRUE(status);
  ASSERT_EQ(status->workers_size(), world);
  for (const auto& w : status->workers()) {
    EXPECT_EQ(static_cast<size_t>(w.sharded_bytes()) * world, ref.sharded) << "rank " << w.rank();
    EXPECT_EQ(static_cast<size_t>(w.replicated_bytes()), ref.replicated) << "rank " << w.rank();
  }
  std::printf("[ distributed ] W=%d (%s): %d tokens equal, worst logits rel L2 %.2e; rank weights %.3f MB split + "
              "%.3f MB replicated (alone: %.3f MB split)\n",
              world, status->workers(0).communicator().c_str(), reply.tokens_size(), worst,
              status->workers(0).sharded_bytes() / 1e6, status->workers(0).replicated_bytes() / 1e6, ref.sharded / 1e6);
}

// A coordinator on a fresh port, stopped (SIGTERM, then its workers get Shutdown) at the end.
class Deployment {
 public:
  Deployment(const std::string& name, int world, std::vector<std::string> extra = {})
      : name_(name), dir_(TempDir("integration_" + name)), port_(FreePort()),
        address_("127.0.0.1:" + std::to_string(port_)) {
    std::vector<std::string> argv = {Bin("coordinator/pool/r1-coordinator"), "--workers", std::to_string(world),
                                     "--listen", address_, "--gloo-timeout", "5", "--heartbeat-timeout", "3"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    coordinator_ = std::make_unique<Process>(argv, dir_ + "/coordinator.log");
    // A gRPC channel made before the server listens backs off for seconds: wait for the port.
    EXPECT_TRUE(WaitFor([&] { return Listening(port_) || !coordinator_->running(); }, 10));
    client_ = std::make_unique<CoordinatorClient>(address_);
  }
  ~Deployment() {
    client_.reset();  // an open client connection would hold the coordinator's shutdown to its deadline
    if (coordinator_->running()) {
      coordinator_->Signal(SIGTERM);
      EXPECT_TRUE(coordinator_->WaitExit(10).has_value()) << "the coordinator ignored SIGTERM";
    }
    for (auto& w : workers_) {
      if (w->running()) {
        EXPECT_TRUE(w->WaitExit(10).has_value()) << "a worker outlived its coordinator";
      }
    }
    if (::testing::Test::HasFailure()) {
      std::printf("---- coordinator log (%s) ----\n%s\n", name_.c_str(), coordinator_->log().c_str());
      for (size_t i = 0; i < workers_.size(); ++i) {
        std::printf("---- worker process %zu log ----\n%s\n", i, workers_[i]->log().c_str());
      }
    }
  }

  // r1-worker on its own (registration path).
  Process& StartWorker(const std::string& model, std::vector<std::string> flags,
                       const std::map<std::string, std::string>& env = {}) {
    std::vector<std::string> argv = {Bin("worker/r1-worker"), "--model", Model(model), "--coordinator", address_,
                                     "--connect-timeout", "10"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    return Add(argv, env);
  }
  Process& StartMpirun(const std::string& model, int world) {
    return Add({MPIEXEC, "--oversubscribe", "--allow-run-as-root", "-x", "OMP_NUM_THREADS=1", "-np",
                std::to_string(world), Bin("worker/r1-worker"), "--model", Model(model), "--coordinator", address_},
               {});
  }

  Process& coordinator() { return *coordinator_; }
  CoordinatorClient& client() { return *client_; }
  const std::string& address() const { return address_; }

 private:
  Process& Add(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env) {
    const std::string log = dir_ + "/worker" + std::to_string(workers_.size()) + ".log";
    workers_.push_back(std::make_unique<Process>(argv, log, env));
    return *workers_.back();
  }

  std::string name_, dir_;
  int port_;
  std::string address_;
  std::unique_ptr<Process> coordinator_;
  std::unique_ptr<CoordinatorClient> client_;
  std::vector<std::unique_ptr<Process>> workers_;
};

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

class Golden : public ::testing::TestWithParam<int> {};

TEST_P(Golden, MpirunMatchesSingleProcess) {
  const int world = GetParam();
  Deployment d("mpirun_w" + std::to_string(world), world);
  d.StartMpirun("golden-a-fp8", world);
  ASSERT_TRUE(d.client().WaitReady(kStartTimeout)) << "the mpirun group never became ready";
  ExpectMatchesSingleProcess(d.client(), world);
}

TEST_P(Golden, RegistrationMatchesSingleProcess) {
  const int world = GetParam();
  Deployment d("registration_w" + std::to_string(world), world);
  // Every way a rank can be named: a flag, LWS_WORKER_INDEX, a StatefulSet HOSTNAME, the coordinator.
  for (int r = 0; r < world; ++r) {
    if (r == 0) d.StartWorker("golden-a-fp8", {"--rank", "0", "--world-size", std::to_string(world)});
    if (r == 1) d.StartWorker("golden-a-fp8", {"--rank-from-env"}, {{"LWS_WORKER_INDEX", "1"}});
    if (r == 2) d.StartWorker("golden-a-fp8", {"--rank-from-env"}, {{"HOSTNAME", "r1-worker-2"}});
  }
  if (world == 4) {
    // The coordinator assigns the last free rank (3) once the others hold theirs.
    ASSERT_TRUE(WaitFor([&] {
      auto s = d.client().Status();
      return s && s->workers(2).state() != "missing" && s->workers(1).state() != "missing" &&
             s->workers(0).state() != "missing";
    }, kStartTimeout));
    d.StartWorker("golden-a-fp8", {});
  }
  ASSERT_TRUE(d.client().WaitReady(kStartTimeout)) << "the registered group never became ready";
  ExpectMatchesSingleProcess(d.client(), world);
}

INSTANTIATE_TEST_SUITE_P(W, Golden, ::testing::Values(1, 2, 4), [](const auto& info) {
  return "W" + std::to_string(info.param);
});

// A generation long enough to hurt a rank in the middle of: 300-token prompt, 2000 new tokens.
class LongGeneration {
 public:
  explicit LongGeneration(CoordinatorClient& client) {
    auto golden = SafetensorsFile::Open(GoldenData("golden-a"));
    EXPECT_TRUE(golden.ok());
    const std::vector<int32_t> prompt = ReadI32(**golden, "prompt.3.tokens");
    req_.mutable_prompt()->Assign(prompt.begin(), prompt.end());
    req_.set_max_new_tokens(2000);
    thread_ = std::thread([this, &client] {
      pb::GenerateReply reply;
      result_ = client.Generate(req_, &reply, 60);
      finished_at_ = Clock::now();
      finished_ = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(700));
  }
  ~LongGeneration() { thread_.join(); }
  bool finished() const { return finished_; }
  // Waits up to `timeout_s` for the request to end; its status, or nullopt if it hung.
  std::optional<grpc::Status> Wait(double timeout_s) {
    if (!WaitFor([&] { return finished_.load(); }, timeout_s)) return std::nullopt;
    return result_;
  }
  Clock::time_point finished_at() const { return finished_at_; }

 private:
  pb::GenerateRequest req_;
  grpc::Status result_;
  std::atomic<bool> finished_{false};
  Clock::time_point finished_at_;
  std::thread thread_;
};

TEST(Faults, KillWorkerMidGenerationFailsFastAndGroupReforms) {
  Deployment d("kill", 2);
  d.StartWorker("golden-a-fp8", {"--rank", "0"});
  Process* victim = &d.StartWorker("golden-a-fp8", {"--rank", "1"});
  ASSERT_TRUE(d.client().WaitReady(kStartTimeout));

  std::optional<grpc::Status> result;
  Clock::time_point killed_at;
  {
    LongGeneration generation(d.client());
    ASSERT_FALSE(generation.finished()) << "the generation ended before the kill";
    killed_at = Clock::now();
    victim->Signal(SIGKILL);
    result = generation.Wait(10);
    ASSERT_TRUE(result.has_value()) << "the request hung after a worker died";
    const double fail_s = std::chrono::duration<double>(generation.finished_at() - killed_at).count();
    std::printf("[ fault ] kill -9 rank 1 mid-generation: request failed after %.3f s: \"%s\"\n", fail_s,
                result->error_message().c_str());
  }
  EXPECT_EQ(result->error_code(), grpc::StatusCode::UNAVAILABLE) << result->error_message();
  EXPECT_TRUE(Contains(result->error_message(), "worker rank 1 lost (stream closed) during step"))
      << result->error_message();
  std::optional<pb::StatusReply> status;
  ASSERT_TRUE(WaitFor([&] { return (status = d.client().Status()) && !status->ready(); }, 10));
  const double not_ready_s = SecondsSince(killed_at);
  EXPECT_TRUE(Contains(status->reason(), "rank 1")) << status->reason();
  // Requests meanwhile fail at once, saying why.
  pb::GenerateReply reply;
  const grpc::Status refused = d.client().Generate(GreedyRequest(GetReference()), &reply);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(Contains(refused.error_message(), "not ready")) << refused.error_message();

  // The same rank comes back: the group re-forms (rank 0 keeps its weights) and generates again.
  const auto restarted_at = Clock::now();
  d.StartWorker("golden-a-fp8", {"--rank", "1"});
  ASSERT_TRUE(d.client().WaitReady(kStartTimeout)) << "the group did not re-form";
  const double recover_s = SecondsSince(restarted_at);
  ExpectMatchesSingleProcess(d.client(), 2);
  std::printf("[ fault ] not ready seen %.3f s after the kill; rank 1 restarted: ready again after %.3f s\n",
              not_ready_s, recover_s);
}

TEST(Faults, StoppedWorkerMidGenerationIsDeclaredDeadByHeartbeat) {
  Deployment d("sigstop", 2);
  d.StartWorker("golden-a-fp8", {"--rank", "0"});
  Process& frozen = d.StartWorker("golden-a-fp8", {"--rank", "1"});
  ASSERT_TRUE(d.client().WaitReady(kStartTimeout));
  Clock::time_point stopped_at;
  {
    // Rank 0 ends up waiting in a collective on the frozen rank: it must give up (Gloo timeout)
    // and rejoin the next group rather than hang.
    LongGeneration generation(d.client());
    ASSERT_FALSE(generation.finished()) << "the generation ended before SIGSTOP";
    stopped_at = Clock::now();
    frozen.Signal(SIGSTOP);
    auto result = generation.Wait(10);
    ASSERT_TRUE(result.has_value()) << "the request hung on a stopped worker";
    const double fail_s = std::chrono::duration<double>(generation.finished_at() - stopped_at).count();
    EXPECT_EQ(result->error_code(), grpc::StatusCode::UNAVAILABLE) << result->error_message();
    EXPECT_TRUE(Contains(result->error_message(), "worker rank 1 lost (no heartbeat")) << result->error_message();
    EXPECT_GE(fail_s, 2.5);
    std::printf("[ fault ] SIGSTOP rank 1 mid-generation: request failed after %.3f s: \"%s\"\n", fail_s,
                result->error_message().c_str());
  }
  EXPECT_FALSE(d.client().Status()->ready());
  // A new rank 1 while the old one is still frozen: rank 0 is stuck in a collective on the frozen
  // rank until the Gloo timeout (5 s) fails it; only then can the group re-form.
  const auto restarted_at = Clock::now();
  d.StartWorker("golden-a-fp8", {"--rank", "1"});
  ASSERT_TRUE(d.client().WaitReady(kStartTimeout)) << "the group did not re-form";
  std::printf("[ fault ] new rank 1 started %.3f s after SIGSTOP: ready again after %.3f s\n",
              std::chrono::duration<double>(restarted_at - stopped_at).count(), SecondsSince(restarted_at));
  // Woken up, the old rank 1 finds its stream gone and exits with a clear error.
  frozen.Signal(SIGCONT);
  EXPECT_EQ(frozen.WaitExit(10), 1);
  EXPECT_TRUE(Contains(frozen.log(), "lost the coordinator")) << frozen.log();
  ExpectMatchesSingleProcess(d.client(), 2);
}

TEST(Faults, RankThatNeverArrivesIsAStartupTimeout) {
  Deployment d("startup_timeout", 3, {"--startup-timeout", "3"});
  Process& rank0 = d.StartWorker("golden-a-fp8", {"--rank", "0"});
  const auto t0 = Clock::now();
  const std::optional<int> code = d.coordinator().WaitExit(15);
  ASSERT_TRUE(code.has_value()) << "no start-up timeout";
  EXPECT_EQ(*code, 1);
  EXPECT_TRUE(Contains(d.coordinator().log(), "rank(s) 1, 2 of 3 never registered")) << d.coordinator().log();
  EXPECT_EQ(rank0.WaitExit(10), 0) << "rank 0 should be told to shut down";
  std::printf("[ fault ] missing ranks: coordinator gave up after %.3f s\n", SecondsSince(t0));
}

TEST(Faults, NoCoordinatorAtTheAddress) {
  const std::string dir = TempDir("integration_no_coordinator");
  const std::string nowhere = "127.0.0.1:" + std::to_string(FreePort());
  Process w({Bin("worker/r1-worker"), "--model", Model("golden-a-fp8"), "--coordinator", nowhere,
             "--connect-timeout", "2"},
            dir + "/worker.log");
  EXPECT_EQ(w.WaitExit(10), 1) << "the worker hung";
  EXPECT_TRUE(Contains(w.log(), "cannot reach the coordinator at " + nowhere)) << w.log();
}

TEST(Faults, FullGroupAndSecondCoordinatorAreRefused) {
  Deployment d("full_group", 1);
  d.StartWorker("golden-a-fp8", {});
  ASSERT_TRUE(d.client().WaitReady(kStartTimeout));
  Process& extra = d.StartWorker("golden-a-fp8", {});
  EXPECT_EQ(extra.WaitExit(10), 1);
  EXPECT_TRUE(Contains(extra.log(), "the group is full")) << extra.log();
  Process& duplicate = d.StartWorker("golden-a-fp8", {"--rank", "0"});
  EXPECT_EQ(duplicate.WaitExit(10), 1);
  EXPECT_TRUE(Contains(duplicate.log(), "rank 0 is already connected")) << duplicate.log();
  Process& wrong_size = d.StartWorker("golden-a-fp8", {"--world-size", "2"});
  EXPECT_EQ(wrong_size.WaitExit(10), 1);
  EXPECT_TRUE(Contains(wrong_size.log(), "world size mismatch")) << wrong_size.log();
  EXPECT_TRUE(d.client().Status()->ready()) << "refusals must not disturb the group";
  // A second coordinator on the same address.
  Process second({Bin("coordinator/pool/r1-coordinator"), "--workers", "1", "--listen", d.address()},
                 TempDir("integration_second_coordinator") + "/coordinator.log");
  EXPECT_EQ(second.WaitExit(10), 1);
  EXPECT_TRUE(Contains(second.log(), "cannot listen on " + d.address())) << second.log();
}

TEST(Faults, WrongModelPathOnOneRank) {
  Deployment d("wrong_path", 2);
  d.StartWorker("golden-a-fp8", {"--rank", "0"});
  Process& bad = d.StartWorker("no-such-model", {"--rank", "1"});
  EXPECT_EQ(bad.WaitExit(10), 1);
  EXPECT_TRUE(Contains(bad.log(), "no-such-model/config.json: cannot open")) << bad.log();
  auto status = d.client().Status();
  ASSERT_TRUE(status);
  EXPECT_FALSE(status->ready());
  EXPECT_TRUE(Contains(status->last_error(), "rank 1")) << status->last_error();
  EXPECT_TRUE(Contains(status->last_error(), "no-such-model")) << status->last_error();
}

TEST(Faults, MismatchedCheckpointsBetweenRanks) {
  Deployment d("mismatch", 2);
  d.StartWorker("golden-a-fp8", {"--rank", "0"});
  ASSERT_TRUE(WaitFor([&] {
    auto s = d.client().Status();
    return s && s->workers(0).state() == "registered";
  }, kStartTimeout));
  Process& other = d.StartWorker("golden-a-bf16", {"--rank", "1"});  // another config.json
  EXPECT_EQ(other.WaitExit(10), 1);
  EXPECT_TRUE(Contains(other.log(), "rank 1 has a different checkpoint")) << other.log();
  EXPECT_TRUE(Contains(d.client().Status()->last_error(), "than rank 0")) << d.client().Status()->last_error();
}

TEST(Faults, ImpossibleLayoutIsAClearError) {
  // golden-b has 3 attention heads: 2 ranks cannot split them.
  {
    Deployment d("layout_at_registration", 2);
    Process& w = d.StartWorker("golden-b-fp8", {"--rank", "0", "--world-size", "2"});
    EXPECT_EQ(w.WaitExit(10), 1);
    EXPECT_TRUE(Contains(w.log(), "num_attention_heads = 3 is not divisible by 2")) << w.log();
  }
  {
    // World size unknown to the workers: the load fails and the coordinator says why.
    Deployment d("layout_at_load", 2);
    d.StartWorker("golden-b-fp8", {});
    d.StartWorker("golden-b-fp8", {});
    std::optional<pb::StatusReply> status;
    ASSERT_TRUE(WaitFor([&] {
      return (status = d.client().Status()) && Contains(status->last_error(), "not divisible");
    }, kStartTimeout)) << (status ? status->last_error() : "no status");
    EXPECT_TRUE(Contains(status->last_error(), "num_attention_heads = 3 is not divisible by 2"));
    EXPECT_FALSE(status->ready());
  }
}

TEST(Protocol, OtherVersionIsRefused) {
  Deployment d("version", 1);
  auto channel = grpc::CreateChannel(d.address(), grpc::InsecureChannelCredentials());
  ASSERT_TRUE(channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10)));
  auto stub = pb::WorkerControl::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  auto stream = stub->Connect(&ctx);
  pb::WorkerMessage m;
  m.mutable_register_()->set_protocol_version(999);
  m.mutable_register_()->set_rank(-1);
  ASSERT_TRUE(stream->Write(m));
  pb::CoordinatorMessage answer;
  ASSERT_TRUE(stream->Read(&answer));
  ASSERT_TRUE(answer.has_refused());
  EXPECT_TRUE(Contains(answer.refused().reason(), "protocol version 999")) << answer.refused().reason();
  stream->WritesDone();
  EXPECT_FALSE(stream->Finish().ok());
}

}  // namespace
}  // namespace r1::testing

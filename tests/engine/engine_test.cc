// LocalEngine on the golden-a model (vocab 1024): results equal single-sequence generation and do
// not depend on what shares the batch; chunked prefill keeps decodes flowing; cancellation,
// admission, queue limits, prefix reuse, stops, logprobs, n > 1, preemption and drain. Every test
// ends with every KV block free.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <random>
#include <thread>

#include "coordinator/engine/sampling.h"
#include "tests/engine/engine_test_util.h"
#include "worker/generate.h"

namespace r1 {
namespace {

using testing::Collector;
using testing::Completion;
using testing::Greedy;
using testing::RandomPrompt;
using testing::RunAlone;
using testing::Seeded;

std::shared_ptr<const DeepseekV3Model> GoldenA() {
  static std::shared_ptr<const DeepseekV3Model> model = [] {
    auto m = DeepseekV3Model::Load(testing::GoldenModelDir("golden-a-fp8"));
    EXPECT_TRUE(m.ok()) << m.status();
    return m.ok() ? std::shared_ptr<const DeepseekV3Model>(std::move(*m)) : nullptr;
  }();
  return model;
}

LocalEngine::Options SmallOptions() {
  LocalEngine::Options o;
  o.model = GoldenA();
  o.kv_blocks = 1024;
  o.block_size = 16;
  o.max_step_tokens = 256;
  o.max_batch_size = 32;
  return o;
}

std::unique_ptr<LocalEngine> MakeEngine(LocalEngine::Options o = SmallOptions()) {
  auto e = LocalEngine::Create(std::move(o));
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? std::move(*e) : nullptr;
}

class EngineTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_NE(GoldenA(), nullptr); }
  // Every test leaves no block in use.
  void ExpectAllFree(const LocalEngine& e) {
    const EngineStats s = e.Stats();
    EXPECT_EQ(s.kv_blocks_used, 0);
    EXPECT_EQ(s.running, 0);
    EXPECT_EQ(s.waiting, 0);
  }
  int64_t vocab() const { return GoldenA()->config().vocab_size; }
};

TEST_F(EngineTest, GreedyEqualsGenerate) {
  auto engine = MakeEngine();
  for (int64_t len : {1, 37, 300}) {
    const auto prompt = RandomPrompt(len, vocab(), 100 + len);
    GenerateOptions g;
    g.max_new_tokens = 24;
    g.stop_at_eos = false;
    auto want = Generate(*GoldenA(), prompt, g);
    ASSERT_TRUE(want.ok()) << want.status();
    const Completion got = RunAlone(*engine, Greedy(prompt, 24));
    EXPECT_EQ(got.tokens, want->tokens) << "prompt length " << len;
    EXPECT_EQ(got.finish, FinishReason::kLength);
  }
  ExpectAllFree(*engine);
}

// 20 requests of different lengths, greedy and seeded sampling, submitted together: each gives
// exactly the tokens it gives alone.
TEST_F(EngineTest, ConcurrentRequestsEqualAlone) {
  auto engine = MakeEngine();
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 20; ++i) {
    auto prompt = RandomPrompt(1 + 13 * i, vocab(), 1000 + i);
    const int64_t max_new = 8 + 3 * (i % 7);
    requests.push_back(i % 2 ? Seeded(prompt, max_new, 77 + i) : Greedy(prompt, max_new));
  }
  std::vector<std::vector<int32_t>> alone;
  for (const auto& r : requests) alone.push_back(RunAlone(*engine, r).tokens);

  engine->SetPausedForTesting(true);  // all 20 queue up, then start together
  std::vector<std::unique_ptr<Collector>> collectors;
  for (const auto& r : requests) {
    collectors.push_back(std::make_unique<Collector>());
    ASSERT_TRUE(engine->Submit(r, collectors.back()->Callback()).ok());
  }
  const int64_t steps_before = engine->Stats().steps;
  engine->SetPausedForTesting(false);
  int64_t generated = 0;
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(collectors[i]->Wait());
    EXPECT_EQ(collectors[i]->completion().tokens, alone[i]) << "request " << i;
    EXPECT_EQ(collectors[i]->completion().finish, FinishReason::kLength);
    generated += static_cast<int64_t>(alone[i].size());
  }
  // Batched: far fewer steps than tokens.
  EXPECT_LT(engine->Stats().steps - steps_before, generated / 4);
  ExpectAllFree(*engine);
}

// The same, submitted from many threads at once, with prefix caching on and shared prefixes.
TEST_F(EngineTest, SubmitFromManyThreads) {
  auto engine = MakeEngine();
  const auto system = RandomPrompt(40, vocab(), 5);
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 16; ++i) {
    auto prompt = system;
    const auto tail = RandomPrompt(3 + i, vocab(), 500 + i);
    prompt.insert(prompt.end(), tail.begin(), tail.end());
    requests.push_back(Seeded(prompt, 12, 9 + i));
  }
  std::vector<std::vector<int32_t>> alone;
  {
    auto o = SmallOptions();
    o.prefix_caching = false;
    auto fresh = MakeEngine(o);
    for (const auto& r : requests) alone.push_back(RunAlone(*fresh, r).tokens);
  }
  std::vector<std::unique_ptr<Collector>> collectors(requests.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < requests.size(); ++i) {
    collectors[i] = std::make_unique<Collector>();
    threads.emplace_back(
        [&, i] { EXPECT_TRUE(engine->Submit(requests[i], collectors[i]->Callback()).ok()); });
  }
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(collectors[i]->Wait());
    EXPECT_EQ(collectors[i]->completion().tokens, alone[i]) << "request " << i;
  }
  ExpectAllFree(*engine);
}

// A long prompt arriving while others decode is prefilled in chunks between their tokens.
TEST_F(EngineTest, LongPromptDoesNotStallDecodes) {
  auto o = SmallOptions();
  o.max_step_tokens = 64;
  auto engine = MakeEngine(o);
  std::mutex mu;
  std::vector<int>
      log;  // which stream produced each event, in delivery order; -1 marks the long submit
  auto logging = [&](int stream, Collector* c) {
    auto inner = c->Callback();
    return [&mu, &log, stream, inner](const GenerationEvent& ev) {
      {
        std::lock_guard<std::mutex> lock(mu);
        log.push_back(stream);
      }
      inner(ev);
    };
  };
  constexpr int kStreams = 4;
  std::vector<std::unique_ptr<Collector>> decoders;
  std::vector<RequestId> ids;
  for (int i = 0; i < kStreams; ++i) {
    decoders.push_back(std::make_unique<Collector>());
    auto id = engine->Submit(Greedy(RandomPrompt(8, vocab(), 40 + i), 0),
                             logging(i, decoders.back().get()));
    ASSERT_TRUE(id.ok());
    ids.push_back(*id);
  }
  for (auto& d : decoders) {
    while (d->TokensSoFar() < 2) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  Collector long_one;
  {
    std::lock_guard<std::mutex> lock(mu);
    log.push_back(-1);
  }
  const int64_t long_len = 1200;
  ASSERT_TRUE(
      engine->Submit(Greedy(RandomPrompt(long_len, vocab(), 3), 4), logging(kStreams, &long_one))
          .ok());
  ASSERT_TRUE(long_one.Wait());
  for (RequestId id : ids) engine->Cancel(id);
  for (auto& d : decoders) ASSERT_TRUE(d->Wait());

  // Between the long submit and the long request's first token, every stream kept receiving
  // tokens: about one per prefill chunk (~(64 - 4)-token chunks → ~20 steps).
  std::lock_guard<std::mutex> lock(mu);
  const auto submit = std::find(log.begin(), log.end(), -1);
  const auto first = std::find(submit, log.end(), kStreams);
  ASSERT_NE(first, log.end());
  for (int i = 0; i < kStreams; ++i) {
    const auto between = std::count(submit, first, i);
    EXPECT_GE(between, long_len / 64 - 4) << "stream " << i;
  }
  ExpectAllFree(*engine);
}

TEST_F(EngineTest, CancellationFreesBlocks) {
  auto engine = MakeEngine();
  std::vector<std::unique_ptr<Collector>> cs;
  std::vector<RequestId> ids;
  for (int i = 0; i < 3; ++i) {
    cs.push_back(std::make_unique<Collector>(2));
    auto r = Greedy(RandomPrompt(50 + i, vocab(), 60 + i), 0);
    r.n = 2;
    auto id = engine->Submit(r, cs.back()->Callback());
    ASSERT_TRUE(id.ok());
    ids.push_back(*id);
  }
  for (auto& c : cs) {
    while (c->TokensSoFar(1) < 3) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_GT(engine->Stats().kv_blocks_used, 0);
  for (RequestId id : ids) engine->Cancel(id);
  for (auto& c : cs) {
    ASSERT_TRUE(c->Wait());
    EXPECT_EQ(c->completion(0).finish, FinishReason::kCancelled);
    EXPECT_EQ(c->completion(1).finish, FinishReason::kCancelled);
  }
  ExpectAllFree(*engine);
  engine->Cancel(ids[0]);  // finished: ignored
  engine->Cancel(12345);   // unknown: ignored

  // A request still in the queue is cancelled too.
  engine->SetPausedForTesting(true);
  Collector queued;
  auto id = engine->Submit(Greedy(RandomPrompt(10, vocab(), 1), 5), queued.Callback());
  ASSERT_TRUE(id.ok());
  engine->Cancel(*id);
  ASSERT_TRUE(queued.Wait());
  EXPECT_EQ(queued.completion().finish, FinishReason::kCancelled);
  EXPECT_TRUE(queued.completion().tokens.empty());
  engine->SetPausedForTesting(false);
  ExpectAllFree(*engine);
}

TEST_F(EngineTest, AdmissionErrors) {
  auto o = SmallOptions();
  o.max_context = 64;
  auto engine = MakeEngine(o);
  auto noop = [](const GenerationEvent&) {};
  auto code = [&](GenerationRequest r) {
    return engine->Submit(std::move(r), noop).status().code();
  };
  EXPECT_EQ(code(Greedy(RandomPrompt(64, vocab(), 1), 1)),
            absl::StatusCode::kOutOfRange);  // no room for 1 token
  EXPECT_EQ(code(Greedy({}, 1)), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Greedy({5, static_cast<int32_t>(vocab())}, 1)),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Greedy({5, -1}, 1)), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code(Greedy({5}, -1)), absl::StatusCode::kInvalidArgument);
  auto many = Greedy({5, 6}, 1);
  many.n = 1000;
  EXPECT_EQ(code(many), absl::StatusCode::kInvalidArgument);
  many.n = 0;
  EXPECT_EQ(code(many), absl::StatusCode::kInvalidArgument);
  auto bad = Greedy({5, 6}, 1);
  bad.sampling.top_p = 0;
  EXPECT_EQ(code(bad), absl::StatusCode::kInvalidArgument);
  bad = Greedy({5, 6}, 1);
  bad.sampling.top_logprobs = 21;
  EXPECT_EQ(code(bad), absl::StatusCode::kInvalidArgument);
  bad = Greedy({5, 6}, 1);
  bad.sampling.repetition_penalty = 0;
  EXPECT_EQ(code(bad), absl::StatusCode::kInvalidArgument);
  // A huge max_new_tokens is clamped to the context: 60 + 4 = 64.
  const Completion c = RunAlone(*engine, Greedy(RandomPrompt(60, vocab(), 2), int64_t{1} << 40));
  EXPECT_EQ(c.tokens.size(), 4u);
  EXPECT_EQ(c.finish, FinishReason::kLength);
  // 0 means "up to the context" as well.
  EXPECT_EQ(RunAlone(*engine, Greedy(RandomPrompt(50, vocab(), 2), 0)).tokens.size(), 14u);
  ExpectAllFree(*engine);

  // Options that cannot work are refused at Create.
  auto too_long = SmallOptions();
  too_long.kv_blocks = 4;
  too_long.max_context = 100;  // 4 blocks of 16 hold 64
  EXPECT_EQ(LocalEngine::Create(too_long).status().code(), absl::StatusCode::kInvalidArgument);
  // By default max_context is what the cache holds.
  too_long.max_context = 0;
  auto small = MakeEngine(too_long);
  EXPECT_EQ(small->max_context(), 64);
  EXPECT_EQ(small->Stats().kv_blocks_total, 4);
}

TEST_F(EngineTest, QueueFullIsResourceExhausted) {
  auto o = SmallOptions();
  o.max_queued_requests = 2;
  auto engine = MakeEngine(o);
  engine->SetPausedForTesting(true);
  Collector a, b, d;
  ASSERT_TRUE(engine->Submit(Greedy({5, 6, 7}, 3), a.Callback()).ok());
  ASSERT_TRUE(engine->Submit(Greedy({5, 6, 8}, 3), b.Callback()).ok());
  auto full = engine->Submit(Greedy({5, 6, 9}, 3), [](const GenerationEvent&) {});
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted) << full.status();
  EXPECT_EQ(engine->Stats().waiting, 2);
  engine->SetPausedForTesting(false);
  ASSERT_TRUE(a.Wait());
  ASSERT_TRUE(b.Wait());
  ASSERT_TRUE(engine->Submit(Greedy({5, 6, 9}, 3), d.Callback()).ok());  // room again
  ASSERT_TRUE(d.Wait());
  ExpectAllFree(*engine);
}

// A second request with the same long system prompt takes its full blocks from the prefix cache.
TEST_F(EngineTest, PrefixReuseSkipsRecomputation) {
  auto engine = MakeEngine();
  const auto system = RandomPrompt(100, vocab(), 11);  // 6 full blocks of 16 (96 tokens)
  auto with_tail = [&](uint64_t seed) {
    auto p = system;
    const auto tail = RandomPrompt(10, vocab(), seed);
    p.insert(p.end(), tail.begin(), tail.end());
    return p;
  };
  const EngineStats s0 = engine->Stats();
  RunAlone(*engine, Greedy(with_tail(1), 5));
  const EngineStats s1 = engine->Stats();
  EXPECT_EQ(s1.prefill_tokens - s0.prefill_tokens, 110);
  EXPECT_EQ(s1.prefix_hit_tokens - s0.prefix_hit_tokens, 0);
  EXPECT_GT(s1.kv_blocks_cached, 0);

  const auto second = with_tail(2);
  const Completion got = RunAlone(*engine, Greedy(second, 16));
  const EngineStats s2 = engine->Stats();
  EXPECT_EQ(s2.prefix_hit_tokens - s1.prefix_hit_tokens, 96);
  EXPECT_EQ(s2.prefill_tokens - s1.prefill_tokens, 110 - 96);

  // The reused blocks hold the right latents: the same tokens as without any cache.
  auto o = SmallOptions();
  o.prefix_caching = false;
  auto uncached = MakeEngine(o);
  EXPECT_EQ(got.tokens, RunAlone(*uncached, Greedy(second, 16)).tokens);
  EXPECT_EQ(uncached->Stats().prefix_hit_tokens, 0);

  // A prompt that is exactly the cached blocks still computes its last block (for its logits).
  const std::vector<int32_t> exact(system.begin(), system.begin() + 96);
  RunAlone(*engine, Greedy(exact, 2));
  const EngineStats s3 = engine->Stats();
  EXPECT_EQ(s3.prefix_hit_tokens - s2.prefix_hit_tokens, 80);
  EXPECT_EQ(s3.prefill_tokens - s2.prefill_tokens, 16);
  ExpectAllFree(*engine);
}

TEST_F(EngineTest, StopTokenIds) {
  auto engine = MakeEngine();
  const auto prompt = RandomPrompt(20, vocab(), 21);
  const auto full = RunAlone(*engine, Greedy(prompt, 24)).tokens;
  ASSERT_EQ(full.size(), 24u);
  // The first token after the third that has not appeared before it.
  size_t k = 3;
  while (k < full.size() && std::find(full.begin(), full.begin() + k, full[k]) != full.begin() + k)
    ++k;
  ASSERT_LT(k, full.size());
  auto r = Greedy(prompt, 24);
  r.stop_token_ids = {full[k], static_cast<int32_t>(vocab()) + 5};
  const Completion c = RunAlone(*engine, r);
  EXPECT_EQ(c.tokens, std::vector<int32_t>(full.begin(),
                                           full.begin() + k + 1));  // the stop token is reported
  EXPECT_EQ(c.finish, FinishReason::kStop);
  // EOS: the engine's EOS id stops unless ignore_eos.
  auto eos = Greedy(prompt, 24);
  eos.ignore_eos = false;
  eos.stop_token_ids = {};
  const Completion e = RunAlone(*engine, eos);
  const auto at = std::find(full.begin(), full.end(), engine->eos_token_id());
  EXPECT_EQ(e.tokens, std::vector<int32_t>(full.begin(), at == full.end() ? full.end() : at + 1));
  ExpectAllFree(*engine);
}

TEST_F(EngineTest, LogprobsAreNormalisedAndGreedyIsTheTop) {
  auto engine = MakeEngine();
  for (bool sampled : {false, true}) {
    auto r = sampled ? Seeded(RandomPrompt(30, vocab(), 8), 16, 4)
                     : Greedy(RandomPrompt(30, vocab(), 8), 16);
    r.sampling.logprobs = true;
    r.sampling.top_logprobs = 5;
    const Completion c = RunAlone(*engine, r);
    ASSERT_EQ(c.events.size(), 16u);
    for (const GenerationEvent& ev : c.events) {
      ASSERT_TRUE(ev.token.has_value());
      ASSERT_EQ(ev.top_logprobs.size(), 5u);
      EXPECT_LE(ev.logprob, 0.0f);
      EXPECT_LE(std::exp(ev.logprob), 1.0f);
      double mass = 0;
      for (size_t i = 0; i < ev.top_logprobs.size(); ++i) {
        mass += std::exp(ev.top_logprobs[i].logprob);
        if (i > 0) {
          EXPECT_LE(ev.top_logprobs[i].logprob, ev.top_logprobs[i - 1].logprob);
        }
      }
      EXPECT_LE(mass, 1.0 + 1e-5);
      EXPECT_LE(ev.logprob, ev.top_logprobs[0].logprob);
      if (!sampled) {
        EXPECT_EQ(ev.top_logprobs[0].token, *ev.token);
        EXPECT_FLOAT_EQ(ev.top_logprobs[0].logprob, ev.logprob);
      }
    }
  }
  ExpectAllFree(*engine);
}

TEST_F(EngineTest, SeedsAndCompletions) {
  auto engine = MakeEngine();
  auto r = Seeded(RandomPrompt(70, vocab(), 3), 12, 42);
  r.n = 3;
  const EngineStats before = engine->Stats();
  Collector a(3);
  ASSERT_TRUE(engine->Submit(r, a.Callback()).ok());
  ASSERT_TRUE(a.Wait());
  // Completions 1 and 2 took completion 0's 4 full prompt blocks.
  EXPECT_EQ(engine->Stats().prefix_hit_tokens - before.prefix_hit_tokens, 2 * 64);
  Collector b(3);
  ASSERT_TRUE(engine->Submit(r, b.Callback()).ok());
  ASSERT_TRUE(b.Wait());
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(a.completion(i).tokens.size(), 12u);
    EXPECT_EQ(a.completion(i).tokens, b.completion(i).tokens) << "same seed, completion " << i;
  }
  EXPECT_NE(a.completion(0).tokens, a.completion(1).tokens);  // each completion its own stream
  r.n = 1;
  r.sampling.seed = 43;
  EXPECT_NE(RunAlone(*engine, r).tokens, a.completion(0).tokens);
  // Penalties change the choice and stay deterministic.
  r.sampling.seed = 42;
  r.sampling.repetition_penalty = 1.3f;
  r.sampling.presence_penalty = 0.5f;
  r.sampling.frequency_penalty = 0.5f;
  EXPECT_EQ(RunAlone(*engine, r).tokens, RunAlone(*engine, r).tokens);
  ExpectAllFree(*engine);
}

// A step's tokens chosen over several threads (ChooseTokens) equal the serial choices, row by
// row, at R1's vocabulary: tokens, logprobs and the samplers' states after them.
TEST(EngineSamplingTest, ChooseTokensEqualsSerialChoices) {
  const int64_t vocab = 129280, rows = 48;
  std::mt19937_64 rng(5);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  std::vector<float> logits(rows * vocab);
  std::vector<EngineSampling> params(rows);
  std::vector<int32_t> prompt = {7, 100, 2048, 129279, 7};
  for (int64_t r = 0; r < rows; ++r) {
    EngineSampling& p = params[r];
    switch (r % 6) {
      case 0: p.temperature = 0.0f; break;  // greedy
      case 1: p.temperature = 0.6f, p.top_p = 0.95f; break;
      case 2: p.temperature = 1.0f, p.top_k = 40; break;
      case 3: p.temperature = 0.8f, p.min_p = 0.05f, p.logprobs = true, p.top_logprobs = 5; break;
      case 4: p.temperature = 0.7f, p.repetition_penalty = 1.3f, p.presence_penalty = 0.5f, p.frequency_penalty = 0.4f;
              break;
      case 5: p.temperature = 0.0f, p.logprobs = true, p.top_logprobs = 20, p.repetition_penalty = 1.2f; break;
    }
  }
  for (int threads : {1, 3, 0}) {
    SCOPED_TRACE(threads);
    std::vector<SamplerState> serial(rows), parallel(rows);
    for (int64_t r = 0; r < rows; ++r) {
      serial[r].Init(params[r], 42, static_cast<int32_t>(r), prompt);
      parallel[r].Init(params[r], 42, static_cast<int32_t>(r), prompt);
    }
    std::vector<float> scratch;
    for (int step = 0; step < 3; ++step) {
      for (float& x : logits) x = nd(rng);
      std::vector<SamplingJob> jobs(rows);
      for (int64_t r = 0; r < rows; ++r) {
        jobs[r].logits = logits.data() + r * vocab, jobs[r].sampling = &params[r], jobs[r].state = &parallel[r];
      }
      ChooseTokens(absl::MakeSpan(jobs), vocab, threads);
      for (int64_t r = 0; r < rows; ++r) {
        const float* row = logits.data() + r * vocab;
        const int32_t want = ChooseToken(row, vocab, params[r], serial[r], scratch);
        ASSERT_EQ(jobs[r].token, want) << "row " << r << ", step " << step;
        if (params[r].logprobs) {
          float lp = 0;
          std::vector<TokenLogprob> top;
          ComputeLogprobs(row, vocab, want, params[r].top_logprobs, &lp, &top);
          EXPECT_EQ(jobs[r].logprob, lp);
          ASSERT_EQ(jobs[r].top_logprobs.size(), top.size());
          for (size_t k = 0; k < top.size(); ++k) {
            EXPECT_EQ(jobs[r].top_logprobs[k].token, top[k].token);
            EXPECT_EQ(jobs[r].top_logprobs[k].logprob, top[k].logprob);
          }
        } else {
          EXPECT_TRUE(jobs[r].top_logprobs.empty());
        }
        serial[r].Observe(params[r], want);
        parallel[r].Observe(params[r], want);
      }
    }
    // The random streams advanced alike.
    for (int64_t r = 0; r < rows; ++r) EXPECT_EQ(serial[r].rng(), parallel[r].rng()) << "row " << r;
  }
  ChooseTokens({}, vocab, 4);  // nothing to do
}

// The token choice with temperature, min_p and top_p (no top_k, no penalties) against its
// definition written out plainly: weights exp((l - max) / T); tokens below min_p (or of weight 0)
// dropped; the nucleus is the shortest prefix, in (weight desc, id asc) order, whose weight reaches
// top_p of all kept weight (summed in id order); one uniform draw over the nucleus. Peaked, flat and
// "light tail" rows (where the tokens of tiny weight hold more than 1 - top_p of the mass).
int32_t PlainNucleusChoice(const float* l, int64_t vocab, const EngineSampling& s, std::mt19937_64& rng) {
  const float mx = *std::max_element(l, l + vocab);
  std::vector<float> w(vocab);
  for (int64_t i = 0; i < vocab; ++i) w[i] = std::exp((l[i] - mx) / s.temperature);
  std::vector<int32_t> ids;
  double total = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    if (w[i] >= s.min_p && w[i] > 0) ids.push_back(static_cast<int32_t>(i)), total += w[i];
  }
  int64_t keep = static_cast<int64_t>(ids.size());
  if (s.top_p < 1.0f) {
    std::sort(ids.begin(), ids.end(), [&](int32_t a, int32_t b) { return w[a] > w[b] || (w[a] == w[b] && a < b); });
    double cum = 0;
    for (int64_t i = 0; i < keep; ++i) {
      cum += w[ids[i]];
      if (cum >= s.top_p * total) {
        keep = i + 1;
        break;
      }
    }
  }
  double mass = 0;
  for (int64_t i = 0; i < keep; ++i) mass += w[ids[i]];
  const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng) * mass;
  double acc = 0;
  for (int64_t i = 0; i < keep; ++i) {
    acc += w[ids[i]];
    if (u < acc) return ids[i];
  }
  return ids[keep - 1];
}

TEST(EngineSamplingTest, NucleusMatchesItsDefinition) {
  const int64_t vocab = 129280;
  std::mt19937_64 gen(9);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_int_distribution<int64_t> pick(0, vocab - 1);
  std::vector<float> l(vocab);
  std::vector<float> scratch;
  int checked = 0;
  for (int kind = 0; kind < 4; ++kind) {
    for (int row = 0; row < 12; ++row) {
      EngineSampling s;
      s.temperature = 0.6f, s.top_p = 0.95f;
      if (kind == 0) {  // peaked: a body and a few likely tokens
        for (float& x : l) x = 2.5f * nd(gen);
        for (int i = 0; i < 16; ++i) l[pick(gen)] += 8.0f + 0.5f * i;
      } else if (kind == 1) {  // flat: thousands of tokens in the nucleus
        for (float& x : l) x = 3.0f * nd(gen);
        s.top_p = 0.9f;
      } else if (kind == 2) {  // light tail: every other token weighs ~9e-6 of the best
        s.temperature = 1.0f;
        for (float& x : l) x = -11.6f + 0.02f * nd(gen);
        l[pick(gen)] = 0.0f;
      } else {  // min_p and top_p 1 alternately
        for (float& x : l) x = 2.5f * nd(gen);
        for (int i = 0; i < 16; ++i) l[pick(gen)] += 6.0f + 0.3f * i;
        if (row % 2) s.min_p = 0.05f, s.top_p = 0.8f;
        else s.top_p = 1.0f, s.temperature = 1.0f;
      }
      SamplerState state;
      state.Init(s, 100 + row, kind, {});
      std::mt19937_64 ref = state.rng;
      const int32_t got = ChooseToken(l.data(), vocab, s, state, scratch);
      const int32_t want = PlainNucleusChoice(l.data(), vocab, s, ref);
      ASSERT_EQ(got, want) << "kind " << kind << ", row " << row;
      EXPECT_EQ(state.rng(), ref());  // one draw each
      ++checked;
    }
  }
  EXPECT_EQ(checked, 48);
}

// A sampler's stream position (key, draws) is all another process needs to make its choice
// (PoolExecutor's rank-0 choices): FromStream reproduces every choice, greedy steps take no
// number, and SkipChoice moves the stream as a choice made here would.
TEST(EngineSamplingTest, StreamPositionReproducesTheChoice) {
  const int64_t vocab = 5000;
  std::mt19937_64 gen(3);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  std::vector<float> l(vocab), scratch;
  EngineSampling hot, greedy;
  hot.temperature = 0.8f, hot.top_p = 0.9f, hot.min_p = 0.01f;
  greedy.temperature = 0.0f;
  SamplerState here, skipped;
  here.Init(hot, 77, 2, {});
  skipped.Init(hot, 77, 2, {});
  EXPECT_EQ(here.key, skipped.key);
  EXPECT_FALSE(SamplerState::HasHistory(hot));
  for (int step = 0; step < 30; ++step) {
    for (float& x : l) x = nd(gen);
    const EngineSampling& s = step % 3 == 2 ? greedy : hot;
    SamplerState there = SamplerState::FromStream(here.key, here.draws);
    const uint64_t before = here.draws;
    const int32_t want = ChooseToken(l.data(), vocab, s, here, scratch);
    EXPECT_EQ(ChooseToken(l.data(), vocab, s, there, scratch), want) << "step " << step;
    EXPECT_EQ(here.draws, before + (s.temperature > 0 ? 1 : 0));
    EXPECT_EQ(there.draws, here.draws);
    skipped.SkipChoice(s);
    EXPECT_EQ(skipped.draws, here.draws);
  }
  EXPECT_EQ(skipped.rng(), here.rng());
  EngineSampling penalised = hot;
  penalised.presence_penalty = 0.5f;
  EXPECT_TRUE(SamplerState::HasHistory(penalised));
  penalised = hot;
  penalised.repetition_penalty = 1.1f;
  EXPECT_TRUE(SamplerState::HasHistory(penalised));
}

// An executor that chooses the tokens itself (as PoolExecutor's rank 0 does) gives the engine's
// tokens and logprobs: rows with penalties come back as logits, the others as tokens.
class ChoosingExecutor : public ModelExecutor {
 public:
  using ModelExecutor::ModelExecutor;
  absl::StatusOr<std::vector<StepRow>> ForwardRows(const std::vector<SequenceStep>& batch,
                                                   const std::vector<RowRequest>& requests, uint64_t epoch) override {
    auto logits = Forward(batch, epoch);
    if (!logits.ok()) return logits.status();
    std::vector<StepRow> rows(batch.size());
    std::vector<float> scratch;
    for (size_t i = 0; i < batch.size(); ++i) {
      if (!requests[i].needed) continue;
      if (!requests[i].choice) {
        rows[i].logits = std::move((*logits)[i]);
        ++logit_rows;
        continue;
      }
      const auto& c = *requests[i].choice;
      SamplerState st = SamplerState::FromStream(c.rng_key, c.draws);
      const float* row = (*logits)[i].data();
      const int64_t vocab = config().vocab_size;
      rows[i].token = ChooseToken(row, vocab, c.sampling, st, scratch);
      if (c.sampling.logprobs) {
        ComputeLogprobs(row, vocab, *rows[i].token, c.sampling.top_logprobs, &rows[i].logprob, &rows[i].top_logprobs);
      }
      ++chosen_rows;
    }
    return rows;
  }
  std::atomic<int> chosen_rows{0}, logit_rows{0};
};

TEST_F(EngineTest, TokensChosenByTheExecutorEqualTheEngines) {
  auto run = [&](bool choosing, std::shared_ptr<ChoosingExecutor>* keep) {
    LocalEngine::Options o = SmallOptions();
    if (choosing) {
      *keep = std::make_shared<ChoosingExecutor>(GoldenA());
      o.executor = *keep;
    }
    auto engine = MakeEngine(o);
    std::vector<GenerationRequest> reqs;
    reqs.push_back(Seeded(RandomPrompt(20, vocab(), 1), 9, 5));
    reqs.push_back(Greedy(RandomPrompt(35, vocab(), 2), 7));
    reqs.push_back(Seeded(RandomPrompt(50, vocab(), 3), 8, 6));
    reqs[2].sampling.presence_penalty = 0.5f;  // history: logits
    reqs[0].sampling.logprobs = true, reqs[0].sampling.top_logprobs = 4;
    std::vector<Completion> out;
    for (auto& r : reqs) out.push_back(RunAlone(*engine, r));
    ExpectAllFree(*engine);
    return out;
  };
  std::shared_ptr<ChoosingExecutor> exec;
  const auto want = run(false, nullptr), got = run(true, &exec);
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].tokens, want[i].tokens) << "request " << i;
    ASSERT_EQ(got[i].events.size(), want[i].events.size());
    for (size_t e = 0; e < want[i].events.size(); ++e) {
      EXPECT_EQ(got[i].events[e].logprob, want[i].events[e].logprob);
      ASSERT_EQ(got[i].events[e].top_logprobs.size(), want[i].events[e].top_logprobs.size());
    }
  }
  EXPECT_GT(got[0].tokens.size(), 0u);
  EXPECT_EQ(exec->chosen_rows.load(), static_cast<int>(got[0].tokens.size() + got[1].tokens.size()));
  EXPECT_EQ(exec->logit_rows.load(), static_cast<int>(got[2].tokens.size()));
}

// Greedy is std::max_element's answer on every kind of row: ties (the lowest id), infinities, a
// row of -inf, and NaNs wherever they stand.
TEST(EngineSamplingTest, GreedyIsTheFirstLargest) {
  const int64_t vocab = 1037;
  std::mt19937_64 gen(4);
  std::uniform_int_distribution<int> coarse(-20, 20);
  std::uniform_int_distribution<int64_t> pick(0, vocab - 1);
  EngineSampling greedy;
  greedy.temperature = 0.0f;
  SamplerState state;
  std::vector<float> l(vocab), scratch;
  const float inf = std::numeric_limits<float>::infinity(), nan = std::nanf("");
  for (int trial = 0; trial < 60; ++trial) {
    for (float& x : l) x = static_cast<float>(coarse(gen));  // many ties
    if (trial % 6 == 1) l[pick(gen)] = inf, l[pick(gen)] = inf;
    if (trial % 6 == 2) std::fill(l.begin(), l.end(), -inf);
    if (trial % 6 == 3) l[pick(gen)] = nan;
    if (trial % 6 == 4) l[0] = nan;
    if (trial % 6 == 5) l[vocab - 1] = 25.0f, l[vocab - 2] = 25.0f;
    const int32_t want = static_cast<int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
    EXPECT_EQ(ChooseToken(l.data(), vocab, greedy, state, scratch), want) << "trial " << trial;
  }
  EXPECT_EQ(state.draws, 0u);
}

// ComputeLogprobs' alternatives are the top_n logits in (logit desc, id asc) order, ties included
// (logits rounded to a coarse grid, so many tie), each with its log-softmax.
TEST(EngineSamplingTest, TopLogprobsAreTheBestInOrder) {
  const int64_t vocab = 3000;
  std::mt19937_64 gen(12);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  std::vector<float> l(vocab);
  for (int trial = 0; trial < 20; ++trial) {
    for (float& x : l) x = std::round(nd(gen) * 2.0f) / 2.0f;
    std::vector<int32_t> order(vocab);
    for (int32_t i = 0; i < vocab; ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); });
    const int n = 1 + trial % 20;
    float lp = 0;
    std::vector<TokenLogprob> top;
    ComputeLogprobs(l.data(), vocab, order[5], n, &lp, &top);
    ASSERT_EQ(static_cast<int>(top.size()), n);
    double z = 0;
    const float mx = l[order[0]];
    for (float x : l) z += std::exp(static_cast<double>(x - mx));
    for (int k = 0; k < n; ++k) {
      EXPECT_EQ(top[k].token, order[k]) << "trial " << trial << ", rank " << k;
      EXPECT_NEAR(top[k].logprob, l[order[k]] - mx - std::log(z), 1e-5);
    }
    EXPECT_NEAR(lp, l[order[5]] - mx - std::log(z), 1e-5);
  }
}

// Options out of range are refused with the option named, not run.
TEST_F(EngineTest, BadOptionsAreRefused) {
  for (int bad = 0; bad < 4; ++bad) {
    LocalEngine::Options o = SmallOptions();
    if (bad == 0) o.max_batch_size = 0;
    if (bad == 1) o.block_size = -16;
    if (bad == 2) o.sampling_threads = -1;
    if (bad == 3) o.sampling_threads = 1025;
    auto e = LocalEngine::Create(std::move(o));
    ASSERT_FALSE(e.ok()) << "case " << bad;
    EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(e.status().message().find(bad >= 2 ? "sampling_threads" : "must be positive"), absl::string_view::npos)
        << e.status();
  }
  LocalEngine::Options ok = SmallOptions();
  ok.sampling_threads = 1024;
  EXPECT_TRUE(LocalEngine::Create(std::move(ok)).ok());
}

// The engine's tokens do not depend on how many threads choose them.
TEST_F(EngineTest, SamplingThreadsDoNotChangeTokens) {
  std::vector<std::vector<int32_t>> first;
  for (int threads : {1, 4}) {
    LocalEngine::Options o = SmallOptions();
    o.sampling_threads = threads;
    auto engine = MakeEngine(o);
    auto r = Seeded(RandomPrompt(40, vocab(), 11), 10, 7);
    r.n = 6;
    r.sampling.logprobs = true;
    r.sampling.top_logprobs = 3;
    Collector c(6);
    ASSERT_TRUE(engine->Submit(r, c.Callback()).ok());
    ASSERT_TRUE(c.Wait());
    std::vector<std::vector<int32_t>> got;
    for (int i = 0; i < 6; ++i) got.push_back(c.completion(i).tokens);
    if (first.empty()) {
      first = got;
    } else {
      EXPECT_EQ(got, first);
    }
    ExpectAllFree(*engine);
  }
}

// Far more demand than KV blocks: sequences are preempted and recomputed, all finish with the
// right lengths, and nothing leaks.
TEST_F(EngineTest, PreemptionUnderBlockPressure) {
  auto o = SmallOptions();
  o.kv_blocks = 12;  // 192 tokens
  o.max_step_tokens = 64;
  auto engine = MakeEngine(o);
  std::vector<std::unique_ptr<Collector>> cs;
  for (int i = 0; i < 6; ++i) {
    cs.push_back(std::make_unique<Collector>());
    ASSERT_TRUE(
        engine->Submit(Greedy(RandomPrompt(40 + i, vocab(), 90 + i), 100), cs.back()->Callback())
            .ok());
  }
  for (auto& c : cs) {
    ASSERT_TRUE(c->Wait());
    EXPECT_EQ(c->completion().tokens.size(), 100u);
    EXPECT_EQ(c->completion().finish, FinishReason::kLength);
  }
  EXPECT_GT(engine->Stats().preemptions, 0);
  ExpectAllFree(*engine);
}

TEST_F(EngineTest, DrainFinishesThenCancels) {
  auto engine = MakeEngine();
  Collector quick, endless;
  // The endless request's callback is slow (5 ms a token, on the engine's thread): its ~2500
  // tokens cannot finish before the deadline, while the quick one's 6 steps surely do.
  auto slow = [cb = endless.Callback()](const GenerationEvent& ev) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    cb(ev);
  };
  ASSERT_TRUE(engine->Submit(Greedy(RandomPrompt(10, vocab(), 1), 6), quick.Callback()).ok());
  ASSERT_TRUE(engine->Submit(Greedy(RandomPrompt(10, vocab(), 2), 0), slow).ok());
  engine->Drain(2000);
  // Drain returns after every final event was delivered.
  EXPECT_EQ(quick.completion().finish, FinishReason::kLength);
  EXPECT_EQ(quick.completion().tokens.size(), 6u);
  EXPECT_EQ(endless.completion().finish, FinishReason::kCancelled);
  EXPECT_EQ(engine->Submit(Greedy({5}, 1), [](const GenerationEvent&) {}).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_FALSE(engine->Stats().ready);
  ExpectAllFree(*engine);
}

TEST_F(EngineTest, DestructionCancelsWhatIsLeft) {
  Collector c;
  {
    auto engine = MakeEngine();
    ASSERT_TRUE(engine->Submit(Greedy(RandomPrompt(10, vocab(), 2), 0), c.Callback()).ok());
    while (c.TokensSoFar() < 1) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(c.completion().finish, FinishReason::kCancelled);
}

// Throughput through the engine (not a test: run with --gtest_also_run_disabled_tests).
// An executor standing for a worker group: the in-process model, but the test can take it down
// (not ready), make its next steps fail, and replace its cache (a group formed again: the cache
// is wiped and its epoch changes).
class FlakyExecutor : public StepExecutor {
 public:
  FlakyExecutor() : inner_(GoldenA()) {}
  const ModelConfig& config() const override { return inner_.config(); }
  absl::Status CreateCache(int64_t num_blocks, int64_t block_size) override {
    num_blocks_ = num_blocks;
    block_size_ = block_size;
    return inner_.CreateCache(num_blocks, block_size);
  }
  absl::StatusOr<std::vector<std::vector<float>>> Forward(const std::vector<SequenceStep>& batch,
                                                          uint64_t epoch) override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      ++steps_;
      if (fail_steps_ > 0) {
        --fail_steps_;
        return absl::UnavailableError("rank 1 is gone");
      }
      if (epoch != epoch_) return absl::UnavailableError("stale epoch");
    }
    return inner_.Forward(batch, epoch);
  }
  bool Ready(std::string* why) const override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!ready_) *why = "waiting for rank 1";
    return ready_;
  }
  uint64_t cache_epoch() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return epoch_;
  }
  void SetReady(bool ready) {
    std::lock_guard<std::mutex> lock(mu_);
    ready_ = ready;
  }
  void FailNextSteps(int n) {
    std::lock_guard<std::mutex> lock(mu_);
    fail_steps_ = n;
  }
  // A new cache: every block's content is gone (a fresh cache of the same size).
  void ReplaceCache() {
    std::lock_guard<std::mutex> lock(mu_);
    ASSERT_TRUE(inner_.CreateCache(num_blocks_, block_size_).ok());
    ++epoch_;
  }
  int64_t steps() const {
    std::lock_guard<std::mutex> lock(mu_);
    return steps_;
  }

 private:
  mutable std::mutex mu_;
  ModelExecutor inner_;
  bool ready_ = true;
  int fail_steps_ = 0;
  uint64_t epoch_ = 1;
  int64_t steps_ = 0, num_blocks_ = 0, block_size_ = 0;
};

TEST_F(EngineTest, ExecutorNotReadyRefusesThenTimesOutQueuedRequests) {
  auto executor = std::make_shared<FlakyExecutor>();
  LocalEngine::Options o = SmallOptions();
  o.executor = executor;
  o.not_ready_timeout_ms = 300;
  auto engine = MakeEngine(o);
  ASSERT_NE(engine, nullptr);
  EXPECT_TRUE(engine->Stats().ready);
  // Accepted while ready, then the executor goes away before the request can run.
  engine->SetPausedForTesting(true);
  Collector queued;
  ASSERT_TRUE(engine->Submit(Greedy(RandomPrompt(20, vocab(), 1), 8), queued.Callback()).ok());
  executor->SetReady(false);
  EXPECT_FALSE(engine->Stats().ready);
  Collector refused;
  auto id = engine->Submit(Greedy(RandomPrompt(20, vocab(), 2), 8), refused.Callback());
  ASSERT_FALSE(id.ok());
  EXPECT_EQ(id.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(id.status().message().find("waiting for rank 1"), std::string::npos) << id.status();
  const auto t0 = std::chrono::steady_clock::now();
  engine->SetPausedForTesting(false);
  ASSERT_TRUE(queued.Wait(10));
  const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(queued.completion().finish, FinishReason::kError);
  EXPECT_EQ(queued.completion().error.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(queued.completion().error.message().find("waiting for rank 1"), std::string::npos);
  EXPECT_GE(waited, 0.25);
  EXPECT_LT(waited, 5.0);
  EXPECT_EQ(executor->steps(), 0);
  ExpectAllFree(*engine);
  // Back: serves again, the same tokens as an engine that never saw a fault.
  executor->SetReady(true);
  const auto prompt = RandomPrompt(33, vocab(), 3);
  const Completion got = RunAlone(*engine, Greedy(prompt, 12));
  const Completion want = RunAlone(*MakeEngine(), Greedy(prompt, 12));
  EXPECT_EQ(got.tokens, want.tokens);
  ExpectAllFree(*engine);
}

TEST_F(EngineTest, FailedStepFailsItsSequencesWithTheReason) {
  auto executor = std::make_shared<FlakyExecutor>();
  LocalEngine::Options o = SmallOptions();
  o.executor = executor;
  auto engine = MakeEngine(o);
  ASSERT_NE(engine, nullptr);
  executor->FailNextSteps(1);
  const Completion failed = RunAlone(*engine, Greedy(RandomPrompt(40, vocab(), 4), 8));
  EXPECT_EQ(failed.finish, FinishReason::kError);
  EXPECT_NE(failed.error.message().find("rank 1 is gone"), std::string::npos) << failed.error;
  EXPECT_TRUE(failed.tokens.empty());
  ExpectAllFree(*engine);
}

// The cache is replaced while sequences are mid-generation and while their prompts sit in the
// prefix cache: the engine must recompute, never read the lost content. Every completion equals
// the same request on an engine that never saw the fault.
TEST_F(EngineTest, ReplacedCacheIsRecomputedNotRead) {
  auto executor = std::make_shared<FlakyExecutor>();
  LocalEngine::Options o = SmallOptions();
  o.executor = executor;
  auto engine = MakeEngine(o);
  ASSERT_NE(engine, nullptr);
  auto reference = MakeEngine();
  const auto shared_prefix = RandomPrompt(64, vocab(), 5);
  std::vector<GenerationRequest> requests;
  for (int i = 0; i < 6; ++i) {
    auto prompt = shared_prefix;
    const auto tail = RandomPrompt(5 + i, vocab(), 50 + i);
    prompt.insert(prompt.end(), tail.begin(), tail.end());
    requests.push_back(i % 2 ? Seeded(prompt, 40, 7 + i) : Greedy(prompt, 40));
  }
  // Warm the prefix cache with the shared prefix, then replace the cache.
  RunAlone(*engine, Greedy(shared_prefix, 2));
  executor->ReplaceCache();
  std::vector<std::unique_ptr<Collector>> collectors;
  for (const auto& r : requests) {
    collectors.push_back(std::make_unique<Collector>());
    ASSERT_TRUE(engine->Submit(r, collectors.back()->Callback()).ok());
  }
  // Mid-generation: replace it again once every sequence has some tokens.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < deadline &&
         !std::all_of(collectors.begin(), collectors.end(),
                      [](const auto& c) { return c->TokensSoFar() >= 5; })) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  executor->ReplaceCache();
  for (size_t i = 0; i < requests.size(); ++i) {
    ASSERT_TRUE(collectors[i]->Wait());
    const Completion want = RunAlone(*reference, requests[i]);
    EXPECT_EQ(collectors[i]->completion().finish, FinishReason::kLength) << i;
    EXPECT_EQ(collectors[i]->completion().tokens, want.tokens) << "request " << i;
  }
  EXPECT_GT(engine->Stats().preemptions, 0);
  ExpectAllFree(*engine);
}

TEST_F(EngineTest, DISABLED_Throughput) {
  for (int streams : {1, 8, 32}) {
    auto o = SmallOptions();
    o.kv_blocks = 4096;
    o.max_batch_size = 64;
    auto engine = MakeEngine(o);
    std::vector<std::unique_ptr<Collector>> cs;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < streams; ++i) {
      cs.push_back(std::make_unique<Collector>());
      ASSERT_TRUE(
          engine->Submit(Greedy(RandomPrompt(32, vocab(), i), 128), cs.back()->Callback()).ok());
    }
    for (auto& c : cs) ASSERT_TRUE(c->Wait(600));
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf(
        "golden-a-fp8: %2d streams: %.0f generated tokens/s (%d x 128 in %.2f s, prompts 32)\n",
        streams, streams * 128 / s, streams, s);
  }
}

}  // namespace
}  // namespace r1

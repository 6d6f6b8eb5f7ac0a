// Helpers of the engine tests: a shared golden model, random prompts, and a collector that turns
// a request's events into per-completion token lists and waits for its end.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "coordinator/engine/local_engine.h"
#include "gtest/gtest.h"

namespace r1::testing {

inline std::string GoldenModelDir(const std::string& name) {
  return std::string(R1_SOURCE_DIR) + "/tests/golden/models/" + name;
}

inline std::vector<int32_t> RandomPrompt(int64_t length, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> dist(2, static_cast<int32_t>(vocab - 1));  // not BOS/EOS
  std::vector<int32_t> p(length);
  for (auto& t : p) t = dist(rng);
  return p;
}

struct Completion {
  std::vector<int32_t> tokens;
  std::vector<GenerationEvent> events;
  FinishReason finish = FinishReason::kNone;
  absl::Status error;
};

// Collects one request's events; thread-safe; Wait() blocks until all n completions finished.
class Collector {
 public:
  explicit Collector(int32_t n = 1) : completions_(n) {}

  std::function<void(const GenerationEvent&)> Callback() {
    return [this](const GenerationEvent& ev) {
      std::lock_guard<std::mutex> lock(mu_);
      ASSERT_GE(ev.index, 0);
      ASSERT_LT(ev.index, static_cast<int32_t>(completions_.size()));
      Completion& c = completions_[ev.index];
      EXPECT_EQ(c.finish, FinishReason::kNone) << "event after the final one";
      if (ev.token) c.tokens.push_back(*ev.token);
      c.events.push_back(ev);
      if (ev.finish != FinishReason::kNone) {
        c.finish = ev.finish;
        c.error = ev.error;
        ++finished_;
        cv_.notify_all();
      }
    };
  }
  // False on timeout.
  bool Wait(int seconds = 60) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::seconds(seconds),
                        [&] { return finished_ == static_cast<int32_t>(completions_.size()); });
  }
  int64_t TokensSoFar(int32_t index = 0) {
    std::lock_guard<std::mutex> lock(mu_);
    return static_cast<int64_t>(completions_[index].tokens.size());
  }
  const Completion& completion(int32_t index = 0) const { return completions_[index]; }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Completion> completions_;
  int32_t finished_ = 0;
};

inline GenerationRequest Greedy(std::vector<int32_t> prompt, int64_t max_new) {
  GenerationRequest r;
  r.prompt = std::move(prompt);
  r.max_new_tokens = max_new;
  r.sampling.temperature = 0;
  r.sampling.top_p = 1;
  r.ignore_eos = true;
  return r;
}

inline GenerationRequest Seeded(std::vector<int32_t> prompt, int64_t max_new, uint64_t seed) {
  GenerationRequest r = Greedy(std::move(prompt), max_new);
  r.sampling.temperature = 0.9f;
  r.sampling.top_p = 0.9f;
  r.sampling.top_k = 40;
  r.sampling.min_p = 0.01f;
  r.sampling.seed = seed;
  return r;
}

// Submits and waits; the completion's tokens.
inline Completion RunAlone(LocalEngine& engine, GenerationRequest request) {
  Collector c(request.n);
  auto id = engine.Submit(std::move(request), c.Callback());
  EXPECT_TRUE(id.ok()) << id.status();
  if (!id.ok()) return {};
  EXPECT_TRUE(c.Wait());
  return c.completion(0);
}

}  // namespace r1::testing

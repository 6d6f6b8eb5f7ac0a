// A deterministic stand-in for the Engine, for the HTTP and client tests: no model, one thread,
// one token per running completion per step (a configurable delay apart). Its reply is a scripted
// R1-style text — reasoning, "</think>" (the control token), an answer with non-ASCII characters
// (multi-byte characters split across byte-level tokens), then EOS — chosen by the seed (or
// temperature 0), so a fixed seed gives the same text twice and different seeds differ.
//
// Prompt words change its behaviour: "[long]" makes a reply of about 2000 tokens (disconnect,
// drain and load tests), "[error]" fails the completion mid-way with an INTERNAL error, and
// "[tool]" — when the prompt describes tools — answers with two calls of the first tool described
// ({"city": "Paris"}, {"city": "Oslo"}) in DeepSeek's tool-call tokens.
// It honours max_new_tokens, the context limit, n, logprobs / top_logprobs, Cancel and Drain.
#pragma once

#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "coordinator/engine/engine.h"
#include "coordinator/tokenizer/tokenizer.h"

namespace r1::testing {

class FakeEngine : public Engine {
 public:
  struct Options {
    int64_t max_context = 4096;
    int64_t token_delay_us = 300;  // between steps
    int64_t kv_blocks_total = 4096;
  };
  FakeEngine(const Tokenizer& tokenizer, Options options);
  ~FakeEngine() override;

  absl::StatusOr<RequestId> Submit(GenerationRequest request,
                                   std::function<void(const GenerationEvent&)> on_event) override;
  void Cancel(RequestId id) override;
  EngineStats Stats() const override;
  void Drain(int64_t deadline_ms) override;
  int64_t max_context() const override { return options_.max_context; }
  int32_t eos_token_id() const override { return eos_; }

  // The scripted reply (token ids, EOS last) for a prompt, as the engine would produce it.
  std::vector<int32_t> Script(const std::vector<int32_t>& prompt, const EngineSampling& sampling,
                              int32_t index) const;

 private:
  struct Completion {
    std::vector<int32_t> script;
    size_t next = 0;
    bool done = false;
  };
  struct Active {
    RequestId id;
    GenerationRequest request;
    std::function<void(const GenerationEvent&)> on_event;
    std::vector<Completion> completions;
    bool cancelled = false;
    bool fail = false;
  };
  void Loop();

  const Tokenizer& tokenizer_;
  Options options_;
  int32_t eos_ = 1;
  mutable std::mutex mu_;
  std::condition_variable cv_, idle_cv_;
  std::map<RequestId, std::shared_ptr<Active>> active_;
  RequestId next_id_ = 1;
  bool stop_ = false, draining_ = false;
  int64_t prompt_tokens_ = 0, generated_tokens_ = 0, last_batch_ = 0;
  std::thread thread_;
};

}  // namespace r1::testing

// Prometheus metrics of the HTTP front end, in the text exposition format (version 0.0.4).
// Counters and histograms are updated lock-free on the hot path (per token); the per-endpoint
// request counter takes a mutex once per response.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "coordinator/engine/engine.h"

namespace r1::http {

class Histogram {
 public:
  // Upper bounds in seconds, ascending (the +Inf bucket is implicit).
  static constexpr std::array<double, 14> kBounds = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                                     0.25,  0.5,    1.0,   2.5,  5.0,   10.0, 30.0};
  void Observe(double seconds);
  void Write(const std::string& name, const std::string& help, std::string* out) const;

 private:
  std::array<std::atomic<uint64_t>, kBounds.size() + 1> buckets_{};
  std::atomic<uint64_t> count_{0};
  std::atomic<int64_t> sum_us_{0};
};

class Metrics {
 public:
  // `endpoint` is a route ("/v1/chat/completions") or "other".
  void CountResponse(const std::string& endpoint, int status);
  void AddTokens(int64_t prompt, int64_t generated);
  void StreamOpened() { active_streams_.fetch_add(1); }
  void StreamClosed() { active_streams_.fetch_sub(1); }
  void CountCancelledByClient() { client_cancels_.fetch_add(1); }

  Histogram time_to_first_token, inter_token_latency, request_duration;

  // Everything, with the engine's gauges from `stats`.
  std::string Render(const EngineStats& stats, bool draining) const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, uint64_t> responses_;
  std::atomic<int64_t> prompt_tokens_{0}, generated_tokens_{0};
  std::atomic<int64_t> active_streams_{0}, client_cancels_{0};
};

}  // namespace r1::http

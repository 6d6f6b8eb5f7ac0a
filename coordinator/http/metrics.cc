#include "coordinator/http/metrics.h"

#include "absl/strings/str_cat.h"

namespace r1::http {

void Histogram::Observe(double seconds) {
  size_t i = 0;
  while (i < kBounds.size() && seconds > kBounds[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_us_.fetch_add(static_cast<int64_t>(seconds * 1e6), std::memory_order_relaxed);
}

void Histogram::Write(const std::string& name, const std::string& help, std::string* out) const {
  absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " histogram\n");
  uint64_t cumulative = 0;
  for (size_t i = 0; i < kBounds.size(); ++i) {
    cumulative += buckets_[i].load(std::memory_order_relaxed);
    absl::StrAppend(out, name, "_bucket{le=\"", kBounds[i], "\"} ", cumulative, "\n");
  }
  cumulative += buckets_[kBounds.size()].load(std::memory_order_relaxed);
  absl::StrAppend(out, name, "_bucket{le=\"+Inf\"} ", cumulative, "\n");
  absl::StrAppend(out, name, "_sum ", sum_us_.load(std::memory_order_relaxed) / 1e6, "\n");
  absl::StrAppend(out, name, "_count ", count_.load(std::memory_order_relaxed), "\n");
}

void Metrics::CountResponse(const std::string& endpoint, int status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++responses_[{endpoint, status}];
}

void Metrics::AddTokens(int64_t prompt, int64_t generated) {
  prompt_tokens_.fetch_add(prompt, std::memory_order_relaxed);
  generated_tokens_.fetch_add(generated, std::memory_order_relaxed);
}

namespace {

void Gauge(std::string* out, const char* name, const char* help, double value,
           const char* type = "gauge") {
  absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n", name, " ",
                  value, "\n");
}

}  // namespace

std::string Metrics::Render(const EngineStats& stats, bool draining) const {
  std::string out;
  absl::StrAppend(&out,
                  "# HELP r1_http_requests_total HTTP responses by endpoint and status code.\n"
                  "# TYPE r1_http_requests_total counter\n");
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [key, count] : responses_) {
      absl::StrAppend(&out, "r1_http_requests_total{endpoint=\"", key.first, "\",status=\"",
                      key.second, "\"} ", count, "\n");
    }
  }
  Gauge(&out, "r1_prompt_tokens_total", "Prompt tokens of admitted requests.",
        static_cast<double>(prompt_tokens_.load()), "counter");
  Gauge(&out, "r1_generated_tokens_total", "Tokens generated for HTTP requests.",
        static_cast<double>(generated_tokens_.load()), "counter");
  Gauge(&out, "r1_client_cancellations_total", "Requests cancelled because the client went away.",
        static_cast<double>(client_cancels_.load()), "counter");
  Gauge(&out, "r1_http_active_requests", "Generation requests in progress.",
        static_cast<double>(active_streams_.load()));
  time_to_first_token.Write("r1_time_to_first_token_seconds",
                            "From request arrival to the first generated token.", &out);
  inter_token_latency.Write("r1_inter_token_latency_seconds",
                            "Between consecutive tokens of one completion.", &out);
  request_duration.Write("r1_request_duration_seconds", "From request arrival to the last token.",
                         &out);
  Gauge(&out, "r1_engine_running_sequences", "Sequences being generated.",
        static_cast<double>(stats.running));
  Gauge(&out, "r1_engine_queue_depth", "Sequences waiting for admission.",
        static_cast<double>(stats.waiting));
  Gauge(&out, "r1_engine_kv_blocks_used", "KV-cache blocks in use.",
        static_cast<double>(stats.kv_blocks_used));
  Gauge(&out, "r1_engine_kv_blocks_total", "KV-cache blocks in all.",
        static_cast<double>(stats.kv_blocks_total));
  Gauge(&out, "r1_engine_batch_size", "Sequences in the last forward step.",
        static_cast<double>(stats.last_batch_size));
  Gauge(&out, "r1_engine_prompt_tokens_total", "Prompt tokens the engine has processed.",
        static_cast<double>(stats.prompt_tokens), "counter");
  Gauge(&out, "r1_engine_generated_tokens_total", "Tokens the engine has generated.",
        static_cast<double>(stats.generated_tokens), "counter");
  Gauge(&out, "r1_executor_rows_chosen_remotely_total",
        "Rows whose token the worker group's rank 0 chose where the logits are.",
        static_cast<double>(stats.rows_chosen_remotely), "counter");
  Gauge(&out, "r1_executor_rows_with_logits_total", "Rows whose logits the worker group sent back.",
        static_cast<double>(stats.rows_with_logits), "counter");
  Gauge(&out, "r1_executor_block_table_entries_sent_total",
        "Block-table entries sent to the worker group (only what changed since the last step).",
        static_cast<double>(stats.block_table_entries_sent), "counter");
  Gauge(&out, "r1_executor_block_table_entries_total", "Block-table entries the steps' tables held.",
        static_cast<double>(stats.block_table_entries), "counter");
  Gauge(&out, "r1_engine_max_context", "Tokens per sequence.",
        static_cast<double>(stats.max_context));
  Gauge(&out, "r1_ready", "1 when the server accepts generation requests.",
        stats.ready && !draining ? 1.0 : 0.0);
  return out;
}

}  // namespace r1::http

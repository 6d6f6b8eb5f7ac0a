// The public HTTP APIs on top of an Engine: OpenAI-compatible (/v1), Ollama-compatible (/api, /)
// and operations (/health, /ready, /metrics). Routing, authentication and limits live here
// (api_server.cc); each API's request parsing and response shapes in openai_api.cc and
// ollama_api.cc. See coordinator/http/README.md for every route and status code.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "coordinator/chat/chat_template.h"
#include "coordinator/engine/engine.h"
#include "coordinator/http/api_common.h"
#include "coordinator/http/generation_job.h"
#include "coordinator/http/http_server.h"
#include "coordinator/http/metrics.h"
#include "coordinator/http/prompt_encoder.h"
#include "coordinator/tokenizer/tokenizer.h"

namespace r1::http {

struct ApiOptions {
  std::string model_dir;   // tokenizer.json, tokenizer_config.json, config.json
  std::string model_name;  // the served name; empty: the model folder's name
  std::string api_key;     // empty: no authentication
  size_t max_messages = 1024;
  size_t max_tools = 128;
  int32_t max_n = 16;
  int64_t max_tokens = 0;  // upper bound of max_tokens / num_predict; 0: the engine's context
  size_t max_stop_strings = 16;
  size_t max_stop_bytes = 1024;
};

class ApiServer {
 public:
  // Loads the tokenizer and chat template from options.model_dir. `engine` must outlive this.
  static absl::StatusOr<std::unique_ptr<ApiServer>> Create(ApiOptions options, Engine* engine);
  ~ApiServer();

  // The HttpServer's handler.
  void Handle(HttpRequest request, std::shared_ptr<HttpExchange> exchange);

  // From now on /ready says 503 and generation requests are refused with 503.
  void SetDraining() { draining_.store(true); }
  // Generation requests whose responses are still being produced.
  int64_t active_requests() const { return active_.load(); }
  Metrics& metrics() { return metrics_; }
  const std::string& model_name() const { return options_.model_name; }
  // The metrics label of a request path: the route, or "other".
  static std::string EndpointLabel(const std::string& path);

 private:
  using Clock = std::chrono::steady_clock;
  ApiServer(ApiOptions options, Engine* engine, std::unique_ptr<Tokenizer> tokenizer,
            std::optional<ChatTemplate> chat_template);

  // --- shared by both APIs ---
  bool Authorized(const HttpRequest& request) const;
  // True when `name` (possibly with an Ollama tag such as ":latest") is the served model.
  bool IsServedModel(const std::string& name) const;
  // OpenAI's 404 model_not_found for a request that names another model.
  ApiError ModelNotFound(const std::string& name) const;
  // The largest max_tokens a request may ask for.
  int64_t MaxTokensLimit() const;
  // Parses OpenAI / Ollama "messages" into ChatMessage; `ollama` selects Ollama's tool-call shape.
  std::optional<ApiError> ParseMessages(const Json& body, bool ollama,
                                        std::vector<ChatMessage>* out) const;
  // Parses "tools" (both APIs use OpenAI's shape) and "tool_choice" (auto / none). Empty `out`:
  // no tools, or tool_choice "none".
  std::optional<ApiError> ParseTools(const Json& body, std::vector<ToolSpec>* out) const;
  std::optional<ApiError> CheckPromptFits(size_t prompt_tokens) const;
  // Starts a job and counts it as active until it is done.
  absl::StatusOr<std::shared_ptr<GenerationJob>> StartJob(
      GenerationRequest request, CompletionText::Options text_options,
      GenerationJob::Callbacks callbacks, Clock::time_point arrival,
      const std::shared_ptr<HttpExchange>& exchange);
  Json ModelDetails() const;

  // --- OpenAI (openai_api.cc) ---
  void OpenAiChat(const HttpRequest& request, std::shared_ptr<HttpExchange> exchange,
                  Clock::time_point arrival);
  void OpenAiCompletions(const HttpRequest& request, std::shared_ptr<HttpExchange> exchange,
                         Clock::time_point arrival);
  void OpenAiModels(const HttpRequest& request, std::shared_ptr<HttpExchange> exchange);
  void OpenAiError(const std::shared_ptr<HttpExchange>& exchange, const ApiError& error);

  // --- Ollama (ollama_api.cc) ---
  void OllamaChat(const HttpRequest& request, std::shared_ptr<HttpExchange> exchange,
                  Clock::time_point arrival, bool generate);
  void OllamaTags(std::shared_ptr<HttpExchange> exchange, bool running);
  void OllamaShow(const HttpRequest& request, std::shared_ptr<HttpExchange> exchange);
  void OllamaError(const std::shared_ptr<HttpExchange>& exchange, const ApiError& error);

  ApiOptions options_;
  Engine* engine_;
  std::unique_ptr<Tokenizer> tokenizer_;
  PromptEncoder encoder_;
  Json model_config_;  // config.json, when the folder has one
  int64_t model_bytes_ = 0;
  int64_t created_unix_ = 0;
  std::string created_rfc3339_;
  Metrics metrics_;
  Canceller canceller_;
  std::atomic<bool> draining_{false};
  std::atomic<int64_t> active_{0};
};

}  // namespace r1::http

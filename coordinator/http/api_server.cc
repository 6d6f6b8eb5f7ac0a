#include "coordinator/http/api_server.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace r1::http {
namespace {

constexpr const char* kRoutes[] = {"/",
                                   "/health",
                                   "/ready",
                                   "/metrics",
                                   "/v1/chat/completions",
                                   "/v1/completions",
                                   "/v1/models",
                                   "/api/chat",
                                   "/api/generate",
                                   "/api/tags",
                                   "/api/show",
                                   "/api/ps",
                                   "/api/version"};

// Compares without an early exit, so the key's bytes cannot be found by timing.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ b[i % std::max<size_t>(b.size(), 1)];
  return diff == 0;
}

}  // namespace

std::string ApiServer::EndpointLabel(const std::string& path) {
  for (const char* route : kRoutes) {
    if (path == route) return route;
  }
  if (absl::StartsWith(path, "/v1/models/")) return "/v1/models";
  return "other";
}

absl::StatusOr<std::unique_ptr<ApiServer>> ApiServer::Create(ApiOptions options, Engine* engine) {
  auto tokenizer = Tokenizer::Load(options.model_dir);
  if (!tokenizer.ok()) return tokenizer.status();
  std::optional<ChatTemplate> chat_template;
  if (!(*tokenizer)->chat_template().empty()) {
    auto t = ChatTemplate::FromJinja((*tokenizer)->chat_template(), (*tokenizer)->bos_token());
    if (t.ok()) {
      chat_template = std::move(*t);
    } else {
      R1_LOG(WARNING) << "chat endpoints disabled: " << t.status().message();
    }
  } else {
    R1_LOG(WARNING) << "chat endpoints disabled: " << options.model_dir
                    << " has no chat_template in tokenizer_config.json";
  }
  if (options.model_name.empty()) {
    std::filesystem::path p(options.model_dir);
    if (p.filename().empty()) p = p.parent_path();
    options.model_name = p.filename().string();
    if (options.model_name.empty()) options.model_name = "r1";
  }
  return std::unique_ptr<ApiServer>(
      new ApiServer(std::move(options), engine, std::move(*tokenizer), std::move(chat_template)));
}

ApiServer::ApiServer(ApiOptions options, Engine* engine, std::unique_ptr<Tokenizer> tokenizer,
                     std::optional<ChatTemplate> chat_template)
    : options_(std::move(options)),
      engine_(engine),
      tokenizer_(std::move(tokenizer)),
      encoder_(*tokenizer_, std::move(chat_template)),
      canceller_(engine) {
  created_unix_ = UnixSeconds();
  created_rfc3339_ = Rfc3339Now();
  std::error_code ec;
  const std::filesystem::path dir(options_.model_dir);
  std::ifstream config(dir / "config.json");
  if (config) {
    std::stringstream text;
    text << config.rdbuf();
    model_config_ = Json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
    if (!model_config_.is_object()) model_config_ = Json::object();
  }
  for (const auto& entry : std::filesystem::directory_iterator(dir, ec)) {
    if (entry.path().extension() == ".safetensors") {
      model_bytes_ += static_cast<int64_t>(entry.file_size(ec));
    }
  }
}

ApiServer::~ApiServer() = default;

bool ApiServer::Authorized(const HttpRequest& request) const {
  if (options_.api_key.empty()) return true;
  const auto header = request.Header("authorization");
  if (!header) return false;
  absl::string_view value = *header;
  if (!absl::StartsWithIgnoreCase(value, "Bearer ")) return false;
  value.remove_prefix(7);
  return ConstantTimeEquals(value, options_.api_key);
}

bool ApiServer::IsServedModel(const std::string& name) const {
  const std::string& served = options_.model_name;
  if (name == served) return true;
  // Ollama names carry a tag; "name:latest" is the default one.
  return name == absl::StrCat(served, ":latest") ||
         (absl::EndsWith(served, ":latest") &&
          name == served.substr(0, served.size() - std::string(":latest").size()));
}

ApiError ApiServer::ModelNotFound(const std::string& name) const {
  ApiError e;
  e.status = 404;
  e.code = "model_not_found";
  e.param = "model";
  e.message = absl::StrCat("the model '", name, "' does not exist; this server serves '", options_.model_name, "'");
  return e;
}

int64_t ApiServer::MaxTokensLimit() const {
  const int64_t context = engine_->max_context();
  return options_.max_tokens > 0 ? std::min(options_.max_tokens, context) : context;
}

std::optional<ApiError> ApiServer::CheckPromptFits(size_t prompt_tokens) const {
  const int64_t context = engine_->max_context();
  if (static_cast<int64_t>(prompt_tokens) >= context) {
    return ApiError::BadRequest(
        absl::StrCat("the prompt is ", prompt_tokens, " tokens; this model's context is ", context,
                     " tokens, and at least one must be left to generate"),
        "messages", "context_length_exceeded");
  }
  return std::nullopt;
}

std::optional<ApiError> ApiServer::ParseTools(const Json& body, std::vector<ToolSpec>* out) const {
  out->clear();
  auto it = body.find("tools");
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_array()) return ApiError::BadRequest("'tools': expected an array", "tools");
  if (it->size() > options_.max_tools) {
    return ApiError::BadRequest(
        absl::StrCat("'tools': at most ", options_.max_tools, " tools, got ", it->size()), "tools");
  }
  std::vector<ToolSpec> tools;
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& t = (*it)[i];
    const std::string where = absl::StrCat("tools[", i, "]");
    if (!t.is_object()) return ApiError::BadRequest(where + ": expected an object", where);
    if (auto type = t.find("type"); type != t.end() && !(type->is_string() && *type == "function")) {
      return ApiError::BadRequest(where + ".type: only \"function\" tools are supported", where);
    }
    auto fn = t.find("function");
    if (fn == t.end() || !fn->is_object()) {
      return ApiError::BadRequest(where + ".function: expected an object", where);
    }
    ToolSpec spec;
    auto name = fn->find("name");
    if (name == fn->end() || !name->is_string() || !IsValidToolName(name->get<std::string>())) {
      return ApiError::BadRequest(
          where + ".function.name: 1 to 64 letters, digits, '_', '-' or '.'", where);
    }
    spec.name = name->get<std::string>();
    for (const ToolSpec& other : tools) {
      if (other.name == spec.name) {
        return ApiError::BadRequest(where + ": a second tool named '" + spec.name + "'", where);
      }
    }
    if (auto d = fn->find("description"); d != fn->end() && !d->is_null()) {
      if (!d->is_string()) return ApiError::BadRequest(where + ".function.description: expected a string", where);
      spec.description = d->get<std::string>();
    }
    if (auto p = fn->find("parameters"); p != fn->end() && !p->is_null()) {
      if (!p->is_object()) return ApiError::BadRequest(where + ".function.parameters: expected an object", where);
      spec.parameters = p->dump(-1, ' ', /*ensure_ascii=*/false, Json::error_handler_t::replace);
    }
    tools.push_back(std::move(spec));
  }
  if (auto choice = body.find("tool_choice"); choice != body.end() && !choice->is_null()) {
    if (choice->is_string() && *choice == "none") return std::nullopt;
    if (!(choice->is_string() && *choice == "auto")) {
      return ApiError::BadRequest(
          "tool_choice: only \"auto\" (the model decides) and \"none\" are supported",
          "tool_choice", "unsupported");
    }
  }
  *out = std::move(tools);
  return std::nullopt;
}

std::optional<ApiError> ApiServer::ParseMessages(const Json& body, bool ollama,
                                                 std::vector<ChatMessage>* out) const {
  auto it = body.find("messages");
  if (it == body.end() || it->is_null()) {
    return ApiError::BadRequest("'messages' is required", "messages");
  }
  if (!it->is_array()) return ApiError::BadRequest("'messages': expected an array", "messages");
  if (it->size() > options_.max_messages) {
    return ApiError::BadRequest(
        absl::StrCat("'messages': at most ", options_.max_messages, " messages, got ", it->size()),
        "messages");
  }
  for (size_t i = 0; i < it->size(); ++i) {
    const Json& m = (*it)[i];
    const std::string where = absl::StrCat("messages[", i, "]");
    if (!m.is_object()) return ApiError::BadRequest(where + ": expected an object", where);
    ChatMessage message;
    auto role = m.find("role");
    if (role == m.end() || !role->is_string()) {
      return ApiError::BadRequest(where + ".role: expected a string", where + ".role");
    }
    message.role = role->get<std::string>();
    if (message.role == "developer") message.role = "system";  // OpenAI's newer name
    if (message.role != "system" && message.role != "user" && message.role != "assistant" &&
        message.role != "tool") {
      return ApiError::BadRequest(
          absl::StrCat(where, ".role: '", message.role,
                       "' is not one of system, developer, user, assistant, tool"),
          where + ".role");
    }
    if (m.contains("images") && !m["images"].is_null() &&
        !(m["images"].is_array() && m["images"].empty())) {
      return ApiError::BadRequest(where + ": images are not supported by this model",
                                  where + ".images");
    }
    auto content = m.find("content");
    if (content == m.end() || content->is_null()) {
      if (message.role != "assistant") {
        return ApiError::BadRequest(where + ".content is required", where + ".content");
      }
    } else if (content->is_string()) {
      message.content = content->get<std::string>();
    } else if (content->is_array() && !ollama) {
      // OpenAI content parts: text only.
      std::string text;
      for (const Json& part : *content) {
        if (!part.is_object() || !part.contains("type") || part["type"] != "text" ||
            !part.contains("text") || !part["text"].is_string()) {
          return ApiError::BadRequest(
              where + ".content: only parts of type 'text' are supported by this model",
              where + ".content");
        }
        text += part["text"].get<std::string>();
      }
      message.content = std::move(text);
    } else {
      return ApiError::BadRequest(where + ".content: expected a string", where + ".content");
    }
    auto calls = m.find("tool_calls");
    if (message.role == "assistant" && calls != m.end() && !calls->is_null()) {
      if (!calls->is_array()) {
        return ApiError::BadRequest(where + ".tool_calls: expected an array",
                                    where + ".tool_calls");
      }
      std::vector<ToolCall> parsed;
      for (const Json& c : *calls) {
        const Json* fn = c.is_object() && c.contains("function") ? &c["function"] : nullptr;
        if (fn == nullptr || !fn->is_object() || !fn->contains("name") ||
            !(*fn)["name"].is_string()) {
          return ApiError::BadRequest(where + ".tool_calls: each needs function.name",
                                      where + ".tool_calls");
        }
        ToolCall call;
        call.name = (*fn)["name"].get<std::string>();
        const Json args = fn->contains("arguments") ? (*fn)["arguments"] : Json::object();
        // OpenAI sends arguments as JSON text, Ollama as an object.
        call.arguments = args.is_string() ? args.get<std::string>() : Dump(args);
        parsed.push_back(std::move(call));
      }
      message.tool_calls = std::move(parsed);
    }
    if (message.role == "assistant" && !message.content && !message.tool_calls) {
      return ApiError::BadRequest(where + ": an assistant message needs content or tool_calls",
                                  where + ".content");
    }
    out->push_back(std::move(message));
  }
  return std::nullopt;
}

absl::StatusOr<std::shared_ptr<GenerationJob>> ApiServer::StartJob(
    GenerationRequest request, CompletionText::Options text_options,
    GenerationJob::Callbacks callbacks, Clock::time_point arrival,
    const std::shared_ptr<HttpExchange>& exchange) {
  active_.fetch_add(1);
  metrics_.StreamOpened();
  auto user_done = std::move(callbacks.on_done);
  callbacks.on_done = [this, user_done](GenerationJob& job) {
    if (user_done) user_done(job);
    metrics_.StreamClosed();
    active_.fetch_sub(1);
  };
  callbacks.post = [exchange](std::function<void()> fn) { exchange->Run(std::move(fn)); };
  auto job = GenerationJob::Start(*engine_, canceller_, metrics_, *tokenizer_, std::move(request),
                                  std::move(text_options), std::move(callbacks), arrival);
  if (!job.ok()) {
    metrics_.StreamClosed();
    active_.fetch_sub(1);
    return job.status();
  }
  std::weak_ptr<GenerationJob> weak = *job;
  exchange->OnClientGone([weak] {
    if (auto j = weak.lock()) j->CancelByClient();
  });
  return job;
}

Json ApiServer::ModelDetails() const {
  const Json& c = model_config_;
  std::string quantization = "BF16";
  if (c.contains("quantization_config") && c["quantization_config"].is_object()) {
    const Json& q = c["quantization_config"];
    if (q.contains("fmt") && q["fmt"].is_string()) quantization = q["fmt"].get<std::string>();
    if (q.contains("quant_method") && q["quant_method"] == "fp8") quantization = "FP8";
  }
  return Json{{"parent_model", ""},    {"format", "safetensors"},
              {"family", "deepseek2"}, {"families", Json::array({"deepseek2"})},
              {"parameter_size", ""},  {"quantization_level", quantization}};
}

void ApiServer::Handle(HttpRequest request, std::shared_ptr<HttpExchange> exchange) {
  const Clock::time_point arrival = Clock::now();
  const std::string& path = request.path;
  const std::string& method = request.method;
  const bool openai = absl::StartsWith(path, "/v1/");
  const bool ollama = absl::StartsWith(path, "/api/");
  auto error = [&](const ApiError& e) {
    if (openai) {
      OpenAiError(exchange, e);
    } else {
      OllamaError(exchange, e);
    }
  };
  auto wrong_method = [&](const char* allowed) {
    ApiError e;
    e.status = 405;
    e.message = absl::StrCat(method, " is not allowed on ", path, "; use ", allowed);
    error(e);
  };
  try {
    if (path == "/" || path == "/health") {
      if (method != "GET" && method != "HEAD") return wrong_method("GET");
      if (path == "/")
        return exchange->Respond(200, "text/plain; charset=utf-8", "Ollama is running");
      return exchange->Respond(200, "application/json", R"({"status":"ok"})");
    }
    if (path == "/ready") {
      const bool ready = engine_->Stats().ready && !draining_.load();
      return exchange->Respond(
          ready ? 200 : 503, "application/json",
          ready ? R"({"status":"ready"})"
                : (draining_.load() ? R"({"status":"draining"})" : R"({"status":"not ready"})"));
    }
    if (path == "/metrics") {
      if (method != "GET") return wrong_method("GET");
      return exchange->Respond(200, "text/plain; version=0.0.4; charset=utf-8",
                               metrics_.Render(engine_->Stats(), draining_.load()));
    }
    if ((openai || ollama) && !Authorized(request)) {
      ApiError e;
      e.status = 401;
      e.code = "invalid_api_key";
      e.message =
          "missing or invalid API key: send it as 'Authorization: Bearer <key>' (the key of "
          "--api-key or R1_API_KEY)";
      return error(e);
    }
    const bool generation = path == "/v1/chat/completions" || path == "/v1/completions" ||
                            path == "/api/chat" || path == "/api/generate";
    if (generation) {
      if (method != "POST") return wrong_method("POST");
      if (draining_.load()) {
        ApiError e;
        e.status = 503;
        e.type = "server_error";
        e.message = "the server is shutting down and takes no new requests";
        return error(e);
      }
      if (path == "/v1/chat/completions") return OpenAiChat(request, exchange, arrival);
      if (path == "/v1/completions") return OpenAiCompletions(request, exchange, arrival);
      return OllamaChat(request, exchange, arrival, /*generate=*/path == "/api/generate");
    }
    if (path == "/v1/models" || absl::StartsWith(path, "/v1/models/")) {
      if (method != "GET") return wrong_method("GET");
      return OpenAiModels(request, exchange);
    }
    if (path == "/api/tags" || path == "/api/ps") {
      if (method != "GET") return wrong_method("GET");
      return OllamaTags(exchange, /*running=*/path == "/api/ps");
    }
    if (path == "/api/show") {
      if (method != "POST") return wrong_method("POST");
      return OllamaShow(request, exchange);
    }
    if (path == "/api/version") {
      if (method != "GET") return wrong_method("GET");
      // The Ollama API version whose features this server implements (thinking: 0.9).
      return exchange->Respond(200, "application/json", R"({"version":"0.9.0"})");
    }
    ApiError e;
    e.status = 404;
    e.code = "not_found";
    e.message = absl::StrCat("no route ", method, " ", path);
    return error(e);
  } catch (const std::exception& ex) {
    // A bug of ours (e.g. an unchecked JSON access); the client gets a 500, the server goes on.
    R1_LOG(ERROR) << method << " " << path << ": unexpected exception: " << ex.what();
    ApiError e;
    e.status = 500;
    e.type = "server_error";
    e.message = "internal error";
    error(e);
  }
}

}  // namespace r1::http

// Ollama-compatible endpoints: /api/chat, /api/generate (NDJSON streaming by default), /api/tags,
// /api/ps, /api/show. R1's reasoning is returned in `thinking` (message.thinking on /api/chat).
// `think`: unset or true → reasoning in `thinking`; false → the prompt closes the reasoning block
// ("<think>\n</think>\n\n") so the model answers at once.
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "coordinator/http/api_server.h"

namespace r1::http {
namespace {

// Ollama's tool_calls: arguments as a JSON object (a model's text that is not an object is kept
// as a string under "arguments", so nothing is lost).
Json OllamaToolCalls(const std::vector<ToolCall>& calls) {
  Json out = Json::array();
  for (const ToolCall& c : calls) {
    Json args = Json::parse(c.arguments, nullptr, /*allow_exceptions=*/false);
    if (args.is_discarded() || !args.is_object()) args = c.arguments;
    out.push_back(Json{{"function", {{"name", c.name}, {"arguments", std::move(args)}}}});
  }
  return out;
}


struct OllamaOptions {
  GenerationRequest request;
  std::vector<std::string> stop;
  std::optional<int64_t> num_ctx, num_predict;
};

std::optional<ApiError> ReadOptions(const Json& body, size_t max_stop, size_t max_stop_bytes,
                                    OllamaOptions* o) {
  auto it = body.find("options");
  if (it == body.end() || it->is_null()) return std::nullopt;
  if (!it->is_object()) return ApiError::BadRequest("'options': expected an object", "options");
  FieldReader f{*it, std::nullopt, "options."};
  EngineSampling& s = o->request.sampling;
  o->num_ctx = f.Int("num_ctx", 1, INT32_MAX);
  o->num_predict = f.Int("num_predict", -2, INT32_MAX);
  if (auto v = f.Number("temperature", 0.0, 100.0)) s.temperature = static_cast<float>(*v);
  if (auto v = f.Number("top_p", 0.0, 1.0)) s.top_p = *v > 0 ? static_cast<float>(*v) : 1.0f;
  if (auto v = f.Int("top_k", 0, 1'000'000)) s.top_k = *v;
  if (auto v = f.Number("min_p", 0.0, 1.0)) s.min_p = static_cast<float>(*v);
  if (auto v = f.Int("seed", INT64_MIN, INT64_MAX)) s.seed = static_cast<uint64_t>(*v);
  if (auto v = f.Number("repeat_penalty", 0.0, 100.0)) {
    s.repetition_penalty = *v > 0 ? static_cast<float>(*v) : 1.0f;
  }
  if (auto v = f.Number("presence_penalty", -100.0, 100.0))
    s.presence_penalty = static_cast<float>(*v);
  if (auto v = f.Number("frequency_penalty", -100.0, 100.0)) {
    s.frequency_penalty = static_cast<float>(*v);
  }
  if (auto v = f.Strings("stop", max_stop, max_stop_bytes)) o->stop = std::move(*v);
  return f.error;
}

std::string Digest(absl::string_view text) {
  uint64_t h[4] = {1469598103934665603ull, 1099511628211ull, 0x9e3779b97f4a7c15ull, 7};
  for (unsigned char c : text) {
    for (uint64_t& x : h) x = (x ^ c) * 1099511628211ull + 0x9e3779b97f4a7c15ull;
  }
  return absl::StrFormat("%016x%016x%016x%016x", h[0], h[1], h[2], h[3]);
}

}  // namespace

void ApiServer::OllamaError(const std::shared_ptr<HttpExchange>& exchange, const ApiError& error) {
  exchange->Respond(error.status, "application/json", OllamaErrorBody(error));
}

void ApiServer::OllamaChat(const HttpRequest& request, std::shared_ptr<HttpExchange> exchange,
                           Clock::time_point arrival, bool generate) {
  Json body;
  if (ApiError e = ParseJsonBody(request.body, &body); e.status != 0)
    return OllamaError(exchange, e);
  auto fail = [&](const ApiError& e) { OllamaError(exchange, e); };
  FieldReader f{body, std::nullopt, ""};
  const auto model = f.String("model");
  if (f.error) return fail(*f.error);
  if (!model || model->empty()) return fail(ApiError::BadRequest("model is required", "model"));
  if (!IsServedModel(*model)) {
    ApiError e;
    e.status = 404;
    e.message = absl::StrCat("model '", *model, "' not found; this server serves '",
                             options_.model_name, "'");
    return fail(e);
  }
  const bool stream = f.Bool("stream").value_or(true);
  // `think`: a bool, or a level ("low", "medium", "high") that R1 treats as true.
  std::optional<bool> think;
  if (auto it = body.find("think"); it != body.end() && !it->is_null()) {
    if (it->is_boolean()) {
      think = it->get<bool>();
    } else if (it->is_string()) {
      think = true;
    } else {
      return fail(ApiError::BadRequest("'think': expected a boolean", "think"));
    }
  }
  if (auto it = body.find("format");
      it != body.end() && !it->is_null() && !(it->is_string() && it->get<std::string>().empty())) {
    return fail(ApiError::BadRequest("'format' (structured output) is not supported", "format"));
  }
  std::vector<ToolSpec> tools;
  if (generate) {
    if (auto it = body.find("tools"); it != body.end() && !it->is_null()) {
      return fail(ApiError::BadRequest("'tools' go with /api/chat", "tools"));
    }
  } else if (auto e = ParseTools(body, &tools)) {
    return fail(*e);
  }
  OllamaOptions o;
  if (auto e = ReadOptions(body, options_.max_stop_strings, options_.max_stop_bytes, &o)) {
    return fail(*e);
  }
  const bool thinking = think.value_or(true) && encoder_.starts_in_reasoning();
  const std::string assistant_prefix =
      encoder_.starts_in_reasoning() && !thinking ? "</think>\n\n" : "";

  std::vector<int32_t> prompt;
  bool load_only = false;
  if (generate) {
    auto text = f.String("prompt");
    auto system = f.String("system");
    const bool raw = f.Bool("raw").value_or(false);
    if (auto suffix = f.String("suffix"); suffix && !suffix->empty()) {
      return fail(ApiError::BadRequest("'suffix' is not supported", "suffix"));
    }
    if (auto it = body.find("images"); it != body.end() && it->is_array() && !it->empty()) {
      return fail(ApiError::BadRequest("images are not supported by this model", "images"));
    }
    if (auto it = body.find("context"); it != body.end() && it->is_array() && !it->empty()) {
      return fail(ApiError::BadRequest("'context' is not supported; use /api/chat", "context"));
    }
    if (f.error) return fail(*f.error);
    if (!text || text->empty()) {
      load_only = true;
    } else if (raw) {
      prompt = encoder_.EncodeRaw(*text, /*add_bos=*/true);
    } else {
      std::vector<ChatMessage> messages;
      if (system) messages.push_back(ChatMessage{"system", *system, std::nullopt});
      messages.push_back(ChatMessage{"user", *text, std::nullopt});
      auto ids = encoder_.EncodeChat(messages, true, assistant_prefix);
      if (!ids.ok()) return fail(ErrorFromStatus(ids.status()));
      prompt = std::move(*ids);
    }
  } else {
    std::vector<ChatMessage> messages;
    if (auto e = ParseMessages(body, /*ollama=*/true, &messages)) return fail(*e);
    if (messages.empty()) {
      load_only = true;
    } else {
      auto ids = encoder_.EncodeChat(messages, true, assistant_prefix, tools);
      if (!ids.ok()) return fail(ErrorFromStatus(ids.status()));
      prompt = std::move(*ids);
    }
  }
  const std::string model_name = *model;
  if (load_only) {
    // Ollama answers an empty request by loading the model: say it is loaded.
    Json done = {{"model", model_name},
                 {"created_at", Rfc3339Now()},
                 {"done", true},
                 {"done_reason", "load"}};
    if (generate) {
      done["response"] = "";
    } else {
      done["message"] = {{"role", "assistant"}, {"content", ""}};
    }
    return exchange->Respond(200, "application/json", Dump(done));
  }
  const int64_t context =
      o.num_ctx ? std::min(*o.num_ctx, engine_->max_context()) : engine_->max_context();
  if (static_cast<int64_t>(prompt.size()) >= context) {
    return fail(ApiError::BadRequest(
        absl::StrCat("the prompt is ", prompt.size(), " tokens; the context is ", context,
                     " tokens (num_ctx or the server's --max-context)"),
        "messages"));
  }
  // num_predict: > 0 a limit (clipped to the context, as Ollama does), -1 or -2 none.
  const int64_t room = std::min(context - static_cast<int64_t>(prompt.size()), MaxTokensLimit());
  o.request.max_new_tokens =
      o.num_predict && *o.num_predict > 0 ? std::min(*o.num_predict, room) : room;
  if (o.num_predict && *o.num_predict == 0) {
    return fail(ApiError::BadRequest("'options.num_predict' must not be 0", "options"));
  }
  o.request.prompt = std::move(prompt);

  CompletionText::Options text;
  text.stop = o.stop;
  text.split_reasoning = true;
  text.starts_in_reasoning = thinking;
  text.parse_tool_calls = !tools.empty();

  auto fill_final = [](GenerationJob& job, Json* out) {
    const CompletionResult& r = job.results()[0];
    (*out)["done"] = true;
    (*out)["done_reason"] = OllamaDoneReason(r.finish);
    (*out)["total_duration"] = job.total_ns();
    (*out)["load_duration"] = 0;
    (*out)["prompt_eval_count"] = job.prompt_tokens();
    (*out)["prompt_eval_duration"] = job.prompt_eval_ns();
    (*out)["eval_count"] = r.completion_tokens;
    (*out)["eval_duration"] = job.eval_ns();
  };
  auto piece = [model_name, generate](const std::string& content, const std::string& reasoning,
                                      const std::vector<ToolCall>& calls = {}) {
    Json out = {{"model", model_name}, {"created_at", Rfc3339Now()}};
    if (generate) {
      out["response"] = content;
      if (!reasoning.empty()) out["thinking"] = reasoning;
    } else {
      out["message"] = {{"role", "assistant"}, {"content", content}};
      if (!reasoning.empty()) out["message"]["thinking"] = reasoning;
      if (!calls.empty()) out["message"]["tool_calls"] = OllamaToolCalls(calls);
    }
    out["done"] = false;
    return out;
  };
  GenerationJob::Callbacks callbacks;
  if (stream) {
    callbacks.on_submitted = [exchange](GenerationJob&) {
      exchange->StartStream(200, "application/x-ndjson");
    };
    callbacks.on_delta = [exchange, piece](GenerationJob&, int, const TextDelta& d) {
      if (d.finished && d.finish == FinishReason::kError) {
        exchange->Write(Dump(Json{{"error", std::string(d.error.message())}}) + "\n");
        return;
      }
      if (d.content.empty() && d.reasoning.empty() && d.tool_calls.empty()) return;
      exchange->Write(Dump(piece(d.content, d.reasoning, d.tool_calls)) + "\n");
    };
    callbacks.on_done = [exchange, piece, fill_final](GenerationJob& job) {
      if (job.results()[0].finish != FinishReason::kError) {
        Json last = piece("", "");
        fill_final(job, &last);
        exchange->Write(Dump(last) + "\n");
      }
      exchange->EndStream();
    };
  } else {
    callbacks.on_done = [exchange, piece, fill_final](GenerationJob& job) {
      const CompletionResult& r = job.results()[0];
      if (r.finish == FinishReason::kError) {
        ApiError e = ErrorFromStatus(r.error);
        if (e.status < 500) e.status = 500;
        exchange->Respond(e.status, "application/json", OllamaErrorBody(e));
        return;
      }
      Json out = piece(r.content, r.reasoning, r.tool_calls);
      fill_final(job, &out);
      exchange->Respond(200, "application/json", Dump(out));
    };
  }
  auto job =
      StartJob(std::move(o.request), std::move(text), std::move(callbacks), arrival, exchange);
  if (!job.ok()) return fail(ErrorFromStatus(job.status()));
}

void ApiServer::OllamaTags(std::shared_ptr<HttpExchange> exchange, bool running) {
  Json model = {{"name", options_.model_name},
                {"model", options_.model_name},
                {"size", model_bytes_},
                {"digest", Digest(options_.model_dir + options_.model_name)},
                {"details", ModelDetails()}};
  if (running) {
    model["expires_at"] = "2318-01-01T00:00:00Z";  // loaded for the server's lifetime
    model["size_vram"] = 0;
    model["context_length"] = engine_->max_context();
  } else {
    model["modified_at"] = created_rfc3339_;
  }
  exchange->Respond(200, "application/json", Dump(Json{{"models", Json::array({model})}}));
}

void ApiServer::OllamaShow(const HttpRequest& request, std::shared_ptr<HttpExchange> exchange) {
  Json body;
  if (ApiError e = ParseJsonBody(request.body, &body); e.status != 0)
    return OllamaError(exchange, e);
  FieldReader f{body, std::nullopt, ""};
  auto name = f.String("model");
  if (!name) name = f.String("name");
  if (f.error) return OllamaError(exchange, *f.error);
  if (!name || !IsServedModel(*name)) {
    ApiError e;
    e.status = 404;
    e.message = absl::StrCat("model '", name.value_or(""), "' not found");
    return OllamaError(exchange, e);
  }
  const Json& c = model_config_;
  Json info = {{"general.architecture", "deepseek2"},
               {"deepseek2.context_length", engine_->max_context()}};
  for (const auto& [key, ollama_key] : std::vector<std::pair<const char*, const char*>>{
           {"hidden_size", "embedding_length"},
           {"num_hidden_layers", "block_count"},
           {"num_attention_heads", "attention.head_count"},
           {"n_routed_experts", "expert_count"},
           {"num_experts_per_tok", "expert_used_count"},
           {"vocab_size", "vocab_size"}}) {
    if (c.contains(key) && c[key].is_number())
      info[std::string("deepseek2.") + ollama_key] = c[key];
  }
  const Json out = {
      {"modelfile", absl::StrCat("# served by r1serve from ", options_.model_dir, "\nFROM ",
                                 options_.model_dir, "\n")},
      {"parameters", "temperature 0.6\ntop_p 0.95"},
      {"template", tokenizer_->chat_template()},
      {"details", ModelDetails()},
      {"model_info", info},
      {"capabilities", encoder_.chat_template() ? Json::array({"completion", "thinking"})
                                                : Json::array({"completion"})},
      {"modified_at", created_rfc3339_}};
  exchange->Respond(200, "application/json", Dump(out));
}

}  // namespace r1::http

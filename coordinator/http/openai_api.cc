// OpenAI-compatible endpoints: /v1/chat/completions, /v1/completions, /v1/models.
// R1's reasoning is returned as `reasoning_content` (DeepSeek's own API field) beside `content`.
#include "absl/strings/str_cat.h"
#include "coordinator/http/api_server.h"

namespace r1::http {
namespace {

// OpenAI's tool_calls array (arguments as the JSON text the model wrote).
Json OpenAiToolCalls(const std::vector<ToolCall>& calls) {
  Json out = Json::array();
  for (const ToolCall& c : calls) {
    out.push_back(Json{{"id", RandomId("call_")},
                       {"type", "function"},
                       {"function", {{"name", c.name}, {"arguments", c.arguments}}}});
  }
  return out;
}

// A completion that ended normally after calling tools finishes with "tool_calls".
const char* OpenAiChatFinishReason(FinishReason reason, bool called_tools) {
  return called_tools && reason == FinishReason::kStop ? "tool_calls" : OpenAiFinishReason(reason);
}


// What both OpenAI generation endpoints read besides the prompt.
struct OpenAiParams {
  GenerationRequest request;
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;
  bool logprobs = false;
  int32_t top_logprobs = 0;
};

std::optional<ApiError> ReadSampling(FieldReader& f, const Json& body, int32_t max_n,
                                     size_t max_stop, size_t max_stop_bytes, OpenAiParams* p) {
  EngineSampling& s = p->request.sampling;  // R1's defaults (0.6 / 0.95) unless given
  if (auto v = f.Number("temperature", 0.0, 2.0)) s.temperature = static_cast<float>(*v);
  if (auto v = f.Number("top_p", 0.0, 1.0)) {
    if (*v <= 0.0) f.Fail("top_p", "must be greater than 0");
    s.top_p = static_cast<float>(*v);
  }
  if (auto v = f.Int("top_k", -1, 1'000'000)) s.top_k = std::max<int64_t>(*v, 0);  // vLLM's extra
  if (auto v = f.Number("min_p", 0.0, 1.0)) s.min_p = static_cast<float>(*v);
  if (auto v = f.Number("presence_penalty", -2.0, 2.0)) s.presence_penalty = static_cast<float>(*v);
  if (auto v = f.Number("frequency_penalty", -2.0, 2.0)) {
    s.frequency_penalty = static_cast<float>(*v);
  }
  if (auto v = f.Number("repetition_penalty", 0.01, 10.0)) {
    s.repetition_penalty = static_cast<float>(*v);
  }
  if (auto v = f.Int("seed", INT64_MIN, INT64_MAX)) s.seed = static_cast<uint64_t>(*v);
  if (auto v = f.Int("n", 1, max_n)) p->request.n = static_cast<int32_t>(*v);
  if (auto v = f.Bool("stream")) p->stream = *v;
  if (auto v = f.Strings("stop", max_stop, max_stop_bytes)) p->stop = std::move(*v);
  if (auto it = body.find("stream_options"); it != body.end() && !it->is_null()) {
    if (!it->is_object()) {
      f.Fail("stream_options", "expected an object");
    } else {
      FieldReader so{*it, std::nullopt, "stream_options."};
      if (auto v = so.Bool("include_usage")) p->include_usage = *v;
      if (so.error && !f.error) f.error = so.error;
    }
  }
  if (auto v = f.Bool("ignore_eos")) p->request.ignore_eos = *v;
  return f.error;
}

// max_tokens / max_completion_tokens: 1 … limit, and the prompt plus it must fit the context.
std::optional<ApiError> ReadMaxTokens(FieldReader& f, int64_t limit, int64_t context,
                                      size_t prompt_tokens, GenerationRequest* request) {
  for (const char* key : {"max_completion_tokens", "max_tokens"}) {
    if (auto v = f.Int(key, 1, limit)) {
      if (static_cast<int64_t>(prompt_tokens) + *v > context) {
        return ApiError::BadRequest(
            absl::StrCat("'", key, "' is ", *v, " but the prompt is ", prompt_tokens,
                         " tokens and the context is ", context, "; at most ",
                         context - static_cast<int64_t>(prompt_tokens), " can be generated"),
            key, "context_length_exceeded");
      }
      request->max_new_tokens = *v;
      return std::nullopt;
    }
    if (f.error) return f.error;
  }
  return std::nullopt;
}

Json LogprobEntry(const TokenLogprobInfo& t, bool with_top) {
  Json bytes = Json::array();
  for (unsigned char c : t.bytes) bytes.push_back(static_cast<int>(c));
  Json e = {{"token", t.text}, {"logprob", t.logprob}, {"bytes", bytes}};
  if (with_top) {
    Json top = Json::array();
    for (const TokenLogprobInfo& alt : t.top) top.push_back(LogprobEntry(alt, false));
    e["top_logprobs"] = std::move(top);
  }
  return e;
}

Json ChatLogprobs(const std::vector<TokenLogprobInfo>& tokens) {
  Json content = Json::array();
  for (const TokenLogprobInfo& t : tokens) content.push_back(LogprobEntry(t, true));
  return Json{{"content", std::move(content)}, {"refusal", nullptr}};
}

// The legacy completions format: parallel arrays.
Json CompletionLogprobs(const std::vector<TokenLogprobInfo>& tokens, size_t* text_offset) {
  Json out = {{"tokens", Json::array()},
              {"token_logprobs", Json::array()},
              {"top_logprobs", Json::array()},
              {"text_offset", Json::array()}};
  for (const TokenLogprobInfo& t : tokens) {
    out["tokens"].push_back(t.text);
    out["token_logprobs"].push_back(t.logprob);
    Json top = Json::object();
    for (const TokenLogprobInfo& alt : t.top) top[alt.text] = alt.logprob;
    out["top_logprobs"].push_back(std::move(top));
    out["text_offset"].push_back(*text_offset);
    *text_offset += t.text.size();
  }
  return out;
}

Json Usage(const GenerationJob& job) {
  return Json{{"prompt_tokens", job.prompt_tokens()},
              {"completion_tokens", job.completion_tokens()},
              {"total_tokens", job.prompt_tokens() + job.completion_tokens()},
              {"completion_tokens_details", {{"reasoning_tokens", job.reasoning_tokens()}}}};
}

std::string Sse(const Json& json) { return absl::StrCat("data: ", Dump(json), "\n\n"); }

// A stream's end: the usage chunk when the request asked for it (`envelope` wraps choices in the
// stream's chunk object), then [DONE].
template <typename Envelope>
std::function<void(GenerationJob&)> StreamDone(std::shared_ptr<HttpExchange> exchange, Envelope envelope,
                                              bool include_usage) {
  return [exchange = std::move(exchange), envelope = std::move(envelope), include_usage](GenerationJob& job) {
    std::string out;
    if (include_usage) {
      Json last = envelope(Json::array());
      last["usage"] = Usage(job);
      out += Sse(last);
    }
    out += "data: [DONE]\n\n";
    exchange->Write(std::move(out));
    exchange->EndStream();
  };
}

// The first error among the completions, if any failed.
const absl::Status* FirstError(const GenerationJob& job) {
  for (const CompletionResult& r : job.results()) {
    if (r.finish == FinishReason::kError) return &r.error;
  }
  return nullptr;
}

}  // namespace

void ApiServer::OpenAiError(const std::shared_ptr<HttpExchange>& exchange, const ApiError& error) {
  exchange->Respond(error.status, "application/json", OpenAiErrorBody(error));
}

void ApiServer::OpenAiModels(const HttpRequest& request, std::shared_ptr<HttpExchange> exchange) {
  const Json model = {{"id", options_.model_name},
                      {"object", "model"},
                      {"created", created_unix_},
                      {"owned_by", "r1serve"},
                      {"max_model_len", engine_->max_context()}};
  if (request.path == "/v1/models") {
    return exchange->Respond(200, "application/json",
                             Dump(Json{{"object", "list"}, {"data", Json::array({model})}}));
  }
  const std::string id = request.path.substr(std::string("/v1/models/").size());
  if (!IsServedModel(id)) {
    return OpenAiError(exchange, ModelNotFound(id));
  }
  exchange->Respond(200, "application/json", Dump(model));
}

void ApiServer::OpenAiChat(const HttpRequest& request, std::shared_ptr<HttpExchange> exchange,
                           Clock::time_point arrival) {
  Json body;
  if (ApiError e = ParseJsonBody(request.body, &body); e.status != 0)
    return OpenAiError(exchange, e);
  FieldReader f{body, std::nullopt, ""};
  auto fail = [&](const ApiError& e) { OpenAiError(exchange, e); };
  if (auto model = f.String("model"); model && !IsServedModel(*model)) {
    return fail(ModelNotFound(*model));
  }
  if (f.error) return fail(*f.error);
  std::vector<ChatMessage> messages;
  if (auto e = ParseMessages(body, /*ollama=*/false, &messages)) return fail(*e);
  if (messages.empty()) {
    return fail(ApiError::BadRequest("'messages' must hold at least one message", "messages"));
  }
  std::vector<ToolSpec> tools;
  if (auto e = ParseTools(body, &tools)) return fail(*e);
  if (auto rf = body.find("response_format");
      rf != body.end() && rf->is_object() && rf->value("type", "text") != "text") {
    return fail(ApiError::BadRequest("response_format other than 'text' is not supported",
                                     "response_format", "unsupported"));
  }
  OpenAiParams p;
  if (auto e = ReadSampling(f, body, options_.max_n, options_.max_stop_strings,
                            options_.max_stop_bytes, &p)) {
    return fail(*e);
  }
  if (auto v = f.Bool("logprobs")) p.logprobs = *v;
  if (auto v = f.Int("top_logprobs", 0, 20)) p.top_logprobs = static_cast<int32_t>(*v);
  if (f.error) return fail(*f.error);
  if (p.top_logprobs > 0 && !p.logprobs) {
    return fail(ApiError::BadRequest("'top_logprobs' needs 'logprobs': true", "top_logprobs"));
  }
  auto prompt = encoder_.EncodeChat(messages, /*add_generation_prompt=*/true, "", tools);
  if (!prompt.ok()) return fail(ErrorFromStatus(prompt.status()));
  if (auto e = CheckPromptFits(prompt->size())) return fail(*e);
  if (auto e =
          ReadMaxTokens(f, MaxTokensLimit(), engine_->max_context(), prompt->size(), &p.request)) {
    return fail(*e);
  }
  p.request.prompt = std::move(*prompt);
  p.request.sampling.logprobs = p.logprobs;
  p.request.sampling.top_logprobs = p.top_logprobs;

  CompletionText::Options text;
  text.stop = p.stop;
  text.split_reasoning = true;
  text.starts_in_reasoning = encoder_.starts_in_reasoning();
  text.logprobs = p.logprobs;
  text.parse_tool_calls = !tools.empty();

  struct Shared {
    std::string id = RandomId("chatcmpl-");
    int64_t created = UnixSeconds();
  };
  auto shared = std::make_shared<Shared>();
  const std::string model = options_.model_name;
  const int32_t n = p.request.n;
  const bool logprobs = p.logprobs;
  GenerationJob::Callbacks callbacks;
  auto chunk = [shared, model](Json choices) {
    return Json{
        {"id", shared->id}, {"object", "chat.completion.chunk"}, {"created", shared->created},
        {"model", model},   {"system_fingerprint", "r1serve"},   {"choices", std::move(choices)}};
  };
  if (p.stream) {
    callbacks.on_submitted = [exchange, chunk, n](GenerationJob&) {
      exchange->StartStream(200, "text/event-stream");
      std::string out;
      for (int32_t i = 0; i < n; ++i) {
        out += Sse(chunk(Json::array({Json{{"index", i},
                                           {"delta", {{"role", "assistant"}, {"content", ""}}},
                                           {"logprobs", nullptr},
                                           {"finish_reason", nullptr}}})));
      }
      exchange->Write(std::move(out));
    };
    // Tool calls streamed so far, per completion (their index in the delta).
    auto tool_count = std::make_shared<std::vector<int>>(n, 0);
    // The chunk around one choice's fields, for the per-token fast path below: `head` ends with
    // the choice's "index": and `tail` closes the choice and holds the envelope's other fields.
    const std::string frame = Sse(chunk(Json::array({Json{{"index", 0}}})));
    const size_t at = frame.find("\"index\":0}");
    std::string head = frame.substr(0, at + 8), tail = frame.substr(at + 9);
    callbacks.on_delta = [exchange, chunk, logprobs, tool_count, head = std::move(head),
                          tail = std::move(tail)](GenerationJob&, int index, const TextDelta& d) {
      if (d.finished && d.finish == FinishReason::kError) {
        exchange->Write(Sse(OpenAiErrorJson(ErrorFromStatus(d.error))));
        return;
      }
      // The common case, a piece of reasoning or of the answer, written without building a Json.
      if (!d.finished && d.logprobs.empty() && d.tool_calls.empty() &&
          (d.reasoning.empty() != d.content.empty())) {
        std::string out = head;
        absl::StrAppend(&out, index, d.content.empty() ? ",\"delta\":{\"reasoning_content\":"
                                                       : ",\"delta\":{\"content\":");
        if (AppendJsonString(d.content.empty() ? d.reasoning : d.content, &out)) {
          out += "},\"logprobs\":null,\"finish_reason\":null";
          out += tail;
          exchange->Write(std::move(out));
          return;
        }
      }
      Json delta = Json::object();
      if (!d.reasoning.empty()) delta["reasoning_content"] = d.reasoning;
      if (!d.content.empty()) delta["content"] = d.content;
      if (!d.tool_calls.empty()) {
        Json calls = OpenAiToolCalls(d.tool_calls);
        for (size_t k = 0; k < calls.size(); ++k) calls[k]["index"] = (*tool_count)[index]++;
        delta["tool_calls"] = std::move(calls);
      }
      if (delta.empty() && !d.finished && d.logprobs.empty()) return;
      const bool called = (*tool_count)[index] > 0;
      Json choice = {
          {"index", index},
          {"delta", std::move(delta)},
          {"logprobs", logprobs && !d.logprobs.empty() ? ChatLogprobs(d.logprobs) : Json(nullptr)},
          {"finish_reason",
           d.finished ? Json(OpenAiChatFinishReason(d.finish, called)) : Json(nullptr)}};
      exchange->Write(Sse(chunk(Json::array({std::move(choice)}))));
    };
    callbacks.on_done = StreamDone(exchange, chunk, p.include_usage);
  } else {
    callbacks.on_done = [exchange, shared, model, logprobs](GenerationJob& job) {
      if (const absl::Status* error = FirstError(job)) {
        ApiError e = ErrorFromStatus(*error);
        if (e.status < 500) e.status = 500;
        exchange->Respond(e.status, "application/json", OpenAiErrorBody(e));
        return;
      }
      Json choices = Json::array();
      for (size_t i = 0; i < job.results().size(); ++i) {
        const CompletionResult& r = job.results()[i];
        Json message = {{"role", "assistant"}, {"content", r.content}};
        if (!r.reasoning.empty()) message["reasoning_content"] = r.reasoning;
        if (!r.tool_calls.empty()) {
          message["tool_calls"] = OpenAiToolCalls(r.tool_calls);
          if (r.content.empty()) message["content"] = nullptr;
        }
        choices.push_back(
            Json{{"index", i},
                 {"message", std::move(message)},
                 {"logprobs", logprobs ? ChatLogprobs(r.logprobs) : Json(nullptr)},
                 {"finish_reason", OpenAiChatFinishReason(r.finish, !r.tool_calls.empty())}});
      }
      const Json response = {
          {"id", shared->id},   {"object", "chat.completion"},     {"created", shared->created},
          {"model", model},     {"system_fingerprint", "r1serve"}, {"choices", std::move(choices)},
          {"usage", Usage(job)}};
      exchange->Respond(200, "application/json", Dump(response));
    };
  }
  auto job =
      StartJob(std::move(p.request), std::move(text), std::move(callbacks), arrival, exchange);
  if (!job.ok()) return fail(ErrorFromStatus(job.status()));
}

void ApiServer::OpenAiCompletions(const HttpRequest& request,
                                  std::shared_ptr<HttpExchange> exchange,
                                  Clock::time_point arrival) {
  Json body;
  if (ApiError e = ParseJsonBody(request.body, &body); e.status != 0)
    return OpenAiError(exchange, e);
  FieldReader f{body, std::nullopt, ""};
  auto fail = [&](const ApiError& e) { OpenAiError(exchange, e); };
  if (auto model = f.String("model"); model && !IsServedModel(*model)) {
    return fail(ModelNotFound(*model));
  }
  if (f.error) return fail(*f.error);
  // prompt: a string, or [string], or token ids, or [[ids]]; one prompt per request.
  auto it = body.find("prompt");
  if (it == body.end() || it->is_null())
    return fail(ApiError::BadRequest("'prompt' is required", "prompt"));
  Json prompt_json = *it;
  if (prompt_json.is_array() && prompt_json.size() == 1 &&
      (prompt_json[0].is_string() || prompt_json[0].is_array())) {
    prompt_json = prompt_json[0];
  }
  std::vector<int32_t> prompt;
  if (prompt_json.is_string()) {
    prompt = encoder_.EncodeRaw(prompt_json.get<std::string>(), /*add_bos=*/true);
  } else if (prompt_json.is_array() && !prompt_json.empty()) {
    for (const Json& id : prompt_json) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
          id.get<int64_t>() >= tokenizer_->id_end()) {
        return fail(
            ApiError::BadRequest(absl::StrCat("'prompt': expected a string or token ids in [0, ",
                                              tokenizer_->id_end(), ") (one prompt per request)"),
                                 "prompt"));
      }
      prompt.push_back(static_cast<int32_t>(id.get<int64_t>()));
    }
  } else {
    return fail(
        ApiError::BadRequest("'prompt': expected a non-empty string or token ids", "prompt"));
  }
  if (prompt.empty()) return fail(ApiError::BadRequest("'prompt' is empty", "prompt"));
  if (auto v = f.Bool("echo"); v && *v) {
    return fail(ApiError::BadRequest("'echo' is not supported", "echo", "unsupported"));
  }
  if (auto v = f.String("suffix"); v && !v->empty()) {
    return fail(ApiError::BadRequest("'suffix' is not supported", "suffix", "unsupported"));
  }
  OpenAiParams p;
  if (auto e = ReadSampling(f, body, options_.max_n, options_.max_stop_strings,
                            options_.max_stop_bytes, &p)) {
    return fail(*e);
  }
  if (auto v = f.Int("best_of", 1, options_.max_n); v && *v != p.request.n) {
    return fail(ApiError::BadRequest("'best_of' other than n is not supported", "best_of"));
  }
  if (auto v = f.Int("logprobs", 0, 20)) {
    p.logprobs = true;
    p.top_logprobs = static_cast<int32_t>(*v);
  }
  if (f.error) return fail(*f.error);
  if (auto e = CheckPromptFits(prompt.size())) {
    ApiError with_param = *e;
    with_param.param = "prompt";
    return fail(with_param);
  }
  // The legacy API's default is 16 tokens.
  p.request.max_new_tokens = std::min<int64_t>(16, engine_->max_context() - prompt.size());
  if (auto e =
          ReadMaxTokens(f, MaxTokensLimit(), engine_->max_context(), prompt.size(), &p.request)) {
    return fail(*e);
  }
  p.request.prompt = std::move(prompt);
  p.request.sampling.logprobs = p.logprobs;
  p.request.sampling.top_logprobs = p.top_logprobs;

  CompletionText::Options text;
  text.stop = p.stop;
  text.split_reasoning = false;
  text.logprobs = p.logprobs;
  struct Shared {
    std::string id = RandomId("cmpl-");
    int64_t created = UnixSeconds();
    std::vector<size_t> offsets;
  };
  auto shared = std::make_shared<Shared>();
  shared->offsets.assign(p.request.n, 0);
  const std::string model = options_.model_name;
  const bool logprobs = p.logprobs;
  auto envelope = [shared, model](Json choices) {
    return Json{
        {"id", shared->id}, {"object", "text_completion"},     {"created", shared->created},
        {"model", model},   {"system_fingerprint", "r1serve"}, {"choices", std::move(choices)}};
  };
  GenerationJob::Callbacks callbacks;
  if (p.stream) {
    callbacks.on_submitted = [exchange](GenerationJob&) {
      exchange->StartStream(200, "text/event-stream");
    };
    callbacks.on_delta = [exchange, envelope, shared, logprobs](GenerationJob&, int index,
                                                                const TextDelta& d) {
      if (d.finished && d.finish == FinishReason::kError) {
        exchange->Write(Sse(OpenAiErrorJson(ErrorFromStatus(d.error))));
        return;
      }
      Json choice = {
          {"index", index},
          {"text", d.content},
          {"logprobs",
           logprobs ? CompletionLogprobs(d.logprobs, &shared->offsets[index]) : Json(nullptr)},
          {"finish_reason", d.finished ? Json(OpenAiFinishReason(d.finish)) : Json(nullptr)}};
      exchange->Write(Sse(envelope(Json::array({std::move(choice)}))));
    };
    callbacks.on_done = StreamDone(exchange, envelope, p.include_usage);
  } else {
    callbacks.on_done = [exchange, envelope, logprobs](GenerationJob& job) {
      if (const absl::Status* error = FirstError(job)) {
        ApiError e = ErrorFromStatus(*error);
        if (e.status < 500) e.status = 500;
        exchange->Respond(e.status, "application/json", OpenAiErrorBody(e));
        return;
      }
      Json choices = Json::array();
      for (size_t i = 0; i < job.results().size(); ++i) {
        const CompletionResult& r = job.results()[i];
        size_t offset = 0;
        choices.push_back(
            Json{{"index", i},
                 {"text", r.content},
                 {"logprobs", logprobs ? CompletionLogprobs(r.logprobs, &offset) : Json(nullptr)},
                 {"finish_reason", OpenAiFinishReason(r.finish)}});
      }
      Json response = envelope(std::move(choices));
      response["usage"] = Usage(job);
      exchange->Respond(200, "application/json", Dump(response));
    };
  }
  auto job =
      StartJob(std::move(p.request), std::move(text), std::move(callbacks), arrival, exchange);
  if (!job.ok()) return fail(ErrorFromStatus(job.status()));
}

}  // namespace r1::http

#include "tests/fuzz/api_fuzz_support.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "nlohmann/json.hpp"
#include "tests/fuzz/fuzz_support.h"

namespace r1::fuzz {
namespace {

using Json = nlohmann::json;

bool Finite(double v) { return std::isfinite(v); }

Json ParseJsonOrDie(absl::string_view text, absl::string_view what) {
  Json j = Json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  R1_FUZZ_REQUIRE(!j.is_discarded(), what, " is not JSON: ", text);
  return j;
}

// The error message of an error body in the API's shape.
std::string ErrorMessage(const Json& body, bool openai, absl::string_view text) {
  R1_FUZZ_REQUIRE(body.is_object() && body.contains("error"), "an error without 'error': ", text);
  const Json& e = body["error"];
  if (openai) {
    R1_FUZZ_REQUIRE(e.is_object() && e.contains("message") && e["message"].is_string() &&
                        e.contains("type") && e["type"].is_string(),
                    "not OpenAI's error shape: ", text);
    return e["message"].get<std::string>();
  }
  R1_FUZZ_REQUIRE(e.is_string(), "not Ollama's error shape: ", text);
  return e.get<std::string>();
}

// Checks every answer text in a response object (content, reasoning, completion text; not
// logprobs, which name tokens, specials included, on purpose): a special token's text (BOS, EOS,
// padding, EOT, the placeholders) may only show where the replies spelled it out in ordinary
// tokens, since the decoder drops special tokens.
void CheckAnswerText(const Json& j, const ScriptedEngine& engine, absl::string_view where) {
  if (j.is_array()) {
    for (const Json& item : j) CheckAnswerText(item, engine, where);
    return;
  }
  if (!j.is_object()) return;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() == "logprobs") continue;
    const bool text_field = it.key() == "content" || it.key() == "reasoning_content" ||
                            it.key() == "text" || it.key() == "response" || it.key() == "thinking";
    if (!text_field || !it->is_string()) {
      CheckAnswerText(*it, engine, where);
      continue;
    }
    const absl::string_view text = it->get_ref<const std::string&>();
    // DeepSeek's special tokens are all "<｜…｜>" but one, "<|EOT|>".
    for (const auto& [open, close] :
         {std::pair<absl::string_view, absl::string_view>{"<｜", "｜>"}, {"<|", "|>"}}) {
      for (size_t at = text.find(open); at != text.npos; at = text.find(open, at + 1)) {
        const size_t end = text.find(close, at + open.size());
        if (end == text.npos) break;
        const absl::string_view candidate = text.substr(at, end + close.size() - at);
        const std::optional<int32_t> id = engine.tokenizer().TokenToId(candidate);
        if (!id || !engine.tokenizer().IsSpecial(*id)) continue;
        R1_FUZZ_REQUIRE(absl::StrContains(engine.reply_text(), candidate), "special token ",
                        candidate, " in ", it.key(), ": ", text, " (in ", where, ")");
      }
    }
  }
}

}  // namespace

ScriptedEngine::ScriptedEngine(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {
  eos_ = tokenizer_.eos_id().value_or(1);
  user_id_ = tokenizer_.TokenToId("<｜User｜>");
}

std::vector<int32_t> ScriptedEngine::Reply(const std::vector<int32_t>& prompt) const {
  size_t from = 0;
  if (user_id_) {
    for (size_t i = prompt.size(); i > 0; --i) {
      if (prompt[i - 1] == *user_id_) {
        from = i;
        break;
      }
    }
  }
  const std::optional<int32_t> bos = tokenizer_.bos_id();
  if (from == 0 && !prompt.empty() && bos && prompt[0] == *bos) from = 1;
  size_t to = from;
  while (to < prompt.size() && !tokenizer_.IsAdded(prompt[to])) ++to;
  const std::string text = tokenizer_.Decode(absl::MakeConstSpan(prompt.data() + from, to - from));
  std::vector<int32_t> reply = tokenizer_.Encode(text, /*parse_special=*/true);
  if (reply.size() > kMaxReplyTokens) reply.resize(kMaxReplyTokens);
  reply.push_back(eos_);
  return reply;
}

absl::StatusOr<RequestId> ScriptedEngine::Submit(
    GenerationRequest request, std::function<void(const GenerationEvent&)> on_event) {
  const int64_t prompt_size = static_cast<int64_t>(request.prompt.size());
  R1_FUZZ_REQUIRE(prompt_size > 0, "an empty prompt was submitted");
  R1_FUZZ_REQUIRE(prompt_size < kMaxContext, "a ", prompt_size, "-token prompt was submitted");
  for (const int32_t id : request.prompt) {
    R1_FUZZ_REQUIRE(id >= 0 && id < tokenizer_.id_end(), "prompt id ", id);
  }
  for (const int32_t id : request.stop_token_ids) {
    R1_FUZZ_REQUIRE(id >= 0 && id < tokenizer_.id_end(), "stop id ", id);
  }
  R1_FUZZ_REQUIRE(
      request.max_new_tokens >= 0 && prompt_size + request.max_new_tokens <= kMaxContext,
      "max_new_tokens ", request.max_new_tokens, " after ", prompt_size, " tokens");
  R1_FUZZ_REQUIRE(request.n >= 1 && request.n <= 16, "n ", request.n);
  const EngineSampling& s = request.sampling;
  R1_FUZZ_REQUIRE(Finite(s.temperature) && s.temperature >= 0, "temperature ", s.temperature);
  R1_FUZZ_REQUIRE(s.top_p > 0 && s.top_p <= 1, "top_p ", s.top_p);
  R1_FUZZ_REQUIRE(s.top_k >= 0, "top_k ", s.top_k);
  R1_FUZZ_REQUIRE(s.min_p >= 0 && s.min_p <= 1, "min_p ", s.min_p);
  R1_FUZZ_REQUIRE(Finite(s.presence_penalty) && Finite(s.frequency_penalty), "penalties");
  R1_FUZZ_REQUIRE(Finite(s.repetition_penalty) && s.repetition_penalty > 0, "repetition_penalty ",
                  s.repetition_penalty);
  R1_FUZZ_REQUIRE(s.top_logprobs >= 0 && s.top_logprobs <= 20 && (s.logprobs || !s.top_logprobs),
                  "top_logprobs ", s.top_logprobs);

  RequestId id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    id = next_id_++;
  }
  const std::vector<int32_t> script = Reply(request.prompt);
  // What an answer may show: the script decoded as the decoder does (specials dropped), and once
  // more with every control token left out, since a parsed tool-call block or the reasoning tags
  // leave the text around them side by side.
  std::vector<int32_t> plain;
  for (const int32_t t : script) {
    if (!tokenizer_.IsAdded(t)) plain.push_back(t);
  }
  absl::StrAppend(&reply_text_, tokenizer_.Decode(script, /*skip_special=*/true), "\n",
                  tokenizer_.Decode(plain), "\n");
  const bool fail = absl::StrContains(tokenizer_.Decode(script), "[error]");
  // Round robin over the n completions, one token each per step, as a batch would run them.
  std::vector<size_t> next(request.n, 0);
  std::vector<bool> done(request.n, false);
  for (int32_t live = request.n; live > 0;) {
    for (int32_t index = 0; index < request.n; ++index) {
      if (done[index]) continue;
      GenerationEvent e;
      e.index = index;
      size_t& k = next[index];
      if (fail && k == script.size() / 2) {
        e.finish = FinishReason::kError;
        e.error = absl::InternalError("scripted failure ([error] in the request)");
      } else {
        const int32_t token = script[k++];
        e.token = token;
        if (s.logprobs) {
          e.logprob = -0.1f * static_cast<float>(k % 5 + 1);
          for (int32_t alt = 0; alt < s.top_logprobs; ++alt) {
            e.top_logprobs.push_back(TokenLogprob{(token + alt) % tokenizer_.id_end(),
                                                  e.logprob - 0.25f * static_cast<float>(alt)});
          }
        }
        const int64_t generated = static_cast<int64_t>(k);
        if (token == eos_ && !request.ignore_eos) {
          e.finish = FinishReason::kStop;
        } else if ((request.max_new_tokens > 0 && generated >= request.max_new_tokens) ||
                   prompt_size + generated >= kMaxContext || k >= script.size()) {
          e.finish = FinishReason::kLength;
        }
      }
      if (e.finish != FinishReason::kNone) {
        done[index] = true;
        --live;
      }
      on_event(e);
    }
  }
  return id;
}

EngineStats ScriptedEngine::Stats() const {
  EngineStats s;
  s.max_context = kMaxContext;
  s.kv_blocks_total = 1024;
  s.ready = true;
  return s;
}

void RecordingExchange::Respond(int status_code, std::string type, std::string text,
                                std::vector<std::pair<std::string, std::string>> headers) {
  R1_FUZZ_REQUIRE(state == State::kNone, "Respond after a response began (", status, ")");
  state = State::kResponded;
  status = status_code;
  content_type = std::move(type);
  body = std::move(text);
}

void RecordingExchange::StartStream(int status_code, std::string type) {
  R1_FUZZ_REQUIRE(state == State::kNone, "StartStream after a response began (", status, ")");
  state = State::kStreaming;
  status = status_code;
  content_type = std::move(type);
}

void RecordingExchange::Write(std::string data) {
  R1_FUZZ_REQUIRE(state == State::kStreaming, "Write outside a stream");
  body += data;
}

void RecordingExchange::EndStream() {
  R1_FUZZ_REQUIRE(state == State::kStreaming, "EndStream outside a stream");
  state = State::kEnded;
}

std::optional<http::HttpRequest> ParseFuzzRequest(const uint8_t* data, size_t size) {
  absl::string_view rest(reinterpret_cast<const char*>(data), size);
  auto next_line = [&rest]() {
    const size_t end = rest.find('\n');
    absl::string_view line = rest.substr(0, end);
    rest.remove_prefix(end == absl::string_view::npos ? rest.size() : end + 1);
    absl::ConsumeSuffix(&line, "\r");
    return line;
  };
  const absl::string_view request_line = next_line();
  std::vector<absl::string_view> parts = absl::StrSplit(request_line, ' ', absl::SkipEmpty());
  if (parts.size() < 2) return std::nullopt;
  http::HttpRequest request;
  request.method = std::string(parts[0]);
  const absl::string_view target = parts[1];
  const size_t q = target.find('?');
  request.path = std::string(target.substr(0, q));
  if (q != absl::string_view::npos) request.query = std::string(target.substr(q + 1));
  while (!rest.empty()) {
    const absl::string_view line = next_line();
    if (line.empty()) break;
    const size_t colon = line.find(':');
    if (colon == absl::string_view::npos) continue;
    request.headers.emplace_back(absl::AsciiStrToLower(line.substr(0, colon)),
                                 std::string(absl::StripAsciiWhitespace(line.substr(colon + 1))));
  }
  request.body = std::string(rest);
  return request;
}

void CheckResponse(const http::HttpRequest& request, const RecordingExchange& exchange,
                   const ScriptedEngine& engine) {
  using State = RecordingExchange::State;
  // R1_FUZZ_VERBOSE=1: each response's status and the start of its body (to see what a seed does).
  static const bool verbose = std::getenv("R1_FUZZ_VERBOSE") != nullptr;
  if (verbose) {
    std::fprintf(stderr, "%s %s -> %d %s\n%s\n", request.method.c_str(), request.path.c_str(),
                 exchange.status, exchange.content_type.c_str(),
                 exchange.body.substr(0, 600).c_str());
  }
  const bool openai = absl::StartsWith(request.path, "/v1/");
  R1_FUZZ_REQUIRE(exchange.state == State::kResponded || exchange.state == State::kEnded,
                  "no complete response to ", request.method, " ", request.path);
  const int status = exchange.status;
  R1_FUZZ_REQUIRE(status == 200 || status == 400 || status == 401 || status == 404 ||
                      status == 405 || status == 429 || status == 500 || status == 503,
                  "status ", status, " for ", request.method, " ", request.path);
  if (exchange.state == State::kResponded) {
    if (!absl::StartsWith(exchange.content_type, "application/json")) {
      R1_FUZZ_REQUIRE(status == 200, "a ", status, " error as ", exchange.content_type);
      return;
    }
    const Json body = ParseJsonOrDie(exchange.body, "the response body");
    if (status != 200) {
      const std::string message = ErrorMessage(body, openai, exchange.body);
      R1_FUZZ_REQUIRE(!message.empty(), "an empty error message");
      R1_FUZZ_REQUIRE(status != 500 || absl::StrContains(message, "scripted failure"),
                      "a 500 the engine did not cause: ", exchange.body);
    } else {
      CheckAnswerText(body, engine, exchange.body);
    }
    return;
  }
  R1_FUZZ_REQUIRE(status == 200, "a stream with status ", status);
  if (exchange.content_type == "text/event-stream") {
    std::vector<absl::string_view> events =
        absl::StrSplit(exchange.body, "\n\n", absl::SkipEmpty());
    R1_FUZZ_REQUIRE(!events.empty() && events.back() == "data: [DONE]",
                    "an SSE stream that does not end with [DONE]: ", exchange.body);
    for (size_t i = 0; i + 1 < events.size(); ++i) {
      absl::string_view payload = events[i];
      R1_FUZZ_REQUIRE(absl::ConsumePrefix(&payload, "data: "),
                      "not an SSE data event: ", events[i]);
      const Json event = ParseJsonOrDie(payload, "an SSE event");
      if (event.contains("error")) {
        const std::string message = ErrorMessage(event, /*openai=*/true, payload);
        R1_FUZZ_REQUIRE(absl::StrContains(message, "scripted failure"),
                        "a stream error the "
                        "engine did not cause: ",
                        payload);
      } else {
        R1_FUZZ_REQUIRE(event.contains("choices") && event["choices"].is_array(),
                        "an SSE chunk without choices: ", payload);
        CheckAnswerText(event, engine, payload);
      }
    }
    return;
  }
  R1_FUZZ_REQUIRE(exchange.content_type == "application/x-ndjson", "a stream of ",
                  exchange.content_type);
  std::vector<absl::string_view> lines = absl::StrSplit(exchange.body, '\n', absl::SkipEmpty());
  R1_FUZZ_REQUIRE(!lines.empty(), "an empty NDJSON stream");
  for (const absl::string_view line : lines) {
    const Json piece = ParseJsonOrDie(line, "an NDJSON line");
    if (piece.contains("error")) {
      R1_FUZZ_REQUIRE(
          absl::StrContains(ErrorMessage(piece, /*openai=*/false, line), "scripted failure"),
          "a stream error the engine did not cause: ", line);
    } else {
      CheckAnswerText(piece, engine, line);
    }
  }
  const Json last = ParseJsonOrDie(lines.back(), "the last NDJSON line");
  R1_FUZZ_REQUIRE(last.value("done", false) || last.contains("error"),
                  "an NDJSON stream that ends neither done nor with an error: ", lines.back());
}

FuzzApi& TheFuzzApi() {
  static FuzzApi* api = [] {
    const std::string dir = ModelDir("r1");
    auto tokenizer = Tokenizer::Load(dir);
    R1_FUZZ_REQUIRE(tokenizer.ok(), tokenizer.status().ToString());
    auto* engine = new ScriptedEngine(*tokenizer->release());
    http::ApiOptions options;
    options.model_dir = dir;
    options.model_name = "deepseek-r1";
    auto server = http::ApiServer::Create(options, engine);
    R1_FUZZ_REQUIRE(server.ok(), server.status().ToString());
    return new FuzzApi{server->release(), engine};
  }();
  return *api;
}

void FuzzOneRequest(const uint8_t* data, size_t size, absl::string_view prefix,
                    absl::string_view default_path) {
  FuzzApi& api = TheFuzzApi();
  std::optional<http::HttpRequest> request = ParseFuzzRequest(data, size);
  if (!request) return;
  if (!absl::StartsWith(request->path, prefix)) request->path = std::string(default_path);
  const http::HttpRequest sent = *request;
  auto exchange = std::make_shared<RecordingExchange>();
  api.engine->ClearReplies();
  api.server->Handle(std::move(*request), exchange);
  CheckResponse(sent, *exchange, *api.engine);
}

}  // namespace r1::fuzz

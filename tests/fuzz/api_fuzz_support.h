// What the two request fuzzers (openai_request, ollama_request) share: the public API's real
// request handling (ApiServer::Handle: routing, JSON and field parsing, the chat template and
// prompt encoder, GenerationJob, the text pipeline, response formatting) driven without sockets
// or threads, and checks on what it answers.
//
//  - ScriptedEngine: an Engine that answers inside Submit, so a request is complete when Handle
//    returns. Its reply is the text of the prompt's last user turn (the whole prompt for raw
//    completions) encoded *with* control tokens, then EOS: what a client writes steers the
//    reply, so "</think>", tool-call blocks and stop strings in a request reach the reasoning
//    parser, the tool-call parser and the stop matcher. "[error]" in it fails the completion
//    half-way. It checks what the API layer must guarantee before submitting: a non-empty prompt
//    of vocabulary ids that fits the context, n and sampling parameters in range.
//  - RecordingExchange: records Respond / StartStream / Write / EndStream and checks their order.
//  - ParseFuzzRequest: the input as a small HTTP request: "METHOD PATH[?QUERY]" on the first line,
//    "Name: value" header lines, an empty line, the body (the empty line and body may be absent).
//  - CheckResponse: exactly one complete response; a status this API may give; JSON bodies that
//    parse, errors in the API's own shape; every SSE event / NDJSON line is JSON; a 500 only for
//    the engine failure the request asked for, never "internal error" (an exception in a handler);
//    no special token (BOS, EOS, …) in the text of an answer unless the reply spelled it out in
//    ordinary tokens.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "coordinator/engine/engine.h"
#include "coordinator/http/api_server.h"
#include "coordinator/http/http_server.h"
#include "coordinator/tokenizer/tokenizer.h"

namespace r1::fuzz {

class ScriptedEngine : public Engine {
 public:
  static constexpr int64_t kMaxContext = 4096;
  static constexpr size_t kMaxReplyTokens = 256;
  explicit ScriptedEngine(const Tokenizer& tokenizer);

  absl::StatusOr<RequestId> Submit(GenerationRequest request,
                                   std::function<void(const GenerationEvent&)> on_event) override;
  void Cancel(RequestId id) override {}
  EngineStats Stats() const override;
  void Drain(int64_t deadline_ms) override {}
  int64_t max_context() const override { return kMaxContext; }
  int32_t eos_token_id() const override { return eos_; }

  const Tokenizer& tokenizer() const { return tokenizer_; }
  // The text the replies since the last call of ClearReplies may show (each script decoded with
  // special tokens dropped, and with all control tokens dropped).
  const std::string& reply_text() const { return reply_text_; }
  void ClearReplies() { reply_text_.clear(); }

 private:
  std::vector<int32_t> Reply(const std::vector<int32_t>& prompt) const;

  const Tokenizer& tokenizer_;
  int32_t eos_ = 1;
  std::optional<int32_t> user_id_;
  std::mutex mu_;
  RequestId next_id_ = 1;
  std::string reply_text_;
};

class RecordingExchange : public http::HttpExchange {
 public:
  enum class State { kNone, kResponded, kStreaming, kEnded };

  void Respond(int status, std::string content_type, std::string body,
               std::vector<std::pair<std::string, std::string>> headers) override;
  void StartStream(int status, std::string content_type) override;
  void Write(std::string data) override;
  void EndStream() override;
  void OnClientGone(std::function<void()> fn) override {}
  size_t pending_bytes() const override { return 0; }
  void Run(std::function<void()> fn) override { fn(); }

  State state = State::kNone;
  int status = 0;
  std::string content_type;
  std::string body;  // the whole body, or everything written to the stream
};

// Nullopt when the input has no request line.
std::optional<http::HttpRequest> ParseFuzzRequest(const uint8_t* data, size_t size);

// Checks the response to `request` (OpenAI's shapes under /v1/, Ollama's elsewhere) against
// what `engine` replied.
void CheckResponse(const http::HttpRequest& request, const RecordingExchange& exchange,
                   const ScriptedEngine& engine);

// The ApiServer on the R1 tokenizer folder and its ScriptedEngine, made on first use and kept.
struct FuzzApi {
  http::ApiServer* server;
  ScriptedEngine* engine;
};
FuzzApi& TheFuzzApi();

// Runs one fuzz input through ApiServer::Handle and checks the response: the whole body of both
// request fuzzers. A path that does not start with `prefix` becomes `default_path`.
void FuzzOneRequest(const uint8_t* data, size_t size, absl::string_view prefix,
                    absl::string_view default_path);

}  // namespace r1::fuzz

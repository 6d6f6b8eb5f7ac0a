// The internal gRPC API (proto/r1serve.proto, package r1serve.v1) on top of an Engine, beside the
// HTTP APIs: Generate and Chat (server streaming), Tokenize, ListModels, Health.
//
// It reuses the HTTP layer's text pipeline unchanged: PromptEncoder (user text never becomes
// control tokens), GenerationJob + CompletionText (incremental detokenization, stop strings,
// reasoning split) and Canceller (Engine::Cancel off the engine's thread), so a gRPC stream carries
// the same text as the HTTP routes for the same prompt, seed and parameters.
//
// Threads: gRPC's callback API. A stream is a ServerWriteReactor, not a thread: its chunks are
// written from the engine's callbacks and from gRPC's own small callback pool, so 1000 concurrent
// streams need no more threads than 10. One write is in flight per stream; text produced while a
// write is in flight is merged into one pending chunk (a slow reader gets fewer, larger chunks,
// and the memory held per stream stays bounded by its max_tokens).
//
// Cancellation: a client cancel, a broken stream or an expired deadline (OnCancel) cancels the
// engine request at once; its blocks are freed at the engine's next step boundary.
// See coordinator/grpc_api/README.md for the status codes and limits.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "coordinator/engine/engine.h"
#include "coordinator/http/metrics.h"

namespace grpc {
class Server;
}

namespace r1::grpc_api {

struct GrpcApiOptions {
  // HOST:PORT as gRPC takes it ("127.0.0.1:50052", "[::1]:0", "0.0.0.0:50052"); port 0 picks one.
  std::string listen = "127.0.0.1:50052";
  std::string model_dir;   // tokenizer.json, tokenizer_config.json
  std::string model_name;  // the served name (required)
  std::string api_key;     // empty: no authentication
  size_t max_messages = 1024;
  size_t max_text_bytes = 4u << 20;  // all the text of one request's prompt together
  int64_t max_tokens = 0;            // upper bound of max_tokens; 0: the engine's context
  size_t max_stop_strings = 16;
  size_t max_stop_bytes = 1024;
  size_t max_stop_token_ids = 64;
  int max_receive_bytes = 8 << 20;   // largest request message
};

class GrpcApiServer {
 public:
  // Loads the tokenizer and chat template, binds and starts serving. `engine` must outlive this;
  // `metrics` (may be null) is where tokens, latencies and client cancels are counted (the HTTP
  // server's, so /metrics covers both APIs).
  static absl::StatusOr<std::unique_ptr<GrpcApiServer>> Start(GrpcApiOptions options,
                                                              Engine* engine,
                                                              http::Metrics* metrics);
  ~GrpcApiServer();  // Shutdown(0) if not done

  // "HOST:PORT" actually bound (the chosen port when the listen address asked for 0).
  const std::string& address() const { return address_; }
  int port() const { return port_; }

  // From now on Health says not ready (draining) and Generate / Chat get UNAVAILABLE.
  void SetDraining();
  // Generate / Chat calls in progress.
  int64_t active_streams() const;
  // Stops the server: calls still running after `grace` are cancelled (their engine requests too).
  void Shutdown(std::chrono::milliseconds grace);

  class Service;

 private:
  GrpcApiServer() = default;

  std::unique_ptr<Service> service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  int port_ = 0;
  bool shut_down_ = false;
};

}  // namespace r1::grpc_api

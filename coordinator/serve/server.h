// The serving process's main loop, shared by `r1 serve` and the test server: build the HTTP APIs on
// an Engine, listen, wait for SIGTERM / SIGINT, drain, stop.
//
//   parse flags → build engine → RunServer(options, engine) → (signal) → drain → return
//
// Drain: /ready turns 503 and new generation requests get 503; the listening socket and idle
// connections close; running requests go on until `drain_timeout_ms` (Engine::Drain cancels the
// rest, whose streams end with finish_reason "abort"); then every connection closes. A second
// signal exits at once.
//
// With `grpc_listen` set, the gRPC API (proto/r1serve.proto, coordinator/grpc_api) serves beside
// HTTP on the same Engine, sharing its metrics; it drains with it (Health not ready, new calls
// UNAVAILABLE, running streams finish or are cancelled at the deadline).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "coordinator/engine/engine.h"
#include "coordinator/http/api_server.h"

namespace r1 {

struct ServeOptions {
  // HOST:PORT, [IPV6]:PORT. Loopback by default: exposing the API is a decision to make on purpose.
  // 11434 is Ollama's port, so Ollama clients (Open WebUI, ollama-js) find the server unconfigured.
  std::string listen = "127.0.0.1:11434";
  int http_threads = 2;
  size_t max_body_bytes = 8u << 20;
  int max_connections = 4096;
  int64_t drain_timeout_ms = 30'000;
  http::ApiOptions api;
  // HOST:PORT of the gRPC API; empty (the default): off, so no second port opens unasked.
  // `r1 serve --grpc-listen 127.0.0.1:50052` turns it on.
  std::string grpc_listen;
};

// Splits "HOST:PORT" ("[::1]:8080", "localhost:0"); "localhost" becomes 127.0.0.1.
absl::Status ParseListenAddress(const std::string& listen, std::string* host, int* port);

// Serves until SIGTERM or SIGINT, then drains and returns. `on_listening` gets the base URL
// ("http://127.0.0.1:11434") once the socket listens.
absl::Status RunServer(const ServeOptions& options, Engine& engine,
                       const std::function<void(const std::string& url)>& on_listening);

}  // namespace r1

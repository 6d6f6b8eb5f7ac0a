// A small HTTP/1.1 server on Boost.Asio + Beast's request parser: keep-alive, pipelining (one
// request at a time per connection), whole and streamed (chunked) responses, an early 413 for a
// body over the limit (decided from Content-Length before the body is read), and client-gone
// detection while a response is in progress (the connection keeps reading; EOF or a reset while a
// response is open fires the exchange's OnClientGone callback, so generation can be cancelled).
//
// Threads: `threads` io threads run every connection; each connection's work is serialised on its
// strand. HttpExchange methods may be called from any thread (they post to the strand).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace r1::http {

struct HttpRequest {
  std::string method;                                        // "GET", "POST", …
  std::string path;                                          // the target up to '?'
  std::string query;                                         // after '?', undecoded
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  int version = 11;  // 10 or 11

  // The first header named `lower_name`, if any.
  std::optional<std::string> Header(absl::string_view lower_name) const;
};

// The reply channel of one request. Exactly one of Respond or StartStream…EndStream.
class HttpExchange {
 public:
  virtual ~HttpExchange() = default;
  virtual void Respond(int status, std::string content_type, std::string body,
                       std::vector<std::pair<std::string, std::string>> headers = {}) = 0;
  // Streamed response: chunked transfer encoding (HTTP/1.1) or until close (HTTP/1.0).
  virtual void StartStream(int status, std::string content_type) = 0;
  virtual void Write(std::string data) = 0;
  virtual void EndStream() = 0;
  // `fn` runs once (on an io thread) if the client disconnects before the response is complete.
  virtual void OnClientGone(std::function<void()> fn) = 0;
  // Bytes handed to Write/Respond and not yet on the socket (a slow reader's backlog).
  virtual size_t pending_bytes() const = 0;
  // Runs `fn` on the connection's io strand, in order with this exchange's writes (inline when
  // the connection is gone). Work done per token (detokenizing, formatting) goes here rather
  // than on the engine's thread, spread over the io threads.
  virtual void Run(std::function<void()> fn) = 0;
};

using HttpHandler = std::function<void(HttpRequest, std::shared_ptr<HttpExchange>)>;

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;  // 0: any free port (see HttpServer::port())
  int threads = 2;
  size_t max_body_bytes = 8u << 20;     // larger bodies: 413, refused from their Content-Length
  size_t max_header_bytes = 64u << 10;  // larger headers: 431
  int max_connections = 4096;           // beyond: 503 and close
  int64_t request_read_timeout_ms = 60'000;  // a started request must arrive within this
  int64_t keep_alive_idle_ms = 120'000;      // idle keep-alive connections close after this
  // Observes every response's status as it starts (for metrics), with the request path.
  std::function<void(const std::string& path, int status)> on_response;
};

class HttpServer {
 public:
  // Binds and listens (an error names the address); serving starts with Start().
  static absl::StatusOr<std::unique_ptr<HttpServer>> Create(HttpServerOptions options,
                                                            HttpHandler handler);
  ~HttpServer();
  void Start();
  // Closes the listening socket and idle connections; responses in progress go on, and their
  // connections close when they finish.
  void StopAccepting();
  // Closes every connection and stops the io threads (blocks until they have exited).
  void Shutdown();

  int port() const;
  const std::string& host() const;
  int64_t open_connections() const;

  struct Impl;  // opaque; public so that the connections in http_server.cc can name it

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Reason phrase for a status code ("Not Found").
absl::string_view StatusReason(int status);

}  // namespace r1::http

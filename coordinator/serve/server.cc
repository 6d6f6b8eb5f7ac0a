#include "coordinator/serve/server.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status.h"
#include "coordinator/grpc_api/grpc_api.h"
#include "coordinator/http/http_server.h"

namespace r1 {
namespace {

// The signal handler only writes a byte to a pipe (async-signal-safe); RunServer reads it.
int g_signal_pipe[2] = {-1, -1};
std::atomic<int> g_signals{0};

void OnSignal(int) {
  if (g_signals.fetch_add(1) >= 1) _exit(130);  // a second signal: stop now
  const char byte = 1;
  [[maybe_unused]] const ssize_t n = write(g_signal_pipe[1], &byte, 1);
}

class SignalWatch {
 public:
  SignalWatch() {
    g_signals.store(0);
    if (pipe2(g_signal_pipe, O_CLOEXEC) != 0) return;
    struct sigaction action = {};
    action.sa_handler = OnSignal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGTERM, &action, &old_term_);
    sigaction(SIGINT, &action, &old_int_);
  }
  ~SignalWatch() {
    sigaction(SIGTERM, &old_term_, nullptr);
    sigaction(SIGINT, &old_int_, nullptr);
    close(g_signal_pipe[0]);
    close(g_signal_pipe[1]);
    g_signal_pipe[0] = g_signal_pipe[1] = -1;
  }
  void Wait() {
    char byte;
    while (read(g_signal_pipe[0], &byte, 1) < 0 && errno == EINTR) {
    }
  }

 private:
  struct sigaction old_term_ = {}, old_int_ = {};
};

}  // namespace

absl::Status ParseListenAddress(const std::string& listen, std::string* host, int* port) {
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("--listen '", listen, "': expected HOST:PORT, e.g. 127.0.0.1:11434"));
  }
  std::string h = listen.substr(0, colon);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  if (h.empty() || h == "localhost") h = "127.0.0.1";
  int p = 0;
  if (!absl::SimpleAtoi(listen.substr(colon + 1), &p) || p < 0 || p > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--listen '", listen, "': the port must be a number from 0 to 65535"));
  }
  *host = h;
  *port = p;
  return absl::OkStatus();
}

absl::Status RunServer(const ServeOptions& options, Engine& engine,
                       const std::function<void(const std::string& url)>& on_listening) {
  http::HttpServerOptions http_options;
  if (auto s = ParseListenAddress(options.listen, &http_options.host, &http_options.port);
      !s.ok()) {
    return s;
  }
  auto api = http::ApiServer::Create(options.api, &engine);
  if (!api.ok()) return Annotate(api.status(), "loading the tokenizer");
  http::ApiServer* api_ptr = api->get();
  http_options.threads = options.http_threads;
  http_options.max_body_bytes = options.max_body_bytes;
  http_options.max_connections = options.max_connections;
  http_options.on_response = [api_ptr](const std::string& path, int status) {
    api_ptr->metrics().CountResponse(http::ApiServer::EndpointLabel(path), status);
  };
  SignalWatch signals;
  std::unique_ptr<grpc_api::GrpcApiServer> grpc;
  if (!options.grpc_listen.empty()) {
    grpc_api::GrpcApiOptions g;
    g.listen = options.grpc_listen;
    g.model_dir = options.api.model_dir;
    g.model_name = (*api)->model_name();
    g.api_key = options.api.api_key;
    g.max_messages = options.api.max_messages;
    g.max_tokens = options.api.max_tokens;
    g.max_stop_strings = options.api.max_stop_strings;
    g.max_stop_bytes = options.api.max_stop_bytes;
    g.max_receive_bytes = static_cast<int>(std::min<size_t>(options.max_body_bytes, 1u << 30));
    auto started = grpc_api::GrpcApiServer::Start(std::move(g), &engine, &(*api)->metrics());
    if (!started.ok()) return Annotate(started.status(), "starting the gRPC API (--grpc-listen)");
    grpc = std::move(*started);
    R1_LOG(INFO) << "gRPC API (r1serve.v1) listening on " << grpc->address();
  }
  auto server = http::HttpServer::Create(
      http_options, [api_ptr](http::HttpRequest request, std::shared_ptr<http::HttpExchange> ex) {
        api_ptr->Handle(std::move(request), std::move(ex));
      });
  if (!server.ok()) return server.status();
  (*server)->Start();
  const std::string& host = (*server)->host();
  const std::string url =
      absl::StrCat("http://", host.find(':') != std::string::npos ? "[" : "", host,
                   host.find(':') != std::string::npos ? "]" : "", ":", (*server)->port());
  R1_LOG(INFO) << "serving '" << (*api)->model_name() << "' at " << url;
  if (on_listening) on_listening(url);

  signals.Wait();
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(options.drain_timeout_ms);
  R1_LOG(INFO) << "draining: " << (*api)->active_requests() << " requests in progress, up to "
               << options.drain_timeout_ms << " ms";
  (*api)->SetDraining();
  if (grpc) grpc->SetDraining();
  (*server)->StopAccepting();
  std::thread drain([&engine, &options] { engine.Drain(options.drain_timeout_ms); });
  // Requests cancelled at the deadline still write their last chunk: allow a moment for that.
  while (((*api)->active_requests() > 0 || (grpc && grpc->active_streams() > 0)) &&
         std::chrono::steady_clock::now() < deadline + std::chrono::seconds(2)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  drain.join();
  // Let the io threads flush the last bytes before closing every connection.
  for (int i = 0; i < 100 && (*server)->open_connections() > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  (*server)->Shutdown();
  if (grpc) grpc->Shutdown(std::chrono::milliseconds(100));
  R1_LOG(INFO) << "stopped";
  return absl::OkStatus();
}

}  // namespace r1

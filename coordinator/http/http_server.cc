#include "coordinator/http/http_server.h"

#include <boost/asio.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace r1::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

std::optional<std::string> HttpRequest::Header(absl::string_view lower_name) const {
  for (const auto& [name, value] : headers) {
    if (name == lower_name) return value;
  }
  return std::nullopt;
}

absl::string_view StatusReason(int status) {
  switch (status) {
    case 200:
      return "OK";
    case 204:
      return "No Content";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 413:
      return "Payload Too Large";
    case 415:
      return "Unsupported Media Type";
    case 422:
      return "Unprocessable Entity";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 503:
      return "Service Unavailable";
    default:
      return status < 400 ? "OK" : "Error";
  }
}

namespace {

using Headers = std::vector<std::pair<std::string, std::string>>;

std::string ResponseHead(int status, absl::string_view content_type, const Headers& extra,
                         bool keep_alive) {
  std::string head = absl::StrCat("HTTP/1.1 ", status, " ", StatusReason(status),
                                  "\r\nServer: r1serve\r\nContent-Type: ", content_type, "\r\n",
                                  "Connection: ", keep_alive ? "keep-alive" : "close", "\r\n");
  for (const auto& [name, value] : extra) absl::StrAppend(&head, name, ": ", value, "\r\n");
  return head;
}

}  // namespace

class Connection;

struct HttpServer::Impl {
  HttpServerOptions options;
  HttpHandler handler;
  // Declared before io so that connections destroyed with io's handlers can still unregister.
  std::mutex mu;
  std::unordered_map<uint64_t, std::weak_ptr<Connection>> connections;
  uint64_t next_connection_id = 0;
  std::atomic<int64_t> open_connections{0};
  std::atomic<bool> draining{false};
  bool started = false, shut_down = false;
  int bound_port = 0;
  std::vector<std::thread> threads;

  asio::io_context io;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  tcp::acceptor acceptor{io};
  asio::steady_timer accept_retry{io};

  void DoAccept();
  void Unregister(uint64_t id) {
    std::lock_guard<std::mutex> lock(mu);
    connections.erase(id);
  }
  std::vector<std::shared_ptr<Connection>> LiveConnections() {
    std::vector<std::shared_ptr<Connection>> live;
    std::lock_guard<std::mutex> lock(mu);
    for (auto& [id, weak] : connections) {
      if (auto c = weak.lock()) live.push_back(std::move(c));
    }
    return live;
  }
};

// One TCP connection. Every member is touched only on the connection's strand.
class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(HttpServer::Impl* server, uint64_t id, tcp::socket socket)
      : server_(server), id_(id), socket_(std::move(socket)), timer_(socket_.get_executor()) {
    server_->open_connections.fetch_add(1);
  }
  ~Connection() {
    server_->open_connections.fetch_sub(1);
    server_->Unregister(id_);
  }

  template <typename F>
  void Post(F&& f) {
    asio::post(socket_.get_executor(), std::forward<F>(f));
  }
  // Runs `f` at once when called on this connection's strand (a token processed there writes
  // without a second hop), else posts it. Every exchange operation goes this way, so their order
  // is the order of the calls: all of a response's calls are made on the strand (the handler, and
  // GenerationJob's events through HttpExchange::Run).
  template <typename F>
  void RunOnStrand(F&& f) {
    asio::dispatch(socket_.get_executor(), std::forward<F>(f));
  }

  void Start(bool overloaded) {
    Post([self = shared_from_this(), overloaded] {
      if (overloaded) {
        self->keep_alive_ = false;
        self->response_open_ = true;
        ++self->seq_;
        self->DoRespond(
            self->seq_, 503, "application/json",
            R"({"error":{"message":"too many connections","type":"server_error","param":null,"code":"overloaded"}})",
            {});
        return;
      }
      self->DoRead();
    });
  }

  void CloseIfIdle() {
    Post([self = shared_from_this()] {
      if (!self->response_open_) self->Close();
    });
  }
  void CloseNow() {
    Post([self = shared_from_this()] { self->Close(); });
  }

  // --- the exchange's operations, on the strand; `seq` names the request they belong to ---
  void DoRespond(uint64_t seq, int status, const std::string& content_type, std::string body,
                 const Headers& headers) {
    if (seq != seq_ || !response_open_ || started_ || closed_) return;
    started_ = true;
    complete_ = true;
    if (server_->options.on_response) server_->options.on_response(path_, status);
    if (server_->draining.load()) keep_alive_ = false;
    std::string out = ResponseHead(status, content_type, headers, keep_alive_);
    absl::StrAppend(&out, "Content-Length: ", body.size(), "\r\n\r\n");
    if (!head_request_) out += body;
    Enqueue(std::move(out));
  }
  void DoStartStream(uint64_t seq, int status, const std::string& content_type) {
    if (seq != seq_ || !response_open_ || started_ || closed_) return;
    started_ = true;
    if (server_->options.on_response) server_->options.on_response(path_, status);
    chunked_ = version_ >= 11;
    if (!chunked_ || server_->draining.load()) keep_alive_ = false;
    std::string out =
        ResponseHead(status, content_type,
                     {{"Cache-Control", "no-cache"}, {"X-Accel-Buffering", "no"}}, keep_alive_);
    if (chunked_) out += "Transfer-Encoding: chunked\r\n";
    out += "\r\n";
    Enqueue(std::move(out));
  }
  void DoWrite(uint64_t seq, std::string data) {
    if (seq != seq_ || !started_ || complete_ || closed_ || data.empty()) return;
    if (chunked_) {
      Enqueue(absl::StrCat(absl::Hex(data.size()), "\r\n"));
      data += "\r\n";
    }
    Enqueue(std::move(data));
  }
  void DoEndStream(uint64_t seq) {
    if (seq != seq_ || !started_ || complete_ || closed_) return;
    complete_ = true;
    if (chunked_) {
      Enqueue("0\r\n\r\n");
    } else if (!writing_) {
      AfterResponse();
    }
  }
  void SetOnGone(uint64_t seq, std::function<void()> fn) {
    if (seq != seq_ || !response_open_) return;
    if (closed_) {
      fn();
      return;
    }
    on_gone_ = std::move(fn);
  }

  std::atomic<size_t>& pending_bytes() { return pending_bytes_; }

 private:
  void DoRead() {
    if (reading_ || closed_) return;
    parser_.emplace();
    parser_->body_limit(server_->options.max_body_bytes);
    parser_->header_limit(static_cast<uint32_t>(server_->options.max_header_bytes));
    reading_ = true;
    if (!response_open_) ArmTimer(server_->options.request_read_timeout_ms);
    bhttp::async_read(
        socket_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
  }

  void OnRead(beast::error_code ec) {
    reading_ = false;
    if (closed_) return;
    if (ec) {
      const bool too_large = ec == bhttp::error::body_limit;
      const bool header_too_large = ec == bhttp::error::header_limit;
      const bool malformed =
          ec.category() == bhttp::make_error_code(bhttp::error::body_limit).category() &&
          ec != bhttp::error::end_of_stream && ec != bhttp::error::partial_message;
      if (!response_open_ && (too_large || header_too_large || malformed)) {
        const int status = too_large ? 413 : header_too_large ? 431 : 400;
        const std::string message =
            too_large          ? absl::StrCat("request body is larger than the limit of ",
                                              server_->options.max_body_bytes, " bytes")
            : header_too_large ? std::string("request headers are too large")
                               : absl::StrCat("malformed HTTP request: ", ec.message());
        keep_alive_ = false;
        linger_ = true;
        response_open_ = true;
        started_ = complete_ = chunked_ = head_request_ = false;
        ++seq_;
        path_ = parser_ && parser_->is_header_done() ? std::string(parser_->get().target()) : "";
        DoRespond(seq_, status, "application/json",
                  absl::StrCat(R"({"error":{"message":")", message,
                               R"(","type":"invalid_request_error","param":null,"code":null}})"),
                  {});
        return;
      }
      if (response_open_ && (too_large || header_too_large || malformed)) {
        keep_alive_ = false;  // a bad pipelined request: finish this response, then close
        return;
      }
      Close();  // EOF, reset or timeout
      return;
    }
    HttpRequest request = Convert(parser_->release());
    if (response_open_) {
      pending_ = std::move(request);
      return;
    }
    Dispatch(std::move(request));
  }

  HttpRequest Convert(bhttp::request<bhttp::string_body> r) {
    HttpRequest request;
    request.method = std::string(r.method_string());
    const absl::string_view target(r.target().data(), r.target().size());
    const size_t q = target.find('?');
    request.path = std::string(target.substr(0, q));
    if (q != absl::string_view::npos) request.query = std::string(target.substr(q + 1));
    for (const auto& field : r) {
      request.headers.emplace_back(absl::AsciiStrToLower(absl::string_view(
                                       field.name_string().data(), field.name_string().size())),
                                   std::string(field.value()));
    }
    request.version = static_cast<int>(r.version());
    request_keep_alive_ = r.keep_alive();
    request.body = std::move(r.body());
    return request;
  }

  void Dispatch(HttpRequest request) {
    ++seq_;
    response_open_ = true;
    started_ = complete_ = chunked_ = false;
    on_gone_ = nullptr;
    keep_alive_ = request_keep_alive_ && !server_->draining.load();
    version_ = request.version;
    head_request_ = request.method == "HEAD";
    path_ = request.path;
    ++timer_generation_;
    timer_.cancel();
    // Keep reading: a disconnect shows up as EOF here, and a pipelined request waits in pending_.
    DoRead();
    server_->handler(std::move(request), MakeExchange());
  }

  std::shared_ptr<HttpExchange> MakeExchange();

  void Enqueue(std::string data) {
    out_.push_back(std::move(data));
    if (!writing_) WriteNext();
  }

  // Everything queued goes out in one gathered write: under load, the tokens of many streams
  // that arrive while a write is in flight cost one system call per connection, not one each.
  void WriteNext() {
    if (out_.empty()) {
      writing_ = false;
      if (complete_) AfterResponse();
      return;
    }
    writing_ = true;
    in_flight_.clear();
    while (!out_.empty()) {
      in_flight_.push_back(std::move(out_.front()));
      out_.pop_front();
    }
    buffers_.clear();
    for (const std::string& b : in_flight_) buffers_.emplace_back(b.data(), b.size());
    asio::async_write(socket_, buffers_,
                      [self = shared_from_this()](beast::error_code ec, size_t n) {
                        self->pending_bytes_.fetch_sub(std::min(n, self->pending_bytes_.load()));
                        self->in_flight_.clear();
                        if (ec) {
                          self->writing_ = false;
                          self->Close();
                          return;
                        }
                        self->WriteNext();
                      });
  }

  void AfterResponse() {
    response_open_ = false;
    on_gone_ = nullptr;
    pending_bytes_.store(0);
    if (linger_) {
      Linger();
      return;
    }
    if (!keep_alive_ || server_->draining.load()) {
      beast::error_code ignored;
      socket_.shutdown(tcp::socket::shutdown_send, ignored);
      Close();
      return;
    }
    if (pending_) {
      HttpRequest next = std::move(*pending_);
      pending_.reset();
      Dispatch(std::move(next));
      return;
    }
    if (reading_) {
      ArmTimer(server_->options.keep_alive_idle_ms);
    } else {
      DoRead();
    }
  }

  // After refusing a request whose body is still arriving: stop sending, discard what comes for a
  // moment so the client reads our status instead of a reset, then close.
  void Linger() {
    beast::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_send, ignored);
    ArmTimer(1000);
    DiscardSome();
  }
  void DiscardSome() {
    if (closed_) return;
    socket_.async_read_some(asio::buffer(scratch_),
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              if (ec) {
                                self->Close();
                                return;
                              }
                              self->DiscardSome();
                            });
  }

  void ArmTimer(int64_t ms) {
    const uint64_t generation = ++timer_generation_;
    timer_.expires_after(std::chrono::milliseconds(ms));
    timer_.async_wait([self = shared_from_this(), generation](beast::error_code ec) {
      if (ec || generation != self->timer_generation_) return;
      if (!self->response_open_ || self->linger_) self->Close();
    });
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    ++timer_generation_;
    timer_.cancel();
    beast::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    if (response_open_ && !complete_ && on_gone_) {
      auto fn = std::move(on_gone_);
      on_gone_ = nullptr;
      fn();
    }
  }

  HttpServer::Impl* server_;
  uint64_t id_;
  tcp::socket socket_;
  asio::steady_timer timer_;
  uint64_t timer_generation_ = 0;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  std::optional<HttpRequest> pending_;
  std::array<char, 65536> scratch_;
  bool reading_ = false, writing_ = false, closed_ = false, linger_ = false;
  bool request_keep_alive_ = true;
  // The current request and its response.
  uint64_t seq_ = 0;
  bool response_open_ = false;  // dispatched; its response not yet fully written
  bool started_ = false;        // Respond or StartStream called
  bool complete_ = false;       // nothing more will be written
  bool chunked_ = false, keep_alive_ = true, head_request_ = false;
  int version_ = 11;
  std::string path_;
  std::function<void()> on_gone_;
  std::deque<std::string> out_;
  std::vector<std::string> in_flight_;             // the gathered write on the socket
  std::vector<asio::const_buffer> buffers_;        // views of in_flight_
  std::atomic<size_t> pending_bytes_{0};
};

namespace {

class ExchangeImpl : public HttpExchange {
 public:
  ExchangeImpl(std::weak_ptr<Connection> connection, uint64_t seq)
      : connection_(std::move(connection)), seq_(seq) {}

  void Respond(int status, std::string content_type, std::string body, Headers headers) override {
    if (auto c = connection_.lock()) {
      c->pending_bytes().fetch_add(body.size());
      c->RunOnStrand(
          [c, seq = seq_, status, ct = std::move(content_type), b = std::move(body),
           h = std::move(headers)]() mutable { c->DoRespond(seq, status, ct, std::move(b), h); });
    }
  }
  void StartStream(int status, std::string content_type) override {
    if (auto c = connection_.lock()) {
      c->RunOnStrand([c, seq = seq_, status, ct = std::move(content_type)] {
        c->DoStartStream(seq, status, ct);
      });
    }
  }
  void Write(std::string data) override {
    if (auto c = connection_.lock()) {
      c->pending_bytes().fetch_add(data.size());
      c->RunOnStrand([c, seq = seq_, d = std::move(data)]() mutable { c->DoWrite(seq, std::move(d)); });
    }
  }
  void EndStream() override {
    if (auto c = connection_.lock()) c->RunOnStrand([c, seq = seq_] { c->DoEndStream(seq); });
  }
  void OnClientGone(std::function<void()> fn) override {
    if (auto c = connection_.lock()) {
      c->RunOnStrand([c, seq = seq_, f = std::move(fn)]() mutable { c->SetOnGone(seq, std::move(f)); });
    } else {
      fn();
    }
  }
  size_t pending_bytes() const override {
    if (auto c = connection_.lock()) return c->pending_bytes().load();
    return 0;
  }
  void Run(std::function<void()> fn) override {
    if (auto c = connection_.lock()) {
      c->RunOnStrand(std::move(fn));
    } else {
      fn();
    }
  }

 private:
  std::weak_ptr<Connection> connection_;
  uint64_t seq_;
};

}  // namespace

std::shared_ptr<HttpExchange> Connection::MakeExchange() {
  return std::make_shared<ExchangeImpl>(weak_from_this(), seq_);
}

void HttpServer::Impl::DoAccept() {
  acceptor.async_accept(asio::make_strand(io), [this](beast::error_code ec, tcp::socket socket) {
    if (ec) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
      R1_LOG(WARNING) << "accept: " << ec.message();
      accept_retry.expires_after(std::chrono::milliseconds(50));  // e.g. out of descriptors
      accept_retry.async_wait([this](beast::error_code e) {
        if (!e) DoAccept();
      });
      return;
    }
    beast::error_code ignored;
    socket.set_option(tcp::no_delay(true), ignored);
    const bool overloaded = open_connections.load() >= options.max_connections;
    std::shared_ptr<Connection> connection;
    {
      std::lock_guard<std::mutex> lock(mu);
      const uint64_t id = next_connection_id++;
      connection = std::make_shared<Connection>(this, id, std::move(socket));
      connections[id] = connection;
    }
    connection->Start(overloaded);
    DoAccept();
  });
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { Shutdown(); }

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Create(HttpServerOptions options,
                                                               HttpHandler handler) {
  auto impl = std::make_unique<Impl>();
  impl->options = std::move(options);
  impl->handler = std::move(handler);
  const std::string where = absl::StrCat(impl->options.host, ":", impl->options.port);
  beast::error_code ec;
  const auto address = asio::ip::make_address(impl->options.host, ec);
  if (ec)
    return absl::InvalidArgumentError(absl::StrCat("listen address ", where, ": ", ec.message()));
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(impl->options.port));
  impl->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl->acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) impl->acceptor.bind(endpoint, ec);
  if (!ec) impl->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    return absl::UnavailableError(absl::StrCat("cannot listen on ", where, ": ", ec.message()));
  impl->bound_port = impl->acceptor.local_endpoint().port();
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

void HttpServer::Start() {
  Impl& s = *impl_;
  if (s.started) return;
  s.started = true;
  s.work.emplace(s.io.get_executor());
  s.DoAccept();
  for (int i = 0; i < std::max(1, s.options.threads); ++i) {
    s.threads.emplace_back([&s] { s.io.run(); });
  }
}

void HttpServer::StopAccepting() {
  Impl& s = *impl_;
  s.draining.store(true);
  asio::post(s.io, [&s] {
    beast::error_code ignored;
    s.acceptor.close(ignored);
    s.accept_retry.cancel();
  });
  for (auto& c : s.LiveConnections()) c->CloseIfIdle();
}

void HttpServer::Shutdown() {
  Impl& s = *impl_;
  if (s.shut_down) return;
  s.shut_down = true;
  if (!s.started) return;
  StopAccepting();
  for (auto& c : s.LiveConnections()) c->CloseNow();
  // Give the closes a moment to run, then stop whatever is left.
  for (int i = 0; i < 100 && s.open_connections.load() > 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  s.work.reset();
  s.io.stop();
  for (auto& t : s.threads) t.join();
  s.threads.clear();
}

int HttpServer::port() const { return impl_->bound_port; }
const std::string& HttpServer::host() const { return impl_->options.host; }
int64_t HttpServer::open_connections() const { return impl_->open_connections.load(); }

}  // namespace r1::http

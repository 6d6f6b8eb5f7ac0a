// bench_serving: the overhead of the HTTP/SSE serving layer itself (ApiServer on HttpServer, as
// `r1 serve` runs them), with a stand-in engine that costs nothing, at 1, 100 and 1000 concurrent
// streams — and, in the same run, the same client against a minimal SSE server (the floor): the
// same engine, a pre-formatted chunk per token, no JSON, tokenizer or detokenizer.
//
// Everything runs in this process on loopback: the engine thread, the server's io threads (2, as
// `r1 serve` defaults) and one client thread (raw HTTP/1.1 keep-alive connections, a chunked-body
// and SSE parser of its own). Each client connection loops: POST a streaming chat completion of
// --tokens tokens, read it to the end, repeat, for --seconds.
//
// Two engine modes:
//  - instant: every step gives each running request its next token, back to back. The stream's
//    time per token (first token to last, over the tokens) is then all serving: the added
//    latency per token. Requests/s and tokens/s are the throughput.
//  - paced (--interval-ms): one step every interval (a model's decode step); the token of step s
//    is the s-th word of a table, so the client finds the step from the text and reports the
//    latency from the engine handing the token over to the client reading it.
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "CLI/CLI.hpp"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "boost/asio.hpp"
#include "coordinator/engine/engine.h"
#include "coordinator/http/api_server.h"
#include "coordinator/http/http_server.h"
#include "coordinator/grpc_api/grpc_api.h"
#include "coordinator/tokenizer/tokenizer.h"
#include "grpcpp/grpcpp.h"
#include "proto/r1serve.grpc.pb.h"

namespace r1 {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

// The stand-in engine: one thread; a step gives every running request one token, the word of the
// step (words[step % size]); steps run back to back (interval 0) or on a fixed period.
class StandInEngine : public Engine {
 public:
  StandInEngine(std::vector<int32_t> words, int64_t interval_us)
      : words_(std::move(words)), interval_us_(interval_us), step_time_(words_.size()) {
    thread_ = std::thread([this] { Loop(); });
  }
  ~StandInEngine() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  absl::StatusOr<RequestId> Submit(GenerationRequest request,
                                   std::function<void(const GenerationEvent&)> on_event) override {
    std::lock_guard<std::mutex> lock(mu_);
    const RequestId id = next_id_++;
    active_.push_back(Active{id, request.max_new_tokens > 0 ? request.max_new_tokens : 16, 0,
                             false, std::move(on_event)});
    ++prompt_tokens_;
    cv_.notify_all();
    return id;
  }
  void Cancel(RequestId id) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (Active& a : active_) {
      if (a.id == id) a.cancelled = true;
    }
  }
  EngineStats Stats() const override {
    std::lock_guard<std::mutex> lock(mu_);
    EngineStats s;
    s.running = static_cast<int64_t>(active_.size());
    s.kv_blocks_used = s.running;
    s.kv_blocks_total = 1 << 20;
    s.max_context = max_context();
    s.generated_tokens = generated_;
    s.prompt_tokens = prompt_tokens_;
    s.ready = true;
    return s;
  }
  void Drain(int64_t) override {}
  int64_t max_context() const override { return 1 << 20; }
  int32_t eos_token_id() const override { return 1; }

  // When the step whose word has index `i` handed its tokens over (steady clock, ns).
  int64_t step_time(size_t i) const { return step_time_[i].load(std::memory_order_acquire); }

 private:
  struct Active {
    RequestId id;
    int64_t max_tokens, produced;
    bool cancelled;
    std::function<void(const GenerationEvent&)> on_event;
  };
  void Loop() {
    std::vector<std::pair<std::function<void(const GenerationEvent&)>*, GenerationEvent>> events;
    std::vector<Active> finished;
    std::unique_lock<std::mutex> lock(mu_);
    auto next = Clock::now();
    for (;;) {
      cv_.wait(lock, [this] { return stop_ || !active_.empty(); });
      if (stop_) return;
      const size_t w = static_cast<size_t>(step_ % static_cast<int64_t>(words_.size()));
      ++step_;
      for (Active& a : active_) {
        GenerationEvent e;
        if (a.cancelled) {
          e.finish = FinishReason::kCancelled;
        } else {
          e.token = words_[w];
          ++generated_;
          if (++a.produced >= a.max_tokens) e.finish = FinishReason::kLength;
        }
        events.emplace_back(&a.on_event, std::move(e));
      }
      lock.unlock();
      step_time_[w].store(NowNs(), std::memory_order_release);
      for (auto& [fn, e] : events) (*fn)(e);
      lock.lock();
      // Remove finished requests (their callbacks ran; active_ only grew at the back meanwhile).
      size_t k = 0;
      for (size_t i = 0; i < active_.size(); ++i) {
        const bool done = i < events.size() && events[i].second.finish != FinishReason::kNone;
        if (!done) {
          if (k != i) active_[k] = std::move(active_[i]);
          ++k;
        }
      }
      active_.resize(k);
      events.clear();
      if (interval_us_ > 0) {
        next += std::chrono::microseconds(interval_us_);
        if (next < Clock::now()) next = Clock::now();
        lock.unlock();
        std::this_thread::sleep_until(next);
        lock.lock();
      } else {
        next = Clock::now();
      }
    }
  }

  const std::vector<int32_t> words_;
  const int64_t interval_us_;
  std::vector<std::atomic<int64_t>> step_time_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Active> active_;
  RequestId next_id_ = 1;
  int64_t step_ = 0, generated_ = 0, prompt_tokens_ = 0;
  bool stop_ = false;
  std::thread thread_;
};

// The floor: a minimal HTTP/1.1 SSE server on the same engine. It reads a request (headers, then
// Content-Length bytes), submits a fixed request, and writes each token as one pre-formatted
// chunk (`data: {"choices":[{"index":0,"delta":{"content":"WORD"}}]}`), queued writes coalesced.
class FloorServer {
 public:
  FloorServer(Engine& engine, const Tokenizer& tokenizer, int64_t tokens, int threads)
      : engine_(engine), tokens_(tokens), acceptor_(io_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    for (int32_t id = 0; id < tokenizer.id_end(); ++id) texts_.push_back(tokenizer.Decode({id}));
    Accept();
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { io_.run(); });
  }
  ~FloorServer() {
    io_.stop();
    for (auto& t : threads_) t.join();
  }
  int port() const { return acceptor_.local_endpoint().port(); }

 private:
  struct Conn : std::enable_shared_from_this<Conn> {
    Conn(FloorServer* s, tcp::socket sock) : server(s), socket(std::move(sock)), strand(socket.get_executor()) {}
    FloorServer* server;
    tcp::socket socket;
    asio::strand<tcp::socket::executor_type> strand;
    std::string in, out, writing;
    bool stream_done = false, write_busy = false;

    void ReadRequest() {
      auto self = shared_from_this();
      asio::async_read_until(socket, asio::dynamic_buffer(in), "\r\n\r\n",
                             asio::bind_executor(strand, [self](boost::system::error_code ec, size_t n) {
                               if (ec) return;
                               self->OnHeaders(n);
                             }));
    }
    void OnHeaders(size_t header_bytes) {
      const std::string lower = absl::AsciiStrToLower(in.substr(0, header_bytes));
      size_t body = 0;
      if (size_t p = lower.find("content-length:"); p != std::string::npos) {
        size_t e = lower.find("\r\n", p);
        uint64_t v = 0;
        if (absl::SimpleAtoi(absl::StripAsciiWhitespace(absl::string_view(lower).substr(p + 15, e - p - 15)), &v)) body = v;
      }
      const size_t need = header_bytes + body;
      auto self = shared_from_this();
      if (in.size() >= need) {
        in.erase(0, need);
        Start();
        return;
      }
      asio::async_read(socket, asio::dynamic_buffer(in), asio::transfer_exactly(need - in.size()),
                       asio::bind_executor(strand, [self, need](boost::system::error_code ec, size_t) {
                         if (ec) return;
                         self->in.erase(0, need);
                         self->Start();
                       }));
    }
    void Start() {
      out = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
      stream_done = false;
      GenerationRequest r;
      r.prompt = {1};
      r.max_new_tokens = server->tokens_;
      auto self = shared_from_this();
      (void)server->engine_.Submit(std::move(r), [self](const GenerationEvent& e) {
        std::string data;
        if (e.token) {
          const std::string body = absl::StrCat(R"(data: {"choices":[{"index":0,"delta":{"content":")",
                                                self->server->texts_[*e.token], "\"}}]}\n\n");
          data = absl::StrCat(absl::Hex(body.size()), "\r\n", body, "\r\n");
        }
        const bool last = e.finish != FinishReason::kNone;
        if (last) absl::StrAppend(&data, "e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n");
        asio::post(self->strand, [self, data = std::move(data), last] {
          self->out += data;
          if (last) self->stream_done = true;
          self->Flush();
        });
      });
      Flush();
    }
    void Flush() {
      if (write_busy || out.empty()) return;
      write_busy = true;
      writing.swap(out);
      out.clear();
      const bool finishes = stream_done;
      auto self = shared_from_this();
      asio::async_write(socket, asio::buffer(writing),
                        asio::bind_executor(strand, [self, finishes](boost::system::error_code ec, size_t) {
                          self->write_busy = false;
                          if (ec) return;
                          if (!self->out.empty()) {
                            self->Flush();
                          } else if (finishes) {
                            self->ReadRequest();
                          }
                        }));
    }
  };
  void Accept() {
    acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket s) {
      if (ec) return;
      s.set_option(tcp::no_delay(true));
      std::make_shared<Conn>(this, std::move(s))->ReadRequest();
      Accept();
    });
  }

  Engine& engine_;
  int64_t tokens_;
  std::vector<std::string> texts_;
  asio::io_context io_;
  tcp::acceptor acceptor_;
  std::vector<std::thread> threads_;
};

// The client: `streams` keep-alive connections on one thread.
struct Results {
  int64_t requests = 0, tokens = 0, bad = 0;
  double seconds = 0, cpu_seconds = 0;
  double itl_sum_ns = 0;
  int64_t itl_count = 0;
  std::vector<int64_t> ttft_ns, latency_ns;  // latency: paced mode only
};

class Client {
 public:
  Client(int port, std::string request, const std::unordered_map<std::string, size_t>* word_index,
         const StandInEngine* engine, bool paced)
      : port_(port), request_(std::move(request)), word_index_(word_index), engine_(engine), paced_(paced) {}

  Results Run(int streams, double seconds) {
    asio::io_context io;
    stop_at_ = NowNs() + static_cast<int64_t>(seconds * 1e9);
    std::vector<std::shared_ptr<Conn>> conns;
    for (int i = 0; i < streams; ++i) {
      auto c = std::make_shared<Conn>(this, io);
      c->socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port_)));
      c->socket.set_option(tcp::no_delay(true));
      conns.push_back(c);
    }
    const int64_t t0 = NowNs();
    const double cpu0 = CpuSeconds();
    for (auto& c : conns) c->Send();
    io.run();
    r_.seconds = static_cast<double>(NowNs() - t0) * 1e-9;
    r_.cpu_seconds = CpuSeconds() - cpu0;
    return std::move(r_);
  }

 private:
  struct Conn : std::enable_shared_from_this<Conn> {
    Conn(Client* c, asio::io_context& io) : client(c), socket(io) {}
    Client* client;
    tcp::socket socket;
    std::string in, body;
    char buf[16384];
    enum { kHeaders, kSize, kData, kEnd } state = kHeaders;
    size_t chunk_left = 0;
    int64_t sent_ns = 0, first_ns = 0, last_ns = 0, tokens = 0;

    void Send() {
      state = kHeaders;
      in.clear();
      body.clear();
      tokens = 0;
      sent_ns = NowNs();
      auto self = shared_from_this();
      asio::async_write(socket, asio::buffer(client->request_), [self](boost::system::error_code ec, size_t) {
        if (ec) return;
        self->Read();
      });
    }
    void Read() {
      auto self = shared_from_this();
      socket.async_read_some(asio::buffer(buf), [self](boost::system::error_code ec, size_t n) {
        if (ec) {
          ++self->client->r_.bad;
          return;
        }
        self->in.append(self->buf, n);
        if (self->Parse()) {
          Results& r = self->client->r_;
          ++r.requests;
          r.tokens += self->tokens;
          if (self->tokens > 1) {
            r.itl_sum_ns += static_cast<double>(self->last_ns - self->first_ns);
            r.itl_count += self->tokens - 1;
          }
          if (self->tokens > 0) r.ttft_ns.push_back(self->first_ns - self->sent_ns);
          if (NowNs() < self->client->stop_at_) self->Send();
          return;
        }
        self->Read();
      });
    }
    // True once the response is complete.
    bool Parse() {
      size_t pos = 0;
      for (;;) {
        if (state == kHeaders) {
          const size_t e = in.find("\r\n\r\n", pos);
          if (e == std::string::npos) break;
          if (in.compare(pos, 12, "HTTP/1.1 200") != 0) ++client->r_.bad;
          pos = e + 4;
          state = kSize;
        } else if (state == kSize) {
          const size_t e = in.find("\r\n", pos);
          if (e == std::string::npos) break;
          chunk_left = std::stoul(in.substr(pos, e - pos), nullptr, 16);
          pos = e + 2;
          state = chunk_left == 0 ? kEnd : kData;
        } else if (state == kData) {
          if (in.size() - pos < chunk_left + 2) {
            const size_t take = std::min(chunk_left, in.size() - pos);
            body.append(in, pos, take);
            chunk_left -= take;
            pos += take;
            if (chunk_left > 0 || in.size() - pos < 2) break;
          } else {
            body.append(in, pos, chunk_left);
            pos += chunk_left;
            chunk_left = 0;
          }
          pos += 2;  // CRLF after the chunk
          state = kSize;
          Events();
        } else {  // kEnd: the trailer's CRLF
          if (in.size() - pos < 2) break;
          in.erase(0, pos + 2);
          return true;
        }
      }
      in.erase(0, pos);
      return false;
    }
    void Events() {
      size_t start = 0, e;
      const int64_t now = NowNs();
      while ((e = body.find("\n\n", start)) != std::string::npos) {
        absl::string_view ev(body.data() + start, e - start);
        start = e + 2;
        size_t p = ev.find("\"reasoning_content\":\"");
        size_t skip = 21;
        if (p == absl::string_view::npos) {
          p = ev.find("\"content\":\"");
          skip = 11;
        }
        if (p == absl::string_view::npos) continue;
        const size_t q = ev.find('"', p + skip);
        for (absl::string_view w : absl::StrSplit(ev.substr(p + skip, q - p - skip), ' ', absl::SkipEmpty())) {
          if (tokens == 0) first_ns = now;
          last_ns = now;
          ++tokens;
          if (client->paced_) {
            auto it = client->word_index_->find(std::string(w));
            if (it == client->word_index_->end()) {
              ++client->r_.bad;
            } else {
              client->r_.latency_ns.push_back(now - client->engine_->step_time(it->second));
            }
          }
        }
      }
      body.erase(0, start);
    }
  };

  int port_;
  std::string request_;
  const std::unordered_map<std::string, size_t>* word_index_;
  const StandInEngine* engine_;
  bool paced_;
  int64_t stop_at_ = 0;
  Results r_;
};

// The same measurement through the public gRPC API (r1serve.v1 Generate, server streaming): each
// stream loops — call, read every chunk, repeat — on gRPC's callback API, spread over several
// channels (HTTP/2 connections). A chunk's text gives the step's word, as with SSE.
class GrpcClient {
 public:
  GrpcClient(const std::string& address, int64_t tokens,
             const std::unordered_map<std::string, size_t>* word_index, const StandInEngine* engine,
             bool paced)
      : word_index_(word_index), engine_(engine), paced_(paced) {
    request_.set_text("Hello, tell me a story.");
    request_.set_max_tokens(tokens);
    request_.mutable_sampling()->set_temperature(0);
    for (int i = 0; i < kChannels; ++i) {
      grpc::ChannelArguments args;
      args.SetInt("r1.bench.channel", i);  // a distinct argument: a connection of its own
      args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
      stubs_.push_back(r1serve::v1::R1Serve::NewStub(
          grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args)));
    }
  }

  Results Run(int streams, double seconds) {
    stop_at_ = NowNs() + static_cast<int64_t>(seconds * 1e9);
    const int64_t t0 = NowNs();
    const double cpu0 = CpuSeconds();
    {
      std::unique_lock<std::mutex> lock(mu_);
      live_ = streams;
    }
    std::vector<std::unique_ptr<Stream>> all;
    for (int i = 0; i < streams; ++i) all.push_back(std::make_unique<Stream>(this, stubs_[i % kChannels].get()));
    for (auto& st : all) st->Call();
    {
      std::unique_lock<std::mutex> lock(mu_);
      done_cv_.wait(lock, [this] { return live_ == 0; });
    }
    r_.seconds = static_cast<double>(NowNs() - t0) * 1e-9;
    r_.cpu_seconds = CpuSeconds() - cpu0;
    return std::move(r_);
  }

 private:
  static constexpr int kChannels = 8;

  class Stream : public grpc::ClientReadReactor<r1serve::v1::GenerateChunk> {
   public:
    Stream(GrpcClient* c, r1serve::v1::R1Serve::Stub* stub) : client_(c), stub_(stub) {}
    void Call() {
      ctx_ = std::make_unique<grpc::ClientContext>();
      tokens_ = 0;
      sent_ns_ = NowNs();
      stub_->async()->Generate(ctx_.get(), &client_->request_, this);
      StartRead(&chunk_);
      StartCall();
    }
    void OnReadDone(bool ok) override {
      if (!ok) return;  // the stream ended: OnDone follows
      const int64_t now = NowNs();
      std::lock_guard<std::mutex> lock(client_->mu_);
      for (absl::string_view w : absl::StrSplit(chunk_.text(), ' ', absl::SkipEmpty())) {
        if (tokens_ == 0) first_ns_ = now;
        last_ns_ = now;
        ++tokens_;
        if (client_->paced_) {
          auto it = client_->word_index_->find(std::string(w));
          if (it == client_->word_index_->end()) {
            ++client_->r_.bad;
          } else {
            client_->r_.latency_ns.push_back(now - client_->engine_->step_time(it->second));
          }
        }
      }
      StartRead(&chunk_);
    }
    void OnDone(const grpc::Status& status) override {
      bool again = false;
      {
        std::lock_guard<std::mutex> lock(client_->mu_);
        Results& r = client_->r_;
        if (!status.ok()) ++r.bad;
        ++r.requests;
        r.tokens += tokens_;
        if (tokens_ > 1) {
          r.itl_sum_ns += static_cast<double>(last_ns_ - first_ns_);
          r.itl_count += tokens_ - 1;
        }
        if (tokens_ > 0) r.ttft_ns.push_back(first_ns_ - sent_ns_);
        again = status.ok() && NowNs() < client_->stop_at_;
        if (!again && --client_->live_ == 0) client_->done_cv_.notify_all();
      }
      if (again) Call();
    }

   private:
    GrpcClient* client_;
    r1serve::v1::R1Serve::Stub* stub_;
    std::unique_ptr<grpc::ClientContext> ctx_;
    r1serve::v1::GenerateChunk chunk_;
    int64_t sent_ns_ = 0, first_ns_ = 0, last_ns_ = 0, tokens_ = 0;
  };

  r1serve::v1::GenerateRequest request_;
  std::vector<std::unique_ptr<r1serve::v1::R1Serve::Stub>> stubs_;
  const std::unordered_map<std::string, size_t>* word_index_;
  const StandInEngine* engine_;
  bool paced_;
  int64_t stop_at_ = 0;
  std::mutex mu_;
  std::condition_variable done_cv_;
  int live_ = 0;
  Results r_;
};

double Percentile(std::vector<int64_t>& v, double p) {
  if (v.empty()) return 0;
  const size_t k = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<ptrdiff_t>(k), v.end());
  return static_cast<double>(v[k]) * 1e-6;  // ms
}
double Mean(const std::vector<int64_t>& v) {
  double s = 0;
  for (int64_t x : v) s += static_cast<double>(x);
  return v.empty() ? 0 : s / static_cast<double>(v.size()) * 1e-6;
}

int Main(int argc, char** argv) {
  CLI::App app{"bench_serving: HTTP/SSE and gRPC serving overhead with a stand-in engine, against a minimal SSE server"};
  std::string model_dir;
  std::vector<int> streams = {1, 100, 1000};
  double seconds = 5;
  int64_t tokens = 64;
  double interval_ms = 20;
  int http_threads = 2;
  app.add_option("--model", model_dir, "Folder with tokenizer.json, tokenizer_config.json (e.g. a make-tiny model)")->required();
  app.add_option("--streams", streams, "Concurrent streams, one run each")->capture_default_str();
  app.add_option("--seconds", seconds, "Seconds per run")->capture_default_str();
  app.add_option("--tokens", tokens, "Tokens per request (max_tokens)")->capture_default_str();
  app.add_option("--interval-ms", interval_ms, "Step period of the paced runs (0: skip them)")->capture_default_str();
  app.add_option("--http-threads", http_threads, "io threads of both servers")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  auto tokenizer = Tokenizer::Load(model_dir);
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(tokenizer.status().message()).c_str());
    return 1;
  }
  // Single-token lower-case words with a leading space: the step's word names the step.
  std::vector<int32_t> words;
  std::unordered_map<std::string, size_t> word_index;
  for (int32_t id = 0; id < (*tokenizer)->id_end() && words.size() < 4096; ++id) {
    const std::string t = (*tokenizer)->Decode({id});
    if (t.size() < 5 || t.size() > 13 || t[0] != ' ') continue;
    if (!std::all_of(t.begin() + 1, t.end(), [](char c) { return c >= 'a' && c <= 'z'; })) continue;
    if ((*tokenizer)->Encode(t, false) != std::vector<int32_t>{id}) continue;
    if (word_index.emplace(t.substr(1), words.size()).second) words.push_back(id);
  }
  std::printf("bench_serving: %zu single-token words; %ld tokens per request; %.0f s per run; %d io threads; %u CPUs\n",
              words.size(), static_cast<long>(tokens), seconds, http_threads, std::thread::hardware_concurrency());

  const std::string json = absl::StrCat(
      R"({"model":"bench","stream":true,"max_tokens":)", tokens,
      R"(,"temperature":0,"messages":[{"role":"user","content":"Hello, tell me a story."}]})");
  const std::string request =
      absl::StrCat("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: ",
                   json.size(), "\r\n\r\n", json);

  struct Row {
    std::string name;
    int streams;
    Results r;
  };
  auto run_grpc = [&](bool paced, int n) {
    StandInEngine engine(words, paced ? static_cast<int64_t>(interval_ms * 1000) : 0);
    http::Metrics metrics;
    grpc_api::GrpcApiOptions options;
    options.listen = "127.0.0.1:0";
    options.model_dir = model_dir;
    options.model_name = "bench";
    auto server = grpc_api::GrpcApiServer::Start(options, &engine, &metrics);
    if (!server.ok()) {
      std::fprintf(stderr, "error: %s\n", std::string(server.status().message()).c_str());
      std::exit(1);
    }
    GrpcClient client((*server)->address(), tokens, &word_index, &engine, paced);
    Results r = client.Run(n, seconds);
    (*server)->Shutdown(std::chrono::milliseconds(100));
    return r;
  };
  auto run = [&](bool floor, bool paced, int n) {
    StandInEngine engine(words, paced ? static_cast<int64_t>(interval_ms * 1000) : 0);
    std::unique_ptr<FloorServer> floor_server;
    std::unique_ptr<http::ApiServer> api;
    std::unique_ptr<http::HttpServer> server;
    int port;
    if (floor) {
      floor_server = std::make_unique<FloorServer>(engine, **tokenizer, tokens, http_threads);
      port = floor_server->port();
    } else {
      http::ApiOptions api_options;
      api_options.model_dir = model_dir;
      api_options.model_name = "bench";
      auto a = http::ApiServer::Create(api_options, &engine);
      if (!a.ok()) {
        std::fprintf(stderr, "error: %s\n", std::string(a.status().message()).c_str());
        std::exit(1);
      }
      api = std::move(*a);
      http::HttpServerOptions options;
      options.threads = http_threads;
      http::ApiServer* api_ptr = api.get();
      options.on_response = [api_ptr](const std::string& path, int status) {
        api_ptr->metrics().CountResponse(http::ApiServer::EndpointLabel(path), status);
      };
      auto s = http::HttpServer::Create(options, [api_ptr](http::HttpRequest r, std::shared_ptr<http::HttpExchange> ex) {
        api_ptr->Handle(std::move(r), std::move(ex));
      });
      if (!s.ok()) {
        std::fprintf(stderr, "error: %s\n", std::string(s.status().message()).c_str());
        std::exit(1);
      }
      server = std::move(*s);
      server->Start();
      port = server->port();
    }
    Client client(port, request, &word_index, &engine, paced);
    Results r = client.Run(n, seconds);
    if (server) server->Shutdown();
    return r;
  };

  for (bool paced : {false, true}) {
    if (paced && interval_ms <= 0) continue;
    if (!paced) {
      std::printf("\ninstant engine: time per token = a stream's first-to-last token time / tokens (all of it serving)\n");
      std::printf("%-7s %-8s %10s %12s %14s %12s %12s %10s\n", "streams", "server", "requests/s", "tokens/s",
                  "ms/token/strm", "TTFT p50 ms", "CPU us/tok", "errors");
    } else {
      std::printf("\npaced engine, one step every %.1f ms: latency = engine hands the token over -> client reads it\n", interval_ms);
      std::printf("%-7s %-8s %10s %12s %12s %12s %12s %10s\n", "streams", "server", "requests/s", "tokens/s",
                  "lat mean ms", "lat p50 ms", "lat p99 ms", "errors");
    }
    for (int n : streams) {
      Results rows[3];
      for (int f = 0; f < 3; ++f) {
        Results& r = rows[f] = f == 2 ? run_grpc(paced, n) : run(f == 1, paced, n);
        const char* name = f == 2 ? "r1 grpc" : f == 1 ? "floor" : "r1 http";
        const double rps = static_cast<double>(r.requests) / r.seconds;
        const double tps = static_cast<double>(r.tokens) / r.seconds;
        if (!paced) {
          std::printf("%-7d %-8s %10.0f %12.0f %14.4f %12.3f %12.2f %10ld\n", n, name, rps, tps,
                      r.itl_count ? r.itl_sum_ns / static_cast<double>(r.itl_count) * 1e-6 : 0.0,
                      Percentile(r.ttft_ns, 0.5), r.tokens ? r.cpu_seconds / static_cast<double>(r.tokens) * 1e6 : 0.0,
                      static_cast<long>(r.bad));
        } else {
          std::printf("%-7d %-8s %10.0f %12.0f %12.3f %12.3f %12.3f %10ld\n", n, name, rps, tps, Mean(r.latency_ns),
                      Percentile(r.latency_ns, 0.5), Percentile(r.latency_ns, 0.99), static_cast<long>(r.bad));
        }
        std::fflush(stdout);
      }
      if (!paced) {
        const double ours = rows[0].itl_count ? rows[0].itl_sum_ns / static_cast<double>(rows[0].itl_count) : 0;
        const double fl = rows[1].itl_count ? rows[1].itl_sum_ns / static_cast<double>(rows[1].itl_count) : 0;
        const double g = rows[2].itl_count ? rows[2].itl_sum_ns / static_cast<double>(rows[2].itl_count) : 0;
        std::printf("%-7d ratio    r1/floor: tokens/s %.2f, time per token %.2f; grpc/floor: tokens/s %.2f, time per token %.2f\n", n,
                    static_cast<double>(rows[0].tokens) / rows[0].seconds / (static_cast<double>(rows[1].tokens) / rows[1].seconds),
                    fl > 0 ? ours / fl : 0.0,
                    static_cast<double>(rows[2].tokens) / rows[2].seconds / (static_cast<double>(rows[1].tokens) / rows[1].seconds),
                    fl > 0 ? g / fl : 0.0);
      } else {
        std::printf("%-7d ratio    r1/floor: mean latency %.2f (added over the floor %.3f ms); grpc/floor %.2f (added %.3f ms)\n", n,
                    Mean(rows[0].latency_ns) / std::max(1e-9, Mean(rows[1].latency_ns)),
                    Mean(rows[0].latency_ns) - Mean(rows[1].latency_ns),
                    Mean(rows[2].latency_ns) / std::max(1e-9, Mean(rows[1].latency_ns)),
                    Mean(rows[2].latency_ns) - Mean(rows[1].latency_ns));
      }
    }
  }
  return 0;
}

}  // namespace
}  // namespace r1

int main(int argc, char** argv) { return r1::Main(argc, argv); }

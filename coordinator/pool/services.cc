#include "coordinator/pool/services.h"

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "coordinator/pool/generation.h"

namespace r1 {
namespace {

namespace pb = worker::v1;

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

// A worker's stream as a WorkerLink: Send() queues, a writer thread writes in order, so the pool
// never blocks on a slow or stopped worker while holding its lock.
class StreamLink : public WorkerLink {
 public:
  StreamLink(grpc::ServerContext* ctx, grpc::ServerReaderWriter<pb::CoordinatorMessage, pb::WorkerMessage>* stream)
      : ctx_(ctx), stream_(stream), writer_([this] { WriteLoop(); }) {}
  ~StreamLink() override { Finish(); }

  void Send(const pb::CoordinatorMessage& m) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return;
    queue_.push_back(m);
    cv_.notify_all();
  }

  void Close() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
      cv_.notify_all();
    }
    ctx_->TryCancel();
  }

  // Writes what is queued, then stops the writer. Called by the stream's handler before it returns.
  void Finish() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      finishing_ = true;
      cv_.notify_all();
    }
    if (writer_.joinable()) writer_.join();
  }

 private:
  void WriteLoop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return closed_ || finishing_ || !queue_.empty(); });
      if (closed_ || queue_.empty()) return;
      pb::CoordinatorMessage m = std::move(queue_.front());
      queue_.pop_front();
      lock.unlock();
      const bool ok = stream_->Write(m);
      lock.lock();
      if (!ok) {
        closed_ = true;
        return;
      }
    }
  }

  grpc::ServerContext* ctx_;
  grpc::ServerReaderWriter<pb::CoordinatorMessage, pb::WorkerMessage>* stream_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<pb::CoordinatorMessage> queue_;
  bool closed_ = false, finishing_ = false;
  std::thread writer_;  // last: starts after the members it uses
};

class WorkerControlService : public pb::WorkerControl::Service {
 public:
  explicit WorkerControlService(WorkerPool& pool) : pool_(pool) {}

  grpc::Status Connect(grpc::ServerContext* ctx,
                       grpc::ServerReaderWriter<pb::CoordinatorMessage, pb::WorkerMessage>* stream) override {
    pb::WorkerMessage m;
    if (!stream->Read(&m)) return grpc::Status(grpc::StatusCode::CANCELLED, "closed before Register");
    auto link = std::make_shared<StreamLink>(ctx, stream);
    if (!m.has_register_()) {
      pb::CoordinatorMessage refused;
      refused.mutable_refused()->set_reason("the first message on a worker stream must be Register");
      link->Send(refused);
      link->Finish();
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "expected Register");
    }
    auto id = pool_.Register(m.register_(), link);
    if (!id.ok()) {
      link->Finish();  // the Refused message goes out before the stream ends
      return ToGrpc(id.status());
    }
    while (stream->Read(&m)) pool_.OnMessage(*id, m);
    pool_.OnDisconnect(*id, "stream closed");
    link->Close();
    link->Finish();
    return grpc::Status::OK;
  }

  grpc::Status StoreSet(grpc::ServerContext*, const pb::StoreSetRequest* req, pb::StoreSetReply*) override {
    pool_.store().Set(req->key(), req->value());
    return grpc::Status::OK;
  }

  grpc::Status StoreGet(grpc::ServerContext*, const pb::StoreGetRequest* req, pb::StoreGetReply* reply) override {
    // Bounded, so a waiting rank never holds a server thread for long.
    const auto timeout = std::chrono::milliseconds(std::clamp<int64_t>(req->timeout_ms(), 0, 10000));
    auto v = pool_.store().Get(req->key(), timeout);
    if (!v.ok()) return ToGrpc(v.status());
    reply->set_value(std::move(*v));
    return grpc::Status::OK;
  }

 private:
  WorkerPool& pool_;
};

class CoordinatorService : public pb::Coordinator::Service {
 public:
  explicit CoordinatorService(WorkerPool& pool) : pool_(pool) {}

  grpc::Status Status(grpc::ServerContext*, const pb::StatusRequest*, pb::StatusReply* reply) override {
    *reply = pool_.Status();
    return grpc::Status::OK;
  }

  grpc::Status Generate(grpc::ServerContext*, const pb::GenerateRequest* req, pb::GenerateReply* reply) override {
    auto r = GenerateOnPool(pool_, *req);
    if (!r.ok()) {
      R1_LOG(WARNING) << "generate failed: " << r.status().message();
      return ToGrpc(r.status());
    }
    *reply = std::move(*r);
    return grpc::Status::OK;
  }

 private:
  WorkerPool& pool_;
};

}  // namespace

std::unique_ptr<pb::WorkerControl::Service> CreateWorkerControlService(WorkerPool& pool) {
  return std::make_unique<WorkerControlService>(pool);
}
std::unique_ptr<pb::Coordinator::Service> CreateCoordinatorService(WorkerPool& pool) {
  return std::make_unique<CoordinatorService>(pool);
}

}  // namespace r1

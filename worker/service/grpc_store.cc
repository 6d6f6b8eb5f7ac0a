#include "worker/service/grpc_store.h"

#include <algorithm>
#include <stdexcept>

#include "absl/strings/str_cat.h"

namespace r1 {
namespace {

using Clock = std::chrono::steady_clock;
namespace pb = worker::v1;

// The coordinator holds a StoreGet open at most this long; the worker asks again until its own
// deadline, so a slow peer never pins a server thread for the whole rendezvous timeout.
constexpr std::chrono::milliseconds kPollSlice{2000};

}  // namespace

GrpcStore::GrpcStore(std::shared_ptr<grpc::Channel> channel, std::string prefix, std::chrono::milliseconds timeout)
    : stub_(pb::WorkerControl::NewStub(channel)), prefix_(std::move(prefix)), timeout_(timeout) {}

void GrpcStore::set(const std::string& key, const std::vector<char>& data) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + timeout_);  // gRPC deadlines: system_clock
  pb::StoreSetRequest req;
  req.set_key(prefix_ + key);
  req.set_value(std::string(data.begin(), data.end()));
  pb::StoreSetReply reply;
  const grpc::Status s = stub_->StoreSet(&ctx, req, &reply);
  if (!s.ok()) throw std::runtime_error(absl::StrCat("rendezvous store: set ", prefix_, key, ": ", s.error_message()));
}

std::vector<char> GrpcStore::get(const std::string& key) { return GetWithin(key, timeout_); }

void GrpcStore::wait(const std::vector<std::string>& keys) { wait(keys, timeout_); }

void GrpcStore::wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) {
  const auto deadline = Clock::now() + timeout;
  for (const auto& key : keys) {
    GetWithin(key, std::max(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()),
                            std::chrono::milliseconds(1)));
  }
}

std::vector<char> GrpcStore::GetWithin(const std::string& key, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  std::string last_error = "not set";
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) break;
    const auto slice = std::min(left, kPollSlice);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + slice + std::chrono::seconds(2));
    pb::StoreGetRequest req;
    req.set_key(prefix_ + key);
    req.set_timeout_ms(slice.count());
    pb::StoreGetReply reply;
    const grpc::Status s = stub_->StoreGet(&ctx, req, &reply);
    if (s.ok()) return std::vector<char>(reply.value().begin(), reply.value().end());
    last_error = s.error_message();
    if (s.error_code() != grpc::StatusCode::NOT_FOUND) break;
  }
  throw std::runtime_error(absl::StrCat("rendezvous store: key ", prefix_, key, " not available within ",
                                        timeout.count(), " ms (", last_error, ")"));
}

}  // namespace r1

#include "worker/parallel/gloo_communicator.h"

#include <exception>

#include "absl/strings/str_cat.h"
#include "gloo/allgather.h"
#include "gloo/allreduce.h"
#include "gloo/barrier.h"
#include "gloo/broadcast.h"
#include "gloo/rendezvous/context.h"
#include "gloo/transport/tcp/device.h"

namespace r1 {
namespace {

// Gloo reports errors by exception; they stop here and become a Status.
template <typename F>
absl::Status Guard(const char* what, F&& f) {
  try {
    f();
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("gloo ", what, ": ", e.what()));
  }
}

void SumFloats(void* c, const void* a, const void* b, size_t n) {
  auto* out = static_cast<float*>(c);
  const auto* x = static_cast<const float*>(a);
  const auto* y = static_cast<const float*>(b);
  for (size_t i = 0; i < n; ++i) out[i] = x[i] + y[i];
}

class GlooCommunicator : public Communicator {
 public:
  GlooCommunicator(std::shared_ptr<gloo::rendezvous::Context> ctx, std::chrono::milliseconds timeout)
      : ctx_(std::move(ctx)), timeout_(timeout) {}
  int rank() const override { return ctx_->rank; }
  int world_size() const override { return ctx_->size; }
  std::string name() const override { return "gloo tcp"; }

  absl::Status AllReduceSum(float* data, size_t count) override {
    if (count == 0) return absl::OkStatus();
    return Guard("allreduce", [&] {
      gloo::AllreduceOptions opts(ctx_);
      opts.setOutput(data, count);
      opts.setReduceFunction(&SumFloats);
      opts.setTimeout(timeout_);
      opts.setTag(tag_++);
      gloo::allreduce(opts);
    });
  }
  absl::Status AllGather(const float* in, size_t count, float* out) override {
    return Guard("allgather", [&] {
      gloo::AllgatherOptions opts(ctx_);
      opts.setInput(const_cast<float*>(in), count);
      opts.setOutput(out, count * ctx_->size);
      opts.setTimeout(timeout_);
      opts.setTag(tag_++);
      gloo::allgather(opts);
    });
  }
  absl::Status Broadcast(void* data, size_t bytes, int root) override {
    return Guard("broadcast", [&] {
      gloo::BroadcastOptions opts(ctx_);
      opts.setOutput(static_cast<uint8_t*>(data), bytes);
      opts.setRoot(root);
      opts.setTimeout(timeout_);
      opts.setTag(tag_++);
      gloo::broadcast(opts);
    });
  }
  absl::Status Barrier() override {
    return Guard("barrier", [&] {
      gloo::BarrierOptions opts(ctx_);
      opts.setTimeout(timeout_);
      opts.setTag(tag_++);
      gloo::barrier(opts);
    });
  }

 private:
  std::shared_ptr<gloo::rendezvous::Context> ctx_;
  std::chrono::milliseconds timeout_;
  uint32_t tag_ = 1;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> CreateGlooCommunicator(
    const ParallelLayout& layout, std::shared_ptr<gloo::rendezvous::Store> store, const GlooOptions& options) {
  if (layout.world_size < 1 || layout.rank < 0 || layout.rank >= layout.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("gloo: bad layout rank ", layout.rank, " of ", layout.world_size));
  }
  std::shared_ptr<gloo::rendezvous::Context> ctx;
  absl::Status s = Guard("rendezvous", [&] {
    gloo::transport::tcp::attr attr;
    attr.hostname = options.hostname;
    auto device = gloo::transport::tcp::CreateDevice(attr);
    ctx = std::make_shared<gloo::rendezvous::Context>(layout.rank, layout.world_size);
    ctx->setTimeout(options.timeout);
    ctx->connectFullMesh(*store, device);
  });
  if (!s.ok()) return s;
  return std::unique_ptr<Communicator>(new GlooCommunicator(std::move(ctx), options.timeout));
}

}  // namespace r1

#include "worker/parallel/nccl_communicator.h"

#include <nccl.h>

#include <cstring>

#include "absl/strings/str_cat.h"

namespace r1 {
namespace {

static_assert(sizeof(ncclUniqueId) == sizeof(NcclUniqueId), "NCCL_UNIQUE_ID_BYTES changed");

absl::Status NcclError(ncclResult_t r, const char* what) {
  if (r == ncclSuccess) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat("nccl ", what, ": ", ncclGetErrorString(r)));
}

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, int rank, int size, cudaStream_t stream)
      : comm_(comm), rank_(rank), size_(size), stream_(stream) {}
  ~NcclCommunicator() override { ncclCommDestroy(comm_); }
  int rank() const override { return rank_; }
  int world_size() const override { return size_; }
  std::string name() const override { return "nccl"; }

  absl::Status AllReduceSum(float* data, size_t count) override {
    return NcclError(ncclAllReduce(data, data, count, ncclFloat32, ncclSum, comm_, stream_), "allreduce");
  }
  absl::Status AllGather(const float* in, size_t count, float* out) override {
    return NcclError(ncclAllGather(in, out, count, ncclFloat32, comm_, stream_), "allgather");
  }
  absl::Status Broadcast(void* data, size_t bytes, int root) override {
    return NcclError(ncclBroadcast(data, data, bytes, ncclUint8, root, comm_, stream_), "broadcast");
  }
  absl::Status Barrier() override {
    // An all-reduce of one value is the barrier; waiting for the stream makes it one for the host.
    if (scratch_ == nullptr && cudaMalloc(&scratch_, sizeof(float)) != cudaSuccess) {
      return absl::ResourceExhaustedError("nccl barrier: cannot allocate scratch");
    }
    if (auto s = AllReduceSum(scratch_, 1); !s.ok()) return s;
    const cudaError_t e = cudaStreamSynchronize(stream_);
    if (e != cudaSuccess) return absl::InternalError(absl::StrCat("nccl barrier: ", cudaGetErrorString(e)));
    return absl::OkStatus();
  }

 private:
  ncclComm_t comm_;
  int rank_, size_;
  cudaStream_t stream_;
  float* scratch_ = nullptr;
};

}  // namespace

absl::StatusOr<NcclUniqueId> MakeNcclUniqueId() {
  ncclUniqueId id;
  if (auto s = NcclError(ncclGetUniqueId(&id), "get unique id"); !s.ok()) return s;
  NcclUniqueId out;
  std::memcpy(out.data(), &id, sizeof id);
  return out;
}

absl::StatusOr<NcclUniqueId> ShareNcclUniqueId(Communicator& bootstrap) {
  NcclUniqueId id{};
  if (bootstrap.rank() == 0) {
    auto made = MakeNcclUniqueId();
    if (!made.ok()) return made.status();
    id = *made;
  }
  if (auto s = bootstrap.Broadcast(id.data(), id.size(), 0); !s.ok()) return s;
  return id;
}

absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(const ParallelLayout& layout,
                                                                     const NcclUniqueId& id, int device,
                                                                     cudaStream_t stream) {
  if (layout.world_size < 1 || layout.rank < 0 || layout.rank >= layout.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("nccl: bad layout rank ", layout.rank, " of ", layout.world_size));
  }
  const cudaError_t e = cudaSetDevice(device);
  if (e != cudaSuccess) return absl::UnavailableError(absl::StrCat("nccl: cudaSetDevice(", device, "): ", cudaGetErrorString(e)));
  ncclUniqueId nid;
  std::memcpy(&nid, id.data(), sizeof nid);
  ncclComm_t comm = nullptr;
  if (auto s = NcclError(ncclCommInitRank(&comm, layout.world_size, nid, layout.rank), "init rank"); !s.ok()) return s;
  return std::unique_ptr<Communicator>(new NcclCommunicator(comm, layout.rank, layout.world_size, stream));
}

}  // namespace r1

// Collectives between the W workers of one model: the only way ranks exchange activations.
// Implementations: MPI (CPU ranks under mpirun), Gloo (CPU ranks started without mpirun, e.g. by
// Kubernetes; rendezvous through a key-value store the coordinator serves), NCCL (GPU ranks).
// Buffers live where the backend computes: host memory for MPI and Gloo, device memory for NCCL.
// Every rank must call the same collectives in the same order with the same counts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace r1 {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // A short description for logs ("mpi", "gloo tcp", "nccl").
  virtual std::string name() const = 0;

  // data[i] = sum over ranks of data[i], in place.
  virtual absl::Status AllReduceSum(float* data, size_t count) = 0;
  // out [world_size * count] = concatenation over ranks of in [count].
  virtual absl::Status AllGather(const float* in, size_t count, float* out) = 0;
  // The root's `bytes` bytes at data, copied to every rank.
  virtual absl::Status Broadcast(void* data, size_t bytes, int root) = 0;
  virtual absl::Status Barrier() = 0;
};

// Which part of the model a rank holds: attention heads, dense and shared-expert intermediate
// columns and vocabulary rows split W ways (tensor parallel); routed experts split by expert
// (expert parallel).
struct ParallelLayout {
  int rank = 0;
  int world_size = 1;
};

// [begin, end) of `total` items owned by `rank` of `world` (total must divide evenly).
inline void ShardRange(int64_t total, const ParallelLayout& layout, int64_t* begin, int64_t* end) {
  const int64_t per = total / layout.world_size;
  *begin = per * layout.rank;
  *end = *begin + per;
}

}  // namespace r1

// Communicator over NCCL, for GPU ranks: buffers are device memory, collectives are enqueued on
// the communicator's stream (the model's stream), so they order with the kernels around them;
// Barrier waits for the stream. The unique id comes from rank 0 (MakeNcclUniqueId) and reaches
// the others by MPI broadcast (mpirun) or through the coordinator (registration).
#pragma once

#include <cuda_runtime.h>

#include <array>
#include <memory>

#include "absl/status/statusor.h"
#include "worker/parallel/communicator.h"

namespace r1 {

using NcclUniqueId = std::array<char, 128>;  // ncclUniqueId's bytes (NCCL_UNIQUE_ID_BYTES)

absl::StatusOr<NcclUniqueId> MakeNcclUniqueId();

// Rank 0 makes the id and `bootstrap` (the CPU communicator: MPI under mpirun, Gloo after
// registration) broadcasts it to every rank.
absl::StatusOr<NcclUniqueId> ShareNcclUniqueId(Communicator& bootstrap);

// Joins the group: every rank calls this with the same id; `device` is this rank's GPU.
absl::StatusOr<std::unique_ptr<Communicator>> CreateNcclCommunicator(const ParallelLayout& layout,
                                                                     const NcclUniqueId& id, int device,
                                                                     cudaStream_t stream);

}  // namespace r1

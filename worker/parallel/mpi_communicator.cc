#include "worker/parallel/mpi_communicator.h"

#include <mpi.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace r1 {
namespace {

absl::Status MpiError(int code, const char* what) {
  if (code == MPI_SUCCESS) return absl::OkStatus();
  char msg[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, msg, &len);
  return absl::UnavailableError(absl::StrCat("mpi ", what, ": ", std::string(msg, len)));
}

class MpiCommunicator : public Communicator {
 public:
  MpiCommunicator(int rank, int size) : rank_(rank), size_(size) {}
  int rank() const override { return rank_; }
  int world_size() const override { return size_; }
  std::string name() const override { return "mpi"; }

  absl::Status AllReduceSum(float* data, size_t count) override {
    return MpiError(MPI_Allreduce(MPI_IN_PLACE, data, static_cast<int>(count), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD),
                    "allreduce");
  }
  absl::Status AllGather(const float* in, size_t count, float* out) override {
    return MpiError(MPI_Allgather(in, static_cast<int>(count), MPI_FLOAT, out, static_cast<int>(count), MPI_FLOAT,
                                  MPI_COMM_WORLD),
                    "allgather");
  }
  absl::Status Broadcast(void* data, size_t bytes, int root) override {
    return MpiError(MPI_Bcast(data, static_cast<int>(bytes), MPI_BYTE, root, MPI_COMM_WORLD), "broadcast");
  }
  absl::Status Barrier() override { return MpiError(MPI_Barrier(MPI_COMM_WORLD), "barrier"); }

 private:
  int rank_, size_;
};

}  // namespace

bool LaunchedByMpirun() {
  return std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr || std::getenv("PMI_SIZE") != nullptr ||
         std::getenv("PMIX_RANK") != nullptr;
}

absl::StatusOr<ParallelLayout> InitMpi(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
      return absl::UnavailableError("MPI_Init_thread failed");
    }
    // Errors come back as codes (turned into Status), not as an abort of the whole job.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  }
  ParallelLayout layout;
  MPI_Comm_rank(MPI_COMM_WORLD, &layout.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &layout.world_size);
  return layout;
}

void FinalizeMpi() {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Finalize();
}

absl::StatusOr<std::unique_ptr<Communicator>> CreateMpiCommunicator() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) return absl::FailedPreconditionError("CreateMpiCommunicator before InitMpi");
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  return std::unique_ptr<Communicator>(new MpiCommunicator(rank, size));
}

}  // namespace r1

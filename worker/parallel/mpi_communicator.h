// Communicator over MPI (Open MPI), for CPU ranks launched by mpirun. MPI_Init happens in
// InitMpi(), once per process, before anything else.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "worker/parallel/communicator.h"

namespace r1 {

// Initialises MPI (thread level FUNNELED) once; returns the world layout.
absl::StatusOr<ParallelLayout> InitMpi(int* argc, char*** argv);
// True when the process was started by mpirun (OMPI_COMM_WORLD_SIZE / PMI_SIZE in the environment).
bool LaunchedByMpirun();
void FinalizeMpi();

absl::StatusOr<std::unique_ptr<Communicator>> CreateMpiCommunicator();

}  // namespace r1

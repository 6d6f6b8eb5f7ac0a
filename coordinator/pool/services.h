// The coordinator's gRPC services over a WorkerPool: WorkerControl (the workers' streams and the
// Gloo rendezvous store) and Coordinator (Status and Generate, for `r1 generate --coordinator`
// and the tests). Errors become gRPC status codes here and nowhere else.
#pragma once

#include <memory>

#include "coordinator/pool/worker_pool.h"
#include "proto/worker.grpc.pb.h"

namespace r1 {

std::unique_ptr<worker::v1::WorkerControl::Service> CreateWorkerControlService(WorkerPool& pool);
std::unique_ptr<worker::v1::Coordinator::Service> CreateCoordinatorService(WorkerPool& pool);

}  // namespace r1

// Communicator over Gloo's TCP transport, for CPU ranks started without mpirun (Kubernetes pods,
// plain processes). Ranks find each other through a key-value store: gloo::rendezvous::Store,
// which the coordinator serves over gRPC in production and an in-process HashStore in tests.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "gloo/rendezvous/store.h"
#include "worker/parallel/communicator.h"

namespace r1 {

struct GlooOptions {
  std::string hostname = "127.0.0.1";  // address this rank listens on for its peers
  std::chrono::milliseconds timeout{30000};  // rendezvous and per-collective timeout
};

absl::StatusOr<std::unique_ptr<Communicator>> CreateGlooCommunicator(
    const ParallelLayout& layout, std::shared_ptr<gloo::rendezvous::Store> store, const GlooOptions& options);

}  // namespace r1

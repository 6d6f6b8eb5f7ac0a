// gloo::rendezvous::Store over the coordinator's WorkerControl.StoreSet/StoreGet RPCs: how Gloo
// ranks started without mpirun (Kubernetes pods, plain processes) find each other. Every key is
// put under `prefix`, fresh for each formation of the group, so a re-formed group never reads a
// dead rank's address.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "gloo/rendezvous/store.h"
#include "grpcpp/grpcpp.h"
#include "proto/worker.grpc.pb.h"

namespace r1 {

class GrpcStore : public gloo::rendezvous::Store {
 public:
  // `timeout` bounds every get/wait (Gloo's own calls pass theirs through wait()).
  GrpcStore(std::shared_ptr<grpc::Channel> channel, std::string prefix, std::chrono::milliseconds timeout);

  // Gloo reports errors by exception: these throw std::runtime_error naming the key.
  void set(const std::string& key, const std::vector<char>& data) override;
  std::vector<char> get(const std::string& key) override;
  void wait(const std::vector<std::string>& keys) override;
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds& timeout) override;

 private:
  std::vector<char> GetWithin(const std::string& key, std::chrono::milliseconds timeout);

  std::unique_ptr<worker::v1::WorkerControl::Stub> stub_;
  std::string prefix_;
  std::chrono::milliseconds timeout_;
};

}  // namespace r1

// The key-value store Gloo ranks rendezvous through (served as WorkerControl.StoreSet/StoreGet).
// Keys carry the group's prefix; Clear() forgets everything when a new group forms.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>

#include "absl/status/statusor.h"

namespace r1 {

class RendezvousStore {
 public:
  void Set(const std::string& key, std::string value);
  // The value of `key`, waiting up to `timeout` for it to be set; NOT_FOUND after that.
  absl::StatusOr<std::string> Get(const std::string& key, std::chrono::milliseconds timeout);
  void Clear();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, std::string> values_;
};

}  // namespace r1

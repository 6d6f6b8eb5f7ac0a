#include "coordinator/pool/rendezvous_store.h"

#include "absl/strings/str_cat.h"

namespace r1 {

void RendezvousStore::Set(const std::string& key, std::string value) {
  std::lock_guard<std::mutex> lock(mu_);
  values_[key] = std::move(value);
  cv_.notify_all();
}

absl::StatusOr<std::string> RendezvousStore::Get(const std::string& key, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  if (!cv_.wait_for(lock, timeout, [&] { return values_.count(key) > 0; })) {
    return absl::NotFoundError(absl::StrCat("rendezvous key ", key, " not set within ", timeout.count(), " ms"));
  }
  return values_[key];
}

void RendezvousStore::Clear() {
  std::lock_guard<std::mutex> lock(mu_);
  values_.clear();
}

}  // namespace r1

// Keeping a long-running server's resident memory near what it uses.
//
// glibc's malloc gives each thread that allocates an arena of its own (up to 8 per core) and keeps
// the memory freed in them. A server whose threads take turns allocating short-lived buffers (gRPC
// messages, per-step logits, JSON) grows by the sum of every arena's high-water mark: measured in
// the cluster soak (tests/cluster), r1-coordinator grew from 126 to 600 MiB over 10 minutes of
// steady load while 141 MB were in use; with two arenas and blocks over 64 KB mapped on their own
// (MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=65536) it stayed at 92 MiB with no trend. MemoryTrimmer
// applies those two settings and also hands free pages back to the kernel periodically
// (malloc_trim, which releases whole free pages inside arenas too).
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

namespace r1 {

class MemoryTrimmer {
 public:
  // Caps malloc's arenas at `max_arenas` and maps blocks of `mmap_threshold` bytes or more on
  // their own (call it before the threads that would create more arenas start), and trims every
  // `period`. Environment settings (MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_) win. A no-op where
  // the C library is not glibc.
  explicit MemoryTrimmer(std::chrono::milliseconds period = std::chrono::seconds(2), int max_arenas = 2,
                         int mmap_threshold = 64 << 10);
  ~MemoryTrimmer();
  MemoryTrimmer(const MemoryTrimmer&) = delete;
  MemoryTrimmer& operator=(const MemoryTrimmer&) = delete;
  // Trims performed so far (tests).
  int trims() const;

 private:
  void Run();
  std::chrono::milliseconds period_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  int trims_ = 0;
  std::thread thread_;
};

}  // namespace r1

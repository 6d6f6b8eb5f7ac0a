// The trimmer's effect on a server's memory is checked by the cluster soak (tests/cluster,
// -DR1_SOAK=ON), where the growth it fixes was measured; here: it runs and stops.
#include "common/memory.h"

#include <chrono>
#include <thread>

#include "gtest/gtest.h"

namespace r1 {
namespace {

TEST(MemoryTrimmer, TrimsPeriodicallyAndStops) {
  int trims = 0;
  {
    MemoryTrimmer trimmer(std::chrono::milliseconds(10));
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (trimmer.trims() < 3 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    trims = trimmer.trims();
  }  // the destructor must stop and join the thread promptly
  EXPECT_GE(trims, 3);
}


}  // namespace
}  // namespace r1

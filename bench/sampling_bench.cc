// The engine's token choice for one decode step at R1's vocabulary (129280): ChooseTokens over
// 1-256 rows, on one thread (the reference: how the engine chose tokens before) and on all of
// them. The floor is reading every row's logits once, at the memory rate measured in the same run
// (a memcpy of the same bytes, read + written counted).
//   build/bench/bench_sampling [--vocab N] [--threads N] [--reps N]
// Prints, per sampling setting and row count: ms per step one thread / all threads, the speed-up,
// and the all-threads time over the floor.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "coordinator/engine/sampling.h"

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// Read + write GB/s of a memcpy of `bytes` (best of 5), the memory floor's rate.
double MemcpyGBs(size_t bytes) {
  std::vector<char> src(bytes, 1), dst(bytes, 0);
  double best = 1e30;
  for (int i = 0; i < 5; ++i) {
    const auto t0 = Clock::now();
    std::memcpy(dst.data(), src.data(), bytes);
    best = std::min(best, Seconds(t0, Clock::now()));
  }
  volatile char sink = dst[bytes / 2];
  (void)sink;
  return 2.0 * bytes / best / 1e9;
}

}  // namespace

int main(int argc, char** argv) {
  int64_t vocab = 129280;
  int threads = omp_get_max_threads(), reps = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--vocab" && i + 1 < argc) vocab = std::atol(argv[++i]);
    else if (a == "--threads" && i + 1 < argc) threads = std::atoi(argv[++i]);
    else if (a == "--reps" && i + 1 < argc) reps = std::atoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--vocab N (129280)] [--threads N (all)] [--reps N (5)]\n", argv[0]);
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  if (vocab < 2 || threads < 1 || reps < 1) return 2;
  const std::vector<int64_t> row_counts = {1, 8, 64, 256};
  const int64_t max_rows = row_counts.back();
  std::vector<float> logits(max_rows * vocab);
  std::mt19937_64 rng(1);
  // Shaped like a language model's logits: a broad N(0, 2.5) body and, per row, 16 likely tokens
  // 8-16 above it (the nucleus at top_p 0.95 and temperature 0.6 is then a few tokens, not the
  // body; with the body alone it would hold thousands).
  std::normal_distribution<float> nd(0.0f, 2.5f);
  std::uniform_real_distribution<float> lift(8.0f, 16.0f);
  std::uniform_int_distribution<int64_t> pick(0, vocab - 1);
  for (float& x : logits) x = nd(rng);
  for (int64_t r = 0; r < max_rows; ++r)
    for (int i = 0; i < 16; ++i) logits[r * vocab + pick(rng)] += lift(rng);
  const double gbs = MemcpyGBs(logits.size() * sizeof(float));
  std::printf("vocab %ld, %d threads, memcpy %.1f GB/s (read + write; the floor's rate)\n", static_cast<long>(vocab),
              threads, gbs);
  std::printf("%-34s %5s %10s %10s %8s %9s %8s\n", "sampling", "rows", "1 thread", "threads", "speedup", "floor",
              "x floor");

  struct Setting {
    const char* name;
    r1::EngineSampling s;
  };
  std::vector<Setting> settings(3);
  settings[0].name = "greedy";
  settings[0].s.temperature = 0.0f;
  settings[1].name = "temperature 0.6, top_p 0.95";
  settings[1].s.temperature = 0.6f, settings[1].s.top_p = 0.95f;
  settings[2].name = "temperature 0.6, top_p 0.95, lp 5";
  settings[2].s.temperature = 0.6f, settings[2].s.top_p = 0.95f, settings[2].s.logprobs = true;
  settings[2].s.top_logprobs = 5;
  for (const Setting& st : settings) {
    for (const int64_t rows : row_counts) {
      std::vector<r1::SamplerState> states(rows);
      for (int64_t r = 0; r < rows; ++r) states[r].Init(st.s, 7, static_cast<int32_t>(r), {});
      auto time_step = [&](int width) {
        double best = 1e30;
        for (int rep = 0; rep < reps; ++rep) {
          std::vector<r1::SamplingJob> jobs(rows);
          for (int64_t r = 0; r < rows; ++r) {
            jobs[r].logits = logits.data() + r * vocab, jobs[r].sampling = &st.s, jobs[r].state = &states[r];
          }
          const auto t0 = Clock::now();
          r1::ChooseTokens(absl::MakeSpan(jobs), vocab, width);
          best = std::min(best, Seconds(t0, Clock::now()));
        }
        return best * 1e3;
      };
      const double one = time_step(1), all = time_step(threads);
      const double floor_ms = rows * vocab * 4.0 / (gbs * 1e9) * 1e3;
      std::printf("%-34s %5ld %8.3f ms %8.3f ms %7.2fx %7.3f ms %7.1fx\n", st.name, static_cast<long>(rows), one, all,
                  one / all, floor_ms, all / floor_ms);
    }
  }
  return 0;
}

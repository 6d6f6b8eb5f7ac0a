// The CPU ops against plain double-precision loops, on awkward sizes.
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/ops.h"
#include "tests/unit/test_util.h"

namespace r1 {
namespace {

std::vector<float> Random(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}

TEST(CpuOps, MatMulMatchesDoubleLoop) {
  for (int64_t m : {1, 3, 4, 5, 63}) {
    for (int64_t k : {1, 7, 64, 129}) {
      for (int64_t n : {1, 3, 65, 130}) {
        auto x = Random(m * k, 1), w = Random(n * k, 2);
        std::vector<float> y(m * n, 0.0f), want(m * n);
        cpu::MatMulNT(x.data(), m, k, w.data(), n, y.data());
        for (int64_t i = 0; i < m; ++i)
          for (int64_t j = 0; j < n; ++j) {
            double s = 0;
            for (int64_t t = 0; t < k; ++t) s += static_cast<double>(x[i * k + t]) * w[j * k + t];
            want[i * n + j] = static_cast<float>(s);
          }
        EXPECT_LE(testing::RelL2(y.data(), want.data(), y.size()), 1e-6) << m << "x" << k << "x" << n;
        cpu::MatMulNTAccumulate(x.data(), m, k, w.data(), n, y.data());
        for (float& v : want) v *= 2;
        EXPECT_LE(testing::RelL2(y.data(), want.data(), y.size()), 1e-6) << "accumulate " << m << "x" << k << "x" << n;
      }
    }
  }
}

TEST(CpuOps, RmsNormAndSoftmax) {
  auto x = Random(3 * 17, 3), w = Random(17, 4);
  std::vector<float> out(3 * 17);
  cpu::RmsNorm(x.data(), 3, 17, 17, w.data(), 1e-6f, out.data(), 17);
  for (int r = 0; r < 3; ++r) {
    double ms = 0;
    for (int i = 0; i < 17; ++i) ms += x[r * 17 + i] * x[r * 17 + i];
    ms /= 17;
    for (int i = 0; i < 17; ++i) EXPECT_NEAR(out[r * 17 + i], x[r * 17 + i] / std::sqrt(ms + 1e-6) * w[i], 1e-5);
  }
  std::vector<float> s = {1000.0f, 1000.0f, -1000.0f};
  cpu::Softmax(s.data(), 3);
  EXPECT_FLOAT_EQ(s[0], 0.5f);
  EXPECT_FLOAT_EQ(s[2], 0.0f);
}

TEST(CpuOps, RopeRotatesPairsAndKeepsNorm) {
  const int64_t dim = 8;
  std::vector<float> inv = {1.0f, 0.1f, 0.01f, 0.001f};
  for (bool interleave : {true, false}) {
    auto x = Random(2 * dim, 5);
    auto y = x;
    const int64_t pos[] = {0, 7};
    cpu::ApplyRope(y.data(), 2, 1, dim, dim, pos, inv.data(), 1.0f, interleave);
    for (int i = 0; i < dim; ++i) EXPECT_FLOAT_EQ(y[i], x[i]);  // position 0: identity
    for (int i = 0; i < dim / 2; ++i) {
      const int a = interleave ? 2 * i : i, b = interleave ? 2 * i + 1 : i + dim / 2;
      const double c = std::cos(7.0f * inv[i]), s = std::sin(7.0f * inv[i]);
      EXPECT_NEAR(y[dim + a], x[dim + a] * c - x[dim + b] * s, 1e-5);
      EXPECT_NEAR(y[dim + b], x[dim + b] * c + x[dim + a] * s, 1e-5);
    }
  }
}

}  // namespace
}  // namespace r1

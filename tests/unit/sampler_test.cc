#include "worker/sampler.h"

#include <map>
#include <vector>

#include "gtest/gtest.h"

namespace r1 {
namespace {

TEST(Sampler, GreedyPicksArgmax) {
  std::vector<float> l = {0.1f, 2.0f, -1.0f, 1.9f};
  std::mt19937_64 rng(0);
  EXPECT_EQ(SampleToken(l.data(), 4, {}, rng), 1);
  EXPECT_NEAR(TopTwoMargin(l.data(), 4), 0.1f, 1e-6);
}

TEST(Sampler, TopKOneIsGreedyAndSeedsRepeat) {
  std::vector<float> l(50);
  for (int i = 0; i < 50; ++i) l[i] = static_cast<float>((i * 37) % 50) / 10.0f;
  SamplingParams p{1.0f, 1.0f, 1, 7};
  std::mt19937_64 rng(p.seed);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(SampleToken(l.data(), 50, p, rng), 27);  // (27 * 37) % 50 = 49: the largest
  p.top_k = 0;
  std::mt19937_64 a(11), b(11);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(SampleToken(l.data(), 50, p, a), SampleToken(l.data(), 50, p, b));
}

TEST(Sampler, TopPKeepsOnlyTheNucleus) {
  // Probabilities ~ {0.64, 0.24, 0.09, 0.03}: top_p 0.8 keeps the first two.
  std::vector<float> l = {3.0f, 2.0f, 1.0f, 0.0f};
  SamplingParams p{1.0f, 0.8f, 0, 3};
  std::mt19937_64 rng(p.seed);
  std::map<int, int> seen;
  for (int i = 0; i < 2000; ++i) ++seen[SampleToken(l.data(), 4, p, rng)];
  EXPECT_EQ(seen.count(2) + seen.count(3), 0u);
  EXPECT_GT(seen[0], seen[1]);
  EXPECT_GT(seen[1], 300);
}

TEST(Sampler, RejectsBadParameters) {
  EXPECT_FALSE(ValidateSampling({-1.0f, 1.0f, 0, 0}).ok());
  EXPECT_FALSE(ValidateSampling({1.0f, 0.0f, 0, 0}).ok());
  EXPECT_FALSE(ValidateSampling({1.0f, 1.5f, 0, 0}).ok());
  EXPECT_FALSE(ValidateSampling({1.0f, 1.0f, -2, 0}).ok());
  EXPECT_TRUE(ValidateSampling({0.6f, 0.95f, 40, 0}).ok());
}

}  // namespace
}  // namespace r1

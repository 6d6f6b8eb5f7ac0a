#include "worker/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"

namespace r1 {

absl::Status ValidateSampling(const SamplingParams& p) {
  if (!std::isfinite(p.temperature) || p.temperature < 0 || p.temperature > 100) {
    return absl::InvalidArgumentError(absl::StrCat("temperature ", p.temperature, " outside [0, 100]"));
  }
  if (!std::isfinite(p.top_p) || p.top_p <= 0 || p.top_p > 1) {
    return absl::InvalidArgumentError(absl::StrCat("top_p ", p.top_p, " outside (0, 1]"));
  }
  if (p.top_k < 0) return absl::InvalidArgumentError(absl::StrCat("top_k ", p.top_k, " is negative"));
  return absl::OkStatus();
}

int32_t SampleToken(const float* logits, int64_t vocab, const SamplingParams& params, std::mt19937_64& rng) {
  if (params.temperature <= 0) {
    return static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
  }
  std::vector<int32_t> ids(vocab);
  std::iota(ids.begin(), ids.end(), 0);
  int64_t keep = vocab;
  if (params.top_k > 0 && params.top_k < vocab) keep = params.top_k;
  std::partial_sort(ids.begin(), ids.begin() + keep, ids.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  std::vector<double> probs(keep);
  const double mx = logits[ids[0]];
  double sum = 0;
  for (int64_t i = 0; i < keep; ++i) sum += probs[i] = std::exp((logits[ids[i]] - mx) / params.temperature);
  double cum = 0;
  int64_t cut = keep;
  for (int64_t i = 0; i < keep; ++i) {
    cum += probs[i] / sum;
    if (cum >= params.top_p) {
      cut = i + 1;
      break;
    }
  }
  std::discrete_distribution<int64_t> dist(probs.begin(), probs.begin() + cut);
  return ids[dist(rng)];
}

float TopTwoMargin(const float* logits, int64_t vocab) {
  float a = -std::numeric_limits<float>::infinity(), b = a;
  for (int64_t i = 0; i < vocab; ++i) {
    if (logits[i] > a) { b = a; a = logits[i]; } else if (logits[i] > b) { b = logits[i]; }
  }
  return a - b;
}

}  // namespace r1

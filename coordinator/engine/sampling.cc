#include "coordinator/engine/sampling.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include <omp.h>

#include "absl/strings/str_cat.h"

namespace r1 {
namespace {

uint64_t SplitMix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// The length of the shortest prefix of ids[0, n) whose weight reaches target; 0: none does.
int64_t PrefixReaching(const std::vector<int32_t>& ids, int64_t n, const std::vector<float>& w, double target) {
  double cum = 0;
  for (int64_t i = 0; i < n; ++i) {
    cum += w[ids[i]];
    if (cum >= target) return i + 1;
  }
  return 0;
}

// std::max_element(x, x + n) - x, vectorised: the largest value in one SIMD pass, then the first
// index holding it. A row with a NaN takes std::max_element itself (its answer then depends on
// where the NaN stands, which a max reduction would not reproduce).
int64_t FirstArgmax(const float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  int nan = 0;
#pragma omp simd reduction(max : m) reduction(| : nan)
  for (int64_t i = 0; i < n; ++i) {
    m = x[i] > m ? x[i] : m;
    nan |= x[i] != x[i];
  }
  if (nan) return std::max_element(x, x + n) - x;
  for (int64_t i = 0; i < n; ++i) {
    if (x[i] == m) return i;
  }
  return 0;
}

bool UsesCounts(const EngineSampling& s) {
  return s.presence_penalty != 0 || s.frequency_penalty != 0;
}

}  // namespace

absl::Status ValidateEngineSampling(const EngineSampling& s) {
  auto bad = [](absl::string_view field, float v, absl::string_view range) {
    return absl::InvalidArgumentError(absl::StrCat(field, " ", v, " outside ", range));
  };
  if (!std::isfinite(s.temperature) || s.temperature < 0 || s.temperature > 100)
    return bad("temperature", s.temperature, "[0, 100]");
  if (!std::isfinite(s.top_p) || s.top_p <= 0 || s.top_p > 1)
    return bad("top_p", s.top_p, "(0, 1]");
  if (s.top_k < 0)
    return absl::InvalidArgumentError(absl::StrCat("top_k ", s.top_k, " is negative"));
  if (!std::isfinite(s.min_p) || s.min_p < 0 || s.min_p > 1) return bad("min_p", s.min_p, "[0, 1]");
  if (!std::isfinite(s.presence_penalty) || std::fabs(s.presence_penalty) > 2)
    return bad("presence_penalty", s.presence_penalty, "[-2, 2]");
  if (!std::isfinite(s.frequency_penalty) || std::fabs(s.frequency_penalty) > 2)
    return bad("frequency_penalty", s.frequency_penalty, "[-2, 2]");
  if (!std::isfinite(s.repetition_penalty) || s.repetition_penalty <= 0 ||
      s.repetition_penalty > 10) {
    return bad("repetition_penalty", s.repetition_penalty, "(0, 10]");
  }
  if (s.top_logprobs < 0 || s.top_logprobs > 20) {
    return absl::InvalidArgumentError(
        absl::StrCat("top_logprobs ", s.top_logprobs, " outside [0, 20]"));
  }
  return absl::OkStatus();
}

void SamplerState::Init(const EngineSampling& s, uint64_t seed, int32_t index,
                        absl::Span<const int32_t> prompt) {
  key = SplitMix(seed ^ SplitMix(static_cast<uint64_t>(index) + 1));
  draws = 0;
  rng.seed(key);
  generated.clear();
  seen.clear();
  if (s.repetition_penalty != 1.0f) {
    for (int32_t t : prompt) ++seen[t];
  }
}

void SamplerState::Observe(const EngineSampling& s, int32_t token) {
  if (UsesCounts(s)) ++generated[token];
  if (s.repetition_penalty != 1.0f) ++seen[token];
}

void SamplerState::SkipChoice(const EngineSampling& s) {
  if (s.temperature > 0) {
    rng.discard(1);
    ++draws;
  }
}

bool SamplerState::HasHistory(const EngineSampling& s) { return UsesCounts(s) || s.repetition_penalty != 1.0f; }

SamplerState SamplerState::FromStream(uint64_t key, uint64_t draws) {
  SamplerState st;
  st.key = key;
  st.draws = draws;
  st.rng.seed(key);
  st.rng.discard(draws);
  return st;
}

int32_t ChooseToken(const float* raw, int64_t vocab, const EngineSampling& s, SamplerState& state,
                    std::vector<float>& scratch) {
  const float* logits = raw;
  if (!state.seen.empty() || !state.generated.empty()) {
    scratch.assign(raw, raw + vocab);
    // Repetition penalty (CTRL / transformers): shrink the logit of every token already present.
    for (const auto& [t, c] : state.seen) {
      float& l = scratch[t];
      l = l > 0 ? l / s.repetition_penalty : l * s.repetition_penalty;
    }
    // OpenAI's presence and frequency penalties, over the generated tokens only.
    for (const auto& [t, c] : state.generated)
      scratch[t] -= s.frequency_penalty * static_cast<float>(c) + s.presence_penalty;
    logits = scratch.data();
  }
  if (s.temperature <= 0)
    return static_cast<int32_t>(FirstArgmax(logits, vocab));

  // Weights relative to the best token: w = exp((l - max) / T), so the best weighs 1.
  const float mx = logits[FirstArgmax(logits, vocab)];
  // Per-thread buffers kept between calls: at R1's vocabulary each is 517 KB, which a fresh
  // allocation would map and fault in again for every token.
  thread_local std::vector<float> w;
  thread_local std::vector<int32_t> ids;
  w.resize(static_cast<size_t>(vocab));
  for (int64_t i = 0; i < vocab; ++i) w[i] = std::exp((logits[i] - mx) / s.temperature);
  auto before = [&](int32_t a, int32_t b) { return w[a] > w[b] || (w[a] == w[b] && a < b); };
  // min_p: drop tokens less likely than min_p times the most likely one.
  auto kept = [&](int64_t i) { return w[i] >= s.min_p && w[i] > 0; };
  // top_p alone (the common case): the nucleus is a prefix of the tokens in `before` order, so
  // when the tokens of weight >= kFew reach top_p of the mass, sorting those few gives the same
  // prefix as sorting all; the mass is summed over all kept tokens in id order either way.
  constexpr float kFew = 1e-5f;
  int64_t keep = 0;  // the nucleus: ids[0, keep)
  if (s.top_p < 1.0f && s.top_k <= 0) {
    ids.clear();
    double total = 0;
    for (int64_t i = 0; i < vocab; ++i) {
      if (!kept(i)) continue;
      total += w[i];
      if (w[i] >= kFew) ids.push_back(static_cast<int32_t>(i));
    }
    const double target = s.top_p * total;
    const int64_t n = static_cast<int64_t>(ids.size());
    for (int64_t sorted = std::min<int64_t>(256, n); sorted > 0; sorted = std::min<int64_t>(sorted * 4, n)) {
      std::partial_sort(ids.begin(), ids.begin() + sorted, ids.end(), before);
      keep = PrefixReaching(ids, sorted, w, target);
      if (keep > 0 || sorted == n) break;
    }
    // keep == 0: the light tokens matter (a flat distribution): the general path below.
  }
  if (keep == 0) {
    ids.clear();
    ids.reserve(static_cast<size_t>(vocab));
    for (int64_t i = 0; i < vocab; ++i) {
      if (kept(i)) ids.push_back(static_cast<int32_t>(i));
    }
    if (s.top_k > 0 && s.top_k < static_cast<int64_t>(ids.size())) {
      std::nth_element(ids.begin(), ids.begin() + s.top_k, ids.end(), before);
      ids.resize(s.top_k);
    }
    // top_p: the smallest most-likely prefix holding top_p of the mass; sort only as much as needed.
    keep = static_cast<int64_t>(ids.size());
    if (s.top_p < 1.0f) {
      double total = 0;
      for (int32_t i : ids) total += w[i];
      const double target = s.top_p * total;
      for (int64_t sorted = std::min<int64_t>(256, keep);; sorted = std::min<int64_t>(sorted * 4, keep)) {
        std::partial_sort(ids.begin(), ids.begin() + sorted, ids.end(), before);
        const int64_t cut = PrefixReaching(ids, sorted, w, target);
        if (cut > 0) {
          keep = cut;
          break;
        }
        if (sorted == keep) break;  // rounding: keep them all
      }
    }
  }
  double total = 0;
  for (int64_t i = 0; i < keep; ++i) total += w[ids[i]];
  const double u = std::uniform_real_distribution<double>(0.0, 1.0)(state.rng) * total;  // one number
  ++state.draws;
  double cum = 0;
  for (int64_t i = 0; i < keep; ++i) {
    cum += w[ids[i]];
    if (u < cum) return ids[i];
  }
  return ids[keep - 1];
}

void ChooseTokens(absl::Span<SamplingJob> jobs, int64_t vocab, int threads) {
  const int64_t n = static_cast<int64_t>(jobs.size());
  if (n == 0) return;
  const int width = threads > 0 ? threads : omp_get_max_threads();
  // Below a few rows of a real vocabulary the threads' start-up is not worth it.
  const bool parallel = width > 1 && n > 1 && n * vocab >= (int64_t{1} << 18);
#pragma omp parallel num_threads(width) if (parallel)
  {
    std::vector<float> scratch;  // each thread's own
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < n; ++i) {
      SamplingJob& j = jobs[i];
      if (j.logits == nullptr) continue;  // chosen already
      j.token = ChooseToken(j.logits, vocab, *j.sampling, *j.state, scratch);
      if (j.sampling->logprobs) {
        ComputeLogprobs(j.logits, vocab, j.token, j.sampling->top_logprobs, &j.logprob, &j.top_logprobs);
      }
    }
  }
}

void ComputeLogprobs(const float* logits, int64_t vocab, int32_t token, int32_t top_n,
                     float* logprob, std::vector<TokenLogprob>* top) {
  const float mx = logits[FirstArgmax(logits, vocab)];
  double sum = 0;
  // Each term in float (within an ulp; every term <= 1), summed in double: half the time of a
  // double exp per token at R1's vocabulary, and the log-softmax still to float precision.
  for (int64_t i = 0; i < vocab; ++i) sum += std::exp(logits[i] - mx);
  const float lse = mx + static_cast<float>(std::log(sum));
  *logprob = logits[token] - lse;
  top->clear();
  if (top_n <= 0) return;
  const int64_t n = std::min<int64_t>(top_n, vocab);
  // The n best in (logit desc, id asc) order, in one pass: a short sorted list that most ids
  // leave at the first comparison (ids come in ascending order, so a tie never displaces).
  std::vector<int32_t> best;
  best.reserve(static_cast<size_t>(n) + 1);
  for (int64_t i = 0; i < vocab; ++i) {
    if (static_cast<int64_t>(best.size()) == n && !(logits[i] > logits[best.back()])) continue;
    auto pos = std::upper_bound(best.begin(), best.end(), logits[i],
                                [&](float v, int32_t b) { return v > logits[b]; });
    best.insert(pos, static_cast<int32_t>(i));
    if (static_cast<int64_t>(best.size()) > n) best.pop_back();
  }
  for (int32_t id : best) top->push_back({id, logits[id] - lse});
}

}  // namespace r1

// The engine's per-sequence token choice: penalties, temperature, top-k, min-p, top-p and a
// per-sequence RNG, plus logprobs. worker/sampler.h is the plain sampler of `r1 generate`; this
// one adds what the OpenAI / Ollama APIs ask for (penalties over the sequence's history, min_p,
// logprobs) and keeps full-vocabulary work linear (129280 ids): only the nucleus is sorted.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/types/span.h"
#include "coordinator/engine/engine.h"

namespace r1 {

// Checks a request's sampling fields; the error names the field.
absl::Status ValidateEngineSampling(const EngineSampling& s);

// What one sequence remembers between tokens for its sampling.
struct SamplerState {
  std::mt19937_64 rng;
  // The stream the RNG runs: seeded with `key`, `draws` numbers taken so far (ChooseToken takes one
  // per token when the temperature is above 0, none when greedy). (key, draws) is all another
  // process needs to make the same choice (FromStream), e.g. a worker holding the logits.
  uint64_t key = 0;
  uint64_t draws = 0;
  // Occurrences of each token: `generated` among the new tokens (presence / frequency penalties),
  // `seen` in prompt + new tokens (repetition penalty). Filled only when a penalty is on.
  absl::flat_hash_map<int32_t, int32_t> generated;
  absl::flat_hash_map<int32_t, int32_t> seen;

  // Seeds the RNG from (seed, completion index): each completion of a request has its own stream,
  // independent of whatever else shares its batch.
  void Init(const EngineSampling& s, uint64_t seed, int32_t index,
            absl::Span<const int32_t> prompt);
  void Observe(const EngineSampling& s, int32_t token);
  // The state after a choice made elsewhere from this state's stream: the RNG advanced as
  // ChooseToken would have advanced it.
  void SkipChoice(const EngineSampling& s);
  // Whether the choice depends on more than (sampling, key, draws): the penalties' token counts.
  static bool HasHistory(const EngineSampling& s);
  // A state without history at stream position (key, draws).
  static SamplerState FromStream(uint64_t key, uint64_t draws);
};

// Picks the next token from raw logits [vocab]. Greedy (temperature 0) picks the lowest id among
// the largest penalised logits. `scratch` is reused between calls.
int32_t ChooseToken(const float* logits, int64_t vocab, const EngineSampling& s,
                    SamplerState& state, std::vector<float>& scratch);

// One row of a step's sampling: its inputs, and what ChooseTokens fills in.
struct SamplingJob {
  const float* logits = nullptr;  // [vocab], raw; null: token (and logprobs) already chosen
  const EngineSampling* sampling = nullptr;
  SamplerState* state = nullptr;  // its RNG advances as ChooseToken's does; Observe is the caller's
  int32_t token = -1;
  float logprob = 0.0f;  // when sampling->logprobs
  std::vector<TokenLogprob> top_logprobs;
};

// ChooseToken, and ComputeLogprobs where asked, for every job, the jobs spread over up to `threads`
// threads (0: as many as OpenMP offers; 1: this thread). Each job reads only its own logits and
// state, so every result is the one the serial calls give, whatever the thread count. A step of
// R1's vocabulary (129280) costs ~0.1 ms per greedy row and ~1 ms per temperature-sampled row on
// one core: 256 sequences would otherwise hold the engine's thread for a quarter of a second.
void ChooseTokens(absl::Span<SamplingJob> jobs, int64_t vocab, int threads);

// Log-softmax of the raw logits (the model's own distribution: before penalties and temperature,
// as OpenAI reports and vLLM does by default): the logprob of `token` and the `top_n` most likely
// tokens, most likely first (ties: lowest id first).
void ComputeLogprobs(const float* logits, int64_t vocab, int32_t token, int32_t top_n,
                     float* logprob, std::vector<TokenLogprob>* top);

}  // namespace r1

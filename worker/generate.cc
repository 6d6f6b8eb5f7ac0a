#include "worker/generate.h"

#include <algorithm>
#include <chrono>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace r1 {

absl::StatusOr<GenerateResult> Generate(const DeepseekV3Model& model, const std::vector<int32_t>& prompt,
                                        const GenerateOptions& options) {
  const ModelConfig& c = model.config();
  R1_RETURN_IF_ERROR(ValidateSampling(options.sampling));
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt is empty");
  if (options.max_new_tokens < 0) return absl::InvalidArgumentError("max_new_tokens is negative");
  if (options.block_size <= 0 || options.prefill_chunk <= 0) {
    return absl::InvalidArgumentError("block_size and prefill_chunk must be positive");
  }
  const int64_t total = static_cast<int64_t>(prompt.size()) + options.max_new_tokens;
  if (total > c.max_position_embeddings) {
    return absl::OutOfRangeError(absl::StrCat("prompt (", prompt.size(), ") + max_new_tokens (", options.max_new_tokens,
                                              ") exceeds the context of ", c.max_position_embeddings));
  }
  const int64_t blocks = (total + options.block_size - 1) / options.block_size;
  R1_ASSIGN_OR_RETURN(PagedKvCache cache, PagedKvCache::Create(blocks, options.block_size, c.num_hidden_layers,
                                                               c.kv_latent_dim()));
  // Blocks handed out in reverse, so the test of paging sees a non-identity block table.
  SequenceStep step;
  for (int64_t b = blocks - 1; b >= 0; --b) step.block_table.push_back(static_cast<int32_t>(b));

  GenerateResult result;
  result.prompt_tokens = static_cast<int64_t>(prompt.size());
  std::mt19937_64 rng(options.sampling.seed);
  using Clock = std::chrono::steady_clock;
  auto t0 = Clock::now();
  std::vector<float> last;
  for (size_t begin = 0; begin < prompt.size(); begin += options.prefill_chunk) {
    const size_t end = std::min(prompt.size(), begin + static_cast<size_t>(options.prefill_chunk));
    step.tokens.assign(prompt.begin() + begin, prompt.begin() + end);
    step.start_position = static_cast<int64_t>(begin);
    R1_ASSIGN_OR_RETURN(auto logits, model.Forward({step}, cache));
    last = std::move(logits[0]);
  }
  auto t1 = Clock::now();
  result.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
  int64_t pos = static_cast<int64_t>(prompt.size());
  for (int64_t i = 0; i < options.max_new_tokens; ++i) {
    const int32_t next = SampleToken(last.data(), c.vocab_size, options.sampling, rng);
    result.tokens.push_back(next);
    result.margins.push_back(TopTwoMargin(last.data(), c.vocab_size));
    if ((options.stop_at_eos && next == c.eos_token_id) || i + 1 == options.max_new_tokens) break;
    step.tokens = {next};
    step.start_position = pos++;
    R1_ASSIGN_OR_RETURN(auto logits, model.Forward({step}, cache));
    last = std::move(logits[0]);
  }
  result.decode_seconds = std::chrono::duration<double>(Clock::now() - t1).count();
  return result;
}

}  // namespace r1

#include "worker/generate_gpu.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/sampler.h"

namespace r1 {

absl::StatusOr<GenerateResult> GenerateOnGpu(GpuDeepseekV3Model& model, const std::vector<int32_t>& prompt,
                                             const GenerateOptions& options) {
  const ModelConfig& c = model.config();
  R1_RETURN_IF_ERROR(ValidateSampling(options.sampling));
  if (prompt.empty()) return absl::InvalidArgumentError("the prompt is empty");
  if (options.max_new_tokens < 0) return absl::InvalidArgumentError("max_new_tokens is negative");
  if (options.block_size <= 0 || options.prefill_chunk <= 0) {
    return absl::InvalidArgumentError("block_size and prefill_chunk must be positive");
  }
  if (options.sampling.top_k > (int64_t{1} << 30)) return absl::InvalidArgumentError("top_k too large");
  const int64_t total = static_cast<int64_t>(prompt.size()) + options.max_new_tokens;
  if (total > c.max_position_embeddings) {
    return absl::OutOfRangeError(absl::StrCat("prompt (", prompt.size(), ") + max_new_tokens (", options.max_new_tokens,
                                              ") exceeds the context of ", c.max_position_embeddings));
  }
  const int64_t blocks = (total + options.block_size - 1) / options.block_size;
  R1_ASSIGN_OR_RETURN(GpuKvCache cache, GpuKvCache::Create(c, blocks, options.block_size));
  // Blocks handed out in reverse, as the CPU path does: a non-identity block table.
  SequenceStep step;
  for (int64_t b = blocks - 1; b >= 0; --b) step.block_table.push_back(static_cast<int32_t>(b));

  cuda::SamplingRow row;
  row.temperature = options.sampling.temperature;
  row.top_p = options.sampling.top_p;
  row.top_k = static_cast<int32_t>(options.sampling.top_k);
  row.seed = options.sampling.seed;
  row.step = 0;

  GenerateResult result;
  result.prompt_tokens = static_cast<int64_t>(prompt.size());
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  const size_t chunk = static_cast<size_t>(std::min(options.prefill_chunk, model.options().max_step_tokens));
  int32_t next = -1;
  for (size_t begin = 0; begin < prompt.size(); begin += chunk) {
    const size_t end = std::min(prompt.size(), begin + chunk);
    step.tokens.assign(prompt.begin() + begin, prompt.begin() + end);
    step.start_position = static_cast<int64_t>(begin);
    R1_ASSIGN_OR_RETURN(auto sampled, model.ForwardSample({step}, cache, {row}));
    next = sampled[0];  // only the last chunk's token is used
  }
  const auto t1 = Clock::now();
  result.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
  int64_t pos = static_cast<int64_t>(prompt.size());
  for (int64_t i = 0; i < options.max_new_tokens; ++i) {
    result.tokens.push_back(next);
    if ((options.stop_at_eos && next == c.eos_token_id) || i + 1 == options.max_new_tokens) break;
    step.tokens = {next};
    step.start_position = pos++;
    row.step = static_cast<uint64_t>(i + 1);
    R1_ASSIGN_OR_RETURN(auto sampled, model.ForwardSample({step}, cache, {row}));
    next = sampled[0];
  }
  result.decode_seconds = std::chrono::duration<double>(Clock::now() - t1).count();
  return result;
}

}  // namespace r1

#include "coordinator/pool/generation.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "worker/sampler.h"

namespace r1 {
namespace {

namespace pb = worker::v1;
using Clock = std::chrono::steady_clock;

// Gives the sequence's blocks back and tells rank 0 to forget its sampler, however it ends.
class SequenceLease {
 public:
  SequenceLease(WorkerPool& pool, uint64_t id) : pool_(pool), id_(id) {}
  ~SequenceLease() {
    pool_.FreeBlocks(blocks);
    pool_.FreeSequences({id_});
  }
  std::vector<int32_t> blocks;

 private:
  WorkerPool& pool_;
  uint64_t id_;
};

}  // namespace

absl::StatusOr<pb::GenerateReply> GenerateOnPool(WorkerPool& pool, const pb::GenerateRequest& request,
                                                 const PoolGenerateOptions& options) {
  pb::Sampling wire = request.sampling();
  if (wire.top_p() == 0) wire.set_top_p(1.0f);  // proto3's unset value: no nucleus cut
  const SamplingParams sampling{wire.temperature(), wire.top_p(), wire.top_k(), wire.seed()};
  R1_RETURN_IF_ERROR(ValidateSampling(sampling));
  if (request.prompt().empty()) return absl::InvalidArgumentError("the prompt is empty");
  if (request.max_new_tokens() < 0) return absl::InvalidArgumentError("max_new_tokens is negative");
  if (request.logprobs() < 0) return absl::InvalidArgumentError("logprobs is negative");
  R1_ASSIGN_OR_RETURN(auto group_and_facts, pool.ReadyGroup());
  const auto [group, facts] = group_and_facts;
  for (int32_t t : request.prompt()) {
    if (t < 0 || t >= facts.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat("prompt token ", t, " outside the vocabulary [0, ",
                                                     facts.vocab_size, ")"));
    }
  }
  const int64_t prompt_len = request.prompt_size();
  const int64_t total = prompt_len + request.max_new_tokens();
  if (total > facts.max_position_embeddings) {
    return absl::OutOfRangeError(absl::StrCat("prompt (", prompt_len, ") + max_new_tokens (", request.max_new_tokens(),
                                              ") exceeds the context of ", facts.max_position_embeddings));
  }
  const int64_t block_size = pool.options().block_size;
  const uint64_t sequence_id = pool.NextSequenceId();
  SequenceLease lease(pool, sequence_id);
  R1_ASSIGN_OR_RETURN(lease.blocks, pool.AllocateBlocks((total + block_size - 1) / block_size));

  pb::SequenceStep seq;
  seq.set_sequence_id(sequence_id);
  *seq.mutable_sampling() = wire;
  seq.set_logprobs(request.logprobs());
  seq.mutable_block_table()->Assign(lease.blocks.begin(), lease.blocks.end());
  // One step of this sequence; `sample`: rank 0 samples the next token from its last logits.
  auto run = [&](bool sample) -> absl::StatusOr<pb::SequenceResult> {
    seq.set_sample(sample);
    seq.set_return_logits(sample && request.return_logits());
    pb::Step step;
    *step.add_sequences() = seq;
    R1_ASSIGN_OR_RETURN(pb::StepResult result, pool.RunStep(std::move(step), group));
    if (result.sequences_size() != 1) return absl::InternalError("rank 0 answered a step without its sequence");
    return result.sequences(0);
  };

  pb::GenerateReply reply;
  const auto t0 = Clock::now();
  pb::SequenceResult last;
  for (int64_t begin = 0; begin < prompt_len; begin += options.prefill_chunk) {
    const int64_t end = std::min(prompt_len, begin + options.prefill_chunk);
    seq.mutable_tokens()->Assign(request.prompt().begin() + begin, request.prompt().begin() + end);
    seq.set_start_position(begin);
    auto r = run(end == prompt_len && request.max_new_tokens() > 0);
    if (!r.ok()) return Annotate(r.status(), absl::StrCat("prefill of positions [", begin, ", ", end, ")"));
    last = std::move(*r);
  }
  const auto t1 = Clock::now();
  reply.set_prefill_seconds(std::chrono::duration<double>(t1 - t0).count());
  int64_t position = prompt_len;
  for (int64_t i = 0; i < request.max_new_tokens(); ++i) {
    const int32_t next = last.token();
    reply.add_tokens(next);
    if (request.logprobs() > 0) reply.add_logprobs(last.logprob());
    if (request.return_logits()) reply.mutable_logits()->Add(last.logits().begin(), last.logits().end());
    if ((request.stop_at_eos() && next == facts.eos_token_id) || i + 1 == request.max_new_tokens()) break;
    seq.mutable_tokens()->Assign(&next, &next + 1);
    seq.set_start_position(position++);
    auto r = run(true);
    if (!r.ok()) return Annotate(r.status(), absl::StrCat("decode of token ", i + 1));
    last = std::move(*r);
  }
  reply.set_decode_seconds(std::chrono::duration<double>(Clock::now() - t1).count());
  return reply;
}

}  // namespace r1

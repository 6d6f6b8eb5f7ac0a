#include "coordinator/pool/pool_executor.h"

#include <algorithm>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace r1 {

namespace pb = worker::v1;

absl::StatusOr<std::unique_ptr<PoolExecutor>> PoolExecutor::Create(WorkerPool* pool, ModelConfig config,
                                                                   bool choose_on_rank0) {
  std::unique_ptr<PoolExecutor> e(new PoolExecutor(pool, std::move(config), choose_on_rank0));
  auto blocks = pool->AllocateBlocks(pool->options().kv_blocks);
  if (!blocks.ok()) return Annotate(blocks.status(), "taking the workers' KV blocks for the scheduler");
  e->blocks_ = std::move(*blocks);
  return e;
}

PoolExecutor::~PoolExecutor() { pool_->FreeBlocks(blocks_); }

absl::StatusOr<uint64_t> PoolExecutor::CheckedGroup() const {
  R1_ASSIGN_OR_RETURN(auto group, pool_->ReadyGroup());
  const ModelFacts& f = group.second;
  if (f.vocab_size != config_.vocab_size || f.eos_token_id != config_.eos_token_id) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the workers' model (vocab ", f.vocab_size, ", EOS ", f.eos_token_id,
        ") is not the coordinator's --model (vocab ", config_.vocab_size, ", EOS ",
        config_.eos_token_id, "): give both the same folder"));
  }
  return group.first;
}

void PoolExecutor::AddTraffic(EngineStats* s) const {
  s->rows_chosen_remotely += rows_chosen_.load();
  s->rows_with_logits += rows_with_logits_.load();
  s->block_table_entries_sent += entries_sent_.load();
  s->block_table_entries += entries_.load();
}

bool PoolExecutor::Ready(std::string* why) const {
  auto group = CheckedGroup();
  if (!group.ok()) {
    *why = std::string(group.status().message());
    return false;
  }
  last_group_.store(*group);
  return true;
}

uint64_t PoolExecutor::cache_epoch() const {
  auto group = CheckedGroup();
  if (group.ok()) last_group_.store(*group);
  return last_group_.load();
}

absl::StatusOr<std::vector<std::vector<float>>> PoolExecutor::Forward(
    const std::vector<SequenceStep>& batch, uint64_t epoch) {
  R1_ASSIGN_OR_RETURN(std::vector<StepRow> rows, ForwardRows(batch, std::vector<RowRequest>(batch.size()), epoch));
  std::vector<std::vector<float>> logits(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) logits[i] = std::move(rows[i].logits);
  return logits;
}

absl::StatusOr<std::vector<StepRow>> PoolExecutor::ForwardRows(const std::vector<SequenceStep>& batch,
                                                               const std::vector<RowRequest>& requests,
                                                               uint64_t epoch) {
  if (requests.size() != batch.size()) {
    return absl::InternalError(absl::StrCat(requests.size(), " row requests for a step of ", batch.size()));
  }
  // The workers' tables are of the group they belong to: a new group starts from whole tables.
  if (epoch != tables_epoch_) {
    sent_tables_.clear();
    tables_epoch_ = epoch;
  }
  pb::Step step;
  std::unordered_map<uint64_t, std::vector<int32_t>> tables;  // what the workers will hold after this step
  for (size_t i = 0; i < batch.size(); ++i) {
    const SequenceStep& s = batch[i];
    pb::SequenceStep* out = step.add_sequences();
    // Sampling happens in the engine (or for it, on rank 0): the id only has to be unique among
    // the step's entries.
    out->set_sequence_id(static_cast<uint64_t>(step.sequences_size()));
    out->mutable_tokens()->Assign(s.tokens.begin(), s.tokens.end());
    out->set_start_position(s.start_position);
    std::vector<int32_t> table;
    table.reserve(s.block_table.size());
    for (int32_t b : s.block_table) {
      if (b < 0 || b >= static_cast<int32_t>(blocks_.size())) {
        return absl::InternalError(absl::StrCat("block ", b, " outside the engine's ", blocks_.size()));
      }
      table.push_back(blocks_[b]);
    }
    // Only the entries past what the workers hold for the sequence (a decode step: usually none).
    size_t from = 0;
    const uint64_t key = requests[i].key;
    if (key != 0 && !tables.count(key)) {
      auto held = sent_tables_.find(key);
      if (held != sent_tables_.end() && held->second.size() <= table.size() &&
          std::equal(held->second.begin(), held->second.end(), table.begin())) {
        from = held->second.size();
      }
      out->set_table_key(key);
      out->set_table_from(static_cast<int32_t>(from));
    }
    out->mutable_block_table()->Add(table.begin() + static_cast<std::ptrdiff_t>(from), table.end());
    entries_sent_ += static_cast<int64_t>(table.size() - from);
    entries_ += static_cast<int64_t>(table.size());
    if (out->table_key() != 0) tables.emplace(key, std::move(table));
    out->set_sample(false);
    const RowRequest& want = requests[i];
    if (want.choice && choose_on_rank0_) {
      const EngineSampling& sp = want.choice->sampling;
      pb::EngineChoice* c = out->mutable_choose();
      c->set_temperature(sp.temperature);
      c->set_top_p(sp.top_p);
      c->set_top_k(sp.top_k);
      c->set_min_p(sp.min_p);
      c->set_rng_key(want.choice->rng_key);
      c->set_draws(want.choice->draws);
      c->set_logprobs(sp.logprobs);
      c->set_top_logprobs(sp.top_logprobs);
    }
    out->set_return_logits(want.needed && !(want.choice && choose_on_rank0_));
  }
  if (epoch == 0) return absl::UnavailableError("the workers are not ready");
  absl::StatusOr<pb::StepResult> ran = pool_->RunStep(std::move(step), epoch);
  // After a failed step the workers may hold the new tables or the old ones: whole tables next.
  if (!ran.ok()) {
    sent_tables_.clear();
    return ran.status();
  }
  if (!tables.empty()) sent_tables_ = std::move(tables);
  pb::StepResult& result = *ran;
  if (result.sequences_size() != static_cast<int>(batch.size())) {
    return absl::InternalError(absl::StrCat("rank 0 answered ", result.sequences_size(),
                                            " sequences for a step of ", batch.size()));
  }
  std::vector<StepRow> rows(batch.size());
  for (size_t i = 0; i < batch.size(); ++i) {
    const pb::SequenceResult& r = result.sequences(static_cast<int>(i));
    const RowRequest& want = requests[i];
    if (want.choice && choose_on_rank0_) {
      ++rows_chosen_;
      rows[i].token = r.token();
      rows[i].logprob = r.logprob();
      for (const pb::TokenLogprob& t : r.top_logprobs()) rows[i].top_logprobs.push_back({t.token(), t.logprob()});
      continue;
    }
    if (!want.needed) continue;
    if (r.logits_size() != config_.vocab_size) {
      return absl::InternalError(absl::StrCat("rank 0 sent ", r.logits_size(), " logits for sequence ", i,
                                              "; the vocabulary has ", config_.vocab_size));
    }
    rows[i].logits.assign(r.logits().begin(), r.logits().end());
    ++rows_with_logits_;
  }
  return rows;
}

}  // namespace r1

#include "coordinator/engine/local_engine.h"

#include <algorithm>
#include <chrono>
#include <random>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace r1 {

constexpr int32_t kMaxCompletions = 16;

struct LocalEngine::Request {
  RequestId id = 0;
  GenerationRequest request;
  int64_t max_new_tokens = 0;  // clamped to the context
  std::function<void(const GenerationEvent&)> on_event;
  std::vector<std::unique_ptr<Sequence>> sequences;
  int32_t unfinished = 0;
  bool started = false;  // a sequence was admitted (it no longer counts as queued)
  bool cancelled = false;
};

struct LocalEngine::Sequence {
  enum class State { kWaiting, kRunning, kFinished };
  Request* request = nullptr;
  int32_t index = 0;
  uint64_t priority = 0;        // smaller = older: (request id, completion index)
  std::vector<int32_t> tokens;  // prompt, then the generated tokens
  int64_t prompt_len = 0;
  int64_t generated = 0;
  int64_t computed = 0;                // tokens whose latents are in the cache
  std::vector<int32_t> blocks;         // block table
  std::vector<uint64_t> block_hashes;  // hashes of blocks [0, size) (registered or taken)
  SamplerState sampler;
  State state = State::kWaiting;
  bool in_step = false;
};

absl::StatusOr<std::unique_ptr<LocalEngine>> LocalEngine::Create(Options options) {
  const Options& o = options;
  if (o.block_size <= 0 || o.max_step_tokens <= 0 || o.max_batch_size <= 0 ||
      o.max_queued_requests < 0 || o.kv_blocks < 0 || o.max_context < 0 || o.sampling_threads < 0 ||
      o.sampling_threads > 1024) {
    return absl::InvalidArgumentError(absl::StrCat("engine options: block_size (", o.block_size,
                                                   "), max_step_tokens (", o.max_step_tokens,
                                                   ") and max_batch_size (", o.max_batch_size,
                                                   ") must be positive; kv_blocks, max_context, "
                                                   "max_queued_requests and sampling_threads must not "
                                                   "be negative (sampling_threads at most 1024)"));
  }
  std::unique_ptr<LocalEngine> e(new LocalEngine(std::move(options)));
  if (e->options_.executor) {
    e->executor_ = e->options_.executor;
  } else if (e->options_.model) {
    e->executor_ = std::make_shared<ModelExecutor>(e->options_.model);
  } else {
    R1_ASSIGN_OR_RETURN(auto model, DeepseekV3Model::Load(e->options_.model_dir));
    e->executor_ = std::make_shared<ModelExecutor>(std::move(model));
  }
  const ModelConfig& c = e->executor_->config();
  if (e->executor_->fixed_block_size() > 0) e->options_.block_size = e->executor_->fixed_block_size();
  const int64_t bs = e->options_.block_size;
  const int64_t blocks_per_context = (c.max_position_embeddings + bs - 1) / bs;
  int64_t num_blocks = e->executor_->fixed_kv_blocks();
  if (num_blocks == 0) num_blocks = e->options_.kv_blocks;
  if (num_blocks == 0) {
    const int64_t block_bytes =
        static_cast<int64_t>(sizeof(float)) * bs * c.num_hidden_layers * c.kv_latent_dim();
    num_blocks = e->options_.kv_memory_bytes / block_bytes;
    // More than every batch slot at full context could never be used.
    num_blocks = std::min(num_blocks, blocks_per_context * e->options_.max_batch_size);
    if (num_blocks < 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("engine: a KV budget of ", e->options_.kv_memory_bytes,
                       " bytes holds no block of ", block_bytes, " bytes"));
    }
  }
  const int64_t cache_tokens = num_blocks * bs;
  e->max_context_ = e->options_.max_context;
  if (e->max_context_ == 0) e->max_context_ = std::min(c.max_position_embeddings, cache_tokens);
  if (e->max_context_ > c.max_position_embeddings || e->max_context_ > cache_tokens ||
      e->max_context_ < 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "engine: max_context ", e->max_context_, " must be in [2, ",
        std::min(c.max_position_embeddings, cache_tokens), "] (max_position_embeddings ",
        c.max_position_embeddings, ", KV cache ", num_blocks, " blocks of ", bs, " tokens)"));
  }
  if (e->executor_->fixed_kv_blocks() == 0) {
    R1_RETURN_IF_ERROR(e->executor_->CreateCache(num_blocks, bs));
  }
  e->epoch_ = e->executor_->cache_epoch();
  e->blocks_ = std::make_unique<BlockManager>(num_blocks, bs);
  e->eos_token_id_ = static_cast<int32_t>(c.eos_token_id);
  e->stats_.kv_blocks_total = num_blocks;
  e->stats_.max_context = e->max_context_;
  e->thread_ = std::thread([engine = e.get()] { engine->Loop(); });
  return e;
}

LocalEngine::~LocalEngine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

absl::StatusOr<RequestId> LocalEngine::Submit(
    GenerationRequest request, std::function<void(const GenerationEvent&)> on_event) {
  const ModelConfig& c = executor_->config();
  const int64_t prompt_len = static_cast<int64_t>(request.prompt.size());
  if (prompt_len == 0) return absl::InvalidArgumentError("the prompt is empty");
  if (prompt_len + 1 > max_context_) {
    return absl::OutOfRangeError(absl::StrCat("the prompt has ", prompt_len,
                                              " tokens; the context holds ", max_context_,
                                              " (prompt + at least one new token)"));
  }
  for (int32_t t : request.prompt) {
    if (t < 0 || t >= c.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("prompt token id ", t, " outside [0, ", c.vocab_size, ")"));
    }
  }
  if (request.n < 1 || request.n > kMaxCompletions) {
    return absl::InvalidArgumentError(
        absl::StrCat("n ", request.n, " outside [1, ", kMaxCompletions, "]"));
  }
  if (request.max_new_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_new_tokens ", request.max_new_tokens, " is negative"));
  }
  R1_RETURN_IF_ERROR(ValidateEngineSampling(request.sampling));
  if (!on_event) return absl::InvalidArgumentError("no event callback");

  auto req = std::make_shared<Request>();
  const int64_t room = max_context_ - prompt_len;
  req->max_new_tokens = request.max_new_tokens == 0 ? room : std::min(request.max_new_tokens, room);
  const uint64_t seed =
      request.sampling.seed
          ? *request.sampling.seed
          : (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
  req->on_event = std::move(on_event);
  req->request = std::move(request);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_ || draining_)
      return absl::UnavailableError("the engine is draining and accepts no new requests");
    if (std::string why; !executor_->Ready(&why))
      return absl::UnavailableError(absl::StrCat("not ready: ", why));
    if (queued_requests_ >= options_.max_queued_requests) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the request queue is full (", queued_requests_, " requests waiting); retry later"));
    }
    req->id = next_id_++;
    for (int32_t i = 0; i < req->request.n; ++i) {
      auto seq = std::make_unique<Sequence>();
      seq->request = req.get();
      seq->index = i;
      seq->priority = req->id * kMaxCompletions + static_cast<uint64_t>(i);
      seq->tokens = req->request.prompt;
      seq->prompt_len = prompt_len;
      seq->sampler.Init(req->request.sampling, seed, i, req->request.prompt);
      waiting_.push_back(seq.get());
      req->sequences.push_back(std::move(seq));
    }
    req->unfinished = req->request.n;
    live_.push_back(req);
    ++queued_requests_;
    stats_.prompt_tokens += prompt_len;
  }
  work_cv_.notify_one();
  return req->id;
}

void LocalEngine::Cancel(RequestId id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = std::find_if(live_.begin(), live_.end(), [&](const auto& r) { return r->id == id; });
    if (it == live_.end() || (*it)->cancelled) return;
    (*it)->cancelled = true;
    cancel_requests_.push_back(*it);
  }
  work_cv_.notify_one();
}

EngineStats LocalEngine::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  EngineStats s = stats_;
  s.running = static_cast<int64_t>(running_.size());
  s.waiting = static_cast<int64_t>(waiting_.size());
  s.kv_blocks_used = blocks_->num_used();
  s.kv_blocks_cached = blocks_->num_cached();
  executor_->AddTraffic(&s);
  std::string why;
  s.ready = !draining_ && !stop_ && executor_->Ready(&why);
  return s;
}

void LocalEngine::Drain(int64_t deadline_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  draining_ = true;
  auto quiet = [&] { return live_.empty() && deliveries_pending_ == 0; };
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(std::max<int64_t>(deadline_ms, 0));
  if (!idle_cv_.wait_until(lock, deadline, quiet)) {
    for (const auto& r : live_) {
      if (!r->cancelled) {
        r->cancelled = true;
        cancel_requests_.push_back(r);
      }
    }
    work_cv_.notify_one();
    idle_cv_.wait(lock, quiet);
  }
}

void LocalEngine::SetPausedForTesting(bool paused) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    paused_ = paused;
  }
  work_cv_.notify_one();
}

void LocalEngine::Deliver(std::vector<Delivery>& out) {
  for (Delivery& d : out) d.request->on_event(d.event);
  if (out.empty()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    deliveries_pending_ -= static_cast<int64_t>(out.size());
  }
  out.clear();
  idle_cv_.notify_all();
}

void LocalEngine::Loop() {
  std::vector<Delivery> out;
  std::vector<SequenceStep> batch;
  std::vector<RowRequest> requests;
  while (true) {
    std::vector<Sequence*> step;
    std::vector<int64_t> chunks;
    bool stopping = false;
    uint64_t epoch = 0;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(
          lock, [&] { return stop_ || !cancel_requests_.empty() || (!paused_ && !IdleLocked()); });
      ProcessCancellationsLocked(&out);
      stopping = stop_;
      if (stopping) {
        CancelAllLocked(&out);
      } else if (!paused_) {
        std::string why;
        if (!executor_->Ready(&why)) {
          const auto now = std::chrono::steady_clock::now();
          if (!not_ready_since_) not_ready_since_ = now;
          if (now - *not_ready_since_ > std::chrono::milliseconds(options_.not_ready_timeout_ms)) {
            FailAllLocked(absl::UnavailableError(absl::StrCat(
                              "not ready for ", options_.not_ready_timeout_ms / 1000.0, " s: ", why)),
                          &out);
          }
        } else {
          not_ready_since_.reset();
          if (executor_->cache_epoch() != epoch_) ResyncCacheLocked();
          step = Schedule(&chunks);
        }
      }
      epoch = epoch_;
      batch.resize(step.size());
      requests.resize(step.size());
      for (size_t i = 0; i < step.size(); ++i) {
        const Sequence* s = step[i];
        batch[i].tokens.assign(s->tokens.begin() + s->computed,
                               s->tokens.begin() + s->computed + chunks[i]);
        batch[i].start_position = s->computed;
        batch[i].block_table = s->blocks;
        batch[i].all_logits = false;
        // After this step the row's token is chosen if the chunk completes what is known and the
        // request is still live; without penalties the executor may choose it where it is.
        RowRequest& want = requests[i];
        want.key = s->priority + 1;
        want.needed = s->computed + chunks[i] >= static_cast<int64_t>(s->tokens.size());
        const EngineSampling& sp = s->request->request.sampling;
        want.choice.reset();
        if (want.needed && !SamplerState::HasHistory(sp)) {
          want.choice = RowRequest::Choice{sp, s->sampler.key, s->sampler.draws};
        }
      }
      if (!step.empty()) {
        stats_.last_batch_size = static_cast<int64_t>(step.size());
        ++stats_.steps;
      }
      deliveries_pending_ += static_cast<int64_t>(out.size());
    }
    Deliver(out);
    if (stopping) return;
    if (step.empty()) {
      // Nothing could be scheduled although work exists (e.g. paused): wait for a change rather
      // than spin.
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait_for(lock, std::chrono::milliseconds(not_ready_since_ ? 20 : 2));
      continue;
    }
    auto rows = executor_->ForwardRows(batch, requests, epoch);
    if (rows.ok() && rows->size() != step.size()) {
      rows = absl::InternalError(absl::StrCat("the executor answered ", rows->size(), " rows for a step of ",
                                              step.size()));
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      Finish(step, chunks, rows, &out);
      ProcessCancellationsLocked(&out);
      deliveries_pending_ += static_cast<int64_t>(out.size());
    }
    Deliver(out);
  }
}

namespace {

// The prefill chunk for `pending` tokens within `budget`. Never leaves a lone last token (a
// one-token step runs attention in the absorbed form, the others in the expanded form; keeping
// the forms fixed keeps results independent of batching), and never takes a one-token bite of a
// longer prompt unless steps are one token wide.
int64_t ChunkFor(int64_t pending, int64_t budget, int64_t step_tokens) {
  int64_t chunk = std::min(pending, budget);
  if (chunk < pending && pending - chunk == 1 && chunk > 1) --chunk;
  if (chunk == 1 && pending > 1 && step_tokens > 1) return 0;
  return chunk;
}

}  // namespace

std::vector<LocalEngine::Sequence*> LocalEngine::Schedule(std::vector<int64_t>* chunks) {
  std::vector<Sequence*> step;
  int64_t budget = options_.max_step_tokens;
  auto full = [&] {
    return static_cast<int64_t>(step.size()) >= options_.max_batch_size || budget <= 0;
  };
  auto add = [&](Sequence* s, int64_t chunk) {
    s->in_step = true;
    step.push_back(s);
    chunks->push_back(chunk);
    budget -= chunk;
  };
  // 1. Decodes, oldest first: one token each.
  const std::vector<Sequence*> running = running_;  // Grow may preempt (remove) entries
  for (Sequence* s : running) {
    if (full()) break;
    if (s->state != Sequence::State::kRunning || s->tokens.size() - s->computed != 1) continue;
    if (Grow(s, s->computed + 1)) add(s, 1);
  }
  // 2. Prefill chunks of running sequences, oldest first.
  for (Sequence* s : running) {
    if (full()) break;
    const int64_t pending = static_cast<int64_t>(s->tokens.size()) - s->computed;
    if (s->state != Sequence::State::kRunning || s->in_step || pending <= 1) continue;
    const int64_t chunk = ChunkFor(pending, budget, options_.max_step_tokens);
    if (chunk > 0 && Grow(s, s->computed + chunk)) add(s, chunk);
  }
  // 3. Admit from the queue, in order, while blocks for their first chunk are free.
  for (auto it = waiting_.begin(); it != waiting_.end() && !full();) {
    Sequence* s = *it;
    const Sequence* first = s->request->sequences[0].get();
    if (options_.prefix_caching && s->index > 0 && first->state != Sequence::State::kFinished &&
        first->computed < first->prompt_len) {
      ++it;  // waits for completion 0's prompt, to share its blocks
      continue;
    }
    const int64_t chunk = Admit(s, budget);
    if (chunk == 0)
      break;  // first come, first served: nobody overtakes a request that waits for blocks
    it = waiting_.erase(it);
    s->state = Sequence::State::kRunning;
    running_.insert(std::upper_bound(running_.begin(), running_.end(), s,
                                     [](const Sequence* a, const Sequence* b) {
                                       return a->priority < b->priority;
                                     }),
                    s);
    if (!s->request->started) {
      s->request->started = true;
      --queued_requests_;
    }
    add(s, chunk);
  }
  return step;
}

bool LocalEngine::Grow(Sequence* seq, int64_t end) {
  const int64_t need = (end + options_.block_size - 1) / options_.block_size -
                       static_cast<int64_t>(seq->blocks.size());
  if (need <= 0) return true;
  // Preempt younger sequences not in this step, youngest first, until the blocks are there.
  while (blocks_->num_available() < need) {
    Sequence* victim = nullptr;
    for (auto it = running_.rbegin(); it != running_.rend() && (*it)->priority > seq->priority;
         ++it) {
      if (!(*it)->in_step) {
        victim = *it;
        break;
      }
    }
    if (victim == nullptr) return false;  // wait: older sequences hold the blocks
    Preempt(victim);
  }
  auto fresh = blocks_->Allocate(need);
  if (!fresh.ok()) return false;
  seq->blocks.insert(seq->blocks.end(), fresh->begin(), fresh->end());
  return true;
}

int64_t LocalEngine::Admit(Sequence* seq, int64_t budget) {
  const int64_t bs = options_.block_size;
  const int64_t len = static_cast<int64_t>(seq->tokens.size());
  std::vector<int32_t> cached;
  std::vector<uint64_t> hashes;
  if (options_.prefix_caching) {
    // At least the last token is computed: its logits give the next token.
    cached = blocks_->TakeCachedPrefix(seq->tokens, (len - 1) / bs, &hashes);
  }
  const int64_t computed = static_cast<int64_t>(cached.size()) * bs;
  const int64_t chunk = ChunkFor(len - computed, budget, options_.max_step_tokens);
  const int64_t need = (computed + chunk + bs - 1) / bs - static_cast<int64_t>(cached.size());
  // Headroom: a block of growth for each running sequence (at most a quarter of the cache), so
  // a newcomer is not admitted only to be preempted by the next decode step.
  const int64_t headroom =
      std::min<int64_t>(static_cast<int64_t>(running_.size()), blocks_->num_blocks() / 4);
  if (chunk == 0 || need + headroom > blocks_->num_available()) {
    blocks_->Release(cached);
    return 0;
  }
  auto fresh = blocks_->Allocate(need);
  if (!fresh.ok()) {
    blocks_->Release(cached);
    return 0;
  }
  seq->blocks = std::move(cached);
  seq->blocks.insert(seq->blocks.end(), fresh->begin(), fresh->end());
  seq->block_hashes = std::move(hashes);
  seq->computed = computed;
  stats_.prefix_hit_tokens += std::min(computed, seq->prompt_len);
  return chunk;
}

void LocalEngine::Preempt(Sequence* seq) {
  blocks_->Release(seq->blocks);
  seq->blocks.clear();
  seq->block_hashes.clear();
  seq->computed = 0;
  seq->state = Sequence::State::kWaiting;
  running_.erase(std::find(running_.begin(), running_.end(), seq));
  waiting_.push_front(seq);
  ++stats_.preemptions;
}

void LocalEngine::RegisterFullBlocks(Sequence* seq) {
  if (!options_.prefix_caching) return;
  const int64_t bs = options_.block_size;
  for (int64_t i = static_cast<int64_t>(seq->block_hashes.size()); i < seq->computed / bs; ++i) {
    const uint64_t parent = i == 0 ? BlockManager::kRootHash : seq->block_hashes[i - 1];
    const absl::Span<const int32_t> tokens(seq->tokens.data() + i * bs, bs);
    const uint64_t h = BlockManager::HashBlock(parent, tokens);
    blocks_->Register(seq->blocks[i], h, parent, tokens);
    seq->block_hashes.push_back(h);
  }
}

void LocalEngine::Finish(const std::vector<Sequence*>& step, const std::vector<int64_t>& chunks,
                         absl::StatusOr<std::vector<StepRow>>& rows, std::vector<Delivery>* out) {
  const int64_t vocab = executor_->config().vocab_size;
  // First the bookkeeping, in step order; then the tokens of the rows the executor answered with
  // logits, those rows in parallel (each touches only its own sampler state); then the events, in
  // step order again.
  std::vector<Sequence*> sampled;
  std::vector<SamplingJob> jobs;
  for (size_t i = 0; i < step.size(); ++i) {
    Sequence* s = step[i];
    s->in_step = false;
    if (!rows.ok()) {
      EndSequence(s, FinishReason::kError, Annotate(rows.status(), "forward step"), out);
      continue;
    }
    const int64_t before = s->computed;
    s->computed += chunks[i];
    stats_.prefill_tokens += std::max<int64_t>(
        0, std::min(s->computed, s->prompt_len) - std::min(before, s->prompt_len));
    RegisterFullBlocks(s);
    if (s->computed < static_cast<int64_t>(s->tokens.size()) || s->request->cancelled) continue;
    StepRow& row = (*rows)[i];
    if (!row.token && static_cast<int64_t>(row.logits.size()) != vocab) {
      EndSequence(s, FinishReason::kError,
                  absl::InternalError(absl::StrCat("the executor sent neither a token nor ", vocab, " logits (",
                                                   row.logits.size(), ")")),
                  out);
      continue;
    }
    if (row.token && (*row.token < 0 || *row.token >= vocab)) {
      EndSequence(s, FinishReason::kError,
                  absl::InternalError(absl::StrCat("the executor chose token ", *row.token, " outside the vocabulary")),
                  out);
      continue;
    }
    SamplingJob job;
    job.sampling = &s->request->request.sampling;
    job.state = &s->sampler;
    if (row.token) {
      job.token = *row.token;  // chosen where the logits are: the stream moves on as it would have here
      job.logprob = row.logprob;
      job.top_logprobs = std::move(row.top_logprobs);
      s->sampler.SkipChoice(*job.sampling);
    } else {
      job.logits = row.logits.data();
    }
    jobs.push_back(std::move(job));
    sampled.push_back(s);
  }
  ChooseTokens(absl::MakeSpan(jobs), vocab, options_.sampling_threads);

  for (size_t j = 0; j < sampled.size(); ++j) {
    Sequence* s = sampled[j];
    SamplingJob& job = jobs[j];
    const Request& r = *s->request;
    const EngineSampling& sp = r.request.sampling;
    GenerationEvent ev;
    ev.index = s->index;
    const int32_t token = job.token;
    ev.token = token;
    if (sp.logprobs) {
      ev.logprob = job.logprob;
      ev.top_logprobs = std::move(job.top_logprobs);
    }
    s->sampler.Observe(sp, token);
    s->tokens.push_back(token);
    ++s->generated;
    ++stats_.generated_tokens;

    FinishReason reason = FinishReason::kNone;
    if ((!r.request.ignore_eos && token == eos_token_id_) ||
        std::find(r.request.stop_token_ids.begin(), r.request.stop_token_ids.end(), token) !=
            r.request.stop_token_ids.end()) {
      reason = FinishReason::kStop;
    } else if (s->generated >= r.max_new_tokens ||
               static_cast<int64_t>(s->tokens.size()) >= max_context_) {
      reason = FinishReason::kLength;
    }
    if (reason == FinishReason::kNone) {
      out->push_back({live_request(s->request), std::move(ev)});
    } else {
      EndSequence(s, reason, absl::OkStatus(), out, std::move(ev));
    }
  }
}

std::shared_ptr<LocalEngine::Request> LocalEngine::live_request(const Request* r) const {
  for (const auto& p : live_) {
    if (p.get() == r) return p;
  }
  return nullptr;
}

void LocalEngine::EndSequence(Sequence* seq, FinishReason reason, const absl::Status& error,
                              std::vector<Delivery>* out, std::optional<GenerationEvent> last) {
  if (seq->state == Sequence::State::kFinished) return;
  blocks_->Release(seq->blocks);
  seq->blocks.clear();
  seq->block_hashes.clear();
  if (seq->state == Sequence::State::kRunning) {
    running_.erase(std::find(running_.begin(), running_.end(), seq));
  } else {
    waiting_.erase(std::find(waiting_.begin(), waiting_.end(), seq));
  }
  seq->state = Sequence::State::kFinished;
  Request* r = seq->request;
  GenerationEvent ev = last ? std::move(*last) : GenerationEvent{};
  ev.index = seq->index;
  ev.finish = reason;
  ev.error = error;
  auto owner = live_request(r);
  out->push_back({owner, std::move(ev)});
  if (--r->unfinished == 0) {
    if (!r->started) --queued_requests_;
    live_.erase(std::find(live_.begin(), live_.end(), owner));
  }
}

void LocalEngine::ProcessCancellationsLocked(std::vector<Delivery>* out) {
  for (const auto& r : cancel_requests_) {
    for (const auto& s : r->sequences)
      EndSequence(s.get(), FinishReason::kCancelled, absl::OkStatus(), out);
  }
  cancel_requests_.clear();
}

void LocalEngine::FailAllLocked(const absl::Status& error, std::vector<Delivery>* out) {
  const auto requests = live_;
  for (const auto& r : requests) {
    for (const auto& s : r->sequences) EndSequence(s.get(), FinishReason::kError, error, out);
  }
}

void LocalEngine::ResyncCacheLocked() {
  // Youngest first: each goes to the queue's front, so the oldest ends up first again.
  std::vector<Sequence*> running = running_;
  std::sort(running.begin(), running.end(),
            [](const Sequence* a, const Sequence* b) { return a->priority > b->priority; });
  for (Sequence* s : running) Preempt(s);
  blocks_->ForgetContents();
  epoch_ = executor_->cache_epoch();
}

void LocalEngine::CancelAllLocked(std::vector<Delivery>* out) {
  const auto requests = live_;
  for (const auto& r : requests) {
    for (const auto& s : r->sequences)
      EndSequence(s.get(), FinishReason::kCancelled, absl::OkStatus(), out);
  }
}

}  // namespace r1

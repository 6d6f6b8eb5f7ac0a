#include "coordinator/http/generation_job.h"

namespace r1::http {

Canceller::Canceller(Engine* engine) : engine_(engine) {
  thread_ = std::thread([this] {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop_ and nothing left
      const RequestId id = queue_.front();
      queue_.pop_front();
      lock.unlock();
      engine_->Cancel(id);
      lock.lock();
    }
  });
}

Canceller::~Canceller() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void Canceller::Cancel(RequestId id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(id);
  }
  cv_.notify_one();
}

absl::StatusOr<std::shared_ptr<GenerationJob>> GenerationJob::Start(
    Engine& engine, Canceller& canceller, Metrics& metrics, const Tokenizer& tokenizer,
    GenerationRequest request, CompletionText::Options text_options, Callbacks callbacks,
    Clock::time_point arrival) {
  std::shared_ptr<GenerationJob> job(new GenerationJob(engine, canceller, metrics, arrival));
  const int32_t n = std::max<int32_t>(request.n, 1);
  job->post_ = std::move(callbacks.post);
  job->callbacks_ = std::move(callbacks);
  job->prompt_tokens_ = static_cast<int64_t>(request.prompt.size());
  job->unfinished_ = n;
  for (int32_t i = 0; i < n; ++i) job->texts_.emplace_back(tokenizer, text_options);
  job->results_.resize(n);
  job->last_token_time_.resize(n);
  // No lock is held across Submit: the engine's thread may be calling back under its own lock.
  auto id = engine.Submit(std::move(request),
                          [job](const GenerationEvent& event) { job->OnEvent(event); });
  std::lock_guard<std::mutex> lock(job->mu_);
  if (!id.ok()) {
    job->done_ = true;
    job->callbacks_ = {};
    return id.status();
  }
  job->id_ = *id;
  job->submitted_ = true;
  metrics.AddTokens(job->prompt_tokens_, 0);
  if (job->callbacks_.on_submitted) job->callbacks_.on_submitted(*job);
  for (const GenerationEvent& e : job->early_) job->Process(e);
  job->early_.clear();
  if (job->cancel_requested_ && !job->cancelled_) {
    job->cancelled_ = true;
    canceller.Cancel(*id);
  }
  return job;
}

void GenerationJob::CancelByClient() {
  std::lock_guard<std::mutex> lock(mu_);
  if (done_ || cancelled_ || cancel_requested_) return;
  metrics_.CountCancelledByClient();
  cancel_requested_ = true;
  if (id_) {
    cancelled_ = true;
    canceller_.Cancel(*id_);
  }
}

void GenerationJob::OnEvent(const GenerationEvent& event) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!submitted_) {
      early_.push_back(event);
      return;
    }
    if (!post_) {
      Process(event);
      return;
    }
  }
  // post_ is set before submitted_ and never changes after.
  post_([self = shared_from_this(), event] {
    std::lock_guard<std::mutex> lock(self->mu_);
    self->Process(event);
  });
}

void GenerationJob::Process(const GenerationEvent& event) {
  if (done_ || event.index < 0 || event.index >= static_cast<int32_t>(texts_.size())) return;
  CompletionText& text = texts_[event.index];
  if (text.finished()) return;
  const Clock::time_point now = Clock::now();
  if (event.token) {
    if (!have_first_token_) {
      have_first_token_ = true;
      first_token_ = now;
      metrics_.time_to_first_token.Observe(std::chrono::duration<double>(now - arrival_).count());
    } else if (last_token_time_[event.index] != Clock::time_point()) {
      metrics_.inter_token_latency.Observe(
          std::chrono::duration<double>(now - last_token_time_[event.index]).count());
    }
    last_token_time_[event.index] = now;
    last_token_ = now;
    metrics_.AddTokens(0, 1);
  }
  TextDelta delta = text.Push(event);
  CompletionResult& r = results_[event.index];
  r.reasoning += delta.reasoning;
  r.content += delta.content;
  r.tool_calls.insert(r.tool_calls.end(), delta.tool_calls.begin(), delta.tool_calls.end());
  r.logprobs.insert(r.logprobs.end(), delta.logprobs.begin(), delta.logprobs.end());
  r.completion_tokens = text.completion_tokens();
  r.reasoning_tokens = text.reasoning_tokens();
  if (delta.finished) {
    r.finish = delta.finish;
    r.error = delta.error;
    --unfinished_;
  }
  if (callbacks_.on_delta && !delta.empty()) callbacks_.on_delta(*this, event.index, delta);
  if (unfinished_ == 0) {
    done_ = true;
    if (!have_first_token_) first_token_ = last_token_ = now;
    metrics_.request_duration.Observe(std::chrono::duration<double>(now - arrival_).count());
    // Finished by stop strings while the engine still generates: stop it.
    if (event.finish == FinishReason::kNone && !cancelled_) {
      if (id_) {
        cancelled_ = true;
        canceller_.Cancel(*id_);
      } else {
        cancel_requested_ = true;
      }
    }
    if (callbacks_.on_done) callbacks_.on_done(*this);
    callbacks_ = {};  // drop what the callbacks hold (the exchange) now
  }
}

int64_t GenerationJob::completion_tokens() const {
  int64_t n = 0;
  for (const auto& r : results_) n += r.completion_tokens;
  return n;
}

int64_t GenerationJob::reasoning_tokens() const {
  int64_t n = 0;
  for (const auto& r : results_) n += r.reasoning_tokens;
  return n;
}

int64_t GenerationJob::prompt_eval_ns() const {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(first_token_ - arrival_).count();
}
int64_t GenerationJob::eval_ns() const {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(last_token_ - first_token_).count();
}
int64_t GenerationJob::total_ns() const {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(last_token_ - arrival_).count();
}

}  // namespace r1::http

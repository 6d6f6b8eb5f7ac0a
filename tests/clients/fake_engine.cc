#include "tests/clients/fake_engine.h"

#include <chrono>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace r1::testing {
namespace {

constexpr const char* kWords[] = {"apples",      "rivers",     "prime numbers", "the moon",
                                  "café crème",  "naïve sets", "日本語",        "graphs",
                                  "🙂 smiles", "Ωmega"};

}  // namespace

FakeEngine::FakeEngine(const Tokenizer& tokenizer, Options options)
    : tokenizer_(tokenizer), options_(options) {
  eos_ = tokenizer_.eos_id().value_or(1);
  thread_ = std::thread([this] { Loop(); });
}

FakeEngine::~FakeEngine() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    for (auto& [id, a] : active_) a->cancelled = true;
  }
  cv_.notify_all();
  thread_.join();
}

std::vector<int32_t> FakeEngine::Script(const std::vector<int32_t>& prompt,
                                        const EngineSampling& sampling, int32_t index) const {
  const std::string prompt_text = tokenizer_.Decode(prompt);
  uint64_t seed;
  if (sampling.temperature == 0.0f) {
    seed = 0;  // greedy: one answer, whatever the index
  } else if (sampling.seed) {
    seed = *sampling.seed * 1000003ull + static_cast<uint64_t>(index);
  } else {
    seed = std::random_device{}();
  }
  std::mt19937_64 rng(seed);
  auto word = [&] { return kWords[rng() % (sizeof(kWords) / sizeof(kWords[0]))]; };
  std::string text =
      absl::StrCat("Okay, the prompt has ", prompt.size(), " tokens. Let me think about ", word(),
                   " and ", word(), ".\n</think>\n\n");
  const size_t tools = prompt_text.find("## Tools");
  const size_t first_tool = prompt_text.find("\n### ", tools == std::string::npos ? 0 : tools);
  if (absl::StrContains(prompt_text, "[tool]") && tools != std::string::npos &&
      first_tool != std::string::npos) {
    // Calls the first tool the prompt describes (so a test sees the description reach the
    // model), in DeepSeek's tool-call tokens, twice.
    const size_t name_at = first_tool + 5;
    const std::string name = prompt_text.substr(name_at, prompt_text.find('\n', name_at) - name_at);
    for (const char* city : {"Paris", "Oslo"}) {
      absl::StrAppend(&text, text.back() == '\n' ? "<｜tool▁calls▁begin｜>" : "",
                      "<｜tool▁call▁begin｜>function<｜tool▁sep｜>", name,
                      "\n```json\n{\"city\": \"", city, "\"}\n```<｜tool▁call▁end｜>");
    }
    absl::StrAppend(&text, "<｜tool▁calls▁end｜>");
  } else {
    absl::StrAppend(&text, "Hello! The answer is ", word(), " with ", word(), ". Done.");
  }
  if (absl::StrContains(prompt_text, "[long]")) {
    for (int i = 0; i < 200; ++i) absl::StrAppend(&text, " More about ", word(), ".");
  }
  std::vector<int32_t> ids = tokenizer_.Encode(text, /*parse_special=*/true);
  ids.push_back(eos_);
  return ids;
}

absl::StatusOr<RequestId> FakeEngine::Submit(GenerationRequest request,
                                             std::function<void(const GenerationEvent&)> on_event) {
  if (request.prompt.empty()) return absl::InvalidArgumentError("the prompt is empty");
  if (static_cast<int64_t>(request.prompt.size()) + 1 > options_.max_context) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the prompt is ", request.prompt.size(), " tokens; the context is ", options_.max_context));
  }
  if (request.n < 1 || request.n > 16) return absl::InvalidArgumentError("n must be 1..16");
  for (int32_t id : request.prompt) {
    if (id < 0 || id >= tokenizer_.id_end()) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is not in the vocabulary"));
    }
  }
  auto a = std::make_shared<Active>();
  a->fail = absl::StrContains(tokenizer_.Decode(request.prompt), "[error]");
  for (int32_t i = 0; i < request.n; ++i) {
    a->completions.push_back(Completion{Script(request.prompt, request.sampling, i)});
  }
  a->request = std::move(request);
  a->on_event = std::move(on_event);
  std::lock_guard<std::mutex> lock(mu_);
  if (draining_ || stop_) return absl::UnavailableError("the engine is draining");
  a->id = next_id_++;
  prompt_tokens_ += static_cast<int64_t>(a->request.prompt.size());
  active_[a->id] = a;
  cv_.notify_all();
  return a->id;
}

void FakeEngine::Cancel(RequestId id) {
  std::lock_guard<std::mutex> lock(mu_);
  if (auto it = active_.find(id); it != active_.end()) it->second->cancelled = true;
  cv_.notify_all();
}

EngineStats FakeEngine::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  EngineStats s;
  for (const auto& [id, a] : active_) {
    for (const Completion& c : a->completions) {
      if (c.done) continue;
      ++s.running;
      s.kv_blocks_used += (static_cast<int64_t>(a->request.prompt.size() + c.next) + 15) / 16;
    }
  }
  s.kv_blocks_total = options_.kv_blocks_total;
  s.max_context = options_.max_context;
  s.prompt_tokens = prompt_tokens_;
  s.generated_tokens = generated_tokens_;
  s.last_batch_size = last_batch_;
  s.ready = !draining_;
  return s;
}

void FakeEngine::Drain(int64_t deadline_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  draining_ = true;
  idle_cv_.wait_for(lock, std::chrono::milliseconds(deadline_ms),
                    [this] { return active_.empty(); });
  for (auto& [id, a] : active_) a->cancelled = true;
  cv_.notify_all();
  idle_cv_.wait(lock, [this] { return active_.empty(); });
}

void FakeEngine::Loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [this] { return stop_ || !active_.empty(); });
    if (stop_ && active_.empty()) return;
    // One step: every unfinished completion of every request advances by one token.
    std::vector<std::pair<std::shared_ptr<Active>, GenerationEvent>> events;
    int64_t batch = 0;
    for (auto it = active_.begin(); it != active_.end();) {
      Active& a = *it->second;
      bool all_done = true;
      for (size_t i = 0; i < a.completions.size(); ++i) {
        Completion& c = a.completions[i];
        if (c.done) continue;
        GenerationEvent e;
        e.index = static_cast<int32_t>(i);
        if (a.cancelled) {
          e.finish = FinishReason::kCancelled;
          c.done = true;
        } else if (a.fail && c.next == 5) {
          e.finish = FinishReason::kError;
          e.error = absl::InternalError("the fake engine failed as asked ([error])");
          c.done = true;
        } else {
          ++batch;
          const int32_t token = c.script[c.next++];
          e.token = token;
          ++generated_tokens_;
          if (a.request.sampling.logprobs) {
            e.logprob = -0.05f * static_cast<float>(token % 7 + 1);
            for (int32_t k = 0; k < a.request.sampling.top_logprobs; ++k) {
              const int32_t alt = k == 0 ? token : (token + k) % tokenizer_.id_end();
              e.top_logprobs.push_back(
                  TokenLogprob{alt, k == 0 ? e.logprob : e.logprob - 0.5f * static_cast<float>(k)});
            }
          }
          const int64_t length = static_cast<int64_t>(a.request.prompt.size() + c.next);
          if (token == eos_ && !a.request.ignore_eos) {
            e.finish = FinishReason::kStop;
          } else if ((a.request.max_new_tokens > 0 &&
                      static_cast<int64_t>(c.next) >= a.request.max_new_tokens) ||
                     length >= options_.max_context || c.next >= c.script.size()) {
            e.finish = FinishReason::kLength;
          }
          if (e.finish != FinishReason::kNone) c.done = true;
        }
        if (!c.done) all_done = false;
        events.emplace_back(it->second, std::move(e));
      }
      it = all_done ? active_.erase(it) : std::next(it);
    }
    last_batch_ = batch;
    lock.unlock();
    for (auto& [a, e] : events) a->on_event(e);
    events.clear();
    std::this_thread::sleep_for(std::chrono::microseconds(options_.token_delay_us));
    lock.lock();
    idle_cv_.notify_all();
  }
}

}  // namespace r1::testing

#include "coordinator/serve/chat_session.h"

#include <condition_variable>
#include <deque>
#include <iostream>
#include <mutex>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "coordinator/http/completion_text.h"

namespace r1 {
namespace {

constexpr const char* kFaint = "\x1b[2m";
constexpr const char* kReset = "\x1b[0m";

// Engine events, handed from the engine's thread to the terminal's.
class EventQueue {
 public:
  void Push(const GenerationEvent& e) {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(e);
    cv_.notify_one();
  }
  GenerationEvent Pop() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [this] { return !events_.empty(); });
    GenerationEvent e = std::move(events_.front());
    events_.pop_front();
    return e;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<GenerationEvent> events_;
};

}  // namespace

absl::Status RunChatSession(Engine& engine, const http::PromptEncoder& encoder,
                            const ChatSessionOptions& options, std::istream& in,
                            std::ostream& out) {
  std::vector<ChatMessage> history;
  if (!options.system.empty()) history.push_back({"system", options.system, std::nullopt});
  const size_t base = history.size();
  std::string line;
  while (true) {
    if (options.prompt) out << "> " << std::flush;
    if (!std::getline(in, line)) break;
    const std::string text(absl::StripAsciiWhitespace(line));
    if (text.empty()) continue;
    if (text == "/exit" || text == "/quit") break;
    if (text == "/reset") {
      history.resize(base);
      out << "(conversation cleared)\n";
      continue;
    }
    history.push_back({"user", text, std::nullopt});
    auto prompt = encoder.EncodeChat(history, /*add_generation_prompt=*/true);
    if (!prompt.ok()) return prompt.status();
    GenerationRequest request;
    request.prompt = std::move(*prompt);
    request.sampling = options.sampling;
    request.max_new_tokens = options.max_new_tokens;
    auto queue = std::make_shared<EventQueue>();
    auto id =
        engine.Submit(std::move(request), [queue](const GenerationEvent& e) { queue->Push(e); });
    if (!id.ok()) {
      out << "error: " << id.status().message() << "\n";
      history.pop_back();
      continue;
    }
    http::CompletionText::Options text_options;
    text_options.starts_in_reasoning = encoder.starts_in_reasoning();
    http::CompletionText completion(encoder.tokenizer(), text_options);
    std::string answer;
    bool in_reasoning = false, wrote_any = false;
    while (!completion.finished()) {
      const http::TextDelta d = completion.Push(queue->Pop());
      if (!d.reasoning.empty()) {
        if (!in_reasoning) out << (options.ansi ? kFaint : "<think>\n");
        in_reasoning = true;
        out << d.reasoning;
      }
      if (!d.content.empty()) {
        if (in_reasoning) out << (options.ansi ? absl::StrCat(kReset, "\n") : "\n</think>\n\n");
        in_reasoning = false;
        out << d.content;
        answer += d.content;
      }
      wrote_any = wrote_any || !d.reasoning.empty() || !d.content.empty();
      if (d.finished) {
        if (in_reasoning) out << (options.ansi ? absl::StrCat(kReset, "\n") : "\n</think>\n");
        if (d.finish == FinishReason::kError) out << "\nerror: " << d.error.message();
        if (d.finish == FinishReason::kLength) out << "\n[stopped: length limit]";
      }
      out << std::flush;
    }
    out << "\n";
    if (wrote_any) out << "\n";
    history.push_back({"assistant", answer, std::nullopt});
  }
  return absl::OkStatus();
}

}  // namespace r1

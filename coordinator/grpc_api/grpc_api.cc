#include "coordinator/grpc_api/grpc_api.h"

#include <grpcpp/grpcpp.h>

#include <cctype>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "coordinator/chat/chat_template.h"
#include "coordinator/http/completion_text.h"
#include "coordinator/http/generation_job.h"
#include "coordinator/http/prompt_encoder.h"
#include "coordinator/tokenizer/tokenizer.h"
#include "proto/r1serve.grpc.pb.h"

namespace r1::grpc_api {
namespace pb = ::r1serve::v1;

namespace {

using Clock = std::chrono::steady_clock;

grpc::Status Invalid(const std::string& field, const std::string& message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, absl::StrCat(field, ": ", message));
}

// absl and gRPC share the canonical code numbers.
grpc::Status FromAbsl(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  auto code = static_cast<grpc::StatusCode>(static_cast<int>(status.code()));
  // The engine says OUT_OF_RANGE for a request that cannot fit; to a client that is bad input.
  if (code == grpc::StatusCode::OUT_OF_RANGE) code = grpc::StatusCode::INVALID_ARGUMENT;
  return grpc::Status(code, std::string(status.message()));
}

// Compares without an early exit, so the key's bytes cannot be found by timing.
bool ConstantTimeEquals(absl::string_view a, absl::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ b[i % std::max<size_t>(b.size(), 1)];
  return diff == 0;
}

pb::FinishReason ToProto(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop:
      return pb::FINISH_REASON_STOP;
    case FinishReason::kLength:
      return pb::FINISH_REASON_LENGTH;
    case FinishReason::kCancelled:
      return pb::FINISH_REASON_CANCELLED;
    default:
      return pb::FINISH_REASON_UNSPECIFIED;
  }
}

// An Engine that forwards to another, first handing every event to `tap`: how a stream learns the
// token ids (GenerationJob gives it text only). Lives as long as the stream that uses it.
class TapEngine : public Engine {
 public:
  TapEngine(Engine& inner, std::function<void(const GenerationEvent&)> tap)
      : inner_(inner), tap_(std::move(tap)) {}
  absl::StatusOr<RequestId> Submit(GenerationRequest request,
                                   std::function<void(const GenerationEvent&)> on_event) override {
    return inner_.Submit(std::move(request),
                         [tap = tap_, on_event = std::move(on_event)](const GenerationEvent& e) {
                           tap(e);
                           on_event(e);
                         });
  }
  void Cancel(RequestId id) override { inner_.Cancel(id); }
  EngineStats Stats() const override { return inner_.Stats(); }
  void Drain(int64_t deadline_ms) override { inner_.Drain(deadline_ms); }
  int64_t max_context() const override { return inner_.max_context(); }
  int32_t eos_token_id() const override { return inner_.eos_token_id(); }

 private:
  Engine& inner_;
  std::function<void(const GenerationEvent&)> tap_;
};

// Token ids generated but not yet sent (written on the engine's thread, taken with the text).
struct TokenBox {
  std::mutex mu;
  std::vector<int32_t> ids;
  std::vector<int32_t> Take() {
    std::lock_guard<std::mutex> lock(mu);
    return std::exchange(ids, {});
  }
};

// Chunk-type specifics: a text delta into a chunk, merging chunks, the final chunk.
void Fill(const http::TextDelta& d, pb::GenerateChunk* c) {
  c->mutable_text()->append(d.content);
  c->mutable_text()->append(d.reasoning);  // empty: Generate does not split reasoning
}
void Fill(const http::TextDelta& d, pb::ChatChunk* c) {
  c->mutable_reasoning_delta()->append(d.reasoning);
  c->mutable_content_delta()->append(d.content);
}
void Merge(pb::GenerateChunk& from, pb::GenerateChunk* into) {
  into->mutable_token_ids()->Add(from.token_ids().begin(), from.token_ids().end());
  into->mutable_text()->append(from.text());
  if (from.finish_reason() != pb::FINISH_REASON_UNSPECIFIED) {
    into->set_finish_reason(from.finish_reason());
  }
  if (from.has_usage()) *into->mutable_usage() = from.usage();
}
void Merge(pb::ChatChunk& from, pb::ChatChunk* into) {
  into->mutable_token_ids()->Add(from.token_ids().begin(), from.token_ids().end());
  into->mutable_reasoning_delta()->append(from.reasoning_delta());
  into->mutable_content_delta()->append(from.content_delta());
  if (from.finish_reason() != pb::FINISH_REASON_UNSPECIFIED) {
    into->set_finish_reason(from.finish_reason());
  }
  if (from.has_usage()) *into->mutable_usage() = from.usage();
}

}  // namespace

// ---------------------------------------------------------------------------------------------

class GrpcApiServer::Service final : public pb::R1Serve::CallbackService {
 public:
  Service(GrpcApiOptions options, Engine* engine, http::Metrics* metrics,
          std::unique_ptr<Tokenizer> tokenizer, std::optional<ChatTemplate> chat_template)
      : options_(std::move(options)),
        engine_(engine),
        metrics_(metrics != nullptr ? metrics : &own_metrics_),
        tokenizer_(std::move(tokenizer)),
        encoder_(*tokenizer_, std::move(chat_template)),
        canceller_(engine),
        created_unix_(std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count()) {}

  grpc::ServerWriteReactor<pb::GenerateChunk>* Generate(grpc::CallbackServerContext* ctx,
                                                        const pb::GenerateRequest* req) override;
  grpc::ServerWriteReactor<pb::ChatChunk>* Chat(grpc::CallbackServerContext* ctx,
                                                const pb::ChatRequest* req) override;
  grpc::ServerUnaryReactor* Tokenize(grpc::CallbackServerContext* ctx,
                                     const pb::TokenizeRequest* req,
                                     pb::TokenizeResponse* resp) override;
  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* ctx,
                                       const pb::ListModelsRequest* req,
                                       pb::ListModelsResponse* resp) override;
  grpc::ServerUnaryReactor* Health(grpc::CallbackServerContext* ctx, const pb::HealthRequest* req,
                                   pb::HealthResponse* resp) override;

  void SetDraining() { draining_.store(true); }
  int64_t active_streams() const { return active_.load(); }

  template <typename Chunk>
  friend class Stream;

 private:
  grpc::Status Authorize(const grpc::CallbackServerContext* ctx) const;
  // The checks every generation call makes first: key, draining, model name.
  grpc::Status Admit(const grpc::CallbackServerContext* ctx, const std::string& model) const;
  grpc::Status ReadSampling(const pb::SamplingParams& s, EngineSampling* out) const;
  // stop, stop_token_ids, and max_tokens against the prompt already in `request`.
  grpc::Status ReadLimits(const char* prompt_field, int64_t max_tokens,
                          const google::protobuf::RepeatedPtrField<std::string>& stop,
                          const google::protobuf::RepeatedField<int32_t>& stop_token_ids,
                          GenerationRequest* request, std::vector<std::string>* stops) const;
  grpc::Status ReadMessages(const google::protobuf::RepeatedPtrField<pb::ChatMessage>& in,
                            std::vector<ChatMessage>* out) const;
  // The chat prompt's ids; `*thinking`: the reply starts inside <think>.
  grpc::Status EncodeChat(const google::protobuf::RepeatedPtrField<pb::ChatMessage>& messages,
                          std::optional<bool> think, std::vector<int32_t>* ids,
                          bool* thinking) const;
  int64_t MaxTokensLimit() const {
    const int64_t context = engine_->max_context();
    return options_.max_tokens > 0 ? std::min(options_.max_tokens, context) : context;
  }

  GrpcApiOptions options_;
  Engine* engine_;
  http::Metrics own_metrics_;
  http::Metrics* metrics_;
  std::unique_ptr<Tokenizer> tokenizer_;
  http::PromptEncoder encoder_;
  http::Canceller canceller_;
  int64_t created_unix_;
  std::atomic<bool> draining_{false};
  std::atomic<int64_t> active_{0};
};

// One Generate or Chat call: a write reactor fed by a GenerationJob.
//
// Lifetime: the reactor deletes itself in OnDone, which gRPC calls only after Finish. Finish is
// called only when no job callback can run any more: before a job starts (bad input), when it
// fails to start, or from the job's on_done (the job drops its callbacks right after).
// Locks: the job calls in under its own lock; this takes mu_ inside it, never the other way round
// (the job is cancelled with mu_ released).
template <typename Chunk>
class Stream final : public grpc::ServerWriteReactor<Chunk> {
 public:
  explicit Stream(GrpcApiServer::Service* service) : service_(service) {
    service_->active_.fetch_add(1);
  }

  // Ends the call without a job.
  void Reject(const grpc::Status& status) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      finished_ = true;
    }
    this->Finish(status);
  }

  void Begin(GenerationRequest request, http::CompletionText::Options text) {
    auto tokens = std::make_shared<TokenBox>();
    tokens_ = tokens;
    tap_ = std::make_unique<TapEngine>(*service_->engine_, [tokens](const GenerationEvent& e) {
      if (!e.token) return;
      std::lock_guard<std::mutex> lock(tokens->mu);
      tokens->ids.push_back(*e.token);
    });
    http::GenerationJob::Callbacks callbacks;
    callbacks.on_delta = [this](http::GenerationJob&, int, const http::TextDelta& d) {
      if (d.finished) {  // on_done sends it with the last chunk (right after this)
        final_delta_ = d;
        return;
      }
      Chunk c;
      for (int32_t id : tokens_->Take()) c.add_token_ids(id);
      Fill(d, &c);
      Push(std::move(c), /*last=*/false, grpc::Status::OK);
    };
    callbacks.on_done = [this](http::GenerationJob& job) { Done(job); };
    service_->metrics_->StreamOpened();
    auto job = http::GenerationJob::Start(*tap_, service_->canceller_, *service_->metrics_,
                                          *service_->tokenizer_, std::move(request),
                                          std::move(text), std::move(callbacks), Clock::now());
    if (!job.ok()) {
      service_->metrics_->StreamClosed();
      Reject(FromAbsl(job.status()));
      return;
    }
    bool cancel = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = *job;
      cancel = cancelled_;
    }
    if (cancel) (*job)->CancelByClient();
  }

  // The client cancelled, or the deadline passed, or the connection broke.
  void OnCancel() override { CancelJob(); }

  void OnWriteDone(bool ok) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (!ok) broken_ = true;
    if (ok && has_pending_) {
      current_ = std::move(pending_);
      pending_.Clear();
      has_pending_ = false;
      lock.unlock();
      this->StartWrite(&current_);
      return;
    }
    writing_ = false;
    const bool finish = finish_pending_ && !finished_;
    if (finish) finished_ = true;
    lock.unlock();
    if (!ok) CancelJob();  // the job's on_done finishes the call
    if (finish) this->Finish(final_status_);
  }

  void OnDone() override {
    service_->active_.fetch_sub(1);
    delete this;
  }

 private:
  void CancelJob() {
    std::shared_ptr<http::GenerationJob> job;
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled_ = true;
      job = job_;
    }
    if (job) job->CancelByClient();
  }

  // The job's end: the last chunk (finish reason, usage), or the error as the call's status.
  void Done(http::GenerationJob& job) {
    service_->metrics_->StreamClosed();
    const http::CompletionResult& r = job.results()[0];
    if (r.finish == FinishReason::kError) {
      absl::Status e = r.error.ok() ? absl::InternalError("generation failed") : r.error;
      grpc::Status s = FromAbsl(e);
      if (s.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
        s = grpc::Status(grpc::StatusCode::INTERNAL, s.error_message());
      }
      Push(std::nullopt, /*last=*/true, s);
      return;
    }
    Chunk c;
    for (int32_t id : tokens_->Take()) c.add_token_ids(id);
    c.set_finish_reason(ToProto(r.finish));
    pb::Usage* u = c.mutable_usage();
    u->set_prompt_tokens(job.prompt_tokens());
    u->set_completion_tokens(job.completion_tokens());
    u->set_reasoning_tokens(job.reasoning_tokens());
    if (final_delta_) Fill(*final_delta_, &c);
    Push(std::move(c), /*last=*/true, grpc::Status::OK);
  }

  // Sends `c` (merged into the pending chunk while a write is in flight); `last`: then Finish.
  void Push(std::optional<Chunk> c, bool last, grpc::Status status) {
    std::unique_lock<std::mutex> lock(mu_);
    if (last) {
      finish_pending_ = true;
      final_status_ = std::move(status);
    }
    if (finished_) return;
    if (writing_) {
      if (c) {
        Merge(*c, &pending_);
        has_pending_ = true;
      }
      return;
    }
    if (c && !broken_) {
      current_ = std::move(*c);
      writing_ = true;
      lock.unlock();
      this->StartWrite(&current_);
      return;
    }
    if (finish_pending_) {
      finished_ = true;
      lock.unlock();
      this->Finish(final_status_);
    }
  }

  GrpcApiServer::Service* service_;
  std::shared_ptr<TokenBox> tokens_;
  std::unique_ptr<TapEngine> tap_;
  // The finishing delta (text the decoder and stop matcher released at the end), kept by on_delta
  // for Done; both run under the job's lock.
  std::optional<http::TextDelta> final_delta_;
  std::mutex mu_;
  std::shared_ptr<http::GenerationJob> job_;
  Chunk current_, pending_;
  bool has_pending_ = false, writing_ = false, broken_ = false;
  bool cancelled_ = false, finish_pending_ = false, finished_ = false;
  grpc::Status final_status_;
};

// ---------------------------------------------------------------------------------------------

grpc::Status GrpcApiServer::Service::Authorize(const grpc::CallbackServerContext* ctx) const {
  if (options_.api_key.empty()) return grpc::Status::OK;
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  if (it != md.end()) {
    absl::string_view value(it->second.data(), it->second.size());
    if (value.size() >= 7 && absl::StartsWithIgnoreCase(value, "Bearer ")) {
      value.remove_prefix(7);
      if (ConstantTimeEquals(value, options_.api_key)) return grpc::Status::OK;
    }
  }
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                      "missing or invalid API key: send the metadata 'authorization: Bearer <key>' "
                      "(the key of --api-key or R1_API_KEY)");
}

grpc::Status GrpcApiServer::Service::Admit(const grpc::CallbackServerContext* ctx,
                                           const std::string& model) const {
  if (grpc::Status s = Authorize(ctx); !s.ok()) return s;
  if (draining_.load()) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "the server is shutting down and takes no new requests");
  }
  if (!model.empty() && model != options_.model_name) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("model: '", model, "' is not served; this server serves '",
                                     options_.model_name, "'"));
  }
  return grpc::Status::OK;
}

grpc::Status GrpcApiServer::Service::ReadSampling(const pb::SamplingParams& s,
                                                  EngineSampling* out) const {
  auto range = [](const char* name, double v, double lo, double hi) -> grpc::Status {
    if (!(v >= lo && v <= hi)) {  // NaN fails too
      return Invalid(absl::StrCat("sampling.", name),
                     absl::StrCat(v, " is outside [", lo, ", ", hi, "]"));
    }
    return grpc::Status::OK;
  };
  grpc::Status st;
  if (s.has_temperature()) {
    if (!(st = range("temperature", s.temperature(), 0, 2)).ok()) return st;
    out->temperature = s.temperature();
  }
  if (s.has_top_p()) {
    if (!(st = range("top_p", s.top_p(), 0, 1)).ok()) return st;
    if (s.top_p() <= 0) return Invalid("sampling.top_p", "must be greater than 0");
    out->top_p = s.top_p();
  }
  if (s.has_top_k()) {
    if (s.top_k() < 0 || s.top_k() > 1'000'000) {
      return Invalid("sampling.top_k", absl::StrCat(s.top_k(), " is outside [0, 1000000]"));
    }
    out->top_k = s.top_k();
  }
  if (s.has_min_p()) {
    if (!(st = range("min_p", s.min_p(), 0, 1)).ok()) return st;
    out->min_p = s.min_p();
  }
  if (s.has_presence_penalty()) {
    if (!(st = range("presence_penalty", s.presence_penalty(), -2, 2)).ok()) return st;
    out->presence_penalty = s.presence_penalty();
  }
  if (s.has_frequency_penalty()) {
    if (!(st = range("frequency_penalty", s.frequency_penalty(), -2, 2)).ok()) return st;
    out->frequency_penalty = s.frequency_penalty();
  }
  if (s.has_repetition_penalty()) {
    if (!(st = range("repetition_penalty", s.repetition_penalty(), 0.01, 10)).ok()) return st;
    out->repetition_penalty = s.repetition_penalty();
  }
  if (s.has_seed()) out->seed = s.seed();
  return grpc::Status::OK;
}

grpc::Status GrpcApiServer::Service::ReadLimits(
    const char* prompt_field, int64_t max_tokens, const google::protobuf::RepeatedPtrField<std::string>& stop,
    const google::protobuf::RepeatedField<int32_t>& stop_token_ids, GenerationRequest* request,
    std::vector<std::string>* stops) const {
  if (static_cast<size_t>(stop.size()) > options_.max_stop_strings) {
    return Invalid("stop", absl::StrCat("at most ", options_.max_stop_strings,
                                        " stop strings, got ", stop.size()));
  }
  for (int i = 0; i < stop.size(); ++i) {
    if (stop[i].empty() || stop[i].size() > options_.max_stop_bytes) {
      return Invalid(absl::StrCat("stop[", i, "]"),
                     absl::StrCat("must be 1 to ", options_.max_stop_bytes, " bytes"));
    }
    stops->push_back(stop[i]);
  }
  if (static_cast<size_t>(stop_token_ids.size()) > options_.max_stop_token_ids) {
    return Invalid("stop_token_ids", absl::StrCat("at most ", options_.max_stop_token_ids,
                                                  " ids, got ", stop_token_ids.size()));
  }
  for (int i = 0; i < stop_token_ids.size(); ++i) {
    if (stop_token_ids[i] < 0 || stop_token_ids[i] >= tokenizer_->id_end()) {
      return Invalid(absl::StrCat("stop_token_ids[", i, "]"),
                     absl::StrCat(stop_token_ids[i], " is outside [0, ", tokenizer_->id_end(), ")"));
    }
    request->stop_token_ids.push_back(stop_token_ids[i]);
  }
  const int64_t context = engine_->max_context();
  const int64_t prompt = static_cast<int64_t>(request->prompt.size());
  if (prompt >= context) {
    return Invalid(prompt_field, absl::StrCat("the prompt is ", prompt,
                                          " tokens; this model's context is ", context,
                                          " tokens, and at least one must be left to generate"));
  }
  const int64_t limit = MaxTokensLimit();
  if (max_tokens < 0 || max_tokens > limit) {
    return Invalid("max_tokens", absl::StrCat(max_tokens, " is outside [0, ", limit, "]"));
  }
  if (max_tokens > 0 && prompt + max_tokens > context) {
    return Invalid("max_tokens",
                   absl::StrCat(max_tokens, " but the prompt is ", prompt,
                                " tokens and the context is ", context, "; at most ",
                                context - prompt, " can be generated"));
  }
  request->max_new_tokens = max_tokens > 0 ? max_tokens : std::min(context - prompt, limit);
  return grpc::Status::OK;
}

grpc::Status GrpcApiServer::Service::ReadMessages(
    const google::protobuf::RepeatedPtrField<pb::ChatMessage>& in,
    std::vector<ChatMessage>* out) const {
  if (in.empty()) return Invalid("messages", "at least one message is required");
  if (static_cast<size_t>(in.size()) > options_.max_messages) {
    return Invalid("messages", absl::StrCat("at most ", options_.max_messages,
                                            " messages, got ", in.size()));
  }
  size_t bytes = 0;
  for (int i = 0; i < in.size(); ++i) {
    const pb::ChatMessage& m = in[i];
    std::string role = m.role();
    if (role == "developer") role = "system";
    if (role != "system" && role != "user" && role != "assistant" && role != "tool") {
      return Invalid(absl::StrCat("messages[", i, "].role"),
                     absl::StrCat("'", m.role(),
                                  "' is not one of system, developer, user, assistant, tool"));
    }
    bytes += m.content().size();
    if (bytes > options_.max_text_bytes) {
      return Invalid(absl::StrCat("messages[", i, "].content"),
                     absl::StrCat("the messages hold more than ", options_.max_text_bytes,
                                  " bytes of text"));
    }
    out->push_back(ChatMessage{role, m.content(), std::nullopt});
  }
  return grpc::Status::OK;
}

grpc::Status GrpcApiServer::Service::EncodeChat(
    const google::protobuf::RepeatedPtrField<pb::ChatMessage>& in, std::optional<bool> think,
    std::vector<int32_t>* ids, bool* thinking) const {
  if (!encoder_.chat_template()) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "this model folder has no chat template: use Generate");
  }
  std::vector<ChatMessage> messages;
  if (grpc::Status s = ReadMessages(in, &messages); !s.ok()) return s;
  // As Ollama's `think`: false closes the reasoning block in the prompt.
  *thinking = think.value_or(true) && encoder_.starts_in_reasoning();
  const std::string prefix = encoder_.starts_in_reasoning() && !*thinking ? "</think>\n\n" : "";
  auto encoded = encoder_.EncodeChat(messages, /*add_generation_prompt=*/true, prefix);
  if (!encoded.ok()) {
    grpc::Status s = FromAbsl(encoded.status());
    return grpc::Status(s.error_code(), absl::StrCat("messages: ", s.error_message()));
  }
  *ids = std::move(*encoded);
  return grpc::Status::OK;
}

grpc::ServerWriteReactor<pb::GenerateChunk>* GrpcApiServer::Service::Generate(
    grpc::CallbackServerContext* ctx, const pb::GenerateRequest* req) {
  auto* stream = new Stream<pb::GenerateChunk>(this);
  auto fail = [stream](const grpc::Status& s) {
    stream->Reject(s);
    return stream;
  };
  if (grpc::Status s = Admit(ctx, req->model()); !s.ok()) return fail(s);
  GenerationRequest request;
  switch (req->prompt_case()) {
    case pb::GenerateRequest::kText:
      if (req->text().empty()) return fail(Invalid("text", "the prompt is empty"));
      if (req->text().size() > options_.max_text_bytes) {
        return fail(Invalid("text", absl::StrCat("at most ", options_.max_text_bytes,
                                                 " bytes, got ", req->text().size())));
      }
      request.prompt = encoder_.EncodeRaw(req->text(), /*add_bos=*/true);
      break;
    case pb::GenerateRequest::kTokenIds: {
      const auto& ids = req->token_ids().ids();
      if (ids.empty()) return fail(Invalid("token_ids.ids", "the prompt is empty"));
      if (ids.size() >= engine_->max_context()) {
        return fail(Invalid("token_ids.ids",
                            absl::StrCat("the prompt is ", ids.size(), " tokens; the context is ",
                                         engine_->max_context())));
      }
      for (int i = 0; i < ids.size(); ++i) {
        if (ids[i] < 0 || ids[i] >= tokenizer_->id_end()) {
          return fail(Invalid(absl::StrCat("token_ids.ids[", i, "]"),
                              absl::StrCat(ids[i], " is outside [0, ", tokenizer_->id_end(), ")")));
        }
      }
      request.prompt.assign(ids.begin(), ids.end());
      break;
    }
    default:
      return fail(Invalid("prompt", "set text or token_ids"));
  }
  if (grpc::Status s = ReadSampling(req->sampling(), &request.sampling); !s.ok()) return fail(s);
  http::CompletionText::Options text;
  const char* prompt_field = req->has_token_ids() ? "token_ids.ids" : "text";
  if (grpc::Status s = ReadLimits(prompt_field, req->max_tokens(), req->stop(),
                                  req->stop_token_ids(), &request, &text.stop);
      !s.ok()) {
    return fail(s);
  }
  request.ignore_eos = req->ignore_eos();
  text.split_reasoning = false;  // a raw completion: all of it is text
  stream->Begin(std::move(request), std::move(text));
  return stream;
}

grpc::ServerWriteReactor<pb::ChatChunk>* GrpcApiServer::Service::Chat(
    grpc::CallbackServerContext* ctx, const pb::ChatRequest* req) {
  auto* stream = new Stream<pb::ChatChunk>(this);
  auto fail = [stream](const grpc::Status& s) {
    stream->Reject(s);
    return stream;
  };
  if (grpc::Status s = Admit(ctx, req->model()); !s.ok()) return fail(s);
  GenerationRequest request;
  bool thinking = false;
  std::optional<bool> think;
  if (req->has_think()) think = req->think();
  if (grpc::Status s = EncodeChat(req->messages(), think, &request.prompt, &thinking); !s.ok()) {
    return fail(s);
  }
  if (grpc::Status s = ReadSampling(req->sampling(), &request.sampling); !s.ok()) return fail(s);
  http::CompletionText::Options text;
  if (grpc::Status s = ReadLimits("messages", req->max_tokens(), req->stop(),
                                  req->stop_token_ids(), &request, &text.stop);
      !s.ok()) {
    return fail(s);
  }
  text.split_reasoning = true;
  text.starts_in_reasoning = thinking;
  stream->Begin(std::move(request), std::move(text));
  return stream;
}

grpc::ServerUnaryReactor* GrpcApiServer::Service::Tokenize(grpc::CallbackServerContext* ctx,
                                                           const pb::TokenizeRequest* req,
                                                           pb::TokenizeResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  auto finish = [reactor](const grpc::Status& s) {
    reactor->Finish(s);
    return reactor;
  };
  if (grpc::Status s = Authorize(ctx); !s.ok()) return finish(s);
  std::vector<int32_t> ids;
  if (!req->messages().empty()) {
    if (!req->text().empty()) return finish(Invalid("text", "set text or messages, not both"));
    std::optional<bool> think;
    if (req->has_think()) think = req->think();
    bool thinking = false;
    if (grpc::Status s = EncodeChat(req->messages(), think, &ids, &thinking); !s.ok()) {
      return finish(s);
    }
  } else {
    if (req->text().size() > options_.max_text_bytes) {
      return finish(Invalid("text", absl::StrCat("at most ", options_.max_text_bytes,
                                                 " bytes, got ", req->text().size())));
    }
    ids = encoder_.EncodeRaw(req->text(), req->add_special());
  }
  for (int32_t id : ids) {
    resp->add_ids(id);
    const absl::string_view piece = tokenizer_->TokenString(id);
    resp->add_pieces(std::string(piece));
    const absl::string_view bytes = tokenizer_->TokenBytes(id);
    resp->add_piece_bytes(std::string(bytes));
  }
  return finish(grpc::Status::OK);
}

grpc::ServerUnaryReactor* GrpcApiServer::Service::ListModels(grpc::CallbackServerContext* ctx,
                                                             const pb::ListModelsRequest*,
                                                             pb::ListModelsResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  if (grpc::Status s = Authorize(ctx); !s.ok()) {
    reactor->Finish(s);
    return reactor;
  }
  pb::Model* m = resp->add_models();
  m->set_id(options_.model_name);
  m->set_max_context(engine_->max_context());
  m->set_created(created_unix_);
  m->set_owned_by("r1serve");
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* GrpcApiServer::Service::Health(grpc::CallbackServerContext* ctx,
                                                         const pb::HealthRequest*,
                                                         pb::HealthResponse* resp) {
  auto* reactor = ctx->DefaultReactor();
  const EngineStats stats = engine_->Stats();
  if (draining_.load()) {
    resp->set_status(pb::SERVING_STATUS_NOT_READY);
    resp->set_reason("draining: the server is shutting down");
  } else if (!stats.ready) {
    resp->set_status(pb::SERVING_STATUS_NOT_READY);
    resp->set_reason("the engine is not ready");
  } else {
    resp->set_status(pb::SERVING_STATUS_READY);
  }
  resp->set_running(stats.running);
  resp->set_waiting(stats.waiting);
  resp->set_kv_blocks_used(stats.kv_blocks_used);
  resp->set_kv_blocks_total(stats.kv_blocks_total);
  resp->set_active_streams(active_.load());
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

// ---------------------------------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<GrpcApiServer>> GrpcApiServer::Start(GrpcApiOptions options,
                                                                    Engine* engine,
                                                                    http::Metrics* metrics) {
  if (options.model_name.empty()) return absl::InvalidArgumentError("gRPC API: no model name");
  auto tokenizer = Tokenizer::Load(options.model_dir);
  if (!tokenizer.ok()) return tokenizer.status();
  std::optional<ChatTemplate> chat_template;
  if (!(*tokenizer)->chat_template().empty()) {
    auto t = ChatTemplate::FromJinja((*tokenizer)->chat_template(), (*tokenizer)->bos_token());
    if (t.ok()) chat_template = std::move(*t);
  }
  std::unique_ptr<GrpcApiServer> server(new GrpcApiServer());
  const std::string listen = options.listen;
  const int max_receive = options.max_receive_bytes;
  server->service_ = std::make_unique<Service>(std::move(options), engine, metrics,
                                               std::move(*tokenizer), std::move(chat_template));
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &server->port_);
  builder.RegisterService(server->service_.get());
  builder.SetMaxReceiveMessageSize(max_receive);
  server->server_ = builder.BuildAndStart();
  if (!server->server_ || server->port_ == 0) {
    server->shut_down_ = true;
    return absl::UnavailableError(
        absl::StrCat("gRPC API: cannot listen on '", listen,
                     "' (expected HOST:PORT; is the port taken?)"));
  }
  const size_t colon = listen.rfind(':');
  server->address_ = absl::StrCat(listen.substr(0, colon), ":", server->port_);
  return server;
}

GrpcApiServer::~GrpcApiServer() { Shutdown(std::chrono::milliseconds(0)); }

void GrpcApiServer::SetDraining() { service_->SetDraining(); }

int64_t GrpcApiServer::active_streams() const { return service_->active_streams(); }

void GrpcApiServer::Shutdown(std::chrono::milliseconds grace) {
  if (shut_down_) return;
  shut_down_ = true;
  server_->Shutdown(std::chrono::system_clock::now() + grace);
  server_->Wait();
}

}  // namespace r1::grpc_api

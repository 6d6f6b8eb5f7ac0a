#include "cli/remote_generate.h"

#include <cstdio>

#include "absl/strings/str_cat.h"

#if R1_WITH_SERVICES
#include "grpcpp/grpcpp.h"
#include "proto/worker.grpc.pb.h"
#endif

namespace r1 {

#if R1_WITH_SERVICES

absl::Status RunRemoteGenerate(const std::string& coordinator, const std::vector<int32_t>& prompt,
                               const GenerateOptions& options) {
  namespace pb = worker::v1;
  auto channel = grpc::CreateChannel(coordinator, grpc::InsecureChannelCredentials());
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    return absl::UnavailableError(absl::StrCat("cannot reach the coordinator at ", coordinator, " within 10 s"));
  }
  auto stub = pb::Coordinator::NewStub(channel);
  pb::GenerateRequest req;
  req.mutable_prompt()->Assign(prompt.begin(), prompt.end());
  req.set_max_new_tokens(options.max_new_tokens);
  req.mutable_sampling()->set_temperature(options.sampling.temperature);
  req.mutable_sampling()->set_top_p(options.sampling.top_p);
  req.mutable_sampling()->set_top_k(options.sampling.top_k);
  req.mutable_sampling()->set_seed(options.sampling.seed);
  req.set_stop_at_eos(options.stop_at_eos);
  grpc::ClientContext ctx;
  pb::GenerateReply reply;
  const grpc::Status s = stub->Generate(&ctx, req, &reply);
  if (!s.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                        absl::StrCat("coordinator ", coordinator, ": ", s.error_message()));
  }
  std::string out;
  for (int i = 0; i < reply.tokens_size(); ++i) absl::StrAppend(&out, i ? "," : "", reply.tokens(i));
  std::printf("%s\n", out.c_str());
  const double decode_steps = std::max(reply.tokens_size(), 1) - 1;
  std::fprintf(stderr, "prefill: %zu tokens in %.3f s; decode: %d tokens, %.1f tokens/s (on the worker group)\n",
               prompt.size(), reply.prefill_seconds(), reply.tokens_size(),
               decode_steps / std::max(reply.decode_seconds(), 1e-9));
  return absl::OkStatus();
}

#else

absl::Status RunRemoteGenerate(const std::string&, const std::vector<int32_t>&, const GenerateOptions&) {
  return absl::UnimplementedError("this r1 was built without R1_SERVICES: --coordinator is not available");
}

#endif

}  // namespace r1

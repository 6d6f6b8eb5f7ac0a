#include "cli/generate_gpu.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#ifdef R1_WITH_GPU
#include "worker/generate_gpu.h"
#include "worker/sampler.h"
#include "worker/model/gpu_model.h"
#endif

namespace r1 {

#ifdef R1_WITH_GPU

absl::Status RunGpuGenerate(const std::string& model_dir, const std::vector<int32_t>& prompt,
                            const GenerateOptions& options, const std::string& activations) {
  R1_RETURN_IF_ERROR(ValidateSampling(options.sampling));
  GpuModelOptions mo;
  R1_ASSIGN_OR_RETURN(mo.activations, ParseGpuActivations(activations));
  // The workspace need not exceed one prefill chunk.
  mo.max_step_tokens = std::max<int64_t>(1, std::min<int64_t>(options.prefill_chunk, static_cast<int64_t>(prompt.size())));
  R1_ASSIGN_OR_RETURN(auto model, GpuDeepseekV3Model::Load(model_dir, mo));
  R1_ASSIGN_OR_RETURN(GenerateResult r, GenerateOnGpu(*model, prompt, options));
  std::string out;
  for (size_t i = 0; i < r.tokens.size(); ++i) absl::StrAppend(&out, i ? "," : "", r.tokens[i]);
  std::printf("%s\n", out.c_str());
  const double decode_steps = static_cast<double>(std::max<size_t>(r.tokens.size(), 1) - 1);
  std::fprintf(stderr, "GPU (%s activations): prefill: %ld tokens in %.3f s (%.1f tokens/s); decode: %zu tokens, "
               "%.1f tokens/s\n", activations.c_str(), static_cast<long>(r.prompt_tokens), r.prefill_seconds,
               r.prompt_tokens / std::max(r.prefill_seconds, 1e-9), r.tokens.size(),
               decode_steps / std::max(r.decode_seconds, 1e-9));
  return absl::OkStatus();
}

#else

absl::Status RunGpuGenerate(const std::string&, const std::vector<int32_t>&, const GenerateOptions&,
                            const std::string&) {
  return absl::UnimplementedError("--gpu: this r1 was built without the CUDA backend (R1_CUDA=off or no nvcc)");
}

#endif

}  // namespace r1

// `r1 generate --coordinator HOST:PORT`: the same generation as `r1 generate`, run by
// r1-coordinator on its worker group (tensor + expert parallel) instead of in this process.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "worker/generate.h"

namespace r1 {

// Prints the new token ids (comma-separated) on stdout and timings on stderr, as `r1 generate`.
absl::Status RunRemoteGenerate(const std::string& coordinator, const std::vector<int32_t>& prompt,
                               const GenerateOptions& options);

}  // namespace r1

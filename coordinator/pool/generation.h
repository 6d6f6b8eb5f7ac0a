// One sequence generated on the worker group: the coordinator allocates its KV blocks, sends the
// prompt in prefill chunks and then one decode step per token; rank 0 samples. The scheduler
// (continuous batching over many sequences) is another piece of work; this is what
// `r1 generate --coordinator` and the integration tests run.
#pragma once

#include "absl/status/statusor.h"
#include "coordinator/pool/worker_pool.h"
#include "proto/worker.pb.h"

namespace r1 {

struct PoolGenerateOptions {
  int64_t prefill_chunk = 512;  // prompt tokens per step
};

absl::StatusOr<worker::v1::GenerateReply> GenerateOnPool(WorkerPool& pool, const worker::v1::GenerateRequest& request,
                                                        const PoolGenerateOptions& options = {});

}  // namespace r1

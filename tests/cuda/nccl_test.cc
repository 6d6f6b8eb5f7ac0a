// The NCCL communicator on the GPUs of this machine: every GPU a rank (threads of this process),
// all-reduce / all-gather / broadcast / barrier checked against the sums computed here. Skipped
// without a GPU. With one GPU the group has one rank (the collectives are then copies).
#include <cuda_runtime.h>

#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "worker/parallel/nccl_communicator.h"

namespace r1 {
namespace {

TEST(Nccl, CollectivesOnEveryLocalGpu) {
  int gpus = 0;
  if (cudaGetDeviceCount(&gpus) != cudaSuccess || gpus == 0) GTEST_SKIP() << "no CUDA device";
  auto id = MakeNcclUniqueId();
  ASSERT_TRUE(id.ok()) << id.status();
  const size_t n = 1000;
  std::vector<std::vector<float>> reduced(gpus), gathered(gpus), broadcast(gpus);
  std::vector<absl::Status> status(gpus);
  std::vector<std::thread> threads;
  for (int r = 0; r < gpus; ++r) {
    threads.emplace_back([&, r] {
      cudaSetDevice(r);
      cudaStream_t stream;
      cudaStreamCreate(&stream);
      auto comm = CreateNcclCommunicator({r, gpus}, *id, r, stream);
      if (!comm.ok()) { status[r] = comm.status(); return; }
      std::vector<float> host(n);
      for (size_t i = 0; i < n; ++i) host[i] = static_cast<float>(r + 1) * (i % 7);
      float *a, *g, *b;
      cudaMalloc(&a, n * 4);
      cudaMalloc(&g, n * 4 * gpus);
      cudaMalloc(&b, n * 4);
      cudaMemcpy(a, host.data(), n * 4, cudaMemcpyHostToDevice);
      cudaMemcpy(b, host.data(), n * 4, cudaMemcpyHostToDevice);
      absl::Status s = (*comm)->AllGather(a, n, g);
      if (s.ok()) s = (*comm)->AllReduceSum(a, n);
      if (s.ok()) s = (*comm)->Broadcast(b, n * 4, 0);
      if (s.ok()) s = (*comm)->Barrier();
      status[r] = s;
      reduced[r].resize(n);
      gathered[r].resize(n * gpus);
      broadcast[r].resize(n);
      cudaMemcpy(reduced[r].data(), a, n * 4, cudaMemcpyDeviceToHost);
      cudaMemcpy(gathered[r].data(), g, n * 4 * gpus, cudaMemcpyDeviceToHost);
      cudaMemcpy(broadcast[r].data(), b, n * 4, cudaMemcpyDeviceToHost);
      cudaFree(a), cudaFree(g), cudaFree(b);
      comm->reset();
      cudaStreamDestroy(stream);
    });
  }
  for (auto& t : threads) t.join();
  const float ranks_sum = gpus * (gpus + 1) / 2.0f;
  for (int r = 0; r < gpus; ++r) {
    ASSERT_TRUE(status[r].ok()) << "rank " << r << ": " << status[r];
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(reduced[r][i], ranks_sum * (i % 7)) << r << "," << i;
      ASSERT_EQ(broadcast[r][i], 1.0f * (i % 7));
      for (int q = 0; q < gpus; ++q) ASSERT_EQ(gathered[r][q * n + i], (q + 1.0f) * (i % 7));
    }
  }
  std::printf("[ nccl ] %d rank(s): all-reduce, all-gather, broadcast and barrier correct\n", gpus);
}

}  // namespace
}  // namespace r1

// Every CUDA op against its CPU reference on random inputs of awkward sizes. Prints the worst
// normalised error of each case. Skipped (visibly) where no GPU is present.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "common/dtype.h"
#include "gtest/gtest.h"
#include "kernels/cuda/rmsnorm.h"
#include "kernels/ops.h"

namespace r1 {
namespace {

bool HaveGpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

#define SKIP_WITHOUT_GPU() \
  if (!HaveGpu()) GTEST_SKIP() << "no CUDA device"

template <typename T>
struct DeviceBuffer {
  T* ptr = nullptr;
  explicit DeviceBuffer(size_t n) { EXPECT_EQ(cudaMalloc(&ptr, n * sizeof(T)), cudaSuccess); }
  ~DeviceBuffer() { cudaFree(ptr); }
};

TEST(CudaKernels, RmsNormMatchesCpu) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(1);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  for (int64_t rows : {1, 3, 63, 200}) {
    for (int64_t dim : {1, 3, 64, 512, 7168}) {
      std::vector<uint16_t> xb(rows * dim);
      std::vector<float> x(rows * dim), w(dim), want(rows * dim);
      for (size_t i = 0; i < x.size(); ++i) {
        xb[i] = FloatToBf16(nd(rng));
        x[i] = Bf16ToFloat(xb[i]);  // the reference sees the exact bf16 inputs
      }
      for (float& v : w) v = 1.0f + 0.1f * nd(rng);
      cpu::RmsNorm(x.data(), rows, dim, dim, w.data(), 1e-6f, want.data(), dim);
      DeviceBuffer<__nv_bfloat16> dx(x.size()), dout(x.size());
      DeviceBuffer<float> dw(dim);
      cudaMemcpy(dx.ptr, xb.data(), xb.size() * 2, cudaMemcpyHostToDevice);
      cudaMemcpy(dw.ptr, w.data(), w.size() * 4, cudaMemcpyHostToDevice);
      ASSERT_TRUE(cuda::RmsNorm({dx.ptr, dw.ptr, dout.ptr, rows, dim, dim, dim, 1e-6f}, nullptr).ok());
      std::vector<uint16_t> got(x.size());
      ASSERT_EQ(cudaMemcpy(got.data(), dout.ptr, got.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
      double worst = 0;
      for (size_t i = 0; i < got.size(); ++i) {
        const double err = std::fabs(Bf16ToFloat(got[i]) - want[i]) / (std::fabs(want[i]) + 1e-3);
        worst = std::max(worst, err);
      }
      // One bf16 rounding of the output: relative error within 2^-8, with slack for the sum order.
      EXPECT_LE(worst, 1.0 / 128) << "rows=" << rows << " dim=" << dim;
      std::printf("[ cuda ] rmsnorm rows=%ld dim=%ld worst rel err %.3g\n", static_cast<long>(rows),
                  static_cast<long>(dim), worst);
    }
  }
}

TEST(CudaKernels, RmsNormRejectsBadShapes) {
  // The launcher's checks run before any device work, so they are tested without a GPU too.
  auto* fake = reinterpret_cast<__nv_bfloat16*>(16);
  const float* w = reinterpret_cast<const float*>(16);
  EXPECT_FALSE(cuda::RmsNorm({fake, w, fake, 2, 0, 0, 0, 1e-6f}, nullptr).ok());
  EXPECT_FALSE(cuda::RmsNorm({fake, w, fake, 2, 8, 4, 8, 1e-6f}, nullptr).ok());
  EXPECT_FALSE(cuda::RmsNorm({nullptr, w, fake, 2, 8, 8, 8, 1e-6f}, nullptr).ok());
}

}  // namespace
}  // namespace r1

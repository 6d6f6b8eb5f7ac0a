// Every CUDA op against its CPU reference on random inputs of awkward sizes. Prints the worst
// normalised error of each case. Skipped (visibly) where no GPU is present.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "common/dtype.h"
#include "gtest/gtest.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/cuda/mla_reference.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/fp8_gemm.h"
#include "kernels/cuda/grouped_gemv.h"
#include "kernels/cuda/mla_decode.h"
#include "kernels/cuda/model_ops.h"
#include "kernels/cuda/rmsnorm.h"
#include "kernels/ops.h"

namespace r1 {
namespace {

using cuda_testing::DeviceBuffer;
using cuda_testing::HaveGpu;
using cuda_testing::MlaCase;
using cuda_testing::RunMlaCase;

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

// Random e4m3 weight [n, k] with power-of-two block scales, as the checkpoints hold.
struct Fp8Weight {
  std::vector<uint8_t> q;
  std::vector<float> scales, deq;  // [nb, kb], [n, k]
};
Fp8Weight RandomFp8Weight(int64_t n, int64_t k, std::mt19937_64& rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int64_t nb = (n + 127) / 128, kb = (k + 127) / 128;
  Fp8Weight w;
  w.q.resize(n * k);
  w.scales.resize(nb * kb);
  w.deq.resize(n * k);
  for (float& s : w.scales) s = std::ldexp(1.0f, static_cast<int>(rng() % 8) - 12);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c) {
      w.q[r * k + c] = FloatToFp8E4M3(nd(rng) * 100.0f);
      w.deq[r * k + c] = Fp8E4M3ToFloat(w.q[r * k + c]) * w.scales[(r / 128) * kb + c / 128];
    }
  return w;
}

TEST(CudaKernels, QuantizeAndFp8GemmMatchCpu) {
  SKIP_WITHOUT_GPU();
  auto runner = cuda::GemmRunner::Create();
  ASSERT_TRUE(runner.ok()) << runner.status();
  std::mt19937_64 rng(2);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int64_t shapes[][2] = {{64, 48},  {160, 2048}, {576, 1024}, {2048, 512}, {200, 7168},
                               {96, 192}, {48, 192},   {192, 384},  {384, 96},   {192, 48}};
  for (int64_t m : {1, 3, 63, 200}) {
    for (const auto& nk : shapes) {
      const int64_t n = nk[0], k = nk[1], groups = (k + 127) / 128;
      std::vector<uint16_t> xb(m * k);
      std::vector<float> x(m * k);
      for (size_t i = 0; i < x.size(); ++i) {
        xb[i] = FloatToBf16(nd(rng) * (i % 97 == 0 ? 20.0f : 1.0f));  // outliers, as activations have
        x[i] = Bf16ToFloat(xb[i]);
      }
      Fp8Weight w = RandomFp8Weight(n, k, rng);
      // CPU: quantise, dequantise, exact product in double.
      std::vector<uint8_t> xq(m * k);
      std::vector<float> xs(m * groups);
      cpu::QuantizeFp8PerToken128(x.data(), m, k, xq.data(), xs.data());
      std::vector<double> want(m * n);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) {
          double acc = 0;
          for (int64_t c = 0; c < k; ++c) {
            acc += static_cast<double>(Fp8E4M3ToFloat(xq[i * k + c])) * xs[i * groups + c / 128] * w.deq[j * k + c];
          }
          want[i * n + j] = acc;
        }
      const int64_t mp = cuda::Fp8PaddedRows(m), kp = cuda::Fp8PaddedK(k);
      DeviceBuffer<__nv_bfloat16> dx(m * k), dy(mp * n);
      DeviceBuffer<__nv_fp8_e4m3> dxq(mp * kp), dw(n * kp);
      DeviceBuffer<float> dxs(mp * groups);
      std::vector<uint8_t> wpad(n * kp, 0);
      for (int64_t r = 0; r < n; ++r) std::copy_n(w.q.data() + r * k, k, wpad.data() + r * kp);
      cudaMemcpy(dx.ptr, xb.data(), xb.size() * 2, cudaMemcpyHostToDevice);
      cudaMemcpy(dw.ptr, wpad.data(), wpad.size(), cudaMemcpyHostToDevice);
      const int64_t nb = (n + 127) / 128, kb = (k + 127) / 128, sstride = cuda::Fp8ScaleStride(kp);
      std::vector<float> spad(nb * sstride, 1.0f);
      for (int64_t r = 0; r < nb; ++r) std::copy_n(w.scales.data() + r * kb, kb, spad.data() + r * sstride);
      DeviceBuffer<float> dwsp(spad.size());
      cudaMemcpy(dwsp.ptr, spad.data(), spad.size() * 4, cudaMemcpyHostToDevice);
      ASSERT_TRUE(cuda::QuantizeFp8PerToken128({dx.ptr, dxq.ptr, dxs.ptr, m, k, kp}, nullptr).ok());
      // The quantiser must reproduce the CPU codes and scales exactly (padding columns zero).
      std::vector<uint8_t> gqp(mp * kp), gq(m * k);
      cudaMemcpy(gqp.data(), dxq.ptr, gqp.size(), cudaMemcpyDeviceToHost);
      for (int64_t i = 0; i < m; ++i) std::copy_n(gqp.data() + i * kp, k, gq.data() + i * k);
      std::vector<float> gs(mp * groups);
      cudaMemcpy(gs.data(), dxs.ptr, gs.size() * 4, cudaMemcpyDeviceToHost);
      int64_t code_mismatch = 0, scale_mismatch = 0;
      for (int64_t i = 0; i < m * k; ++i) code_mismatch += gq[i] != xq[i];
      for (int64_t i = 0; i < m; ++i)
        for (int64_t g = 0; g < groups; ++g) scale_mismatch += gs[g * mp + i] != xs[i * groups + g];
      for (int64_t i = m; i < mp; ++i) scale_mismatch += gs[i] != 1.0f;  // padding rows
      EXPECT_EQ(code_mismatch, 0) << "m=" << m << " k=" << k;
      EXPECT_EQ(scale_mismatch, 0) << "m=" << m << " k=" << k;
      auto gemm = [&]() -> double {
        absl::Status st = (*runner)->Fp8({dxq.ptr, dxs.ptr, dw.ptr, dwsp.ptr, dy.ptr, m, n, kp}, nullptr);
        EXPECT_TRUE(st.ok()) << st;
        std::vector<uint16_t> got(m * n);
        EXPECT_EQ(cudaMemcpy(got.data(), dy.ptr, got.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
        double num = 0, den = 0;
        for (int64_t i = 0; i < m * n; ++i) {
          const double d = Bf16ToFloat(got[i]) - want[i];
          num += d * d;
          den += want[i] * want[i];
        }
        return std::sqrt(num / std::max(den, 1e-30));
      };
      const double err = gemm();
      std::printf("[ cuda ] fp8 gemm m=%ld n=%ld k=%ld rel L2 %.3g\n", static_cast<long>(m), static_cast<long>(n),
                  static_cast<long>(k), err);
      // bf16 output rounding (2^-9) dominates; fp32 accumulation adds little.
      EXPECT_LE(err, 1e-2) << "m=" << m << " n=" << n << " k=" << k;
    }
  }
}

TEST(CudaKernels, Bf16GemmMatchesCpu) {
  SKIP_WITHOUT_GPU();
  auto runner = cuda::GemmRunner::Create();
  ASSERT_TRUE(runner.ok()) << runner.status();
  std::mt19937_64 rng(3);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int64_t m : {1, 3, 63}) {
    for (int64_t n : {8, 1024, 1032}) {
      for (int64_t k : {8, 192, 7168}) {
        std::vector<uint16_t> xb(m * k), wb(n * k);
        std::vector<float> x(m * k), w(n * k), want(m * n);
        for (size_t i = 0; i < x.size(); ++i) x[i] = Bf16ToFloat(xb[i] = FloatToBf16(nd(rng)));
        for (size_t i = 0; i < w.size(); ++i) w[i] = Bf16ToFloat(wb[i] = FloatToBf16(nd(rng)));
        cpu::MatMulNT(x.data(), m, k, w.data(), n, want.data());
        DeviceBuffer<__nv_bfloat16> dx(m * k), dw(n * k), dy(m * n);
        cudaMemcpy(dx.ptr, xb.data(), xb.size() * 2, cudaMemcpyHostToDevice);
        cudaMemcpy(dw.ptr, wb.data(), wb.size() * 2, cudaMemcpyHostToDevice);
        absl::Status st = (*runner)->Bf16({dx.ptr, dw.ptr, dy.ptr, m, n, k}, nullptr);
        ASSERT_TRUE(st.ok()) << st;
        std::vector<uint16_t> got(m * n);
        ASSERT_EQ(cudaMemcpy(got.data(), dy.ptr, got.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
        std::vector<float> gotf(m * n);
        for (size_t i = 0; i < got.size(); ++i) gotf[i] = Bf16ToFloat(got[i]);
        double num = 0, den = 0;
        for (size_t i = 0; i < gotf.size(); ++i) {
          num += (gotf[i] - want[i]) * (gotf[i] - want[i]);
          den += want[i] * want[i];
        }
        const double err = std::sqrt(num / den);
        EXPECT_LE(err, 1e-2) << "m=" << m << " n=" << n << " k=" << k;
        std::printf("[ cuda ] bf16 gemm m=%ld n=%ld k=%ld rel L2 %.3g\n", static_cast<long>(m), static_cast<long>(n),
                    static_cast<long>(k), err);
      }
    }
  }
}

TEST(CudaKernels, GemmRejectsMisalignedShapes) {
  // Checked before any device call.
  cuda::GemmRunner* none = nullptr;
  (void)none;
  auto* p8 = reinterpret_cast<__nv_fp8_e4m3*>(256);
  auto* pf = reinterpret_cast<float*>(256);
  auto* pb = reinterpret_cast<__nv_bfloat16*>(256);
  if (!HaveGpu()) GTEST_SKIP() << "GemmRunner needs a device to create";
  auto runner = cuda::GemmRunner::Create();
  ASSERT_TRUE(runner.ok());
  absl::Status s = (*runner)->Fp8({p8, pf, p8, pf, pb, 4, 64, 40}, nullptr);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(std::string(s.message()).find("k=40"), std::string::npos) << s;
  EXPECT_FALSE((*runner)->Fp8({p8, pf, p8, pf, pb, 4, 60, 64}, nullptr).ok());
  EXPECT_FALSE((*runner)->Bf16({pb, pb, pb, 0, 64, 64}, nullptr).ok());
}

template <typename T>
DeviceBuffer<T>* Upload(const std::vector<T>& v) {
  auto* b = new DeviceBuffer<T>(std::max<size_t>(v.size(), 1));
  cudaMemcpy(b->ptr, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice);
  return b;
}
template <typename T>
std::vector<T> Download(const T* ptr, size_t n) {
  std::vector<T> v(n);
  EXPECT_EQ(cudaMemcpy(v.data(), ptr, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
  return v;
}

TEST(CudaKernels, RopeSwigluEmbeddingArgmaxMatchCpu) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(4);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  // Rope: 3 tokens x 128 heads of a 192-wide head whose last 64 values rotate.
  for (bool interleave : {true, false}) {
    const int64_t tokens = 3, heads = 128, stride = 192, dim = 64;
    std::vector<uint16_t> xb(tokens * heads * stride);
    std::vector<float> x(xb.size());
    for (size_t i = 0; i < xb.size(); ++i) x[i] = Bf16ToFloat(xb[i] = FloatToBf16(nd(rng)));
    std::vector<int64_t> pos = {0, 17, 4095};
    std::vector<float> inv(dim / 2);
    for (int64_t i = 0; i < dim / 2; ++i) inv[i] = std::pow(10000.0f, -2.0f * i / dim);
    cpu::ApplyRope(x.data() + 128, tokens * heads, heads, dim, stride, pos.data(), inv.data(), 1.25f, interleave);
    std::unique_ptr<DeviceBuffer<uint16_t>> dx(Upload(xb));
    std::unique_ptr<DeviceBuffer<int64_t>> dp(Upload(pos));
    std::unique_ptr<DeviceBuffer<float>> di(Upload(inv));
    auto* xp = reinterpret_cast<__nv_bfloat16*>(dx->ptr);
    ASSERT_TRUE(cuda::Rope({xp + 128, tokens * heads, heads, dim, stride, dp->ptr, di->ptr, 1.25f, interleave}, nullptr).ok());
    auto got = Download(dx->ptr, xb.size());
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(Bf16ToFloat(got[i]) - x[i]) / (std::fabs(x[i]) + 0.1));
    EXPECT_LE(worst, 2.0 / 256) << "interleave " << interleave;
    std::printf("[ cuda ] rope interleave=%d worst rel err %.3g\n", interleave, worst);
  }
  // SwiGLU on [63, 2048 + 2048] fused gate|up rows.
  {
    const int64_t rows = 63, cols = 2048;
    std::vector<uint16_t> gu(rows * 2 * cols);
    for (auto& v : gu) v = FloatToBf16(nd(rng) * 3);
    std::vector<float> g(rows * cols), u(rows * cols), want(rows * cols);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) {
        g[r * cols + c] = Bf16ToFloat(gu[r * 2 * cols + c]);
        u[r * cols + c] = Bf16ToFloat(gu[r * 2 * cols + cols + c]);
      }
    cpu::SiluMul(g.data(), u.data(), rows * cols, want.data());
    std::unique_ptr<DeviceBuffer<uint16_t>> dgu(Upload(gu));
    DeviceBuffer<__nv_bfloat16> out(rows * cols);
    auto* base = reinterpret_cast<__nv_bfloat16*>(dgu->ptr);
    ASSERT_TRUE(cuda::Swiglu({base, base + cols, out.ptr, rows, cols, 2 * cols, 2 * cols, cols}, nullptr).ok());
    auto got = Download(reinterpret_cast<uint16_t*>(out.ptr), rows * cols);
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::fabs(Bf16ToFloat(got[i]) - want[i]) / (std::fabs(want[i]) + 0.1));
    EXPECT_LE(worst, 2.0 / 256);
    std::printf("[ cuda ] swiglu 63x2048 worst rel err %.3g\n", worst);
  }
  // Embedding: a vocabulary slice [100, 200) of a 7-wide table; ids outside give zeros.
  {
    const int64_t dim = 7, table_rows = 100, first = 100;
    std::vector<uint16_t> table(table_rows * dim);
    for (auto& v : table) v = FloatToBf16(nd(rng));
    std::vector<int32_t> ids = {100, 5, 199, 200, 150};
    std::unique_ptr<DeviceBuffer<uint16_t>> dt(Upload(table));
    std::unique_ptr<DeviceBuffer<int32_t>> did(Upload(ids));
    DeviceBuffer<__nv_bfloat16> out(ids.size() * dim);
    ASSERT_TRUE(cuda::Embedding({reinterpret_cast<__nv_bfloat16*>(dt->ptr), did->ptr, out.ptr,
                                 static_cast<int64_t>(ids.size()), dim, table_rows, first}, nullptr).ok());
    auto got = Download(reinterpret_cast<uint16_t*>(out.ptr), ids.size() * dim);
    for (size_t r = 0; r < ids.size(); ++r)
      for (int64_t c = 0; c < dim; ++c) {
        const bool in = ids[r] >= first && ids[r] < first + table_rows;
        EXPECT_EQ(got[r * dim + c], in ? table[(ids[r] - first) * dim + c] : 0) << r << "," << c;
      }
  }
  // Argmax with ties (lowest index wins) and a 129280-wide row.
  {
    const int64_t rows = 3, cols = 129280;
    std::vector<float> logits(rows * cols);
    for (auto& v : logits) v = nd(rng);
    logits[0 * cols + 77] = 50;
    logits[1 * cols + 129279] = 50;
    logits[2 * cols + 1000] = 50;
    logits[2 * cols + 90000] = 50;
    std::unique_ptr<DeviceBuffer<float>> dl(Upload(logits));
    DeviceBuffer<int32_t> ids(rows);
    ASSERT_TRUE(cuda::Argmax({dl->ptr, ids.ptr, rows, cols}, nullptr).ok());
    auto got = Download(ids.ptr, rows);
    EXPECT_EQ(got[0], 77);
    EXPECT_EQ(got[1], 129279);
    EXPECT_EQ(got[2], 1000);
  }
}

TEST(CudaKernels, MlaDecodeMatchesCpu) {
  SKIP_WITHOUT_GPU();
  const MlaCase cases[] = {{1, 1, 512, 64, 1, 64},   {3, 3, 512, 64, 20, 16},  {1, 128, 512, 64, 140, 64},
                           {2, 16, 512, 64, 4096, 64}, {3, 4, 160, 32, 77, 8}, {1, 3, 96, 16, 300, 1}};
  for (const MlaCase& c : cases) {
    // fp32 math on bf16 inputs
    EXPECT_LE(RunMlaCase(c, cuda::MlaDecodeParams::Algo::kExact, false), 1e-4) << "ctx=" << c.ctx;
  }
}

// The mma.sync tensor-core kernel (kMmaSync; the wgmma one: mla_wgmma_test.cc): q and the
// softmax weights in bf16 (so ~2^-9 relative per product), float32 accumulation. Awkward sizes: 1, 3 and 63 rows; contexts 1, 20, 140 and 4096 crossing
// pages of 1, 8, 16 and 64 slots; heads not a multiple of 64; the golden models' latent sizes;
// peaked softmax (larger q); the split-context path (few rows, long context: the golden models'
// sizes too, and a short context in a long table, whose later slices are empty) with and without
// its workspace.
TEST(CudaKernels, MlaDecodeTensorCoreMatchesCpu) {
  SKIP_WITHOUT_GPU();
  const MlaCase cases[] = {{1, 128, 512, 64, 1, 64},    {3, 128, 512, 64, 20, 16},  {63, 128, 512, 64, 140, 64},
                           {1, 128, 512, 64, 4096, 64}, {3, 128, 512, 64, 4096, 64}, {2, 16, 512, 64, 4096, 64},
                           {3, 4, 160, 32, 77, 8},      {1, 3, 96, 16, 300, 1},      {63, 3, 96, 16, 140, 16},
                           {2, 128, 512, 64, 1000, 64, 0.5f}, {1, 4, 160, 32, 1000, 8},
                           {2, 3, 96, 16, 2000, 16},    {1, 4, 160, 32, 30, 8, 0.05f, 4096}};
  for (const MlaCase& c : cases) {
    EXPECT_LE(RunMlaCase(c, cuda::MlaDecodeParams::Algo::kMmaSync, true), 1e-2)
        << "rows=" << c.rows << " heads=" << c.heads << " ctx=" << c.ctx;
  }
  EXPECT_LE(RunMlaCase({1, 128, 512, 64, 4096, 64}, cuda::MlaDecodeParams::Algo::kMmaSync, false), 1e-2);
}

TEST(CudaKernels, GroupedGemvAndCombineMatchCpu) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(6);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  // Experts with 0, 1, 3 and 63 rows; FP8 weights with block scales (k padded to 128) and bf16.
  for (bool fp8 : {true, false}) {
    const int64_t experts = 4, n = 192, k = 160, kp = cuda::Fp8PaddedK(k), sstride = cuda::Fp8ScaleStride(kp);
    const std::vector<int32_t> offsets = {0, 0, 1, 4, 67};
    const int64_t rows = offsets.back(), nb = (n + 127) / 128, kb = (k + 127) / 128;
    std::vector<uint16_t> xb(rows * k);
    for (auto& v : xb) v = FloatToBf16(nd(rng));
    std::vector<uint8_t> w8(experts * n * kp, 0);
    std::vector<uint16_t> w16(experts * n * kp, 0);
    std::vector<float> scales(experts * nb * sstride, 1.0f), wdeq(experts * n * k);
    for (int64_t e = 0; e < experts; ++e) {
      Fp8Weight w = RandomFp8Weight(n, k, rng);
      for (int64_t r = 0; r < n; ++r)
        for (int64_t c = 0; c < k; ++c) {
          w8[(e * n + r) * kp + c] = w.q[r * k + c];
          w16[(e * n + r) * kp + c] = FloatToBf16(w.deq[r * k + c]);
          wdeq[(e * n + r) * k + c] = fp8 ? w.deq[r * k + c] : Bf16ToFloat(w16[(e * n + r) * kp + c]);
        }
      for (int64_t r = 0; r < nb; ++r)
        for (int64_t c = 0; c < kb; ++c) scales[(e * nb + r) * sstride + c] = w.scales[r * kb + c];
    }
    std::vector<double> want(rows * n, 0.0);
    for (int64_t e = 0; e < experts; ++e)
      for (int32_t r = offsets[e]; r < offsets[e + 1]; ++r)
        for (int64_t j = 0; j < n; ++j) {
          double acc = 0;
          for (int64_t c = 0; c < k; ++c) acc += static_cast<double>(Bf16ToFloat(xb[r * k + c])) * wdeq[(e * n + j) * k + c];
          want[r * n + j] = acc;
        }
    std::unique_ptr<DeviceBuffer<uint16_t>> dx(Upload(xb)), dw16(Upload(w16));
    std::unique_ptr<DeviceBuffer<uint8_t>> dw8(Upload(w8));
    std::unique_ptr<DeviceBuffer<float>> ds(Upload(scales));
    std::unique_ptr<DeviceBuffer<int32_t>> doff(Upload(offsets));
    DeviceBuffer<__nv_bfloat16> y(rows * n);
    cuda::GroupedFp8GemvParams p;
    p.x = reinterpret_cast<__nv_bfloat16*>(dx->ptr);
    p.offsets = doff->ptr;
    if (fp8) {
      p.w = reinterpret_cast<__nv_fp8_e4m3*>(dw8->ptr);
      p.scales = ds->ptr;
    } else {
      p.w_bf16 = reinterpret_cast<__nv_bfloat16*>(dw16->ptr);
    }
    p.y = y.ptr;
    p.experts = experts;
    p.n = n;
    p.k = k;
    p.w_stride = kp;
    p.scale_stride = sstride;
    ASSERT_TRUE(cuda::GroupedFp8Gemv(p, nullptr).ok());
    auto got = Download(reinterpret_cast<uint16_t*>(y.ptr), rows * n);
    double num = 0, den = 0;
    for (int64_t i = 0; i < rows * n; ++i) {
      num += (Bf16ToFloat(got[i]) - want[i]) * (Bf16ToFloat(got[i]) - want[i]);
      den += want[i] * want[i];
    }
    EXPECT_LE(std::sqrt(num / den), 1e-2) << (fp8 ? "fp8" : "bf16");
    std::printf("[ cuda ] grouped gemv %s experts=4 rows=0/1/3/63 n=192 k=160 rel L2 %.3g\n", fp8 ? "fp8" : "bf16",
                std::sqrt(num / den));
    // Combine: token t picks entries slot[t, j] (or -1) with weights; summed in order into out.
    const int64_t tokens = 5, topk = 3;
    std::vector<int32_t> slot = {0, 5, -1, 66, 1, 2, 3, 3, 10, -1, -1, -1, 7, 8, 9};
    std::vector<float> wts(tokens * topk), out0(tokens * n), expect(tokens * n);
    for (auto& v : wts) v = nd(rng);
    for (auto& v : out0) v = nd(rng);
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t c = 0; c < n; ++c) {
        double acc = out0[t * n + c];
        for (int64_t j = 0; j < topk; ++j) {
          const int32_t sl = slot[t * topk + j];
          if (sl >= 0) acc += wts[t * topk + j] * Bf16ToFloat(got[sl * n + c]);
        }
        expect[t * n + c] = static_cast<float>(acc);
      }
    std::unique_ptr<DeviceBuffer<int32_t>> dslot(Upload(slot));
    std::unique_ptr<DeviceBuffer<float>> dwts(Upload(wts)), dout(Upload(out0));
    ASSERT_TRUE(cuda::MoeCombine({y.ptr, dslot->ptr, dwts->ptr, dout->ptr, tokens, topk, n}, nullptr).ok());
    auto comb = Download(dout->ptr, tokens * n);
    for (int64_t i = 0; i < tokens * n; ++i) EXPECT_NEAR(comb[i], expect[i], 1e-4 * (1 + std::fabs(expect[i]))) << i;
  }
}

TEST(CudaKernels, AbsorbQueryAndApplyValueMatchCpu) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int64_t heads : {1, 3, 128}) {
    const int64_t rows = 3, nope = 128, rope = 64, kvr = 512, v = 128, qk = nope + rope;
    std::vector<uint16_t> q(rows * heads * qk);
    for (auto& x : q) x = FloatToBf16(nd(rng));
    std::vector<float> uk(heads * nope * kvr), uv(heads * v * kvr), olat(rows * heads * kvr);
    for (auto& x : uk) x = nd(rng) * 0.05f;
    for (auto& x : uv) x = nd(rng) * 0.05f;
    for (auto& x : olat) x = nd(rng);
    std::unique_ptr<DeviceBuffer<uint16_t>> dq(Upload(q));
    std::unique_ptr<DeviceBuffer<float>> duk(Upload(uk)), duv(Upload(uv)), dol(Upload(olat));
    DeviceBuffer<float> qlat(rows * heads * kvr), qpe(rows * heads * rope);
    DeviceBuffer<__nv_bfloat16> out(rows * heads * v);
    ASSERT_TRUE(cuda::AbsorbQuery({reinterpret_cast<__nv_bfloat16*>(dq->ptr), duk->ptr, qlat.ptr, qpe.ptr, rows, heads,
                                   nope, rope, kvr}, nullptr).ok());
    ASSERT_TRUE(cuda::ApplyValue({dol->ptr, duv->ptr, out.ptr, rows, heads, v, kvr}, nullptr).ok());
    auto gl = Download(qlat.ptr, rows * heads * kvr);
    auto gp = Download(qpe.ptr, rows * heads * rope);
    auto go = Download(reinterpret_cast<uint16_t*>(out.ptr), rows * heads * v);
    double worst_l = 0, worst_o = 0;
    for (int64_t t = 0; t < rows; ++t)
      for (int64_t h = 0; h < heads; ++h) {
        for (int64_t c = 0; c < kvr; ++c) {
          double acc = 0;
          for (int64_t d = 0; d < nope; ++d) acc += Bf16ToFloat(q[(t * heads + h) * qk + d]) * uk[(h * nope + d) * kvr + c];
          worst_l = std::max(worst_l, std::fabs(gl[(t * heads + h) * kvr + c] - acc) / (std::fabs(acc) + 1e-2));
        }
        for (int64_t d = 0; d < rope; ++d) EXPECT_EQ(gp[(t * heads + h) * rope + d], Bf16ToFloat(q[(t * heads + h) * qk + nope + d]));
        for (int64_t i = 0; i < v; ++i) {
          double acc = 0;
          for (int64_t c = 0; c < kvr; ++c) acc += olat[(t * heads + h) * kvr + c] * uv[(h * v + i) * kvr + c];
          worst_o = std::max(worst_o, std::fabs(Bf16ToFloat(go[t * heads * v + h * v + i]) - acc) / (std::fabs(acc) + 1e-2));
        }
      }
    EXPECT_LE(worst_l, 1e-4) << "heads " << heads;
    EXPECT_LE(worst_o, 1.0 / 128) << "heads " << heads;
    std::printf("[ cuda ] absorb/apply heads=%ld worst rel err %.3g / %.3g\n", static_cast<long>(heads), worst_l, worst_o);
  }
}

}  // namespace
}  // namespace r1

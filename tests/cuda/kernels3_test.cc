// The GPU model's unquantised-activation paths against CPU references: the per-tile dequantising
// float32 GEMM, FP8 → bf16 weight dequantisation, the bf16 GEMM with float32 output, and the
// float32 variants of the activation-moving ops (RMSNorm, RoPE, SwiGLU, embedding, latent scatter,
// MLA absorption, gathers, grouped expert GEMV, combine, residual add). Awkward sizes throughout.
#include <cuda_runtime.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "common/dtype.h"
#include "gtest/gtest.h"
#include "kernels/cuda/dequant_gemm.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/fp8_gemm.h"
#include "kernels/cuda/grouped_gemv.h"
#include "kernels/cuda/model_ops.h"
#include "kernels/cuda/rmsnorm.h"
#include "kernels/ops.h"
#include "tests/cuda/cuda_test_util.h"

namespace r1 {
namespace {

using cuda_testing::DeviceBuffer;
using cuda_testing::RelL2;

// A random FP8 weight [n, k] stored with rows of `stride` codes (zero padding) and its
// power-of-two-free block scales [ceil(n/128), scale_stride]; `deq` is the exact dequantised value.
struct Fp8W {
  std::vector<uint8_t> codes;
  std::vector<float> scales, deq;
};
Fp8W RandomFp8(int64_t n, int64_t k, int64_t stride, int64_t scale_stride, std::mt19937_64& rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> ud(0.001f, 0.01f);
  Fp8W w;
  const int64_t nb = (n + 127) / 128;
  w.codes.assign(n * stride, 0);
  w.scales.assign(nb * scale_stride, 1.0f);
  w.deq.resize(n * k);
  for (auto& s : w.scales) s = ud(rng);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < k; ++c) {
      const uint8_t q = FloatToFp8E4M3(nd(rng) * 100.0f);
      w.codes[r * stride + c] = q;
      w.deq[r * k + c] = Fp8E4M3ToFloat(q) * w.scales[(r / 128) * scale_stride + c / 128];
    }
  }
  return w;
}

TEST(CudaKernels3, DequantLinearF32MatchesCpu) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(21);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  struct Case { int64_t m, n, k; };
  // golden shapes (k = 192, 96, 48), R1's kv_a (576 x 7168) and odd ones (m = 1, 3, 63, 200).
  const Case cases[] = {{1, 192, 96}, {3, 576, 192}, {63, 100, 48}, {200, 192, 384}, {5, 576, 7168}, {65, 1, 130}};
  for (const Case& c : cases) {
    for (bool fp8 : {true, false}) {
      const int64_t stride = cuda::Fp8PaddedK(c.k), sstride = cuda::Fp8ScaleStride(stride);
      Fp8W w = RandomFp8(c.n, c.k, stride, sstride, rng);
      std::vector<uint16_t> wb(c.n * stride, 0);
      std::vector<float> wf(c.n * c.k);
      for (int64_t r = 0; r < c.n; ++r)
        for (int64_t col = 0; col < c.k; ++col) {
          wb[r * stride + col] = FloatToBf16(w.deq[r * c.k + col]);
          wf[r * c.k + col] = fp8 ? w.deq[r * c.k + col] : Bf16ToFloat(wb[r * stride + col]);
        }
      std::vector<float> x(c.m * c.k);
      for (auto& v : x) v = nd(rng);
      std::vector<double> want(c.m * c.n, 0.0);
      for (int64_t i = 0; i < c.m; ++i)
        for (int64_t j = 0; j < c.n; ++j) {
          double acc = 0;
          for (int64_t q = 0; q < c.k; ++q) acc += static_cast<double>(x[i * c.k + q]) * wf[j * c.k + q];
          want[i * c.n + j] = acc;
        }
      DeviceBuffer<float> dx(x), ds(w.scales), dy(c.m * c.n);
      DeviceBuffer<uint8_t> dc(w.codes);
      DeviceBuffer<uint16_t> dwb(wb);
      cuda::DequantLinearParams p;
      p.x = dx.ptr;
      p.y = dy.ptr;
      p.m = c.m;
      p.n = c.n;
      p.k = c.k;
      p.w_stride = stride;
      if (fp8) {
        p.w = reinterpret_cast<const __nv_fp8_e4m3*>(dc.ptr);
        p.scales = ds.ptr;
        p.scale_stride = sstride;
      } else {
        p.w_bf16 = reinterpret_cast<const __nv_bfloat16*>(dwb.ptr);
      }
      ASSERT_TRUE(cuda::DequantLinearF32(p, nullptr).ok());
      const double err = RelL2(dy.Download(c.m * c.n), want);
      EXPECT_LE(err, 1e-5) << c.m << "x" << c.n << "x" << c.k << (fp8 ? " fp8" : " bf16");
      std::printf("[ cuda ] dequant linear f32 %s m=%ld n=%ld k=%ld rel L2 %.3g\n", fp8 ? "fp8" : "bf16",
                  static_cast<long>(c.m), static_cast<long>(c.n), static_cast<long>(c.k), err);
    }
  }
  // Argument checks name the problem.
  cuda::DequantLinearParams bad;
  EXPECT_FALSE(cuda::DequantLinearF32(bad, nullptr).ok());
}

TEST(CudaKernels3, DequantizeFp8ToBf16IsExactRounding) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(22);
  for (auto [n, k] : {std::pair<int64_t, int64_t>{192, 96}, {300, 7168}, {7, 130}}) {
    const int64_t stride = cuda::Fp8PaddedK(k), sstride = cuda::Fp8ScaleStride(stride);
    Fp8W w = RandomFp8(n, k, stride, sstride, rng);
    DeviceBuffer<uint8_t> dc(w.codes);
    DeviceBuffer<float> ds(w.scales);
    DeviceBuffer<uint16_t> out(n * k);
    ASSERT_TRUE(cuda::DequantizeFp8ToBf16({reinterpret_cast<const __nv_fp8_e4m3*>(dc.ptr), ds.ptr,
                                           reinterpret_cast<__nv_bfloat16*>(out.ptr), n, k, stride, sstride},
                                          nullptr).ok());
    const auto got = out.Download(n * k);
    int64_t wrong = 0;
    for (int64_t i = 0; i < n * k; ++i) wrong += got[i] != FloatToBf16(w.deq[i]);
    EXPECT_EQ(wrong, 0) << n << "x" << k;
  }
}

TEST(CudaKernels3, Bf16GemmWithFloatOutputMatchesCpu) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(23);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto runner = cuda::GemmRunner::Create();
  ASSERT_TRUE(runner.ok());
  for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{1, 1024, 192}, {37, 1024, 192}, {300, 1032, 200}}) {
    std::vector<uint16_t> xb(m * k), wb(n * k);
    for (auto& v : xb) v = FloatToBf16(nd(rng));
    for (auto& v : wb) v = FloatToBf16(nd(rng));
    std::vector<double> want(m * n);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t q = 0; q < k; ++q) acc += static_cast<double>(Bf16ToFloat(xb[i * k + q])) * Bf16ToFloat(wb[j * k + q]);
        want[i * n + j] = acc;
      }
    DeviceBuffer<uint16_t> dx(xb), dw(wb);
    DeviceBuffer<float> dy(m * n);
    cuda::Bf16GemmParams p;
    p.x = reinterpret_cast<const __nv_bfloat16*>(dx.ptr);
    p.w = reinterpret_cast<const __nv_bfloat16*>(dw.ptr);
    p.y_f32 = dy.ptr;
    p.m = m;
    p.n = n;
    p.k = k;
    ASSERT_TRUE((*runner)->Bf16(p, nullptr).ok());
    const double err = RelL2(dy.Download(m * n), want);
    EXPECT_LE(err, 1e-5) << m << "x" << n << "x" << k;
    std::printf("[ cuda ] bf16 gemm, float32 out, m=%ld rel L2 %.3g\n", static_cast<long>(m), err);
  }
}

// The per-head products of the absorbed attention: operands read in place from [rows, heads, dim]
// tensors (row stride heads * dim, head stride dim), both weight layouts, bf16 (bf16 or float32
// out) and TF32, and R1's own shapes (128 heads: nope 128 -> kvr 512, kvr 512 -> v 128).
TEST(CudaKernels3, BatchedPerHeadGemmMatchesCpu) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(29);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto runner = cuda::GemmRunner::Create();
  ASSERT_TRUE(runner.ok());
  using Type = cuda::BatchedGemmParams::Type;
  struct Case { int64_t rows, heads, xdim, k, n; bool w_kn; Type type; bool f32_out; };
  for (const Case c : {Case{5, 4, 48, 32, 64, true, Type::kBf16, true}, Case{5, 4, 64, 64, 16, false, Type::kBf16, false},
                       Case{5, 4, 48, 32, 64, true, Type::kTf32, true}, Case{7, 3, 24, 16, 40, false, Type::kTf32, true},
                       Case{33, 128, 192, 128, 512, true, Type::kTf32, true},
                       Case{3, 128, 512, 512, 128, false, Type::kTf32, true},
                       Case{1, 128, 192, 128, 512, true, Type::kBf16, true}}) {
    const bool tf32 = c.type == Type::kTf32;
    // x_h = columns [0, k) of head h's xdim-wide slice; w_h [n, k] (w_kn false) or [k, n]. Values
    // are bf16-representable so that the bf16 cases compute exactly the reference's inputs.
    std::vector<uint16_t> xb(c.rows * c.heads * c.xdim), wb(c.heads * c.n * c.k);
    for (auto& v : xb) v = FloatToBf16(nd(rng));
    for (auto& v : wb) v = FloatToBf16(nd(rng) * 0.1f);
    std::vector<float> xf(xb.size()), wf(wb.size());
    for (size_t i = 0; i < xb.size(); ++i) xf[i] = Bf16ToFloat(xb[i]) + (tf32 ? nd(rng) * 1e-3f : 0.0f);
    for (size_t i = 0; i < wb.size(); ++i) wf[i] = Bf16ToFloat(wb[i]) + (tf32 ? nd(rng) * 1e-4f : 0.0f);
    std::vector<double> want(c.rows * c.heads * c.n);
    for (int64_t t = 0; t < c.rows; ++t)
      for (int64_t h = 0; h < c.heads; ++h)
        for (int64_t j = 0; j < c.n; ++j) {
          double acc = 0;
          for (int64_t q = 0; q < c.k; ++q) {
            acc += static_cast<double>(xf[(t * c.heads + h) * c.xdim + q]) *
                   wf[h * c.n * c.k + (c.w_kn ? q * c.n + j : j * c.k + q)];
          }
          want[(t * c.heads + h) * c.n + j] = acc;
        }
    DeviceBuffer<uint16_t> dxb(xb), dwb(wb);
    DeviceBuffer<float> dxf(xf), dwf(wf), dyf(want.size());
    DeviceBuffer<uint16_t> dyb(want.size());
    ASSERT_EQ(cudaMemset(dyf.ptr, 0xff, want.size() * 4), cudaSuccess);  // NaN poison
    ASSERT_EQ(cudaMemset(dyb.ptr, 0xff, want.size() * 2), cudaSuccess);
    cuda::BatchedGemmParams p;
    p.type = c.type;
    p.x = tf32 ? static_cast<const void*>(dxf.ptr) : dxb.ptr, p.ldx = c.heads * c.xdim, p.stride_x = c.xdim;
    p.w = tf32 ? static_cast<const void*>(dwf.ptr) : dwb.ptr, p.ldw = c.w_kn ? c.n : c.k, p.stride_w = c.n * c.k;
    p.w_kn = c.w_kn;
    p.y = c.f32_out ? static_cast<void*>(dyf.ptr) : static_cast<void*>(dyb.ptr), p.y_f32 = c.f32_out;
    p.ldy = c.heads * c.n, p.stride_y = c.n;
    p.m = c.rows, p.n = c.n, p.k = c.k, p.batch = c.heads;
    absl::Status st = (*runner)->Batched(p, nullptr);
    ASSERT_TRUE(st.ok()) << st;
    std::vector<float> got(want.size());
    if (c.f32_out) {
      got = dyf.Download(want.size());
    } else {
      const std::vector<uint16_t> g = dyb.Download(want.size());
      for (size_t i = 0; i < g.size(); ++i) got[i] = Bf16ToFloat(g[i]);
    }
    const double err = RelL2(got, want);
    // bf16 inputs exact, float32 out: accumulation only; TF32: inputs rounded to 2^-11; bf16 out: 2^-9.
    EXPECT_LE(err, !c.f32_out ? 5e-3 : tf32 ? 2e-3 : 1e-5) << c.rows << " rows, " << c.heads << " heads, " << c.k
                                                           << " -> " << c.n << (tf32 ? " tf32" : " bf16");
    std::printf("[ cuda ] batched per-head gemm (%s) %ld rows x %ld heads, %ld -> %ld: rel L2 %.3g\n",
                tf32 ? "tf32" : "bf16", static_cast<long>(c.rows), static_cast<long>(c.heads), static_cast<long>(c.k),
                static_cast<long>(c.n), err);
  }
  cuda::BatchedGemmParams bad;
  EXPECT_FALSE((*runner)->Batched(bad, nullptr).ok());
}

TEST(CudaKernels3, FloatActivationOpsMatchCpu) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(24);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto rand = [&](size_t n, float s = 1.0f) {
    std::vector<float> v(n);
    for (auto& x : v) x = s * nd(rng);
    return v;
  };
  auto worst_rel = [](const std::vector<float>& got, const std::vector<float>& want) {
    double w = 0;
    for (size_t i = 0; i < want.size(); ++i) w = std::max(w, std::fabs(got[i] - want[i]) / (std::fabs(want[i]) + 1e-2));
    return w;
  };
  // RMSNorm on strided rows (the latent's first kvr values of each 576-wide row).
  {
    const int64_t rows = 63, dim = 512, stride = 576;
    auto x = rand(rows * stride), w = rand(dim);
    std::vector<float> want = x;
    cpu::RmsNorm(x.data(), rows, dim, stride, w.data(), 1e-6f, want.data(), stride);
    DeviceBuffer<float> dx(x), dw(w);
    ASSERT_TRUE(cuda::RmsNorm(cuda::RmsNormParamsT<float>{dx.ptr, dw.ptr, dx.ptr, rows, dim, stride, stride, 1e-6f},
                              nullptr).ok());
    EXPECT_LE(worst_rel(dx.Download(rows * stride), want), 1e-5);
  }
  // RoPE on the last 64 of each 192-wide head, both pair layouts.
  for (bool interleave : {true, false}) {
    const int64_t tokens = 3, heads = 5, stride = 192, dim = 64;
    auto x = rand(tokens * heads * stride);
    std::vector<int64_t> pos = {0, 17, 4095};
    std::vector<float> inv(dim / 2);
    for (int64_t i = 0; i < dim / 2; ++i) inv[i] = std::pow(10000.0f, -2.0f * i / dim);
    std::vector<float> want = x;
    cpu::ApplyRope(want.data() + 128, tokens * heads, heads, dim, stride, pos.data(), inv.data(), 1.25f, interleave);
    DeviceBuffer<float> dx(x), di(inv);
    DeviceBuffer<int64_t> dp(pos);
    ASSERT_TRUE(cuda::Rope(cuda::RopeParamsT<float>{dx.ptr + 128, tokens * heads, heads, dim, stride, dp.ptr, di.ptr,
                                                    1.25f, interleave}, nullptr).ok());
    EXPECT_LE(worst_rel(dx.Download(x.size()), want), 1e-4) << "interleave " << interleave;
  }
  // SwiGLU, embedding (bf16 table into float32 rows), residual add, gather.
  {
    const int64_t rows = 7, cols = 300;
    auto g = rand(rows * cols, 3), u = rand(rows * cols);
    std::vector<float> want(rows * cols);
    cpu::SiluMul(g.data(), u.data(), rows * cols, want.data());
    DeviceBuffer<float> dg(g), du(u), dout(rows * cols);
    ASSERT_TRUE(cuda::Swiglu(cuda::SwigluParamsT<float>{dg.ptr, du.ptr, dout.ptr, rows, cols, cols, cols, cols},
                             nullptr).ok());
    EXPECT_LE(worst_rel(dout.Download(rows * cols), want), 1e-5);

    std::vector<uint16_t> table(50 * 9);
    for (auto& v : table) v = FloatToBf16(nd(rng));
    std::vector<int32_t> ids = {3, 49, 0, 50};
    DeviceBuffer<uint16_t> dt(table);
    DeviceBuffer<int32_t> did(ids);
    DeviceBuffer<float> emb(ids.size() * 9);
    ASSERT_TRUE(cuda::Embedding(cuda::EmbeddingParamsT<float>{reinterpret_cast<const __nv_bfloat16*>(dt.ptr), did.ptr,
                                                              emb.ptr, 4, 9, 50, 0}, nullptr).ok());
    const auto e = emb.Download(ids.size() * 9);
    for (int r = 0; r < 4; ++r)
      for (int c = 0; c < 9; ++c) EXPECT_EQ(e[r * 9 + c], ids[r] < 50 ? Bf16ToFloat(table[ids[r] * 9 + c]) : 0.0f);

    auto x = rand(rows * cols);
    DeviceBuffer<float> dx(x);
    ASSERT_TRUE(cuda::AddF32(dx.ptr, dout.ptr, rows * cols, 1.0f, nullptr).ok());
    const auto sum = dx.Download(rows * cols), delta = dout.Download(rows * cols);
    for (int64_t i = 0; i < rows * cols; ++i) EXPECT_EQ(sum[i], x[i] + delta[i]);

    std::vector<int32_t> index = {6, 0, 0, 3};
    DeviceBuffer<int32_t> dindex(index);
    DeviceBuffer<float> gathered(index.size() * cols);
    ASSERT_TRUE(cuda::GatherRows(dx.ptr, dindex.ptr, gathered.ptr, 4, cols, nullptr).ok());
    const auto gr = gathered.Download(index.size() * cols);
    for (int i = 0; i < 4; ++i)
      for (int64_t c = 0; c < cols; ++c) EXPECT_EQ(gr[i * cols + c], sum[index[i] * cols + c]);
  }
  // Latent scatter (float32 rounded to bf16 in the cache), absorption and the value product.
  {
    const int64_t rows = 3, lat = 576, block = 4, max_blocks = 3, heads = 3, nope = 128, rope = 64, kvr = 512, v = 128;
    auto latent = rand(rows * lat);
    std::vector<int32_t> tables = {2, 0, 1, 2, 0, 1, 1, 2, 0};
    std::vector<int64_t> pos = {0, 5, 11};
    DeviceBuffer<float> dl(latent);
    DeviceBuffer<int32_t> dt(tables);
    DeviceBuffer<int64_t> dp(pos);
    DeviceBuffer<uint16_t> cache(3 * block * lat);
    ASSERT_EQ(cudaMemset(cache.ptr, 0, 3 * block * lat * 2), cudaSuccess);
    ASSERT_TRUE(cuda::ScatterLatent(cuda::ScatterLatentParamsT<float>{dl.ptr, reinterpret_cast<__nv_bfloat16*>(cache.ptr),
                                                                      dt.ptr, dp.ptr, rows, lat, block, max_blocks,
                                                                      block * lat}, nullptr).ok());
    const auto cc = cache.Download(3 * block * lat);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t b = tables[r * max_blocks + pos[r] / block];
      for (int64_t c = 0; c < lat; ++c) EXPECT_EQ(cc[(b * block + pos[r] % block) * lat + c], FloatToBf16(latent[r * lat + c]));
    }
    auto q = rand(rows * heads * (nope + rope)), uk = rand(heads * nope * kvr, 0.05f), uv = rand(heads * v * kvr, 0.05f);
    auto olat = rand(rows * heads * kvr);
    DeviceBuffer<float> dq(q), duk(uk), duv(uv), dol(olat), qlat(rows * heads * kvr), qpe(rows * heads * rope),
        out(rows * heads * v);
    ASSERT_TRUE(cuda::AbsorbQuery(cuda::AbsorbQueryParamsT<float>{dq.ptr, duk.ptr, qlat.ptr, qpe.ptr, rows, heads, nope,
                                                                  rope, kvr}, nullptr).ok());
    ASSERT_TRUE(cuda::ApplyValue(cuda::ApplyValueParamsT<float>{dol.ptr, duv.ptr, out.ptr, rows, heads, v, kvr},
                                 nullptr).ok());
    std::vector<float> want_l(rows * heads * kvr), want_o(rows * heads * v);
    for (int64_t t = 0; t < rows; ++t)
      for (int64_t h = 0; h < heads; ++h) {
        for (int64_t c = 0; c < kvr; ++c) {
          double acc = 0;
          for (int64_t d = 0; d < nope; ++d) acc += q[(t * heads + h) * (nope + rope) + d] * uk[(h * nope + d) * kvr + c];
          want_l[(t * heads + h) * kvr + c] = static_cast<float>(acc);
        }
        for (int64_t i = 0; i < v; ++i) {
          double acc = 0;
          for (int64_t c = 0; c < kvr; ++c) acc += olat[(t * heads + h) * kvr + c] * uv[(h * v + i) * kvr + c];
          want_o[t * heads * v + h * v + i] = static_cast<float>(acc);
        }
      }
    EXPECT_LE(worst_rel(qlat.Download(want_l.size()), want_l), 1e-4);
    EXPECT_LE(worst_rel(out.Download(want_o.size()), want_o), 1e-4);
    const auto pe = qpe.Download(rows * heads * rope);
    for (int64_t t = 0; t < rows * heads; ++t)
      for (int64_t d = 0; d < rope; ++d) EXPECT_EQ(pe[t * rope + d], q[t * (nope + rope) + nope + d]);
  }
  // Grouped expert GEMV (FP8 weights, float32 activations) and the ordered combine.
  {
    const int64_t experts = 4, n = 192, k = 160, kp = cuda::Fp8PaddedK(k), sstride = cuda::Fp8ScaleStride(kp);
    const std::vector<int32_t> offsets = {0, 0, 1, 4, 67};
    const int64_t rows = offsets.back(), nb = (n + 127) / 128;
    auto x = rand(rows * k);
    std::vector<uint8_t> codes;
    std::vector<float> scales, deq;
    for (int64_t e = 0; e < experts; ++e) {
      Fp8W w = RandomFp8(n, k, kp, sstride, rng);
      codes.insert(codes.end(), w.codes.begin(), w.codes.end());
      scales.insert(scales.end(), w.scales.begin(), w.scales.end());
      deq.insert(deq.end(), w.deq.begin(), w.deq.end());
    }
    ASSERT_EQ(static_cast<int64_t>(scales.size()), experts * nb * sstride);
    std::vector<double> want(rows * n);
    for (int64_t e = 0; e < experts; ++e)
      for (int32_t r = offsets[e]; r < offsets[e + 1]; ++r)
        for (int64_t j = 0; j < n; ++j) {
          double acc = 0;
          for (int64_t c = 0; c < k; ++c) acc += static_cast<double>(x[r * k + c]) * deq[(e * n + j) * k + c];
          want[r * n + j] = acc;
        }
    DeviceBuffer<float> dx(x), ds(scales), y(rows * n);
    DeviceBuffer<uint8_t> dc(codes);
    DeviceBuffer<int32_t> doff(offsets);
    cuda::GroupedFp8GemvParamsT<float> p;
    p.x = dx.ptr;
    p.offsets = doff.ptr;
    p.w = reinterpret_cast<const __nv_fp8_e4m3*>(dc.ptr);
    p.scales = ds.ptr;
    p.y = y.ptr;
    p.experts = experts;
    p.n = n;
    p.k = k;
    p.w_stride = kp;
    p.scale_stride = sstride;
    ASSERT_TRUE(cuda::GroupedFp8Gemv(p, nullptr).ok());
    const auto got = y.Download(rows * n);
    const double err = RelL2(got, want);
    EXPECT_LE(err, 1e-5);
    std::printf("[ cuda ] grouped gemv fp8, float32 activations, rel L2 %.3g\n", err);
    const int64_t tokens = 3, topk = 2;
    std::vector<int32_t> slot = {0, 66, -1, 5, 2, 2};
    auto wts = rand(tokens * topk), out0 = rand(tokens * n);
    std::vector<float> expect(tokens * n);
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t c = 0; c < n; ++c) {
        double acc = 0;
        for (int64_t j = 0; j < topk; ++j) {
          const int32_t sl = slot[t * topk + j];
          if (sl >= 0) acc += wts[t * topk + j] * got[sl * n + c];
        }
        expect[t * n + c] = static_cast<float>(out0[t * n + c] + acc);
      }
    DeviceBuffer<int32_t> dslot(slot);
    DeviceBuffer<float> dw(wts), dout(out0);
    ASSERT_TRUE(cuda::MoeCombine(cuda::MoeCombineParamsT<float>{y.ptr, dslot.ptr, dw.ptr, dout.ptr, tokens, topk, n},
                                 nullptr).ok());
    const auto comb = dout.Download(tokens * n);
    for (int64_t i = 0; i < tokens * n; ++i) EXPECT_NEAR(comb[i], expect[i], 1e-4 * (1 + std::fabs(expect[i]))) << i;
  }
}

// The float32-residual RMSNorm alone and fused with the residual add before it (bf16 and float32
// deltas), on rows of the quad path (dim % 4 == 0, up to 8192) and of the element path (odd dim,
// longer rows); the router's float32 product; the MoE combine with the shared expert's output.
// Against double-precision references on fresh random inputs; outputs poisoned first.
TEST(CudaKernels3, ResidualNormRouterProductAndSharedCombineMatchCpu) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto rand = [&](size_t n, float s = 1.0f) {
    std::vector<float> v(n);
    for (float& x : v) x = s * nd(rng);
    return v;
  };
  const float eps = 1e-6f;
  for (int64_t dim : {7168, 64, 1536, 333, 9000}) {
    for (int64_t rows : {1, 5}) {
      for (int mode = 0; mode < 3; ++mode) {  // 0: no delta, 1: bf16 delta, 2: float32 delta
        auto x = rand(rows * dim, 3.0f), w = rand(dim);
        for (float& v : w) v = 1.0f + 0.5f * v;
        std::vector<uint16_t> delta_bf16(rows * dim);
        std::vector<float> delta(rows * dim);
        for (int64_t i = 0; i < rows * dim; ++i) {
          delta_bf16[i] = FloatToBf16(nd(rng));
          delta[i] = mode == 1 ? Bf16ToFloat(delta_bf16[i]) : mode == 2 ? nd(rng) : 0.0f;
        }
        std::vector<float> x_new(rows * dim);
        std::vector<double> want(rows * dim);
        for (int64_t r = 0; r < rows; ++r) {
          double ss = 0;
          for (int64_t i = 0; i < dim; ++i) {
            x_new[r * dim + i] = mode == 0 ? x[r * dim + i] : x[r * dim + i] + delta[r * dim + i];
            ss += static_cast<double>(x_new[r * dim + i]) * x_new[r * dim + i];
          }
          const double inv = 1.0 / std::sqrt(ss / dim + eps);
          for (int64_t i = 0; i < dim; ++i) want[r * dim + i] = x_new[r * dim + i] * inv * w[i];
        }
        DeviceBuffer<float> dx(x), dw(w), df(rows * dim), dd(delta);
        DeviceBuffer<uint16_t> db(rows * dim), ddb(delta_bf16);
        ASSERT_EQ(cudaMemset(df.ptr, 0xff, rows * dim * 4), cudaSuccess);  // NaN poison
        ASSERT_EQ(cudaMemset(db.ptr, 0xff, rows * dim * 2), cudaSuccess);
        auto* out = reinterpret_cast<__nv_bfloat16*>(db.ptr);
        absl::Status st;
        if (mode == 0) st = cuda::RmsNormF32(dx.ptr, dw.ptr, out, rows, dim, eps, nullptr, df.ptr);
        if (mode == 1) {
          st = cuda::AddRmsNormF32(dx.ptr, reinterpret_cast<const __nv_bfloat16*>(ddb.ptr), dw.ptr, out, rows, dim, eps,
                                   nullptr, df.ptr);
        }
        if (mode == 2) st = cuda::AddRmsNormF32(dx.ptr, dd.ptr, dw.ptr, out, rows, dim, eps, nullptr, df.ptr);
        ASSERT_TRUE(st.ok()) << st;
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        // The residual add is exact: x + delta in float32, as AddBf16 / AddF32 compute it.
        const auto xs = dx.Download(rows * dim);
        for (int64_t i = 0; i < rows * dim; ++i) ASSERT_EQ(xs[i], x_new[i]) << "dim=" << dim << " mode=" << mode;
        const double err = RelL2(df.Download(rows * dim), want);
        const auto bf = db.Download(rows * dim);
        std::vector<float> bff(bf.size());
        for (size_t i = 0; i < bf.size(); ++i) bff[i] = Bf16ToFloat(bf[i]);
        const double err_bf16 = RelL2(bff, want);
        EXPECT_LE(err, 1e-6) << "rows=" << rows << " dim=" << dim << " mode=" << mode;
        EXPECT_LE(err_bf16, 1.0 / 256) << "rows=" << rows << " dim=" << dim << " mode=" << mode;
        std::printf("[ cuda ] rmsnorm f32 rows=%ld dim=%ld delta=%d rel L2 %.3g (bf16 out %.3g)\n",
                    static_cast<long>(rows), static_cast<long>(dim), mode, err, err_bf16);
      }
    }
  }
  // Router product, float32: y [rows, n] = x · w^T.
  for (auto [rows, n, k] : {std::array<int64_t, 3>{1, 256, 7168}, {3, 7, 33}, {4, 256, 7168}, {2, 5, 1000},
                            {6, 256, 7168}, {9, 3, 50}}) {
    auto x = rand(rows * k), w = rand(n * k);
    std::vector<double> want(rows * n);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t c = 0; c < k; ++c) acc += static_cast<double>(x[r * k + c]) * w[j * k + c];
        want[r * n + j] = acc;
      }
    DeviceBuffer<float> dx(x), dw(w), dy(rows * n);
    ASSERT_EQ(cudaMemset(dy.ptr, 0xff, rows * n * 4), cudaSuccess);
    ASSERT_TRUE(cuda::LinearF32(dx.ptr, dw.ptr, dy.ptr, rows, n, k, nullptr).ok());
    const double err = RelL2(dy.Download(rows * n), want);
    EXPECT_LE(err, 1e-6) << "rows=" << rows << " n=" << n << " k=" << k;
    std::printf("[ cuda ] linear f32 rows=%ld n=%ld k=%ld rel L2 %.3g\n", static_cast<long>(rows),
                static_cast<long>(n), static_cast<long>(k), err);
    // Each row alone (the decode shape) gives the same bits as in the batch (the prefill shape).
    const auto all = dy.Download(rows * n);
    DeviceBuffer<float> one(n);
    for (int64_t r = 0; r < rows; ++r) {
      ASSERT_TRUE(cuda::LinearF32(dx.ptr + r * k, dw.ptr, one.ptr, 1, n, k, nullptr).ok());
      const auto got = one.Download(n);
      for (int64_t j = 0; j < n; ++j) ASSERT_EQ(got[j], all[r * n + j]) << "rows=" << rows << " r=" << r << " j=" << j;
    }
  }
  // MoE combine with the shared expert's output: out = (out + sum_j w_j y[slot_j]) + shared.
  {
    const int64_t tokens = 3, topk = 2, dim = 70, entries = 6;
    std::vector<uint16_t> y(entries * dim), shared(tokens * dim);
    for (auto& v : y) v = FloatToBf16(nd(rng));
    for (auto& v : shared) v = FloatToBf16(nd(rng));
    std::vector<int32_t> slot = {0, 4, -1, 5, 2, 1};
    auto wts = rand(tokens * topk), out0 = rand(tokens * dim);
    std::vector<double> want(tokens * dim);
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t c = 0; c < dim; ++c) {
        double acc = 0;
        for (int64_t j = 0; j < topk; ++j) {
          const int32_t sl = slot[t * topk + j];
          if (sl >= 0) acc += wts[t * topk + j] * static_cast<double>(Bf16ToFloat(y[sl * dim + c]));
        }
        want[t * dim + c] = out0[t * dim + c] + acc + Bf16ToFloat(shared[t * dim + c]);
      }
    DeviceBuffer<uint16_t> dy(y), ds(shared);
    DeviceBuffer<int32_t> dslot(slot);
    DeviceBuffer<float> dw(wts), dout(out0);
    cuda::MoeCombineParams p{reinterpret_cast<const __nv_bfloat16*>(dy.ptr), dslot.ptr, dw.ptr, dout.ptr, tokens, topk,
                             dim};
    p.shared = reinterpret_cast<const __nv_bfloat16*>(ds.ptr);
    ASSERT_TRUE(cuda::MoeCombine(p, nullptr).ok());
    const double err = RelL2(dout.Download(tokens * dim), want);
    EXPECT_LE(err, 1e-6);
    std::printf("[ cuda ] moe combine with shared output rel L2 %.3g\n", err);
  }
}

}  // namespace
}  // namespace r1

// The GEMV kernels (kernels/cuda/grouped_gemv.h) against a double-precision CPU reference:
// GroupedFp8Gemv (bf16 and float32 activations, FP8 and bf16 weights) over experts with 0, 1 and
// many rows, DenseGemv (bf16 activations, or FP8 codes with per-token scales from the
// quantiser, also against cuBLASLt's FP8 GEMM on the same codes) and RowGemvFp8 (1-4 rows of FP8
// codes, also against cuBLASLt). Awkward sizes: k not a multiple
// of 128 with padded rows whose padding holds NaN codes, odd n, rows that take several passes,
// unaligned rows; outputs are poisoned with NaN before every launch. Bounds: rel L2 within the
// output type's epsilon (bf16: 2^-8; float32 outputs: 1e-5).
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <type_traits>
#include <utility>
#include <vector>

#include "common/dtype.h"
#include "gtest/gtest.h"
#include "kernels/cuda/dense_gemv.h"
#include "kernels/cuda/fp8_gemm.h"
#include "kernels/cuda/grouped_gemv.h"
#include "tests/cuda/cuda_test_util.h"

namespace r1 {
namespace {

using cuda_testing::DeviceBuffer;
using cuda_testing::RelL2;

constexpr double kBf16Eps = 1.0 / 256;
constexpr double kF32Bound = 1e-5;
constexpr uint8_t kFp8Nan = 0x7f;
constexpr uint16_t kBf16Nan = 0x7fc0;

// Weights [experts, n, stride] (FP8 codes with block scales [experts, ceil(n/128), scale_stride],
// or bf16), padding columns and padding scales NaN; `deq` [experts, n, k] the exact values.
struct Weights {
  std::vector<uint8_t> codes;
  std::vector<uint16_t> bf16;
  std::vector<float> scales, deq;
};
Weights MakeWeights(int64_t experts, int64_t n, int64_t k, int64_t stride, int64_t sstride,
                    bool fp8, std::mt19937_64& rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> ud(0.001f, 0.01f);
  const int64_t nb = (n + 127) / 128, kb = (k + 127) / 128;
  Weights w;
  w.deq.resize(experts * n * k);
  if (fp8) {
    w.codes.assign(experts * n * stride, kFp8Nan);
    w.scales.assign(experts * nb * sstride, std::numeric_limits<float>::quiet_NaN());
    for (int64_t e = 0; e < experts; ++e)
      for (int64_t r = 0; r < nb; ++r)
        for (int64_t c = 0; c < kb; ++c) w.scales[(e * nb + r) * sstride + c] = ud(rng);
  } else {
    w.bf16.assign(experts * n * stride, kBf16Nan);
  }
  for (int64_t e = 0; e < experts; ++e)
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < k; ++c) {
        const int64_t at = (e * n + r) * stride + c;
        if (fp8) {
          w.codes[at] = FloatToFp8E4M3(nd(rng) * 100.0f);
          w.deq[(e * n + r) * k + c] =
              Fp8E4M3ToFloat(w.codes[at]) * w.scales[(e * nb + r / 128) * sstride + c / 128];
        } else {
          w.bf16[at] = FloatToBf16(nd(rng) * 0.5f);
          w.deq[(e * n + r) * k + c] = Bf16ToFloat(w.bf16[at]);
        }
      }
  return w;
}

// y[r, j] = sum_c x[r, c] * deq[e(r), j, c] in double, e(r) from the offsets.
std::vector<double> Reference(const std::vector<float>& x, int64_t x_stride, const Weights& w,
                              const std::vector<int32_t>& offsets, int64_t n, int64_t k) {
  std::vector<double> y(static_cast<size_t>(offsets.back()) * n);
  for (size_t e = 0; e + 1 < offsets.size(); ++e)
    for (int32_t r = offsets[e]; r < offsets[e + 1]; ++r)
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        const float* wr = w.deq.data() + (e * n + j) * k;
        for (int64_t c = 0; c < k; ++c) acc += static_cast<double>(x[r * x_stride + c]) * wr[c];
        y[r * n + j] = acc;
      }
  return y;
}

std::vector<float> DownloadBf16(const DeviceBuffer<uint16_t>& b, size_t n) {
  std::vector<uint16_t> raw = b.Download(n);
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = Bf16ToFloat(raw[i]);
  return out;
}

template <typename T>
void Poison(const DeviceBuffer<T>& b, size_t n) {
  ASSERT_EQ(cudaMemset(b.ptr, 0xff, n * sizeof(T)), cudaSuccess);  // NaN in bf16 and float32
}

struct GroupedCase {
  std::vector<int32_t> rows;  // per expert
  int64_t n, k, w_stride;     // w_stride 0: Fp8PaddedK(k)
};

// Runs one grouped case with activations T (float or bf16), FP8 or bf16 weights; returns rel L2.
template <typename T>
double RunGrouped(const GroupedCase& gc, bool fp8, std::mt19937_64& rng) {
  constexpr bool kF32 = std::is_same_v<T, float>;
  const int64_t experts = static_cast<int64_t>(gc.rows.size()), n = gc.n, k = gc.k;
  const int64_t stride = gc.w_stride ? gc.w_stride : cuda::Fp8PaddedK(k),
                sstride = cuda::Fp8ScaleStride(k) + 1;
  std::vector<int32_t> offsets(experts + 1, 0);
  for (int64_t e = 0; e < experts; ++e) offsets[e + 1] = offsets[e] + gc.rows[e];
  const int64_t rows = offsets.back();
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(rows * k);
  std::vector<uint16_t> xb(rows * k);
  for (int64_t i = 0; i < rows * k; ++i) {
    xb[i] = FloatToBf16(nd(rng));
    x[i] = kF32 ? nd(rng) : Bf16ToFloat(xb[i]);
  }
  const Weights w = MakeWeights(experts, n, k, stride, sstride, fp8, rng);
  const std::vector<double> want = Reference(x, k, w, offsets, n, k);

  DeviceBuffer<float> dxf(x);
  DeviceBuffer<uint16_t> dxb(xb), dwb(w.bf16);
  DeviceBuffer<uint8_t> dwc(w.codes);
  DeviceBuffer<float> dsc(w.scales);
  DeviceBuffer<int32_t> doff(offsets);
  using Stored = std::conditional_t<kF32, float, uint16_t>;
  DeviceBuffer<Stored> y(rows * n);
  Poison(y, rows * n);
  cuda::GroupedFp8GemvParamsT<T> p;
  p.x = kF32 ? reinterpret_cast<const T*>(dxf.ptr) : reinterpret_cast<const T*>(dxb.ptr);
  p.offsets = doff.ptr;
  if (fp8) {
    p.w = reinterpret_cast<const __nv_fp8_e4m3*>(dwc.ptr);
    p.scales = dsc.ptr;
  } else {
    p.w_bf16 = reinterpret_cast<const __nv_bfloat16*>(dwb.ptr);
  }
  p.y = reinterpret_cast<T*>(y.ptr);
  p.experts = experts;
  p.n = n;
  p.k = k;
  p.w_stride = stride;
  p.scale_stride = sstride;
  const absl::Status st = cuda::GroupedFp8Gemv(p, nullptr);
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<float> got;
  if constexpr (kF32) {
    got = y.Download(rows * n);
  } else {
    got = DownloadBf16(y, rows * n);
  }
  const double err = RelL2(got, want);
  std::printf(
      "[ gemv ] grouped %s x, %s w: experts=%ld rows=%ld n=%ld k=%ld w_stride=%ld: rel L2 %.3g\n",
      kF32 ? "f32" : "bf16", fp8 ? "fp8" : "bf16", static_cast<long>(experts),
      static_cast<long>(rows), static_cast<long>(n), static_cast<long>(k),
      static_cast<long>(stride), err);
  return err;
}

const std::vector<GroupedCase>& GroupedCases() {
  static const std::vector<GroupedCase> cases = {
      // 0, 1 and many rows (9 and 17 take several passes), odd n, k not a multiple of 128.
      {{0, 1, 3, 0, 8, 9, 17}, 77, 333, 0},
      // Several k-tiles, the column split of a narrow layer.
      {{2, 0, 5}, 300, 5000, 0},
      // Many experts, few with rows (the scan), one column split per warp, several k-tiles.
      {{0, 0, 1, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 8, 0, 0, 0,
        0, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1},
       256,
       3000,
       0},
      // Rows not 16-byte aligned (element-wise loads), n = 1.
      {{1, 2}, 1, 101, 101},
      {{3, 0, 1}, 129, 99, 101},
  };
  return cases;
}

TEST(Gemv, GroupedBf16MatchesCpu) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(31);
  for (const GroupedCase& gc : GroupedCases()) {
    for (bool fp8 : {true, false}) {
      EXPECT_LE(RunGrouped<__nv_bfloat16>(gc, fp8, rng), kBf16Eps)
          << "n=" << gc.n << " k=" << gc.k << " fp8=" << fp8;
    }
  }
}

TEST(Gemv, GroupedFloat32MatchesCpu) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(32);
  for (const GroupedCase& gc : GroupedCases()) {
    for (bool fp8 : {true, false}) {
      EXPECT_LE(RunGrouped<float>(gc, fp8, rng), kF32Bound)
          << "n=" << gc.n << " k=" << gc.k << " fp8=" << fp8;
    }
  }
}

// A row's result does not depend on the other rows of its expert (nor on their number).
TEST(Gemv, GroupedRowIndependentOfBatch) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(33);
  const int64_t n = 200, k = 1000, stride = cuda::Fp8PaddedK(k), sstride = cuda::Fp8ScaleStride(k);
  const Weights w = MakeWeights(2, n, k, stride, sstride, true, rng);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<uint16_t> xb(13 * k);
  for (auto& v : xb) v = FloatToBf16(nd(rng));
  DeviceBuffer<uint16_t> dx(xb);
  DeviceBuffer<uint8_t> dwc(w.codes);
  DeviceBuffer<float> dsc(w.scales);
  auto run = [&](const std::vector<int32_t>& offsets, const __nv_bfloat16* x, int64_t rows) {
    DeviceBuffer<int32_t> doff(offsets);
    DeviceBuffer<uint16_t> y(rows * n);
    cuda::GroupedFp8GemvParams p;
    p.x = x;
    p.offsets = doff.ptr;
    p.w = reinterpret_cast<const __nv_fp8_e4m3*>(dwc.ptr);
    p.scales = dsc.ptr;
    p.y = reinterpret_cast<__nv_bfloat16*>(y.ptr);
    p.experts = 2;
    p.n = n;
    p.k = k;
    p.w_stride = stride;
    p.scale_stride = sstride;
    EXPECT_TRUE(cuda::GroupedFp8Gemv(p, nullptr).ok());
    return y.Download(rows * n);
  };
  const auto* x = reinterpret_cast<const __nv_bfloat16*>(dx.ptr);
  const std::vector<uint16_t> all = run({0, 4, 13}, x, 13);  // expert 1 has 9 rows: two passes
  for (int64_t r : {0, 5, 12}) {
    const std::vector<uint16_t> one =
        run(r < 4 ? std::vector<int32_t>{0, 1, 1} : std::vector<int32_t>{0, 0, 1}, x + r * k, 1);
    for (int64_t j = 0; j < n; ++j)
      ASSERT_EQ(one[j], all[r * n + j]) << "row " << r << " column " << j;
  }
}

struct DenseCase {
  int64_t m, n, k, x_pad;  // x_pad: extra elements per activation row
};

// An FP8-activation GEMV's output `got` [mp, n] against the double reference (bf16 bound), the
// rows past m still NaN-poisoned, and rows [0, m) against cuBLASLt's FP8 GEMM on the same codes
// and scales (`w_zero`: zero padding columns, which cuBLASLt multiplies) where its shape rules
// allow (n % 8 == 0, k % 16 == 0). Returns {error against the reference, against cuBLASLt or -1}.
std::pair<double, double> CheckFp8Gemv(cuda::GemmRunner& runner, const std::vector<float>& got,
                                       const std::vector<double>& want, const DenseCase& c, int64_t mp,
                                       int64_t kp, const DeviceBuffer<uint8_t>& q, const DeviceBuffer<float>& xs,
                                       const DeviceBuffer<uint8_t>& w_zero, const DeviceBuffer<float>& scales) {
  const double err = RelL2(got, want);
  EXPECT_LE(err, kBf16Eps) << "m=" << c.m << " n=" << c.n << " k=" << c.k;
  for (int64_t i = c.m * c.n; i < mp * c.n; ++i) {
    if (!std::isnan(got[i])) {
      ADD_FAILURE() << "row past m written at " << i;
      break;
    }
  }
  double vs_cublas = -1;
  if (c.n % 8 == 0 && c.k % 16 == 0) {
    DeviceBuffer<uint16_t> y_ref(mp * c.n);
    const absl::Status st =
        runner.Fp8({reinterpret_cast<const __nv_fp8_e4m3*>(q.ptr), xs.ptr,
                    reinterpret_cast<const __nv_fp8_e4m3*>(w_zero.ptr), scales.ptr,
                    reinterpret_cast<__nv_bfloat16*>(y_ref.ptr), c.m, c.n, kp},
                   nullptr);
    EXPECT_TRUE(st.ok()) << st;
    const std::vector<float> ref = DownloadBf16(y_ref, c.m * c.n);
    vs_cublas = RelL2(std::vector<float>(got.begin(), got.begin() + c.m * c.n),
                      std::vector<double>(ref.begin(), ref.end()));
    EXPECT_LE(vs_cublas, kBf16Eps) << "against cuBLASLt: m=" << c.m << " n=" << c.n << " k=" << c.k;
  }
  return {err, vs_cublas};
}

TEST(Gemv, DenseBf16MatchesCpu) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(34);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const DenseCase cases[] = {{1, 77, 333, 0},    {3, 77, 333, 16}, {8, 576, 7168, 0},
                             {13, 300, 5000, 5}, {1, 1, 130, 0},   {1, 1536, 7168, 0},
                             {5, 2048, 512, 0},  {16, 129, 99, 1}};
  for (const DenseCase& c : cases) {
    for (int mode = 0; mode < 3; ++mode) {  // FP8 weight, FP8 weight rounded to bf16, bf16 weight
      const bool fp8 = mode < 2, round = mode == 1;
      const int64_t stride = cuda::Fp8PaddedK(c.k), sstride = cuda::Fp8ScaleStride(c.k),
                    xs = c.k + c.x_pad;
      Weights w = MakeWeights(1, c.n, c.k, stride, sstride, fp8, rng);
      if (round) {
        for (float& v : w.deq) v = Bf16ToFloat(FloatToBf16(v));
      }
      std::vector<uint16_t> xb(c.m * xs, kBf16Nan);
      std::vector<float> x(c.m * xs, 0.0f);
      for (int64_t r = 0; r < c.m; ++r)
        for (int64_t i = 0; i < c.k; ++i) {
          xb[r * xs + i] = FloatToBf16(nd(rng));
          x[r * xs + i] = Bf16ToFloat(xb[r * xs + i]);
        }
      const std::vector<double> want =
          Reference(x, xs, w, {0, static_cast<int32_t>(c.m)}, c.n, c.k);
      DeviceBuffer<uint16_t> dx(xb), dwb(w.bf16), y((c.m + 1) * c.n);
      DeviceBuffer<uint8_t> dwc(w.codes);
      DeviceBuffer<float> dsc(w.scales);
      Poison(y, (c.m + 1) * c.n);
      cuda::DenseGemvParams p;
      p.x = reinterpret_cast<const __nv_bfloat16*>(dx.ptr);
      p.x_stride = xs;
      if (fp8) {
        p.w = reinterpret_cast<const __nv_fp8_e4m3*>(dwc.ptr);
        p.scales = dsc.ptr;
        p.scale_stride = sstride;
        p.w_round_bf16 = round;
      } else {
        p.w_bf16 = reinterpret_cast<const __nv_bfloat16*>(dwb.ptr);
      }
      p.y = reinterpret_cast<__nv_bfloat16*>(y.ptr);
      p.m = c.m;
      p.n = c.n;
      p.k = c.k;
      p.w_stride = stride;
      const absl::Status st = cuda::DenseGemv(p, nullptr);
      ASSERT_TRUE(st.ok()) << st;
      const std::vector<float> got = DownloadBf16(y, (c.m + 1) * c.n);
      const double err = RelL2(got, want);
      const char* wname = round ? "fp8 (as bf16)" : fp8 ? "fp8" : "bf16";
      EXPECT_LE(err, kBf16Eps) << "m=" << c.m << " n=" << c.n << " k=" << c.k << " w " << wname;
      for (int64_t j = 0; j < c.n; ++j)
        ASSERT_TRUE(std::isnan(got[c.m * c.n + j])) << "row m written, column " << j;
      std::printf("[ gemv ] dense bf16 x, %s w: m=%ld n=%ld k=%ld x_stride=%ld: rel L2 %.3g\n",
                  wname, static_cast<long>(c.m), static_cast<long>(c.n), static_cast<long>(c.k),
                  static_cast<long>(xs), err);
    }
  }
}

// FP8 activations: the quantiser's codes and per-token scales times the FP8 weight, against the
// double-precision product of the same dequantised values and against cuBLASLt's FP8 GEMM.
TEST(Gemv, DenseFp8ActivationsMatchCpuAndCublas) {
  SKIP_WITHOUT_GPU();
  auto runner = cuda::GemmRunner::Create();
  ASSERT_TRUE(runner.ok()) << runner.status();
  std::mt19937_64 rng(35);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const DenseCase cases[] = {{1, 576, 7168, 0}, {8, 576, 7168, 0}, {1, 1536, 7168, 0},
                             {5, 2048, 512, 0}, {1, 77, 333, 0},   {3, 300, 5000, 0},
                             {16, 24, 1536, 0}};
  for (const DenseCase& c : cases) {
    const int64_t kp = cuda::Fp8PaddedK(c.k), sstride = cuda::Fp8ScaleStride(c.k),
                  mp = cuda::Fp8PaddedRows(c.m);
    const int64_t kb = (c.k + 127) / 128;
    const Weights w = MakeWeights(1, c.n, c.k, kp, sstride, true, rng);
    // Zero padding columns here: the quantiser writes zero codes there and cuBLASLt multiplies
    // them.
    std::vector<uint8_t> codes = w.codes;
    for (int64_t r = 0; r < c.n; ++r)
      for (int64_t i = c.k; i < kp; ++i) codes[r * kp + i] = 0;
    std::vector<uint16_t> xb(c.m * c.k);
    for (auto& v : xb) v = FloatToBf16(nd(rng) * 3.0f);
    DeviceBuffer<uint16_t> dx(xb), y(mp * c.n);
    DeviceBuffer<uint8_t> dq(mp * kp), dwc(codes);
    DeviceBuffer<float> dxs(kb * mp), dsc(w.scales);
    ASSERT_TRUE(cuda::QuantizeFp8PerToken128(
                    {reinterpret_cast<const __nv_bfloat16*>(dx.ptr),
                     reinterpret_cast<__nv_fp8_e4m3*>(dq.ptr), dxs.ptr, c.m, c.k, kp},
                    nullptr)
                    .ok());
    // The reference sees exactly the quantised activations.
    const std::vector<uint8_t> q = dq.Download(mp * kp);
    const std::vector<float> xs = dxs.Download(kb * mp);
    std::vector<float> xdeq(c.m * c.k);
    for (int64_t r = 0; r < c.m; ++r)
      for (int64_t i = 0; i < c.k; ++i)
        xdeq[r * c.k + i] = Fp8E4M3ToFloat(q[r * kp + i]) * xs[(i / 128) * mp + r];
    std::vector<double> want(c.m * c.n);
    for (int64_t r = 0; r < c.m; ++r)
      for (int64_t j = 0; j < c.n; ++j) {
        double acc = 0;
        for (int64_t i = 0; i < c.k; ++i)
          acc += static_cast<double>(xdeq[r * c.k + i]) * w.deq[j * c.k + i];
        want[r * c.n + j] = acc;
      }
    Poison(y, mp * c.n);
    cuda::DenseGemvParams p;
    p.x_q = reinterpret_cast<const __nv_fp8_e4m3*>(dq.ptr);
    p.x_scales = dxs.ptr;
    p.x_stride = kp;
    p.x_scale_rows = mp;
    p.w = reinterpret_cast<const __nv_fp8_e4m3*>(dwc.ptr);
    p.scales = dsc.ptr;
    p.scale_stride = sstride;
    p.y = reinterpret_cast<__nv_bfloat16*>(y.ptr);
    p.m = c.m;
    p.n = c.n;
    p.k = c.k;
    p.w_stride = kp;
    const absl::Status st = cuda::DenseGemv(p, nullptr);
    ASSERT_TRUE(st.ok()) << st;
    const auto [err, vs_cublas] =
        CheckFp8Gemv(**runner, DownloadBf16(y, mp * c.n), want, c, mp, kp, dq, dxs, dwc, dsc);
    std::printf(
        "[ gemv ] dense fp8 x, fp8 w: m=%ld n=%ld k=%ld: rel L2 %.3g, against cuBLASLt %.3g\n",
        static_cast<long>(c.m), static_cast<long>(c.n), static_cast<long>(c.k), err, vs_cublas);
  }
}

// A row's result does not depend on m or on the other rows.
TEST(Gemv, DenseRowIndependentOfBatch) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(36);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int64_t n = 576, k = 7168, m = 8, stride = cuda::Fp8PaddedK(k),
                sstride = cuda::Fp8ScaleStride(k);
  const Weights w = MakeWeights(1, n, k, stride, sstride, true, rng);
  std::vector<uint16_t> xb(m * k);
  for (auto& v : xb) v = FloatToBf16(nd(rng));
  DeviceBuffer<uint16_t> dx(xb), y(m * n);
  DeviceBuffer<uint8_t> dwc(w.codes);
  DeviceBuffer<float> dsc(w.scales);
  cuda::DenseGemvParams p;
  p.w = reinterpret_cast<const __nv_fp8_e4m3*>(dwc.ptr);
  p.scales = dsc.ptr;
  p.scale_stride = sstride;
  p.y = reinterpret_cast<__nv_bfloat16*>(y.ptr);
  p.n = n;
  p.k = k;
  p.w_stride = stride;
  p.x = reinterpret_cast<const __nv_bfloat16*>(dx.ptr);
  p.m = m;
  ASSERT_TRUE(cuda::DenseGemv(p, nullptr).ok());
  const std::vector<uint16_t> all = y.Download(m * n);
  for (int64_t r = 0; r < m; r += 3) {
    p.x = reinterpret_cast<const __nv_bfloat16*>(dx.ptr) + r * k;
    p.m = 1;
    ASSERT_TRUE(cuda::DenseGemv(p, nullptr).ok());
    const std::vector<uint16_t> one = y.Download(n);
    for (int64_t j = 0; j < n; ++j)
      ASSERT_EQ(one[j], all[r * n + j]) << "row " << r << " column " << j;
  }
}

// RowGemvFp8 (kernels/cuda/dense_gemv.h): 1-4 rows of quantised activations against the double
// reference on exactly those codes and scales, and against cuBLASLt's FP8 GEMM. The padding
// columns of both the weight rows and the activation rows hold NaN codes (the kernel must not
// read past k into them), k not a multiple of 128 or 16, n not a multiple of 16 or 128, tiles
// split over clusters of blocks (few columns) with warps left without work (n = 40).
TEST(Gemv, RowFp8MatchesCpuAndCublas) {
  SKIP_WITHOUT_GPU();
  auto runner = cuda::GemmRunner::Create();
  ASSERT_TRUE(runner.ok()) << runner.status();
  std::mt19937_64 rng(37);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const DenseCase cases[] = {{1, 576, 7168, 0},  {2, 1536, 7168, 0}, {4, 576, 7168, 0},
                             {1, 7168, 2048, 0}, {3, 300, 5000, 0},  {4, 77, 333, 0},
                             {1, 16, 100, 0},    {2, 24, 1536, 0},   {3, 1000, 16384, 0},
                             {4, 129, 136, 0},   {1, 40, 7168, 0},   {2, 100, 1000, 0}};
  for (const DenseCase& c : cases) {
    const int64_t kp = cuda::Fp8PaddedK(c.k), sstride = cuda::Fp8ScaleStride(c.k),
                  mp = cuda::Fp8PaddedRows(c.m);
    const int64_t kb = (c.k + 127) / 128;
    const Weights w = MakeWeights(1, c.n, c.k, kp, sstride, true, rng);  // NaN padding codes
    std::vector<uint8_t> zero_padded = w.codes;
    for (int64_t r = 0; r < c.n; ++r)
      for (int64_t i = c.k; i < kp; ++i) zero_padded[r * kp + i] = 0;
    std::vector<uint16_t> xb(c.m * c.k);
    for (auto& v : xb) v = FloatToBf16(nd(rng) * 3.0f);
    DeviceBuffer<uint16_t> dx(xb), y(mp * c.n);
    DeviceBuffer<uint8_t> dq(mp * kp), dw_nan(w.codes), dw_zero(zero_padded);
    DeviceBuffer<float> dxs(kb * mp), dsc(w.scales);
    ASSERT_TRUE(cuda::QuantizeFp8PerToken128(
                    {reinterpret_cast<const __nv_bfloat16*>(dx.ptr),
                     reinterpret_cast<__nv_fp8_e4m3*>(dq.ptr), dxs.ptr, c.m, c.k, kp},
                    nullptr)
                    .ok());
    const std::vector<uint8_t> q = dq.Download(mp * kp);
    const std::vector<float> xs = dxs.Download(kb * mp);
    std::vector<uint8_t> q_nan = q;
    for (int64_t r = 0; r < mp; ++r)
      for (int64_t i = c.k; i < kp; ++i) q_nan[r * kp + i] = kFp8Nan;
    DeviceBuffer<uint8_t> dq_nan(q_nan);
    std::vector<double> want(c.m * c.n);
    for (int64_t r = 0; r < c.m; ++r)
      for (int64_t j = 0; j < c.n; ++j) {
        double acc = 0;
        for (int64_t i = 0; i < c.k; ++i)
          acc += static_cast<double>(Fp8E4M3ToFloat(q[r * kp + i]) * xs[(i / 128) * mp + r]) *
                 w.deq[j * c.k + i];
        want[r * c.n + j] = acc;
      }
    Poison(y, mp * c.n);
    cuda::DenseGemvParams p;
    p.x_q = reinterpret_cast<const __nv_fp8_e4m3*>(dq_nan.ptr);
    p.x_scales = dxs.ptr;
    p.x_stride = kp;
    p.x_scale_rows = mp;
    p.w = reinterpret_cast<const __nv_fp8_e4m3*>(dw_nan.ptr);
    p.scales = dsc.ptr;
    p.scale_stride = sstride;
    p.y = reinterpret_cast<__nv_bfloat16*>(y.ptr);
    p.m = c.m;
    p.n = c.n;
    p.k = c.k;
    p.w_stride = kp;
    ASSERT_TRUE(cuda::RowGemvFp8Supports(p));
    const absl::Status st = cuda::RowGemvFp8(p, nullptr);
    ASSERT_TRUE(st.ok()) << st;
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const auto [err, vs_cublas] =
        CheckFp8Gemv(**runner, DownloadBf16(y, mp * c.n), want, c, mp, kp, dq, dxs, dw_zero, dsc);
    std::printf("[ gemv ] row fp8: m=%ld n=%ld k=%ld: rel L2 %.3g, against cuBLASLt %.3g\n",
                static_cast<long>(c.m), static_cast<long>(c.n), static_cast<long>(c.k), err,
                vs_cublas);
  }
}

// RowGemvFp8: a row's result is the same bits at m = 4 and alone.
TEST(Gemv, RowFp8IndependentOfBatch) {
  SKIP_WITHOUT_GPU();
  std::mt19937_64 rng(38);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int64_t m = 4, n = 300, k = 5000, kp = cuda::Fp8PaddedK(k),
                sstride = cuda::Fp8ScaleStride(k), mp = cuda::Fp8PaddedRows(m),
                kb = (k + 127) / 128;
  const Weights w = MakeWeights(1, n, k, kp, sstride, true, rng);
  std::vector<uint16_t> xb(m * k);
  for (auto& v : xb) v = FloatToBf16(nd(rng));
  DeviceBuffer<uint16_t> dx(xb), y(mp * n);
  DeviceBuffer<uint8_t> dq(mp * kp), dwc(w.codes);
  DeviceBuffer<float> dxs(kb * mp), dsc(w.scales);
  ASSERT_TRUE(
      cuda::QuantizeFp8PerToken128({reinterpret_cast<const __nv_bfloat16*>(dx.ptr),
                                    reinterpret_cast<__nv_fp8_e4m3*>(dq.ptr), dxs.ptr, m, k, kp},
                                   nullptr)
          .ok());
  const std::vector<uint8_t> q = dq.Download(mp * kp);
  const std::vector<float> xs = dxs.Download(kb * mp);
  cuda::DenseGemvParams p;
  p.x_q = reinterpret_cast<const __nv_fp8_e4m3*>(dq.ptr);
  p.x_scales = dxs.ptr;
  p.x_stride = kp;
  p.x_scale_rows = mp;
  p.w = reinterpret_cast<const __nv_fp8_e4m3*>(dwc.ptr);
  p.scales = dsc.ptr;
  p.scale_stride = sstride;
  p.y = reinterpret_cast<__nv_bfloat16*>(y.ptr);
  p.m = m, p.n = n, p.k = k, p.w_stride = kp;
  ASSERT_TRUE(cuda::RowGemvFp8(p, nullptr).ok());
  const std::vector<uint16_t> all = y.Download(m * n);
  for (int64_t r = 0; r < m; ++r) {
    // Row r alone: its codes in row 0 and its scales in a one-row grid of Fp8PaddedRows(1) rows.
    std::vector<uint8_t> q1(q.begin() + r * kp, q.begin() + (r + 1) * kp);
    std::vector<float> xs1(kb * cuda::Fp8PaddedRows(1), 1.0f);
    for (int64_t g = 0; g < kb; ++g) xs1[g * cuda::Fp8PaddedRows(1)] = xs[g * mp + r];
    DeviceBuffer<uint8_t> dq1(q1);
    DeviceBuffer<float> dxs1(xs1);
    Poison(y, n);
    cuda::DenseGemvParams p1 = p;
    p1.x_q = reinterpret_cast<const __nv_fp8_e4m3*>(dq1.ptr);
    p1.x_scales = dxs1.ptr;
    p1.x_scale_rows = cuda::Fp8PaddedRows(1);
    p1.m = 1;
    ASSERT_TRUE(cuda::RowGemvFp8(p1, nullptr).ok());
    const std::vector<uint16_t> one = y.Download(n);
    for (int64_t j = 0; j < n; ++j)
      ASSERT_EQ(one[j], all[r * n + j]) << "row " << r << " column " << j;
  }
}

TEST(Gemv, RowFp8RefusesWhatItDoesNotTake) {
  SKIP_WITHOUT_GPU();
  DeviceBuffer<uint8_t> xq(256), w(256);
  DeviceBuffer<uint16_t> xb(256), y(256);
  DeviceBuffer<float> s(64);
  cuda::DenseGemvParams p;
  p.x_q = reinterpret_cast<const __nv_fp8_e4m3*>(xq.ptr);
  p.x_scales = s.ptr;
  p.x_scale_rows = 16;
  p.w = reinterpret_cast<const __nv_fp8_e4m3*>(w.ptr);
  p.scales = s.ptr;
  p.scale_stride = 1;
  p.y = reinterpret_cast<__nv_bfloat16*>(y.ptr);
  p.m = 1, p.n = 2, p.k = 16, p.w_stride = 16;
  EXPECT_TRUE(cuda::RowGemvFp8Supports(p));
  EXPECT_TRUE(cuda::RowGemvFp8(p, nullptr).ok());
  auto refused = [](const cuda::DenseGemvParams& bad) {
    return !cuda::RowGemvFp8Supports(bad) &&
           cuda::RowGemvFp8(bad, nullptr).code() == absl::StatusCode::kInvalidArgument;
  };
  cuda::DenseGemvParams bad = p;
  bad.m = cuda::kRowGemvMaxRows + 1;
  EXPECT_TRUE(refused(bad));
  bad = p;
  bad.w_stride = 24;  // not a multiple of 16
  EXPECT_TRUE(refused(bad));
  bad = p;
  bad.x_q = nullptr, bad.x = reinterpret_cast<const __nv_bfloat16*>(xb.ptr);  // bf16 x
  EXPECT_TRUE(refused(bad));
  bad = p;
  bad.w = reinterpret_cast<const __nv_fp8_e4m3*>(w.ptr + 1);  // unaligned
  EXPECT_TRUE(refused(bad));
  bad = p;
  bad.scale_stride = 0;
  EXPECT_TRUE(refused(bad));
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

TEST(Gemv, RefusesBadArguments) {
  SKIP_WITHOUT_GPU();
  DeviceBuffer<uint16_t> x(64), y(64);
  DeviceBuffer<uint8_t> w(64);
  DeviceBuffer<float> s(4);
  cuda::DenseGemvParams p;
  p.x = reinterpret_cast<const __nv_bfloat16*>(x.ptr);
  p.w = reinterpret_cast<const __nv_fp8_e4m3*>(w.ptr);
  p.scales = s.ptr;
  p.scale_stride = 1;
  p.y = reinterpret_cast<__nv_bfloat16*>(y.ptr);
  p.m = 1, p.n = 2, p.k = 16, p.w_stride = 16;
  EXPECT_TRUE(cuda::DenseGemv(p, nullptr).ok());
  cuda::DenseGemvParams bad = p;
  bad.w_stride = 15;
  EXPECT_EQ(cuda::DenseGemv(bad, nullptr).code(), absl::StatusCode::kInvalidArgument);
  bad = p;
  bad.x_q = reinterpret_cast<const __nv_fp8_e4m3*>(w.ptr);  // both activation forms
  EXPECT_EQ(cuda::DenseGemv(bad, nullptr).code(), absl::StatusCode::kInvalidArgument);
  bad = p;
  bad.x = nullptr, bad.x_q = reinterpret_cast<const __nv_fp8_e4m3*>(w.ptr), bad.x_scales = s.ptr,
  bad.x_scale_rows = 1;
  bad.w = nullptr, bad.scales = nullptr, bad.w_bf16 = reinterpret_cast<const __nv_bfloat16*>(x.ptr);
  EXPECT_EQ(cuda::DenseGemv(bad, nullptr).code(),
            absl::StatusCode::kInvalidArgument);  // FP8 x, bf16 w
  bad = p;
  bad.m = 0;
  EXPECT_TRUE(cuda::DenseGemv(bad, nullptr).ok());
  cuda::GroupedFp8GemvParams g;
  g.x = reinterpret_cast<const __nv_bfloat16*>(x.ptr);
  g.offsets = reinterpret_cast<const int32_t*>(s.ptr);
  g.w = p.w, g.scales = s.ptr, g.y = p.y, g.experts = 5000, g.n = 2, g.k = 16, g.w_stride = 16,
  g.scale_stride = 1;
  EXPECT_EQ(cuda::GroupedFp8Gemv(g, nullptr).code(),
            absl::StatusCode::kInvalidArgument);  // too many experts
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

}  // namespace
}  // namespace r1

// AbsorbQueryFp8 / ApplyValueFp8 (MLA's absorbed per-head products from kv_b_proj's FP8 codes)
// against a double-precision reference on the dequantised weight: R1's shape and an awkward one
// (head rows crossing 128-row scale blocks, kvr not a multiple of 16 with NaN codes in the row
// padding), bf16 and float32 activations, 1 to 16 rows; a row's result must not depend on how many
// rows the call has.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "common/dtype.h"
#include "gtest/gtest.h"
#include "kernels/cuda/absorb_fp8.h"
#include "tests/cuda/cuda_test_util.h"

namespace r1 {
namespace {

using cuda_testing::DeviceBuffer;
using cuda_testing::RelL2;

struct Shape {
  int64_t heads, nope, rope, v, kvr;
};

// kv_b_proj [heads * (nope + v), kvr] as e4m3 codes in rows of `stride` bytes (padding: NaN
// codes, which the kernels must never multiply into a kept sum) and 128 x 128 block scales.
struct KvB {
  int64_t stride = 0, scale_stride = 0;
  std::vector<uint8_t> codes;
  std::vector<float> scales;
  std::vector<double> deq;  // [rows, kvr]
};
KvB RandomKvB(const Shape& s, std::mt19937_64& rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> ud(0.001f, 0.01f);
  KvB w;
  const int64_t rows = s.heads * (s.nope + s.v);
  w.stride = (s.kvr + 127) / 128 * 128;
  w.scale_stride = ((s.kvr + 127) / 128 + 3) / 4 * 4;
  w.codes.assign(rows * w.stride, 0x7f);  // e4m3 NaN
  w.scales.assign((rows + 127) / 128 * w.scale_stride, std::nanf(""));
  for (int64_t b = 0; b < (rows + 127) / 128; ++b)
    for (int64_t c = 0; c < (s.kvr + 127) / 128; ++c) w.scales[b * w.scale_stride + c] = ud(rng);
  w.deq.resize(rows * s.kvr);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < s.kvr; ++c) {
      const uint8_t q = FloatToFp8E4M3(nd(rng) * 100.0f);
      w.codes[r * w.stride + c] = q;
      w.deq[r * s.kvr + c] = static_cast<double>(Fp8E4M3ToFloat(q)) * w.scales[(r / 128) * w.scale_stride + c / 128];
    }
  return w;
}

std::vector<float> ToFloats(const std::vector<uint16_t>& b) {
  std::vector<float> f(b.size());
  for (size_t i = 0; i < b.size(); ++i) f[i] = Bf16ToFloat(b[i]);
  return f;
}

// Runs both products for `rows` rows in the activation type T (bf16 or float32): q_lat, q_pe and
// the value product's output, as floats.
struct Outputs {
  std::vector<float> q_lat, q_pe, out;
};
template <typename T>
Outputs Run(const Shape& s, const KvB& w, const std::vector<float>& q, const std::vector<float>& o_lat, int64_t rows) {
  constexpr bool kBf16 = sizeof(T) == 2;
  const int64_t qk = s.nope + s.rope;
  DeviceBuffer<uint8_t> dw(w.codes);
  DeviceBuffer<float> ds(w.scales), dol(o_lat), dql(rows * s.heads * s.kvr), dqp(rows * s.heads * s.rope);
  std::vector<uint16_t> qb(rows * s.heads * qk);
  for (size_t i = 0; i < qb.size(); ++i) qb[i] = FloatToBf16(q[i]);
  DeviceBuffer<uint16_t> dqb(qb), dob(rows * s.heads * s.v);
  DeviceBuffer<float> dqf(std::vector<float>(q.begin(), q.begin() + rows * s.heads * qk)), dof(rows * s.heads * s.v);
  EXPECT_EQ(cudaMemset(dql.ptr, 0xff, rows * s.heads * s.kvr * 4), cudaSuccess);  // NaN poison
  EXPECT_EQ(cudaMemset(dqp.ptr, 0xff, rows * s.heads * s.rope * 4), cudaSuccess);
  EXPECT_EQ(cudaMemset(dob.ptr, 0xff, rows * s.heads * s.v * 2), cudaSuccess);
  EXPECT_EQ(cudaMemset(dof.ptr, 0xff, rows * s.heads * s.v * 4), cudaSuccess);
  cuda::AbsorbFp8Weight wt;
  wt.w = dw.ptr, wt.scales = ds.ptr, wt.w_stride = w.stride, wt.scale_stride = w.scale_stride;
  wt.heads = s.heads, wt.nope = s.nope, wt.v = s.v, wt.kvr = s.kvr;
  EXPECT_TRUE(cuda::AbsorbFp8Supports(wt));
  Outputs r;
  if constexpr (kBf16) {
    cuda::AbsorbQueryFp8Params<__nv_bfloat16> qp{wt, reinterpret_cast<const __nv_bfloat16*>(dqb.ptr), dql.ptr,
                                                 dqp.ptr, rows, s.rope};
    absl::Status st = cuda::AbsorbQueryFp8(qp, nullptr);
    EXPECT_TRUE(st.ok()) << st;
    cuda::ApplyValueFp8Params<__nv_bfloat16> vp{wt, dol.ptr, reinterpret_cast<__nv_bfloat16*>(dob.ptr), rows};
    st = cuda::ApplyValueFp8(vp, nullptr);
    EXPECT_TRUE(st.ok()) << st;
    r.out = ToFloats(dob.Download(rows * s.heads * s.v));
  } else {
    cuda::AbsorbQueryFp8Params<float> qp{wt, dqf.ptr, dql.ptr, dqp.ptr, rows, s.rope};
    absl::Status st = cuda::AbsorbQueryFp8(qp, nullptr);
    EXPECT_TRUE(st.ok()) << st;
    cuda::ApplyValueFp8Params<float> vp{wt, dol.ptr, dof.ptr, rows};
    st = cuda::ApplyValueFp8(vp, nullptr);
    EXPECT_TRUE(st.ok()) << st;
    r.out = dof.Download(rows * s.heads * s.v);
  }
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  r.q_lat = dql.Download(rows * s.heads * s.kvr);
  r.q_pe = dqp.Download(rows * s.heads * s.rope);
  return r;
}

template <typename T>
void CheckShape(const Shape& s, const std::vector<int64_t>& row_counts, uint64_t seed) {
  constexpr bool kBf16 = sizeof(T) == 2;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const KvB w = RandomKvB(s, rng);
  const int64_t qk = s.nope + s.rope, max_rows = 16;
  // q bf16-representable, so that both activation types compute from the same values.
  std::vector<float> q(max_rows * s.heads * qk), o_lat(max_rows * s.heads * s.kvr);
  for (auto& x : q) x = Bf16ToFloat(FloatToBf16(nd(rng)));
  for (auto& x : o_lat) x = nd(rng);
  Outputs first;
  for (const int64_t rows : row_counts) {
    SCOPED_TRACE(::testing::Message() << (kBf16 ? "bf16" : "f32") << ", " << s.heads << " heads, nope " << s.nope
                                      << ", v " << s.v << ", kvr " << s.kvr << ", " << rows << " rows");
    std::vector<double> want_lat(rows * s.heads * s.kvr), want_pe(rows * s.heads * s.rope),
        want_out(rows * s.heads * s.v);
    for (int64_t t = 0; t < rows; ++t)
      for (int64_t h = 0; h < s.heads; ++h) {
        const int64_t row0 = h * (s.nope + s.v);
        for (int64_t c = 0; c < s.kvr; ++c) {
          double acc = 0;
          for (int64_t d = 0; d < s.nope; ++d) acc += q[(t * s.heads + h) * qk + d] * w.deq[(row0 + d) * s.kvr + c];
          want_lat[(t * s.heads + h) * s.kvr + c] = acc;
        }
        for (int64_t r = 0; r < s.rope; ++r) want_pe[(t * s.heads + h) * s.rope + r] = q[(t * s.heads + h) * qk + s.nope + r];
        for (int64_t j = 0; j < s.v; ++j) {
          double acc = 0;
          for (int64_t c = 0; c < s.kvr; ++c)
            acc += o_lat[(t * s.heads + h) * s.kvr + c] * w.deq[(row0 + s.nope + j) * s.kvr + c];
          want_out[(t * s.heads + h) * s.v + j] = acc;
        }
      }
    const Outputs got = Run<T>(s, w, q, o_lat, rows);
    const double e_lat = RelL2(got.q_lat, want_lat), e_pe = RelL2(got.q_pe, want_pe), e_out = RelL2(got.out, want_out);
    // Exact products, float32 sums: ~1e-7. The value product's bf16 output rounds to 2^-9.
    EXPECT_LE(e_lat, 1e-5);
    EXPECT_EQ(e_pe, 0.0);
    EXPECT_LE(e_out, kBf16 ? 4e-3 : 1e-5);
    std::printf("[ cuda ] absorb fp8 (%s) %ld rows x %ld heads, nope %ld, v %ld, kvr %ld: q_lat rel L2 %.3g, "
                "value rel L2 %.3g\n", kBf16 ? "bf16" : "f32", static_cast<long>(rows), static_cast<long>(s.heads),
                static_cast<long>(s.nope), static_cast<long>(s.v), static_cast<long>(s.kvr), e_lat, e_out);
    // Row 0's bits are the same whatever the row count.
    if (first.q_lat.empty()) {
      first = got;
    } else {
      EXPECT_EQ(std::memcmp(first.q_lat.data(), got.q_lat.data(), s.heads * s.kvr * 4), 0);
      EXPECT_EQ(std::memcmp(first.out.data(), got.out.data(), s.heads * s.v * 4), 0);
    }
  }
}

TEST(AbsorbFp8, R1ShapeMatchesDoubleReference) {
  SKIP_WITHOUT_GPU();
  const Shape r1{128, 128, 64, 128, 512};
  CheckShape<__nv_bfloat16>(r1, {1, 4, 5, 16}, 41);
  CheckShape<float>(r1, {1, 3}, 42);
}

TEST(AbsorbFp8, AwkwardShapeMatchesDoubleReference) {
  SKIP_WITHOUT_GPU();
  // 88 rows per head: heads straddle the 128-row scale blocks; kvr 200: a partial last 16-byte
  // piece and a partial scale block, with NaN codes past it.
  const Shape odd{3, 48, 16, 40, 200};
  CheckShape<__nv_bfloat16>(odd, {7, 1, 2}, 43);
  CheckShape<float>(odd, {2, 9}, 44);
}

TEST(AbsorbFp8, RefusesUnsupportedCalls) {
  SKIP_WITHOUT_GPU();
  DeviceBuffer<uint8_t> w(128 * 64 * 512);
  DeviceBuffer<float> s(64 * 4), f(16 * 128 * 512), out(16 * 128 * 128);
  cuda::AbsorbFp8Weight wt;
  wt.w = w.ptr, wt.scales = s.ptr, wt.w_stride = 512, wt.scale_stride = 4;
  wt.heads = 16, wt.nope = 128, wt.v = 128, wt.kvr = 512;
  EXPECT_TRUE(cuda::AbsorbFp8Supports(wt));
  cuda::ApplyValueFp8Params<float> vp{wt, f.ptr, out.ptr, cuda::kAbsorbFp8MaxRows + 1};
  EXPECT_FALSE(cuda::ApplyValueFp8(vp, nullptr).ok());  // too many rows
  vp.rows = 1;
  EXPECT_TRUE(cuda::ApplyValueFp8(vp, nullptr).ok());
  cuda::AbsorbFp8Weight bad = wt;
  bad.w_stride = 504;  // not a multiple of 16
  EXPECT_FALSE(cuda::AbsorbFp8Supports(bad));
  bad = wt;
  bad.scale_stride = 3;  // does not cover kvr's 4 scale blocks
  EXPECT_FALSE(cuda::AbsorbFp8Supports(bad));
  bad = wt;
  bad.w = w.ptr + 8;  // misaligned codes
  cuda::AbsorbQueryFp8Params<float> qp{bad, f.ptr, out.ptr, out.ptr, 1, 64};
  EXPECT_FALSE(cuda::AbsorbQueryFp8(qp, nullptr).ok());
  qp.w = wt;
  qp.q_pe = nullptr;  // rope > 0 needs q_pe
  EXPECT_FALSE(cuda::AbsorbQueryFp8(qp, nullptr).ok());
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

}  // namespace
}  // namespace r1

// GroupedFp8Gemm (kernels/cuda/grouped_gemm.h) against a double-precision CPU reference on random
// data: experts with 0, 1 and more rows than a tile, row counts that are not multiples of the
// tile, n and k that are not multiples of 128 (the golden models' expert sizes among them), k
// with a last 16-code chunk cut by k, NaN codes in the padding past k that must not be read,
// every tile height, block scales of 0, and unquantised bf16 expert weights. The output buffer is
// poisoned with NaN first, including rows past the last expert's, which must stay untouched.
// The FP8 × FP8 path (x_q) is checked the same way against the product of the quantised rows
// (QuantizeRowsFp8Group128's codes and scales, which are checked against x first), each tile on
// the wgmma kernel where the shape allows it and on the mma.sync kernel (mma_sync), R1's expert
// shapes included, with x_q rows past the last expert's holding NaN codes.
#include "kernels/cuda/grouped_gemm.h"

#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/dtype.h"
#include "gtest/gtest.h"
#include "tests/cuda/cuda_test_util.h"

namespace r1 {
namespace {

using cuda_testing::DeviceBuffer;

struct GemmCase {
  std::string name;
  int64_t n = 0, k = 0, w_stride = 0;
  std::vector<int32_t> rows;  // per expert
  bool fp8 = true;
  int64_t extra_max_rows = 0;  // max_rows = rows + this (an upper bound, as a caller may give)
};

// The products are exact and summed in float32; the one bf16 rounding of the output (unit
// roundoff 2^-9) puts the relative L2 error near 2^-9 / sqrt(3) ≈ 1.1e-3. Bound: 2^-8.
constexpr double kBound = 1.0 / 256;

void RunCase(const GemmCase& c, const std::vector<int>& tile_rows, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> ud(0.0f, 1.0f);
  const int64_t experts = static_cast<int64_t>(c.rows.size()), n = c.n, k = c.k, ws = c.w_stride;
  const int64_t nb = (n + 127) / 128, kb = (k + 127) / 128, sstride = (kb + 3) / 4 * 4;
  std::vector<int32_t> offsets(experts + 1, 0);
  for (int64_t e = 0; e < experts; ++e) offsets[e + 1] = offsets[e] + c.rows[e];
  const int64_t rows = offsets.back(), slack = 7;  // y rows past `rows` must stay poisoned

  std::vector<uint16_t> x(std::max<int64_t>(rows, 1) * k);
  for (size_t i = 0; i < x.size(); ++i) x[i] = FloatToBf16(nd(rng) * (i % 97 == 0 ? 20.0f : 1.0f));
  // Weights: any finite e4m3 code (subnormals included) with scales that are not powers of two,
  // or bf16 values; the padding columns [k, w_stride) hold NaN, which must never be read.
  std::vector<uint8_t> w8(experts * n * ws, 0x7f);
  std::vector<uint16_t> w16(experts * n * ws, 0x7fc0);
  std::vector<float> scales(experts * nb * sstride, std::nanf("")), deq(experts * n * k);
  for (float& s : scales) s = std::ldexp(1.0f + ud(rng), -static_cast<int>(rng() % 8) - 5);
  // Some blocks with scale 0 (they add nothing), so that consecutive k blocks' scales vary widely.
  for (size_t i = 0; i < scales.size(); ++i)
    if (i % 7 == 3) scales[i] = 0.0f;
  for (int64_t e = 0; e < experts; ++e)
    for (int64_t r = 0; r < n; ++r)
      for (int64_t col = 0; col < k; ++col) {
        const int64_t i = (e * n + r) * ws + col;
        if (c.fp8) {
          uint8_t code;
          do code = static_cast<uint8_t>(rng());
          while ((code & 0x7f) == 0x7f);
          w8[i] = code;
          deq[(e * n + r) * k + col] =
              Fp8E4M3ToFloat(code) * scales[(e * nb + r / 128) * sstride + col / 128];
        } else {
          w16[i] = FloatToBf16(nd(rng) * 0.05f);
          deq[(e * n + r) * k + col] = Bf16ToFloat(w16[i]);
        }
      }
  std::vector<double> want(rows * n, 0.0);
  for (int64_t e = 0; e < experts; ++e)
    for (int32_t r = offsets[e]; r < offsets[e + 1]; ++r)
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        const float* wr = deq.data() + (e * n + j) * k;
        for (int64_t col = 0; col < k; ++col)
          acc += static_cast<double>(Bf16ToFloat(x[r * k + col])) * wr[col];
        want[r * n + j] = acc;
      }

  DeviceBuffer<uint16_t> dx(x);
  DeviceBuffer<int32_t> doff(offsets);
  DeviceBuffer<uint8_t> dw8(c.fp8 ? w8 : std::vector<uint8_t>(16));
  DeviceBuffer<uint16_t> dw16(c.fp8 ? std::vector<uint16_t>(16) : w16);
  DeviceBuffer<float> ds(scales);
  DeviceBuffer<uint16_t> dy((rows + slack) * n);
  // Each tile height with each stage depth (k 64 and 128), or the launcher's own choice (0).
  std::vector<std::pair<int, int>> tiles;
  for (int tr : tile_rows) {
    if (tr == 0) tiles.emplace_back(0, 0);
    if (tr != 0) tiles.emplace_back(tr, 64), tiles.emplace_back(tr, 128);
  }
  for (const auto& [tr, tk] : tiles) {
    ASSERT_EQ(cudaMemset(dy.ptr, 0xff, (rows + slack) * n * 2), cudaSuccess);
    cuda::GroupedFp8GemmParams p;
    p.x = reinterpret_cast<const __nv_bfloat16*>(dx.ptr);
    p.offsets = doff.ptr;
    if (c.fp8) {
      p.w = reinterpret_cast<const __nv_fp8_e4m3*>(dw8.ptr);
      p.scales = ds.ptr;
    } else {
      p.w_bf16 = reinterpret_cast<const __nv_bfloat16*>(dw16.ptr);
    }
    p.y = reinterpret_cast<__nv_bfloat16*>(dy.ptr);
    p.experts = experts, p.n = n, p.k = k, p.w_stride = ws, p.scale_stride = sstride;
    p.max_rows = rows + c.extra_max_rows;
    p.tile_rows = tr;
    p.tile_k = tk;
    const absl::Status st = cuda::GroupedFp8Gemm(p, nullptr);
    ASSERT_TRUE(st.ok()) << c.name << ": " << st;
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess) << c.name;
    const std::vector<uint16_t> got = dy.Download((rows + slack) * n);
    double num = 0, den = 0;
    int64_t bad = 0, touched = 0;
    for (int64_t i = 0; i < rows * n; ++i) {
      const double g = Bf16ToFloat(got[i]);
      if (!std::isfinite(g)) ++bad;
      num += (g - want[i]) * (g - want[i]);
      den += want[i] * want[i];
    }
    for (int64_t i = rows * n; i < (rows + slack) * n; ++i) touched += got[i] != 0xffff;
    const double rel = rows > 0 ? std::sqrt(num / den) : 0.0;
    const int used = tr ? tr : cuda::GroupedFp8GemmTileRows(p.max_rows, experts);
    std::printf(
        "[ cuda ] grouped gemm %-14s %s n=%ld k=%ld w_stride=%ld rows=%ld tile %dx%d: rel L2 "
        "%.3g\n",
        c.name.c_str(), c.fp8 ? "fp8 " : "bf16", static_cast<long>(n), static_cast<long>(k),
        static_cast<long>(ws), static_cast<long>(rows), used,
        tk ? tk : cuda::GroupedFp8GemmTileK(used), rel);
    EXPECT_EQ(bad, 0) << c.name << " tile " << tr << "x" << tk << ": non-finite outputs";
    EXPECT_EQ(touched, 0) << c.name << " tile " << tr << "x" << tk << ": wrote past the last row";
    EXPECT_LE(rel, kBound) << c.name << " tile " << tr << "x" << tk;
  }
}

// FP8 × FP8: x quantised on the device, then the GEMM against sum_kb x_scale · w_scale · (codes ·
// codes) in double from the downloaded codes and scales: the same quantised function.
void RunFp8Case(const GemmCase& c, const std::vector<int>& tile_rows, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> ud(0.0f, 1.0f);
  const int64_t experts = static_cast<int64_t>(c.rows.size()), n = c.n, k = c.k, ws = c.w_stride;
  const int64_t nb = (n + 127) / 128, kb = (k + 127) / 128, sstride = (kb + 3) / 4 * 4;
  const int64_t xstride = (k + 15) / 16 * 16 + 16, xsstride = kb + 1;  // both with slack
  std::vector<int32_t> offsets(experts + 1, 0);
  for (int64_t e = 0; e < experts; ++e) offsets[e + 1] = offsets[e] + c.rows[e];
  const int64_t rows = offsets.back(), slack = 7;

  std::vector<uint16_t> x(std::max<int64_t>(rows, 1) * k);
  for (size_t i = 0; i < x.size(); ++i) x[i] = FloatToBf16(nd(rng) * (i % 97 == 0 ? 20.0f : 1.0f));
  // One all-zero 128-group (scale floor, zero codes) where there is room.
  if (rows > 1 && k >= 128)
    for (int64_t col = 0; col < 128; ++col) x[1 * k + col] = 0;
  std::vector<uint8_t> w8(experts * n * ws, 0x7f);
  std::vector<float> scales(experts * nb * sstride, std::nanf(""));
  for (float& sc : scales) sc = std::ldexp(1.0f + ud(rng), -static_cast<int>(rng() % 8) - 5);
  for (size_t i = 0; i < scales.size(); ++i)
    if (i % 7 == 3) scales[i] = 0.0f;
  for (int64_t e = 0; e < experts; ++e)
    for (int64_t r = 0; r < n; ++r)
      for (int64_t col = 0; col < k; ++col) {
        uint8_t code;
        do code = static_cast<uint8_t>(rng());
        while ((code & 0x7f) == 0x7f);
        w8[(e * n + r) * ws + col] = code;
      }

  DeviceBuffer<uint16_t> dx(x);
  DeviceBuffer<int32_t> doff(offsets);
  DeviceBuffer<uint8_t> dw8(w8);
  DeviceBuffer<float> ds(scales);
  // x_q holds max_rows rows (the wgmma kernel reads whole tiles up to max_rows): the ones past the
  // last expert's keep NaN codes and scales, which must not reach y.
  const int64_t qrows = std::max<int64_t>(rows + c.extra_max_rows, 1);
  DeviceBuffer<uint8_t> dq(qrows * xstride);
  DeviceBuffer<float> dxs(qrows * xsstride);
  ASSERT_EQ(cudaMemset(dq.ptr, 0x7f, qrows * xstride), cudaSuccess);  // NaN codes
  ASSERT_EQ(cudaMemset(dxs.ptr, 0xff, qrows * xsstride * 4), cudaSuccess);
  cuda::QuantizeRowsParams qp;
  qp.x = reinterpret_cast<const __nv_bfloat16*>(dx.ptr);
  qp.q = reinterpret_cast<__nv_fp8_e4m3*>(dq.ptr);
  qp.scales = dxs.ptr;
  qp.rows = rows, qp.k = k, qp.q_stride = xstride, qp.scale_stride = xsstride;
  ASSERT_TRUE(cuda::QuantizeRowsFp8Group128(qp, nullptr).ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  const std::vector<uint8_t> q = dq.Download(qrows * xstride);
  const std::vector<float> xs = dxs.Download(qrows * xsstride);
  {
    // The quantiser: codes × scale within e4m3's rounding of x; zero codes past k; positive
    // finite scales.
    double num = 0, den = 0;
    int64_t bad = 0;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t b = 0; b < kb; ++b) {
        const float sc = xs[r * xsstride + b];
        bad += !(sc > 0 && std::isfinite(sc));
      }
      for (int64_t col = 0; col < xstride; ++col) {
        const uint8_t code = q[r * xstride + col];
        if (col >= k) {
          bad += code != 0;
          continue;
        }
        const double v = Fp8E4M3ToFloat(code) * static_cast<double>(xs[r * xsstride + col / 128]);
        const double want = Bf16ToFloat(x[r * k + col]);
        num += (v - want) * (v - want), den += want * want;
      }
    }
    const double rel = rows > 0 ? std::sqrt(num / den) : 0.0;
    std::printf("[ cuda ] quantize rows %-14s k=%ld rows=%ld: rel L2 %.3g\n", c.name.c_str(),
                static_cast<long>(k), static_cast<long>(rows), rel);
    EXPECT_EQ(bad, 0) << c.name << ": bad scales or padding codes";
    EXPECT_LE(rel, 1.0 / 16) << c.name;
  }
  // The reference, over the experts' rows split among the host's threads (the R1 shapes are
  // billions of products); the codes decoded through a table.
  std::vector<double> want(rows * n, 0.0);
  double code_value[256];
  for (int v = 0; v < 256; ++v) code_value[v] = Fp8E4M3ToFloat(static_cast<uint8_t>(v));
  auto reference_rows = [&](int64_t expert, int32_t r_begin, int32_t r_end) {
    for (int32_t r = r_begin; r < r_end; ++r)
      for (int64_t j = 0; j < n; ++j) {
        double acc = 0;
        for (int64_t b = 0; b < kb; ++b) {
          double part = 0;
          const uint8_t* qr = &q[r * xstride];
          const uint8_t* wr = &w8[(expert * n + j) * ws];
          for (int64_t col = b * 128; col < std::min(k, b * 128 + 128); ++col)
            part += code_value[qr[col]] * code_value[wr[col]];
          acc += part * xs[r * xsstride + b] * scales[(expert * nb + j / 128) * sstride + b];
        }
        want[r * n + j] = acc;
      }
  };
  {
    std::vector<std::thread> pool;
    const int32_t chunk = 8;
    for (int64_t e = 0; e < experts; ++e)
      for (int32_t r = offsets[e]; r < offsets[e + 1]; r += chunk)
        pool.emplace_back(reference_rows, e, r, std::min(r + chunk, offsets[e + 1]));
    for (std::thread& t : pool) t.join();
  }

  DeviceBuffer<uint16_t> dy((rows + slack) * n);
  // Each tile on the wgmma kernel (where the shape allows it) and on the mma.sync one.
  for (int run = 0; run < 2 * static_cast<int>(tile_rows.size()); ++run) {
    const int tr = tile_rows[run / 2];
    const bool mma_sync = run % 2 == 1;
    ASSERT_EQ(cudaMemset(dy.ptr, 0xff, (rows + slack) * n * 2), cudaSuccess);
    cuda::GroupedFp8GemmParams p;
    p.mma_sync = mma_sync;
    p.x_q = reinterpret_cast<const __nv_fp8_e4m3*>(dq.ptr);
    p.x_scales = dxs.ptr;
    p.x_stride = xstride, p.x_scale_stride = xsstride;
    p.offsets = doff.ptr;
    p.w = reinterpret_cast<const __nv_fp8_e4m3*>(dw8.ptr);
    p.scales = ds.ptr;
    p.y = reinterpret_cast<__nv_bfloat16*>(dy.ptr);
    p.experts = experts, p.n = n, p.k = k, p.w_stride = ws, p.scale_stride = sstride;
    p.max_rows = rows + c.extra_max_rows;
    p.tile_rows = tr;
    const absl::Status st = cuda::GroupedFp8Gemm(p, nullptr);
    ASSERT_TRUE(st.ok()) << c.name << ": " << st;
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess) << c.name;
    const std::vector<uint16_t> got = dy.Download((rows + slack) * n);
    double num = 0, den = 0;
    int64_t bad = 0, touched = 0;
    for (int64_t i = 0; i < rows * n; ++i) {
      const double g = Bf16ToFloat(got[i]);
      if (!std::isfinite(g)) ++bad;
      num += (g - want[i]) * (g - want[i]);
      den += want[i] * want[i];
    }
    for (int64_t i = rows * n; i < (rows + slack) * n; ++i) touched += got[i] != 0xffff;
    const double rel = rows > 0 ? std::sqrt(num / den) : 0.0;
    std::printf(
        "[ cuda ] grouped gemm %-14s fp8xfp8 %s n=%ld k=%ld w_stride=%ld rows=%ld tile %d: rel "
        "L2 %.3g\n",
        c.name.c_str(), mma_sync ? "mma.sync" : "default ", static_cast<long>(n),
        static_cast<long>(k), static_cast<long>(ws), static_cast<long>(rows), tr, rel);
    const std::string what = c.name + " tile " + std::to_string(tr) + (mma_sync ? " mma.sync" : "");
    EXPECT_EQ(bad, 0) << what << ": non-finite outputs";
    EXPECT_EQ(touched, 0) << what << ": wrote past the last row";
    EXPECT_LE(rel, kBound) << what;
  }
}

const std::vector<int> kAllTiles = {0, 16, 32, 64, 128};

TEST(GroupedGemm, MixedRowCountsMatchCpu) {
  SKIP_WITHOUT_GPU();
  // 0, 1, 17 (not a tile multiple), 130 (two tiles of 128), 5 rows; k = 160 padded to 256 with NaN.
  RunCase({"mixed", 192, 160, 256, {0, 1, 17, 0, 130, 5}}, kAllTiles, 1);
  RunCase({"mixed", 192, 160, 168, {0, 1, 17, 0, 130, 5}, false}, kAllTiles, 2);
}

TEST(GroupedGemm, KCutInsideAChunkMatchesCpu) {
  SKIP_WITHOUT_GPU();
  // k = 200: the last 16-code chunk holds 8 codes past k (NaN here); n = 130: a 2-column tile.
  RunCase({"k%16=8", 130, 200, 208, {33, 0, 64}}, kAllTiles, 3);
  RunCase({"k%16=8", 130, 200, 200, {33, 0, 64}, false}, {0, 16, 128}, 4);
}

TEST(GroupedGemm, GoldenModelSizesMatchCpu) {
  SKIP_WITHOUT_GPU();
  // tests/golden/models: golden-a (hidden 192, moe_intermediate 48, 16 experts) and golden-b
  // (hidden 160, moe_intermediate 64, 8 experts), FP8 rows padded to 128 codes as the model loads
  // them.
  std::mt19937_64 rng(5);
  auto rows = [&](int experts, int most) {
    std::vector<int32_t> r(experts);
    for (auto& v : r) v = static_cast<int32_t>(rng() % (most + 1));
    return r;
  };
  RunCase({"golden-a gate", 48, 192, 256, rows(16, 80)}, {0, 16, 64}, 6);
  RunCase({"golden-a down", 192, 48, 128, rows(16, 80)}, {0, 16, 64}, 7);
  RunCase({"golden-b gate", 64, 160, 256, rows(8, 160)}, {0, 32, 128}, 8);
  RunCase({"golden-b down", 160, 64, 128, rows(8, 160)}, {0, 32, 128}, 9);
  RunCase({"golden-a bf16", 48, 192, 192, rows(16, 80), false}, {0}, 10);
  RunCase({"golden-b bf16", 160, 64, 64, rows(8, 160), false}, {0}, 11);
}

TEST(GroupedGemm, LargerTilesMatchCpu) {
  SKIP_WITHOUT_GPU();
  // Several column tiles and k tiles; 128, 129 and 255 rows around the largest tile.
  RunCase({"large", 384, 1024, 1024, {128, 129, 255, 64}}, kAllTiles, 12);
  // A generous max_rows (more blocks than tiles: the surplus ones must do nothing).
  RunCase({"loose bound", 256, 512, 512, {3, 0, 40, 1, 0, 0, 9, 100}, true, 1000}, {0, 16, 128},
          13);
}

TEST(GroupedGemm, NoRowsWritesNothing) {
  SKIP_WITHOUT_GPU();
  RunCase({"empty", 256, 256, 256, {0, 0, 0}, true, 64}, {0, 128}, 14);
}

TEST(GroupedGemm, RejectsUnsupportedShapes) {
  // The launcher's checks run before any device work, so this runs without a GPU too.
  auto* fake = reinterpret_cast<__nv_bfloat16*>(256);
  cuda::GroupedFp8GemmParams p;
  p.x = fake, p.y = fake, p.offsets = reinterpret_cast<const int32_t*>(256);
  p.w = reinterpret_cast<const __nv_fp8_e4m3*>(256), p.scales = reinterpret_cast<const float*>(256);
  p.experts = 4, p.n = 64, p.k = 128, p.w_stride = 128, p.scale_stride = 1, p.max_rows = 8;
  auto rejected = [&](cuda::GroupedFp8GemmParams q) {
    return absl::IsInvalidArgument(cuda::GroupedFp8Gemm(q, nullptr));
  };
  auto q = p;
  q.k = 20, q.w_stride = 32;  // k % 8 != 0
  EXPECT_TRUE(rejected(q));
  q = p, q.n = 33;
  EXPECT_TRUE(rejected(q));
  q = p, q.w_stride = 136;  // FP8 rows not a multiple of 16 bytes
  EXPECT_TRUE(rejected(q));
  q = p, q.tile_rows = 48;
  EXPECT_TRUE(rejected(q));
  q = p, q.tile_k = 32;
  EXPECT_TRUE(rejected(q));
  q = p, q.scale_stride = 0;
  EXPECT_TRUE(rejected(q));
  q = p, q.w_bf16 = fake;  // both weight kinds
  EXPECT_TRUE(rejected(q));
  q = p, q.x = reinterpret_cast<__nv_bfloat16*>(258);
  EXPECT_TRUE(rejected(q));
}

TEST(GroupedGemm, Fp8xFp8MatchesCpu) {
  SKIP_WITHOUT_GPU();
  // 0, 1, 17, 130, 5 rows; k = 160 (a partial last scale block) with NaN codes in [k, w_stride).
  RunFp8Case({"mixed", 192, 160, 256, {0, 1, 17, 0, 130, 5}}, kAllTiles, 21);
  // Several column and k tiles, odd row counts around the tiles.
  RunFp8Case({"large", 384, 1024, 1024, {128, 129, 255, 63}}, kAllTiles, 22);
  // The golden models' expert sizes (k = 48, 64, 160, 192; n = 48 .. 192), loose max_rows.
  RunFp8Case({"golden-a gate", 48, 192, 256, {7, 0, 33, 80, 1}}, {0, 16, 64}, 23);
  RunFp8Case({"golden-a down", 192, 48, 128, {7, 0, 33, 80, 1}, true, 100}, {0, 16, 64}, 24);
  RunFp8Case({"golden-b down", 160, 64, 128, {3, 160, 0, 41}}, {0, 32, 128}, 25);
  RunFp8Case({"empty", 256, 256, 256, {0, 0, 0}, true, 64}, {0, 128}, 26);
  // 0, 1, 17, 130, 300 rows (several tiles of every height); max_rows past the rows.
  RunFp8Case({"counts", 256, 384, 384, {0, 1, 17, 130, 300}, true, 40}, kAllTiles, 27);
  // n not a multiple of 8: the mma.sync kernel in both runs.
  RunFp8Case({"odd n", 130, 256, 272, {5, 17, 0, 40}}, {0, 16}, 28);
}

TEST(GroupedGemm, Fp8xFp8R1ShapesMatchCpu) {
  SKIP_WITHOUT_GPU();
  // R1's expert projections: gate/up 4096 x 7168 (both halves of the 2 x 2048 product) and
  // down 7168 x 2048, a few experts.
  RunFp8Case({"r1 gate-up", 4096, 7168, 7168, {1, 130, 0, 17}}, {0, 16, 128}, 31);
  RunFp8Case({"r1 down", 7168, 2048, 2048, {300, 0, 1, 17}, true, 9}, {0, 32, 64}, 32);
}

TEST(GroupedGemm, Fp8xFp8RejectsUnsupportedShapes) {
  auto* fake8 = reinterpret_cast<const __nv_fp8_e4m3*>(256);
  auto* fakef = reinterpret_cast<const float*>(256);
  cuda::GroupedFp8GemmParams p;
  p.x_q = fake8, p.x_scales = fakef, p.y = reinterpret_cast<__nv_bfloat16*>(256);
  p.offsets = reinterpret_cast<const int32_t*>(256), p.w = fake8, p.scales = fakef;
  p.experts = 4, p.n = 64, p.k = 128, p.w_stride = 128, p.scale_stride = 1, p.max_rows = 8;
  p.x_stride = 128, p.x_scale_stride = 1;
  auto rejected = [&](cuda::GroupedFp8GemmParams q) {
    return absl::IsInvalidArgument(cuda::GroupedFp8Gemm(q, nullptr));
  };
  auto q = p;
  q.k = 200, q.w_stride = 208, q.x_stride = 208, q.scale_stride = q.x_scale_stride = 2;
  EXPECT_TRUE(rejected(q));  // k % 16 != 0: the caller takes the bf16 path
  q = p, q.x_stride = 136;
  EXPECT_TRUE(rejected(q));
  q = p, q.x_scale_stride = 0;
  EXPECT_TRUE(rejected(q));
  q = p, q.w = nullptr, q.scales = nullptr, q.w_bf16 = reinterpret_cast<const __nv_bfloat16*>(256);
  EXPECT_TRUE(rejected(q));
  q = p, q.tile_rows = 48;
  EXPECT_TRUE(rejected(q));
  cuda::QuantizeRowsParams qp;
  qp.x = reinterpret_cast<const __nv_bfloat16*>(256), qp.q = reinterpret_cast<__nv_fp8_e4m3*>(256);
  qp.scales = reinterpret_cast<float*>(256), qp.rows = 4, qp.k = 128, qp.q_stride = 120;
  qp.scale_stride = 1;
  EXPECT_TRUE(absl::IsInvalidArgument(cuda::QuantizeRowsFp8Group128(qp, nullptr)));
}

}  // namespace
}  // namespace r1

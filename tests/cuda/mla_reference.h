// One MLA decode case on the GPU against a double-precision CPU reference over the same bf16
// cache values, shared by the MLA tests (kernels_test.cc, mla_wgmma_test.cc). Rows use disjoint
// pages handed out in a scrambled order; row r sees ctx - r positions (at least 1); every cache
// value no visible position reads (the rest of the last page, unused pages) is NaN, so a kernel
// that lets one into its sums fails.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "common/dtype.h"
#include "gtest/gtest.h"
#include "kernels/cuda/mla_decode.h"
#include "tests/cuda/cuda_test_util.h"

namespace r1::cuda_testing {

struct MlaCase {
  int64_t rows, heads, kvr, rope, ctx, block;
  float q_scale = 0.05f;
  int64_t capacity = 0;  // tokens the block table holds (>= ctx; 0: just ctx)
};

inline const char* MlaAlgoName(cuda::MlaDecodeParams::Algo algo) {
  switch (algo) {
    case cuda::MlaDecodeParams::Algo::kExact:
      return "exact";
    case cuda::MlaDecodeParams::Algo::kTensorCore:
      return "tensor-core";
    case cuda::MlaDecodeParams::Algo::kMmaSync:
      return "mma.sync";
    case cuda::MlaDecodeParams::Algo::kWgmma:
      return "wgmma";
  }
  return "?";
}

// Runs the case with `algo` and returns the rel L2 of the output against the reference (1e30 when
// it is NaN).
inline double RunMlaCase(const MlaCase& c, cuda::MlaDecodeParams::Algo algo, bool with_workspace) {
  std::mt19937_64 rng(5 + c.rows * 7 + c.ctx);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int64_t latent = c.kvr + c.rope,
                blocks_per_row = (std::max(c.ctx, c.capacity) + c.block - 1) / c.block;
  const int64_t nblocks = blocks_per_row * c.rows + 3;
  std::vector<uint16_t> cache(nblocks * c.block * latent);
  for (auto& v : cache) v = FloatToBf16(nd(rng));
  std::vector<int32_t> tables(c.rows * blocks_per_row), lens(c.rows);
  for (int64_t r = 0; r < c.rows; ++r) {
    lens[r] = static_cast<int32_t>(std::max<int64_t>(1, c.ctx - r));
    for (int64_t b = 0; b < blocks_per_row; ++b)
      tables[r * blocks_per_row + b] =
          static_cast<int32_t>((r * blocks_per_row + (b * 5) % blocks_per_row) + 2);
  }
  auto slot = [&](int64_t r, int64_t j) {  // cache offset of row r's position j
    return (tables[r * blocks_per_row + j / c.block] * c.block + j % c.block) * latent;
  };
  std::vector<char> read(nblocks * c.block, 0);
  for (int64_t r = 0; r < c.rows; ++r)
    for (int32_t j = 0; j < lens[r]; ++j) read[slot(r, j) / latent] = 1;
  for (size_t s = 0; s < read.size(); ++s)
    if (!read[s]) std::fill_n(cache.begin() + s * latent, latent, uint16_t{0x7fc0});
  std::vector<float> ql(c.rows * c.heads * c.kvr), qp(c.rows * c.heads * c.rope);
  for (auto& v : ql) v = nd(rng) * c.q_scale;
  for (auto& v : qp) v = nd(rng) * c.q_scale;
  const float scale = 0.1352f;
  std::vector<double> want(c.rows * c.heads * c.kvr, 0.0);
  for (int64_t r = 0; r < c.rows; ++r)
    for (int64_t h = 0; h < c.heads; ++h) {
      std::vector<double> sc(lens[r]);
      double mx = -1e300;
      for (int32_t j = 0; j < lens[r]; ++j) {
        const uint16_t* cj = cache.data() + slot(r, j);
        double s = 0;
        for (int64_t d = 0; d < c.kvr; ++d)
          s += ql[(r * c.heads + h) * c.kvr + d] * Bf16ToFloat(cj[d]);
        for (int64_t d = 0; d < c.rope; ++d)
          s += qp[(r * c.heads + h) * c.rope + d] * Bf16ToFloat(cj[c.kvr + d]);
        sc[j] = s * scale;
        mx = std::max(mx, sc[j]);
      }
      double sum = 0;
      for (auto& v : sc) sum += v = std::exp(v - mx);
      for (int32_t j = 0; j < lens[r]; ++j) {
        const uint16_t* cj = cache.data() + slot(r, j);
        for (int64_t d = 0; d < c.kvr; ++d)
          want[(r * c.heads + h) * c.kvr + d] += sc[j] / sum * Bf16ToFloat(cj[d]);
      }
    }
  DeviceBuffer<uint16_t> dc(cache);
  DeviceBuffer<int32_t> dt(tables), dlen(lens);
  DeviceBuffer<float> dql(ql), dqp(qp);
  DeviceBuffer<float> out(want.size());
  const size_t ws_bytes = cuda::MlaDecodeWorkspaceBytes(c.heads, c.kvr);
  DeviceBuffer<float> ws(with_workspace ? ws_bytes / 4 : 1);
  // NaN everywhere first: every output element must be written.
  EXPECT_EQ(cudaMemset(out.ptr, 0xff, want.size() * 4), cudaSuccess);
  cuda::MlaDecodeParams p;
  p.q_lat = dql.ptr;
  p.q_pe = dqp.ptr;
  p.cache = reinterpret_cast<__nv_bfloat16*>(dc.ptr);
  p.block_stride = c.block * latent;
  p.block_tables = dt.ptr;
  p.context_lens = dlen.ptr;
  p.o_lat = out.ptr;
  p.rows = c.rows;
  p.heads = c.heads;
  p.kv_lora_rank = c.kvr;
  p.rope_dim = c.rope;
  p.block_size = c.block;
  p.max_blocks = blocks_per_row;
  p.softmax_scale = scale;
  p.algo = algo;
  if (with_workspace) {
    p.workspace = ws.ptr;
    p.workspace_bytes = ws_bytes;
  }
  absl::Status st = cuda::MlaDecode(p, nullptr);
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  auto got = out.Download(want.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    num += (got[i] - want[i]) * (got[i] - want[i]);
    den += want[i] * want[i];
  }
  const double err = std::sqrt(num / den);
  std::printf(
      "[ cuda ] mla decode %s%s rows=%ld heads=%ld latent=%ld+%ld ctx=%ld block=%ld q_scale=%g rel "
      "L2 %.3g\n",
      MlaAlgoName(algo), with_workspace ? "" : " (no workspace)", static_cast<long>(c.rows),
      static_cast<long>(c.heads), static_cast<long>(c.kvr), static_cast<long>(c.rope),
      static_cast<long>(c.ctx), static_cast<long>(c.block), c.q_scale, err);
  // On failure, where the error sits: output half x 16-head band of each 64; the first bad values.
  if (!(err <= 1e-2)) {
    double bn[2][4] = {}, bd[2][4] = {};
    int shown = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      const int64_t d = static_cast<int64_t>(i) % c.kvr,
                    h = static_cast<int64_t>(i) / c.kvr % c.heads;
      const int half = d >= c.kvr / 2, band = static_cast<int>(h % 64 / 16);
      const double e = got[i] - want[i];
      bn[half][band] += e * e;
      bd[half][band] += want[i] * want[i];
      if (!(std::fabs(e) <= 0.05 * std::fabs(want[i]) + 1e-3) && shown < 4) {
        std::printf("  row %ld head %ld dim %ld: got %g want %g\n",
                    static_cast<long>(i / c.kvr / c.heads), static_cast<long>(h),
                    static_cast<long>(d), got[i], want[i]);
        ++shown;
      }
    }
    for (int half = 0; half < 2; ++half)
      std::printf(
          "  dims %s half, heads %%64 in [0,16) [16,32) [32,48) [48,64): rel L2 %.3g %.3g %.3g "
          "%.3g\n",
          half ? "upper" : "lower", std::sqrt(bn[half][0] / bd[half][0]),
          std::sqrt(bn[half][1] / bd[half][1]), std::sqrt(bn[half][2] / bd[half][2]),
          std::sqrt(bn[half][3] / bd[half][3]));
  }
  return std::isnan(err) ? 1e30 : err;
}

}  // namespace r1::cuda_testing

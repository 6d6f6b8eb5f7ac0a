// The wgmma MLA decode kernel (kernels/cuda/mla_decode_wgmma.cu) against the double-precision
// reference (mla_reference.h): q and the softmax weights in bf16 (~2^-9 relative per product),
// float32 accumulation, so the bound is the mma.sync kernel's, rel L2 1e-2. Skipped without a GPU.
#include "gtest/gtest.h"
#include "kernels/cuda/mla_decode.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/cuda/mla_reference.h"

namespace r1 {
namespace {

using Algo = cuda::MlaDecodeParams::Algo;
using cuda_testing::MlaCase;
using cuda_testing::RunMlaCase;

// R1's latent (512 + 64). Contexts 1, 61..65 (a partial tile, exactly one, one past), 66..129,
// 150, 200, 301, 333, 1001, 2001, 4096 and 4200; pages of 1, 8, 16, 24, 64 and 128 slots (bulk
// copies for 8, 16, 64 and 128, cp.async for 1 and 24) in a scrambled order (table sizes prime
// to the scramble's step 5), the unread cache NaN; 64, 128 and 192 heads; 1 to 64 rows; peaked
// softmax (larger q); the split context (few rows, long context) including a short context in a
// long table, whose later slices are empty; and without the workspace (never split).
TEST(CudaMlaWgmma, MatchesCpu) {
  SKIP_WITHOUT_GPU();
  const MlaCase cases[] = {
      {1, 128, 512, 64, 1, 64},          {3, 128, 512, 64, 63, 64},
      {2, 128, 512, 64, 65, 64},         {2, 64, 512, 64, 200, 16},
      {3, 128, 512, 64, 1001, 8},        {2, 192, 512, 64, 301, 1},
      {64, 128, 512, 64, 129, 64},       {1, 128, 512, 64, 4200, 64},
      {3, 128, 512, 64, 4096, 64},       {1, 128, 512, 64, 2001, 16},
      {2, 128, 512, 64, 1000, 64, 0.5f}, {1, 128, 512, 64, 30, 64, 0.05f, 4096},
      {2, 128, 512, 64, 333, 128},       {2, 128, 512, 64, 150, 24}};
  for (const MlaCase& c : cases) {
    EXPECT_LE(RunMlaCase(c, Algo::kWgmma, true), 1e-2)
        << "rows=" << c.rows << " heads=" << c.heads << " ctx=" << c.ctx << " block=" << c.block;
  }
  EXPECT_LE(RunMlaCase({1, 128, 512, 64, 4096, 64}, Algo::kWgmma, false), 1e-2);
}

// The bulk-copy path's edges: contexts ending in either half of a tile (33, 97, 96) and at each
// stage parity (190..193 over rows), stages reused many times (3000), pages of 32 and 8 slots
// (each column chunk's mbarrier counting every page's box), a peaked softmax (the running max
// moving within a tile), 64 and 192 heads, split and unsplit.
TEST(CudaMlaWgmma, BulkPathEdgesMatchCpu) {
  SKIP_WITHOUT_GPU();
  const MlaCase cases[] = {
      {2, 128, 512, 64, 33, 64},         {2, 128, 512, 64, 97, 64},
      {4, 128, 512, 64, 193, 64},        {3, 64, 512, 64, 3000, 32},
      {2, 192, 512, 64, 700, 8},         {4, 128, 512, 64, 1500, 64, 0.5f},
      {1, 128, 512, 64, 4096, 64, 1.0f}, {16, 128, 512, 64, 2048, 128}};
  for (const MlaCase& c : cases) {
    EXPECT_LE(RunMlaCase(c, Algo::kWgmma, true), 1e-2)
        << "rows=" << c.rows << " heads=" << c.heads << " ctx=" << c.ctx << " block=" << c.block;
  }
  EXPECT_LE(RunMlaCase({2, 128, 512, 64, 96, 64}, Algo::kWgmma, false), 1e-2);
  EXPECT_LE(RunMlaCase({3, 128, 512, 64, 1000, 16, 0.5f}, Algo::kWgmma, false), 1e-2);
}

// kTensorCore on R1's shape takes the kernel MlaDecode's dispatch prefers; shapes the wgmma
// kernel cannot take (heads not a multiple of 64, other latent sizes) fall back to mma.sync.
TEST(CudaMlaWgmma, DispatchAndFallbackMatchCpu) {
  SKIP_WITHOUT_GPU();
  EXPECT_LE(RunMlaCase({2, 128, 512, 64, 777, 64}, Algo::kTensorCore, true), 1e-2);
  EXPECT_LE(RunMlaCase({8, 128, 512, 64, 250, 64}, Algo::kTensorCore, true), 1e-2);
  EXPECT_LE(RunMlaCase({2, 16, 512, 64, 250, 64}, Algo::kWgmma, true), 1e-2);
  EXPECT_LE(RunMlaCase({1, 4, 160, 32, 70, 8}, Algo::kWgmma, true), 1e-2);
}

// The bulk-copy (TMA) path serves pages of 8, 16, 64 and 128 slots; others (1, 24) take cp.async.
// Both run in MatchesCpu (pages of 1 and 8, 16, 64).
TEST(CudaMlaWgmma, BulkCopiesForPagesThatTile) {
  SKIP_WITHOUT_GPU();
  cuda_testing::DeviceBuffer<uint16_t> cache(size_t{128} * 576);
  cuda::MlaDecodeParams p;
  p.cache = reinterpret_cast<__nv_bfloat16*>(cache.ptr);
  p.kv_lora_rank = 512;
  p.rope_dim = 64;
  for (int64_t bs : {1, 8, 16, 24, 64, 128}) {
    p.block_size = bs;
    p.block_stride = bs * 576;
    const bool want = bs == 8 || bs == 16 || bs == 64 || bs == 128;
    EXPECT_EQ(cuda::internal::MlaWgmmaBulkCopies(p), want) << "block_size " << bs;
  }
}

}  // namespace
}  // namespace r1

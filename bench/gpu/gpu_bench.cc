// GPU kernel benchmarks at DeepSeek-R1's real dimensions, each figure against its floor.
//   build-gpu/bench/gpu/bench_gpu [--quick]
// Floors: the device-to-device copy bandwidth measured in the same run (bytes that must move /
// measured HBM bandwidth) and the dense FP8 / BF16 tensor rate given below (flops / rate).
// Reference in the same command: bench/gpu/torch_ref.py (PyTorch) — see bench/README.md.
// Prints one line per case: µs, TFLOP/s, GB/s, floor µs, measured/floor.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "kernels/cuda/fp8_gemm.h"
#include "kernels/cuda/grouped_gemv.h"
#include "kernels/cuda/mla_decode.h"

namespace {

// H100 SXM dense tensor rates (no sparsity), from NVIDIA's data sheet.
constexpr double kFp8Tflops = 1979.0;
constexpr double kBf16Tflops = 989.0;

#define CHECK_CUDA(x)                                                                   \
  do {                                                                                  \
    cudaError_t e_ = (x);                                                               \
    if (e_ != cudaSuccess) {                                                            \
      std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); \
      std::exit(1);                                                                     \
    }                                                                                   \
  } while (0)

void* Alloc(size_t bytes, int fill = 0) {
  void* p = nullptr;
  CHECK_CUDA(cudaMalloc(&p, std::max<size_t>(bytes, 16)));
  CHECK_CUDA(cudaMemset(p, fill, std::max<size_t>(bytes, 16)));
  return p;
}

// Median µs of `reps` launches of f after warm-up, timed with events.
template <typename F>
double TimeUs(F&& f, int reps = 20) {
  for (int i = 0; i < 3; ++i) f();
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<float> ms(reps);
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  for (int i = 0; i < reps; ++i) {
    cudaEventRecord(a);
    f();
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    cudaEventElapsedTime(&ms[i], a, b);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(ms.begin(), ms.end());
  return ms[reps / 2] * 1000.0;
}

double MeasureHbmGBs() {
  const size_t bytes = size_t{4} << 30;
  void* src = Alloc(bytes);
  void* dst = Alloc(bytes);
  const double us = TimeUs([&] { cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice); }, 10);
  cudaFree(src);
  cudaFree(dst);
  return 2.0 * bytes / (us * 1e-6) / 1e9;  // read + write
}

void Line(const char* what, double us, double flops, double bytes, double hbm, double rate_tflops) {
  const double floor_us = std::max(bytes / (hbm * 1e9), flops / (rate_tflops * 1e12)) * 1e6;
  std::printf("%-44s %9.1f us %8.1f TFLOP/s %7.0f GB/s | floor %8.1f us | measured/floor %5.2f\n", what, us,
              flops / (us * 1e-6) / 1e12, bytes / (us * 1e-6) / 1e9, floor_us, us / floor_us);
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::strcmp(argv[1], "--quick") == 0;
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  const double hbm = MeasureHbmGBs();
  std::printf("device %s, %d SMs; measured device copy %.0f GB/s (the bandwidth floor); tensor rates FP8 %.0f, "
              "BF16 %.0f TFLOP/s\n\n", prop.name, prop.multiProcessorCount, hbm, kFp8Tflops, kBf16Tflops);

  // 1. FP8 block-scaled GEMM (cuBLASLt) at R1's linear shapes: y[M, N] = x[M, K] · W[N, K]^T.
  auto runner = r1::cuda::GemmRunner::Create();
  if (!runner.ok()) return 1;
  struct Shape { const char* name; int64_t n, k; };
  const Shape shapes[] = {{"q_a_proj", 1536, 7168},  {"q_b_proj", 24576, 1536}, {"kv_a_proj", 576, 7168},
                          {"kv_b_proj", 32768, 512}, {"o_proj", 7168, 16384},   {"expert gate/up", 2048, 7168},
                          {"expert down", 7168, 2048}};
  std::vector<int64_t> ms = quick ? std::vector<int64_t>{1, 64, 4096} : std::vector<int64_t>{1, 8, 64, 256, 4096};
  std::printf("FP8 GEMM (cuBLASLt block-scaled, 1x128 activation / 128x128 weight scales)\n");
  for (const Shape& s : shapes) {
    for (int64_t m : ms) {
      const int64_t mp = r1::cuda::Fp8PaddedRows(m), kb = (s.k + 127) / 128, stride = r1::cuda::Fp8ScaleStride(s.k);
      auto* x = static_cast<__nv_fp8_e4m3*>(Alloc(mp * s.k, 0x38));
      auto* xs = static_cast<float*>(Alloc(mp * kb * 4));
      auto* w = static_cast<__nv_fp8_e4m3*>(Alloc(s.n * s.k, 0x38));
      auto* ws = static_cast<float*>(Alloc(((s.n + 127) / 128) * stride * 4));
      auto* y = static_cast<__nv_bfloat16*>(Alloc(mp * s.n * 2));
      const double us = TimeUs([&] { (void)(*runner)->Fp8({x, xs, w, ws, y, m, s.n, s.k}, nullptr); });
      const double flops = 2.0 * m * s.n * s.k, bytes = double(s.n) * s.k + double(m) * s.k + 2.0 * m * s.n;
      char name[96];
      std::snprintf(name, sizeof name, "fp8 %-15s M=%-5ld N=%-6ld K=%ld", s.name, static_cast<long>(m),
                    static_cast<long>(s.n), static_cast<long>(s.k));
      Line(name, us, flops, bytes, hbm, kFp8Tflops);
      cudaFree(x), cudaFree(xs), cudaFree(w), cudaFree(ws), cudaFree(y);
    }
  }

  // 2. MLA decode (absorbed) over the paged bf16 latent cache: 128 heads, latent 512 + 64.
  std::printf("\nMLA decode attention (absorbed form, paged bf16 latent cache, block 64, 128 heads)\n");
  const int64_t kvr = 512, rope = 64, lat = kvr + rope, heads = 128, block = 64;
  for (int64_t batch : quick ? std::vector<int64_t>{1, 64} : std::vector<int64_t>{1, 8, 64, 256}) {
    for (int64_t ctx : quick ? std::vector<int64_t>{4096} : std::vector<int64_t>{1024, 4096, 32768}) {
      if (batch * ctx > 256 * 8192) continue;  // keep the cache under ~5 GB
      const int64_t blocks_per = (ctx + block - 1) / block, blocks = blocks_per * batch;
      auto* cache = static_cast<__nv_bfloat16*>(Alloc(blocks * block * lat * 2));
      std::vector<int32_t> table(batch * blocks_per), lens(batch, static_cast<int32_t>(ctx));
      for (size_t i = 0; i < table.size(); ++i) table[i] = static_cast<int32_t>(i);
      auto* dt = static_cast<int32_t*>(Alloc(table.size() * 4));
      auto* dl = static_cast<int32_t*>(Alloc(lens.size() * 4));
      cudaMemcpy(dt, table.data(), table.size() * 4, cudaMemcpyHostToDevice);
      cudaMemcpy(dl, lens.data(), lens.size() * 4, cudaMemcpyHostToDevice);
      auto* ql = static_cast<float*>(Alloc(batch * heads * kvr * 4));
      auto* qp = static_cast<float*>(Alloc(batch * heads * rope * 4));
      auto* ol = static_cast<float*>(Alloc(batch * heads * kvr * 4));
      r1::cuda::MlaDecodeParams p;
      p.q_lat = ql, p.q_pe = qp, p.cache = cache, p.block_stride = block * lat, p.block_tables = dt;
      p.context_lens = dl, p.o_lat = ol, p.rows = batch, p.heads = heads, p.kv_lora_rank = kvr, p.rope_dim = rope;
      p.block_size = block, p.max_blocks = blocks_per, p.softmax_scale = 0.1f;
      const double us = TimeUs([&] { (void)r1::cuda::MlaDecode(p, nullptr); }, 10);
      const double bytes = double(batch) * ctx * lat * 2, flops = 4.0 * batch * heads * ctx * lat;
      char name[96];
      std::snprintf(name, sizeof name, "mla decode batch=%-4ld ctx=%ld", static_cast<long>(batch), static_cast<long>(ctx));
      Line(name, us, flops, bytes, hbm, kBf16Tflops);
      cudaFree(cache), cudaFree(dt), cudaFree(dl), cudaFree(ql), cudaFree(qp), cudaFree(ol);
    }
  }

  // 3. Routed experts for a decode batch: grouped FP8 GEMV (gate) over 256 experts, 8 per token.
  std::printf("\nMoE routed experts, grouped FP8 GEMV, gate projection (256 experts of 2048 x 7168)\n");
  const int64_t E = 256, n = 2048, k = 7168, topk = 8;
  auto* w = static_cast<__nv_fp8_e4m3*>(Alloc(E * n * k, 0x38));
  auto* sc = static_cast<float*>(Alloc(E * (n / 128) * (k / 128) * 4));
  for (int64_t tokens : quick ? std::vector<int64_t>{1, 64} : std::vector<int64_t>{1, 8, 64, 256}) {
    std::mt19937 rng(1);
    std::vector<int32_t> count(E, 0);
    for (int64_t t = 0; t < tokens; ++t) {
      std::vector<int32_t> ids(E);
      for (int32_t i = 0; i < E; ++i) ids[i] = i;
      std::shuffle(ids.begin(), ids.end(), rng);
      for (int64_t j = 0; j < topk; ++j) ++count[ids[j]];
    }
    std::vector<int32_t> off(E + 1, 0);
    int64_t touched = 0;
    for (int64_t e = 0; e < E; ++e) {
      off[e + 1] = off[e] + count[e];
      touched += count[e] > 0;
    }
    auto* doff = static_cast<int32_t*>(Alloc((E + 1) * 4));
    cudaMemcpy(doff, off.data(), off.size() * 4, cudaMemcpyHostToDevice);
    auto* x = static_cast<__nv_bfloat16*>(Alloc(tokens * topk * k * 2));
    auto* y = static_cast<__nv_bfloat16*>(Alloc(tokens * topk * n * 2));
    r1::cuda::GroupedFp8GemvParams gp;
    gp.x = x, gp.offsets = doff, gp.w = w, gp.scales = sc, gp.y = y, gp.experts = E, gp.n = n, gp.k = k;
    gp.w_stride = k, gp.scale_stride = k / 128;
    const double us = TimeUs([&] { (void)r1::cuda::GroupedFp8Gemv(gp, nullptr); }, 10);
    const double bytes = double(touched) * n * k, flops = 2.0 * tokens * topk * n * k;
    char name[96];
    std::snprintf(name, sizeof name, "moe gate tokens=%-4ld experts touched=%ld", static_cast<long>(tokens),
                  static_cast<long>(touched));
    Line(name, us, flops, bytes, hbm, kFp8Tflops);
    cudaFree(doff), cudaFree(x), cudaFree(y);
  }
  cudaFree(w), cudaFree(sc);
  return 0;
}

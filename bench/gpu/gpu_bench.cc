// GPU kernel benchmarks at DeepSeek-R1's real dimensions, each figure against its floor.
//   build-gpu/bench/gpu/bench_gpu [--quick] [--only gemm|gemv|absorb|mla|moelayer|moe] [--mla BATCH CTX] [--moe-tokens N]
// Floors: the device-to-device copy bandwidth measured in the same run (bytes that must move /
// measured HBM bandwidth) and the dense FP8 / BF16 tensor rate given below (flops / rate).
// Reference in the same command: bench/gpu/torch_ref.py (PyTorch) — see bench/README.md.
// Prints one line per case: µs, TFLOP/s, GB/s, floor µs, measured/floor.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <random>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "kernels/cuda/absorb_fp8.h"
#include "kernels/cuda/fp8_gemm.h"
#include "kernels/cuda/grouped_gemm.h"
#include "kernels/cuda/dense_gemv.h"
#include "kernels/cuda/grouped_gemv.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/mla_decode.h"
#include "kernels/cuda/model_ops.h"
#include "kernels/cuda/moe_permute.h"
#include "kernels/cuda/router.h"

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

// Random finite e4m3 codes (bit 6 clear: no NaN, |v| < 2): products are timed on varied data, not
// on constants (tensor cores run measurably faster on zeros and repeated values).
void* AllocFp8Random(size_t bytes, uint32_t seed) {
  void* p = Alloc(bytes);
  std::vector<uint8_t> pat(std::min<size_t>(bytes, size_t{16} << 20));
  std::mt19937 rng(seed);
  for (auto& b : pat) b = static_cast<uint8_t>(rng()) & 0xbf;
  for (size_t off = 0; off < bytes; off += pat.size())
    CHECK_CUDA(cudaMemcpy(static_cast<char*>(p) + off, pat.data(), std::min(bytes - off, pat.size()), cudaMemcpyHostToDevice));
  return p;
}
void* AllocF32Const(size_t n, float v) {
  std::vector<float> h(std::max<size_t>(n, 4), v);
  void* p = Alloc(h.size() * 4);
  CHECK_CUDA(cudaMemcpy(p, h.data(), h.size() * 4, cudaMemcpyHostToDevice));
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

// Per-launch µs of `per_graph` calls f(i, stream) captured back to back in one CUDA graph (as the
// model's decode steps run: no host work between launches), median of `reps` replays.
template <typename F>
double TimeGraphUs(F&& f, int per_graph = 20, int reps = 10) {
  cudaStream_t s;
  CHECK_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  CHECK_CUDA(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < per_graph; ++i) f(i, s);
  CHECK_CUDA(cudaStreamEndCapture(s, &graph));
  CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  cudaEvent_t a, b;
  CHECK_CUDA(cudaEventCreate(&a));
  CHECK_CUDA(cudaEventCreate(&b));
  std::vector<float> ms(reps);
  CHECK_CUDA(cudaGraphLaunch(exec, s));  // warm-up
  for (int i = 0; i < reps; ++i) {
    CHECK_CUDA(cudaEventRecord(a, s));
    CHECK_CUDA(cudaGraphLaunch(exec, s));
    CHECK_CUDA(cudaEventRecord(b, s));
    CHECK_CUDA(cudaEventSynchronize(b));
    CHECK_CUDA(cudaEventElapsedTime(&ms[i], a, b));
  }
  cudaEventDestroy(a), cudaEventDestroy(b), cudaGraphExecDestroy(exec), cudaGraphDestroy(graph), cudaStreamDestroy(s);
  std::sort(ms.begin(), ms.end());
  return ms[reps / 2] * 1000.0 / per_graph;
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

// See main's section 1b.
void FewRowsBench(double hbm, bool quick) {
  std::printf("\nFew rows (decode): RowGemvFp8 (M <= 4) and DenseGemv against cuBLASLt, each launch on another copy "
              "of the weight (>= 512 MB in turn: L2 cold), 20 launches per CUDA graph\n");
  auto runner = r1::cuda::GemmRunner::Create();
  if (!runner.ok()) return;
  struct Shape { const char* name; int64_t n, k; };
  const Shape shapes[] = {{"q_a_proj", 1536, 7168},       {"q_b_proj", 24576, 1536},   {"kv_a_proj", 576, 7168},
                          {"o_proj", 7168, 16384},         {"shared gate/up", 2048, 7168}, {"shared down", 7168, 2048},
                          {"mlp gate/up", 18432, 7168},    {"mlp down", 7168, 18432}};
  std::mt19937 rng(5);
  std::vector<uint8_t> pat(size_t{16} << 20);
  for (auto& b : pat) b = static_cast<uint8_t>(rng()) & 0xbf;  // finite e4m3 codes, |w| < 2
  auto fill = [&](void* dst, size_t bytes) {
    for (size_t off = 0; off < bytes; off += pat.size())
      CHECK_CUDA(cudaMemcpy(static_cast<char*>(dst) + off, pat.data(), std::min(bytes - off, pat.size()),
                            cudaMemcpyHostToDevice));
  };
  struct Row { const char* name; int64_t m; double cublas, gemv, row, floor, pct; };
  std::vector<Row> rows;
  for (const Shape& sh : shapes) {
    const int64_t wbytes = sh.n * sh.k, kb = (sh.k + 127) / 128, stride = r1::cuda::Fp8ScaleStride(sh.k);
    const int copies = static_cast<int>(std::min<int64_t>(64, ((int64_t{512} << 20) + wbytes - 1) / wbytes));
    std::vector<void*> w(copies), ws(copies);
    for (int i = 0; i < copies; ++i) {
      w[i] = Alloc(wbytes);
      fill(w[i], wbytes);
      ws[i] = Alloc(((sh.n + 127) / 128) * stride * 4);
      std::vector<float> sc(((sh.n + 127) / 128) * stride, 0.01f);
      CHECK_CUDA(cudaMemcpy(ws[i], sc.data(), sc.size() * 4, cudaMemcpyHostToDevice));
    }
    for (int64_t m : quick ? std::vector<int64_t>{1, 8} : std::vector<int64_t>{1, 2, 4, 8, 16}) {
      const int64_t mp = r1::cuda::Fp8PaddedRows(m);
      auto* xq = static_cast<__nv_fp8_e4m3*>(Alloc(mp * sh.k));
      fill(xq, mp * sh.k);
      auto* xs = static_cast<float*>(Alloc(mp * kb * 4));
      std::vector<float> xsv(mp * kb, 0.01f);
      CHECK_CUDA(cudaMemcpy(xs, xsv.data(), xsv.size() * 4, cudaMemcpyHostToDevice));
      auto* xb = static_cast<__nv_bfloat16*>(Alloc(mp * sh.k * 2, 0x3c));
      auto* y = static_cast<__nv_bfloat16*>(Alloc(mp * sh.n * 2));
      bool ok = true;
      auto chk = [&](const absl::Status& st) {
        if (!st.ok() && ok) std::fprintf(stderr, "%s: %s\n", sh.name, std::string(st.message()).c_str()), ok = false;
      };
      auto gemv = [&](int i, cudaStream_t s, bool fp8_x) {
        r1::cuda::DenseGemvParams p;
        if (fp8_x) {
          p.x_q = xq, p.x_scales = xs, p.x_scale_rows = mp;
        } else {
          p.x = xb;
        }
        p.w = static_cast<const __nv_fp8_e4m3*>(w[i % copies]), p.scales = static_cast<const float*>(ws[i % copies]);
        p.y = y, p.m = m, p.n = sh.n, p.k = sh.k, p.w_stride = sh.k, p.scale_stride = stride;
        chk(r1::cuda::DenseGemv(p, s));
      };
      const double flops = 2.0 * m * sh.n * sh.k, bytes = double(wbytes) + double(m) * sh.k + 2.0 * m * sh.n;
      const double us_cublas = TimeGraphUs([&](int i, cudaStream_t s) {
        chk((*runner)->Fp8({xq, xs, static_cast<const __nv_fp8_e4m3*>(w[i % copies]),
                            static_cast<const float*>(ws[i % copies]), y, m, sh.n, sh.k}, s));
      });
      const double us_fp8 = TimeGraphUs([&](int i, cudaStream_t s) { gemv(i, s, true); });
      const bool row_gemv = m <= r1::cuda::kRowGemvMaxRows;
      const double us_row = !row_gemv ? 0.0 : TimeGraphUs([&](int i, cudaStream_t s) {
        r1::cuda::DenseGemvParams p;
        p.x_q = xq, p.x_scales = xs, p.x_scale_rows = mp;
        p.w = static_cast<const __nv_fp8_e4m3*>(w[i % copies]), p.scales = static_cast<const float*>(ws[i % copies]);
        p.y = y, p.m = m, p.n = sh.n, p.k = sh.k, p.w_stride = sh.k, p.scale_stride = stride;
        chk(r1::cuda::RowGemvFp8(p, s));
      });
      const double us_bf16 = TimeGraphUs([&](int i, cudaStream_t s) { gemv(i, s, false); });
      char name[96];
      std::snprintf(name, sizeof name, "cublasLt fp8 %-14s M=%-2ld N=%-5ld K=%ld", sh.name, static_cast<long>(m),
                    static_cast<long>(sh.n), static_cast<long>(sh.k));
      Line(name, us_cublas, flops, bytes, hbm, kFp8Tflops);
      std::snprintf(name, sizeof name, "gemv fp8 x   %-14s M=%-2ld%s", sh.name, static_cast<long>(m), ok ? "" : " FAILED");
      Line(name, us_fp8, flops, bytes, hbm, kFp8Tflops);
      std::snprintf(name, sizeof name, "gemv bf16 x  %-14s M=%-2ld%s", sh.name, static_cast<long>(m), ok ? "" : " FAILED");
      Line(name, us_bf16, flops, bytes + m * sh.k, hbm, kFp8Tflops);
      std::printf("    -> gemv fp8 x: %.0f%% of the copy rate, %.2fx faster than cuBLASLt\n",
                  100.0 * bytes / (us_fp8 * 1e-6) / 1e9 / hbm, us_cublas / us_fp8);
      if (row_gemv) {
        std::snprintf(name, sizeof name, "row gemv fp8 %-14s M=%-2ld%s", sh.name, static_cast<long>(m), ok ? "" : " FAILED");
        Line(name, us_row, flops, bytes, hbm, kFp8Tflops);
        std::printf("    -> row gemv fp8: %.0f%% of the copy rate, %.2fx faster than cuBLASLt, %.2fx than DenseGemv\n",
                    100.0 * bytes / (us_row * 1e-6) / 1e9 / hbm, us_cublas / us_row, us_fp8 / us_row);
        rows.push_back({sh.name, m, us_cublas, us_fp8, us_row, bytes / (hbm * 1e9) * 1e6,
                        100.0 * bytes / (us_row * 1e-6) / 1e9 / hbm});
      }
      cudaFree(xq), cudaFree(xs), cudaFree(xb), cudaFree(y);
    }
    for (int i = 0; i < copies; ++i) cudaFree(w[i]), cudaFree(ws[i]);
  }
  std::printf("\nSummary (us; FP8 activations; floor = weight + x + y bytes at the copy rate):\n"
              "%-16s %2s %8s %9s %9s %9s %7s\n", "shape", "M", "floor", "cuBLASLt", "DenseGemv", "RowGemv", "%copy");
  for (const Row& r : rows)
    std::printf("%-16s %2ld %8.1f %9.1f %9.1f %9.1f %6.0f%%\n", r.name, static_cast<long>(r.m), r.floor, r.cublas,
                r.gemv, r.row, r.pct);
}

// MLA's two absorbed per-head products at decode (R1: 128 heads, q_nope 128 -> latent 512 and
// latent 512 -> v 128, from kv_b_proj): the FP8 kernels (AbsorbQueryFp8 / ApplyValueFp8) against
// the path they replace at few rows (q widened to float32, a batched TF32 cuBLASLt product over
// the float32 weight copies, the value product's output cast to bf16). Each launch reads another
// copy of the weights (>= 512 MB in turn: L2 cold); 20 launches per CUDA graph. Floor: kv_b's FP8
// codes of the product (8.4 MB) + activations at the copy rate.
void AbsorbBench(double hbm, bool quick) {
  std::printf("\nAbsorbed MLA products (decode): FP8 codes (AbsorbQueryFp8 / ApplyValueFp8) against TF32 over the "
              "float32 copies, L2 cold, 20 launches per CUDA graph\n");
  auto runner = r1::cuda::GemmRunner::Create();
  if (!runner.ok()) return;
  const int64_t nh = 128, nope = 128, rope = 64, vd = 128, kvr = 512, qk = nope + rope;
  const int64_t kvb_bytes = nh * (nope + vd) * kvr, f32_half = nh * nope * kvr * 4;
  const int64_t scale_stride = r1::cuda::Fp8ScaleStride(kvr), nb = nh * (nope + vd) / 128;
  const int fp8_copies = static_cast<int>(((int64_t{512} << 20) + kvb_bytes - 1) / kvb_bytes);
  const int f32_copies = static_cast<int>(((int64_t{512} << 20) + f32_half - 1) / f32_half);
  std::vector<void*> codes(fp8_copies), scales(fp8_copies), uk(f32_copies), uv(f32_copies);
  for (int i = 0; i < fp8_copies; ++i) {
    codes[i] = AllocFp8Random(kvb_bytes, 11 + i);
    scales[i] = AllocF32Const(nb * scale_stride, 0.01f);
  }
  for (int i = 0; i < f32_copies; ++i) uk[i] = AllocF32Const(f32_half / 4, 0.01f), uv[i] = AllocF32Const(f32_half / 4, 0.02f);
  const int64_t max_t = 16;
  auto* q = static_cast<__nv_bfloat16*>(Alloc(max_t * nh * qk * 2, 0x3c));
  auto* q_f32 = static_cast<float*>(Alloc(max_t * nh * qk * 4));
  auto* q_lat = static_cast<float*>(Alloc(max_t * nh * kvr * 4));
  auto* q_pe = static_cast<float*>(Alloc(max_t * nh * rope * 4));
  auto* o_lat = static_cast<float*>(AllocF32Const(max_t * nh * kvr, 0.5f));
  auto* attn_f32 = static_cast<float*>(Alloc(max_t * nh * vd * 4));
  auto* attn = static_cast<__nv_bfloat16*>(Alloc(max_t * nh * vd * 2));
  auto weight = [&](int i) {
    r1::cuda::AbsorbFp8Weight w;
    w.w = static_cast<const uint8_t*>(codes[i % fp8_copies]), w.scales = static_cast<const float*>(scales[i % fp8_copies]);
    w.w_stride = kvr, w.scale_stride = scale_stride, w.heads = nh, w.nope = nope, w.v = vd, w.kvr = kvr;
    return w;
  };
  std::printf("%-6s %8s | %9s %9s %6s | %9s %9s %6s\n", "rows", "floor", "query fp8", "tf32", "x", "value fp8",
              "tf32", "x");
  for (int64_t t : quick ? std::vector<int64_t>{1, 8} : std::vector<int64_t>{1, 2, 4, 8, 16}) {
    bool ok = true;
    auto chk = [&](const absl::Status& st) {
      if (!st.ok() && ok) std::fprintf(stderr, "absorb: %s\n", std::string(st.message()).c_str()), ok = false;
    };
    const double q_fp8 = TimeGraphUs([&](int i, cudaStream_t s) {
      chk(r1::cuda::AbsorbQueryFp8(r1::cuda::AbsorbQueryFp8Params<__nv_bfloat16>{weight(i), q, q_lat, q_pe, t, rope}, s));
    });
    const double q_tf32 = TimeGraphUs([&](int i, cudaStream_t s) {
      chk(r1::cuda::AbsorbQuery(r1::cuda::AbsorbQueryParamsT<__nv_bfloat16>{q, nullptr, nullptr, q_pe, t, nh, nope,
                                                                           rope, kvr, q_f32}, s));
      r1::cuda::BatchedGemmParams bp;
      bp.type = r1::cuda::BatchedGemmParams::Type::kTf32;
      bp.x = q_f32, bp.ldx = nh * qk, bp.stride_x = qk;
      bp.w = uk[i % f32_copies], bp.ldw = kvr, bp.stride_w = nope * kvr, bp.w_kn = true;
      bp.y = q_lat, bp.ldy = nh * kvr, bp.stride_y = kvr;
      bp.m = t, bp.n = kvr, bp.k = nope, bp.batch = nh;
      chk((*runner)->Batched(bp, s));
    });
    const double v_fp8 = TimeGraphUs([&](int i, cudaStream_t s) {
      chk(r1::cuda::ApplyValueFp8(r1::cuda::ApplyValueFp8Params<__nv_bfloat16>{weight(i), o_lat, attn, t}, s));
    });
    const double v_tf32 = TimeGraphUs([&](int i, cudaStream_t s) {
      r1::cuda::BatchedGemmParams bp;
      bp.type = r1::cuda::BatchedGemmParams::Type::kTf32;
      bp.x = o_lat, bp.ldx = nh * kvr, bp.stride_x = kvr;
      bp.w = uv[i % f32_copies], bp.ldw = kvr, bp.stride_w = vd * kvr, bp.w_kn = false;
      bp.y = attn_f32, bp.ldy = nh * vd, bp.stride_y = vd;
      bp.m = t, bp.n = vd, bp.k = kvr, bp.batch = nh;
      chk((*runner)->Batched(bp, s));
      chk(r1::cuda::CastToBf16(attn_f32, attn, t * nh * vd, s));
    });
    // Half of kv_b's codes per product, plus the activations in and out.
    const double bytes = kvb_bytes / 2.0 + t * nh * (2.0 * qk + 4.0 * kvr);
    const double floor_us = bytes / (hbm * 1e9) * 1e6;
    std::printf("%-6ld %8.1f | %9.1f %9.1f %5.2fx | %9.1f %9.1f %5.2fx%s\n", static_cast<long>(t), floor_us, q_fp8,
                q_tf32, q_tf32 / q_fp8, v_fp8, v_tf32, v_tf32 / v_fp8, ok ? "" : "  FAILED");
    std::printf("    -> fp8 query %.0f%%, value %.0f%% of the copy rate\n", 100.0 * floor_us / q_fp8,
                100.0 * floor_us / v_fp8);
  }
  for (void* p : codes) cudaFree(p);
  for (void* p : scales) cudaFree(p);
  for (void* p : uk) cudaFree(p);
  for (void* p : uv) cudaFree(p);
  cudaFree(q), cudaFree(q_f32), cudaFree(q_lat), cudaFree(q_pe), cudaFree(o_lat), cudaFree(attn_f32), cudaFree(attn);
}

// See main's section 4.
void MoeLayerBench(double hbm, bool quick, int64_t only_tokens) {
  const int64_t E = 256, inter = 2048, hd = 7168, topk = 8, kb = hd / 128;
  std::printf("\nMoE layer (router + permutation + grouped FP8 GEMV or GEMM gate/up/down + SwiGLU + combine), 256 "
              "experts of 2048 x 7168, top 8\n");
  // Random finite e4m3 codes (bit 6 clear: no NaN, |w| < 2), a 64 MB pattern repeated.
  std::mt19937 rng(11);
  std::vector<uint8_t> pat(size_t{64} << 20);
  for (auto& b : pat) b = static_cast<uint8_t>(rng()) & 0xbf;
  auto fill_codes = [&](void* dst, size_t bytes) {
    for (size_t off = 0; off < bytes; off += pat.size())
      cudaMemcpy(static_cast<char*>(dst) + off, pat.data(), std::min(bytes - off, pat.size()), cudaMemcpyHostToDevice);
  };
  auto fill_f32 = [&](void* dst, size_t n, float mean, float sd) {
    std::normal_distribution<float> nd(mean, sd);
    std::vector<float> v(n);
    for (auto& x : v) x = nd(rng);
    cudaMemcpy(dst, v.data(), n * 4, cudaMemcpyHostToDevice);
  };
  const size_t wgu = size_t(E) * inter * hd, wd = size_t(E) * hd * inter;
  auto* wg = static_cast<__nv_fp8_e4m3*>(Alloc(wgu));
  auto* wu = static_cast<__nv_fp8_e4m3*>(Alloc(wgu));
  auto* wdn = static_cast<__nv_fp8_e4m3*>(Alloc(wd));
  fill_codes(wg, wgu), fill_codes(wu, wgu), fill_codes(wdn, wd);
  auto* sg = static_cast<float*>(Alloc(E * (inter / 128) * kb * 4));
  auto* su = static_cast<float*>(Alloc(E * (inter / 128) * kb * 4));
  auto* sd = static_cast<float*>(Alloc(E * (hd / 128) * (inter / 128) * 4));
  // Block scales that differ from block to block, as a checkpoint's do (the GEMM rescales its
  // accumulators wherever the scale changes).
  fill_f32(sg, E * (inter / 128) * kb, 0.01f, 0.002f), fill_f32(su, E * (inter / 128) * kb, 0.01f, 0.002f);
  fill_f32(sd, E * (hd / 128) * (inter / 128), 0.01f, 0.002f);
  auto* wr = static_cast<float*>(Alloc(E * hd * 4));
  auto* bias = static_cast<float*>(Alloc(E * 4));
  fill_f32(wr, E * hd, 0.0f, 0.02f), fill_f32(bias, E, 0.0f, 0.01f);
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));
  std::vector<int64_t> token_counts = quick ? std::vector<int64_t>{1, 64, 4096} : std::vector<int64_t>{1, 8, 64, 256, 4096};
  if (only_tokens > 0) token_counts = {only_tokens};
  for (int64_t t : token_counts) {
    const int64_t entries = t * topk;
    auto* xf = static_cast<float*>(Alloc(t * hd * 4));    // normed input, float32 (router)
    auto* xb = static_cast<__nv_bfloat16*>(Alloc(t * hd * 2));  // and bf16 (experts)
    fill_f32(xf, t * hd, 0.0f, 1.0f);
    {
      std::vector<float> f(t * hd);
      std::vector<uint16_t> b(t * hd);
      CHECK_CUDA(cudaMemcpy(f.data(), xf, t * hd * 4, cudaMemcpyDeviceToHost));
      for (size_t i = 0; i < f.size(); ++i) b[i] = r1::FloatToBf16(f[i]);
      CHECK_CUDA(cudaMemcpy(xb, b.data(), t * hd * 2, cudaMemcpyHostToDevice));
    }
    auto* out = static_cast<float*>(Alloc(t * hd * 4));
    auto* logits = static_cast<float*>(Alloc(t * E * 4));
    auto* ids = static_cast<int32_t*>(Alloc(entries * 4));
    auto* w = static_cast<float*>(Alloc(entries * 4));
    auto* off = static_cast<int32_t*>(Alloc((E + 1) * 4));
    auto* ptok = static_cast<int32_t*>(Alloc(entries * 4));
    auto* pw = static_cast<float*>(Alloc(entries * 4));
    auto* slot = static_cast<int32_t*>(Alloc(entries * 4));
    auto* pws = static_cast<int32_t*>(Alloc(r1::cuda::MoePermuteWorkspaceInts(t, topk, E) * 4));
    auto* xe = static_cast<__nv_bfloat16*>(Alloc(entries * hd * 2));
    auto* eg = static_cast<__nv_bfloat16*>(Alloc(entries * inter * 2));
    auto* eu = static_cast<__nv_bfloat16*>(Alloc(entries * inter * 2));
    auto* ey = static_cast<__nv_bfloat16*>(Alloc(entries * hd * 2));
    bool ok = true;
    auto chk = [&](const absl::Status& st) {
      if (!st.ok() && ok) std::fprintf(stderr, "moe layer: %s\n", std::string(st.message()).c_str()), ok = false;
    };
    // One expert projection over the permuted rows: the grouped GEMV, or the grouped GEMM with
    // `tile_rows` (0: its own choice).
    auto project = [&](bool gemm, int tile_rows, int tile_k, const __nv_fp8_e4m3* wt, const float* sc,
                       const __nv_bfloat16* in, __nv_bfloat16* o, int64_t n, int64_t k) {
      if (gemm) {
        r1::cuda::GroupedFp8GemmParams gp;
        gp.x = in, gp.offsets = off, gp.w = wt, gp.scales = sc, gp.y = o, gp.experts = E, gp.n = n, gp.k = k;
        gp.w_stride = k, gp.scale_stride = k / 128, gp.max_rows = entries, gp.tile_rows = tile_rows;
        gp.tile_k = tile_k;
        chk(r1::cuda::GroupedFp8Gemm(gp, stream));
        return;
      }
      r1::cuda::GroupedFp8GemvParams gp;
      gp.x = in, gp.offsets = off, gp.w = wt, gp.scales = sc, gp.y = o, gp.experts = E, gp.n = n, gp.k = k;
      gp.w_stride = k, gp.scale_stride = k / 128;
      chk(r1::cuda::GroupedFp8Gemv(gp, stream));
    };
    // The FP8 x FP8 path (fp8 activations mode): the rows quantised per 1x128 group.
    auto* xq = static_cast<__nv_fp8_e4m3*>(Alloc(entries * hd));
    auto* xqs = static_cast<float*>(Alloc(entries * kb * 4));
    auto quantise = [&](const __nv_bfloat16* in, int64_t k) {
      r1::cuda::QuantizeRowsParams qp;
      qp.x = in, qp.q = xq, qp.scales = xqs, qp.rows = entries, qp.k = k, qp.q_stride = k;
      qp.scale_stride = k / 128;
      chk(r1::cuda::QuantizeRowsFp8Group128(qp, stream));
    };
    auto project_q = [&](int tile_rows, const __nv_fp8_e4m3* wt, const float* sc, __nv_bfloat16* o, int64_t n,
                         int64_t k, bool mma_sync = false) {
      r1::cuda::GroupedFp8GemmParams gp;
      gp.mma_sync = mma_sync;
      gp.x_q = xq, gp.x_scales = xqs, gp.x_stride = k, gp.x_scale_stride = k / 128;
      gp.offsets = off, gp.w = wt, gp.scales = sc, gp.y = o, gp.experts = E, gp.n = n, gp.k = k;
      gp.w_stride = k, gp.scale_stride = k / 128, gp.max_rows = entries, gp.tile_rows = tile_rows;
      chk(r1::cuda::GroupedFp8Gemm(gp, stream));
    };
    auto layer = [&](bool gemm, bool fp8 = false) {
      chk(r1::cuda::LinearF32(xf, wr, logits, t, E, hd, stream));
      r1::cuda::RouterParams rp;
      rp.logits = logits, rp.score_bias = bias, rp.expert_ids = ids, rp.weights = w, rp.tokens = t, rp.experts = E;
      rp.n_group = 8, rp.topk_group = 4, rp.top_k = topk, rp.norm_topk_prob = true, rp.routed_scaling_factor = 2.5f;
      chk(r1::cuda::Router(rp, stream));
      r1::cuda::MoePermuteParams pp;
      pp.expert_ids = ids, pp.weights = w, pp.tokens = t, pp.top_k = topk, pp.first_expert = 0, pp.num_experts = E;
      pp.expert_offsets = off, pp.permuted_tokens = ptok, pp.permuted_weights = pw, pp.entry_slot = slot;
      pp.workspace = pws;
      chk(r1::cuda::MoePermute(pp, stream));
      chk(r1::cuda::GatherRows(xb, ptok, xe, entries, hd, stream));
      if (fp8) {
        quantise(xe, hd);
        project_q(0, wg, sg, eg, inter, hd);
        project_q(0, wu, su, eu, inter, hd);
        chk(r1::cuda::Swiglu(r1::cuda::SwigluParams{eg, eu, eg, entries, inter, inter, inter, inter}, stream));
        quantise(eg, inter);
        project_q(0, wdn, sd, ey, hd, inter);
      } else {
        project(gemm, 0, 0, wg, sg, xe, eg, inter, hd);
        project(gemm, 0, 0, wu, su, xe, eu, inter, hd);
        chk(r1::cuda::Swiglu(r1::cuda::SwigluParams{eg, eu, eg, entries, inter, inter, inter, inter}, stream));
        project(gemm, 0, 0, wdn, sd, eg, ey, hd, inter);
      }
      chk(r1::cuda::MoeCombine(r1::cuda::MoeCombineParams{ey, slot, w, out, t, topk, hd}, stream));
    };
    // The two layers' outputs on the same routing (out starts at zero; the combine adds to it).
    std::vector<float> out_gemv(t * hd), out_gemm(t * hd), out_fp8(t * hd);
    CHECK_CUDA(cudaMemsetAsync(out, 0, t * hd * 4, stream));
    layer(false);
    CHECK_CUDA(cudaMemcpyAsync(out_gemv.data(), out, t * hd * 4, cudaMemcpyDeviceToHost, stream));
    CHECK_CUDA(cudaMemsetAsync(out, 0, t * hd * 4, stream));
    layer(true);
    CHECK_CUDA(cudaMemcpyAsync(out_gemm.data(), out, t * hd * 4, cudaMemcpyDeviceToHost, stream));
    CHECK_CUDA(cudaMemsetAsync(out, 0, t * hd * 4, stream));
    layer(true, true);
    CHECK_CUDA(cudaMemcpyAsync(out_fp8.data(), out, t * hd * 4, cudaMemcpyDeviceToHost, stream));
    CHECK_CUDA(cudaStreamSynchronize(stream));
    double num = 0, den = 0, num8 = 0;
    for (int64_t i = 0; i < t * hd; ++i) {
      num += double(out_gemm[i] - out_gemv[i]) * (out_gemm[i] - out_gemv[i]);
      num8 += double(out_fp8[i] - out_gemv[i]) * (out_fp8[i] - out_gemv[i]);
      den += double(out_gemv[i]) * out_gemv[i];
    }
    // Experts touched by this batch's routing.
    std::vector<int32_t> hid(entries);
    cudaMemcpy(hid.data(), ids, entries * 4, cudaMemcpyDeviceToHost);
    std::vector<char> hit(E, 0);
    for (int32_t e : hid) hit[e] = 1;
    const int64_t touched = std::count(hit.begin(), hit.end(), 1);
    const double flops = 2.0 * entries * 3.0 * inter * hd + 2.0 * t * E * hd;
    const double bytes = double(touched) * 3.0 * inter * hd + double(E) * hd * 4 + double(t) * hd * 10;
    for (int mode : {0, 1, 2}) {  // gemv, gemm, gemm fp8 x fp8
      const bool gemm = mode > 0;
      cudaGraph_t graph = nullptr;
      cudaGraphExec_t exec = nullptr;
      CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
      layer(gemm, mode == 2);
      CHECK_CUDA(cudaStreamEndCapture(stream, &graph));
      CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
      const bool slow = !gemm && t >= 4096;
      const double us = TimeUs([&] { cudaGraphLaunch(exec, stream); cudaStreamSynchronize(stream); }, slow ? 3 : 20);
      char name[96];
      std::snprintf(name, sizeof name, "moe layer %s tokens=%-4ld touched=%ld%s",
                    mode == 2 ? "gemm fp8" : gemm ? "gemm" : "gemv",
                    static_cast<long>(t), static_cast<long>(touched), ok ? "" : " (FAILED)");
      Line(name, us, flops, bytes, hbm, kFp8Tflops);
      cudaGraphExecDestroy(exec), cudaGraphDestroy(graph);
    }
    std::printf("    gemm vs gemv layer output: rel L2 %.3g; gemm fp8 x fp8 vs gemv: rel L2 %.3g\n",
                den > 0 ? std::sqrt(num / den) : 0.0, den > 0 ? std::sqrt(num8 / den) : 0.0);
    // The projections alone (the routing above): GEMV, and the GEMM at each tile (rows x k).
    struct Proj { const char* name; const __nv_fp8_e4m3* w; const float* s; const __nv_bfloat16* in; __nv_bfloat16* o;
                  int64_t n, k; };
    for (const Proj& pr : {Proj{"gate", wg, sg, xe, eg, inter, hd}, Proj{"down", wdn, sd, eg, ey, hd, inter}}) {
      const double pflops = 2.0 * entries * pr.n * pr.k, pbytes = double(touched) * pr.n * pr.k;
      const int def_rows = r1::cuda::GroupedFp8GemmTileRows(entries, E);
      std::printf("    %s %ldx%ld: floor %.1f us; default tile %dx%d;", pr.name, static_cast<long>(pr.n),
                  static_cast<long>(pr.k), std::max(pbytes / (hbm * 1e9), pflops / (kBf16Tflops * 1e12)) * 1e6,
                  def_rows, r1::cuda::GroupedFp8GemmTileK(def_rows));
      const double gemv_us = TimeUs([&] { project(false, 0, 0, pr.w, pr.s, pr.in, pr.o, pr.n, pr.k); }, t >= 4096 ? 2 : 10);
      std::printf(" gemv %.1f us (%.0f GB/s)\n     ", gemv_us, pbytes / (gemv_us * 1e-6) / 1e9);
      for (int tr : {16, 32, 64, 128}) {
        for (int tk : {64, 128}) {
          const double us = TimeUs([&] { project(true, tr, tk, pr.w, pr.s, pr.in, pr.o, pr.n, pr.k); }, 10);
          std::printf(" %dx%d %.1f us (%.0f TF, %.0f GB/s)", tr, tk, us, pflops / (us * 1e-6) / 1e12,
                      pbytes / (us * 1e-6) / 1e9);
        }
      }
      std::printf("\n");
      // FP8 x FP8: the quantiser alone, then the GEMM at each tile height (k 128).
      const double q_us = TimeUs([&] { quantise(pr.in, pr.k); }, 10);
      std::printf("     fp8xfp8: quantise %.1f us;", q_us);
      for (int tr : {16, 32, 64, 128}) {
        const double us = TimeUs([&] { project_q(tr, pr.w, pr.s, pr.o, pr.n, pr.k); }, 10);
        std::printf(" %dx128 %.1f us (%.0f TF, %.0f GB/s)", tr, us, pflops / (us * 1e-6) / 1e12,
                    pbytes / (us * 1e-6) / 1e9);
      }
      std::printf("\n     fp8xfp8 mma.sync:");
      for (int tr : {16, 32, 64}) {
        const double us = TimeUs([&] { project_q(tr, pr.w, pr.s, pr.o, pr.n, pr.k, true); }, 10);
        std::printf(" %dx128 %.1f us (%.0f TF, %.0f GB/s)", tr, us, pflops / (us * 1e-6) / 1e12,
                    pbytes / (us * 1e-6) / 1e9);
      }
      std::printf("\n");
    }
    for (void* ptr : std::initializer_list<void*>{xf, xb, out, logits, ids, w, off, ptok, pw, slot, pws, xe, eg, eu, ey, xq, xqs})
      cudaFree(ptr);
  }
  cudaStreamDestroy(stream);
  cudaFree(wg), cudaFree(wu), cudaFree(wdn), cudaFree(sg), cudaFree(su), cudaFree(sd), cudaFree(wr), cudaFree(bias);
}

}  // namespace

int main(int argc, char** argv) {
  // --quick: fewer sizes; --only gemm|gemv|absorb|mla|moelayer|moe: one section (gemm includes gemv and absorb);
  // --mla BATCH CTX: that MLA case alone; --moe-tokens N: the MoE layer at N tokens alone (e.g. for
  // a profiler).
  bool quick = false;
  std::string only;
  int64_t mla_batch = 0, mla_ctx = 0, moe_tokens = 0;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
    if (std::strcmp(argv[i], "--only") == 0 && i + 1 < argc) only = argv[++i];
    if (std::strcmp(argv[i], "--moe-tokens") == 0 && i + 1 < argc) only = "moelayer", moe_tokens = std::atol(argv[++i]);
    if (std::strcmp(argv[i], "--mla") == 0 && i + 2 < argc) {
      only = "mla", mla_batch = std::atol(argv[i + 1]), mla_ctx = std::atol(argv[i + 2]), i += 2;
    }
  }
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  const double hbm = MeasureHbmGBs();
  std::printf("device %s, %d SMs; measured device copy %.0f GB/s (the bandwidth floor); tensor rates FP8 %.0f, "
              "BF16 %.0f TFLOP/s\n\n", prop.name, prop.multiProcessorCount, hbm, kFp8Tflops, kBf16Tflops);

  if (only.empty() || only == "gemm") {
    // 1. FP8 block-scaled GEMM (cuBLASLt) at R1's linear shapes: y[M, N] = x[M, K] · W[N, K]^T.
    auto runner = r1::cuda::GemmRunner::Create();
    if (!runner.ok()) return 1;
    struct Shape { const char* name; int64_t n, k; };
    const Shape shapes[] = {{"q_a_proj", 1536, 7168},  {"q_b_proj", 24576, 1536}, {"kv_a_proj", 576, 7168},
                            {"kv_b_proj", 32768, 512}, {"o_proj", 7168, 16384},   {"expert gate/up", 2048, 7168},
                            {"expert down", 7168, 2048}};
    std::vector<int64_t> ms = quick ? std::vector<int64_t>{1, 64, 4096} : std::vector<int64_t>{1, 8, 64, 256, 4096};
    std::printf("FP8 GEMM (cuBLASLt block-scaled, 1x128 activation / 128x128 weight scales; random codes; device "
                "time per product from CUDA-graph replays)\n");
    for (const Shape& s : shapes) {
      for (int64_t m : ms) {
        const int64_t mp = r1::cuda::Fp8PaddedRows(m), kb = (s.k + 127) / 128, stride = r1::cuda::Fp8ScaleStride(s.k);
        auto* x = static_cast<__nv_fp8_e4m3*>(AllocFp8Random(mp * s.k, 3));
        auto* xs = static_cast<float*>(AllocF32Const(mp * kb, 0.01f));
        auto* w = static_cast<__nv_fp8_e4m3*>(AllocFp8Random(s.n * s.k, 5));
        auto* ws = static_cast<float*>(AllocF32Const(((s.n + 127) / 128) * stride, 0.01f));
        auto* y = static_cast<__nv_bfloat16*>(Alloc(mp * s.n * 2));
        bool ok = true;
        const double us = TimeGraphUs([&](int, cudaStream_t st) {
          ok = ok && (*runner)->Fp8({x, xs, w, ws, y, m, s.n, s.k}, st).ok();
        });
        if (!ok) std::printf("(cuBLASLt FAILED for the next shape)\n");
        const double flops = 2.0 * m * s.n * s.k, bytes = double(s.n) * s.k + double(m) * s.k + 2.0 * m * s.n;
        char name[96];
        std::snprintf(name, sizeof name, "fp8 %-15s M=%-5ld N=%-6ld K=%ld", s.name, static_cast<long>(m),
                      static_cast<long>(s.n), static_cast<long>(s.k));
        Line(name, us, flops, bytes, hbm, kFp8Tflops);
        if (m >= 256) {
          // The same product through the project's own FP8 x FP8 kernel (the routed experts'
          // grouped GEMM with one group): row-major 1x128 activation scales, same codes.
          const int64_t xs_stride = kb;
          auto* xs_rows = static_cast<float*>(AllocF32Const(m * xs_stride, 0.01f));
          auto* offsets = static_cast<int32_t*>(Alloc(2 * sizeof(int32_t)));
          const int32_t host_offsets[2] = {0, static_cast<int32_t>(m)};
          CHECK_CUDA(cudaMemcpy(offsets, host_offsets, sizeof host_offsets, cudaMemcpyHostToDevice));
          r1::cuda::GroupedFp8GemmParams gp;
          gp.offsets = offsets, gp.w = w, gp.scales = ws, gp.y = y;
          gp.x_q = x, gp.x_scales = xs_rows, gp.x_stride = s.k, gp.x_scale_stride = xs_stride;
          gp.experts = 1, gp.n = s.n, gp.k = s.k, gp.w_stride = s.k, gp.scale_stride = stride, gp.max_rows = m;
          bool own_ok = r1::cuda::GroupedFp8Gemm(gp, nullptr).ok();
          CHECK_CUDA(cudaDeviceSynchronize());
          if (own_ok) {
            const double us_own = TimeGraphUs([&](int, cudaStream_t st) {
              own_ok = own_ok && r1::cuda::GroupedFp8Gemm(gp, st).ok();
            });
            std::snprintf(name, sizeof name, "  own FP8xFP8 kernel (1 group), M=%ld", static_cast<long>(m));
            Line(name, us_own, flops, bytes, hbm, kFp8Tflops);
            std::printf("  cuBLASLt time / own time: %.2f\n", us / us_own);
          }
          if (!own_ok) std::printf("  (own FP8xFP8 kernel refused this shape)\n");
          cudaFree(xs_rows), cudaFree(offsets);
        }
        cudaFree(x), cudaFree(xs), cudaFree(w), cudaFree(ws), cudaFree(y);
      }
    }
  }

  // 1b. Few rows (decode batches): the GEMV against cuBLASLt at the dense layers' shapes, weights
  // cold in L2, launches back to back in a graph. Floor: the weight bytes over the copy rate.
  if (only.empty() || only == "gemm" || only == "gemv") FewRowsBench(hbm, quick);
  if (only.empty() || only == "gemm" || only == "gemv" || only == "absorb") AbsorbBench(hbm, quick);

  // 2. MLA decode (absorbed) over the paged bf16 latent cache: 128 heads, latent 512 + 64. Bytes:
  // the cache rows read, q read and o_lat written (float32, as the interface takes them).
  if (only.empty() || only == "mla") {
    std::printf("\nMLA decode attention (absorbed form, paged bf16 latent cache, block 64, 128 heads); "
                "HBM fraction against the measured copy rate and against the 3350 GB/s data-sheet figure\n");
    const int64_t kvr = 512, rope = 64, lat = kvr + rope, heads = 128, block = 64;
    std::vector<int64_t> batches = quick ? std::vector<int64_t>{1, 64} : std::vector<int64_t>{1, 8, 64, 256};
    std::vector<int64_t> ctxs = quick ? std::vector<int64_t>{4096} : std::vector<int64_t>{1024, 4096, 16384, 32768};
    if (mla_batch > 0) batches = {mla_batch}, ctxs = {mla_ctx};
    const size_t ws_bytes = r1::cuda::MlaDecodeWorkspaceBytes(heads, kvr);
    // Random values (N(0,1) cache, N(0,0.05) q): the softmax max keeps moving early in a row as
    // it would on real data; the 16 MB pattern repeats over the cache.
    std::mt19937 rng(7);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<uint16_t> pattern(size_t{8} << 20);
    for (auto& v : pattern) v = r1::FloatToBf16(nd(rng));
    auto fill = [&](void* dst, size_t bytes, float scale) {
      if (scale == 0.0f) {
        for (size_t off = 0; off < bytes; off += pattern.size() * 2)
          cudaMemcpy(static_cast<char*>(dst) + off, pattern.data(), std::min(bytes - off, pattern.size() * 2),
                     cudaMemcpyHostToDevice);
        return;
      }
      std::vector<float> f(bytes / 4);
      for (auto& v : f) v = nd(rng) * scale;
      cudaMemcpy(dst, f.data(), f.size() * 4, cudaMemcpyHostToDevice);
    };
    auto* ws = static_cast<float*>(Alloc(ws_bytes));
    struct MlaResult {
      int64_t batch, ctx;
      double wgmma_us, mma_us;
      bool dispatch_wgmma;  // kTensorCore takes the wgmma kernel for the case
      bool bulk_copies;     // the wgmma kernel's pages arrive by TMA (else cp.async)
      double gbs_wgmma = 0, gbs_mma = 0;
    };
    std::vector<MlaResult> results;
    for (int64_t batch : batches) {
      for (int64_t ctx : ctxs) {
        const int64_t blocks_per = (ctx + block - 1) / block, blocks = blocks_per * batch;
        auto* cache = static_cast<__nv_bfloat16*>(Alloc(blocks * block * lat * 2, 0x3c));
        std::vector<int32_t> table(batch * blocks_per), lens(batch, static_cast<int32_t>(ctx));
        // Pages in a scrambled order, as a serving cache hands them out.
        for (size_t i = 0; i < table.size(); ++i) table[i] = static_cast<int32_t>((i * 7919) % table.size());
        auto* dt = static_cast<int32_t*>(Alloc(table.size() * 4));
        auto* dl = static_cast<int32_t*>(Alloc(lens.size() * 4));
        cudaMemcpy(dt, table.data(), table.size() * 4, cudaMemcpyHostToDevice);
        cudaMemcpy(dl, lens.data(), lens.size() * 4, cudaMemcpyHostToDevice);
        auto* ql = static_cast<float*>(Alloc(batch * heads * kvr * 4));
        auto* qp = static_cast<float*>(Alloc(batch * heads * rope * 4));
        auto* ol = static_cast<float*>(Alloc(batch * heads * kvr * 4));
        fill(cache, blocks * block * lat * 2, 0.0f);
        fill(ql, batch * heads * kvr * 4, 0.05f);
        fill(qp, batch * heads * rope * 4, 0.05f);
        r1::cuda::MlaDecodeParams p;
        p.q_lat = ql, p.q_pe = qp, p.cache = cache, p.block_stride = block * lat, p.block_tables = dt;
        p.context_lens = dl, p.o_lat = ol, p.rows = batch, p.heads = heads, p.kv_lora_rank = kvr, p.rope_dim = rope;
        p.block_size = block, p.max_blocks = blocks_per, p.softmax_scale = 0.1f;
        p.workspace = ws, p.workspace_bytes = ws_bytes;
        const double bytes = double(batch) * ctx * lat * 2 + double(batch) * heads * (lat + kvr) * 4;
        const double flops = 2.0 * batch * heads * ctx * (lat + kvr);
        char name[96];
        // Both tensor-core kernels: wgmma (mla_decode_wgmma.cu) and mma.sync (mla_decode_tc.cu).
        MlaResult res{batch, ctx, 0, 0, r1::cuda::internal::MlaDecodeWgmmaSupported(p),
                      r1::cuda::internal::MlaWgmmaBulkCopies(p)};
        for (const auto algo : {r1::cuda::MlaDecodeParams::Algo::kWgmma, r1::cuda::MlaDecodeParams::Algo::kMmaSync}) {
          p.algo = algo;
          const bool wg = algo == r1::cuda::MlaDecodeParams::Algo::kWgmma;
          const absl::Status st = r1::cuda::MlaDecode(p, nullptr);
          if (!st.ok()) std::printf("mla decode %s: %s\n", wg ? "wgmma" : "mma.sync", st.ToString().c_str());
          const double us = TimeUs([&] { (void)r1::cuda::MlaDecode(p, nullptr); }, 20);
          (wg ? res.wgmma_us : res.mma_us) = us;
          std::snprintf(name, sizeof name, "mla decode %-8s batch=%-4ld ctx=%ld", wg ? "wgmma" : "mma.sync",
                        static_cast<long>(batch), static_cast<long>(ctx));
          Line(name, us, flops, bytes, hbm, kBf16Tflops);
          std::printf("    -> %.0f GB/s = %.1f%% of measured copy rate, %.1f%% of 3350 GB/s\n", bytes / (us * 1e-6) / 1e9,
                      100.0 * bytes / (us * 1e-6) / 1e9 / hbm, 100.0 * bytes / (us * 1e-6) / 1e9 / 3350.0);
        }
        res.gbs_wgmma = bytes / (res.wgmma_us * 1e-6) / 1e9;
        res.gbs_mma = bytes / (res.mma_us * 1e-6) / 1e9;
        results.push_back(res);
        if (!quick && mla_batch == 0 && ((batch == 64 && ctx == 4096) || (batch == 1 && ctx == 4096))) {
          p.algo = r1::cuda::MlaDecodeParams::Algo::kExact;  // the float32 CUDA-core kernel, for reference
          const double ue = TimeUs([&] { (void)r1::cuda::MlaDecode(p, nullptr); }, 3);
          std::snprintf(name, sizeof name, "mla decode exact batch=%-4ld ctx=%ld", static_cast<long>(batch),
                        static_cast<long>(ctx));
          Line(name, ue, flops, bytes, hbm, kBf16Tflops);
        }
        cudaFree(cache), cudaFree(dt), cudaFree(dl), cudaFree(ql), cudaFree(qp), cudaFree(ol);
      }
    }
    cudaFree(ws);
    std::printf("\nMLA decode summary (GB/s, %% of the measured %.0f GB/s copy rate; kTensorCore takes *)\n", hbm);
    std::printf("%-6s %-6s | %-28s | %-24s | wgmma speed-up\n", "batch", "ctx", "wgmma (loads)", "mma.sync");
    for (const MlaResult& r : results) {
      std::printf("%-6ld %-6ld | %8.1f us %5.0f %5.1f%%%s %-3s | %8.1f us %5.0f %5.1f%%%s | %.2fx\n",
                  static_cast<long>(r.batch), static_cast<long>(r.ctx), r.wgmma_us, r.gbs_wgmma,
                  100.0 * r.gbs_wgmma / hbm, r.dispatch_wgmma ? "*" : " ", r.bulk_copies ? "tma" : "cp", r.mma_us,
                  r.gbs_mma, 100.0 * r.gbs_mma / hbm, r.dispatch_wgmma ? " " : "*", r.mma_us / r.wgmma_us);
    }
  }

  // 4. The routed MoE layer as the GPU model runs it (worker/model/gpu_model.cc): float32 router
  // GEMV, fused router (sigmoid, 8 groups keep 4, top 8, normalised, x2.5), permutation, row
  // gather, grouped FP8 GEMV or GEMM gate and up, SwiGLU, grouped GEMV or GEMM down, ordered
  // combine into the float32 residual; both expert kernels on the same routing, then each
  // projection alone (GEMV; GEMM at every tile height). Random FP8 weights (finite codes) for 256
  // experts of 2048 x 7168. Timed as one captured CUDA graph (as decode steps run). Floor: decode
  // = bytes of the experts touched (+ router weight) / copy rate; prefill = flops / FP8 dense
  // rate (the projections alone: the BF16 rate, the GEMM's MMA type).
  if (only.empty() || only == "moelayer") MoeLayerBench(hbm, quick, moe_tokens);

  // 3. Routed experts for a decode batch: grouped FP8 GEMV (gate) over 256 experts, 8 per token.
  if (!only.empty() && only != "moe") return 0;
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
    bool ok = true;
    const double us = TimeGraphUs([&](int, cudaStream_t s) { ok &= r1::cuda::GroupedFp8Gemv(gp, s).ok(); });
    const double bytes = double(touched) * n * k, flops = 2.0 * tokens * topk * n * k;
    char name[96];
    std::snprintf(name, sizeof name, "moe gate tokens=%-4ld experts touched=%ld%s", static_cast<long>(tokens),
                  static_cast<long>(touched), ok ? "" : " FAILED");
    Line(name, us, flops, bytes, hbm, kFp8Tflops);
    std::printf("    -> %.0f%% of the copy rate (graph of 20 launches)\n", 100.0 * bytes / (us * 1e-6) / 1e9 / hbm);
    cudaFree(doff), cudaFree(x), cudaFree(y);
  }
  cudaFree(w), cudaFree(sc);
  return 0;
}

// Whole R1 layers at real size through the GPU model: decode steps at 4K context and a 4K prefill.
//   build-gpu/bench/gpu/bench_gpu_layer [--dir /tmp/r1-layer] [--ctx 4096] [--steps 10] [--keep]
//                                       [--batches 1,8,64,256] [--no-depth]
//   build-gpu/bench/gpu/bench_gpu_layer --profile [--batches 1]: only the 4-layer model's decode
//       steps (no prefill: the cache rows are zeros), one step per batch between
//       cudaProfilerStart/Stop, for `ncu --profile-from-start off` (per-kernel times of one step).
//   build-gpu/bench/gpu/bench_gpu_layer --ep-shard [--ep-batches 64,128,256,512] [--ctx 2048]
// 1. Writes (or reuses) a checkpoint of R1's first 4 layers (3 dense + 1 MoE with 256 experts,
//    bench/gpu/r1_checkpoint.h), and beside it two configs over the same shards that stop after 3
//    and after 1 layer (dense only), so that one MoE layer's and one dense layer's time come out as
//    differences of whole-model steps: moe = T(4) - T(3), dense = (T(3) - T(1)) / 2, and the
//    rest of a step (embedding, final norm, lm_head, sampling, host work) = T(1) - dense.
// 2. For each model (GpuDeepseekV3Model, FP8 activations, CUDA graphs for decode): one prefill of
//    `ctx` tokens into a cache of its own (timed after a warm-up), then for batch 1, 8, 64, 256 a
//    cache with distinct blocks per sequence, each sequence's first `ctx` positions a device copy
//    of the prefilled blocks (distinct memory, so the attention reads B x ctx real cache rows), and
//    decode steps at position `ctx` (ForwardSample, greedy, wall time per step: what a server sees).
// 3. Floors: bytes (weights the step touches, FP8 as stored in the checkpoint, + cache rows read)
//    over the device-to-device copy rate measured here; flops (linear layers at the FP8 dense rate
//    1979 TFLOP/s, attention at the bf16 rate 989 TFLOP/s). Routed experts touched by a batch of
//    B tokens: 256 * (1 - (1 - 8/256)^B), the expectation under uniform routing (an estimate).
// 4. A projection of the 61-layer model (3 dense + 58 MoE) from the per-layer times, and then a
//    layer-aliased 61-layer run (GpuModelOptions::weight_layers = 4: layers 3..60 all run layer
//    3's weights, each with its own cache layer) at batch 1 and 64 and one 4K prefill.
// 5. --ep-shard instead: one GPU's share of an 8-GPU expert-parallel deployment (EpShard below),
//    61 layers layer-aliased with 4 shared cache layers, decode output tokens/s per GPU at 64–512
//    sequences of 2K context, against its floor and the 3000 tokens/s target; no communication.
#include <cuda_profiler_api.h>
#include <cuda_runtime.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_split.h"
#include "bench/gpu/r1_checkpoint.h"
#include "worker/model/gpu_model.h"

namespace {

using Clock = std::chrono::steady_clock;
// GpuModelOptions::parallel_lanes of every model the benchmark loads (--serial: false).
bool parallel_lanes = true;
// GpuModelOptions::fp8_absorb_max_rows of every model (--fp8-absorb N).
int64_t fp8_absorb_max_rows = r1::GpuModelOptions{}.fp8_absorb_max_rows;
double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

#define CHECK_CUDA(x)                                                                  \
  do {                                                                                 \
    cudaError_t e_ = (x);                                                              \
    if (e_ != cudaSuccess) {                                                           \
      std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); \
      std::exit(1);                                                                    \
    }                                                                                  \
  } while (0)

template <typename T>
T OrDie(absl::StatusOr<T> s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "error: %s: %s\n", what, std::string(s.status().message()).c_str());
    std::exit(1);
  }
  return std::move(*s);
}

// Device-to-device copy of 4 GB, read + write bytes per second (as bench_gpu measures it).
double MeasureCopyGBs() {
  const size_t bytes = size_t{4} << 30;
  void *src = nullptr, *dst = nullptr;
  CHECK_CUDA(cudaMalloc(&src, bytes));
  CHECK_CUDA(cudaMalloc(&dst, bytes));
  for (int i = 0; i < 3; ++i) CHECK_CUDA(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
  cudaEvent_t a, b;
  cudaEventCreate(&a);
  cudaEventCreate(&b);
  std::vector<float> ms(10);
  for (float& m : ms) {
    cudaEventRecord(a);
    cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice);
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    cudaEventElapsedTime(&m, a, b);
  }
  std::sort(ms.begin(), ms.end());
  cudaFree(src);
  cudaFree(dst);
  return 2.0 * bytes / (ms[5] * 1e-3) / 1e9;
}

// R1's sizes (parameters per token unless said otherwise).
constexpr double kH = 7168, kVocab = 129280, kHeads = 128, kLatent = 576, kKvRank = 512;
constexpr double kAttnParams = 1536 * kH + 24576 * 1536 + 576 * kH + 2 * kHeads * 128 * kKvRank + kH * 16384;
constexpr double kDenseMlpParams = 3 * 18432 * kH;
constexpr double kExpertParams = 3 * 2048 * kH;
constexpr double kRouterParams = 256 * kH;
constexpr double kFp8Rate = 1979e12, kBf16Rate = 989e12;

double ExpertsTouched(double tokens) { return 256.0 * (1.0 - std::pow(1.0 - 8.0 / 256.0, tokens)); }

struct Work {
  double bytes = 0, gemm_flops = 0, attn_flops = 0;
  Work& operator+=(const Work& o) {
    bytes += o.bytes, gemm_flops += o.gemm_flops, attn_flops += o.attn_flops;
    return *this;
  }
  Work operator*(double k) const { return {bytes * k, gemm_flops * k, attn_flops * k}; }
  double bytes_us(double gbs) const { return bytes / (gbs * 1e3); }
  double flops_us() const { return (gemm_flops / kFp8Rate + attn_flops / kBf16Rate) * 1e6; }
  double floor_us(double gbs) const { return std::max(bytes_us(gbs), flops_us()); }
};

// One layer's work for a decode step of `b` sequences at context `ctx` (one new token each), or a
// prefill of `b` tokens (prefill = true: causal attention over the chunk, expanded form's flops,
// every routed expert touched).
// touched: routed experts the batch's routing touched, as measured (GpuDeepseekV3Model::
// LastExpertRows); < 0: the uniform-routing expectation.
Work LayerWork(bool moe, double b, double ctx, bool prefill, double touched = -1) {
  Work w;
  const double params = moe ? kAttnParams + kRouterParams + kExpertParams : kAttnParams + kDenseMlpParams;
  if (touched < 0) touched = ExpertsTouched(b);
  // kv_b_proj's absorbed halves (w_uk, w_uv) are kv_b_proj's parameters: counted as its FP8 bytes
  // (the checkpoint's form; the model keeps them in float32, 4x that).
  w.bytes = kAttnParams + (moe ? 2 * kRouterParams + kExpertParams + touched * kExpertParams : kDenseMlpParams);
  w.gemm_flops = 2 * b * (params + (moe ? 8 * kExpertParams : 0));
  if (prefill) {
    w.bytes += b * kLatent * 2;                                      // cache rows written
    w.attn_flops = 2 * kHeads * (192 + 128) * b * (b + 1) / 2;       // expanded form, causal
  } else {
    w.bytes += b * ctx * kLatent * 2;                                // cache rows read
    w.attn_flops = 2 * b * kHeads * ctx * (kLatent + kKvRank);       // absorbed form
  }
  return w;
}
// Embedding rows, final norm and lm_head for the rows that need logits (bf16 lm_head).
Work RestWork(double rows) { return {2 * kVocab * kH + rows * kH * 2, 2 * rows * kVocab * kH, 0}; }

struct Timings {
  double prefill_us = 0;
  std::map<int, double> decode_us;  // by batch
  // Routed experts with rows in the last MoE layer (-1: no MoE layer), and the most rows one got.
  double prefill_touched = -1;
  std::map<int, double> touched;
  std::map<int, int> max_rows;
};

// Experts with rows, and the largest row count, in the model's last MoE layer of its last step.
std::pair<double, int> Touched(r1::GpuDeepseekV3Model& model) {
  const std::vector<int32_t> rows = OrDie(model.LastExpertRows(), "expert rows");
  if (rows.empty()) return {-1, 0};
  return {static_cast<double>(std::count_if(rows.begin(), rows.end(), [](int32_t r) { return r > 0; })),
          *std::max_element(rows.begin(), rows.end())};
}

// A decode step of b sequences at position ctx, one token each (spread over the vocabulary),
// sequence s owning cache blocks [s * seq_blocks, (s + 1) * seq_blocks).
std::vector<r1::SequenceStep> DecodeBatch(int b, int ctx, int64_t seq_blocks) {
  std::vector<r1::SequenceStep> batch(b);
  for (int s = 0; s < b; ++s) {
    batch[s].tokens = {static_cast<int32_t>((s * 104729 + 5) % 129280)};
    batch[s].start_position = ctx;
    for (int64_t k = 0; k < seq_blocks; ++k) batch[s].block_table.push_back(static_cast<int32_t>(s * seq_blocks + k));
  }
  return batch;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// weight_layers > 0: a layer-aliased model (GpuModelOptions::weight_layers). prefill_reps: timed
// prefills after one warm-up (0: a single prefill, timed, no warm-up).
// kv_layers > 0: the cache has that many layers, shared round-robin by the model's layers
// (GpuModelOptions::kv_layers; timing only).
Timings RunModel(const std::string& dir, int ctx, const std::vector<int>& batches, int steps,
                 int64_t weight_layers = 0, int prefill_reps = 2, int64_t kv_layers = 0) {
  r1::GpuModelOptions options;
  options.activations = r1::GpuActivations::kFp8;
  options.parallel_lanes = parallel_lanes;
  options.fp8_absorb_max_rows = fp8_absorb_max_rows;
  options.weight_layers = weight_layers;
  options.kv_layers = kv_layers;
  options.max_step_tokens = std::max(ctx, *std::max_element(batches.begin(), batches.end()));
  auto t0 = Clock::now();
  auto model = OrDie(r1::GpuDeepseekV3Model::Load(dir, options), "load");
  const r1::ModelConfig& c = model->config();
  r1::ModelConfig cache_config = c;  // the cache's shape: kv_layers layers when they are shared
  if (kv_layers > 0) cache_config.num_hidden_layers = kv_layers;
  std::printf("\n== %s: %lld layers (%lld dense)%s, %.2f GB on the device, loaded in %.1f s\n", dir.c_str(),
              static_cast<long long>(c.num_hidden_layers), static_cast<long long>(c.first_k_dense_replace),
              weight_layers > 0 ? absl::StrCat(", layer-aliased: layers >= ", weight_layers - 1, " run layer ",
                                               weight_layers - 1, "'s weights").c_str() : "",
              model->device_weight_bytes() / 1e9, Seconds(t0, Clock::now()));
  constexpr int64_t kBlock = 64;
  const int64_t ctx_blocks = (ctx + kBlock - 1) / kBlock, seq_blocks = (ctx + 1 + kBlock - 1) / kBlock;
  Timings out;

  // Prefill of `ctx` tokens, one sequence, one step.
  auto pcache = OrDie(r1::GpuKvCache::Create(cache_config, seq_blocks, kBlock), "cache");
  r1::SequenceStep pre;
  for (int i = 0; i < ctx; ++i) pre.tokens.push_back(static_cast<int32_t>((i * 7919 + 13) % 129280));
  for (int64_t b = 0; b < seq_blocks; ++b) pre.block_table.push_back(static_cast<int32_t>(b));
  const std::vector<r1::cuda::SamplingRow> one(1);
  std::vector<double> pre_us;
  const int warmups = prefill_reps > 0 ? 1 : 0;
  for (int rep = 0; rep < warmups + std::max(prefill_reps, 1); ++rep) {
    t0 = Clock::now();
    OrDie(model->ForwardSample({pre}, pcache, one), "prefill");
    if (rep >= warmups) pre_us.push_back(Seconds(t0, Clock::now()) * 1e6);
  }
  out.prefill_us = *std::min_element(pre_us.begin(), pre_us.end());
  out.prefill_touched = Touched(*model).first;
  std::printf("prefill %d tokens: %.0f us (best of %zu%s) = %.0f tokens/s\n", ctx, out.prefill_us, pre_us.size(),
              warmups ? " after a warm-up" : ", no warm-up", ctx / (out.prefill_us * 1e-6));

  for (int b : batches) {
    auto cache = OrDie(r1::GpuKvCache::Create(cache_config, b * seq_blocks, kBlock), "cache");
    // Every sequence's first ctx_blocks blocks: a copy of the prefilled ones, per layer.
    const size_t elem = sizeof(__nv_bfloat16), block_bytes = pcache.block_stride() * elem;
    for (int64_t l = 0; l < cache.layers; ++l) {
      const char* src = pcache.data.as<char>() + l * pcache.layer_stride() * elem;
      for (int s = 0; s < b; ++s) {
        char* dst = cache.data.as<char>() + (l * cache.layer_stride() + s * seq_blocks * cache.block_stride()) * elem;
        CHECK_CUDA(cudaMemcpy(dst, src, ctx_blocks * block_bytes, cudaMemcpyDeviceToDevice));
      }
    }
    const std::vector<r1::SequenceStep> batch = DecodeBatch(b, ctx, seq_blocks);
    const std::vector<r1::cuda::SamplingRow> rows(b);
    const int64_t replays0 = model->graph_replays();
    std::vector<double> us;
    for (int i = 0; i < steps + 2; ++i) {
      t0 = Clock::now();
      OrDie(model->ForwardSample(batch, cache, rows), "decode");
      if (i >= 2) us.push_back(Seconds(t0, Clock::now()) * 1e6);
    }
    out.decode_us[b] = Median(us);
    const auto [touched, max_rows] = Touched(*model);
    out.touched[b] = touched;
    out.max_rows[b] = max_rows;
    std::printf("decode batch %3d, context %d: %.0f us per step (median of %d; %lld graph replays) = %.0f tokens/s"
                "; last MoE layer: %.0f experts with rows, at most %d rows\n", b, ctx, out.decode_us[b], steps,
                static_cast<long long>(model->graph_replays() - replays0), b / (out.decode_us[b] * 1e-6), touched,
                max_rows);
  }
  return out;
}

// Decode steps of the model in `dir` at position `ctx` for each batch, the cache rows left at zero
// (the bytes read are a real step's; the values do not matter for timing): a few warm-up steps
// (graph capture), then exactly one step between cudaProfilerStart and cudaProfilerStop, so that a
// profiler started with its capture off (`ncu --profile-from-start off`) sees one step's kernels.
int Profile(const std::string& dir, int ctx, const std::vector<int>& batches) {
  r1::GpuModelOptions options;
  options.activations = r1::GpuActivations::kFp8;
  options.parallel_lanes = parallel_lanes;
  options.fp8_absorb_max_rows = fp8_absorb_max_rows;
  options.max_step_tokens = *std::max_element(batches.begin(), batches.end());
  auto model = OrDie(r1::GpuDeepseekV3Model::Load(dir, options), "load");
  constexpr int64_t kBlock = 64;
  const int64_t seq_blocks = (ctx + 1 + kBlock - 1) / kBlock;
  for (int b : batches) {
    auto cache = OrDie(r1::GpuKvCache::Create(model->config(), b * seq_blocks, kBlock), "cache");
    const std::vector<r1::SequenceStep> batch = DecodeBatch(b, ctx, seq_blocks);
    const std::vector<r1::cuda::SamplingRow> rows(b);
    std::vector<double> us;
    for (int i = 0; i < 8; ++i) {
      const auto t0 = Clock::now();
      OrDie(model->ForwardSample(batch, cache, rows), "decode");
      if (i >= 2) us.push_back(Seconds(t0, Clock::now()) * 1e6);
    }
    CHECK_CUDA(cudaProfilerStart());
    OrDie(model->ForwardSample(batch, cache, rows), "decode");
    CHECK_CUDA(cudaProfilerStop());
    std::printf("profile: decode batch %d, context %d: %.0f us per step unprofiled (median of %zu)\n", b, ctx,
                Median(us), us.size());
  }
  return 0;
}

// A config of `layers` layers over `src`'s shards (fewer: the loader reads only those; more: for a
// layer-aliased model).
std::string Truncated(const std::string& src, int layers, int64_t experts = 256) {
  const std::string dir = src + "-" + std::to_string(layers);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  for (const auto& e : std::filesystem::directory_iterator(src)) {
    const std::string name = e.path().filename().string();
    if (name != "config.json") std::filesystem::create_symlink(e.path(), dir + "/" + name);
  }
  std::ofstream(dir + "/config.json") << r1::bench::ConfigJson(layers, experts);
  return dir;
}

// One GPU of an 8-GPU expert-parallel deployment, per decode step: attention (all 128 heads) and
// the shared expert for its own `b` sequences, and 32 of the 256 routed experts, which receive the
// tokens of all 8 GPUs routed to them: 8b tokens x 8 choices x 32/256 = 8b rows, b/4 per expert
// under uniform routing. A 32-expert model whose b tokens each pick 8 of its 32 experts does exactly
// that many rows of expert work, so the shard is run as such a model (layer-aliased to 61 layers,
// cache layers shared: GpuModelOptions::kv_layers). The dispatch/combine all-to-all and the
// network are not included.
Work EpShardLayerWork(bool moe, double b, double ctx) {
  constexpr double kLocalExperts = 32, kLocalRouter = kLocalExperts * kH;
  Work w;
  w.bytes = kAttnParams + b * ctx * kLatent * 2;
  w.gemm_flops = 2 * b * kAttnParams;
  if (moe) {
    const double touched = kLocalExperts * (1.0 - std::pow(1.0 - 8.0 / kLocalExperts, b));
    w.bytes += 2 * kLocalRouter + kExpertParams + touched * kExpertParams;  // router (f32), shared, routed
    w.gemm_flops += 2 * b * (kLocalRouter + kExpertParams + 8 * kExpertParams);
  } else {
    w.bytes += kDenseMlpParams;
    w.gemm_flops += 2 * b * kDenseMlpParams;
  }
  w.attn_flops = 2 * b * kHeads * ctx * (kLatent + kKvRank);
  return w;
}

int EpShard(const std::string& dir, int ctx, int steps, const std::vector<int>& batches, bool keep, double gbs) {
  constexpr int64_t kLocalExperts = 32;
  auto t0 = Clock::now();
  if (std::ifstream(dir + "/config.json").good() && std::ifstream(dir + "/model.safetensors.index.json").good()) {
    std::printf("reusing the checkpoint in %s\n", dir.c_str());
  } else {
    const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    const r1::bench::Written w = r1::bench::WriteCheckpoint(dir, 4, cores, kLocalExperts);
    std::printf("wrote %zu shard(s), %.2f GB, 4 layers (3 dense + 1 MoE with %lld routed experts) in %.1f s\n",
                w.files.size(), w.data_bytes / 1e9, static_cast<long long>(kLocalExperts), Seconds(t0, Clock::now()));
  }
  const std::string depth = Truncated(dir, 61, kLocalExperts);
  const Timings t = RunModel(depth, ctx, batches, steps, /*weight_layers=*/4, /*prefill_reps=*/0, /*kv_layers=*/4);
  std::printf("\nExpert-parallel shard (one GPU of 8: all 128 heads for its own sequences, 32 of 256 experts "
              "receiving 8 x its tokens' rows), 61 layers layer-aliased, context %d, communication excluded.\n"
              "Floor: bytes at %.0f GB/s, flops at FP8 %.0f / bf16 %.0f TFLOP/s. Target 3000 tokens/s per GPU.\n",
              ctx, gbs, kFp8Rate / 1e12, kBf16Rate / 1e12);
  std::printf("| sequences | step ms | tokens/s per GPU | floor ms | floor tokens/s | measured/floor | vs 3000 |\n");
  for (int b : batches) {
    Work all = RestWork(b);
    all += EpShardLayerWork(false, b, ctx) * 3;
    all += EpShardLayerWork(true, b, ctx) * 58;
    const double us = t.decode_us.at(b), floor_us = all.floor_us(gbs);
    std::printf("| %d | %.1f | %.0f | %.1f | %.0f | %.2f | %.2f |\n", b, us / 1e3, b / (us * 1e-6), floor_us / 1e3,
                b / (floor_us * 1e-6), us / floor_us, b / (us * 1e-6) / 3000.0);
  }
  if (!keep) {
    std::filesystem::remove_all(depth);
    std::filesystem::remove_all(dir);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = "/tmp/r1-layer";
  int ctx = 4096, steps = 10;
  bool keep = false, ep_shard = false, ctx_given = false, depth = true, profile = false;
  std::vector<int> batches = {1, 8, 64, 256};
  std::vector<int> ep_batches = {64, 128, 256, 512};
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--dir" && i + 1 < argc) dir = argv[++i];
    else if (a == "--ctx" && i + 1 < argc) ctx = std::atoi(argv[++i]), ctx_given = true;
    else if (a == "--steps" && i + 1 < argc) steps = std::atoi(argv[++i]);
    else if (a == "--keep") keep = true;
    else if (a == "--ep-shard") ep_shard = true;
    else if (a == "--no-depth") depth = false;
    else if (a == "--profile") profile = true;
    else if (a == "--serial") parallel_lanes = false;
    else if (a == "--fp8-absorb" && i + 1 < argc) fp8_absorb_max_rows = std::atol(argv[++i]);
    else if ((a == "--ep-batches" || a == "--batches") && i + 1 < argc) {
      std::vector<int>& list = a == "--batches" ? batches : ep_batches;
      list.clear();
      for (absl::string_view v : absl::StrSplit(argv[++i], ',')) list.push_back(std::atoi(std::string(v).c_str()));
    } else {
      std::fprintf(stderr,
                   "usage: %s [--dir D] [--ctx N] [--steps N] [--keep] [--batches 1,8,64,256] [--no-depth]\n"
                   "          [--profile] [--serial] [--fp8-absorb N] [--ep-shard [--ep-batches 64,128,256,512]]\n"
                   "  --no-depth: leave out the layer-aliased 61-layer run\n"
                   "  --profile: only one decode step per batch of the 4-layer model between cudaProfilerStart/Stop\n"
                   "  --serial: every layer's work on one stream (GpuModelOptions::parallel_lanes = false)\n"
                   "  --fp8-absorb N: steps of at most N rows run the absorbed MLA products from kv_b_proj's FP8\n"
                   "              codes (GpuModelOptions::fp8_absorb_max_rows; default: the option's default)\n"
                   "  --ep-shard: instead of the layer runs, the expert-parallel shard's decode at context 2048\n"
                   "              (or --ctx) for the given sequence counts\n",
                   argv[0]);
      return 2;
    }
  }
  auto bad = [](const std::vector<int>& v) { return v.empty() || *std::min_element(v.begin(), v.end()) < 1; };
  if (ctx < 1 || steps < 1 || bad(ep_batches) || bad(batches)) return 2;
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  const double gbs = MeasureCopyGBs();
  std::printf("%s, measured device copy rate %.0f GB/s\n", prop.name, gbs);
  if (ep_shard) return EpShard(dir + "-ep", ctx_given ? ctx : 2048, steps, ep_batches, keep, gbs);

  auto t0 = Clock::now();
  if (std::ifstream(dir + "/config.json").good() && std::ifstream(dir + "/model.safetensors.index.json").good()) {
    std::printf("reusing the checkpoint in %s\n", dir.c_str());
  } else {
    const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    const r1::bench::Written w = r1::bench::WriteCheckpoint(dir, 4, cores);
    std::printf("wrote %zu shard(s), %.2f GB, 4 layers (3 dense + 1 MoE) in %.1f s\n", w.files.size(),
                w.data_bytes / 1e9, Seconds(t0, Clock::now()));
  }
  if (profile) return Profile(dir, ctx, batches);
  const Timings t4 = RunModel(dir, ctx, batches, steps);
  const Timings t3 = RunModel(Truncated(dir, 3), ctx, batches, steps);
  const Timings t1 = RunModel(Truncated(dir, 1), ctx, batches, steps);

  std::printf("\nPer layer (moe = T4 - T3, dense = (T3 - T1) / 2, rest = T1 - dense); floors at %.0f GB/s,\n"
              "FP8 %.0f / bf16 %.0f TFLOP/s; experts touched: uniform-routing expectation.\n",
              gbs, kFp8Rate / 1e12, kBf16Rate / 1e12);
  std::printf("Experts touched: as measured in the MoE layer's routing (uniform-routing expectation in brackets).\n");
  std::printf("| step | experts | MoE layer us | bytes floor us | flops floor us | ratio | floor/meas | dense layer us | "
              "dense floor us | ratio | rest us | 4-layer step us | 4-layer floor us |\n");
  auto row = [&](const char* name, double b, bool prefill, double m4, double m3, double m1, double touched) {
    const double ctxd = prefill ? 0 : ctx;
    const Work moe = LayerWork(true, b, ctxd, prefill, touched), dense = LayerWork(false, b, ctxd, prefill);
    const double moe_us = m4 - m3, dense_us = (m3 - m1) / 2, rest_us = m1 - dense_us;
    Work all = RestWork(prefill ? 1 : b);
    all += dense * 3;
    all += moe;
    std::printf("| %s | %.0f (%.0f) | %.0f | %.0f | %.0f | %.2f | %.0f%% | %.0f | %.0f | %.2f | %.0f | %.0f | %.0f |\n",
                name, touched >= 0 ? touched : ExpertsTouched(b), prefill ? 256.0 : ExpertsTouched(b), moe_us, moe.bytes_us(gbs), moe.flops_us(), moe_us / moe.floor_us(gbs),
                100 * moe.floor_us(gbs) / moe_us, dense_us, dense.floor_us(gbs), dense_us / dense.floor_us(gbs), rest_us,
                m4, all.floor_us(gbs));
    return std::array<double, 3>{moe_us, dense_us, rest_us};
  };
  std::map<int, std::array<double, 3>> per;
  for (int b : batches) {
    const std::string name = "decode B=" + std::to_string(b);
    per[b] = row(name.c_str(), b, false, t4.decode_us.at(b), t3.decode_us.at(b), t1.decode_us.at(b), t4.touched.at(b));
  }
  const std::string pname = "prefill " + std::to_string(ctx);
  const auto pp = row(pname.c_str(), ctx, true, t4.prefill_us, t3.prefill_us, t1.prefill_us, t4.prefill_touched);

  std::printf("\nProjection to 61 layers (3 dense + 58 MoE; rest + 3 dense + 58 MoE from the times above; NOT a run):\n");
  for (int b : batches) {
    const auto& p = per[b];
    const double us = p[2] + 3 * p[1] + 58 * p[0];
    Work all = RestWork(b);
    all += LayerWork(false, b, ctx, false) * 3;
    all += LayerWork(true, b, ctx, false, t4.touched.at(b)) * 58;
    std::printf("  decode batch %3d: %.1f ms per step = %.0f tokens/s (floor %.1f ms = %.0f tokens/s)\n", b, us / 1e3,
                b / (us * 1e-6), all.floor_us(gbs) / 1e3, b / (all.floor_us(gbs) * 1e-6));
  }
  {
    const double us = pp[2] + 3 * pp[1] + 58 * pp[0];
    Work all = RestWork(1);
    all += LayerWork(false, ctx, 0, true) * 3;
    all += LayerWork(true, ctx, 0, true, t4.prefill_touched) * 58;
    std::printf("  prefill %d tokens: %.2f s = %.0f tokens/s (floor %.3f s = %.0f tokens/s)\n", ctx, us / 1e6,
                ctx / (us * 1e-6), all.floor_us(gbs) / 1e6, ctx / (all.floor_us(gbs) * 1e-6));
  }
  // Full depth, layer-aliased: a 61-layer config over the same shards, layers 3..60 all running
  // layer 3's weights (each with its own cache layer). A run, not a projection.
  if (depth) {
    const std::vector<int> depth_batches = {1, 64};
    const Timings t61 = RunModel(Truncated(dir, 61), ctx, depth_batches, steps, /*weight_layers=*/4, /*prefill_reps=*/0);
    std::printf("\nFull depth, layer-aliased 61-layer run (3 dense + 58 MoE on one MoE layer's weights):\n");
    for (int b : depth_batches) {
      std::printf("  decode batch %3d, context %d: %.1f ms per step = %.0f tokens/s (projection above: %.1f ms)\n", b, ctx,
                  t61.decode_us.at(b) / 1e3, b / (t61.decode_us.at(b) * 1e-6),
                  (per[b][2] + 3 * per[b][1] + 58 * per[b][0]) / 1e3);
    }
    std::printf("  prefill %d tokens: %.2f s = %.0f tokens/s\n", ctx, t61.prefill_us / 1e6, ctx / (t61.prefill_us * 1e-6));
  }
  if (!keep) {
    std::filesystem::remove_all(dir + "-61");
    std::filesystem::remove_all(dir + "-3");
    std::filesystem::remove_all(dir + "-1");
    std::filesystem::remove_all(dir);
  }
  return 0;
}

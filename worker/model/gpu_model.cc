#include "worker/model/gpu_model.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/grouped_gemv.h"
#include "kernels/cuda/moe_permute.h"
#include "kernels/cuda/router.h"
#include "kernels/cuda/mla_decode.h"
#include "kernels/cuda/model_ops.h"
#include "kernels/cuda/rmsnorm.h"

namespace r1 {
namespace {

absl::Status CudaCheck(cudaError_t e, absl::string_view what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": ", cudaGetErrorString(e)));
}

template <typename T>
absl::StatusOr<DeviceMemory> Upload(const T* data, size_t count) {
  R1_ASSIGN_OR_RETURN(DeviceMemory m, DeviceMemory::Allocate(count * sizeof(T)));
  R1_RETURN_IF_ERROR(CudaCheck(cudaMemcpy(m.ptr, data, count * sizeof(T), cudaMemcpyHostToDevice), "upload"));
  return m;
}

std::vector<uint16_t> ToBf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = FloatToBf16(v[i]);
  return out;
}

}  // namespace

DeviceMemory& DeviceMemory::operator=(DeviceMemory&& o) noexcept {
  if (this != &o) {
    if (ptr) cudaFree(ptr);
    ptr = o.ptr;
    bytes = o.bytes;
    o.ptr = nullptr;
    o.bytes = 0;
  }
  return *this;
}

DeviceMemory::~DeviceMemory() {
  if (ptr) cudaFree(ptr);
}

absl::StatusOr<DeviceMemory> DeviceMemory::Allocate(size_t bytes) {
  DeviceMemory m;
  if (bytes == 0) bytes = 16;
  const cudaError_t e = cudaMalloc(&m.ptr, bytes);
  if (e != cudaSuccess) {
    m.ptr = nullptr;
    return absl::ResourceExhaustedError(absl::StrCat("cudaMalloc of ", bytes, " bytes: ", cudaGetErrorString(e)));
  }
  m.bytes = bytes;
  return m;
}

absl::StatusOr<GpuKvCache> GpuKvCache::Create(const ModelConfig& c, int64_t blocks, int64_t block_size) {
  if (blocks <= 0 || block_size <= 0) return absl::InvalidArgumentError("gpu kv cache: blocks and block size must be positive");
  GpuKvCache k;
  k.layers = c.num_hidden_layers;
  k.blocks = blocks;
  k.block_size = block_size;
  k.latent = c.kv_latent_dim();
  R1_ASSIGN_OR_RETURN(k.data, DeviceMemory::Allocate(static_cast<size_t>(k.layers * k.layer_stride()) * 2));
  R1_RETURN_IF_ERROR(CudaCheck(cudaMemset(k.data.ptr, 0, k.data.bytes), "kv cache clear"));
  return k;
}

absl::StatusOr<std::unique_ptr<GpuDeepseekV3Model>> GpuDeepseekV3Model::Load(const std::string& model_dir,
                                                                            const GpuModelOptions& options) {
  if (options.max_step_tokens < 1 || options.max_step_tokens > (1 << 20)) {
    return absl::InvalidArgumentError("max_step_tokens must be in [1, 2^20]");
  }
  auto m = std::unique_ptr<GpuDeepseekV3Model>(new GpuDeepseekV3Model());
  m->options_ = options;
  R1_ASSIGN_OR_RETURN(m->config_, LoadModelConfig(model_dir));
  R1_ASSIGN_OR_RETURN(auto ckpt, Checkpoint::Open(model_dir));
  R1_RETURN_IF_ERROR(CudaCheck(cudaStreamCreateWithFlags(&m->stream_, cudaStreamNonBlocking), "stream"));
  R1_ASSIGN_OR_RETURN(m->gemm_, cuda::GemmRunner::Create());
  R1_RETURN_IF_ERROR(m->LoadWeights(*ckpt));
  R1_RETURN_IF_ERROR(m->AllocateWorkspace());
  return m;
}

GpuDeepseekV3Model::~GpuDeepseekV3Model() {
  for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
  if (stream_) cudaStreamDestroy(stream_);
}

absl::Status GpuDeepseekV3Model::LoadWeights(const Checkpoint& ckpt) {
  const ModelConfig& c = config_;
  const int64_t h = c.hidden_size, nh = c.num_attention_heads, qk = c.qk_head_dim();
  const int64_t nope = c.qk_nope_head_dim, vd = c.v_head_dim, kvr = c.kv_lora_rank;
  auto count = [&](const DeviceMemory& d) { weight_bytes_ += d.bytes; };
  // A linear weight exactly as stored when it is FP8 (codes and block scales copied as they are),
  // converted to bf16 otherwise.
  auto linear = [&](const std::string& name, int64_t n, int64_t k, GpuLinear* out) -> absl::Status {
    R1_ASSIGN_OR_RETURN(TensorView t, ckpt.Get(name, {n, k}));
    out->n = n;
    out->k = k;
    if (t.dtype == DType::kF8E4M3) {
      if (!c.fp8 || c.fp8->block_rows != 128 || c.fp8->block_cols != 128) {
        return absl::FailedPreconditionError(absl::StrCat(t.file, ": tensor ", name, ": FP8 needs 128x128 block scales"));
      }
      const std::string sname = name.substr(0, name.size() - 7) + ".weight_scale_inv";
      auto s = ckpt.Get(sname, {(n + 127) / 128, (k + 127) / 128});
      if (!s.ok()) return Annotate(s.status(), absl::StrCat(t.file, ": scales of FP8 tensor ", name));
      if (s->dtype != DType::kF32) return absl::FailedPreconditionError(absl::StrCat(s->file, ": tensor ", sname, ": expected F32"));
      out->fp8 = true;
      out->k_stored = cuda::Fp8PaddedK(k);
      std::vector<uint8_t> padded(static_cast<size_t>(n * out->k_stored), 0);
      for (int64_t r = 0; r < n; ++r) std::memcpy(padded.data() + r * out->k_stored, t.data + r * k, k);
      R1_ASSIGN_OR_RETURN(out->w, Upload(padded.data(), padded.size()));
      const int64_t nb = (n + 127) / 128, kb = (k + 127) / 128, stride = cuda::Fp8ScaleStride(out->k_stored);
      out->scale_stride = stride;
      std::vector<float> scales(static_cast<size_t>(nb * stride), 1.0f);
      for (int64_t r = 0; r < nb; ++r) std::memcpy(scales.data() + r * stride, s->data + r * kb * 4, kb * 4);
      R1_ASSIGN_OR_RETURN(out->scales, Upload(scales.data(), scales.size()));
      count(out->w);
      count(out->scales);
      return absl::OkStatus();
    }
    out->k_stored = k;
    R1_ASSIGN_OR_RETURN(Matrix mat, LoadMatrix(ckpt, c, name, n, k));
    const std::vector<uint16_t> b = ToBf16(mat.data);
    R1_ASSIGN_OR_RETURN(out->w, Upload(b.data(), b.size()));
    count(out->w);
    return absl::OkStatus();
  };
  auto vec = [&](const std::string& name, int64_t n, DeviceMemory* out) -> absl::Status {
    R1_ASSIGN_OR_RETURN(std::vector<float> v, LoadVector(ckpt, name, n));
    R1_ASSIGN_OR_RETURN(*out, Upload(v.data(), v.size()));
    count(*out);
    return absl::OkStatus();
  };
  auto mlp = [&](const std::string& p, int64_t inter, Mlp* w) -> absl::Status {
    R1_RETURN_IF_ERROR(linear(p + "gate_proj.weight", inter, h, &w->gate));
    R1_RETURN_IF_ERROR(linear(p + "up_proj.weight", inter, h, &w->up));
    return linear(p + "down_proj.weight", h, inter, &w->down);
  };

  {
    R1_ASSIGN_OR_RETURN(Matrix e, LoadMatrix(ckpt, c, "model.embed_tokens.weight", c.vocab_size, h));
    const std::vector<uint16_t> b = ToBf16(e.data);
    R1_ASSIGN_OR_RETURN(embed_, Upload(b.data(), b.size()));
    count(embed_);
  }
  const std::vector<float> inv = RopeInverseFrequencies(c);
  R1_ASSIGN_OR_RETURN(inv_freq_, Upload(inv.data(), inv.size()));
  layers_.resize(c.num_hidden_layers);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    Layer& L = layers_[i];
    const std::string p = absl::StrCat("model.layers.", i, ".");
    auto st = [&]() -> absl::Status {
      R1_RETURN_IF_ERROR(vec(p + "input_layernorm.weight", h, &L.input_norm));
      R1_RETURN_IF_ERROR(vec(p + "post_attention_layernorm.weight", h, &L.post_norm));
      const std::string a = p + "self_attn.";
      if (c.q_lora_rank) {
        R1_RETURN_IF_ERROR(linear(a + "q_a_proj.weight", *c.q_lora_rank, h, &L.q_a));
        R1_RETURN_IF_ERROR(vec(a + "q_a_layernorm.weight", *c.q_lora_rank, &L.q_a_norm));
        R1_RETURN_IF_ERROR(linear(a + "q_b_proj.weight", nh * qk, *c.q_lora_rank, &L.q_b));
      } else {
        R1_RETURN_IF_ERROR(linear(a + "q_proj.weight", nh * qk, h, &L.q));
      }
      R1_RETURN_IF_ERROR(linear(a + "kv_a_proj_with_mqa.weight", c.kv_latent_dim(), h, &L.kv_a));
      R1_RETURN_IF_ERROR(vec(a + "kv_a_layernorm.weight", kvr, &L.kv_a_norm));
      R1_RETURN_IF_ERROR(linear(a + "o_proj.weight", h, nh * vd, &L.o));
      // kv_b_proj split into its K half [NH, nope, kvr] and V half [NH, v, kvr] for absorption.
      R1_ASSIGN_OR_RETURN(Matrix kvb, LoadMatrix(ckpt, c, a + "kv_b_proj.weight", nh * (nope + vd), kvr));
      std::vector<float> uk(nh * nope * kvr), uv(nh * vd * kvr);
      for (int64_t hh = 0; hh < nh; ++hh) {
        std::memcpy(uk.data() + hh * nope * kvr, kvb.row(hh * (nope + vd)), nope * kvr * sizeof(float));
        std::memcpy(uv.data() + hh * vd * kvr, kvb.row(hh * (nope + vd) + nope), vd * kvr * sizeof(float));
      }
      R1_ASSIGN_OR_RETURN(L.w_uk, Upload(uk.data(), uk.size()));
      R1_ASSIGN_OR_RETURN(L.w_uv, Upload(uv.data(), uv.size()));
      count(L.w_uk);
      count(L.w_uv);
      L.is_moe = c.is_moe_layer(i);
      if (!L.is_moe) return mlp(p + "mlp.", c.intermediate_size, &L.mlp);
      R1_ASSIGN_OR_RETURN(Matrix router, LoadMatrix(ckpt, c, p + "mlp.gate.weight", c.n_routed_experts, h));
      R1_ASSIGN_OR_RETURN(L.router, Upload(router.data.data(), router.data.size()));
      count(L.router);
      R1_ASSIGN_OR_RETURN(std::vector<float> bias, LoadVector(ckpt, p + "mlp.gate.e_score_correction_bias", c.n_routed_experts));
      R1_ASSIGN_OR_RETURN(L.score_bias, Upload(bias.data(), bias.size()));
      count(L.score_bias);
      // Routed experts into three banks (gate, up, down), expert after expert.
      auto bank = [&](const char* proj, int64_t n, int64_t k, ExpertBank* b) -> absl::Status {
        const int64_t ne = c.n_routed_experts;
        std::vector<GpuLinear> each(ne);
        for (int64_t e = 0; e < ne; ++e) {
          R1_RETURN_IF_ERROR(linear(absl::StrCat(p, "mlp.experts.", e, ".", proj, ".weight"), n, k, &each[e]));
        }
        b->n = n;
        b->k = k;
        b->fp8 = each[0].fp8;
        b->w_stride = each[0].k_stored;
        b->scale_stride = each[0].scale_stride;
        const size_t wbytes = each[0].w.bytes, sbytes = each[0].scales.bytes;
        R1_ASSIGN_OR_RETURN(b->w, DeviceMemory::Allocate(wbytes * ne));
        if (b->fp8) {
          R1_ASSIGN_OR_RETURN(b->scales, DeviceMemory::Allocate(sbytes * ne));
        }
        for (int64_t e = 0; e < ne; ++e) {
          if (each[e].fp8 != b->fp8 || each[e].w.bytes != wbytes) {
            return absl::FailedPreconditionError(absl::StrCat("expert ", e, " ", proj, ": dtype differs from expert 0"));
          }
          R1_RETURN_IF_ERROR(CudaCheck(cudaMemcpy(b->w.as<uint8_t>() + e * wbytes, each[e].w.ptr, wbytes,
                                                  cudaMemcpyDeviceToDevice), "expert bank"));
          if (b->fp8) {
            R1_RETURN_IF_ERROR(CudaCheck(cudaMemcpy(b->scales.as<uint8_t>() + e * sbytes, each[e].scales.ptr, sbytes,
                                                    cudaMemcpyDeviceToDevice), "expert scales"));
          }
          weight_bytes_ -= each[e].w.bytes + each[e].scales.bytes;  // counted again as the bank
        }
        count(b->w);
        count(b->scales);
        return absl::OkStatus();
      };
      R1_RETURN_IF_ERROR(bank("gate_proj", c.moe_intermediate_size, h, &L.gate));
      R1_RETURN_IF_ERROR(bank("up_proj", c.moe_intermediate_size, h, &L.up));
      R1_RETURN_IF_ERROR(bank("down_proj", h, c.moe_intermediate_size, &L.down));
      L.has_shared = c.n_shared_experts > 0;
      if (L.has_shared) R1_RETURN_IF_ERROR(mlp(p + "mlp.shared_experts.", c.moe_intermediate_size * c.n_shared_experts, &L.shared));
      return absl::OkStatus();
    }();
    if (!st.ok()) return Annotate(st, absl::StrCat("loading layer ", i, " to the GPU"));
  }
  R1_RETURN_IF_ERROR(vec("model.norm.weight", h, &final_norm_));
  R1_ASSIGN_OR_RETURN(Matrix lm, LoadMatrix(ckpt, c, "lm_head.weight", c.vocab_size, h));
  lm_head_.n = c.vocab_size;
  lm_head_.k = h;
  lm_head_.k_stored = h;
  const std::vector<uint16_t> lb = ToBf16(lm.data);
  R1_ASSIGN_OR_RETURN(lm_head_.w, Upload(lb.data(), lb.size()));
  count(lm_head_.w);
  R1_LOG(INFO) << "model on the GPU: " << weight_bytes_ / 1e6 << " MB of device weights";
  return absl::OkStatus();
}

absl::Status GpuDeepseekV3Model::AllocateWorkspace() {
  const ModelConfig& c = config_;
  const int64_t t = options_.max_step_tokens, tp = cuda::Fp8PaddedRows(t);
  const int64_t hd = c.hidden_size, nh = c.num_attention_heads, qk = c.qk_head_dim();
  const int64_t kvr = c.kv_lora_rank, lat = c.kv_latent_dim(), vd = c.v_head_dim;
  const int64_t qa = c.q_lora_rank ? *c.q_lora_rank : 1;
  const int64_t ne = std::max<int64_t>(c.n_routed_experts, 1), k = std::max<int64_t>(c.num_experts_per_tok, 1);
  const int64_t inter = std::max(c.intermediate_size, c.moe_intermediate_size * std::max<int64_t>(c.n_shared_experts, 1));
  const int64_t entries = t * k, entries_p = cuda::Fp8PaddedRows(entries);
  // The activation quantiser's widest input: every linear layer's k, padded.
  int64_t kmax = cuda::Fp8PaddedK(std::max({hd, qa, nh * vd, inter}));
  auto a = [&](DeviceMemory* m, int64_t bytes) -> absl::Status {
    R1_ASSIGN_OR_RETURN(*m, DeviceMemory::Allocate(static_cast<size_t>(bytes)));
    return absl::OkStatus();
  };
  R1_RETURN_IF_ERROR(a(&ws_.ids, t * 4));
  R1_RETURN_IF_ERROR(a(&ws_.pos, t * 8));
  R1_RETURN_IF_ERROR(a(&ws_.ctx, t * 4));
  R1_RETURN_IF_ERROR(a(&ws_.x, t * hd * 4));
  R1_RETURN_IF_ERROR(a(&ws_.hf, t * hd * 4));
  R1_RETURN_IF_ERROR(a(&ws_.hb, tp * hd * 2));
  R1_RETURN_IF_ERROR(a(&ws_.emb, t * hd * 2));
  R1_RETURN_IF_ERROR(a(&ws_.qa, tp * qa * 2));
  R1_RETURN_IF_ERROR(a(&ws_.q, tp * nh * qk * 2));
  R1_RETURN_IF_ERROR(a(&ws_.kv, tp * lat * 2));
  R1_RETURN_IF_ERROR(a(&ws_.q_lat, t * nh * kvr * 4));
  R1_RETURN_IF_ERROR(a(&ws_.q_pe, t * nh * c.qk_rope_head_dim * 4));
  R1_RETURN_IF_ERROR(a(&ws_.o_lat, t * nh * kvr * 4));
  R1_RETURN_IF_ERROR(a(&ws_.attn, tp * nh * vd * 2));
  R1_RETURN_IF_ERROR(a(&ws_.o, tp * hd * 2));
  R1_RETURN_IF_ERROR(a(&ws_.g, tp * inter * 2));
  R1_RETURN_IF_ERROR(a(&ws_.u, tp * inter * 2));
  R1_RETURN_IF_ERROR(a(&ws_.d, tp * hd * 2));
  R1_RETURN_IF_ERROR(a(&ws_.router_logits, t * ne * 4));
  R1_RETURN_IF_ERROR(a(&ws_.expert_ids, entries * 4));
  R1_RETURN_IF_ERROR(a(&ws_.expert_w, entries * 4));
  R1_RETURN_IF_ERROR(a(&ws_.offsets, (ne + 1) * 4));
  R1_RETURN_IF_ERROR(a(&ws_.perm_tokens, entries * 4));
  R1_RETURN_IF_ERROR(a(&ws_.perm_w, entries * 4));
  R1_RETURN_IF_ERROR(a(&ws_.slot, entries * 4));
  R1_RETURN_IF_ERROR(a(&ws_.perm_ws, cuda::MoePermuteWorkspaceInts(t, k, ne) * 4));
  R1_RETURN_IF_ERROR(a(&ws_.xe, entries_p * hd * 2));
  R1_RETURN_IF_ERROR(a(&ws_.eg, entries_p * std::max<int64_t>(c.moe_intermediate_size, 1) * 2));
  R1_RETURN_IF_ERROR(a(&ws_.eu, entries_p * std::max<int64_t>(c.moe_intermediate_size, 1) * 2));
  R1_RETURN_IF_ERROR(a(&ws_.ey, entries_p * hd * 2));
  R1_RETURN_IF_ERROR(a(&ws_.logits, tp * c.vocab_size * 2));
  R1_RETURN_IF_ERROR(a(&ws_.quant_q, tp * kmax));
  R1_RETURN_IF_ERROR(a(&ws_.quant_scales, tp * (kmax / 128) * 4));
  size_t total = 0;
  for (const DeviceMemory* m : {&ws_.x, &ws_.q, &ws_.q_lat, &ws_.o_lat, &ws_.logits, &ws_.xe, &ws_.ey, &ws_.g, &ws_.u}) {
    total += m->bytes;
  }
  R1_LOG(INFO) << "GPU workspace for " << t << "-token steps: about " << total / 1e6 << " MB";
  return absl::OkStatus();
}

absl::Status GpuDeepseekV3Model::Linear(const __nv_bfloat16* x, int64_t m, const GpuLinear& w, __nv_bfloat16* y) {
  if (!w.fp8) return gemm_->Bf16({x, w.w.as<__nv_bfloat16>(), y, m, w.n, w.k}, stream_);
  auto* q = ws_.quant_q.as<__nv_fp8_e4m3>();
  auto* s = ws_.quant_scales.as<float>();
  R1_RETURN_IF_ERROR(cuda::QuantizeFp8PerToken128({x, q, s, m, w.k, w.k_stored}, stream_));
  return gemm_->Fp8({q, s, w.w.as<__nv_fp8_e4m3>(), w.scales.as<float>(), y, m, w.n, w.k_stored}, stream_);
}

absl::Status GpuDeepseekV3Model::RunMlp(const Mlp& w, const __nv_bfloat16* h, int64_t m, float* x) {
  const int64_t inter = w.gate.n, hd = config_.hidden_size;
  auto* gp = ws_.g.as<__nv_bfloat16>();
  auto* up = ws_.u.as<__nv_bfloat16>();
  auto* dp = ws_.d.as<__nv_bfloat16>();
  R1_RETURN_IF_ERROR(Linear(h, m, w.gate, gp));
  R1_RETURN_IF_ERROR(Linear(h, m, w.up, up));
  R1_RETURN_IF_ERROR(cuda::Swiglu({gp, up, gp, m, inter, inter, inter, inter}, stream_));
  R1_RETURN_IF_ERROR(Linear(gp, m, w.down, dp));
  return cuda::AddBf16(x, dp, m * hd, 1.0f, stream_);
}

absl::Status GpuDeepseekV3Model::RunStep(int64_t t, GpuKvCache& cache, int64_t table_stride) {
  const ModelConfig& c = config_;
  const int64_t hd = c.hidden_size, nh = c.num_attention_heads, qk = c.qk_head_dim();
  const int64_t nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim, vd = c.v_head_dim;
  const int64_t kvr = c.kv_lora_rank, lat = c.kv_latent_dim();
  const float eps = static_cast<float>(c.rms_norm_eps), factor = static_cast<float>(c.rope_attention_factor());
  auto* xf = ws_.x.as<float>();
  auto* hb = ws_.hb.as<__nv_bfloat16>();
  auto* pos = ws_.pos.as<int64_t>();
  auto* tables = ws_.tables.as<int32_t>();
  R1_RETURN_IF_ERROR(CudaCheck(cudaMemsetAsync(xf, 0, t * hd * 4, stream_), "clear"));
  R1_RETURN_IF_ERROR(cuda::Embedding({embed_.as<__nv_bfloat16>(), ws_.ids.as<int32_t>(), ws_.emb.as<__nv_bfloat16>(), t,
                                      hd, c.vocab_size, 0}, stream_));
  R1_RETURN_IF_ERROR(cuda::AddBf16(xf, ws_.emb.as<__nv_bfloat16>(), t * hd, 1.0f, stream_));

  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    Layer& L = layers_[l];
    // Attention (MLA, absorbed).
    R1_RETURN_IF_ERROR(cuda::RmsNormF32(xf, L.input_norm.as<float>(), hb, t, hd, eps, stream_));
    auto* qb = ws_.q.as<__nv_bfloat16>();
    if (c.q_lora_rank) {
      const int64_t qa_dim = *c.q_lora_rank;
      auto* qab = ws_.qa.as<__nv_bfloat16>();
      R1_RETURN_IF_ERROR(Linear(hb, t, L.q_a, qab));
      R1_RETURN_IF_ERROR(cuda::RmsNorm({qab, L.q_a_norm.as<float>(), qab, t, qa_dim, qa_dim, qa_dim, eps}, stream_));
      R1_RETURN_IF_ERROR(Linear(qab, t, L.q_b, qb));
    } else {
      R1_RETURN_IF_ERROR(Linear(hb, t, L.q, qb));
    }
    R1_RETURN_IF_ERROR(cuda::Rope({qb + nope, t * nh, nh, rope, qk, pos, inv_freq_.as<float>(), factor, c.rope_interleave},
                                  stream_));
    auto* kvb = ws_.kv.as<__nv_bfloat16>();
    R1_RETURN_IF_ERROR(Linear(hb, t, L.kv_a, kvb));
    R1_RETURN_IF_ERROR(cuda::RmsNorm({kvb, L.kv_a_norm.as<float>(), kvb, t, kvr, lat, lat, eps}, stream_));
    R1_RETURN_IF_ERROR(cuda::Rope({kvb + kvr, t, 1, rope, lat, pos, inv_freq_.as<float>(), factor, c.rope_interleave},
                                  stream_));
    auto* layer_cache = cache.data.as<__nv_bfloat16>() + l * cache.layer_stride();
    R1_RETURN_IF_ERROR(cuda::ScatterLatent({kvb, layer_cache, tables, pos, t, lat, cache.block_size, table_stride,
                                            cache.block_stride()}, stream_));
    R1_RETURN_IF_ERROR(cuda::AbsorbQuery({qb, L.w_uk.as<float>(), ws_.q_lat.as<float>(), ws_.q_pe.as<float>(), t, nh,
                                          nope, rope, kvr}, stream_));
    cuda::MlaDecodeParams mp;
    mp.q_lat = ws_.q_lat.as<float>();
    mp.q_pe = ws_.q_pe.as<float>();
    mp.cache = layer_cache;
    mp.block_stride = cache.block_stride();
    mp.block_tables = tables;
    mp.context_lens = ws_.ctx.as<int32_t>();
    mp.o_lat = ws_.o_lat.as<float>();
    mp.rows = t;
    mp.heads = nh;
    mp.kv_lora_rank = kvr;
    mp.rope_dim = rope;
    mp.block_size = cache.block_size;
    mp.max_blocks = table_stride;
    mp.softmax_scale = static_cast<float>(c.softmax_scale());
    R1_RETURN_IF_ERROR(cuda::MlaDecode(mp, stream_));
    auto* attn = ws_.attn.as<__nv_bfloat16>();
    R1_RETURN_IF_ERROR(cuda::ApplyValue({ws_.o_lat.as<float>(), L.w_uv.as<float>(), attn, t, nh, vd, kvr}, stream_));
    R1_RETURN_IF_ERROR(Linear(attn, t, L.o, ws_.o.as<__nv_bfloat16>()));
    R1_RETURN_IF_ERROR(cuda::AddBf16(xf, ws_.o.as<__nv_bfloat16>(), t * hd, 1.0f, stream_));

    // MLP, or MoE: router → permutation → all experts in one grouped launch → ordered combine.
    R1_RETURN_IF_ERROR(cuda::RmsNormF32(xf, L.post_norm.as<float>(), hb, t, hd, eps, stream_, ws_.hf.as<float>()));
    if (!L.is_moe) {
      R1_RETURN_IF_ERROR(RunMlp(L.mlp, hb, t, xf));
      continue;
    }
    const int64_t ne = c.n_routed_experts, k = c.num_experts_per_tok, inter = c.moe_intermediate_size;
    R1_RETURN_IF_ERROR(cuda::LinearF32(ws_.hf.as<float>(), L.router.as<float>(), ws_.router_logits.as<float>(), t, ne,
                                       hd, stream_));
    cuda::RouterParams rp;
    rp.logits = ws_.router_logits.as<float>();
    rp.score_bias = L.score_bias.as<float>();
    rp.expert_ids = ws_.expert_ids.as<int32_t>();
    rp.weights = ws_.expert_w.as<float>();
    rp.tokens = t;
    rp.experts = ne;
    rp.n_group = c.n_group;
    rp.topk_group = c.topk_group;
    rp.top_k = k;
    rp.norm_topk_prob = c.norm_topk_prob;
    rp.routed_scaling_factor = static_cast<float>(c.routed_scaling_factor);
    R1_RETURN_IF_ERROR(cuda::Router(rp, stream_));
    cuda::MoePermuteParams pp;
    pp.expert_ids = ws_.expert_ids.as<int32_t>();
    pp.weights = ws_.expert_w.as<float>();
    pp.tokens = t;
    pp.top_k = k;
    pp.first_expert = 0;
    pp.num_experts = ne;
    pp.expert_offsets = ws_.offsets.as<int32_t>();
    pp.permuted_tokens = ws_.perm_tokens.as<int32_t>();
    pp.permuted_weights = ws_.perm_w.as<float>();
    pp.entry_slot = ws_.slot.as<int32_t>();
    pp.workspace = ws_.perm_ws.as<int32_t>();
    R1_RETURN_IF_ERROR(cuda::MoePermute(pp, stream_));
    const int64_t entries = t * k;  // every choice is local on one GPU
    auto* xe = ws_.xe.as<__nv_bfloat16>();
    auto* eg = ws_.eg.as<__nv_bfloat16>();
    auto* eu = ws_.eu.as<__nv_bfloat16>();
    auto* ey = ws_.ey.as<__nv_bfloat16>();
    R1_RETURN_IF_ERROR(cuda::GatherRows(hb, ws_.perm_tokens.as<int32_t>(), xe, entries, hd, stream_));
    auto gemv = [&](const ExpertBank& b, const __nv_bfloat16* in, __nv_bfloat16* out) {
      cuda::GroupedFp8GemvParams gp;
      gp.x = in;
      gp.offsets = ws_.offsets.as<int32_t>();
      if (b.fp8) {
        gp.w = b.w.as<__nv_fp8_e4m3>();
        gp.scales = b.scales.as<float>();
      } else {
        gp.w_bf16 = b.w.as<__nv_bfloat16>();
      }
      gp.y = out;
      gp.experts = ne;
      gp.n = b.n;
      gp.k = b.k;
      gp.w_stride = b.w_stride;
      gp.scale_stride = b.scale_stride;
      return cuda::GroupedFp8Gemv(gp, stream_);
    };
    R1_RETURN_IF_ERROR(gemv(L.gate, xe, eg));
    R1_RETURN_IF_ERROR(gemv(L.up, xe, eu));
    R1_RETURN_IF_ERROR(cuda::Swiglu({eg, eu, eg, entries, inter, inter, inter, inter}, stream_));
    R1_RETURN_IF_ERROR(gemv(L.down, eg, ey));
    R1_RETURN_IF_ERROR(cuda::MoeCombine({ey, ws_.slot.as<int32_t>(), ws_.expert_w.as<float>(), xf, t, k, hd}, stream_));
    if (L.has_shared) R1_RETURN_IF_ERROR(RunMlp(L.shared, hb, t, xf));
  }

  // Final norm and lm_head on every row (rows that need no logits are dropped on the host).
  R1_RETURN_IF_ERROR(cuda::RmsNormF32(xf, final_norm_.as<float>(), hb, t, hd, eps, stream_));
  return Linear(hb, t, lm_head_, ws_.logits.as<__nv_bfloat16>());
}

absl::StatusOr<std::vector<std::vector<float>>> GpuDeepseekV3Model::Forward(const std::vector<SequenceStep>& batch,
                                                                            GpuKvCache& cache) {
  const ModelConfig& c = config_;
  if (cache.layers != c.num_hidden_layers || cache.latent != c.kv_latent_dim()) {
    return absl::InvalidArgumentError("gpu kv cache does not fit the model");
  }
  // Rows: every new token of every sequence, with its position, context and block table.
  const int64_t stride = cache.blocks;  // no sequence holds more blocks than the cache has
  std::vector<int32_t> ids, ctx, tables;
  std::vector<int64_t> pos;
  bool decode_only = true;
  for (size_t si = 0; si < batch.size(); ++si) {
    const SequenceStep& s = batch[si];
    auto err = [&](absl::string_view what) { return absl::InvalidArgumentError(absl::StrCat("sequence ", si, ": ", what)); };
    if (s.tokens.empty()) return err("no new tokens");
    decode_only &= s.tokens.size() == 1;
    const int64_t end = s.start_position + static_cast<int64_t>(s.tokens.size());
    if (s.start_position < 0 || end > c.max_position_embeddings) return err("positions outside [0, max_position_embeddings)");
    if (static_cast<int64_t>(s.block_table.size()) * cache.block_size < end) return err("block table too short");
    if (static_cast<int64_t>(s.block_table.size()) > stride) return err("block table longer than the cache");
    for (int32_t b : s.block_table) {
      if (b < 0 || b >= cache.blocks) return err(absl::StrCat("block id ", b, " outside the cache"));
    }
    for (size_t i = 0; i < s.tokens.size(); ++i) {
      if (s.tokens[i] < 0 || s.tokens[i] >= c.vocab_size) return err(absl::StrCat("token id ", s.tokens[i], " outside the vocabulary"));
      ids.push_back(s.tokens[i]);
      pos.push_back(s.start_position + static_cast<int64_t>(i));
      ctx.push_back(static_cast<int32_t>(s.start_position + i + 1));  // causal
      for (int64_t b = 0; b < stride; ++b) tables.push_back(b < static_cast<int64_t>(s.block_table.size()) ? s.block_table[b] : 0);
    }
  }
  const int64_t t = static_cast<int64_t>(ids.size());
  if (t > options_.max_step_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("a step of ", t, " tokens exceeds the GPU step limit of ",
                                                   options_.max_step_tokens, " (max_step_tokens)"));
  }
  if (ws_.table_capacity < t * stride) {
    // A bigger table buffer moves: graphs captured with the old one are dropped.
    for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
    graphs_.clear();
    R1_ASSIGN_OR_RETURN(ws_.tables, DeviceMemory::Allocate(options_.max_step_tokens * stride * 4));
    ws_.table_capacity = options_.max_step_tokens * stride;
  }
  R1_RETURN_IF_ERROR(CudaCheck(cudaMemcpyAsync(ws_.ids.ptr, ids.data(), t * 4, cudaMemcpyHostToDevice, stream_), "ids"));
  R1_RETURN_IF_ERROR(CudaCheck(cudaMemcpyAsync(ws_.pos.ptr, pos.data(), t * 8, cudaMemcpyHostToDevice, stream_), "pos"));
  R1_RETURN_IF_ERROR(CudaCheck(cudaMemcpyAsync(ws_.ctx.ptr, ctx.data(), t * 4, cudaMemcpyHostToDevice, stream_), "ctx"));
  R1_RETURN_IF_ERROR(CudaCheck(cudaMemcpyAsync(ws_.tables.ptr, tables.data(), tables.size() * 4, cudaMemcpyHostToDevice,
                                               stream_), "tables"));
  if (decode_only && options_.cuda_graphs) {
    const GraphKey key{t, cache.data.ptr, stride};
    auto it = graphs_.find(key);
    if (it == graphs_.end()) {
      R1_RETURN_IF_ERROR(CudaCheck(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "begin capture"));
      absl::Status run = RunStep(t, cache, stride);
      cudaGraph_t graph = nullptr;
      const cudaError_t end = cudaStreamEndCapture(stream_, &graph);
      if (!run.ok()) {
        if (graph) cudaGraphDestroy(graph);
        return Annotate(run, "capturing the decode graph");
      }
      R1_RETURN_IF_ERROR(CudaCheck(end, "end capture"));
      cudaGraphExec_t exec = nullptr;
      const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
      cudaGraphDestroy(graph);
      R1_RETURN_IF_ERROR(CudaCheck(inst, "instantiate the decode graph"));
      it = graphs_.emplace(key, exec).first;
    }
    R1_RETURN_IF_ERROR(CudaCheck(cudaGraphLaunch(it->second, stream_), "graph launch"));
    ++graph_replays_;
  } else {
    R1_RETURN_IF_ERROR(RunStep(t, cache, stride));
  }
  std::vector<uint16_t> host(t * c.vocab_size);
  R1_RETURN_IF_ERROR(CudaCheck(cudaMemcpyAsync(host.data(), ws_.logits.ptr, host.size() * 2, cudaMemcpyDeviceToHost,
                                               stream_), "logits"));
  R1_RETURN_IF_ERROR(CudaCheck(cudaStreamSynchronize(stream_), "step"));
  std::vector<std::vector<float>> out(batch.size());
  int64_t row = 0;
  for (size_t s = 0; s < batch.size(); ++s) {
    const int64_t n = static_cast<int64_t>(batch[s].tokens.size());
    const int64_t first = batch[s].all_logits ? row : row + n - 1, rows = batch[s].all_logits ? n : 1;
    out[s].resize(rows * c.vocab_size);
    for (int64_t i = 0; i < rows * c.vocab_size; ++i) out[s][i] = Bf16ToFloat(host[first * c.vocab_size + i]);
    row += n;
  }
  return out;
}

}  // namespace r1

#include "worker/model/gpu_model.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status.h"
#include "kernels/cuda/elementwise.h"
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

absl::StatusOr<std::unique_ptr<GpuDeepseekV3Model>> GpuDeepseekV3Model::Load(const std::string& model_dir) {
  auto m = std::unique_ptr<GpuDeepseekV3Model>(new GpuDeepseekV3Model());
  R1_ASSIGN_OR_RETURN(m->config_, LoadModelConfig(model_dir));
  R1_ASSIGN_OR_RETURN(auto ckpt, Checkpoint::Open(model_dir));
  R1_ASSIGN_OR_RETURN(m->gemm_, cuda::GemmRunner::Create());
  R1_RETURN_IF_ERROR(m->LoadWeights(*ckpt));
  return m;
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
      R1_ASSIGN_OR_RETURN(L.score_bias, LoadVector(ckpt, p + "mlp.gate.e_score_correction_bias", c.n_routed_experts));
      L.experts.resize(c.n_routed_experts);
      for (int64_t e = 0; e < c.n_routed_experts; ++e) {
        R1_RETURN_IF_ERROR(mlp(absl::StrCat(p, "mlp.experts.", e, "."), c.moe_intermediate_size, &L.experts[e]));
      }
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

absl::Status GpuDeepseekV3Model::Linear(const __nv_bfloat16* x, int64_t m, const GpuLinear& w, __nv_bfloat16* y) {
  if (!w.fp8) return gemm_->Bf16({x, w.w.as<__nv_bfloat16>(), y, m, w.n, w.k}, nullptr);
  const int64_t rows = cuda::Fp8PaddedRows(m), groups = (w.k + 127) / 128;
  if (quant_q_.bytes < static_cast<size_t>(rows * w.k_stored)) {
    R1_ASSIGN_OR_RETURN(quant_q_, DeviceMemory::Allocate(rows * w.k_stored));
  }
  if (quant_scales_.bytes < static_cast<size_t>(rows * groups) * sizeof(float)) {
    R1_ASSIGN_OR_RETURN(quant_scales_, DeviceMemory::Allocate(rows * groups * sizeof(float)));
  }
  auto* q = quant_q_.as<__nv_fp8_e4m3>();
  auto* s = quant_scales_.as<float>();
  R1_RETURN_IF_ERROR(cuda::QuantizeFp8PerToken128({x, q, s, m, w.k, w.k_stored}, nullptr));
  return gemm_->Fp8({q, s, w.w.as<__nv_fp8_e4m3>(), w.scales.as<float>(), y, m, w.n, w.k_stored}, nullptr);
}

absl::Status GpuDeepseekV3Model::RunMlp(const Mlp& w, const __nv_bfloat16* h, int64_t m, float* x) {
  const int64_t rows = cuda::Fp8PaddedRows(m), inter = w.gate.n, hd = config_.hidden_size;
  R1_ASSIGN_OR_RETURN(DeviceMemory g, DeviceMemory::Allocate(rows * inter * 2));
  R1_ASSIGN_OR_RETURN(DeviceMemory u, DeviceMemory::Allocate(rows * inter * 2));
  R1_ASSIGN_OR_RETURN(DeviceMemory d, DeviceMemory::Allocate(rows * hd * 2));
  auto* gp = g.as<__nv_bfloat16>();
  auto* up = u.as<__nv_bfloat16>();
  R1_RETURN_IF_ERROR(Linear(h, m, w.gate, gp));
  R1_RETURN_IF_ERROR(Linear(h, m, w.up, up));
  R1_RETURN_IF_ERROR(cuda::Swiglu({gp, up, gp, m, inter, inter, inter, inter}, nullptr));
  R1_RETURN_IF_ERROR(Linear(gp, m, w.down, d.as<__nv_bfloat16>()));
  return cuda::AddBf16(x, d.as<__nv_bfloat16>(), m * hd, 1.0f, nullptr);
}

absl::StatusOr<std::vector<std::vector<float>>> GpuDeepseekV3Model::Forward(const std::vector<SequenceStep>& batch,
                                                                            GpuKvCache& cache) {
  const ModelConfig& c = config_;
  const int64_t hd = c.hidden_size, nh = c.num_attention_heads, qk = c.qk_head_dim();
  const int64_t nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim, vd = c.v_head_dim;
  const int64_t kvr = c.kv_lora_rank, lat = c.kv_latent_dim();
  if (cache.layers != c.num_hidden_layers || cache.latent != lat) return absl::InvalidArgumentError("gpu kv cache does not fit the model");
  // Rows: every new token of every sequence, each with its position, block table and context.
  std::vector<int32_t> ids, ctx;
  std::vector<int64_t> pos;
  int64_t max_blocks = 1;
  for (const auto& s : batch) max_blocks = std::max<int64_t>(max_blocks, static_cast<int64_t>(s.block_table.size()));
  std::vector<int32_t> tables;
  for (size_t si = 0; si < batch.size(); ++si) {
    const SequenceStep& s = batch[si];
    if (s.tokens.empty()) return absl::InvalidArgumentError(absl::StrCat("sequence ", si, ": no new tokens"));
    const int64_t end = s.start_position + static_cast<int64_t>(s.tokens.size());
    if (s.start_position < 0 || end > c.max_position_embeddings) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", si, ": positions outside [0, max_position_embeddings)"));
    }
    if (static_cast<int64_t>(s.block_table.size()) * cache.block_size < end) {
      return absl::InvalidArgumentError(absl::StrCat("sequence ", si, ": block table too short"));
    }
    for (int32_t b : s.block_table) {
      if (b < 0 || b >= cache.blocks) return absl::InvalidArgumentError(absl::StrCat("sequence ", si, ": block id ", b, " outside the cache"));
    }
    for (size_t i = 0; i < s.tokens.size(); ++i) {
      if (s.tokens[i] < 0 || s.tokens[i] >= c.vocab_size) return absl::InvalidArgumentError(absl::StrCat("sequence ", si, ": token id ", s.tokens[i], " outside the vocabulary"));
      ids.push_back(s.tokens[i]);
      pos.push_back(s.start_position + static_cast<int64_t>(i));
      ctx.push_back(static_cast<int32_t>(s.start_position + i + 1));  // causal
      for (int64_t b = 0; b < max_blocks; ++b) tables.push_back(b < static_cast<int64_t>(s.block_table.size()) ? s.block_table[b] : 0);
    }
  }
  const int64_t t = static_cast<int64_t>(ids.size()), rows = cuda::Fp8PaddedRows(t);
  R1_ASSIGN_OR_RETURN(DeviceMemory d_ids, Upload(ids.data(), ids.size()));
  R1_ASSIGN_OR_RETURN(DeviceMemory d_pos, Upload(pos.data(), pos.size()));
  R1_ASSIGN_OR_RETURN(DeviceMemory d_ctx, Upload(ctx.data(), ctx.size()));
  R1_ASSIGN_OR_RETURN(DeviceMemory d_tables, Upload(tables.data(), tables.size()));
  auto alloc = [&](size_t bytes) { return DeviceMemory::Allocate(bytes); };
  R1_ASSIGN_OR_RETURN(DeviceMemory x, alloc(t * hd * 4));           // residual, float32 [T, H]
  R1_ASSIGN_OR_RETURN(DeviceMemory hn, alloc(rows * hd * 2));       // normed, bf16
  const int64_t qa_dim = c.q_lora_rank ? *c.q_lora_rank : 1;
  R1_ASSIGN_OR_RETURN(DeviceMemory qa, alloc(rows * qa_dim * 2));
  R1_ASSIGN_OR_RETURN(DeviceMemory q, alloc(rows * nh * qk * 2));
  R1_ASSIGN_OR_RETURN(DeviceMemory kv, alloc(rows * lat * 2));
  R1_ASSIGN_OR_RETURN(DeviceMemory q_lat, alloc(t * nh * kvr * 4));
  R1_ASSIGN_OR_RETURN(DeviceMemory q_pe, alloc(t * nh * rope * 4));
  R1_ASSIGN_OR_RETURN(DeviceMemory o_lat, alloc(t * nh * kvr * 4));
  R1_ASSIGN_OR_RETURN(DeviceMemory attn, alloc(rows * nh * vd * 2));
  R1_ASSIGN_OR_RETURN(DeviceMemory o, alloc(rows * hd * 2));
  R1_ASSIGN_OR_RETURN(DeviceMemory emb, alloc(t * hd * 2));
  R1_ASSIGN_OR_RETURN(DeviceMemory hf, alloc(t * hd * 4));       // normed, float32 (router input)
  auto* xf = x.as<float>();
  auto* hb = hn.as<__nv_bfloat16>();
  const float eps = static_cast<float>(c.rms_norm_eps);
  R1_RETURN_IF_ERROR(CudaCheck(cudaMemset(xf, 0, t * hd * 4), "clear"));
  R1_RETURN_IF_ERROR(cuda::Embedding({embed_.as<__nv_bfloat16>(), d_ids.as<int32_t>(), emb.as<__nv_bfloat16>(), t, hd, c.vocab_size, 0}, nullptr));
  R1_RETURN_IF_ERROR(cuda::AddBf16(xf, emb.as<__nv_bfloat16>(), t * hd, 1.0f, nullptr));

  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    Layer& L = layers_[l];
    // Attention (MLA, absorbed).
    R1_RETURN_IF_ERROR(cuda::RmsNormF32(xf, L.input_norm.as<float>(), hb, t, hd, eps, nullptr));
    auto* qb = q.as<__nv_bfloat16>();
    if (c.q_lora_rank) {
      auto* qab = qa.as<__nv_bfloat16>();
      R1_RETURN_IF_ERROR(Linear(hb, t, L.q_a, qab));
      R1_RETURN_IF_ERROR(cuda::RmsNorm({qab, L.q_a_norm.as<float>(), qab, t, qa_dim, qa_dim, qa_dim, eps}, nullptr));
      R1_RETURN_IF_ERROR(Linear(qab, t, L.q_b, qb));
    } else {
      R1_RETURN_IF_ERROR(Linear(hb, t, L.q, qb));
    }
    const float factor = static_cast<float>(c.rope_attention_factor());
    R1_RETURN_IF_ERROR(cuda::Rope({qb + nope, t * nh, nh, rope, qk, d_pos.as<int64_t>(), inv_freq_.as<float>(), factor, c.rope_interleave}, nullptr));
    auto* kvb = kv.as<__nv_bfloat16>();
    R1_RETURN_IF_ERROR(Linear(hb, t, L.kv_a, kvb));
    R1_RETURN_IF_ERROR(cuda::RmsNorm({kvb, L.kv_a_norm.as<float>(), kvb, t, kvr, lat, lat, eps}, nullptr));
    R1_RETURN_IF_ERROR(cuda::Rope({kvb + kvr, t, 1, rope, lat, d_pos.as<int64_t>(), inv_freq_.as<float>(), factor, c.rope_interleave}, nullptr));
    auto* layer_cache = cache.data.as<__nv_bfloat16>() + l * cache.layer_stride();
    R1_RETURN_IF_ERROR(cuda::ScatterLatent({kvb, layer_cache, d_tables.as<int32_t>(), d_pos.as<int64_t>(), t, lat, cache.block_size, max_blocks, cache.block_stride()}, nullptr));
    R1_RETURN_IF_ERROR(cuda::AbsorbQuery({qb, L.w_uk.as<float>(), q_lat.as<float>(), q_pe.as<float>(), t, nh, nope, rope, kvr}, nullptr));
    cuda::MlaDecodeParams mp;
    mp.q_lat = q_lat.as<float>();
    mp.q_pe = q_pe.as<float>();
    mp.cache = layer_cache;
    mp.block_stride = cache.block_stride();
    mp.block_tables = d_tables.as<int32_t>();
    mp.context_lens = d_ctx.as<int32_t>();
    mp.o_lat = o_lat.as<float>();
    mp.rows = t;
    mp.heads = nh;
    mp.kv_lora_rank = kvr;
    mp.rope_dim = rope;
    mp.block_size = cache.block_size;
    mp.max_blocks = max_blocks;
    mp.softmax_scale = static_cast<float>(c.softmax_scale());
    R1_RETURN_IF_ERROR(cuda::MlaDecode(mp, nullptr));
    R1_RETURN_IF_ERROR(cuda::ApplyValue({o_lat.as<float>(), L.w_uv.as<float>(), attn.as<__nv_bfloat16>(), t, nh, vd, kvr}, nullptr));
    R1_RETURN_IF_ERROR(Linear(attn.as<__nv_bfloat16>(), t, L.o, o.as<__nv_bfloat16>()));
    R1_RETURN_IF_ERROR(cuda::AddBf16(xf, o.as<__nv_bfloat16>(), t * hd, 1.0f, nullptr));

    // MLP or MoE.
    R1_RETURN_IF_ERROR(cuda::RmsNormF32(xf, L.post_norm.as<float>(), hb, t, hd, eps, nullptr, hf.as<float>()));
    if (!L.is_moe) {
      R1_RETURN_IF_ERROR(RunMlp(L.mlp, hb, t, xf));
      continue;
    }
    const int64_t ne = c.n_routed_experts, k = c.num_experts_per_tok;
    R1_ASSIGN_OR_RETURN(DeviceMemory logits, alloc(t * ne * 4));
    R1_RETURN_IF_ERROR(cuda::LinearF32(hf.as<float>(), L.router.as<float>(), logits.as<float>(), t, ne, hd, nullptr));
    std::vector<float> host_logits(t * ne);
    R1_RETURN_IF_ERROR(CudaCheck(cudaMemcpy(host_logits.data(), logits.ptr, host_logits.size() * 4, cudaMemcpyDeviceToHost), "router logits"));
    std::vector<int32_t> chosen;
    std::vector<float> weights;
    SelectExperts(c, host_logits.data(), L.score_bias.data(), t, &chosen, &weights);
    for (int64_t e = 0; e < ne; ++e) {
      std::vector<int32_t> tok;
      std::vector<float> w;
      for (int64_t i = 0; i < t * k; ++i) {
        if (chosen[i] == e) {
          tok.push_back(static_cast<int32_t>(i / k));
          w.push_back(weights[i]);
        }
      }
      if (tok.empty()) continue;  // an expert with no tokens costs nothing
      const int64_t m = static_cast<int64_t>(tok.size()), mr = cuda::Fp8PaddedRows(m), inter = L.experts[e].gate.n;
      R1_ASSIGN_OR_RETURN(DeviceMemory d_tok, Upload(tok.data(), tok.size()));
      R1_ASSIGN_OR_RETURN(DeviceMemory d_w, Upload(w.data(), w.size()));
      R1_ASSIGN_OR_RETURN(DeviceMemory xe, alloc(mr * hd * 2));
      R1_ASSIGN_OR_RETURN(DeviceMemory g, alloc(mr * inter * 2));
      R1_ASSIGN_OR_RETURN(DeviceMemory u, alloc(mr * inter * 2));
      R1_ASSIGN_OR_RETURN(DeviceMemory y, alloc(mr * hd * 2));
      auto* xeb = xe.as<__nv_bfloat16>();
      R1_RETURN_IF_ERROR(cuda::GatherRows(hb, d_tok.as<int32_t>(), xeb, m, hd, nullptr));
      R1_RETURN_IF_ERROR(Linear(xeb, m, L.experts[e].gate, g.as<__nv_bfloat16>()));
      R1_RETURN_IF_ERROR(Linear(xeb, m, L.experts[e].up, u.as<__nv_bfloat16>()));
      R1_RETURN_IF_ERROR(cuda::Swiglu({g.as<__nv_bfloat16>(), u.as<__nv_bfloat16>(), g.as<__nv_bfloat16>(), m, inter, inter, inter, inter}, nullptr));
      R1_RETURN_IF_ERROR(Linear(g.as<__nv_bfloat16>(), m, L.experts[e].down, y.as<__nv_bfloat16>()));
      R1_RETURN_IF_ERROR(cuda::ScatterAddWeighted(y.as<__nv_bfloat16>(), d_tok.as<int32_t>(), d_w.as<float>(), xf, m, hd, nullptr));
    }
    if (L.has_shared) R1_RETURN_IF_ERROR(RunMlp(L.shared, hb, t, xf));
  }

  // Final norm and lm_head on every row (simple; the rows that are not needed are dropped).
  R1_RETURN_IF_ERROR(cuda::RmsNormF32(xf, final_norm_.as<float>(), hb, t, hd, eps, nullptr));
  R1_ASSIGN_OR_RETURN(DeviceMemory lg, alloc(rows * c.vocab_size * 2));
  R1_RETURN_IF_ERROR(Linear(hb, t, lm_head_, lg.as<__nv_bfloat16>()));
  std::vector<uint16_t> host(t * c.vocab_size);
  R1_RETURN_IF_ERROR(CudaCheck(cudaMemcpy(host.data(), lg.ptr, host.size() * 2, cudaMemcpyDeviceToHost), "logits"));
  std::vector<std::vector<float>> out(batch.size());
  int64_t row = 0;
  for (size_t s = 0; s < batch.size(); ++s) {
    const int64_t n = static_cast<int64_t>(batch[s].tokens.size());
    const int64_t first = batch[s].all_logits ? row : row + n - 1, count_rows = batch[s].all_logits ? n : 1;
    out[s].resize(count_rows * c.vocab_size);
    for (int64_t i = 0; i < count_rows * c.vocab_size; ++i) out[s][i] = Bf16ToFloat(host[first * c.vocab_size + i]);
    row += n;
  }
  return out;
}

}  // namespace r1

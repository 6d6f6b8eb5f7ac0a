#include "worker/model/deepseek_v3.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status.h"
#include "common/dtype.h"
#include "kernels/ops.h"

namespace r1 {

std::vector<float> RopeInverseFrequencies(const ModelConfig& c) {
  const int64_t dim = c.qk_rope_head_dim, half = dim / 2;
  const double base = c.rope_theta;
  std::vector<float> inv(half);
  for (int64_t i = 0; i < half; ++i) {
    inv[i] = static_cast<float>(1.0 / std::pow(base, static_cast<double>(2 * i) / static_cast<double>(dim)));
  }
  if (!c.yarn) return inv;
  const YarnScaling& y = *c.yarn;
  // The dims that turn fewer than beta_slow times over the original context are interpolated
  // (divided by factor); those that turn more than beta_fast times are kept; a ramp in between.
  auto correction_dim = [&](double rotations) {
    return (dim * std::log(y.original_max_position_embeddings / (rotations * 2 * M_PI))) / (2 * std::log(base));
  };
  double low = correction_dim(y.beta_fast), high = correction_dim(y.beta_slow);
  if (y.truncate) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(dim - 1));
  if (low == high) high += 0.001;
  for (int64_t i = 0; i < half; ++i) {
    const float ramp = static_cast<float>(std::clamp((static_cast<double>(i) - low) / (high - low), 0.0, 1.0));
    const float extrapolation = 1.0f - ramp;
    const float keep = inv[i];
    const float interp = static_cast<float>(1.0 / (y.factor * (1.0 / static_cast<double>(keep))));
    inv[i] = interp * (1.0f - extrapolation) + keep * extrapolation;
  }
  return inv;
}

namespace {

using Clock = std::chrono::steady_clock;

// Logs load progress (bytes, GB/s, ETA) at most once a second and at the end.
class LoadProgress {
 public:
  LoadProgress(size_t total, const LoadProgressFn& report)
      : total_(total), report_(report), start_(Clock::now()), last_(start_) {}
  void Add(size_t bytes, const std::string& what) {
    done_ += bytes;
    auto now = Clock::now();
    if (now - last_ < std::chrono::seconds(1) && done_ < total_) return;
    last_ = now;
    if (report_) report_(std::min(done_, total_), total_, what);
    const double s = std::chrono::duration<double>(now - start_).count();
    const double rate = s > 0 ? done_ / s : 0;
    const double eta = rate > 0 ? (total_ - std::min(done_, total_)) / rate : 0;
    R1_LOG(INFO) << "loading weights: " << what << ": " << done_ / 1e9 << " / " << total_ / 1e9 << " GB ("
                 << (total_ ? 100.0 * done_ / total_ : 100.0) << "%), " << rate / 1e9 << " GB/s, ETA " << eta << " s";
  }

 private:
  size_t total_, done_ = 0;
  LoadProgressFn report_;
  Clock::time_point start_, last_;
};

}  // namespace

absl::Status DeepseekV3Model::CheckLayout(const ModelConfig& c, int world) {
  if (world < 1) return absl::InvalidArgumentError(absl::StrCat("world size ", world, " must be at least 1"));
  auto need = [&](const char* what, int64_t value) -> absl::Status {
    if (value % world == 0) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat("cannot split the model over ", world, " workers: ", what, " = ",
                                                   value, " is not divisible by ", world));
  };
  R1_RETURN_IF_ERROR(need("num_attention_heads", c.num_attention_heads));
  R1_RETURN_IF_ERROR(need("vocab_size", c.vocab_size));
  if (c.first_k_dense_replace > 0) R1_RETURN_IF_ERROR(need("intermediate_size", c.intermediate_size));
  if (c.n_routed_experts > 0) {
    R1_RETURN_IF_ERROR(need("n_routed_experts", c.n_routed_experts));
    R1_RETURN_IF_ERROR(need("moe_intermediate_size * n_shared_experts", c.moe_intermediate_size * c.n_shared_experts));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<DeepseekV3Model>> DeepseekV3Model::Load(const std::string& model_dir,
                                                                       const ParallelLayout& layout,
                                                                       Communicator* comm,
                                                                       const LoadProgressFn& progress) {
  auto model = std::unique_ptr<DeepseekV3Model>(new DeepseekV3Model());
  R1_ASSIGN_OR_RETURN(model->config_, LoadModelConfig(model_dir));
  const ModelConfig& c = model->config_;
  R1_RETURN_IF_ERROR(CheckLayout(c, layout.world_size));
  if (layout.rank < 0 || layout.rank >= layout.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", layout.rank, " outside [0, ", layout.world_size, ")"));
  }
  if (layout.world_size > 1 && (comm == nullptr || comm->world_size() != layout.world_size ||
                                comm->rank() != layout.rank)) {
    return absl::InvalidArgumentError("a multi-rank layout needs a communicator of the same rank and size");
  }
  model->layout_ = layout;
  model->comm_ = layout.world_size > 1 ? comm : nullptr;
  model->local_heads_ = c.num_attention_heads / layout.world_size;
  ShardRange(c.n_routed_experts, layout, &model->expert_begin_, &model->expert_end_);
  ShardRange(c.vocab_size, layout, &model->vocab_begin_, &model->vocab_end_);
  R1_ASSIGN_OR_RETURN(auto ckpt, Checkpoint::Open(model_dir));
  R1_RETURN_IF_ERROR(model->LoadWeights(*ckpt, progress));
  model->inv_freq_ = RopeInverseFrequencies(c);
  model->rope_factor_ = static_cast<float>(c.rope_attention_factor());
  model->softmax_scale_ = static_cast<float>(c.softmax_scale());
  return model;
}

absl::Status DeepseekV3Model::LoadWeights(const Checkpoint& ckpt, const LoadProgressFn& report) {
  const ModelConfig& c = config_;
  const int64_t h = c.hidden_size, nh = c.num_attention_heads, w = layout_.world_size;
  const int64_t qk = c.qk_head_dim(), kvr = c.kv_lora_rank, kvb = c.qk_nope_head_dim + c.v_head_dim;
  const int64_t h0 = layout_.rank * local_heads_, h1 = h0 + local_heads_;  // this rank's heads
  // Only the main layers: the MTP layer (index num_hidden_layers) is not read.
  size_t total = 0;
  for (const auto& name : ckpt.Names()) {
    bool mtp = false;
    for (int64_t i = c.num_hidden_layers; i < c.num_hidden_layers + c.num_nextn_predict_layers; ++i) {
      mtp |= name.starts_with(absl::StrCat("model.layers.", i, "."));
    }
    if (!mtp) total += ckpt.Get(name)->nbytes;
  }
  // Progress counts checkpoint bytes passed over (read, sliced or skipped as another rank's).
  LoadProgress progress(total, report);
  std::string stage = "embedding";
  auto file_bytes = [&](const std::string& name) {
    auto t = ckpt.Get(name);
    size_t b = t.ok() ? t->nbytes : 0;
    const std::string scales = name.substr(0, name.rfind(".weight")) + ".weight_scale_inv";
    if (name.ends_with(".weight") && ckpt.Has(scales)) b += ckpt.Get(scales)->nbytes;
    return b;
  };
  // A matrix, whole (replicated) or a row / column slice (sharded).
  auto matrix = [&](const std::string& name, int64_t rows, int64_t cols, Matrix* out, Range r = {},
                    Range col = {}) -> absl::Status {
    R1_ASSIGN_OR_RETURN(*out, LoadMatrix(ckpt, c, name, rows, cols, r, col));
    // A tensor read by range is split across ranks (each holds a different part), even at W = 1.
    const bool sharded = r.end != -1 || col.end != -1;
    (sharded ? sharded_bytes_ : replicated_bytes_) += out->bytes();
    progress.Add(file_bytes(name), stage);
    return absl::OkStatus();
  };
  auto vector = [&](const std::string& name, int64_t size, std::vector<float>* out) -> absl::Status {
    R1_ASSIGN_OR_RETURN(*out, LoadVector(ckpt, name, size));
    replicated_bytes_ += out->size() * sizeof(float);
    progress.Add(file_bytes(name), stage);
    return absl::OkStatus();
  };
  // An MLP split on its intermediate dimension: gate/up rows and down columns [begin, end).
  auto mlp = [&](const std::string& prefix, int64_t inter, int64_t parts, MlpWeights* m) -> absl::Status {
    const int64_t per = inter / parts, b = per * (parts == 1 ? 0 : layout_.rank);
    R1_RETURN_IF_ERROR(matrix(prefix + "gate_proj.weight", inter, h, &m->gate, {b, b + per}));
    R1_RETURN_IF_ERROR(matrix(prefix + "up_proj.weight", inter, h, &m->up, {b, b + per}));
    return matrix(prefix + "down_proj.weight", h, inter, &m->down, {}, {b, b + per});
  };

  R1_RETURN_IF_ERROR(matrix("model.embed_tokens.weight", c.vocab_size, h, &embed_, {vocab_begin_, vocab_end_}));
  layers_.resize(c.num_hidden_layers);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    stage = absl::StrCat("layer ", i);
    LayerWeights& L = layers_[i];
    const std::string p = absl::StrCat("model.layers.", i, ".");
    auto status = [&]() -> absl::Status {
      R1_RETURN_IF_ERROR(vector(p + "input_layernorm.weight", h, &L.input_norm));
      R1_RETURN_IF_ERROR(vector(p + "post_attention_layernorm.weight", h, &L.post_attention_norm));
      const std::string a = p + "self_attn.";
      if (c.q_lora_rank) {
        R1_RETURN_IF_ERROR(matrix(a + "q_a_proj.weight", *c.q_lora_rank, h, &L.attn.q_a));
        R1_RETURN_IF_ERROR(vector(a + "q_a_layernorm.weight", *c.q_lora_rank, &L.attn.q_a_norm));
        R1_RETURN_IF_ERROR(matrix(a + "q_b_proj.weight", nh * qk, *c.q_lora_rank, &L.attn.q_b, {h0 * qk, h1 * qk}));
      } else {
        R1_RETURN_IF_ERROR(matrix(a + "q_proj.weight", nh * qk, h, &L.attn.q, {h0 * qk, h1 * qk}));
      }
      R1_RETURN_IF_ERROR(matrix(a + "kv_a_proj_with_mqa.weight", kvr + c.qk_rope_head_dim, h, &L.attn.kv_a));
      R1_RETURN_IF_ERROR(vector(a + "kv_a_layernorm.weight", kvr, &L.attn.kv_a_norm));
      R1_RETURN_IF_ERROR(matrix(a + "kv_b_proj.weight", nh * kvb, kvr, &L.attn.kv_b, {h0 * kvb, h1 * kvb}));
      R1_RETURN_IF_ERROR(matrix(a + "o_proj.weight", h, nh * c.v_head_dim, &L.attn.o, {},
                                {h0 * c.v_head_dim, h1 * c.v_head_dim}));
      L.is_moe = c.is_moe_layer(i);
      if (!L.is_moe) return mlp(p + "mlp.", c.intermediate_size, w, &L.mlp);
      R1_RETURN_IF_ERROR(matrix(p + "mlp.gate.weight", c.n_routed_experts, h, &L.moe.router));
      R1_RETURN_IF_ERROR(vector(p + "mlp.gate.e_score_correction_bias", c.n_routed_experts, &L.moe.score_bias));
      L.moe.experts.resize(expert_end_ - expert_begin_);
      for (int64_t e = 0; e < c.n_routed_experts; ++e) {
        const std::string ep = absl::StrCat(p, "mlp.experts.", e, ".");
        if (e < expert_begin_ || e >= expert_end_) {  // another rank's expert: never touched
          for (const char* m : {"gate_proj.weight", "up_proj.weight", "down_proj.weight"}) {
            progress.Add(file_bytes(ep + m), stage);
          }
          continue;
        }
        R1_RETURN_IF_ERROR(mlp(ep, c.moe_intermediate_size, 1, &L.moe.experts[e - expert_begin_]));
      }
      L.moe.has_shared = c.n_shared_experts > 0;
      if (L.moe.has_shared) {
        R1_RETURN_IF_ERROR(mlp(p + "mlp.shared_experts.", c.moe_intermediate_size * c.n_shared_experts, w, &L.moe.shared));
      }
      return absl::OkStatus();
    }();
    if (!status.ok()) return Annotate(status, absl::StrCat("loading layer ", i));
  }
  stage = "final norm and lm_head";
  R1_RETURN_IF_ERROR(vector("model.norm.weight", h, &final_norm_));
  R1_RETURN_IF_ERROR(matrix("lm_head.weight", c.vocab_size, h, &lm_head_, {vocab_begin_, vocab_end_}));
  R1_LOG(INFO) << "model loaded (rank " << layout_.rank << " of " << w << "): " << c.num_hidden_layers << " layers, "
               << weight_bytes() / 1e6 << " MB of float32 weights (" << sharded_bytes_ / 1e6 << " MB sharded, "
               << replicated_bytes_ / 1e6 << " MB replicated) from " << ckpt.num_files() << " file(s) in "
               << ckpt.dir();
  return absl::OkStatus();
}

absl::Status DeepseekV3Model::Validate(const std::vector<SequenceStep>& batch, const PagedKvCache& cache) const {
  if (cache.layers() != config_.num_hidden_layers || cache.latent_dim() != config_.kv_latent_dim()) {
    return absl::InvalidArgumentError(absl::StrCat("kv cache geometry (", cache.layers(), " layers x ",
                                                   cache.latent_dim(), ") does not fit the model (",
                                                   config_.num_hidden_layers, " x ", config_.kv_latent_dim(), ")"));
  }
  for (size_t s = 0; s < batch.size(); ++s) {
    const SequenceStep& q = batch[s];
    auto err = [&](absl::string_view what) { return absl::InvalidArgumentError(absl::StrCat("sequence ", s, ": ", what)); };
    if (q.tokens.empty()) return err("no new tokens");
    if (q.start_position < 0) return err("negative start position");
    const int64_t end = q.start_position + static_cast<int64_t>(q.tokens.size());
    if (end > config_.max_position_embeddings) {
      return err(absl::StrCat("positions up to ", end, " exceed max_position_embeddings ", config_.max_position_embeddings));
    }
    for (int32_t t : q.tokens) {
      if (t < 0 || t >= config_.vocab_size) return err(absl::StrCat("token id ", t, " outside [0, ", config_.vocab_size, ")"));
    }
    const int64_t need = (end + cache.block_size() - 1) / cache.block_size();
    if (static_cast<int64_t>(q.block_table.size()) < need) {
      return err(absl::StrCat("block table has ", q.block_table.size(), " blocks, ", need, " needed for ", end, " positions"));
    }
    for (int64_t b = 0; b < need; ++b) {
      if (q.block_table[b] < 0 || q.block_table[b] >= cache.num_blocks()) {
        return err(absl::StrCat("block id ", q.block_table[b], " outside the cache's ", cache.num_blocks(), " blocks"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status DeepseekV3Model::AddAllReduced(std::vector<float>& delta, std::vector<float>& x) const {
  if (comm_ != nullptr) R1_RETURN_IF_ERROR(comm_->AllReduceSum(delta.data(), delta.size()));
  for (size_t i = 0; i < x.size(); ++i) x[i] += delta[i];
  std::fill(delta.begin(), delta.end(), 0.0f);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::vector<float>>> DeepseekV3Model::Forward(const std::vector<SequenceStep>& batch,
                                                                         PagedKvCache& cache, AttentionForm form) const {
  R1_RETURN_IF_ERROR(Validate(batch, cache));
  const ModelConfig& c = config_;
  const int64_t hd = c.hidden_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  std::vector<int64_t> positions;
  std::vector<int32_t> ids;
  for (const SequenceStep& q : batch) {
    for (size_t i = 0; i < q.tokens.size(); ++i) {
      ids.push_back(q.tokens[i]);
      positions.push_back(q.start_position + static_cast<int64_t>(i));
    }
  }
  const int64_t t = static_cast<int64_t>(ids.size());

  // Residual stream x, normed input h and this rank's partial output delta, all [T, H].
  std::vector<float> x(t * hd, 0.0f), h(t * hd), delta(t * hd, 0.0f);
  // Vocabulary-parallel embedding: each rank fills the rows of its vocabulary slice.
  for (int64_t r = 0; r < t; ++r) {
    if (ids[r] >= vocab_begin_ && ids[r] < vocab_end_) std::copy_n(embed_.row(ids[r] - vocab_begin_), hd, delta.data() + r * hd);
  }
  R1_RETURN_IF_ERROR(AddAllReduced(delta, x));

  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& L = layers_[l];
    cpu::RmsNorm(x.data(), t, hd, hd, L.input_norm.data(), eps, h.data(), hd);
    Attention(l, h.data(), batch, positions, cache, form, delta.data());
    R1_RETURN_IF_ERROR(AddAllReduced(delta, x));  // all-reduce 1: after o_proj
    cpu::RmsNorm(x.data(), t, hd, hd, L.post_attention_norm.data(), eps, h.data(), hd);
    if (L.is_moe) {
      Moe(L.moe, h.data(), t, delta.data());
    } else {
      DenseMlp(L.mlp, h.data(), t, delta.data());
    }
    R1_RETURN_IF_ERROR(AddAllReduced(delta, x));  // all-reduce 2: routed + shared experts (or MLP)
  }

  // Final norm and the vocabulary-parallel lm_head on the rows that need logits, then an
  // all-gather of the W vocabulary slices.
  std::vector<int64_t> rows_of;  // row index in x of each logits row, sequence by sequence
  for (size_t s = 0, row = 0; s < batch.size(); ++s) {
    const int64_t n = static_cast<int64_t>(batch[s].tokens.size());
    for (int64_t i = batch[s].all_logits ? 0 : n - 1; i < n; ++i) rows_of.push_back(static_cast<int64_t>(row) + i);
    row += n;
  }
  const int64_t nrows = static_cast<int64_t>(rows_of.size()), vl = vocab_end_ - vocab_begin_;
  std::vector<float> normed(nrows * hd), local(nrows * vl);
  for (int64_t i = 0; i < nrows; ++i) {
    cpu::RmsNorm(x.data() + rows_of[i] * hd, 1, hd, hd, final_norm_.data(), eps, normed.data() + i * hd, hd);
  }
  cpu::MatMulNT(normed.data(), nrows, hd, lm_head_.data.data(), vl, local.data());
  std::vector<float> gathered;
  if (comm_ != nullptr) {
    gathered.resize(local.size() * layout_.world_size);  // [W, rows, V / W]
    R1_RETURN_IF_ERROR(comm_->AllGather(local.data(), local.size(), gathered.data()));
  }
  std::vector<std::vector<float>> logits(batch.size());
  for (size_t s = 0, i = 0; s < batch.size(); ++s) {
    const int64_t rows = batch[s].all_logits ? static_cast<int64_t>(batch[s].tokens.size()) : 1;
    logits[s].resize(rows * c.vocab_size);
    for (int64_t r = 0; r < rows; ++r, ++i) {
      float* dst = logits[s].data() + r * c.vocab_size;
      if (comm_ == nullptr) {
        std::copy_n(local.data() + i * vl, vl, dst);
      } else {
        for (int w = 0; w < layout_.world_size; ++w) {
          std::copy_n(gathered.data() + (w * nrows + static_cast<int64_t>(i)) * vl, vl, dst + w * vl);
        }
      }
    }
  }
  return logits;
}

void DeepseekV3Model::Attention(int64_t layer, const float* h, const std::vector<SequenceStep>& batch,
                                const std::vector<int64_t>& positions, PagedKvCache& cache, AttentionForm form,
                                float* out_delta) const {
  const ModelConfig& c = config_;
  const MlaWeights& w = layers_[layer].attn;
  const int64_t t = static_cast<int64_t>(positions.size()), hd = c.hidden_size, nh = local_heads_;
  const int64_t nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim, qk = c.qk_head_dim(), vd = c.v_head_dim;
  const int64_t kvr = c.kv_lora_rank, lat = c.kv_latent_dim(), kvb_rows = nope + vd;
  const float eps = static_cast<float>(c.rms_norm_eps);

  // Queries [T, NH, qk]: nope part then rope part of each head.
  std::vector<float> q(t * nh * qk);
  if (c.q_lora_rank) {
    const int64_t qr = *c.q_lora_rank;
    std::vector<float> qa(t * qr);  // [T, q_lora_rank]
    Project(h, t, hd, w.q_a, qr, qa.data(), false);
    cpu::RmsNorm(qa.data(), t, qr, qr, w.q_a_norm.data(), eps, qa.data(), qr);
    Project(qa.data(), t, qr, w.q_b, nh * qk, q.data(), false);
  } else {
    Project(h, t, hd, w.q, nh * qk, q.data(), false);
  }
  cpu::ApplyRope(q.data() + nope, t * nh, nh, rope, qk, positions.data(), inv_freq_.data(), rope_factor_,
                 c.rope_interleave);

  // The latent of each new token [T, kvr + rope]: normalised c_kv, then the rotated shared key.
  std::vector<float> latent(t * lat);
  Project(h, t, hd, w.kv_a, lat, latent.data(), false);
  cpu::RmsNorm(latent.data(), t, kvr, lat, w.kv_a_norm.data(), eps, latent.data(), lat);
  cpu::ApplyRope(latent.data() + kvr, t, 1, rope, lat, positions.data(), inv_freq_.data(), rope_factor_,
                 c.rope_interleave);

  // Write them into the paged cache.
  const int64_t bs = cache.block_size();
  {
    int64_t r = 0;
    for (const SequenceStep& s : batch) {
      for (size_t i = 0; i < s.tokens.size(); ++i, ++r) {
        const int64_t p = positions[r];
        std::copy_n(latent.data() + r * lat, lat, cache.At(s.block_table[p / bs], layer, p % bs));
      }
    }
  }

  std::vector<float> out(t * nh * vd);  // [T, NH * v]
  int64_t row0 = 0;
  for (const SequenceStep& s : batch) {
    const int64_t n = static_cast<int64_t>(s.tokens.size()), ctx = s.start_position + n;
    // This sequence's cached latents [L, kvr + rope], gathered from its blocks.
    std::vector<float> ctx_lat(ctx * lat);
    for (int64_t p = 0; p < ctx; ++p) std::copy_n(cache.At(s.block_table[p / bs], layer, p % bs), lat, ctx_lat.data() + p * lat);
    const bool absorbed = form == AttentionForm::kAbsorbed || (form == AttentionForm::kAuto && n == 1);

    std::vector<float> kv;  // expanded form: per-head K_nope and V [L, NH, nope + v]
    if (!absorbed) {
      std::vector<float> ckv(ctx * kvr);
      for (int64_t p = 0; p < ctx; ++p) std::copy_n(ctx_lat.data() + p * lat, kvr, ckv.data() + p * kvr);
      kv.resize(ctx * nh * kvb_rows);
      cpu::MatMulNT(ckv.data(), ctx, kvr, w.kv_b.data.data(), nh * kvb_rows, kv.data());
    }
#pragma omp parallel for schedule(dynamic, 1) collapse(2)
    for (int64_t head = 0; head < nh; ++head) {
      for (int64_t i = 0; i < n; ++i) {
        const int64_t r = row0 + i, visible = s.start_position + i + 1;  // causal
        const float* qh = q.data() + (r * nh + head) * qk;              // [nope | rope]
        float* o = out.data() + (r * nh + head) * vd;
        std::vector<float> scores(visible);
        if (absorbed) {
          // q_lat[kvr] = W_k[head]^T q_nope: the K half of kv_b_proj folded into the query.
          std::vector<float> q_lat(kvr, 0.0f), o_lat(kvr, 0.0f);
          for (int64_t d = 0; d < nope; ++d) cpu::Axpy(qh[d], w.kv_b.row(head * kvb_rows + d), kvr, q_lat.data());
          for (int64_t j = 0; j < visible; ++j) {
            const float* cj = ctx_lat.data() + j * lat;
            scores[j] = (cpu::Dot(q_lat.data(), cj, kvr) + cpu::Dot(qh + nope, cj + kvr, rope)) * softmax_scale_;
          }
          cpu::Softmax(scores.data(), visible);
          for (int64_t j = 0; j < visible; ++j) cpu::Axpy(scores[j], ctx_lat.data() + j * lat, kvr, o_lat.data());
          // The V half applied after the weighted sum.
          for (int64_t d = 0; d < vd; ++d) o[d] = cpu::Dot(w.kv_b.row(head * kvb_rows + nope + d), o_lat.data(), kvr);
        } else {
          for (int64_t j = 0; j < visible; ++j) {
            const float* kj = kv.data() + (j * nh + head) * kvb_rows;
            const float* pe = ctx_lat.data() + j * lat + kvr;
            scores[j] = (cpu::Dot(qh, kj, nope) + cpu::Dot(qh + nope, pe, rope)) * softmax_scale_;
          }
          cpu::Softmax(scores.data(), visible);
          std::fill_n(o, vd, 0.0f);
          for (int64_t j = 0; j < visible; ++j) cpu::Axpy(scores[j], kv.data() + (j * nh + head) * kvb_rows + nope, vd, o);
        }
      }
    }
    row0 += n;
  }
  Project(out.data(), t, nh * vd, w.o, hd, out_delta, true);
}

void DeepseekV3Model::Project(const float* x, int64_t m, int64_t k, const Matrix& w, int64_t n, float* y,
                              bool accumulate) const {
  if (!emulate_fp8_activations_) {
    if (accumulate) cpu::MatMulNTAccumulate(x, m, k, w.data.data(), n, y);
    else cpu::MatMulNT(x, m, k, w.data.data(), n, y);
    return;
  }
  // DeepSeek's inference numerics: the activations entering an FP8 GEMM are quantised per token
  // in 1x128 groups; the product then runs on the dequantised values.
  const int64_t groups = (k + 127) / 128;
  std::vector<uint8_t> q(m * k);
  std::vector<float> scales(m * groups), xq(m * k);
  cpu::QuantizeFp8PerToken128(x, m, k, q.data(), scales.data());
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t c = 0; c < k; ++c) xq[r * k + c] = Fp8E4M3ToFloat(q[r * k + c]) * scales[r * groups + c / 128];
  }
  if (accumulate) cpu::MatMulNTAccumulate(xq.data(), m, k, w.data.data(), n, y);
  else cpu::MatMulNT(xq.data(), m, k, w.data.data(), n, y);
}

void DeepseekV3Model::DenseMlp(const MlpWeights& w, const float* h, int64_t t, float* x) const {
  const int64_t hd = config_.hidden_size, inter = w.gate.rows;  // this rank's intermediate slice
  std::vector<float> g(t * inter), u(t * inter);
  Project(h, t, hd, w.gate, inter, g.data(), false);
  Project(h, t, hd, w.up, inter, u.data(), false);
  cpu::SiluMul(g.data(), u.data(), t * inter, g.data());
  Project(g.data(), t, inter, w.down, hd, x, true);
}

void DeepseekV3Model::Route(const MoeWeights& w, const float* h, int64_t t, std::vector<int32_t>* experts,
                            std::vector<float>* weights) const {
  std::vector<float> scores(t * config_.n_routed_experts);  // [T, E]
  cpu::MatMulNT(h, t, config_.hidden_size, w.router.data.data(), config_.n_routed_experts, scores.data());
  SelectExperts(config_, scores.data(), w.score_bias.data(), t, experts, weights);
}

void SelectExperts(const ModelConfig& c, float* router_logits, const float* score_bias, int64_t t,
                   std::vector<int32_t>* experts, std::vector<float>* weights) {
  const int64_t ne = c.n_routed_experts, k = c.num_experts_per_tok;
  const int64_t groups = c.n_group, per_group = ne / groups;
  float* scores = router_logits;
  experts->resize(t * k);
  weights->resize(t * k);
  std::vector<float> biased(ne), group_score(groups);
  std::vector<int32_t> order(std::max(ne, groups));
  for (int64_t r = 0; r < t; ++r) {
    float* s = scores + r * ne;
    for (int64_t e = 0; e < ne; ++e) {
      s[e] = 1.0f / (1.0f + std::exp(-s[e]));  // sigmoid
      biased[e] = s[e] + score_bias[e];         // the correction bias steers selection only
    }
    // Group score: the sum of the two best biased scores in the group; keep topk_group groups.
    for (int64_t g = 0; g < groups; ++g) {
      float b1 = -std::numeric_limits<float>::infinity(), b2 = b1;
      for (int64_t e = g * per_group; e < (g + 1) * per_group; ++e) {
        if (biased[e] > b1) { b2 = b1; b1 = biased[e]; } else if (biased[e] > b2) { b2 = biased[e]; }
      }
      group_score[g] = groups > 1 ? b1 + b2 : 0.0f;
    }
    std::iota(order.begin(), order.begin() + groups, 0);
    std::partial_sort(order.begin(), order.begin() + c.topk_group, order.begin() + groups,
                      [&](int32_t a, int32_t b) { return group_score[a] > group_score[b]; });
    std::vector<bool> keep(groups, false);
    for (int64_t g = 0; g < c.topk_group; ++g) keep[order[g]] = true;
    for (int64_t e = 0; e < ne; ++e) {
      if (!keep[e / per_group]) biased[e] = -std::numeric_limits<float>::infinity();
    }
    std::iota(order.begin(), order.begin() + ne, 0);
    std::partial_sort(order.begin(), order.begin() + k, order.begin() + ne,
                      [&](int32_t a, int32_t b) { return biased[a] > biased[b]; });
    // Weights from the unbiased scores, optionally normalised, then scaled.
    float sum = 0;
    for (int64_t j = 0; j < k; ++j) sum += s[order[j]];
    for (int64_t j = 0; j < k; ++j) {
      float wj = s[order[j]];
      if (c.norm_topk_prob) wj /= (sum + 1e-20f);
      (*experts)[r * k + j] = order[j];
      (*weights)[r * k + j] = wj * static_cast<float>(c.routed_scaling_factor);
    }
  }
}

void DeepseekV3Model::Moe(const MoeWeights& w, const float* h, int64_t t, float* x) const {
  const ModelConfig& c = config_;
  const int64_t hd = c.hidden_size, k = c.num_experts_per_tok, inter = c.moe_intermediate_size;
  std::vector<int32_t> chosen;
  std::vector<float> chosen_w;
  Route(w, h, t, &chosen, &chosen_w);
  // Tokens grouped by expert, so each expert runs one matrix product over its tokens.
  std::vector<std::vector<int64_t>> slots(c.n_routed_experts);  // entries index chosen[]
  for (int64_t i = 0; i < t * k; ++i) slots[chosen[i]].push_back(i);
  for (int64_t e = expert_begin_; e < expert_end_; ++e) {  // this rank's experts only
    const std::vector<int64_t>& sl = slots[e];
    if (sl.empty()) continue;
    const int64_t m = static_cast<int64_t>(sl.size());
    const MlpWeights& ew = w.experts[e - expert_begin_];
    std::vector<float> xin(m * hd), g(m * inter), u(m * inter), y(m * hd);
    for (int64_t i = 0; i < m; ++i) std::copy_n(h + (sl[i] / k) * hd, hd, xin.data() + i * hd);
    Project(xin.data(), m, hd, ew.gate, inter, g.data(), false);
    Project(xin.data(), m, hd, ew.up, inter, u.data(), false);
    cpu::SiluMul(g.data(), u.data(), m * inter, g.data());
    Project(g.data(), m, inter, ew.down, hd, y.data(), false);
    for (int64_t i = 0; i < m; ++i) cpu::Axpy(chosen_w[sl[i]], y.data() + i * hd, hd, x + (sl[i] / k) * hd);
  }
  if (w.has_shared) DenseMlp(w.shared, h, t, x);
}

}  // namespace r1

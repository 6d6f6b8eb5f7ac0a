#include "planner/planner.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <numeric>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "common/safetensors.h"
#include "common/status.h"

namespace r1::planner {

// The embedded config.json texts (model_presets.cc, generated from tests/data/configs).
extern const char kPresetDeepseekR1[];
extern const char kPresetDeepseekV3[];
extern const char kPresetDeepseekV31[];

namespace {

std::string Lower(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

// ---- GPUs -------------------------------------------------------------------------------------

const std::vector<GpuSpec>& GpuPresets() {
  // Memory: the total nvidia-smi reports (MiB). Bandwidth: the vendor's HBM figure.
  static const std::vector<GpuSpec> kGpus = {
      {"h100", "NVIDIA H100 SXM 80 GB", 81559, 3.35, true, ""},
      {"h100-nvl", "NVIDIA H100 NVL 94 GB", 95830, 3.9, true, ""},
      {"h20", "NVIDIA H20 96 GB", 97871, 4.0, true, ""},
      {"h200", "NVIDIA H200 SXM 141 GB", 143771, 4.8, true, ""},
      {"b200", "NVIDIA B200 180 GB", 183359, 8.0, true,
       "r1serve's CUDA kernels are built for sm_90a (Hopper) today: Blackwell needs a build for sm_100 (untested)"},
      {"a100-80g", "NVIDIA A100 SXM 80 GB", 81920, 2.039, false,
       "no FP8 tensor cores: r1serve's FP8 GEMMs (cuBLASLt block-scaled) do not run on Ampere"},
      {"a100-40g", "NVIDIA A100 SXM 40 GB", 40960, 1.555, false,
       "no FP8 tensor cores: r1serve's FP8 GEMMs (cuBLASLt block-scaled) do not run on Ampere"},
      {"l40s", "NVIDIA L40S 48 GB", 46068, 0.864, true,
       "Ada (sm_89): r1serve's CUDA kernels are built for sm_90a (Hopper); untested here"},
  };
  return kGpus;
}

absl::StatusOr<GpuSpec> FindGpu(const std::string& name) {
  const std::string want = Lower(name);
  std::vector<std::string> names;
  for (const GpuSpec& g : GpuPresets()) {
    if (g.name == want) return g;
    names.push_back(g.name);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown GPU '", name, "'; known: ", absl::StrJoin(names, ", "),
                   " (or give --gpu-memory-gib N for another card)"));
}

// ---- Models -----------------------------------------------------------------------------------

const std::vector<ModelPreset>& ModelPresets() {
  static const std::vector<ModelPreset> kPresets = {
      {"deepseek-r1", "DeepSeek-R1 (deepseek-ai/DeepSeek-R1 config.json)", kPresetDeepseekR1},
      {"deepseek-r1-0528", "DeepSeek-R1-0528: same architecture config as deepseek-r1", kPresetDeepseekR1},
      {"deepseek-v3", "DeepSeek-V3 (deepseek-ai/DeepSeek-V3 config.json)", kPresetDeepseekV3},
      {"deepseek-v3-0324", "DeepSeek-V3-0324: same architecture config as deepseek-v3", kPresetDeepseekV3},
      {"deepseek-v3.1", "DeepSeek-V3.1 (deepseek-ai/DeepSeek-V3.1 config.json)", kPresetDeepseekV31},
  };
  return kPresets;
}

absl::StatusOr<ModelConfig> LoadModelPreset(const std::string& name) {
  const std::string want = Lower(name);
  std::vector<std::string> names;
  for (const ModelPreset& p : ModelPresets()) {
    if (p.name == want) return ParseModelConfig(p.config_json, absl::StrCat("preset ", p.name));
    names.push_back(p.name);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown model preset '", name, "'; known: ", absl::StrJoin(names, ", ")));
}

uint64_t TensorRecord::bytes() const {
  uint64_t n = DTypeSize(dtype);
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

std::vector<TensorRecord> PublishedTensors(const ModelConfig& c) {
  std::vector<TensorRecord> out;
  const int64_t h = c.hidden_size;
  const int64_t br = c.fp8 ? c.fp8->block_rows : 128, bc = c.fp8 ? c.fp8->block_cols : 128;
  auto linear = [&](const std::string& name, int64_t rows, int64_t cols) {
    if (c.fp8) {
      out.push_back({name + ".weight", DType::kF8E4M3, {rows, cols}});
      out.push_back({name + ".weight_scale_inv", DType::kF32, {CeilDiv(rows, br), CeilDiv(cols, bc)}});
    } else {
      out.push_back({name + ".weight", DType::kBF16, {rows, cols}});
    }
  };
  auto norm = [&](const std::string& name, int64_t size) { out.push_back({name + ".weight", DType::kBF16, {size}}); };
  auto mlp = [&](const std::string& p, int64_t inter) {
    linear(p + "gate_proj", inter, h);
    linear(p + "up_proj", inter, h);
    linear(p + "down_proj", h, inter);
  };
  out.push_back({"model.embed_tokens.weight", DType::kBF16, {c.vocab_size, h}});
  const int64_t nh = c.num_attention_heads;
  for (int64_t i = 0; i < c.num_hidden_layers + c.num_nextn_predict_layers; ++i) {
    const std::string p = absl::StrCat("model.layers.", i, ".");
    norm(p + "input_layernorm", h);
    norm(p + "post_attention_layernorm", h);
    const std::string a = p + "self_attn.";
    if (c.q_lora_rank) {
      linear(a + "q_a_proj", *c.q_lora_rank, h);
      norm(a + "q_a_layernorm", *c.q_lora_rank);
      linear(a + "q_b_proj", nh * c.qk_head_dim(), *c.q_lora_rank);
    } else {
      linear(a + "q_proj", nh * c.qk_head_dim(), h);
    }
    linear(a + "kv_a_proj_with_mqa", c.kv_lora_rank + c.qk_rope_head_dim, h);
    norm(a + "kv_a_layernorm", c.kv_lora_rank);
    linear(a + "kv_b_proj", nh * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank);
    linear(a + "o_proj", h, nh * c.v_head_dim);
    // MTP layers are MoE layers (their index is past first_k_dense_replace).
    if (c.is_moe_layer(i) || (i >= c.num_hidden_layers && c.n_routed_experts > 0)) {
      out.push_back({p + "mlp.gate.weight", DType::kBF16, {c.n_routed_experts, h}});
      out.push_back({p + "mlp.gate.e_score_correction_bias", DType::kF32, {c.n_routed_experts}});
      for (int64_t e = 0; e < c.n_routed_experts; ++e) mlp(absl::StrCat(p, "mlp.experts.", e, "."), c.moe_intermediate_size);
      if (c.n_shared_experts > 0) mlp(p + "mlp.shared_experts.", c.moe_intermediate_size * c.n_shared_experts);
    } else {
      mlp(p + "mlp.", c.intermediate_size);
    }
    if (i >= c.num_hidden_layers) {  // the MTP block's own tensors
      out.push_back({p + "embed_tokens.weight", DType::kBF16, {c.vocab_size, h}});
      norm(p + "enorm", h);
      norm(p + "hnorm", h);
      linear(p + "eh_proj", h, 2 * h);
      norm(p + "shared_head.norm", h);
      out.push_back({p + "shared_head.head.weight", DType::kBF16, {c.vocab_size, h}});
    }
  }
  norm("model.norm", h);
  out.push_back({"lm_head.weight", DType::kBF16, {c.vocab_size, h}});
  return out;
}

bool HasSafetensors(const std::string& model_dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  return fs::exists(fs::path(model_dir) / "model.safetensors.index.json", ec) ||
         fs::exists(fs::path(model_dir) / "model.safetensors", ec);
}

absl::StatusOr<std::vector<TensorRecord>> CheckpointTensors(const std::string& model_dir) {
  R1_ASSIGN_OR_RETURN(auto ckpt, Checkpoint::Open(model_dir));
  std::vector<TensorRecord> out;
  for (const std::string& name : ckpt->Names()) {
    R1_ASSIGN_OR_RETURN(TensorView t, ckpt->Get(name));
    out.push_back({name, t.dtype, t.shape});
  }
  return out;
}

// ---- Classification ---------------------------------------------------------------------------

const char* PartName(Part part) {
  switch (part) {
    case Part::kAttention: return "attention (MLA)";
    case Part::kDenseMlp: return "dense MLP";
    case Part::kSharedExperts: return "shared experts";
    case Part::kRoutedExperts: return "routed experts";
    case Part::kVocab: return "embedding + lm_head";
    case Part::kNormsRouter: return "norms + router";
    case Part::kOther: return "other";
  }
  return "?";
}

const char* PartKey(Part part) {
  switch (part) {
    case Part::kAttention: return "attention";
    case Part::kDenseMlp: return "dense_mlp";
    case Part::kSharedExperts: return "shared_experts";
    case Part::kRoutedExperts: return "routed_experts";
    case Part::kVocab: return "embedding_lm_head";
    case Part::kNormsRouter: return "norms_router";
    case Part::kOther: return "other";
  }
  return "?";
}

uint64_t WeightTally::total() const { return std::accumulate(bytes.begin(), bytes.end(), uint64_t{0}); }

namespace {

// How a tensor is spread over the W GPUs.
enum class Split { kReplicated, kRows, kCols, kExpert };

struct Placement {
  Part part = Part::kOther;
  Split split = Split::kReplicated;
  int64_t expert = -1;
  bool mtp = false;
  bool known = true;
  bool scale = false;       // a weight_scale_inv tensor
  std::string weight_name;  // for a scale: the weight it scales
};

Placement Place(const ModelConfig& c, const std::string& name) {
  Placement pl;
  std::string module = name;
  if (name.ends_with(".weight_scale_inv")) {
    pl.scale = true;
    module = name.substr(0, name.size() - std::string(".weight_scale_inv").size());
    pl.weight_name = module + ".weight";
  } else if (name.ends_with(".weight")) {
    module = name.substr(0, name.size() - std::string(".weight").size());
  }
  auto set = [&](Part p, Split s) {
    pl.part = p;
    pl.split = s;
    return pl;
  };
  if (module == "model.embed_tokens" || module == "lm_head") return set(Part::kVocab, Split::kRows);
  if (module == "model.norm") return set(Part::kNormsRouter, Split::kReplicated);
  const std::string prefix = "model.layers.";
  if (!module.starts_with(prefix)) {
    pl.known = false;
    return set(Part::kOther, Split::kReplicated);
  }
  const size_t dot = module.find('.', prefix.size());
  int64_t layer = -1;
  if (dot == std::string::npos || !absl::SimpleAtoi(module.substr(prefix.size(), dot - prefix.size()), &layer)) {
    pl.known = false;
    return set(Part::kOther, Split::kReplicated);
  }
  pl.mtp = layer >= c.num_hidden_layers;
  const std::string rest = module.substr(dot + 1);
  if (rest == "input_layernorm" || rest == "post_attention_layernorm" || rest == "self_attn.q_a_layernorm" ||
      rest == "self_attn.kv_a_layernorm") {
    return set(Part::kNormsRouter, Split::kReplicated);
  }
  if (rest == "self_attn.q_a_proj" || rest == "self_attn.kv_a_proj_with_mqa") return set(Part::kAttention, Split::kReplicated);
  if (rest == "self_attn.q_proj" || rest == "self_attn.q_b_proj" || rest == "self_attn.kv_b_proj") {
    return set(Part::kAttention, Split::kRows);
  }
  if (rest == "self_attn.o_proj") return set(Part::kAttention, Split::kCols);
  if (rest == "mlp.gate" || name.ends_with("mlp.gate.e_score_correction_bias")) {
    return set(Part::kNormsRouter, Split::kReplicated);
  }
  if (rest == "mlp.gate_proj" || rest == "mlp.up_proj") return set(Part::kDenseMlp, Split::kRows);
  if (rest == "mlp.down_proj") return set(Part::kDenseMlp, Split::kCols);
  if (rest == "mlp.shared_experts.gate_proj" || rest == "mlp.shared_experts.up_proj") {
    return set(Part::kSharedExperts, Split::kRows);
  }
  if (rest == "mlp.shared_experts.down_proj") return set(Part::kSharedExperts, Split::kCols);
  const std::string ex = "mlp.experts.";
  if (rest.starts_with(ex)) {
    const size_t d = rest.find('.', ex.size());
    if (d != std::string::npos && absl::SimpleAtoi(rest.substr(ex.size(), d - ex.size()), &pl.expert)) {
      return set(Part::kRoutedExperts, Split::kExpert);
    }
  }
  // MTP-only tensors (enorm, hnorm, eh_proj, shared_head, embed_tokens) are never loaded.
  pl.known = pl.mtp;
  return set(Part::kOther, Split::kReplicated);
}

// Elements of [lo, hi) of a dimension of `size` blocked by `block`: how many blocks it overlaps.
int64_t BlocksOverlapped(int64_t lo, int64_t hi, int64_t block) {
  if (hi <= lo) return 0;
  return CeilDiv(hi, block) - lo / block;
}

}  // namespace

ModelWeights TallyModel(const ModelConfig& c, const std::vector<TensorRecord>& tensors) {
  ModelWeights m;
  for (const TensorRecord& t : tensors) {
    const Placement pl = Place(c, t.name);
    const int64_t numel = static_cast<int64_t>(t.bytes() / DTypeSize(t.dtype));
    if (pl.mtp) {
      m.mtp_bytes += t.bytes();
      if (!pl.scale) m.mtp_parameters += numel;
      continue;
    }
    if (!pl.known) m.unknown_tensors.push_back(t.name);
    m.by_part[pl.part] += t.bytes();
    m.by_dtype[std::string(DTypeName(t.dtype))] += t.bytes();
    if (!pl.scale) m.parameters += numel;
  }
  return m;
}

// ---- Layout -----------------------------------------------------------------------------------

namespace {

struct SplitDim {
  std::string what;
  int64_t value;
  std::string short_name;
};

std::vector<SplitDim> SplitDims(const ModelConfig& c) {
  std::vector<SplitDim> dims = {{"num_attention_heads", c.num_attention_heads, "heads"},
                                {"vocab_size", c.vocab_size, "vocab"}};
  bool any_dense = false;
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) any_dense |= !c.is_moe_layer(i);
  if (any_dense) dims.push_back({"intermediate_size", c.intermediate_size, "intermediate"});
  if (c.n_routed_experts > 0) {
    dims.push_back({"n_routed_experts", c.n_routed_experts, "experts"});
    if (c.n_shared_experts > 0) {
      dims.push_back({"moe_intermediate_size * n_shared_experts", c.moe_intermediate_size * c.n_shared_experts, "shared"});
    }
  }
  return dims;
}

}  // namespace

std::vector<std::string> LayoutProblems(const ModelConfig& c, int64_t world) {
  if (world < 1) return {absl::StrCat("W = ", world, " GPUs: there must be at least one")};
  std::vector<std::string> out;
  for (const SplitDim& d : SplitDims(c)) {
    if (d.value % world != 0) out.push_back(absl::StrCat(d.what, " = ", d.value, " is not divisible by ", world));
  }
  return out;
}

int64_t MaxWorldSize(const ModelConfig& c) {
  int64_t g = 0;
  for (const SplitDim& d : SplitDims(c)) g = std::gcd(g, d.value);
  return std::max<int64_t>(g, 1);
}

std::vector<int64_t> ValidWorldSizes(const ModelConfig& c, int64_t up_to) {
  std::vector<int64_t> out;
  for (int64_t w = 1; w <= up_to; ++w) {
    if (LayoutProblems(c, w).empty()) out.push_back(w);
  }
  return out;
}

namespace {

// Each tensor's placement and, for a scale, the shape of the weight it scales: worked out once
// for all ranks.
struct IndexedTensor {
  const TensorRecord* t;
  Placement pl;
  const std::vector<int64_t>* weight_shape = nullptr;
};

std::vector<IndexedTensor> Index(const ModelConfig& c, const std::vector<TensorRecord>& tensors) {
  std::map<std::string, const TensorRecord*> by_name;
  for (const TensorRecord& t : tensors) by_name[t.name] = &t;
  std::vector<IndexedTensor> out;
  out.reserve(tensors.size());
  for (const TensorRecord& t : tensors) {
    IndexedTensor x{&t, Place(c, t.name)};
    if (x.pl.mtp) continue;
    if (x.pl.scale) {
      auto w = by_name.find(x.pl.weight_name);
      if (w != by_name.end()) x.weight_shape = &w->second->shape;
    }
    out.push_back(std::move(x));
  }
  return out;
}

WeightTally RankWeightsIndexed(const ModelConfig& c, const std::vector<IndexedTensor>& index, int64_t world, int64_t rank) {
  WeightTally tally;
  const int64_t br = c.fp8 ? c.fp8->block_rows : 128, bc = c.fp8 ? c.fp8->block_cols : 128;
  const int64_t experts = std::max<int64_t>(c.n_routed_experts, 1);
  const int64_t e0 = rank * experts / world, e1 = (rank + 1) * experts / world;
  for (const IndexedTensor& x : index) {
    const TensorRecord& t = *x.t;
    const Placement& pl = x.pl;
    uint64_t bytes = t.bytes();
    const uint64_t dsize = DTypeSize(t.dtype);
    switch (pl.split) {
      case Split::kReplicated:
        break;
      case Split::kExpert:
        bytes = (pl.expert >= e0 && pl.expert < e1) ? bytes : 0;
        break;
      case Split::kRows:
      case Split::kCols: {
        if (t.shape.size() != 2) break;  // not a matrix: held whole
        const int dim = pl.split == Split::kRows ? 0 : 1;
        const int other = 1 - dim;
        if (!pl.scale) {
          const int64_t n = t.shape[dim];
          const int64_t lo = rank * n / world, hi = (rank + 1) * n / world;
          bytes = static_cast<uint64_t>(hi - lo) * static_cast<uint64_t>(t.shape[other]) * dsize;
          break;
        }
        // A scale block covers block x block weights: the slice needs every block it overlaps.
        if (x.weight_shape == nullptr || x.weight_shape->size() != 2) break;  // held whole
        const int64_t n = (*x.weight_shape)[dim];
        const int64_t lo = rank * n / world, hi = (rank + 1) * n / world;
        const int64_t blocks = BlocksOverlapped(lo, hi, dim == 0 ? br : bc);
        bytes = static_cast<uint64_t>(std::min(blocks, t.shape[dim])) * static_cast<uint64_t>(t.shape[other]) * dsize;
        break;
      }
    }
    tally[pl.part] += bytes;
  }
  return tally;
}

}  // namespace

WeightTally RankWeights(const ModelConfig& c, const std::vector<TensorRecord>& tensors, int64_t world, int64_t rank) {
  return RankWeightsIndexed(c, Index(c, tensors), world, rank);
}

GpuWeights PerGpuWeights(const ModelConfig& c, const std::vector<TensorRecord>& tensors, int64_t world) {
  GpuWeights g;
  bool first = true;
  const std::vector<IndexedTensor> index = Index(c, tensors);
  for (int64_t r = 0; r < world; ++r) {
    WeightTally t = RankWeightsIndexed(c, index, world, r);
    if (first || t.total() > g.worst.total()) {
      g.worst = t;
      g.worst_rank = r;
    }
    g.least = first ? t.total() : std::min(g.least, t.total());
    first = false;
  }
  return g;
}

// ---- Memory rules -----------------------------------------------------------------------------

uint64_t WorkspacePerToken(const ModelConfig& c, int64_t world) {
  const uint64_t h = static_cast<uint64_t>(c.hidden_size);
  const uint64_t k = static_cast<uint64_t>(std::max<int64_t>(c.num_experts_per_tok, 0));
  const uint64_t moe = k * static_cast<uint64_t>(c.moe_intermediate_size);
  const uint64_t dense = static_cast<uint64_t>(c.intermediate_size / std::max<int64_t>(world, 1));
  return 16 * h + 7 * k * h + 6 * std::max(moe, dense);
}

uint64_t KvBytesPerToken(const ModelConfig& c, int kv_dtype_bytes) {
  return static_cast<uint64_t>(c.num_hidden_layers) * static_cast<uint64_t>(c.kv_latent_dim()) *
         static_cast<uint64_t>(kv_dtype_bytes);
}

// ---- The plan ---------------------------------------------------------------------------------

namespace {

std::string Gb(uint64_t bytes) { return absl::StrFormat("%.2f GB", bytes / 1e9); }
std::string GbSigned(int64_t bytes) { return absl::StrFormat("%.2f GB", bytes / 1e9); }
std::string Gib(uint64_t bytes) { return absl::StrFormat("%.2f GiB", bytes / 1073741824.0); }

// "1,234,567"
std::string Commas(uint64_t v) {
  const std::string digits = std::to_string(v);
  std::string s;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) s.push_back(',');
    s.push_back(digits[i]);
  }
  return s;
}
std::string Commas(int64_t v) {
  return v < 0 ? absl::StrCat("-", Commas(static_cast<uint64_t>(-v))) : Commas(static_cast<uint64_t>(v));
}

int KvDtypeBytes(const std::string& kv_dtype) { return kv_dtype == "fp8" ? 1 : 2; }

struct Targets {
  int64_t context, sequences;
};

MemoryPlan PlanMemory(const PlanRequest& q, const GpuSpec& gpu, int64_t world, const Targets& t) {
  MemoryPlan m;
  m.world = world;
  m.weights = PerGpuWeights(q.config, q.tensors, world);
  m.reserve_bytes = kFixedReserveBytes + static_cast<uint64_t>(q.prefill_chunk) * WorkspacePerToken(q.config, world);
  m.gpu_bytes = gpu.memory_bytes();
  m.free_bytes = static_cast<int64_t>(m.gpu_bytes) - static_cast<int64_t>(m.weights.worst.total()) -
                 static_cast<int64_t>(m.reserve_bytes);
  const uint64_t block_bytes = KvBytesPerToken(q.config, KvDtypeBytes(q.kv_dtype)) * static_cast<uint64_t>(q.block_size);
  m.kv_blocks = m.free_bytes > 0 ? static_cast<int64_t>(static_cast<uint64_t>(m.free_bytes) / block_bytes) : 0;
  m.kv_tokens = m.kv_blocks * q.block_size;
  const int64_t need_blocks = t.sequences * CeilDiv(t.context, q.block_size);
  m.meets_target = m.free_bytes > 0 && m.kv_blocks >= need_blocks;
  return m;
}

// Bytes a GPU needs at this W to meet the targets.
uint64_t NeededGpuBytes(const PlanRequest& q, const MemoryPlan& m, const Targets& t) {
  const uint64_t block_bytes = KvBytesPerToken(q.config, KvDtypeBytes(q.kv_dtype)) * static_cast<uint64_t>(q.block_size);
  return m.weights.worst.total() + m.reserve_bytes +
         static_cast<uint64_t>(t.sequences * CeilDiv(t.context, q.block_size)) * block_bytes;
}

// "16 x h100 (2 nodes of 8)"
std::string ClusterShape(const GpuSpec& gpu, int64_t world, int64_t per_node) {
  const std::string head = absl::StrCat(world, " x ", gpu.name, " (");
  if (world <= per_node) return absl::StrCat(head, "one node)");
  std::vector<std::string> ways;
  if (world <= 8) ways.push_back(absl::StrCat("one node of ", world));
  if (world % 8 == 0 && world > 8) ways.push_back(absl::StrCat(world / 8, " nodes of 8"));
  if (world % per_node == 0 && per_node != 8) ways.push_back(absl::StrCat(world / per_node, " nodes of ", per_node));
  if (ways.empty()) ways.push_back(absl::StrCat(world, " GPUs over several nodes"));
  return absl::StrCat(head, absl::StrJoin(ways, ", or "), ")");
}

bool ModelNeedsFp8(const PlanRequest& q) {
  for (const TensorRecord& t : q.tensors) {
    if (t.dtype == DType::kF8E4M3) return true;
  }
  return false;
}

}  // namespace

absl::StatusOr<PlanResult> MakePlan(const PlanRequest& q) {
  const ModelConfig& c = q.config;
  if (q.gpus_per_node < 1) return absl::InvalidArgumentError(absl::StrCat("--gpus-per-node ", q.gpus_per_node, ": must be at least 1"));
  if (q.nodes < 1) return absl::InvalidArgumentError(absl::StrCat("--nodes ", q.nodes, ": must be at least 1"));
  if (q.gpu.memory_mib <= 0) return absl::InvalidArgumentError("GPU memory must be positive");
  if (q.kv_dtype != "bf16" && q.kv_dtype != "fp8") {
    return absl::InvalidArgumentError(absl::StrCat("--kv-dtype '", q.kv_dtype, "': bf16 or fp8"));
  }
  if (q.prefill_chunk < 1) return absl::InvalidArgumentError("--prefill-chunk must be at least 1");
  if (q.block_size < 1) return absl::InvalidArgumentError("--block-size must be at least 1");
  if (q.max_context < 0 || q.concurrency < 0) return absl::InvalidArgumentError("--max-context and --concurrency must not be negative");
  if (q.max_context > c.max_position_embeddings) {
    return absl::InvalidArgumentError(absl::StrCat("--max-context ", q.max_context, " exceeds the model's max_position_embeddings ",
                                                   c.max_position_embeddings));
  }
  if (q.tensors.empty()) return absl::InvalidArgumentError("the model has no tensors");

  PlanResult r;
  r.request = q;
  r.model = TallyModel(c, q.tensors);
  r.world = q.gpus_per_node * q.nodes;
  r.layout_problems = LayoutProblems(c, r.world);
  r.valid_worlds = ValidWorldSizes(c, MaxWorldSize(c));
  r.kv_bytes_per_token = KvBytesPerToken(c, KvDtypeBytes(q.kv_dtype));
  const Targets t{q.max_context > 0 ? q.max_context : std::min<int64_t>(4096, c.max_position_embeddings),
                  q.concurrency > 0 ? q.concurrency : 1};
  r.target_context = t.context;
  r.target_sequences = t.sequences;
  r.target_tokens = t.context * t.sequences;
  const bool needs_fp8 = ModelNeedsFp8(q);
  const bool gpu_ok = q.gpu.fp8 || !needs_fp8;
  const std::string target_text = absl::StrCat(t.sequences, " sequence", t.sequences == 1 ? "" : "s", " of ",
                                               Commas(t.context), " tokens");

  if (r.layout_problems.empty()) {
    r.memory = PlanMemory(q, q.gpu, r.world, t);
    const MemoryPlan& m = *r.memory;
    r.min_gpu_bytes_at_world = NeededGpuBytes(q, m, t);
    r.max_context_one_sequence = std::min(m.kv_tokens, c.max_position_embeddings);
    std::vector<int64_t> contexts = {4096, 8192, 32768, 131072, c.max_position_embeddings, t.context};
    std::sort(contexts.begin(), contexts.end());
    contexts.erase(std::unique(contexts.begin(), contexts.end()), contexts.end());
    for (int64_t ctx : contexts) {
      if (ctx > c.max_position_embeddings || ctx < 1) continue;
      r.contexts.push_back({ctx, m.kv_blocks / CeilDiv(ctx, q.block_size)});
    }
    r.fits = m.meets_target && gpu_ok;
    if (m.free_bytes <= 0) {
      r.verdict = absl::StrCat("does not fit: ", Gb(m.weights.worst.total()), " of weights + ", Gb(m.reserve_bytes),
                               " reserve per GPU exceed the ", Gb(m.gpu_bytes), " (", Gib(m.gpu_bytes), ") of one ", q.gpu.name);
    } else if (!m.meets_target) {
      r.verdict = absl::StrCat("does not fit the target: room for ", Commas(m.kv_tokens), " tokens of KV cache per GPU, ",
                               target_text, " need ", Commas(r.target_tokens));
    } else if (!gpu_ok) {
      r.verdict = absl::StrCat("fits in memory, but ", q.gpu.name, " cannot run it: ", q.gpu.note);
    } else {
      r.verdict = absl::StrCat("fits: W = ", r.world, ", ", Commas(m.kv_tokens), " tokens of KV cache per GPU; longest single "
                               "context ", Commas(r.max_context_one_sequence), " tokens");
    }
    // GPUs with more memory at this W.
    if (!r.fits) {
      for (const GpuSpec& g : GpuPresets()) {
        if (g.name == q.gpu.name || (needs_fp8 && !g.fp8)) continue;
        if (g.memory_bytes() >= r.min_gpu_bytes_at_world) r.larger_gpus.push_back(g.name);
      }
    }
  } else {
    r.verdict = absl::StrCat("impossible layout: W = ", r.world, " GPUs cannot split the model (",
                             absl::StrJoin(r.layout_problems, "; "), ")");
  }

  // The smallest valid W of this GPU that meets the target.
  for (int64_t w : r.valid_worlds) {
    if (PlanMemory(q, q.gpu, w, t).meets_target) {
      r.smallest_world_same_gpu = w;
      break;
    }
  }
  if (!r.fits) {
    if (!gpu_ok) {
      r.suggestions.push_back(absl::StrCat(q.gpu.name, " has no usable FP8 path for this FP8 checkpoint: use Hopper GPUs (h100, h200)"));
    }
    if (r.smallest_world_same_gpu && gpu_ok) {
      const int64_t w = *r.smallest_world_same_gpu;
      r.suggestions.push_back(absl::StrCat(w < r.world ? "use " : "needs ", ClusterShape(q.gpu, w, q.gpus_per_node),
                                           ": the smallest valid layout of this GPU that holds the weights and ", target_text));
    } else if (!r.smallest_world_same_gpu) {
      r.suggestions.push_back(absl::StrCat("no layout of ", q.gpu.name, " holds it: the largest valid W is ",
                                           MaxWorldSize(c), " (", absl::StrJoin(r.valid_worlds, ", "), ")"));
    }
    if (!r.layout_problems.empty()) {
      int64_t below = 0;
      for (int64_t w : r.valid_worlds) {
        if (w < r.world) below = w;
      }
      r.suggestions.push_back(absl::StrCat("valid W near ", r.world, ": ", below > 0 ? absl::StrCat(below, " (below)") : "none below",
                                           [&]() -> std::string {
                                             for (int64_t w : r.valid_worlds) {
                                               if (w > r.world) return absl::StrCat(", ", w, " (above)");
                                             }
                                             return "";
                                           }(),
                                           "; every valid W: ", absl::StrJoin(r.valid_worlds, ", ")));
    }
    if (!r.larger_gpus.empty()) {
      r.suggestions.push_back(absl::StrCat("at W = ", r.world, " a GPU with at least ", Gb(r.min_gpu_bytes_at_world), " (",
                                           Gib(r.min_gpu_bytes_at_world), "): ", absl::StrJoin(r.larger_gpus, ", ")));
    } else if (r.memory && r.memory->free_bytes <= 0) {
      r.suggestions.push_back(absl::StrCat("at W = ", r.world, " a GPU needs at least ", Gb(r.min_gpu_bytes_at_world), " (",
                                           Gib(r.min_gpu_bytes_at_world), "); no preset has that"));
    }
  } else if (r.smallest_world_same_gpu && *r.smallest_world_same_gpu < r.world) {
    r.notes.push_back(absl::StrCat("the target also fits on ", ClusterShape(q.gpu, *r.smallest_world_same_gpu, q.gpus_per_node),
                                   "; more GPUs give more KV room per GPU, not more tokens in the cluster (the cache is replicated)"));
  }

  // Notes.
  if (r.model.mtp_bytes > 0) {
    r.notes.push_back(absl::StrCat("MTP layer", c.num_nextn_predict_layers == 1 ? "" : "s", " (layer ", c.num_hidden_layers,
                                   c.num_nextn_predict_layers > 1 ? "+" : "", "): ", Gb(r.model.mtp_bytes), ", ",
                                   Commas(r.model.mtp_parameters), " parameters in the checkpoint, not loaded"));
  }
  r.notes.push_back(q.exact_from_checkpoint
                        ? std::string("weight bytes from the checkpoint's safetensors headers (exact)")
                        : std::string("weight bytes from config.json, laid out as DeepSeek publishes the checkpoint: FP8 e4m3 "
                                      "linear weights with F32 128x128 scale blocks, BF16 embedding, lm_head, norms and router, "
                                      "F32 e_score_correction_bias"));
  r.notes.push_back("KV cache replicated: with attention tensor-parallel over heads every GPU stores the full latent of "
                    "every sequence, so the cluster holds as many tokens as one GPU");
  if (q.kv_dtype == "fp8") {
    r.notes.push_back("--kv-dtype fp8 counts 1 byte per latent value (no scales); r1serve's cache stores bf16 today");
  }
  if (!r.model.unknown_tensors.empty()) {
    r.notes.push_back(absl::StrCat(r.model.unknown_tensors.size(), " unrecognised tensors counted as replicated, e.g. ",
                                   r.model.unknown_tensors.front()));
  }
  if (!q.gpu.note.empty()) r.notes.push_back(absl::StrCat(q.gpu.name, ": ", q.gpu.note));
  return r;
}

// ---- Rendering --------------------------------------------------------------------------------

namespace {

std::string ModelDir(const PlanRequest& q) { return q.model_dir.empty() ? "MODEL_DIR" : q.model_dir; }

std::string Port(const std::string& hostport) {
  const size_t colon = hostport.rfind(':');
  return colon == std::string::npos ? "50051" : hostport.substr(colon + 1);
}

std::string MpirunCommand(const PlanResult& r) {
  const PlanRequest& q = r.request;
  std::string hosts;
  if (q.nodes > 1) {
    std::vector<std::string> h;
    for (int64_t n = 0; n < q.nodes; ++n) h.push_back(absl::StrCat("node", n, ":", q.gpus_per_node));
    hosts = absl::StrCat(" --host ", absl::StrJoin(h, ","));
  }
  return absl::StrCat("mpirun -np ", r.world, hosts, " r1-worker --model ", ModelDir(q), " --coordinator ", q.coordinator);
}

std::string CoordinatorCommand(const PlanResult& r) {
  std::string s = absl::StrCat("r1-coordinator --workers ", r.world, " --listen 0.0.0.0:", Port(r.request.coordinator));
  if (r.memory && r.memory->kv_blocks > 0) {
    absl::StrAppend(&s, " --kv-blocks ", r.memory->kv_blocks, " --block-size ", r.request.block_size);
  }
  return s;
}

// Host memory per node: resident is small; the shards are page cache.
constexpr uint64_t kResidentPerWorker = 2ull << 30;

// Checkpoint bytes the workers of the fullest node touch (page cache is shared between them): the
// union of G consecutive ranks' slices is one rank's share of a layout over `nodes`.
uint64_t NodePageCacheBytes(const PlanResult& r) {
  if (!r.memory) return 0;
  return PerGpuWeights(r.request.config, r.request.tensors, r.request.nodes).worst.total();
}

}  // namespace

std::string RenderText(const PlanResult& r) {
  const PlanRequest& q = r.request;
  const ModelConfig& c = q.config;
  std::string s;
  auto line = [&](const std::string& key, const std::string& value) { absl::StrAppend(&s, absl::StrFormat("%-22s %s\n", key, value)); };
  line("model", absl::StrCat(q.model_label, ": ", c.num_hidden_layers, " layers (", c.first_k_dense_replace, " dense), ",
                             c.num_attention_heads, " heads, ", c.n_routed_experts, " routed experts, vocab ", c.vocab_size));
  line("cluster", absl::StrCat(q.nodes, " node", q.nodes == 1 ? "" : "s", " x ", q.gpus_per_node, " ", q.gpu.description.empty() ? q.gpu.name : q.gpu.description,
                               " = ", r.world, r.world == 1 ? " GPU, " : " GPUs, ", absl::StrFormat("%.2f", q.gpu.memory_gib()), " GiB (",
                               Gb(q.gpu.memory_bytes()), ") each, HBM ", absl::StrFormat("%.3g", q.gpu.hbm_tb_s), " TB/s, FP8 ",
                               q.gpu.fp8 ? "yes" : "no"));
  line("target", absl::StrCat(r.target_sequences, " x ", Commas(r.target_context), " tokens",
                              q.max_context == 0 && q.concurrency == 0 ? " (default minimum; --max-context, --concurrency)" : ""));
  line("verdict", absl::StrCat(r.fits ? "FITS" : "DOES NOT FIT", " - ", r.verdict));
  s += "\n";
  line("model weights", absl::StrCat(Commas(r.model.by_part.total()), " bytes (", Gb(r.model.by_part.total()), ", ",
                                     Gib(r.model.by_part.total()), "), ", Commas(r.model.parameters), " parameters; MTP not loaded"));
  for (const auto& [dtype, bytes] : r.model.by_dtype) line(absl::StrCat("  ", dtype), absl::StrCat(Commas(bytes), " bytes (", Gb(bytes), ")"));

  s += "\nlayout: W = every GPU = tensor parallel (attention heads, dense and shared intermediate, vocabulary\n"
       "split W ways) = expert parallel (routed experts / W); q_a, kv_a, router and norms replicated\n";
  {
    const int64_t w = r.world;
    if (r.layout_problems.empty()) {
      line(absl::StrCat("W = ", w), absl::StrCat("valid: ", c.num_attention_heads / w, c.num_attention_heads / w == 1 ? " head, " : " heads, ",
                                                 c.n_routed_experts > 0 ? absl::StrCat(c.n_routed_experts / w, " routed experts, ") : "",
                                                 c.intermediate_size / w, " dense intermediate, ",
                                                 c.moe_intermediate_size * c.n_shared_experts / w, " shared intermediate, ",
                                                 c.vocab_size / w, " vocab rows per GPU"));
    } else {
      line(absl::StrCat("W = ", w), absl::StrCat("IMPOSSIBLE: ", absl::StrJoin(r.layout_problems, "; ")));
    }
  }
  {
    std::vector<std::string> dims;
    for (const SplitDim& d : SplitDims(c)) dims.push_back(absl::StrCat(d.short_name, " ", d.value));
    line("valid W", absl::StrCat(absl::StrJoin(r.valid_worlds, ", "), ": the divisors of gcd(", absl::StrJoin(dims, ", "),
                                 ") = ", MaxWorldSize(c)));
    std::vector<int64_t> bad;
    for (int64_t w = 2; w <= 16; ++w) {
      if (!LayoutProblems(c, w).empty()) bad.push_back(w);
    }
    if (!bad.empty()) line("invalid W <= 16", absl::StrJoin(bad, ", "));
  }

  if (r.memory) {
    const MemoryPlan& m = *r.memory;
    s += "\nper GPU (the fullest rank";
    absl::StrAppend(&s, m.weights.least == m.weights.worst.total() ? ", every rank the same" :
                                                                      absl::StrCat(" ", m.weights.worst_rank, "; the least ", Commas(m.weights.least)),
                    ")\n");
    for (int p = 0; p < kNumParts; ++p) {
      const uint64_t b = m.weights.worst.bytes[p];
      if (b == 0 && static_cast<Part>(p) == Part::kOther) continue;
      absl::StrAppend(&s, absl::StrFormat("  %-20s %20s bytes  %10s\n", PartName(static_cast<Part>(p)), Commas(b), Gb(b)));
    }
    absl::StrAppend(&s, absl::StrFormat("  %-20s %20s bytes  %10s  (%s)\n", "weights", Commas(m.weights.worst.total()),
                                        Gb(m.weights.worst.total()), Gib(m.weights.worst.total())));
    absl::StrAppend(&s, absl::StrFormat("  %-20s %20s bytes  %10s  (4 GiB + %s tokens x %s bytes workspace)\n", "reserve",
                                        Commas(m.reserve_bytes), Gb(m.reserve_bytes), Commas(q.prefill_chunk),
                                        Commas(WorkspacePerToken(c, r.world))));
    absl::StrAppend(&s, absl::StrFormat("  %-20s %20s bytes  %10s  (%s)\n", "GPU memory", Commas(m.gpu_bytes), Gb(m.gpu_bytes), Gib(m.gpu_bytes)));
    absl::StrAppend(&s, absl::StrFormat("  %-20s %20s bytes  %10s\n", "free for KV cache", Commas(m.free_bytes), GbSigned(m.free_bytes)));
    if (q.gpu.hbm_tb_s > 0) {
      absl::StrAppend(&s, absl::StrFormat("  HBM floor: reading this GPU's weights once takes %.1f ms at %.3g TB/s\n",
                                          m.weights.worst.total() / (q.gpu.hbm_tb_s * 1e12) * 1e3, q.gpu.hbm_tb_s));
    }
    s += "\nKV cache (replicated on every GPU)\n";
    line("  bytes per token", absl::StrCat(Commas(r.kv_bytes_per_token), " = ", c.num_hidden_layers, " layers x ",
                                           c.kv_latent_dim(), " (kv_lora_rank ", c.kv_lora_rank, " + rope ", c.qk_rope_head_dim,
                                           ") x ", q.kv_dtype == "fp8" ? 1 : 2, " bytes (", q.kv_dtype, ")"));
    line("  capacity per GPU", absl::StrCat(Commas(m.kv_tokens), " tokens (", Commas(m.kv_blocks), " blocks of ", q.block_size, ")"));
    line("  longest sequence", absl::StrCat(Commas(r.max_context_one_sequence), " tokens (max_position_embeddings ",
                                            Commas(c.max_position_embeddings), ")"));
    if (m.kv_blocks > 0) {
      for (const ContextRow& row : r.contexts) {
        line(absl::StrCat("  at ", Commas(row.context)), absl::StrCat(Commas(row.sequences), " sequences at once"));
      }
    }
  }

  if (r.fits || (r.memory && r.memory->free_bytes > 0)) {
    s += "\nlaunch\n";
    absl::StrAppend(&s, "  ", CoordinatorCommand(r), "\n  ", MpirunCommand(r), "\n");
    // deploy/k8s: one pod per node holding all its GPUs (NCCL keeps NVLink and shared memory
    // between the pod's ranks), one r1-worker per GPU started by r1-worker-pod.
    const int64_t pods = (r.world + q.gpus_per_node - 1) / q.gpus_per_node;
    const int64_t per_pod = std::min<int64_t>(r.world, q.gpus_per_node);
    absl::StrAppend(&s, "  Kubernetes (deploy/k8s): ", pods, " pod(s) of ", per_pod,
                    " GPUs (LeaderWorkerSet size ", pods, ", nvidia.com/gpu: ", per_pod, ", R1_GPUS_PER_POD ",
                    per_pod, "), ", r.world, " workers; r1-worker-pod --ranks ", per_pod, " -- --model ",
                    ModelDir(q), " --coordinator ", q.coordinator, " --rank-from-env\n");
  }

  s += "\nhost memory (per node)\n";
  {
    const uint64_t ckpt = r.model.by_part.total() + r.model.mtp_bytes;
    const uint64_t node_share = NodePageCacheBytes(r);
    const uint64_t resident = kResidentPerWorker * static_cast<uint64_t>(q.gpus_per_node);
    absl::StrAppend(&s, "  the shards are mmapped: their pages are page cache, not resident memory; the kernel drops them\n"
                        "  under pressure, so less host memory only slows (re)loading\n");
    absl::StrAppend(&s, "  checkpoint on each node's disk (or a shared filesystem): ", Gb(ckpt), " (every node reads slices of every shard)\n");
    if (r.memory) absl::StrAppend(&s, "  page cache touched by one node's ", q.gpus_per_node, " worker", q.gpus_per_node == 1 ? "" : "s", ": about ", Gb(node_share), "\n");
    absl::StrAppend(&s, "  resident: about ", Gib(resident), " (2 GiB per worker: runtime, communication and staging buffers; an estimate)\n");
    if (q.host_memory_gib) {
      const uint64_t host = static_cast<uint64_t>(*q.host_memory_gib * 1073741824.0);
      absl::StrAppend(&s, "  --host-memory-gib ", absl::StrFormat("%g", *q.host_memory_gib), ": resident ", host >= resident ? "fits" : "DOES NOT FIT",
                      r.memory ? absl::StrCat("; the node's share ", host >= node_share ? "stays in page cache" : "does not all stay in page cache (slower loads)") : "",
                      "\n");
    }
  }

  if (!r.suggestions.empty()) {
    s += "\nwhat would fit\n";
    for (const std::string& x : r.suggestions) absl::StrAppend(&s, "  - ", x, "\n");
  }
  s += "\nnotes\n";
  for (const std::string& x : r.notes) absl::StrAppend(&s, "  - ", x, "\n");
  return s;
}

nlohmann::json RenderJson(const PlanResult& r) {
  using nlohmann::json;
  const PlanRequest& q = r.request;
  const ModelConfig& c = q.config;
  json j;
  j["model"] = {{"source", q.model_label},
                {"exact_from_checkpoint", q.exact_from_checkpoint},
                {"num_hidden_layers", c.num_hidden_layers},
                {"num_attention_heads", c.num_attention_heads},
                {"n_routed_experts", c.n_routed_experts},
                {"vocab_size", c.vocab_size},
                {"max_position_embeddings", c.max_position_embeddings},
                {"parameters", r.model.parameters},
                {"weight_bytes", r.model.by_part.total()},
                {"mtp_bytes", r.model.mtp_bytes},
                {"mtp_parameters", r.model.mtp_parameters},
                {"mtp_loaded", false}};
  json parts = json::object();
  for (int p = 0; p < kNumParts; ++p) parts[PartKey(static_cast<Part>(p))] = r.model.by_part.bytes[p];
  j["model"]["bytes_by_part"] = parts;
  j["model"]["bytes_by_dtype"] = r.model.by_dtype;
  j["cluster"] = {{"gpu", q.gpu.name},
                  {"gpu_memory_bytes", q.gpu.memory_bytes()},
                  {"gpu_memory_gib", q.gpu.memory_gib()},
                  {"hbm_tb_s", q.gpu.hbm_tb_s},
                  {"fp8", q.gpu.fp8},
                  {"gpus_per_node", q.gpus_per_node},
                  {"nodes", q.nodes},
                  {"gpus", r.world}};
  if (q.host_memory_gib) j["cluster"]["host_memory_gib"] = *q.host_memory_gib;
  j["target"] = {{"context", r.target_context}, {"sequences", r.target_sequences}, {"tokens", r.target_tokens}};
  j["fits"] = r.fits;
  j["verdict"] = r.verdict;
  j["layout"] = {{"world_size", r.world},
                 {"tensor_parallel", r.world},
                 {"expert_parallel", r.world},
                 {"valid", r.layout_problems.empty()},
                 {"problems", r.layout_problems},
                 {"valid_world_sizes", r.valid_worlds}};
  if (r.layout_problems.empty()) {
    j["layout"]["heads_per_gpu"] = c.num_attention_heads / r.world;
    j["layout"]["routed_experts_per_gpu"] = c.n_routed_experts / r.world;
    j["layout"]["vocab_rows_per_gpu"] = c.vocab_size / r.world;
  }
  j["kv"] = {{"dtype", q.kv_dtype}, {"bytes_per_token", r.kv_bytes_per_token}, {"replicated_on_every_gpu", true},
             {"block_size", q.block_size}};
  if (r.memory) {
    const MemoryPlan& m = *r.memory;
    json w = json::object();
    for (int p = 0; p < kNumParts; ++p) w[PartKey(static_cast<Part>(p))] = m.weights.worst.bytes[p];
    w["total"] = m.weights.worst.total();
    w["worst_rank"] = m.weights.worst_rank;
    w["least_rank_total"] = m.weights.least;
    j["per_gpu"] = {{"weights", w},
                    {"reserve_bytes", m.reserve_bytes},
                    {"reserve_rule", absl::StrCat("4 GiB + ", q.prefill_chunk, " tokens x ", WorkspacePerToken(c, r.world), " bytes")},
                    {"gpu_bytes", m.gpu_bytes},
                    {"free_bytes", m.free_bytes},
                    {"needed_bytes_for_target", r.min_gpu_bytes_at_world}};
    j["kv"]["blocks_per_gpu"] = m.kv_blocks;
    j["kv"]["tokens_per_gpu"] = m.kv_tokens;
    j["kv"]["max_context_one_sequence"] = r.max_context_one_sequence;
    json rows = json::array();
    for (const ContextRow& row : r.contexts) rows.push_back({{"context", row.context}, {"sequences", row.sequences}});
    j["kv"]["concurrency"] = rows;
    if (m.free_bytes > 0) {
      j["launch"] = {{"coordinator", CoordinatorCommand(r)},
                     {"mpirun", MpirunCommand(r)},
                     {"kubernetes",
                      {{"workers_per_group", r.world},
                       {"pods", (r.world + q.gpus_per_node - 1) / q.gpus_per_node},
                       {"gpus_per_pod", std::min<int64_t>(r.world, q.gpus_per_node)}}}};
    }
  }
  j["host"] = {{"checkpoint_bytes", r.model.by_part.total() + r.model.mtp_bytes},
               {"resident_bytes_per_node", kResidentPerWorker * static_cast<uint64_t>(q.gpus_per_node)},
               {"page_cache_bytes_per_node", NodePageCacheBytes(r)},
               {"mmapped_shards_are_page_cache", true}};
  if (r.smallest_world_same_gpu) j["smallest_world_same_gpu"] = *r.smallest_world_same_gpu;
  j["larger_gpus"] = r.larger_gpus;
  j["suggestions"] = r.suggestions;
  j["notes"] = r.notes;
  return j;
}

}  // namespace r1::planner

// A synthetic checkpoint of DeepSeek-R1's first layers at real size, shared by the GPU benchmarks
// (bench_gpu_load, bench_gpu_layer): real tensor names and shapes, FP8 e4m3 weights with random
// codes and 128x128 float32 weight_scale_inv blocks, BF16 embedding / lm_head / norms / router,
// shards of at most 4 GB plus model.safetensors.index.json and config.json.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"

namespace r1::bench {

[[noreturn]] inline void Die(const std::string& what) {
  std::fprintf(stderr, "error: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

struct Tensor {
  std::string name, dtype;  // "F8_E4M3", "BF16", "F32"
  std::vector<int64_t> shape;
  size_t bytes() const {
    size_t n = dtype == "F8_E4M3" ? 1 : dtype == "BF16" ? 2 : 4;
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    return n;
  }
};

// R1's tensors for the first `layers` layers, in checkpoint order. `experts`: routed experts per MoE
// layer (R1 has 256; fewer for the expert-parallel shard, which holds 32 of them).
inline std::vector<Tensor> R1Tensors(int layers, int64_t experts = 256) {
  constexpr int64_t kH = 7168, kVocab = 129280, kQ = 1536, kKv = 512, kRope = 64, kNope = 128, kV = 128,
                    kHeads = 128, kInter = 18432, kMoe = 2048;
  const int64_t kExperts = experts;
  std::vector<Tensor> t;
  auto fp8 = [&](const std::string& name, int64_t n, int64_t k) {
    t.push_back({name + ".weight", "F8_E4M3", {n, k}});
    t.push_back({name + ".weight_scale_inv", "F32", {(n + 127) / 128, (k + 127) / 128}});
  };
  auto norm = [&](const std::string& name, int64_t n) { t.push_back({name + ".weight", "BF16", {n}}); };
  t.push_back({"model.embed_tokens.weight", "BF16", {kVocab, kH}});
  for (int i = 0; i < layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    norm(p + "input_layernorm", kH);
    norm(p + "post_attention_layernorm", kH);
    fp8(p + "self_attn.q_a_proj", kQ, kH);
    norm(p + "self_attn.q_a_layernorm", kQ);
    fp8(p + "self_attn.q_b_proj", kHeads * (kNope + kRope), kQ);
    fp8(p + "self_attn.kv_a_proj_with_mqa", kKv + kRope, kH);
    norm(p + "self_attn.kv_a_layernorm", kKv);
    fp8(p + "self_attn.kv_b_proj", kHeads * (kNope + kV), kKv);
    fp8(p + "self_attn.o_proj", kH, kHeads * kV);
    if (i < 3) {
      fp8(p + "mlp.gate_proj", kInter, kH);
      fp8(p + "mlp.up_proj", kInter, kH);
      fp8(p + "mlp.down_proj", kH, kInter);
      continue;
    }
    t.push_back({p + "mlp.gate.weight", "BF16", {kExperts, kH}});
    t.push_back({p + "mlp.gate.e_score_correction_bias", "F32", {kExperts}});
    for (int e = 0; e < kExperts; ++e) {
      const std::string x = p + "mlp.experts." + std::to_string(e) + ".";
      fp8(x + "gate_proj", kMoe, kH);
      fp8(x + "up_proj", kMoe, kH);
      fp8(x + "down_proj", kH, kMoe);
    }
    fp8(p + "mlp.shared_experts.gate_proj", kMoe, kH);
    fp8(p + "mlp.shared_experts.up_proj", kMoe, kH);
    fp8(p + "mlp.shared_experts.down_proj", kH, kMoe);
  }
  norm("model.norm", kH);
  t.push_back({"lm_head.weight", "BF16", {kVocab, kH}});
  return t;
}

inline std::string ConfigJson(int layers, int64_t experts = 256) {
  return "{\n  \"architectures\": [\"DeepseekV3ForCausalLM\"], \"model_type\": \"deepseek_v3\",\n"
         "  \"vocab_size\": 129280, \"hidden_size\": 7168, \"intermediate_size\": 18432,\n"
         "  \"moe_intermediate_size\": 2048, \"num_hidden_layers\": " + std::to_string(layers) + ",\n"
         "  \"num_nextn_predict_layers\": 0, \"first_k_dense_replace\": " + std::to_string(std::min(3, layers)) +
         ", \"moe_layer_freq\": 1,\n"
         "  \"num_attention_heads\": 128, \"num_key_value_heads\": 128, \"q_lora_rank\": 1536,\n"
         "  \"kv_lora_rank\": 512, \"qk_rope_head_dim\": 64, \"qk_nope_head_dim\": 128, \"v_head_dim\": 128,\n"
         "  \"n_routed_experts\": " + std::to_string(experts) + ", \"n_shared_experts\": 1, \"num_experts_per_tok\": 8, \"n_group\": 8,\n"
         "  \"topk_group\": 4, \"norm_topk_prob\": true, \"routed_scaling_factor\": 2.5,\n"
         "  \"topk_method\": \"noaux_tc\", \"scoring_func\": \"sigmoid\", \"hidden_act\": \"silu\",\n"
         "  \"max_position_embeddings\": 163840, \"rope_theta\": 10000, \"rms_norm_eps\": 1e-06,\n"
         "  \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 40, \"original_max_position_embeddings\": 4096,\n"
         "    \"beta_fast\": 32, \"beta_slow\": 1, \"mscale\": 1.0, \"mscale_all_dim\": 1.0},\n"
         "  \"bos_token_id\": 0, \"eos_token_id\": 1, \"tie_word_embeddings\": false, \"torch_dtype\": \"bfloat16\",\n"
         "  \"quantization_config\": {\"activation_scheme\": \"dynamic\", \"fmt\": \"e4m3\", \"quant_method\": \"fp8\",\n"
         "    \"weight_block_size\": [128, 128]}\n}\n";
}

// Random but well-formed values, 8 bytes at a time: FP8 codes with bit 3 clear (never the NaN
// codes 0x7f / 0xff), BF16 and F32 values of magnitude about 1e-2 / 1e-3; `norm`: BF16 in
// [1, 2), positive, as trained RMSNorm weights are of order one (with 1e-2 weights the router's
// logits would be ~1e-2 and the 1e-3 score biases would steer every token to the same experts).
inline void Fill(uint8_t* out, size_t bytes, const std::string& dtype, uint64_t seed, bool norm = false) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  const uint64_t mask = dtype == "F8_E4M3" ? 0xF7F7F7F7F7F7F7F7ull
                        : dtype == "BF16"  ? (norm ? 0x007F007F007F007Full : 0x807F807F807F807Full)
                                           : 0x007FFFFF007FFFFFull;
  const uint64_t set = dtype == "F8_E4M3" ? 0
                       : dtype == "BF16"  ? (norm ? 0x3F803F803F803F80ull : 0x3C003C003C003C00ull)
                                          : 0x3A8000003A800000ull;
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    s += 0x9E3779B97F4A7C15ull;  // splitmix64
    uint64_t z = s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z = ((z ^ (z >> 31)) & mask) | set;
    std::memcpy(out + i, &z, 8);
  }
  for (; i < bytes; ++i) out[i] = 0x38;  // only odd-sized tensors, none here
}

inline void WriteAll(int fd, const uint8_t* p, size_t n, const std::string& path) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, std::min<size_t>(n, 1u << 30));
    if (w <= 0) Die("write " + path);
    p += w;
    n -= static_cast<size_t>(w);
  }
}

struct Written {
  std::vector<std::string> files;
  size_t data_bytes = 0;
};

inline Written WriteCheckpoint(const std::string& dir, int layers, int threads, int64_t experts = 256) {
  std::filesystem::create_directories(dir);
  const std::vector<Tensor> tensors = R1Tensors(layers, experts);
  constexpr size_t kShardBytes = size_t{4} << 30;
  std::vector<std::vector<const Tensor*>> shards(1);
  size_t in_shard = 0;
  for (const Tensor& t : tensors) {
    if (in_shard > 0 && in_shard + t.bytes() > kShardBytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(&t);
    in_shard += t.bytes();
  }
  Written out;
  std::string weight_map;
  constexpr size_t kChunk = size_t{256} << 20;
  std::vector<uint8_t> buf(kChunk);
  uint64_t seed = 1;
  for (size_t s = 0; s < shards.size(); ++s) {
    char name[64];
    std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", s + 1, shards.size());
    const std::string path = dir + "/" + name;
    std::string header = "{\"__metadata__\":{\"format\":\"pt\"}";
    size_t off = 0;
    for (const Tensor* t : shards[s]) {
      std::string shape;
      for (size_t i = 0; i < t->shape.size(); ++i) absl::StrAppend(&shape, i ? "," : "", t->shape[i]);
      absl::StrAppend(&header, ",\"", t->name, "\":{\"dtype\":\"", t->dtype, "\",\"shape\":[", shape,
                      "],\"data_offsets\":[", off, ",", off + t->bytes(), "]}");
      off += t->bytes();
      absl::StrAppend(&weight_map, weight_map.empty() ? "" : ",\n    ", "\"", t->name, "\": \"", name, "\"");
    }
    header += "}";
    while (header.size() % 8 != 0) header += ' ';
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) Die("open " + path);
    const uint64_t hlen = header.size();
    WriteAll(fd, reinterpret_cast<const uint8_t*>(&hlen), 8, path);
    WriteAll(fd, reinterpret_cast<const uint8_t*>(header.data()), header.size(), path);
    for (const Tensor* t : shards[s]) {
      for (size_t done = 0; done < t->bytes(); done += kChunk) {
        const size_t n = std::min(kChunk, t->bytes() - done);
        // Fill the chunk on `threads` threads, 8-byte aligned pieces.
        std::vector<std::thread> pool;
        const size_t per = (n / threads + 7) / 8 * 8;
        for (int i = 0; i < threads; ++i) {
          const size_t a = std::min(n, i * per), b = std::min(n, a + per);
          const bool norm = t->name.find("norm.weight") != std::string::npos;
          pool.emplace_back([&, a, b, i, norm] { Fill(buf.data() + a, b - a, t->dtype, seed * 1000 + i, norm); });
        }
        for (auto& th : pool) th.join();
        ++seed;
        WriteAll(fd, buf.data(), n, path);
      }
    }
    if (::fdatasync(fd) != 0) Die("fdatasync " + path);
    ::close(fd);
    out.files.push_back(path);
    out.data_bytes += off;
  }
  std::ofstream(dir + "/model.safetensors.index.json")
      << "{\n  \"metadata\": {\"total_size\": " << out.data_bytes << "},\n  \"weight_map\": {\n    " << weight_map
      << "\n  }\n}\n";
  std::ofstream(dir + "/config.json") << ConfigJson(layers, experts);
  return out;
}

}  // namespace r1::bench

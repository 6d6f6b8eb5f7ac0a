// Checkpoint loading at DeepSeek-R1's real dimensions, against the disk's own read speed.
//   build-gpu/bench/gpu/bench_gpu_load [--dir /tmp/r1-load] [--layers 4] [--read-threads 8] [--keep]
// 1. Writes a checkpoint of the first `layers` layers of R1 (the first three dense, the rest MoE
//    with 256 experts) in the published layout: real tensor names and shapes, FP8 e4m3 weights
//    with random codes and 128x128 float32 weight_scale_inv blocks, BF16 embedding / lm_head /
//    norms / router, shards of at most 4 GB plus model.safetensors.index.json and config.json.
// 2. Evicts the files from the page cache (fdatasync + POSIX_FADV_DONTNEED, and drop_caches when
//    this process may write it) and checks with mincore() that nothing of them stays resident.
// 3. The disk figure: reads every file sequentially, once with one thread (dd-like, 16 MB reads)
//    and once with `read-threads` threads on separate 64 MB pieces, evicting before each.
// 4. Evicts again and loads the folder with GpuDeepseekV3Model::Load (the project's loader):
//    checkpoint bytes / wall time, and its ratio to the better disk figure. Then loads once more
//    with the files in the page cache, which shows what the loader does when the disk is not the
//    limit, and measures the pinned host-to-device copy rate for reference.
#include <cuda_runtime.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "worker/model/gpu_model.h"

namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

[[noreturn]] void Die(const std::string& what) {
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

// R1's tensors for the first `layers` layers, in checkpoint order.
std::vector<Tensor> R1Tensors(int layers) {
  constexpr int64_t kH = 7168, kVocab = 129280, kQ = 1536, kKv = 512, kRope = 64, kNope = 128, kV = 128,
                    kHeads = 128, kInter = 18432, kMoe = 2048, kExperts = 256;
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

std::string ConfigJson(int layers) {
  return "{\n  \"architectures\": [\"DeepseekV3ForCausalLM\"], \"model_type\": \"deepseek_v3\",\n"
         "  \"vocab_size\": 129280, \"hidden_size\": 7168, \"intermediate_size\": 18432,\n"
         "  \"moe_intermediate_size\": 2048, \"num_hidden_layers\": " + std::to_string(layers) + ",\n"
         "  \"num_nextn_predict_layers\": 0, \"first_k_dense_replace\": " + std::to_string(std::min(3, layers)) +
         ", \"moe_layer_freq\": 1,\n"
         "  \"num_attention_heads\": 128, \"num_key_value_heads\": 128, \"q_lora_rank\": 1536,\n"
         "  \"kv_lora_rank\": 512, \"qk_rope_head_dim\": 64, \"qk_nope_head_dim\": 128, \"v_head_dim\": 128,\n"
         "  \"n_routed_experts\": 256, \"n_shared_experts\": 1, \"num_experts_per_tok\": 8, \"n_group\": 8,\n"
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
// codes 0x7f / 0xff), BF16 and F32 values of magnitude about 1e-2 / 1e-3.
void Fill(uint8_t* out, size_t bytes, const std::string& dtype, uint64_t seed) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  const uint64_t mask = dtype == "F8_E4M3" ? 0xF7F7F7F7F7F7F7F7ull : dtype == "BF16" ? 0x807F807F807F807Full
                                                                                        : 0x007FFFFF007FFFFFull;
  const uint64_t set = dtype == "F8_E4M3" ? 0 : dtype == "BF16" ? 0x3C003C003C003C00ull : 0x3A8000003A800000ull;
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

void WriteAll(int fd, const uint8_t* p, size_t n, const std::string& path) {
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

Written WriteCheckpoint(const std::string& dir, int layers, int threads) {
  std::filesystem::create_directories(dir);
  const std::vector<Tensor> tensors = R1Tensors(layers);
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
          pool.emplace_back([&, a, b, i] { Fill(buf.data() + a, b - a, t->dtype, seed * 1000 + i); });
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
  std::ofstream(dir + "/config.json") << ConfigJson(layers);
  return out;
}

// Drops the files' pages from the page cache; returns the fraction still resident (mincore).
double Evict(const std::vector<std::string>& files, bool drop_caches) {
  for (const std::string& f : files) {
    const int fd = ::open(f.c_str(), O_RDONLY);
    if (fd < 0) Die("open " + f);
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
  if (drop_caches) {
    ::sync();
    std::ofstream("/proc/sys/vm/drop_caches") << "3\n";
  }
  size_t resident = 0, pages = 0;
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> vec;
  for (const std::string& f : files) {
    const int fd = ::open(f.c_str(), O_RDONLY);
    struct stat st;
    ::fstat(fd, &st);
    const size_t size = static_cast<size_t>(st.st_size);
    void* m = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    ::close(fd);
    if (m == MAP_FAILED) Die("mmap " + f);
    vec.resize((size + page - 1) / page);
    if (::mincore(m, size, vec.data()) != 0) Die("mincore " + f);
    for (unsigned char v : vec) resident += v & 1;
    pages += vec.size();
    ::munmap(m, size);
  }
  return pages ? static_cast<double>(resident) / static_cast<double>(pages) : 0.0;
}

// Reads every file completely; returns bytes read. threads == 1: sequential 16 MB reads, file
// after file (what dd does); otherwise the files' 64 MB pieces are shared out among the threads.
size_t ReadFiles(const std::vector<std::string>& files, int threads) {
  struct Piece {
    int file;
    size_t off, len;
  };
  constexpr size_t kPiece = size_t{64} << 20, kRead = size_t{16} << 20;
  std::vector<Piece> pieces;
  std::vector<int> fds;
  for (size_t i = 0; i < files.size(); ++i) {
    const int fd = ::open(files[i].c_str(), O_RDONLY);
    if (fd < 0) Die("open " + files[i]);
    struct stat st;
    ::fstat(fd, &st);
    fds.push_back(fd);
    for (size_t off = 0; off < static_cast<size_t>(st.st_size); off += kPiece) {
      pieces.push_back({static_cast<int>(i), off, std::min(kPiece, static_cast<size_t>(st.st_size) - off)});
    }
  }
  std::atomic<size_t> next{0}, total{0};
  auto worker = [&] {
    std::vector<uint8_t> buf(kRead);
    for (size_t i; (i = next++) < pieces.size();) {
      const Piece& p = pieces[i];
      for (size_t done = 0; done < p.len;) {
        const ssize_t r = ::pread(fds[p.file], buf.data(), std::min(kRead, p.len - done), p.off + done);
        if (r <= 0) Die("pread");
        done += static_cast<size_t>(r);
        total += static_cast<size_t>(r);
      }
    }
  };
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) pool.emplace_back(worker);
  for (auto& t : pool) t.join();
  for (int fd : fds) ::close(fd);
  return total;
}

double PinnedH2D() {
  const size_t bytes = size_t{1} << 30;
  void *h = nullptr, *d = nullptr;
  if (cudaMallocHost(&h, bytes) != cudaSuccess || cudaMalloc(&d, bytes) != cudaSuccess) return 0;
  std::memset(h, 1, bytes);
  cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice);
  const auto t0 = Clock::now();
  for (int i = 0; i < 4; ++i) cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice);
  const double gbs = 4.0 * bytes / 1e9 / Seconds(t0, Clock::now());
  cudaFreeHost(h);
  cudaFree(d);
  return gbs;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = "/tmp/r1-load";
  int layers = 4, read_threads = 8;
  bool keep = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--dir" && i + 1 < argc) dir = argv[++i];
    else if (a == "--layers" && i + 1 < argc) layers = std::atoi(argv[++i]);
    else if (a == "--read-threads" && i + 1 < argc) read_threads = std::atoi(argv[++i]);
    else if (a == "--keep") keep = true;
    else {
      std::fprintf(stderr, "usage: %s [--dir D] [--layers N] [--read-threads T] [--keep]\n", argv[0]);
      return 2;
    }
  }
  if (layers < 1 || read_threads < 1) return 2;
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

  auto t0 = Clock::now();
  const Written w = WriteCheckpoint(dir, layers, cores);
  std::printf("wrote %zu shard(s), %.2f GB of tensors, %d layers (%d MoE), in %.1f s\n", w.files.size(),
              w.data_bytes / 1e9, layers, std::max(0, layers - 3), Seconds(t0, Clock::now()));

  // May this process drop the whole page cache? (root on a VM: usually; in a container: no.)
  const bool drop_caches = static_cast<bool>(std::ofstream("/proc/sys/vm/drop_caches") << "1\n");
  std::printf("page cache eviction: fdatasync + POSIX_FADV_DONTNEED per file%s\n",
              drop_caches ? ", and /proc/sys/vm/drop_caches" : " (drop_caches not writable here)");

  double resident = Evict(w.files, drop_caches);
  t0 = Clock::now();
  size_t n = ReadFiles(w.files, 1);
  const double disk1 = n / 1e9 / Seconds(t0, Clock::now());
  std::printf("disk read, 1 thread, 16 MB reads: %.2f GB/s (%.1f%% resident before)\n", disk1, 100 * resident);
  resident = Evict(w.files, drop_caches);
  t0 = Clock::now();
  n = ReadFiles(w.files, read_threads);
  const double diskn = n / 1e9 / Seconds(t0, Clock::now());
  std::printf("disk read, %d threads: %.2f GB/s (%.1f%% resident before)\n", read_threads, diskn, 100 * resident);
  const double disk = std::max(disk1, diskn);

  r1::GpuModelOptions options;
  options.max_step_tokens = 16;
  resident = Evict(w.files, drop_caches);
  t0 = Clock::now();
  {
    auto model = r1::GpuDeepseekV3Model::Load(dir, options);
    if (!model.ok()) {
      std::fprintf(stderr, "error: %s\n", std::string(model.status().message()).c_str());
      return 1;
    }
    const double s = Seconds(t0, Clock::now());
    std::printf("load (cold): %.2f GB in %.2f s = %.2f GB/s, %.0f%% of the disk's %.2f GB/s (%.1f%% resident before); "
                "%.2f GB on the device\n",
                w.data_bytes / 1e9, s, w.data_bytes / 1e9 / s, 100 * w.data_bytes / 1e9 / s / disk, disk,
                100 * resident, (*model)->device_weight_bytes() / 1e9);
  }
  ReadFiles(w.files, read_threads);  // all in the page cache now
  t0 = Clock::now();
  {
    auto model = r1::GpuDeepseekV3Model::Load(dir, options);
    if (!model.ok()) return 1;
    const double s = Seconds(t0, Clock::now());
    std::printf("load (warm, files in the page cache): %.2f GB/s\n", w.data_bytes / 1e9 / s);
  }
  std::printf("pinned host-to-device copy: %.2f GB/s\n", PinnedH2D());
  if (!keep) std::filesystem::remove_all(dir);
  return 0;
}

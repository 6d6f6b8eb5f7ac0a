#include "worker/model/gpu_model.h"

#include <cuda_runtime.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status.h"
#include "kernels/cuda/absorb_fp8.h"
#include "kernels/cuda/dequant_gemm.h"
#include "kernels/cuda/elementwise.h"
#include "kernels/cuda/grouped_gemm.h"
#include "kernels/cuda/dense_gemv.h"
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

// The routed experts run the grouped tensor-core GEMM (bf16 activations) once tokens × top_k
// reaches this many rows per routed expert, the grouped GEMV below it and in float32 mode.
// Measured on an H100, R1's MoE layer with each (bench_gpu --only moelayer, bench/README.md "MoE
// layer"): GEMM / GEMV 217 / 513 µs at 1 token, 1047 / 1952 at 8, 3340 / 13201 at 64: the GEMM
// is ahead at every batch, so the threshold is 0 (one kernel for all batches also keeps decode
// equal to prefill bit for bit). A faster small-batch GEMV would raise it.
constexpr int64_t kGroupedGemmMinRowsPerExpert = 0;

std::vector<uint16_t> ToBf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = FloatToBf16(v[i]);
  return out;
}

}  // namespace

absl::StatusOr<GpuActivations> ParseGpuActivations(absl::string_view name) {
  if (name == "f32") return GpuActivations::kFloat32;
  if (name == "bf16") return GpuActivations::kBf16;
  if (name == "fp8") return GpuActivations::kFp8;
  return absl::InvalidArgumentError(absl::StrCat("GPU activations '", name, "': expected f32, bf16 or fp8"));
}

const char* GpuActivationsName(GpuActivations a) {
  switch (a) {
    case GpuActivations::kFloat32: return "f32";
    case GpuActivations::kBf16: return "bf16";
    case GpuActivations::kFp8: return "fp8";
  }
  return "?";
}

// Copies host bytes to device memory on several threads. Each piece (at most piece_bytes) is
// copied by one worker from its source into one of the worker's two pinned buffers and sent on
// with cudaMemcpyAsync on the worker's stream; the buffer is reused once that copy completes, so
// every worker overlaps its next read with its last transfer. Sources in the mmapped checkpoint
// are read ahead with MADV_WILLNEED (one large read instead of page-sized faults), and several
// workers keep several reads in flight: the disk, not one thread's page faults, sets the pace.
// Borrowed sources must stay valid until Finish; owned ones (Add with a vector) are kept alive by
// the uploader, and Add waits while more than kMaxOwnedBytes of them are queued.
class GpuDeepseekV3Model::Uploader {
 public:
  static absl::StatusOr<std::unique_ptr<Uploader>> Create(int threads, size_t piece_bytes) {
    if (threads < 1 || threads > 256 || piece_bytes < 4096) {
      return absl::InvalidArgumentError(absl::StrCat("loader: load_threads ", threads, " must be in [1, 256] and ",
                                                     "load_piece_bytes ", piece_bytes, " at least 4096"));
    }
    auto u = std::unique_ptr<Uploader>(new Uploader());
    u->piece_ = piece_bytes;
    R1_RETURN_IF_ERROR(CudaCheck(cudaGetDevice(&u->device_), "loader: current device"));
    u->workers_.resize(threads);
    for (Worker& w : u->workers_) {
      R1_RETURN_IF_ERROR(CudaCheck(cudaStreamCreateWithFlags(&w.stream, cudaStreamNonBlocking), "loader stream"));
      for (int b = 0; b < 2; ++b) {
        R1_RETURN_IF_ERROR(CudaCheck(cudaMallocHost(&w.pinned[b], piece_bytes), "loader: pinned staging buffer"));
        R1_RETURN_IF_ERROR(CudaCheck(cudaEventCreateWithFlags(&w.done[b], cudaEventDisableTiming), "loader event"));
      }
    }
    for (Worker& w : u->workers_) w.thread = std::thread([p = u.get(), &w] { p->Run(w); });
    return u;
  }

  ~Uploader() {
    (void)Finish();
    for (Worker& w : workers_) {
      for (int b = 0; b < 2; ++b) {
        if (w.pinned[b]) cudaFreeHost(w.pinned[b]);
        if (w.done[b]) cudaEventDestroy(w.done[b]);
      }
      if (w.stream) cudaStreamDestroy(w.stream);
    }
  }

  // Borrowed source: `src` stays valid until Finish.
  void Add(void* dst, const void* src, size_t bytes) { Enqueue(dst, static_cast<const uint8_t*>(src), bytes, nullptr, 0); }

  // Owned source: the uploader keeps `data` until its bytes are staged.
  template <typename T>
  void Add(void* dst, std::vector<T> data) {
    const size_t bytes = data.size() * sizeof(T);
    auto keep = std::make_shared<std::vector<T>>(std::move(data));
    const uint8_t* src = reinterpret_cast<const uint8_t*>(keep->data());
    {
      std::unique_lock<std::mutex> lock(mu_);
      room_.wait(lock, [&] { return owned_queued_ < kMaxOwnedBytes || !error_.ok(); });
      owned_queued_ += bytes;
    }
    Enqueue(dst, src, bytes, std::move(keep), bytes);
  }

  // Waits for every piece to reach the device; the first error, if any.
  absl::Status Finish() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (finished_) return error_;
      closed_ = true;
    }
    work_.notify_all();
    for (Worker& w : workers_) {
      if (w.thread.joinable()) w.thread.join();
    }
    std::lock_guard<std::mutex> lock(mu_);
    finished_ = true;
    return error_;
  }

 private:
  static constexpr size_t kMaxOwnedBytes = size_t{1} << 30;
  struct Piece {
    uint8_t* dst;
    const uint8_t* src;
    size_t bytes;
    std::shared_ptr<const void> keep;  // owned source, shared by its pieces
    size_t owned_bytes;                // accounted against kMaxOwnedBytes (this piece's share)
  };
  struct Worker {
    cudaStream_t stream = nullptr;
    void* pinned[2] = {nullptr, nullptr};
    cudaEvent_t done[2] = {nullptr, nullptr};
    bool busy[2] = {false, false};
    int next = 0;
    std::thread thread;
  };

  Uploader() = default;

  void Enqueue(void* dst, const uint8_t* src, size_t bytes, std::shared_ptr<const void> keep, size_t owned) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (size_t off = 0; off < bytes; off += piece_) {
        const size_t n = std::min(piece_, bytes - off);
        queue_.push_back({static_cast<uint8_t*>(dst) + off, src + off, n, keep, owned ? n : 0});
      }
    }
    work_.notify_all();
  }

  void Fail(const absl::Status& s) {
    std::lock_guard<std::mutex> lock(mu_);
    if (error_.ok()) error_ = s;
    room_.notify_all();
  }

  void Run(Worker& w) {
    if (auto s = CudaCheck(cudaSetDevice(device_), "loader: set device"); !s.ok()) Fail(s);
    const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
    for (;;) {
      Piece p;
      {
        std::unique_lock<std::mutex> lock(mu_);
        work_.wait(lock, [&] { return closed_ || !queue_.empty(); });
        if (queue_.empty()) break;
        p = std::move(queue_.front());
        queue_.pop_front();
      }
      bool failed;
      {
        std::lock_guard<std::mutex> lock(mu_);
        failed = !error_.ok();
      }
      if (!failed) {
        const int b = w.next;
        w.next ^= 1;
        absl::Status s;
        if (w.busy[b]) s = CudaCheck(cudaEventSynchronize(w.done[b]), "loader: host-to-device copy");
        if (s.ok()) {
          if (!p.keep) {  // the mmapped checkpoint: ask for the whole piece in one read
            const uintptr_t a = reinterpret_cast<uintptr_t>(p.src) & ~(page - 1);
            ::madvise(reinterpret_cast<void*>(a), reinterpret_cast<uintptr_t>(p.src) + p.bytes - a, MADV_WILLNEED);
          }
          std::memcpy(w.pinned[b], p.src, p.bytes);
          s = CudaCheck(cudaMemcpyAsync(p.dst, w.pinned[b], p.bytes, cudaMemcpyHostToDevice, w.stream),
                        "loader: host-to-device copy");
        }
        if (s.ok()) s = CudaCheck(cudaEventRecord(w.done[b], w.stream), "loader: event");
        w.busy[b] = s.ok();
        if (!s.ok()) Fail(s);
      }
      p.keep.reset();
      if (p.owned_bytes) {
        std::lock_guard<std::mutex> lock(mu_);
        owned_queued_ -= p.owned_bytes;
        room_.notify_all();
      }
    }
    if (auto s = CudaCheck(cudaStreamSynchronize(w.stream), "loader: host-to-device copy"); !s.ok()) Fail(s);
  }

  int device_ = 0;
  size_t piece_ = 0;
  std::vector<Worker> workers_;
  std::mutex mu_;
  std::condition_variable work_, room_;
  std::deque<Piece> queue_;
  size_t owned_queued_ = 0;
  bool closed_ = false, finished_ = false;
  absl::Status error_;
};

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
  if (options.kv_layers < 0 || options.kv_layers > m->config_.num_hidden_layers) {
    return absl::InvalidArgumentError(absl::StrCat("kv_layers ", options.kv_layers, " outside [0, ",
                                                   m->config_.num_hidden_layers, "]"));
  }
  R1_ASSIGN_OR_RETURN(auto ckpt, Checkpoint::Open(model_dir));
  R1_RETURN_IF_ERROR(CudaCheck(cudaStreamCreateWithFlags(&m->stream_, cudaStreamNonBlocking), "stream"));
  R1_ASSIGN_OR_RETURN(m->gemm_, cuda::GemmRunner::Create());
  R1_RETURN_IF_ERROR(m->LoadWeights(*ckpt));
  R1_RETURN_IF_ERROR(m->AllocateWorkspace());
  R1_RETURN_IF_ERROR(m->SetUpLanes());
  R1_LOG(INFO) << "GPU activations: " << GpuActivationsName(options.activations);
  return m;
}

GpuDeepseekV3Model::~GpuDeepseekV3Model() {
  for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
  for (cudaEvent_t e : events_) cudaEventDestroy(e);
  for (cudaStream_t s : side_streams_) {
    if (s) cudaStreamDestroy(s);
  }
  if (stream_) cudaStreamDestroy(stream_);
}

absl::Status GpuDeepseekV3Model::SetUpLanes() {
  // Lanes run in parallel unless they would share the kBf16 path's weight scratch (kBf16, or kFp8
  // with some layers on the bf16 path): each lane has its own runner and quantiser buffers, but
  // one scratch.
  const bool parallel = options_.parallel_lanes &&
                        (options_.activations == GpuActivations::kFloat32 ||
                         (options_.activations == GpuActivations::kFp8 && options_.fp8_gemms == kAllFp8Gemms));
  lanes_[kMainLane] = Lane{stream_, gemm_.get(), &ws_.quant_q, &ws_.quant_scales};
  for (int i = 1; i < kLaneCount; ++i) {
    if (!parallel) {
      lanes_[i] = lanes_[kMainLane];
      continue;
    }
    R1_RETURN_IF_ERROR(
        CudaCheck(cudaStreamCreateWithFlags(&side_streams_[i - 1], cudaStreamNonBlocking), "lane stream"));
    R1_ASSIGN_OR_RETURN(side_gemms_[i - 1], cuda::GemmRunner::Create());
    lanes_[i] = Lane{side_streams_[i - 1], side_gemms_[i - 1].get(), nullptr, nullptr};
  }
  if (parallel) lanes_[kSideLane].quant_q = &ws_.quant_q2, lanes_[kSideLane].quant_scales = &ws_.quant_scales2;
  // A wait binds to the event's latest record when it is issued, so a few events reused in turn
  // serve any number of forks.
  events_.resize(parallel ? 4 : 0);
  for (cudaEvent_t& e : events_) {
    R1_RETURN_IF_ERROR(CudaCheck(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "lane event"));
  }
  return absl::OkStatus();
}

absl::Status GpuDeepseekV3Model::Fork(const Lane& from, const Lane& to) {
  if (from.stream == to.stream) return absl::OkStatus();
  const cudaEvent_t e = events_[next_event_++ % events_.size()];
  R1_RETURN_IF_ERROR(CudaCheck(cudaEventRecord(e, from.stream), "lane fork: record"));
  return CudaCheck(cudaStreamWaitEvent(to.stream, e, 0), "lane fork: wait");
}

GpuDeepseekV3Model::Lane GpuDeepseekV3Model::Borrow(const Lane& stream, const Lane& inputs) {
  Lane l = stream;
  l.quant_q = inputs.quant_q;
  l.quant_scales = inputs.quant_scales;
  return l;
}

absl::Status GpuDeepseekV3Model::LoadWeights(const Checkpoint& ckpt) {
  const ModelConfig& c = config_;
  const int64_t h = c.hidden_size, nh = c.num_attention_heads, qk = c.qk_head_dim();
  const int64_t nope = c.qk_nope_head_dim, vd = c.v_head_dim, kvr = c.kv_lora_rank;
  R1_ASSIGN_OR_RETURN(auto up, Uploader::Create(options_.load_threads, options_.load_piece_bytes));
  auto count = [&](const DeviceMemory& d) { weight_bytes_ += d.bytes; };
  // Device memory for `bytes` filled from `owned` (host data the uploader keeps).
  auto upload = [&](auto owned, DeviceMemory* out) -> absl::Status {
    R1_ASSIGN_OR_RETURN(*out, DeviceMemory::Allocate(owned.size() * sizeof(owned[0])));
    count(*out);
    up->Add(out->ptr, std::move(owned));
    return absl::OkStatus();
  };
  // An FP8 weight's codes (rows padded to k_stored with zero columns when k is not a multiple of
  // 128) and its block scales (rows padded to `stride`), written at w_dst / s_dst.
  struct Fp8Shape { int64_t k_stored, stride; };
  auto fp8_shape = [&](int64_t k) { return Fp8Shape{cuda::Fp8PaddedK(k), cuda::Fp8ScaleStride(cuda::Fp8PaddedK(k))}; };
  auto put_fp8 = [&](const std::string& name, const TensorView& t, int64_t n, int64_t k, void* w_dst,
                     void* s_dst) -> absl::Status {
    if (!c.fp8 || c.fp8->block_rows != 128 || c.fp8->block_cols != 128) {
      return absl::FailedPreconditionError(absl::StrCat(t.file, ": tensor ", name, ": FP8 needs 128x128 block scales"));
    }
    const std::string sname = name.substr(0, name.size() - 7) + ".weight_scale_inv";
    auto s = ckpt.Get(sname, {(n + 127) / 128, (k + 127) / 128});
    if (!s.ok()) return Annotate(s.status(), absl::StrCat(t.file, ": scales of FP8 tensor ", name));
    if (s->dtype != DType::kF32) return absl::FailedPreconditionError(absl::StrCat(s->file, ": tensor ", sname, ": expected F32"));
    const Fp8Shape fs = fp8_shape(k);
    if (fs.k_stored == k) {
      up->Add(w_dst, t.data, t.nbytes);  // as stored: straight from the mapped file
    } else {
      std::vector<uint8_t> padded(static_cast<size_t>(n * fs.k_stored), 0);
      for (int64_t r = 0; r < n; ++r) std::memcpy(padded.data() + r * fs.k_stored, t.data + r * k, k);
      up->Add(w_dst, std::move(padded));
    }
    const int64_t nb = (n + 127) / 128, kb = (k + 127) / 128;
    std::vector<float> scales(static_cast<size_t>(nb * fs.stride), 1.0f);
    for (int64_t r = 0; r < nb; ++r) std::memcpy(scales.data() + r * fs.stride, s->data + r * kb * 4, kb * 4);
    up->Add(s_dst, std::move(scales));
    max_fp8_weight_ = std::max(max_fp8_weight_, n * k);
    return absl::OkStatus();
  };
  // A bf16 [n, k] tensor on the device: straight from the file when stored as BF16.
  auto put_bf16 = [&](const std::string& name, int64_t n, int64_t k, void* dst) -> absl::Status {
    R1_ASSIGN_OR_RETURN(TensorView t, ckpt.Get(name, {n, k}));
    if (t.dtype == DType::kBF16) {
      up->Add(dst, t.data, t.nbytes);
      return absl::OkStatus();
    }
    R1_ASSIGN_OR_RETURN(Matrix mat, LoadMatrix(ckpt, c, name, n, k));
    up->Add(dst, ToBf16(mat.data));
    return absl::OkStatus();
  };
  // A linear weight exactly as stored when it is FP8 (codes and block scales), bf16 otherwise.
  auto linear = [&](const std::string& name, int64_t n, int64_t k, GpuLinear* out, int gemm) -> absl::Status {
    R1_ASSIGN_OR_RETURN(TensorView t, ckpt.Get(name, {n, k}));
    out->gemm = gemm;
    out->n = n;
    out->k = k;
    out->fp8 = t.dtype == DType::kF8E4M3;
    if (out->fp8) {
      const Fp8Shape fs = fp8_shape(k);
      out->k_stored = fs.k_stored;
      out->scale_stride = fs.stride;
      R1_ASSIGN_OR_RETURN(out->w, DeviceMemory::Allocate(static_cast<size_t>(n * fs.k_stored)));
      R1_ASSIGN_OR_RETURN(out->scales, DeviceMemory::Allocate(static_cast<size_t>((n + 127) / 128 * fs.stride * 4)));
      count(out->w);
      count(out->scales);
      return put_fp8(name, t, n, k, out->w.ptr, out->scales.ptr);
    }
    out->k_stored = k;
    R1_ASSIGN_OR_RETURN(out->w, DeviceMemory::Allocate(static_cast<size_t>(n * k * 2)));
    count(out->w);
    return put_bf16(name, n, k, out->w.ptr);
  };
  auto vec = [&](const std::string& name, int64_t n, DeviceMemory* out) -> absl::Status {
    R1_ASSIGN_OR_RETURN(std::vector<float> v, LoadVector(ckpt, name, n));
    return upload(std::move(v), out);
  };
  auto mlp = [&](const std::string& p, int64_t inter, Mlp* w, bool shared) -> absl::Status {
    const int gate_up = shared ? kGemmSharedGateUp : kGemmMlpGateUp, down = shared ? kGemmSharedDown : kGemmMlpDown;
    R1_RETURN_IF_ERROR(linear(p + "gate_proj.weight", inter, h, &w->gate, gate_up));
    R1_RETURN_IF_ERROR(linear(p + "up_proj.weight", inter, h, &w->up, gate_up));
    return linear(p + "down_proj.weight", h, inter, &w->down, down);
  };
  // Routed experts into one bank per projection, expert after expert, each written in place.
  auto bank = [&](const std::string& p, const char* proj, int64_t n, int64_t k, ExpertBank* b) -> absl::Status {
    const int64_t ne = c.n_routed_experts;
    auto name = [&](int64_t e) { return absl::StrCat(p, "mlp.experts.", e, ".", proj, ".weight"); };
    R1_ASSIGN_OR_RETURN(TensorView first, ckpt.Get(name(0), {n, k}));
    b->n = n;
    b->k = k;
    b->fp8 = first.dtype == DType::kF8E4M3;
    const Fp8Shape fs = fp8_shape(k);
    b->w_stride = b->fp8 ? fs.k_stored : k;
    b->scale_stride = b->fp8 ? fs.stride : 0;
    const size_t wbytes = static_cast<size_t>(n * b->w_stride * (b->fp8 ? 1 : 2));
    const size_t sbytes = b->fp8 ? static_cast<size_t>((n + 127) / 128 * fs.stride * 4) : 0;
    R1_ASSIGN_OR_RETURN(b->w, DeviceMemory::Allocate(wbytes * ne));
    count(b->w);
    if (b->fp8) {
      R1_ASSIGN_OR_RETURN(b->scales, DeviceMemory::Allocate(sbytes * ne));
      count(b->scales);
    }
    for (int64_t e = 0; e < ne; ++e) {
      R1_ASSIGN_OR_RETURN(TensorView t, ckpt.Get(name(e), {n, k}));
      if ((t.dtype == DType::kF8E4M3) != b->fp8) {
        return absl::FailedPreconditionError(absl::StrCat(t.file, ": tensor ", name(e), ": dtype differs from expert 0"));
      }
      if (b->fp8) {
        R1_RETURN_IF_ERROR(put_fp8(name(e), t, n, k, b->w.as<uint8_t>() + e * wbytes, b->scales.as<uint8_t>() + e * sbytes));
      } else {
        R1_RETURN_IF_ERROR(put_bf16(name(e), n, k, b->w.as<uint8_t>() + e * wbytes));
      }
    }
    return absl::OkStatus();
  };

  R1_ASSIGN_OR_RETURN(embed_, DeviceMemory::Allocate(static_cast<size_t>(c.vocab_size * h * 2)));
  count(embed_);
  R1_RETURN_IF_ERROR(put_bf16("model.embed_tokens.weight", c.vocab_size, h, embed_.ptr));
  R1_RETURN_IF_ERROR(upload(RopeInverseFrequencies(c), &inv_freq_));
  const int64_t loaded = options_.weight_layers > 0 ? std::min(options_.weight_layers, c.num_hidden_layers)
                                                    : c.num_hidden_layers;
  layers_.resize(loaded);
  for (int64_t i = 0; i < loaded; ++i) {
    Layer& L = layers_[i];
    const std::string p = absl::StrCat("model.layers.", i, ".");
    auto st = [&]() -> absl::Status {
      R1_RETURN_IF_ERROR(vec(p + "input_layernorm.weight", h, &L.input_norm));
      R1_RETURN_IF_ERROR(vec(p + "post_attention_layernorm.weight", h, &L.post_norm));
      const std::string a = p + "self_attn.";
      if (c.q_lora_rank) {
        R1_RETURN_IF_ERROR(linear(a + "q_a_proj.weight", *c.q_lora_rank, h, &L.q_a, kGemmQA));
        R1_RETURN_IF_ERROR(vec(a + "q_a_layernorm.weight", *c.q_lora_rank, &L.q_a_norm));
        R1_RETURN_IF_ERROR(linear(a + "q_b_proj.weight", nh * qk, *c.q_lora_rank, &L.q_b, kGemmQB));
      } else {
        R1_RETURN_IF_ERROR(linear(a + "q_proj.weight", nh * qk, h, &L.q, kGemmQB));
      }
      R1_RETURN_IF_ERROR(linear(a + "kv_a_proj_with_mqa.weight", c.kv_latent_dim(), h, &L.kv_a, kGemmKvA));
      R1_RETURN_IF_ERROR(vec(a + "kv_a_layernorm.weight", kvr, &L.kv_a_norm));
      R1_RETURN_IF_ERROR(linear(a + "o_proj.weight", h, nh * vd, &L.o, kGemmO));
      // kv_b_proj split into its K half [NH, nope, kvr] and V half [NH, v, kvr] for absorption.
      R1_ASSIGN_OR_RETURN(Matrix kvb, LoadMatrix(ckpt, c, a + "kv_b_proj.weight", nh * (nope + vd), kvr));
      std::vector<float> uk(nh * nope * kvr), uv(nh * vd * kvr);
      for (int64_t hh = 0; hh < nh; ++hh) {
        std::memcpy(uk.data() + hh * nope * kvr, kvb.row(hh * (nope + vd)), nope * kvr * sizeof(float));
        std::memcpy(uv.data() + hh * vd * kvr, kvb.row(hh * (nope + vd) + nope), vd * kvr * sizeof(float));
      }
      R1_RETURN_IF_ERROR(upload(std::move(uk), &L.w_uk));
      R1_RETURN_IF_ERROR(upload(std::move(uv), &L.w_uv));
      if (options_.activations != GpuActivations::kFloat32 && options_.fp8_absorb_max_rows > 0) {
        R1_ASSIGN_OR_RETURN(TensorView kvb_t, ckpt.Get(a + "kv_b_proj.weight", {nh * (nope + vd), kvr}));
        if (kvb_t.dtype == DType::kF8E4M3) {
          R1_RETURN_IF_ERROR(linear(a + "kv_b_proj.weight", nh * (nope + vd), kvr, &L.kv_b, -1));
        }
      }
      L.is_moe = c.is_moe_layer(i);
      if (!L.is_moe) return mlp(p + "mlp.", c.intermediate_size, &L.mlp, false);
      R1_ASSIGN_OR_RETURN(Matrix router, LoadMatrix(ckpt, c, p + "mlp.gate.weight", c.n_routed_experts, h));
      R1_RETURN_IF_ERROR(upload(std::move(router.data), &L.router));
      R1_RETURN_IF_ERROR(vec(p + "mlp.gate.e_score_correction_bias", c.n_routed_experts, &L.score_bias));
      R1_RETURN_IF_ERROR(bank(p, "gate_proj", c.moe_intermediate_size, h, &L.gate));
      R1_RETURN_IF_ERROR(bank(p, "up_proj", c.moe_intermediate_size, h, &L.up));
      R1_RETURN_IF_ERROR(bank(p, "down_proj", h, c.moe_intermediate_size, &L.down));
      L.has_shared = c.n_shared_experts > 0;
      if (L.has_shared) R1_RETURN_IF_ERROR(mlp(p + "mlp.shared_experts.", c.moe_intermediate_size * c.n_shared_experts, &L.shared, true));
      return absl::OkStatus();
    }();
    if (!st.ok()) return Annotate(st, absl::StrCat("loading layer ", i, " to the GPU"));
  }
  for (int64_t i = loaded; i < c.num_hidden_layers; ++i) {
    if (c.is_moe_layer(i) != layers_.back().is_moe) {
      return absl::InvalidArgumentError(absl::StrCat("weight_layers ", loaded, ": layer ", i,
                                                     " cannot run on layer ", loaded - 1,
                                                     "'s weights (dense and MoE differ)"));
    }
  }
  R1_RETURN_IF_ERROR(vec("model.norm.weight", h, &final_norm_));
  lm_head_.n = c.vocab_size;
  lm_head_.k = h;
  lm_head_.k_stored = h;
  R1_ASSIGN_OR_RETURN(lm_head_.w, DeviceMemory::Allocate(static_cast<size_t>(c.vocab_size * h * 2)));
  count(lm_head_.w);
  R1_RETURN_IF_ERROR(put_bf16("lm_head.weight", c.vocab_size, h, lm_head_.w.ptr));
  R1_RETURN_IF_ERROR(Annotate(up->Finish(), "loading the weights to the GPU"));
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
  const int64_t e = options_.activations == GpuActivations::kFloat32 ? 4 : 2;  // bytes per activation
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
  R1_RETURN_IF_ERROR(a(&ws_.hb, tp * hd * e));
  R1_RETURN_IF_ERROR(a(&ws_.emb, t * hd * e));
  R1_RETURN_IF_ERROR(a(&ws_.qa, tp * qa * e));
  R1_RETURN_IF_ERROR(a(&ws_.q, tp * nh * qk * e));
  R1_RETURN_IF_ERROR(a(&ws_.kv, tp * lat * e));
  R1_RETURN_IF_ERROR(a(&ws_.q_lat, t * nh * kvr * 4));
  R1_RETURN_IF_ERROR(a(&ws_.q_pe, t * nh * c.qk_rope_head_dim * 4));
  R1_RETURN_IF_ERROR(a(&ws_.o_lat, t * nh * kvr * 4));
  if (options_.activations != GpuActivations::kFloat32) {
    R1_RETURN_IF_ERROR(a(&ws_.mla, static_cast<int64_t>(cuda::MlaDecodeWorkspaceBytes(nh, kvr))));
    R1_RETURN_IF_ERROR(a(&ws_.q_f32, t * nh * qk * 4));
    R1_RETURN_IF_ERROR(a(&ws_.attn_f32, t * nh * vd * 4));
  }
  R1_RETURN_IF_ERROR(a(&ws_.attn, tp * nh * vd * e));
  R1_RETURN_IF_ERROR(a(&ws_.o, tp * hd * e));
  R1_RETURN_IF_ERROR(a(&ws_.g, tp * inter * e));
  R1_RETURN_IF_ERROR(a(&ws_.u, tp * inter * e));
  R1_RETURN_IF_ERROR(a(&ws_.d, tp * hd * e));
  R1_RETURN_IF_ERROR(a(&ws_.router_logits, t * ne * 4));
  R1_RETURN_IF_ERROR(a(&ws_.expert_ids, entries * 4));
  R1_RETURN_IF_ERROR(a(&ws_.expert_w, entries * 4));
  R1_RETURN_IF_ERROR(a(&ws_.offsets, (ne + 1) * 4));
  R1_RETURN_IF_ERROR(a(&ws_.perm_tokens, entries * 4));
  R1_RETURN_IF_ERROR(a(&ws_.perm_w, entries * 4));
  R1_RETURN_IF_ERROR(a(&ws_.slot, entries * 4));
  R1_RETURN_IF_ERROR(a(&ws_.perm_ws, cuda::MoePermuteWorkspaceInts(t, k, ne) * 4));
  R1_RETURN_IF_ERROR(a(&ws_.xe, entries_p * hd * e));
  R1_RETURN_IF_ERROR(a(&ws_.eg, entries_p * std::max<int64_t>(c.moe_intermediate_size, 1) * e));
  R1_RETURN_IF_ERROR(a(&ws_.eu, entries_p * std::max<int64_t>(c.moe_intermediate_size, 1) * e));
  R1_RETURN_IF_ERROR(a(&ws_.ey, entries_p * hd * e));
  R1_RETURN_IF_ERROR(a(&ws_.logits, tp * c.vocab_size * 4));
  if (options_.activations == GpuActivations::kFp8) {
    R1_RETURN_IF_ERROR(a(&ws_.quant_q, tp * kmax));
    R1_RETURN_IF_ERROR(a(&ws_.quant_scales, tp * (kmax / 128) * 4));
    R1_RETURN_IF_ERROR(a(&ws_.quant_q2, tp * kmax));
    R1_RETURN_IF_ERROR(a(&ws_.quant_scales2, tp * (kmax / 128) * 4));
    // The routed experts' rows quantised for the grouped FP8 × FP8 GEMM (hidden or intermediate
    // columns, padded to 16 codes; one scale per 128).
    const int64_t ek = std::max<int64_t>({hd, c.moe_intermediate_size, 1});
    R1_RETURN_IF_ERROR(a(&ws_.moe_q, entries_p * ((ek + 15) / 16 * 16)));
    R1_RETURN_IF_ERROR(a(&ws_.moe_qs, entries_p * ((ek + 127) / 128) * 4));
  }
  const bool some_bf16 = options_.activations == GpuActivations::kBf16 ||
                         (options_.activations == GpuActivations::kFp8 && options_.fp8_gemms != kAllFp8Gemms);
  if (some_bf16) R1_RETURN_IF_ERROR(a(&ws_.w_scratch, max_fp8_weight_ * 2));
  R1_RETURN_IF_ERROR(a(&ws_.sampling, t * static_cast<int64_t>(sizeof(cuda::SamplingRow))));
  R1_RETURN_IF_ERROR(a(&ws_.sampled, t * 4));
  size_t total = 0;
  for (const DeviceMemory* m : {&ws_.x, &ws_.q, &ws_.q_lat, &ws_.o_lat, &ws_.logits, &ws_.xe, &ws_.ey, &ws_.g, &ws_.u,
                                &ws_.w_scratch}) {
    total += m->bytes;
  }
  R1_LOG(INFO) << "GPU workspace for " << t << "-token steps: about " << total / 1e6 << " MB";
  return absl::OkStatus();
}

bool GpuDeepseekV3Model::Quantises(const GpuLinear& w) const {
  return w.fp8 && options_.activations == GpuActivations::kFp8 && (w.gemm < 0 || (options_.fp8_gemms >> w.gemm & 1));
}

absl::Status GpuDeepseekV3Model::Quantise(const __nv_bfloat16* x, int64_t m, const GpuLinear& w, const Lane& lane) {
  if (!Quantises(w)) return absl::OkStatus();
  if (lane.quant_q == nullptr) return absl::InternalError("linear: this lane has no quantiser buffers");
  return cuda::QuantizeFp8PerToken128({x, lane.quant_q->as<__nv_fp8_e4m3>(), lane.quant_scales->as<float>(), m, w.k,
                                       w.k_stored}, lane.stream);
}

absl::Status GpuDeepseekV3Model::Linear(const __nv_bfloat16* x, int64_t m, const GpuLinear& w, __nv_bfloat16* y,
                                        const Lane& lane, bool quantised) {
  const bool quantise = Quantises(w);
  // A row or so of a narrow layer (decode): the GEMV reads the weight once, as stored, without
  // cuBLASLt's fixed cost per launch (GpuModelOptions::gemv_max_rows, bench/README.md).
  const bool gemv = m <= options_.gemv_max_rows && w.n <= options_.gemv_max_cols;
  cuda::DenseGemvParams g;
  g.y = y;
  g.m = m;
  g.n = w.n;
  g.k = w.k;
  g.w_stride = w.k_stored;
  if (w.fp8) {
    g.w = w.w.as<__nv_fp8_e4m3>();
    g.scales = w.scales.as<float>();
    g.scale_stride = w.scale_stride;
  } else {
    g.w_bf16 = w.w.as<__nv_bfloat16>();
  }
  if (quantise) {
    // The same FP8 x FP8 product either way: codes and per-token scales from the quantiser.
    if (!quantised) R1_RETURN_IF_ERROR(Quantise(x, m, w, lane));
    auto* q = lane.quant_q->as<__nv_fp8_e4m3>();
    auto* s = lane.quant_scales->as<float>();
    g.x_q = q;
    g.x_scales = s;
    g.x_stride = w.k_stored;
    g.x_scale_rows = cuda::Fp8PaddedRows(m);
    // A few rows (GpuModelOptions::fp8_row_gemv_max_rows / max_k): the weight streamed once.
    if (m <= std::min(options_.fp8_row_gemv_max_rows, cuda::kRowGemvMaxRows) && w.k <= options_.fp8_row_gemv_max_k &&
        cuda::RowGemvFp8Supports(g))
      return cuda::RowGemvFp8(g, lane.stream);
    if (!gemv) {
      return lane.gemm->Fp8({q, s, w.w.as<__nv_fp8_e4m3>(), w.scales.as<float>(), y, m, w.n, w.k_stored}, lane.stream);
    }
    return cuda::DenseGemv(g, lane.stream);
  }
  if (gemv) {
    // bf16 x times the weight rounded to bf16 as DequantizeFp8ToBf16 rounds it below: decode
    // computes the function prefill does.
    g.x = x;
    g.x_stride = w.k;
    g.w_round_bf16 = w.fp8;
    return cuda::DenseGemv(g, lane.stream);
  }
  if (!w.fp8) return lane.gemm->Bf16({x, w.w.as<__nv_bfloat16>(), y, m, w.n, w.k}, lane.stream);
  auto* scratch = ws_.w_scratch.as<__nv_bfloat16>();
  R1_RETURN_IF_ERROR(cuda::DequantizeFp8ToBf16({w.w.as<__nv_fp8_e4m3>(), w.scales.as<float>(), scratch, w.n, w.k,
                                                w.k_stored, w.scale_stride}, lane.stream));
  return lane.gemm->Bf16({x, scratch, y, m, w.n, w.k}, lane.stream);
}

absl::Status GpuDeepseekV3Model::Linear(const float* x, int64_t m, const GpuLinear& w, float* y, const Lane& lane,
                                        bool /*quantised*/) {
  cuda::DequantLinearParams p;
  p.x = x;
  p.y = y;
  p.m = m;
  p.n = w.n;
  p.k = w.k;
  p.w_stride = w.k_stored;
  if (w.fp8) {
    p.w = w.w.as<__nv_fp8_e4m3>();
    p.scales = w.scales.as<float>();
    p.scale_stride = w.scale_stride;
  } else {
    p.w_bf16 = w.w.as<__nv_bfloat16>();
  }
  return cuda::DequantLinearF32(p, lane.stream);
}

absl::Status GpuDeepseekV3Model::Logits(const __nv_bfloat16* h, int64_t m) {
  cuda::Bf16GemmParams p;
  p.x = h;
  p.w = lm_head_.w.as<__nv_bfloat16>();
  p.y_f32 = ws_.logits.as<float>();
  p.m = m;
  p.n = lm_head_.n;
  p.k = lm_head_.k;
  return gemm_->Bf16(p, stream_);
}

absl::Status GpuDeepseekV3Model::Logits(const float* h, int64_t m) {
  return Linear(h, m, lm_head_, ws_.logits.as<float>(), lanes_[kMainLane]);
}

template <typename T>
absl::Status GpuDeepseekV3Model::RunMlp(const Mlp& w, const T* h, int64_t m, const Lane& a, const Lane& b) {
  const int64_t inter = w.gate.n;
  auto* gp = ws_.g.as<T>();
  auto* up = ws_.u.as<T>();
  auto* dp = ws_.d.as<T>();
  // h is quantised once (on a) for both products, and up_proj runs on b from a's quantiser
  // buffers; unless only one of the two quantises its input (then both stay on a).
  const bool same_input = Quantises(w.gate) == Quantises(w.up);
  const Lane up_lane = same_input ? Borrow(b, a) : a;
  R1_RETURN_IF_ERROR(Quantise(h, m, w.gate, a));
  R1_RETURN_IF_ERROR(Fork(a, up_lane));
  R1_RETURN_IF_ERROR(Linear(h, m, w.up, up, up_lane, /*quantised=*/same_input));
  R1_RETURN_IF_ERROR(Linear(h, m, w.gate, gp, a, /*quantised=*/true));
  R1_RETURN_IF_ERROR(Fork(up_lane, a));
  R1_RETURN_IF_ERROR(cuda::Swiglu(cuda::SwigluParamsT<T>{gp, up, gp, m, inter, inter, inter, inter}, a.stream));
  return Linear(gp, m, w.down, dp, a);
}

std::optional<cuda::AbsorbFp8Weight> GpuDeepseekV3Model::KvBFp8(const Layer& L, int64_t t) const {
  const ModelConfig& c = config_;
  if (!L.kv_b.fp8 || t < 1 || t > std::min(options_.fp8_absorb_max_rows, cuda::kAbsorbFp8MaxRows)) return std::nullopt;
  cuda::AbsorbFp8Weight w;
  w.w = L.kv_b.w.as<uint8_t>(), w.scales = L.kv_b.scales.as<float>();
  w.w_stride = L.kv_b.k_stored, w.scale_stride = L.kv_b.scale_stride;
  w.heads = c.num_attention_heads, w.nope = c.qk_nope_head_dim, w.v = c.v_head_dim, w.kvr = c.kv_lora_rank;
  // ApplyValueFp8 reads o_lat in float4s.
  if (!cuda::AbsorbFp8Supports(w) || w.kvr % 4 != 0) return std::nullopt;
  return w;
}

bool GpuDeepseekV3Model::UsesFp8Absorb(int64_t rows) const {
  if (layers_.empty()) return false;
  for (const Layer& L : layers_) {
    if (!KvBFp8(L, rows)) return false;
  }
  return true;
}

template <typename T>
absl::Status GpuDeepseekV3Model::RunStep(int64_t t, GpuKvCache& cache, int64_t table_stride) {
  constexpr bool kF32 = std::is_same_v<T, float>;
  const ModelConfig& c = config_;
  const int64_t hd = c.hidden_size, nh = c.num_attention_heads, qk = c.qk_head_dim();
  const int64_t nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim, vd = c.v_head_dim;
  const int64_t kvr = c.kv_lora_rank, lat = c.kv_latent_dim();
  const float eps = static_cast<float>(c.rms_norm_eps), factor = static_cast<float>(c.rope_attention_factor());
  auto* xf = ws_.x.as<float>();
  auto* hb = ws_.hb.as<T>();
  auto* pos = ws_.pos.as<int64_t>();
  auto* tables = ws_.tables.as<int32_t>();
  const Lane& main = lanes_[kMainLane];
  const Lane& side = lanes_[kSideLane];
  const Lane& third = lanes_[kThirdLane];
  // A residual delta [t, H] not yet added to x (the embedding, o_proj's or a dense MLP's output):
  // the next norm adds it (one kernel for the add and the norm).
  const T* pending = nullptr;
  // The normed residual: in T for the products, and in float32 for the router (hb itself when T
  // is float32).
  auto norm = [&](const DeviceMemory& weight, float* router_in) -> absl::Status {
    const T* delta = pending;
    pending = nullptr;
    float* out_f32 = kF32 ? reinterpret_cast<float*>(hb) : router_in;
    __nv_bfloat16* out_bf16 = nullptr;
    if constexpr (!kF32) out_bf16 = hb;
    if (delta == nullptr) return cuda::RmsNormF32(xf, weight.as<float>(), out_bf16, t, hd, eps, stream_, out_f32);
    return cuda::AddRmsNormF32(xf, delta, weight.as<float>(), out_bf16, t, hd, eps, stream_, out_f32);
  };
  R1_RETURN_IF_ERROR(CudaCheck(cudaMemsetAsync(xf, 0, t * hd * 4, stream_), "clear"));
  R1_RETURN_IF_ERROR(cuda::Embedding(cuda::EmbeddingParamsT<T>{embed_.as<__nv_bfloat16>(), ws_.ids.as<int32_t>(),
                                                               ws_.emb.as<T>(), t, hd, c.vocab_size, 0}, stream_));
  pending = ws_.emb.as<T>();

  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    // Past the loaded layers (GpuModelOptions::weight_layers) the last one's weights run again.
    const Layer& L = layers_[std::min<size_t>(static_cast<size_t>(l), layers_.size() - 1)];
    // Attention (MLA, absorbed).
    R1_RETURN_IF_ERROR(norm(L.input_norm, nullptr));
    // The new latent [t, 576] (kv_a_proj, its norm, RoPE, the cache write) on the side lane, beside
    // the query's projections; joined before the attention reads the cache.
    auto* layer_cache = cache.data.as<__nv_bfloat16>() + (l % cache.layers) * cache.layer_stride();
    auto* kvb = ws_.kv.as<T>();
    R1_RETURN_IF_ERROR(Fork(main, side));
    R1_RETURN_IF_ERROR(Linear(hb, t, L.kv_a, kvb, side));
    R1_RETURN_IF_ERROR(cuda::RmsNorm(cuda::RmsNormParamsT<T>{kvb, L.kv_a_norm.as<float>(), kvb, t, kvr, lat, lat, eps},
                                     side.stream));
    R1_RETURN_IF_ERROR(cuda::Rope(cuda::RopeParamsT<T>{kvb + kvr, t, 1, rope, lat, pos, inv_freq_.as<float>(), factor,
                                                       c.rope_interleave}, side.stream));
    R1_RETURN_IF_ERROR(cuda::ScatterLatent(cuda::ScatterLatentParamsT<T>{kvb, layer_cache, tables, pos, t, lat,
                                                                         cache.block_size, table_stride,
                                                                         cache.block_stride()}, side.stream));
    // The query [t, NH, 192] on the main lane.
    auto* qb = ws_.q.as<T>();
    if (c.q_lora_rank) {
      const int64_t qa_dim = *c.q_lora_rank;
      auto* qab = ws_.qa.as<T>();
      R1_RETURN_IF_ERROR(Linear(hb, t, L.q_a, qab, main));
      R1_RETURN_IF_ERROR(cuda::RmsNorm(cuda::RmsNormParamsT<T>{qab, L.q_a_norm.as<float>(), qab, t, qa_dim, qa_dim, qa_dim,
                                                               eps}, stream_));
      R1_RETURN_IF_ERROR(Linear(qab, t, L.q_b, qb, main));
    } else {
      R1_RETURN_IF_ERROR(Linear(hb, t, L.q, qb, main));
    }
    R1_RETURN_IF_ERROR(cuda::Rope(cuda::RopeParamsT<T>{qb + nope, t * nh, nh, rope, qk, pos, inv_freq_.as<float>(),
                                                       factor, c.rope_interleave}, stream_));
    // q_lat = q_nope · w_uk per head: in the bf16/fp8 modes one batched TF32 tensor-core product
    // over the heads (the per-row kernel re-reads w_uk, 33.5 MB at R1's size, for every row); the
    // float32 weights as loaded, q widened to float32. q_pe is copied out by the kernel either way.
    bool absorbed = false;
    // At a few rows, both absorbed products straight from kv_b_proj's FP8 codes instead.
    const std::optional<cuda::AbsorbFp8Weight> kvb_fp8 = KvBFp8(L, t);
    if (kvb_fp8) {
      R1_RETURN_IF_ERROR(cuda::AbsorbQueryFp8(cuda::AbsorbQueryFp8Params<T>{*kvb_fp8, qb, ws_.q_lat.as<float>(),
                                                                           ws_.q_pe.as<float>(), t, rope},
                                              stream_));
      absorbed = true;
    }
    if (!kF32 && !absorbed) {  // kF32 never has kvb_fp8 (not loaded)
      R1_RETURN_IF_ERROR(cuda::AbsorbQuery(cuda::AbsorbQueryParamsT<T>{qb, nullptr, nullptr, ws_.q_pe.as<float>(), t,
                                                                       nh, nope, rope, kvr, ws_.q_f32.as<float>()},
                                           stream_));
      cuda::BatchedGemmParams bp;
      bp.type = cuda::BatchedGemmParams::Type::kTf32;
      bp.x = ws_.q_f32.ptr, bp.ldx = nh * qk, bp.stride_x = qk;
      bp.w = L.w_uk.ptr, bp.ldw = kvr, bp.stride_w = nope * kvr, bp.w_kn = true;
      bp.y = ws_.q_lat.ptr, bp.ldy = nh * kvr, bp.stride_y = kvr;
      bp.m = t, bp.n = kvr, bp.k = nope, bp.batch = nh;
      absorbed = gemm_->Batched(bp, stream_).ok();
    }
    if (!absorbed) {
      R1_RETURN_IF_ERROR(cuda::AbsorbQuery(cuda::AbsorbQueryParamsT<T>{qb, L.w_uk.as<float>(), ws_.q_lat.as<float>(),
                                                                       ws_.q_pe.as<float>(), t, nh, nope, rope, kvr},
                                           stream_));
    }
    R1_RETURN_IF_ERROR(Fork(side, main));  // the latent is in the cache
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
    // The bf16 / fp8 modes take the tensor-core kernel (q and softmax weights in bf16, float32
    // accumulation); the float32 mode keeps float32 products.
    if constexpr (!kF32) {
      mp.algo = cuda::MlaDecodeParams::Algo::kTensorCore;
      mp.workspace = ws_.mla.as<float>();
      mp.workspace_bytes = ws_.mla.bytes;
    }
    R1_RETURN_IF_ERROR(cuda::MlaDecode(mp, stream_));
    auto* attn = ws_.attn.as<T>();
    bool applied = false;
    if (kvb_fp8) {
      R1_RETURN_IF_ERROR(
          cuda::ApplyValueFp8(cuda::ApplyValueFp8Params<T>{*kvb_fp8, ws_.o_lat.as<float>(), attn, t}, stream_));
      applied = true;
    }
    if (!kF32 && !applied) {
      // attn[t, h, :] = o_lat[t, h, :] · w_uv[h]^T, batched over the heads (TF32), then to bf16.
      cuda::BatchedGemmParams bp;
      bp.type = cuda::BatchedGemmParams::Type::kTf32;
      bp.x = ws_.o_lat.ptr, bp.ldx = nh * kvr, bp.stride_x = kvr;
      bp.w = L.w_uv.ptr, bp.ldw = kvr, bp.stride_w = vd * kvr, bp.w_kn = false;
      bp.y = ws_.attn_f32.ptr, bp.ldy = nh * vd, bp.stride_y = vd;
      bp.m = t, bp.n = vd, bp.k = kvr, bp.batch = nh;
      applied = gemm_->Batched(bp, stream_).ok();
      if (applied) {
        R1_RETURN_IF_ERROR(cuda::CastToBf16(ws_.attn_f32.as<float>(), reinterpret_cast<__nv_bfloat16*>(attn),
                                            t * nh * vd, stream_));
      }
    }
    if (!applied) {
      R1_RETURN_IF_ERROR(cuda::ApplyValue(cuda::ApplyValueParamsT<T>{ws_.o_lat.as<float>(), L.w_uv.as<float>(), attn,
                                                                     t, nh, vd, kvr}, stream_));
    }
    R1_RETURN_IF_ERROR(Linear(attn, t, L.o, ws_.o.as<T>(), main));
    pending = ws_.o.as<T>();

    // MLP, or MoE: router → permutation → all experts in one grouped launch → ordered combine.
    float* router_in = kF32 ? reinterpret_cast<float*>(hb) : ws_.hf.as<float>();
    R1_RETURN_IF_ERROR(norm(L.post_norm, router_in));
    if (!L.is_moe) {
      R1_RETURN_IF_ERROR(RunMlp(L.mlp, hb, t, main, third));
      pending = ws_.d.as<T>();
      continue;
    }
    // The shared expert on the side lane, beside the router and the routed experts; its output
    // (ws_.d) joins at the combine.
    if (L.has_shared) {
      R1_RETURN_IF_ERROR(Fork(main, side));
      R1_RETURN_IF_ERROR(RunMlp(L.shared, hb, t, side, side));
    }
    const int64_t ne = c.n_routed_experts, k = c.num_experts_per_tok, inter = c.moe_intermediate_size;
    R1_RETURN_IF_ERROR(cuda::LinearF32(router_in, L.router.as<float>(), ws_.router_logits.as<float>(), t, ne, hd,
                                       stream_));
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
    auto* xe = ws_.xe.as<T>();
    auto* eg = ws_.eg.as<T>();
    auto* eu = ws_.eu.as<T>();
    auto* ey = ws_.ey.as<T>();
    R1_RETURN_IF_ERROR(cuda::GatherRows(hb, ws_.perm_tokens.as<int32_t>(), xe, entries, hd, stream_));
    // bf16 activations: the grouped tensor-core GEMM from kGroupedGemmMinRowsPerExpert rows per
    // expert on; below that, and in float32 mode, the GEMV. Shapes the GEMM does not take
    // (InvalidArgument: k % 8, odd n) run the GEMV.
    const bool grouped_gemm = !kF32 && entries >= kGroupedGemmMinRowsPerExpert * ne;
    // fp8 activations: the expert inputs quantised per row in 1×128 groups (DeepSeek's scheme) and
    // multiplied on the FP8 tensor cores; `quantised` says that ws_.moe_q holds `in` so.
    const bool fp8_experts =
        grouped_gemm && options_.activations == GpuActivations::kFp8 && options_.fp8_routed_experts;
    auto quantise = [&](const T* in, int64_t cols) -> absl::StatusOr<bool> {
      if constexpr (!kF32) {
        if (fp8_experts && cols % 16 == 0) {
          cuda::QuantizeRowsParams qp;
          qp.x = in;
          qp.q = ws_.moe_q.as<__nv_fp8_e4m3>();
          qp.scales = ws_.moe_qs.as<float>();
          qp.rows = entries;
          qp.k = cols;
          qp.q_stride = cols;
          qp.scale_stride = (cols + 127) / 128;
          R1_RETURN_IF_ERROR(cuda::QuantizeRowsFp8Group128(qp, stream_));
          return true;
        }
      }
      return false;
    };
    // The fields the grouped GEMM and the grouped GEMV take alike: rows, offsets, expert bank, output.
    auto grouped_args = [&](auto& gp, const ExpertBank& b, const T* in, T* out) {
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
    };
    auto project = [&](const ExpertBank& b, const T* in, T* out, bool quantised, cudaStream_t stream) -> absl::Status {
      if constexpr (!kF32) {
        if (grouped_gemm) {
          cuda::GroupedFp8GemmParams mp;
          grouped_args(mp, b, in, out);
          mp.max_rows = entries;
          if (quantised && b.fp8) {
            cuda::GroupedFp8GemmParams qp = mp;
            qp.x = nullptr;
            qp.x_q = ws_.moe_q.as<__nv_fp8_e4m3>();
            qp.x_scales = ws_.moe_qs.as<float>();
            qp.x_stride = b.k;
            qp.x_scale_stride = (b.k + 127) / 128;
            absl::Status st = cuda::GroupedFp8Gemm(qp, stream);
            if (!absl::IsInvalidArgument(st)) return st;  // else the bf16 product below
          }
          absl::Status st = cuda::GroupedFp8Gemm(mp, stream);
          if (!absl::IsInvalidArgument(st)) return st;
        }
      }
      cuda::GroupedFp8GemvParamsT<T> gp;
      grouped_args(gp, b, in, out);
      return cuda::GroupedFp8Gemv(gp, stream);
    };
    R1_ASSIGN_OR_RETURN(const bool xe_q, quantise(xe, hd));
    // up_proj on the third lane beside gate_proj (one grouped launch each; at a few rows per
    // expert neither fills the GPU alone).
    R1_RETURN_IF_ERROR(Fork(main, third));
    R1_RETURN_IF_ERROR(project(L.up, xe, eu, xe_q, third.stream));
    R1_RETURN_IF_ERROR(project(L.gate, xe, eg, xe_q, stream_));
    R1_RETURN_IF_ERROR(Fork(third, main));
    R1_RETURN_IF_ERROR(cuda::Swiglu(cuda::SwigluParamsT<T>{eg, eu, eg, entries, inter, inter, inter, inter}, stream_));
    R1_ASSIGN_OR_RETURN(const bool eg_q, quantise(eg, inter));
    R1_RETURN_IF_ERROR(project(L.down, eg, ey, eg_q, stream_));
    cuda::MoeCombineParamsT<T> cp{ey, ws_.slot.as<int32_t>(), ws_.expert_w.as<float>(), xf, t, k, hd};
    if (L.has_shared) {
      R1_RETURN_IF_ERROR(Fork(side, main));
      cp.shared = ws_.d.as<T>();
    }
    R1_RETURN_IF_ERROR(cuda::MoeCombine(cp, stream_));
  }

  // Final norm and lm_head on every row (rows that need no logits are dropped on the host).
  R1_RETURN_IF_ERROR(norm(final_norm_, nullptr));
  return Logits(hb, t);
}

absl::StatusOr<std::vector<int32_t>> GpuDeepseekV3Model::LastExpertRows() {
  const int64_t ne = config_.n_routed_experts;
  if (ne <= 0 || ws_.offsets.ptr == nullptr) return std::vector<int32_t>{};
  std::vector<int32_t> offsets(ne + 1);
  R1_RETURN_IF_ERROR(CudaCheck(cudaStreamSynchronize(stream_), "sync"));
  R1_RETURN_IF_ERROR(CudaCheck(cudaMemcpy(offsets.data(), ws_.offsets.ptr, offsets.size() * 4, cudaMemcpyDeviceToHost),
                               "expert offsets"));
  std::vector<int32_t> rows(ne);
  for (int64_t e = 0; e < ne; ++e) rows[e] = offsets[e + 1] - offsets[e];
  return rows;
}

absl::StatusOr<int64_t> GpuDeepseekV3Model::Launch(const std::vector<SequenceStep>& batch, GpuKvCache& cache) {
  const ModelConfig& c = config_;
  const int64_t cache_layers = options_.kv_layers > 0 ? options_.kv_layers : c.num_hidden_layers;
  if (cache.layers != cache_layers || cache.latent != c.kv_latent_dim()) {
    return absl::InvalidArgumentError("gpu kv cache does not fit the model");
  }
  // Rows: every new token of every sequence, with its position, context and block table. Each row's
  // table is padded to the longest table in the batch rounded up to a power of two (not to the
  // cache's block count: at batch 256 that was 4.3 M entries built and uploaded per step); the
  // rounding keeps the number of distinct decode graphs (keyed by the stride) logarithmic.
  int64_t longest = 1;
  for (const SequenceStep& s : batch) longest = std::max<int64_t>(longest, static_cast<int64_t>(s.block_table.size()));
  int64_t stride = 1;
  while (stride < longest) stride *= 2;
  stride = std::min<int64_t>(stride, std::max<int64_t>(cache.blocks, longest));
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
    if (static_cast<int64_t>(s.block_table.size()) > cache.blocks) return err("block table longer than the cache");
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
  if (t == 0) return absl::InvalidArgumentError("empty batch");
  if (t > options_.max_step_tokens) {
    return absl::InvalidArgumentError(absl::StrCat("a step of ", t, " tokens exceeds the GPU step limit of ",
                                                   options_.max_step_tokens, " (max_step_tokens)"));
  }
  if (ws_.table_capacity < t * stride) {
    // A bigger table buffer moves: graphs captured with the old one are dropped.
    for (auto& [key, exec] : graphs_) cudaGraphExecDestroy(exec);
    graphs_.clear();
    // Grown geometrically so that a batch growing step by step drops the graphs only a few times.
    const int64_t capacity = std::max(t * stride, 2 * ws_.table_capacity);
    ws_.tables = DeviceMemory();
    R1_ASSIGN_OR_RETURN(ws_.tables, DeviceMemory::Allocate(static_cast<size_t>(capacity) * 4));
    ws_.table_capacity = capacity;
  }
  R1_RETURN_IF_ERROR(CudaCheck(cudaMemcpyAsync(ws_.ids.ptr, ids.data(), t * 4, cudaMemcpyHostToDevice, stream_), "ids"));
  R1_RETURN_IF_ERROR(CudaCheck(cudaMemcpyAsync(ws_.pos.ptr, pos.data(), t * 8, cudaMemcpyHostToDevice, stream_), "pos"));
  R1_RETURN_IF_ERROR(CudaCheck(cudaMemcpyAsync(ws_.ctx.ptr, ctx.data(), t * 4, cudaMemcpyHostToDevice, stream_), "ctx"));
  R1_RETURN_IF_ERROR(CudaCheck(cudaMemcpyAsync(ws_.tables.ptr, tables.data(), tables.size() * 4, cudaMemcpyHostToDevice,
                                               stream_), "tables"));
  const bool f32 = options_.activations == GpuActivations::kFloat32;
  auto run = [&] { return f32 ? RunStep<float>(t, cache, stride) : RunStep<__nv_bfloat16>(t, cache, stride); };
  if (decode_only && options_.cuda_graphs) {
    const GraphKey key{t, cache.data.ptr, stride};
    auto it = graphs_.find(key);
    if (it == graphs_.end()) {
      R1_RETURN_IF_ERROR(CudaCheck(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "begin capture"));
      absl::Status st = run();
      cudaGraph_t graph = nullptr;
      const cudaError_t end = cudaStreamEndCapture(stream_, &graph);
      if (!st.ok()) {
        if (graph) cudaGraphDestroy(graph);
        return Annotate(st, "capturing the decode graph");
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
    R1_RETURN_IF_ERROR(run());
  }
  return t;
}

absl::StatusOr<std::vector<std::vector<float>>> GpuDeepseekV3Model::Forward(const std::vector<SequenceStep>& batch,
                                                                            GpuKvCache& cache) {
  const ModelConfig& c = config_;
  R1_ASSIGN_OR_RETURN(const int64_t t, Launch(batch, cache));
  std::vector<float> host(t * c.vocab_size);
  R1_RETURN_IF_ERROR(CudaCheck(cudaMemcpyAsync(host.data(), ws_.logits.ptr, host.size() * 4, cudaMemcpyDeviceToHost,
                                               stream_), "logits"));
  R1_RETURN_IF_ERROR(CudaCheck(cudaStreamSynchronize(stream_), "step"));
  std::vector<std::vector<float>> out(batch.size());
  int64_t row = 0;
  for (size_t s = 0; s < batch.size(); ++s) {
    const int64_t n = static_cast<int64_t>(batch[s].tokens.size());
    const int64_t first = batch[s].all_logits ? row : row + n - 1, rows = batch[s].all_logits ? n : 1;
    out[s].assign(host.begin() + first * c.vocab_size, host.begin() + (first + rows) * c.vocab_size);
    row += n;
  }
  return out;
}

absl::StatusOr<std::vector<int32_t>> GpuDeepseekV3Model::ForwardSample(const std::vector<SequenceStep>& batch,
                                                                       GpuKvCache& cache,
                                                                       const std::vector<cuda::SamplingRow>& sampling) {
  const int64_t vocab = config_.vocab_size;
  if (sampling.size() != batch.size()) {
    return absl::InvalidArgumentError(absl::StrCat("sampling settings for ", sampling.size(), " sequences, batch of ",
                                                   batch.size()));
  }
  R1_ASSIGN_OR_RETURN(const int64_t t, Launch(batch, cache));
  (void)t;
  auto* rows = ws_.sampling.as<cuda::SamplingRow>();
  auto* ids = ws_.sampled.as<int32_t>();
  R1_RETURN_IF_ERROR(CudaCheck(cudaMemcpyAsync(rows, sampling.data(), sampling.size() * sizeof(cuda::SamplingRow),
                                               cudaMemcpyHostToDevice, stream_), "sampling settings"));
  const float* logits = ws_.logits.as<float>();
  bool decode_only = true;
  for (const SequenceStep& s : batch) decode_only &= s.tokens.size() == 1;
  if (decode_only) {  // one row per sequence, back to back: one launch
    R1_RETURN_IF_ERROR(cuda::Sample({logits, rows, ids, static_cast<int64_t>(batch.size()), vocab, vocab}, stream_));
  } else {
    int64_t row = 0;
    for (size_t s = 0; s < batch.size(); ++s) {
      row += static_cast<int64_t>(batch[s].tokens.size());
      R1_RETURN_IF_ERROR(cuda::Sample({logits + (row - 1) * vocab, rows + s, ids + s, 1, vocab, vocab}, stream_));
    }
  }
  std::vector<int32_t> out(batch.size());
  R1_RETURN_IF_ERROR(CudaCheck(cudaMemcpyAsync(out.data(), ids, out.size() * 4, cudaMemcpyDeviceToHost, stream_),
                               "sampled tokens"));
  R1_RETURN_IF_ERROR(CudaCheck(cudaStreamSynchronize(stream_), "step"));
  return out;
}

}  // namespace r1

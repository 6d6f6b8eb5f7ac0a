// Rotary embedding, SwiGLU, embedding gather and argmax: one thread per output element (or a
// block per row for the reduction). Memory-bound and small next to the GEMMs; written for
// correctness first, vectorised later where a profile says so. Rope, SwiGLU and the embedding
// gather take bf16 or float32 activations (act_type.cuh).
// Test: tests/cuda/kernels_test.cc (Rope*, Swiglu*, Embedding*, Argmax*).
#include <cfloat>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/act_type.cuh"
#include "kernels/cuda/elementwise.h"

namespace r1::cuda {
namespace {

absl::Status LaunchStatus(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": launch failed: ", cudaGetErrorString(err)));
}

unsigned Blocks(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

template <typename T>
__global__ void RopeKernel(RopeParamsT<T> p) {
  const int64_t half = p.dim / 2;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;  // (row, pair)
  if (i >= p.rows * half) return;
  const int64_t r = i / half, j = i % half;
  T* v = p.x + r * p.stride;
  // float32 angle with one rounding, as the CPU reference and transformers compute it.
  const float angle = p.inv_freq[j] * static_cast<float>(p.positions[r / p.rows_per_position]);
  float s, c;
  sincosf(angle, &s, &c);
  c *= p.factor;
  s *= p.factor;
  const int64_t a = p.interleave ? 2 * j : j, b = p.interleave ? 2 * j + 1 : j + half;
  const float x0 = ToFloat(v[a]), x1 = ToFloat(v[b]);
  v[a] = FromFloat<T>(x0 * c - x1 * s);
  v[b] = FromFloat<T>(x1 * c + x0 * s);
}

template <typename T>
__global__ void SwigluKernel(SwigluParamsT<T> p) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.rows * p.cols) return;
  const int64_t r = i / p.cols, c = i % p.cols;
  const float g = ToFloat(p.gate[r * p.gate_stride + c]);
  const float u = ToFloat(p.up[r * p.up_stride + c]);
  p.out[r * p.out_stride + c] = FromFloat<T>(g / (1.0f + __expf(-g)) * u);
}

template <typename T>
__global__ void EmbeddingKernel(EmbeddingParamsT<T> p) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.rows * p.dim) return;
  const int64_t r = i / p.dim, c = i % p.dim;
  const int64_t id = static_cast<int64_t>(p.ids[r]) - p.first_id;
  p.out[i] = FromFloat<T>(id >= 0 && id < p.table_rows ? __bfloat162float(p.table[id * p.dim + c]) : 0.0f);
}

constexpr int kArgmaxThreads = 256;

__global__ void ArgmaxKernel(ArgmaxParams p) {
  const float* row = p.logits + static_cast<int64_t>(blockIdx.x) * p.cols;
  float best = -FLT_MAX;
  int64_t best_i = 0;
  for (int64_t c = threadIdx.x; c < p.cols; c += blockDim.x) {
    const float v = row[c];
    if (v > best) {  // strided ascending: the first maximum this thread sees
      best = v;
      best_i = c;
    }
  }
  __shared__ float vals[kArgmaxThreads];
  __shared__ int64_t idx[kArgmaxThreads];
  vals[threadIdx.x] = best;
  idx[threadIdx.x] = best_i;
  __syncthreads();
  for (int s = kArgmaxThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      const float ov = vals[threadIdx.x + s];
      const int64_t oi = idx[threadIdx.x + s];
      if (ov > vals[threadIdx.x] || (ov == vals[threadIdx.x] && oi < idx[threadIdx.x])) {
        vals[threadIdx.x] = ov;
        idx[threadIdx.x] = oi;
      }
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) p.ids[blockIdx.x] = static_cast<int32_t>(idx[0]);
}

template <typename T>
absl::Status LaunchRope(const RopeParamsT<T>& p, cudaStream_t stream) {
  if (!p.x || !p.positions || !p.inv_freq) return absl::InvalidArgumentError("rope: null pointer");
  if (p.dim <= 0 || p.dim % 2 != 0) return absl::InvalidArgumentError(absl::StrCat("rope: dim ", p.dim, " must be even"));
  if (p.rows < 0 || p.rows_per_position <= 0 || p.stride < p.dim) {
    return absl::InvalidArgumentError(absl::StrCat("rope: bad rows=", p.rows, " rows_per_position=",
                                                   p.rows_per_position, " stride=", p.stride));
  }
  if (p.rows == 0) return absl::OkStatus();
  RopeKernel<T><<<Blocks(p.rows * p.dim / 2, 256), 256, 0, stream>>>(p);
  return LaunchStatus("rope");
}

template <typename T>
absl::Status LaunchSwiglu(const SwigluParamsT<T>& p, cudaStream_t stream) {
  if (!p.gate || !p.up || !p.out) return absl::InvalidArgumentError("swiglu: null pointer");
  if (p.rows < 0 || p.cols <= 0 || p.gate_stride < p.cols || p.up_stride < p.cols || p.out_stride < p.cols) {
    return absl::InvalidArgumentError(absl::StrCat("swiglu: bad shape rows=", p.rows, " cols=", p.cols));
  }
  if (p.rows == 0) return absl::OkStatus();
  SwigluKernel<T><<<Blocks(p.rows * p.cols, 256), 256, 0, stream>>>(p);
  return LaunchStatus("swiglu");
}

template <typename T>
absl::Status LaunchEmbedding(const EmbeddingParamsT<T>& p, cudaStream_t stream) {
  if (!p.table || !p.ids || !p.out) return absl::InvalidArgumentError("embedding: null pointer");
  if (p.rows < 0 || p.dim <= 0 || p.table_rows <= 0 || p.first_id < 0) {
    return absl::InvalidArgumentError(absl::StrCat("embedding: bad shape rows=", p.rows, " dim=", p.dim,
                                                   " table_rows=", p.table_rows));
  }
  if (p.rows == 0) return absl::OkStatus();
  EmbeddingKernel<T><<<Blocks(p.rows * p.dim, 256), 256, 0, stream>>>(p);
  return LaunchStatus("embedding");
}

}  // namespace

absl::Status Rope(const RopeParamsT<__nv_bfloat16>& p, cudaStream_t stream) { return LaunchRope(p, stream); }
absl::Status Rope(const RopeParamsT<float>& p, cudaStream_t stream) { return LaunchRope(p, stream); }
absl::Status Swiglu(const SwigluParamsT<__nv_bfloat16>& p, cudaStream_t stream) { return LaunchSwiglu(p, stream); }
absl::Status Swiglu(const SwigluParamsT<float>& p, cudaStream_t stream) { return LaunchSwiglu(p, stream); }
absl::Status Embedding(const EmbeddingParamsT<__nv_bfloat16>& p, cudaStream_t stream) { return LaunchEmbedding(p, stream); }
absl::Status Embedding(const EmbeddingParamsT<float>& p, cudaStream_t stream) { return LaunchEmbedding(p, stream); }

absl::Status Argmax(const ArgmaxParams& p, cudaStream_t stream) {
  if (!p.logits || !p.ids) return absl::InvalidArgumentError("argmax: null pointer");
  if (p.rows < 0 || p.cols <= 0 || p.rows > 0x7fffffff) {
    return absl::InvalidArgumentError(absl::StrCat("argmax: bad shape rows=", p.rows, " cols=", p.cols));
  }
  if (p.rows == 0) return absl::OkStatus();
  ArgmaxKernel<<<static_cast<unsigned>(p.rows), kArgmaxThreads, 0, stream>>>(p);
  return LaunchStatus("argmax");
}

}  // namespace r1::cuda

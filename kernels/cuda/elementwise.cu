// Rotary embedding, SwiGLU, embedding gather and argmax: one thread per output element (or a
// block per row for the reduction). Memory-bound and small next to the GEMMs; written for
// correctness first, vectorised later where a profile says so.
// Test: tests/cuda/kernels_test.cc (Rope*, Swiglu*, Embedding*, Argmax*).
#include <cfloat>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/elementwise.h"

namespace r1::cuda {
namespace {

absl::Status LaunchStatus(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": launch failed: ", cudaGetErrorString(err)));
}

unsigned Blocks(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

__global__ void RopeKernel(RopeParams p) {
  const int64_t half = p.dim / 2;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;  // (row, pair)
  if (i >= p.rows * half) return;
  const int64_t r = i / half, j = i % half;
  __nv_bfloat16* v = p.x + r * p.stride;
  // float32 angle with one rounding, as the CPU reference and transformers compute it.
  const float angle = p.inv_freq[j] * static_cast<float>(p.positions[r / p.rows_per_position]);
  float s, c;
  sincosf(angle, &s, &c);
  c *= p.factor;
  s *= p.factor;
  const int64_t a = p.interleave ? 2 * j : j, b = p.interleave ? 2 * j + 1 : j + half;
  const float x0 = __bfloat162float(v[a]), x1 = __bfloat162float(v[b]);
  v[a] = __float2bfloat16(x0 * c - x1 * s);
  v[b] = __float2bfloat16(x1 * c + x0 * s);
}

__global__ void SwigluKernel(SwigluParams p) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.rows * p.cols) return;
  const int64_t r = i / p.cols, c = i % p.cols;
  const float g = __bfloat162float(p.gate[r * p.gate_stride + c]);
  const float u = __bfloat162float(p.up[r * p.up_stride + c]);
  p.out[r * p.out_stride + c] = __float2bfloat16(g / (1.0f + __expf(-g)) * u);
}

__global__ void EmbeddingKernel(EmbeddingParams p) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.rows * p.dim) return;
  const int64_t r = i / p.dim, c = i % p.dim;
  const int64_t id = static_cast<int64_t>(p.ids[r]) - p.first_id;
  p.out[i] = id >= 0 && id < p.table_rows ? p.table[id * p.dim + c] : __float2bfloat16(0.0f);
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

}  // namespace

absl::Status Rope(const RopeParams& p, cudaStream_t stream) {
  if (!p.x || !p.positions || !p.inv_freq) return absl::InvalidArgumentError("rope: null pointer");
  if (p.dim <= 0 || p.dim % 2 != 0) return absl::InvalidArgumentError(absl::StrCat("rope: dim ", p.dim, " must be even"));
  if (p.rows < 0 || p.rows_per_position <= 0 || p.stride < p.dim) {
    return absl::InvalidArgumentError(absl::StrCat("rope: bad rows=", p.rows, " rows_per_position=",
                                                   p.rows_per_position, " stride=", p.stride));
  }
  if (p.rows == 0) return absl::OkStatus();
  RopeKernel<<<Blocks(p.rows * p.dim / 2, 256), 256, 0, stream>>>(p);
  return LaunchStatus("rope");
}

absl::Status Swiglu(const SwigluParams& p, cudaStream_t stream) {
  if (!p.gate || !p.up || !p.out) return absl::InvalidArgumentError("swiglu: null pointer");
  if (p.rows < 0 || p.cols <= 0 || p.gate_stride < p.cols || p.up_stride < p.cols || p.out_stride < p.cols) {
    return absl::InvalidArgumentError(absl::StrCat("swiglu: bad shape rows=", p.rows, " cols=", p.cols));
  }
  if (p.rows == 0) return absl::OkStatus();
  SwigluKernel<<<Blocks(p.rows * p.cols, 256), 256, 0, stream>>>(p);
  return LaunchStatus("swiglu");
}

absl::Status Embedding(const EmbeddingParams& p, cudaStream_t stream) {
  if (!p.table || !p.ids || !p.out) return absl::InvalidArgumentError("embedding: null pointer");
  if (p.rows < 0 || p.dim <= 0 || p.table_rows <= 0 || p.first_id < 0) {
    return absl::InvalidArgumentError(absl::StrCat("embedding: bad shape rows=", p.rows, " dim=", p.dim,
                                                   " table_rows=", p.table_rows));
  }
  if (p.rows == 0) return absl::OkStatus();
  EmbeddingKernel<<<Blocks(p.rows * p.dim, 256), 256, 0, stream>>>(p);
  return LaunchStatus("embedding");
}

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

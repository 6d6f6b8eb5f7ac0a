// Glue ops of the GPU model path; simple one-thread-per-output or block-per-row kernels, written
// for correctness first (tests/cuda/gpu_model_test.cc checks the whole model against golden data).
// Activation-moving kernels are templates over the element type (act_type.cuh): bf16 or float32.
#include <type_traits>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/act_type.cuh"
#include "kernels/cuda/model_ops.h"

namespace r1::cuda {
namespace {

absl::Status Launched(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": launch failed: ", cudaGetErrorString(err)));
}
unsigned Blocks(int64_t n, int threads) { return static_cast<unsigned>((n + threads - 1) / threads); }

constexpr int kThreads = 256;

template <int kBlock>
__device__ float BlockSum(float v) {
  __shared__ float part[kBlock / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = v;
  __syncthreads();
  float s = 0.0f;
  for (int i = 0; i < kBlock / 32; ++i) s += part[i];
  __syncthreads();
  return s;
}

// RMSNorm of the float32 residual stream, one block per row, optionally adding a residual delta
// first (D = void: none). At one decode row a block is the whole kernel, so its time is the
// latency of its loads: the row is read in float4 quads (at most kNormQuads per thread, all
// issued before the first use), kept in registers for the second pass, and written back once
// when a delta was added. Rows that are not whole aligned quads, or longer than the registers
// hold, take the element loop (the same arithmetic).
constexpr int kNormThreads = 512;
constexpr int kNormQuads = 4;  // quads per thread: rows of up to 4 * 4 * 512 = 8192 values

template <typename D>
__device__ __forceinline__ float DeltaAt(const D* d, int64_t i) {
  if constexpr (std::is_void_v<D>) {
    return 0.0f;
  } else {
    return ToFloat(d[i]);
  }
}

template <typename D, bool kQuads>
__global__ void __launch_bounds__(kNormThreads) RmsNormF32Kernel(float* x, const D* delta, const float* w,
                                                                 __nv_bfloat16* out, float* out_f32, int64_t dim,
                                                                 float eps) {
  constexpr bool kDelta = !std::is_void_v<D>;
  float* xr = x + blockIdx.x * dim;
  const int64_t base = blockIdx.x * dim;
  float ss = 0.0f;
  if constexpr (kQuads) {
    const int quads = static_cast<int>(dim / 4);
    float4 v[kNormQuads];
#pragma unroll
    for (int j = 0; j < kNormQuads; ++j) {
      const int q = threadIdx.x + j * kNormThreads;
      if (q < quads) v[j] = reinterpret_cast<const float4*>(xr)[q];
    }
#pragma unroll
    for (int j = 0; j < kNormQuads; ++j) {
      const int q = threadIdx.x + j * kNormThreads;
      if (q >= quads) break;
      if constexpr (kDelta) {
        v[j].x += DeltaAt(delta, base + 4 * q), v[j].y += DeltaAt(delta, base + 4 * q + 1);
        v[j].z += DeltaAt(delta, base + 4 * q + 2), v[j].w += DeltaAt(delta, base + 4 * q + 3);
        reinterpret_cast<float4*>(xr)[q] = v[j];
      }
      ss += v[j].x * v[j].x;
      ss += v[j].y * v[j].y;
      ss += v[j].z * v[j].z;
      ss += v[j].w * v[j].w;
    }
    const float inv = rsqrtf(BlockSum<kNormThreads>(ss) / static_cast<float>(dim) + eps);
#pragma unroll
    for (int j = 0; j < kNormQuads; ++j) {
      const int q = threadIdx.x + j * kNormThreads;
      if (q >= quads) break;
      const float4 wq = reinterpret_cast<const float4*>(w)[q];
      const float4 o = make_float4(v[j].x * inv * wq.x, v[j].y * inv * wq.y, v[j].z * inv * wq.z, v[j].w * inv * wq.w);
      if (out != nullptr) {
        __nv_bfloat162* ob = reinterpret_cast<__nv_bfloat162*>(out + base + 4 * q);
        ob[0] = __floats2bfloat162_rn(o.x, o.y);
        ob[1] = __floats2bfloat162_rn(o.z, o.w);
      }
      if (out_f32 != nullptr) reinterpret_cast<float4*>(out_f32 + base)[q] = o;
    }
  } else {
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      float v = xr[i];
      if constexpr (kDelta) {
        v += DeltaAt(delta, base + i);
        xr[i] = v;
      }
      ss += v * v;
    }
    // The delta's writes above are read back by the same thread below (same i), so no barrier
    // beyond BlockSum's is needed.
    const float inv = rsqrtf(BlockSum<kNormThreads>(ss) / static_cast<float>(dim) + eps);
    for (int64_t i = threadIdx.x; i < dim; i += blockDim.x) {
      const float v = xr[i] * inv * w[i];
      if (out != nullptr) out[base + i] = __float2bfloat16(v);
      if (out_f32 != nullptr) out_f32[base + i] = v;
    }
  }
}

template <typename T>
__global__ void AddKernel(float* x, const T* d, int64_t n, float scale) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) x[i] += scale * ToFloat(d[i]);
}

template <typename T>
__global__ void ScatterLatentKernel(ScatterLatentParamsT<T> p) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.rows * p.latent_dim) return;
  const int64_t r = i / p.latent_dim, c = i % p.latent_dim, pos = p.positions[r];
  const int64_t block = p.block_tables[r * p.max_blocks + pos / p.block_size];
  p.cache[block * p.block_stride + (pos % p.block_size) * p.latent_dim + c] = __float2bfloat16(ToFloat(p.latent[i]));
}

template <typename T>
__global__ void AbsorbQueryKernel(AbsorbQueryParamsT<T> p) {
  const int64_t t = blockIdx.x, h = blockIdx.y, qk = p.nope + p.rope;
  const T* q = p.q + (t * p.heads + h) * qk;
  const float* w = p.w_uk + h * p.nope * p.kvr;
  for (int64_t c = threadIdx.x; p.w_uk != nullptr && c < p.kvr; c += blockDim.x) {
    float acc = 0.0f;
    for (int64_t d = 0; d < p.nope; ++d) acc += ToFloat(q[d]) * w[d * p.kvr + c];
    p.q_lat[(t * p.heads + h) * p.kvr + c] = acc;
  }
  for (int64_t d = threadIdx.x; d < p.rope; d += blockDim.x) {
    p.q_pe[(t * p.heads + h) * p.rope + d] = ToFloat(q[p.nope + d]);
  }
  for (int64_t d = threadIdx.x; p.q_f32 != nullptr && d < qk; d += blockDim.x) {
    p.q_f32[(t * p.heads + h) * qk + d] = ToFloat(q[d]);
  }
}

// One warp per output value: a dot product of kvr values.
template <typename T>
__global__ void ApplyValueKernel(ApplyValueParamsT<T> p) {
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= p.rows * p.heads * p.v) return;
  const int64_t t = warp / (p.heads * p.v), h = (warp / p.v) % p.heads, i = warp % p.v;
  const float* o = p.o_lat + (t * p.heads + h) * p.kvr;
  const float* w = p.w_uv + (h * p.v + i) * p.kvr;
  float acc = 0.0f;
  for (int64_t c = lane; c < p.kvr; c += 32) acc += o[c] * w[c];
  for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
  if (lane == 0) p.out[t * p.heads * p.v + h * p.v + i] = FromFloat<T>(acc);
}

// y [rows, n] = x · w^T in float32 (the router). A block of 256 threads owns kR rows × kJ outputs
// and splits k between its threads: thread t takes the float4 quads t, t + 256, t + 512, ... (or
// the elements, when rows are not aligned quads) in that order, and the partial sums meet in a
// fixed tree (a warp's lanes by shuffles, then the 8 warps in order). So every output is the same
// sum in the same order whatever the tile, and decode (one row per block: 256 blocks for R1's
// router, each waiting on a few loads per thread; 20 -> 7 us on an H100 against one warp per
// output) and prefill (8 × 8 tiles: each x and w row is read once per 8 outputs) agree bit for bit.
constexpr int kLinearThreads = 256;
constexpr int64_t kLinearBlockRows = 4;  // up to this many rows: 1 × 1 tiles; more: 8 × 8
template <int kR, int kJ, bool kQuads>
__global__ void __launch_bounds__(kLinearThreads) LinearF32Kernel(const float* x, const float* w, float* y,
                                                                  int64_t rows, int64_t n, int64_t k) {
  const int64_t r0 = static_cast<int64_t>(blockIdx.x) * kR, j0 = static_cast<int64_t>(blockIdx.y) * kJ;
  float acc[kR][kJ];
#pragma unroll
  for (int i = 0; i < kR; ++i)
#pragma unroll
    for (int j = 0; j < kJ; ++j) acc[i][j] = 0.0f;
  if constexpr (kQuads && kR == 1 && kJ == 1) {
    // One output: kUnroll quads of each row in flight before the first multiply.
    constexpr int kUnroll = 8;
    const float4* xr = reinterpret_cast<const float4*>(x + r0 * k);
    const float4* wr = reinterpret_cast<const float4*>(w + j0 * k);
    const int64_t quads = k / 4;
    for (int64_t q0 = threadIdx.x; q0 < quads; q0 += kLinearThreads * kUnroll) {
      float4 a[kUnroll], b[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t q = q0 + u * kLinearThreads;
        if (q < quads) a[u] = xr[q], b[u] = wr[q];
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        if (q0 + u * kLinearThreads < quads) {
          acc[0][0] = fmaf(a[u].x, b[u].x, acc[0][0]);
          acc[0][0] = fmaf(a[u].y, b[u].y, acc[0][0]);
          acc[0][0] = fmaf(a[u].z, b[u].z, acc[0][0]);
          acc[0][0] = fmaf(a[u].w, b[u].w, acc[0][0]);
        }
      }
    }
  } else if constexpr (kQuads) {
    const int64_t quads = k / 4;
    for (int64_t q = threadIdx.x; q < quads; q += kLinearThreads) {
      float4 a[kR], b[kJ];
#pragma unroll
      for (int i = 0; i < kR; ++i)
        a[i] = r0 + i < rows ? reinterpret_cast<const float4*>(x + (r0 + i) * k)[q] : make_float4(0, 0, 0, 0);
#pragma unroll
      for (int j = 0; j < kJ; ++j)
        b[j] = j0 + j < n ? reinterpret_cast<const float4*>(w + (j0 + j) * k)[q] : make_float4(0, 0, 0, 0);
#pragma unroll
      for (int i = 0; i < kR; ++i)
#pragma unroll
        for (int j = 0; j < kJ; ++j) {
          acc[i][j] = fmaf(a[i].x, b[j].x, acc[i][j]);
          acc[i][j] = fmaf(a[i].y, b[j].y, acc[i][j]);
          acc[i][j] = fmaf(a[i].z, b[j].z, acc[i][j]);
          acc[i][j] = fmaf(a[i].w, b[j].w, acc[i][j]);
        }
    }
  } else {
    for (int64_t c = threadIdx.x; c < k; c += kLinearThreads) {
#pragma unroll
      for (int i = 0; i < kR; ++i)
#pragma unroll
        for (int j = 0; j < kJ; ++j) {
          if (r0 + i < rows && j0 + j < n) acc[i][j] = fmaf(x[(r0 + i) * k + c], w[(j0 + j) * k + c], acc[i][j]);
        }
    }
  }
  // The fixed tree: lanes by xor shuffles, then warp 0 + warp 1 + ... (as BlockSum).
  __shared__ float part[kLinearThreads / 32][kR * kJ];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int i = 0; i < kR; ++i)
#pragma unroll
    for (int j = 0; j < kJ; ++j) {
      float v = acc[i][j];
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == 0) part[warp][i * kJ + j] = v;
    }
  __syncthreads();
  for (int v = threadIdx.x; v < kR * kJ; v += kLinearThreads) {
    float s = 0.0f;
    for (int i = 0; i < kLinearThreads / 32; ++i) s += part[i][v];
    const int64_t r = r0 + v / kJ, j = j0 + v % kJ;
    if (r < rows && j < n) y[r * n + j] = s;
  }
}

__global__ void CastToBf16Kernel(const float* x, __nv_bfloat16* out, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __float2bfloat16(x[i]);
}

__global__ void CastToF32Kernel(const __nv_bfloat16* x, float* out, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = __bfloat162float(x[i]);
}

template <typename T>
__global__ void GatherRowsKernel(const T* x, const int32_t* index, T* out, int64_t count, int64_t dim) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < count * dim) out[i] = x[static_cast<int64_t>(index[i / dim]) * dim + i % dim];
}

__global__ void ScatterAddWeightedKernel(const __nv_bfloat16* y, const int32_t* index, const float* weight, float* x,
                                         int64_t count, int64_t dim) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= count * dim) return;
  const int64_t r = i / dim;
  x[static_cast<int64_t>(index[r]) * dim + i % dim] += weight[r] * __bfloat162float(y[i]);
}

template <typename T>
absl::Status LaunchAdd(float* x, const T* delta, int64_t n, float scale, cudaStream_t stream) {
  if (!x || !delta || n < 0) return absl::InvalidArgumentError("add to the residual: bad arguments");
  if (n == 0) return absl::OkStatus();
  AddKernel<T><<<Blocks(n, kThreads), kThreads, 0, stream>>>(x, delta, n, scale);
  return Launched("add to the residual");
}

template <typename T>
absl::Status LaunchScatterLatent(const ScatterLatentParamsT<T>& p, cudaStream_t stream) {
  if (!p.latent || !p.cache || !p.block_tables || !p.positions || p.latent_dim <= 0 || p.block_size <= 0 ||
      p.max_blocks <= 0 || p.block_stride < p.block_size * p.latent_dim) {
    return absl::InvalidArgumentError("scatter latent: bad arguments");
  }
  if (p.rows == 0) return absl::OkStatus();
  ScatterLatentKernel<T><<<Blocks(p.rows * p.latent_dim, kThreads), kThreads, 0, stream>>>(p);
  return Launched("scatter latent");
}

template <typename T>
absl::Status LaunchAbsorbQuery(const AbsorbQueryParamsT<T>& p, cudaStream_t stream) {
  if (!p.q || (p.w_uk && !p.q_lat) || !p.q_pe || p.heads <= 0 || p.nope <= 0 || p.kvr <= 0 || p.heads > 65535) {
    return absl::InvalidArgumentError("absorb query: bad arguments");
  }
  if (p.rows == 0) return absl::OkStatus();
  AbsorbQueryKernel<T><<<dim3(static_cast<unsigned>(p.rows), static_cast<unsigned>(p.heads)), 128, 0, stream>>>(p);
  return Launched("absorb query");
}

template <typename T>
absl::Status LaunchApplyValue(const ApplyValueParamsT<T>& p, cudaStream_t stream) {
  if (!p.o_lat || !p.w_uv || !p.out || p.heads <= 0 || p.v <= 0 || p.kvr <= 0) {
    return absl::InvalidArgumentError("apply value: bad arguments");
  }
  if (p.rows == 0) return absl::OkStatus();
  ApplyValueKernel<T><<<Blocks(p.rows * p.heads * p.v * 32, kThreads), kThreads, 0, stream>>>(p);
  return Launched("apply value");
}

template <typename T>
absl::Status LaunchGatherRows(const T* x, const int32_t* index, T* out, int64_t count, int64_t dim,
                              cudaStream_t stream) {
  if (!x || !index || !out || count < 0 || dim <= 0) return absl::InvalidArgumentError("gather rows: bad arguments");
  if (count == 0) return absl::OkStatus();
  GatherRowsKernel<T><<<Blocks(count * dim, kThreads), kThreads, 0, stream>>>(x, index, out, count, dim);
  return Launched("gather rows");
}

template <typename D>
absl::Status LaunchRmsNormF32(float* x, const D* delta, const float* weight, __nv_bfloat16* out, int64_t rows,
                              int64_t dim, float eps, cudaStream_t stream, float* out_f32) {
  if (!x || !weight || (!out && !out_f32) || rows < 0 || dim <= 0 || rows > 0x7fffffff) {
    return absl::InvalidArgumentError("rmsnorm f32: bad arguments");
  }
  if (rows == 0) return absl::OkStatus();
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  const bool quads = dim % 4 == 0 && dim <= int64_t{4} * kNormQuads * kNormThreads && aligned(x) && aligned(weight) &&
                     (!out || reinterpret_cast<uintptr_t>(out) % 8 == 0) && (!out_f32 || aligned(out_f32));
  const unsigned grid = static_cast<unsigned>(rows);
  if (quads) {
    RmsNormF32Kernel<D, true><<<grid, kNormThreads, 0, stream>>>(x, delta, weight, out, out_f32, dim, eps);
  } else {
    RmsNormF32Kernel<D, false><<<grid, kNormThreads, 0, stream>>>(x, delta, weight, out, out_f32, dim, eps);
  }
  return Launched("rmsnorm f32");
}

}  // namespace

absl::Status RmsNormF32(const float* x, const float* weight, __nv_bfloat16* out, int64_t rows, int64_t dim, float eps,
                        cudaStream_t stream, float* out_f32) {
  // Without a delta the kernel only reads x.
  return LaunchRmsNormF32<void>(const_cast<float*>(x), nullptr, weight, out, rows, dim, eps, stream, out_f32);
}

absl::Status AddRmsNormF32(float* x, const __nv_bfloat16* delta, const float* weight, __nv_bfloat16* out,
                           int64_t rows, int64_t dim, float eps, cudaStream_t stream, float* out_f32) {
  if (!delta) return absl::InvalidArgumentError("add + rmsnorm f32: null delta");
  return LaunchRmsNormF32(x, delta, weight, out, rows, dim, eps, stream, out_f32);
}

absl::Status AddRmsNormF32(float* x, const float* delta, const float* weight, __nv_bfloat16* out, int64_t rows,
                           int64_t dim, float eps, cudaStream_t stream, float* out_f32) {
  if (!delta) return absl::InvalidArgumentError("add + rmsnorm f32: null delta");
  return LaunchRmsNormF32(x, delta, weight, out, rows, dim, eps, stream, out_f32);
}

absl::Status AddBf16(float* x, const __nv_bfloat16* delta, int64_t n, float scale, cudaStream_t stream) {
  return LaunchAdd(x, delta, n, scale, stream);
}
absl::Status AddF32(float* x, const float* delta, int64_t n, float scale, cudaStream_t stream) {
  return LaunchAdd(x, delta, n, scale, stream);
}

absl::Status ScatterLatent(const ScatterLatentParamsT<__nv_bfloat16>& p, cudaStream_t stream) {
  return LaunchScatterLatent(p, stream);
}
absl::Status ScatterLatent(const ScatterLatentParamsT<float>& p, cudaStream_t stream) {
  return LaunchScatterLatent(p, stream);
}

absl::Status AbsorbQuery(const AbsorbQueryParamsT<__nv_bfloat16>& p, cudaStream_t stream) {
  return LaunchAbsorbQuery(p, stream);
}
absl::Status AbsorbQuery(const AbsorbQueryParamsT<float>& p, cudaStream_t stream) { return LaunchAbsorbQuery(p, stream); }

absl::Status CastToBf16(const float* x, __nv_bfloat16* out, int64_t n, cudaStream_t stream) {
  if (!x || !out || n < 0) return absl::InvalidArgumentError("cast to bf16: bad arguments");
  if (n == 0) return absl::OkStatus();
  CastToBf16Kernel<<<Blocks(n, kThreads), kThreads, 0, stream>>>(x, out, n);
  return Launched("cast to bf16");
}

absl::Status CastToF32(const __nv_bfloat16* x, float* out, int64_t n, cudaStream_t stream) {
  if (!x || !out || n < 0) return absl::InvalidArgumentError("cast to f32: bad arguments");
  if (n == 0) return absl::OkStatus();
  CastToF32Kernel<<<Blocks(n, kThreads), kThreads, 0, stream>>>(x, out, n);
  return Launched("cast to f32");
}

absl::Status ApplyValue(const ApplyValueParamsT<__nv_bfloat16>& p, cudaStream_t stream) {
  return LaunchApplyValue(p, stream);
}
absl::Status ApplyValue(const ApplyValueParamsT<float>& p, cudaStream_t stream) { return LaunchApplyValue(p, stream); }

absl::Status LinearF32(const float* x, const float* w, float* y, int64_t rows, int64_t n, int64_t k,
                       cudaStream_t stream) {
  if (!x || !w || !y || n <= 0 || k <= 0 || rows < 0) return absl::InvalidArgumentError("linear f32: bad arguments");
  if (rows == 0) return absl::OkStatus();
  const bool quads = k % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(w) % 16 == 0;
  const bool few = rows <= kLinearBlockRows;
  const int64_t tile = few ? 1 : 8;
  const int64_t row_tiles = (rows + tile - 1) / tile, col_tiles = (n + tile - 1) / tile;
  if (row_tiles > 0x7fffffff || col_tiles > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("linear f32: rows=", rows, " n=", n, " too large"));
  }
  const dim3 grid(static_cast<unsigned>(row_tiles), static_cast<unsigned>(col_tiles));
  if (few) {
    if (quads) LinearF32Kernel<1, 1, true><<<grid, kLinearThreads, 0, stream>>>(x, w, y, rows, n, k);
    else LinearF32Kernel<1, 1, false><<<grid, kLinearThreads, 0, stream>>>(x, w, y, rows, n, k);
  } else {
    if (quads) LinearF32Kernel<8, 8, true><<<grid, kLinearThreads, 0, stream>>>(x, w, y, rows, n, k);
    else LinearF32Kernel<8, 8, false><<<grid, kLinearThreads, 0, stream>>>(x, w, y, rows, n, k);
  }
  return Launched("linear f32");
}

absl::Status GatherRows(const __nv_bfloat16* x, const int32_t* index, __nv_bfloat16* out, int64_t count, int64_t dim,
                        cudaStream_t stream) {
  return LaunchGatherRows(x, index, out, count, dim, stream);
}
absl::Status GatherRows(const float* x, const int32_t* index, float* out, int64_t count, int64_t dim,
                        cudaStream_t stream) {
  return LaunchGatherRows(x, index, out, count, dim, stream);
}

absl::Status ScatterAddWeighted(const __nv_bfloat16* y, const int32_t* index, const float* weight, float* x,
                                int64_t count, int64_t dim, cudaStream_t stream) {
  if (!y || !index || !weight || !x || count < 0 || dim <= 0) {
    return absl::InvalidArgumentError("scatter add: bad arguments");
  }
  if (count == 0) return absl::OkStatus();
  ScatterAddWeightedKernel<<<Blocks(count * dim, kThreads), kThreads, 0, stream>>>(y, index, weight, x, count, dim);
  return Launched("scatter add");
}

}  // namespace r1::cuda

// DequantLinearF32: a classic shared-memory tiled GEMM. A block owns a 64 (m) × 64 (n) tile of y
// and walks k 32 columns at a time: its 256 threads stage the x slice and the weight slice (codes
// times their block scale, i.e. exactly the dequantised value) transposed into shared memory, then
// each thread accumulates a 4 × 4 sub-tile (rows ty + 16i, columns tx + 16j) with float32 FMAs.
// A 32-column step never crosses a 128-column scale block. Correctness first: no tensor cores,
// no double buffering; the float32 path is for validation and small models.
// DequantizeFp8ToBf16: one thread per weight element.
#include "absl/strings/str_cat.h"
#include "kernels/cuda/dequant_gemm.h"

namespace r1::cuda {
namespace {

constexpr int kBm = 64, kBn = 64, kBk = 32, kThreads = 256;

template <bool kFp8>
__global__ void __launch_bounds__(kThreads) DequantLinearKernel(DequantLinearParams p) {
  __shared__ float xs[kBk][kBm + 1];
  __shared__ float ws[kBk][kBn + 1];
  const int64_t m0 = static_cast<int64_t>(blockIdx.y) * kBm, n0 = static_cast<int64_t>(blockIdx.x) * kBn;
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  float acc[4][4] = {};
  for (int64_t k0 = 0; k0 < p.k; k0 += kBk) {
    for (int idx = threadIdx.x; idx < kBm * kBk; idx += kThreads) {
      const int r = idx / kBk, c = idx % kBk;
      const int64_t gm = m0 + r, gk = k0 + c;
      xs[c][r] = gm < p.m && gk < p.k ? p.x[gm * p.k + gk] : 0.0f;
    }
    for (int idx = threadIdx.x; idx < kBn * kBk; idx += kThreads) {
      const int r = idx / kBk, c = idx % kBk;
      const int64_t gn = n0 + r, gk = k0 + c;
      float v = 0.0f;
      if (gn < p.n && gk < p.k) {
        if constexpr (kFp8) {
          v = static_cast<float>(p.w[gn * p.w_stride + gk]) * p.scales[(gn / 128) * p.scale_stride + gk / 128];
        } else {
          v = __bfloat162float(p.w_bf16[gn * p.w_stride + gk]);
        }
      }
      ws[c][r] = v;
    }
    __syncthreads();
#pragma unroll 4
    for (int kk = 0; kk < kBk; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = xs[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = ws[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t gm = m0 + ty + 16 * i;
    if (gm >= p.m) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t gn = n0 + tx + 16 * j;
      if (gn < p.n) p.y[gm * p.n + gn] = acc[i][j];
    }
  }
}

__global__ void DequantizeKernel(DequantizeParams p) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.n * p.k) return;
  const int64_t r = i / p.k, c = i % p.k;
  p.out[i] = __float2bfloat16(static_cast<float>(p.w[r * p.w_stride + c]) * p.scales[(r / 128) * p.scale_stride + c / 128]);
}

absl::Status Launched(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, ": launch failed: ", cudaGetErrorString(err)));
}

}  // namespace

absl::Status DequantLinearF32(const DequantLinearParams& p, cudaStream_t stream) {
  const bool fp8 = p.w != nullptr;
  if (!p.x || !p.y || (fp8 ? (!p.scales || p.w_bf16) : !p.w_bf16)) {
    return absl::InvalidArgumentError("dequant linear: null pointer (give x, y, and w + scales or w_bf16)");
  }
  if (p.m < 0 || p.n <= 0 || p.k <= 0 || p.w_stride < p.k || (fp8 && p.scale_stride < (p.k + 127) / 128)) {
    return absl::InvalidArgumentError(absl::StrCat("dequant linear: bad shape m=", p.m, " n=", p.n, " k=", p.k,
                                                   " w_stride=", p.w_stride, " scale_stride=", p.scale_stride));
  }
  if ((p.m + kBm - 1) / kBm > 65535) return absl::InvalidArgumentError("dequant linear: m too large");
  if (p.m == 0) return absl::OkStatus();
  const dim3 grid(static_cast<unsigned>((p.n + kBn - 1) / kBn), static_cast<unsigned>((p.m + kBm - 1) / kBm));
  if (fp8) {
    DequantLinearKernel<true><<<grid, kThreads, 0, stream>>>(p);
  } else {
    DequantLinearKernel<false><<<grid, kThreads, 0, stream>>>(p);
  }
  return Launched("dequant linear");
}

absl::Status DequantizeFp8ToBf16(const DequantizeParams& p, cudaStream_t stream) {
  if (!p.w || !p.scales || !p.out) return absl::InvalidArgumentError("dequantize: null pointer");
  if (p.n <= 0 || p.k <= 0 || p.w_stride < p.k || p.scale_stride < (p.k + 127) / 128) {
    return absl::InvalidArgumentError(absl::StrCat("dequantize: bad shape n=", p.n, " k=", p.k, " w_stride=",
                                                   p.w_stride, " scale_stride=", p.scale_stride));
  }
  const int64_t total = p.n * p.k;
  DequantizeKernel<<<static_cast<unsigned>((total + 255) / 256), 256, 0, stream>>>(p);
  return Launched("dequantize");
}

}  // namespace r1::cuda

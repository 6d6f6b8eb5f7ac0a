// Grouped FP8 GEMV over the experts, and the deterministic MoE combine.
// GroupedFp8Gemv: one warp per (expert, output column); a warp with no rows returns at once (an
// expert with no tokens costs one offset read). Each lane reads 4 weight codes (one 32-bit load)
// per 128-wide stride of k, so a warp streams a weight row in coalesced 128-byte pieces, and loops
// over the expert's rows re-reading the row from L1. Memory-bound by design: for decode the floor
// is reading each touched expert's weights once.
// MoeCombine: one thread per (token, column) sums its k choices in order.
// Test: tests/cuda/kernels_test.cc (GroupedGemv*).
#include "absl/strings/str_cat.h"
#include "kernels/cuda/act_type.cuh"
#include "kernels/cuda/grouped_gemv.h"

namespace r1::cuda {
namespace {

template <bool kFp8, typename T>
__global__ void GroupedFp8GemvKernel(GroupedFp8GemvParamsT<T> p) {
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= p.experts * p.n) return;
  const int64_t e = warp / p.n, col = warp % p.n;
  const int32_t r0 = p.offsets[e], r1 = p.offsets[e + 1];
  if (r0 == r1) return;
  const int64_t row_off = (e * p.n + col) * p.w_stride;
  const float* srow = kFp8 ? p.scales + (e * ((p.n + 127) / 128) + col / 128) * p.scale_stride : nullptr;
  for (int32_t r = r0; r < r1; ++r) {
    const T* xr = p.x + static_cast<int64_t>(r) * p.k;
    float acc = 0.0f;
    for (int64_t k0 = lane * 4; k0 < p.k; k0 += 128) {
      const float s = kFp8 ? srow[k0 / 128] : 1.0f;
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        if (k0 + i < p.k) {
          const float wv = kFp8 ? static_cast<float>(p.w[row_off + k0 + i]) : __bfloat162float(p.w_bf16[row_off + k0 + i]);
          acc += ToFloat(xr[k0 + i]) * wv * s;
        }
      }
    }
    for (int off = 16; off > 0; off >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, off);
    if (lane == 0) p.y[static_cast<int64_t>(r) * p.n + col] = FromFloat<T>(acc);
  }
}

template <typename T>
__global__ void MoeCombineKernel(MoeCombineParamsT<T> p) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.tokens * p.dim) return;
  const int64_t t = i / p.dim, c = i % p.dim;
  float acc = 0.0f;
  for (int64_t j = 0; j < p.top_k; ++j) {
    const int32_t s = p.slot[t * p.top_k + j];
    if (s >= 0) acc += p.weights[t * p.top_k + j] * ToFloat(p.y[static_cast<int64_t>(s) * p.dim + c]);
  }
  p.out[i] += acc;
}

template <typename T>
absl::Status LaunchGroupedGemv(const GroupedFp8GemvParamsT<T>& p, cudaStream_t stream) {
  const bool fp8 = p.w != nullptr;
  if (!p.x || !p.offsets || !p.y || (fp8 ? (!p.scales || p.w_bf16) : !p.w_bf16)) {
    return absl::InvalidArgumentError("grouped gemv: null pointer (give x, offsets, y, and w + scales or w_bf16)");
  }
  if (p.experts <= 0 || p.n <= 0 || p.k <= 0 || p.w_stride < p.k || (fp8 && p.scale_stride < (p.k + 127) / 128)) {
    return absl::InvalidArgumentError(absl::StrCat("grouped gemv: bad shape experts=", p.experts, " n=", p.n, " k=",
                                                   p.k, " w_stride=", p.w_stride, " scale_stride=", p.scale_stride));
  }
  const int64_t threads = p.experts * p.n * 32;
  const unsigned blocks = static_cast<unsigned>((threads + 255) / 256);
  if (fp8) {
    GroupedFp8GemvKernel<true, T><<<blocks, 256, 0, stream>>>(p);
  } else {
    GroupedFp8GemvKernel<false, T><<<blocks, 256, 0, stream>>>(p);
  }
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return absl::InternalError(absl::StrCat("grouped gemv: launch failed: ", cudaGetErrorString(err)));
  return absl::OkStatus();
}

template <typename T>
absl::Status LaunchMoeCombine(const MoeCombineParamsT<T>& p, cudaStream_t stream) {
  if (!p.y || !p.slot || !p.weights || !p.out) return absl::InvalidArgumentError("moe combine: null pointer");
  if (p.tokens < 0 || p.top_k <= 0 || p.dim <= 0) return absl::InvalidArgumentError("moe combine: bad shape");
  if (p.tokens == 0) return absl::OkStatus();
  MoeCombineKernel<T><<<static_cast<unsigned>((p.tokens * p.dim + 255) / 256), 256, 0, stream>>>(p);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return absl::InternalError(absl::StrCat("moe combine: launch failed: ", cudaGetErrorString(err)));
  return absl::OkStatus();
}

}  // namespace

absl::Status GroupedFp8Gemv(const GroupedFp8GemvParamsT<__nv_bfloat16>& p, cudaStream_t stream) {
  return LaunchGroupedGemv(p, stream);
}
absl::Status GroupedFp8Gemv(const GroupedFp8GemvParamsT<float>& p, cudaStream_t stream) {
  return LaunchGroupedGemv(p, stream);
}
absl::Status MoeCombine(const MoeCombineParamsT<__nv_bfloat16>& p, cudaStream_t stream) {
  return LaunchMoeCombine(p, stream);
}
absl::Status MoeCombine(const MoeCombineParamsT<float>& p, cudaStream_t stream) { return LaunchMoeCombine(p, stream); }

}  // namespace r1::cuda

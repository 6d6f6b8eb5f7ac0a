// AbsorbQueryFp8 / ApplyValueFp8: MLA's absorbed per-head products for decode, from kv_b_proj's
// FP8 codes (absorb_fp8.h).
//
// Both are weight streams: each block reads its share of one head's 128 x kvr codes once with
// 16-byte loads that skip L1, while the few activation rows come through L1 (they are re-read by
// every block of the head). Sums are float32 in an order fixed by the shape, never by the number
// of rows, so a row's result is the same whether it is decoded alone or beside others.
//  - AbsorbQueryFp8 reduces over the weight's rows (q_lat[c] = sum_d q[d] W[d, c]): a block owns
//    128 columns of one head; thread (rg, cg) owns columns [16 cg, 16 cg + 16) of the block and
//    the rows d = rg, rg + 16, ...; the 16 row groups' partials meet in shared memory, added in
//    row-group order.
//  - ApplyValueFp8 reduces along the rows (out[j] = sum_c W[j, c] o[c]): a warp owns 4 weight
//    rows; lane l takes bytes [16 l, 16 l + 16) of each 512-byte piece of a row; the lanes'
//    partials meet by shuffles.
// Tests: tests/cuda/kernels3_test.cc (AbsorbFp8*). Bench: bench_gpu --only absorb.
#include <cuda_fp8.h>

#include "absl/strings/str_cat.h"
#include "kernels/cuda/absorb_fp8.h"
#include "kernels/cuda/act_type.cuh"
#include "kernels/cuda/sm90_util.cuh"

namespace r1::cuda {
namespace {

constexpr int kTokens = 4;     // rows per pass over the weight
constexpr int kQThreads = 128;  // AbsorbQueryFp8: 16 row groups x 8 column chunks of 16
constexpr int kRowGroups = 16;
constexpr int kVWarps = 4;      // ApplyValueFp8: warps per block
constexpr int kVRows = 4;       // weight rows per warp


// The 16 e4m3 codes of v as floats (exact: every e4m3 value is a float).
__device__ __forceinline__ void Decode16(const uint4& v, float (&f)[16]) {
  const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const __nv_fp8x2_storage_t pair = static_cast<__nv_fp8x2_storage_t>(words[i] >> (16 * half));
      const __half2 h = __half2(__nv_cvt_fp8x2_to_halfraw2(pair, __NV_E4M3));
      const float2 two = __half22float2(h);
      f[4 * i + 2 * half] = two.x;
      f[4 * i + 2 * half + 1] = two.y;
    }
  }
}


// grid (heads, ceil(kvr / 128)), kQThreads threads.
template <typename T>
__global__ void __launch_bounds__(kQThreads) AbsorbQueryFp8Kernel(const AbsorbQueryFp8Params<T> p) {
  __shared__ float part[kRowGroups][kTokens][128];
  const AbsorbFp8Weight& w = p.w;
  const int h = blockIdx.x, cblk = blockIdx.y;
  const int cg = threadIdx.x & 7, rg = threadIdx.x >> 3;
  const int64_t c0 = static_cast<int64_t>(cblk) * 128 + cg * 16;
  const bool has_c = c0 < w.kvr;
  const int64_t row0 = static_cast<int64_t>(h) * (w.nope + w.v);
  const int64_t qk = w.nope + p.rope;
  const int64_t q_row = w.heads * qk;  // q's row stride

  // The rope part of q, copied out once per head (by the column block 0).
  if (cblk == 0) {
    for (int64_t i = threadIdx.x; i < p.rows * p.rope; i += blockDim.x) {
      const int64_t t = i / p.rope, r = i % p.rope;
      p.q_pe[(t * w.heads + h) * p.rope + r] = ToFloat(p.q[t * q_row + h * qk + w.nope + r]);
    }
  }
  for (int64_t t0 = 0; t0 < p.rows; t0 += kTokens) {
    const int nt = static_cast<int>((p.rows - t0 < kTokens ? p.rows - t0 : kTokens));
    float acc[kTokens][16];
#pragma unroll
    for (int tt = 0; tt < kTokens; ++tt)
#pragma unroll
      for (int j = 0; j < 16; ++j) acc[tt][j] = 0.0f;
    if (has_c) {
#pragma unroll 4
      for (int64_t d = rg; d < w.nope; d += kRowGroups) {
        const int64_t r = row0 + d;
        const uint4 codes = LoadStream16(w.w + r * w.w_stride + c0);
        const float s = __ldg(w.scales + (r / 128) * w.scale_stride + cblk);
        float f[kTokens];
#pragma unroll
        for (int tt = 0; tt < kTokens; ++tt) {
          f[tt] = tt < nt ? ToFloat(p.q[(t0 + tt) * q_row + h * qk + d]) * s : 0.0f;
        }
        float wv[16];
        Decode16(codes, wv);
#pragma unroll
        for (int tt = 0; tt < kTokens; ++tt)
#pragma unroll
          for (int j = 0; j < 16; ++j) acc[tt][j] = fmaf(f[tt], wv[j], acc[tt][j]);
      }
    }
#pragma unroll
    for (int tt = 0; tt < kTokens; ++tt)
#pragma unroll
      for (int j = 0; j < 16; ++j) part[rg][tt][cg * 16 + j] = acc[tt][j];
    __syncthreads();
    // 128 columns x nt rows, the row groups added in order.
    for (int i = threadIdx.x; i < kTokens * 128; i += blockDim.x) {
      const int tt = i >> 7, c = i & 127;
      const int64_t col = static_cast<int64_t>(cblk) * 128 + c;
      if (tt >= nt || col >= w.kvr) continue;
      float sum = 0.0f;
#pragma unroll
      for (int g = 0; g < kRowGroups; ++g) sum += part[g][tt][c];
      p.q_lat[((t0 + tt) * w.heads + h) * w.kvr + col] = sum;
    }
    __syncthreads();
  }
}

// grid (heads, ceil(v / (kVWarps * kVRows))), kVWarps warps.
template <typename T>
__global__ void __launch_bounds__(kVWarps * 32) ApplyValueFp8Kernel(const ApplyValueFp8Params<T> p) {
  const AbsorbFp8Weight& w = p.w;
  const int h = blockIdx.x, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t j0 = (static_cast<int64_t>(blockIdx.y) * kVWarps + warp) * kVRows;
  const int64_t row0 = static_cast<int64_t>(h) * (w.nope + w.v) + w.nope;
  const float* o_head = p.o_lat + static_cast<int64_t>(h) * w.kvr;
  const int64_t o_row = w.heads * w.kvr;
  for (int64_t t0 = 0; t0 < p.rows; t0 += kTokens) {
    const int nt = static_cast<int>((p.rows - t0 < kTokens ? p.rows - t0 : kTokens));
    float acc[kVRows][kTokens];
#pragma unroll
    for (int r = 0; r < kVRows; ++r)
#pragma unroll
      for (int tt = 0; tt < kTokens; ++tt) acc[r][tt] = 0.0f;
    for (int64_t c0 = lane * 16; c0 < w.kvr; c0 += 512) {
      const int valid = static_cast<int>((w.kvr - c0 < 16 ? w.kvr - c0 : 16));
      // This lane's 16 activations of each row, zero past kvr.
      float o[kTokens][16];
#pragma unroll
      for (int tt = 0; tt < kTokens; ++tt) {
        const float* src = o_head + (t0 + tt) * o_row + c0;
#pragma unroll
        for (int i = 0; i < 16; i += 4) {
          float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
          if (tt < nt && i + 4 <= valid) {
            v = __ldg(reinterpret_cast<const float4*>(src + i));
          } else if (tt < nt) {
            if (i < valid) v.x = src[i];
            if (i + 1 < valid) v.y = src[i + 1];
            if (i + 2 < valid) v.z = src[i + 2];
          }
          o[tt][i] = v.x, o[tt][i + 1] = v.y, o[tt][i + 2] = v.z, o[tt][i + 3] = v.w;
        }
      }
      uint4 codes[kVRows];
      float s[kVRows];
#pragma unroll
      for (int r = 0; r < kVRows; ++r) {
        const bool live = j0 + r < w.v;
        const int64_t row = row0 + (live ? j0 + r : 0);
        codes[r] = LoadStream16(w.w + row * w.w_stride + c0);
        s[r] = __ldg(w.scales + (row / 128) * w.scale_stride + c0 / 128);
      }
#pragma unroll
      for (int r = 0; r < kVRows; ++r) {
        float wv[16];
        Decode16(codes[r], wv);
        // Past kvr the stored bytes may be anything (NaN codes included): dropped, not multiplied.
#pragma unroll
        for (int i = 0; i < 16; ++i) wv[i] = i < valid ? wv[i] : 0.0f;
#pragma unroll
        for (int tt = 0; tt < kTokens; ++tt) {
          float sum = 0.0f;
#pragma unroll
          for (int i = 0; i < 16; ++i) sum = fmaf(o[tt][i], wv[i], sum);
          acc[r][tt] = fmaf(sum, s[r], acc[r][tt]);
        }
      }
    }
#pragma unroll
    for (int r = 0; r < kVRows; ++r)
#pragma unroll
      for (int tt = 0; tt < kTokens; ++tt) {
        float v = acc[r][tt];
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
        acc[r][tt] = v;
      }
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < kVRows; ++r)
#pragma unroll
        for (int tt = 0; tt < kTokens; ++tt) {
          if (j0 + r < w.v && tt < nt) {
            p.out[(t0 + tt) * w.heads * w.v + h * w.v + j0 + r] = FromFloat<T>(acc[r][tt]);
          }
        }
    }
  }
}

bool Aligned16(const void* q) { return reinterpret_cast<uintptr_t>(q) % 16 == 0; }

absl::Status Check(const AbsorbFp8Weight& w, int64_t rows, const char* what) {
  if (!AbsorbFp8Supports(w) || rows < 0 || rows > kAbsorbFp8MaxRows) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": unsupported call (needs 16-byte aligned codes, w_stride a multiple of 16 covering kvr, "
        "a scale grid covering kvr, 0 <= rows <= ", kAbsorbFp8MaxRows, "): heads=", w.heads, " nope=", w.nope,
        " v=", w.v, " kvr=", w.kvr, " w_stride=", w.w_stride, " scale_stride=", w.scale_stride, " rows=", rows));
  }
  return absl::OkStatus();
}

absl::Status Launched(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return absl::InternalError(absl::StrCat(what, ": launch failed: ", cudaGetErrorString(err)));
  return absl::OkStatus();
}

template <typename T>
absl::Status RunQuery(const AbsorbQueryFp8Params<T>& p, cudaStream_t stream) {
  if (absl::Status st = Check(p.w, p.rows, "absorb query fp8"); !st.ok()) return st;
  if (p.q == nullptr || p.q_lat == nullptr || (p.rope > 0 && p.q_pe == nullptr) || p.rope < 0) {
    return absl::InvalidArgumentError("absorb query fp8: q, q_lat (and q_pe with rope > 0) must be set");
  }
  if (p.rows == 0) return absl::OkStatus();
  const dim3 grid(static_cast<unsigned>(p.w.heads), static_cast<unsigned>((p.w.kvr + 127) / 128));
  AbsorbQueryFp8Kernel<T><<<grid, kQThreads, 0, stream>>>(p);
  return Launched("absorb query fp8");
}

template <typename T>
absl::Status RunValue(const ApplyValueFp8Params<T>& p, cudaStream_t stream) {
  if (absl::Status st = Check(p.w, p.rows, "apply value fp8"); !st.ok()) return st;
  if (p.o_lat == nullptr || p.out == nullptr || !Aligned16(p.o_lat) || p.w.kvr % 4 != 0) {
    return absl::InvalidArgumentError("apply value fp8: o_lat (16-byte aligned, kvr a multiple of 4) and out must be set");
  }
  if (p.rows == 0) return absl::OkStatus();
  const int64_t per_block = kVWarps * kVRows;
  const dim3 grid(static_cast<unsigned>(p.w.heads), static_cast<unsigned>((p.w.v + per_block - 1) / per_block));
  ApplyValueFp8Kernel<T><<<grid, kVWarps * 32, 0, stream>>>(p);
  return Launched("apply value fp8");
}

}  // namespace

bool AbsorbFp8Supports(const AbsorbFp8Weight& w) {
  const int64_t rows = w.heads * (w.nope + w.v);
  return w.w != nullptr && w.scales != nullptr && Aligned16(w.w) && w.heads > 0 && w.heads <= 65535 &&
         w.nope > 0 && w.v > 0 && w.kvr > 0 && w.kvr <= 65535 * 128 && rows <= (int64_t{1} << 31) &&
         w.w_stride % 16 == 0 && w.w_stride >= (w.kvr + 15) / 16 * 16 && w.scale_stride >= (w.kvr + 127) / 128;
}

absl::Status AbsorbQueryFp8(const AbsorbQueryFp8Params<__nv_bfloat16>& p, cudaStream_t stream) {
  return RunQuery(p, stream);
}
absl::Status AbsorbQueryFp8(const AbsorbQueryFp8Params<float>& p, cudaStream_t stream) { return RunQuery(p, stream); }
absl::Status ApplyValueFp8(const ApplyValueFp8Params<__nv_bfloat16>& p, cudaStream_t stream) {
  return RunValue(p, stream);
}
absl::Status ApplyValueFp8(const ApplyValueFp8Params<float>& p, cudaStream_t stream) { return RunValue(p, stream); }

}  // namespace r1::cuda

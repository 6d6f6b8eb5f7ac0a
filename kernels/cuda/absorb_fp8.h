// MLA's two absorbed per-head products at decode (a few rows), read straight from kv_b_proj's FP8
// codes and 128x128 block scales:
//   q_lat[t, h, c] = sum_d q[t, h, d] * W[h * (nope + v) + d, c]            (d < nope, c < kvr)
//   out[t, h * v + j] = sum_c o_lat[t, h, c] * W[h * (nope + v) + nope + j, c]  (j < v)
// with W = code * block scale, in float32 on the CUDA cores. Every product of a code, its scale
// and an activation is exact in float32 up to rounding of the sums, so the result is the float32
// product with the dequantised weight (closer to it than a TF32 tensor-core product, which rounds
// both operands to 10 mantissa bits). At one to a few rows the cost is reading the weight once:
// 8.4 MB of codes per product at R1's size, where the float32 copy is 33.5 MB.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"

namespace r1::cuda {

// The most rows one call takes (the kernels loop over them in fours, re-reading the weight from
// L2 after the first four).
inline constexpr int64_t kAbsorbFp8MaxRows = 16;

struct AbsorbFp8Weight {
  const uint8_t* w = nullptr;       // [heads * (nope + v), w_stride] e4m3 codes (kv_b_proj)
  const float* scales = nullptr;    // [ceil(heads * (nope + v) / 128), scale_stride]
  int64_t w_stride = 0, scale_stride = 0;
  int64_t heads = 0, nope = 0, v = 0, kvr = 0;
};

// q [rows, heads, nope + rope] -> q_lat [rows, heads, kvr] float32 and q_pe [rows, heads, rope]
// float32 (the rope part copied out, as AbsorbQuery does).
template <typename T>
struct AbsorbQueryFp8Params {
  AbsorbFp8Weight w;
  const T* q = nullptr;
  float* q_lat = nullptr;
  float* q_pe = nullptr;
  int64_t rows = 0, rope = 0;
};

// o_lat [rows, heads, kvr] float32 -> out [rows, heads * v].
template <typename T>
struct ApplyValueFp8Params {
  AbsorbFp8Weight w;
  const float* o_lat = nullptr;
  T* out = nullptr;
  int64_t rows = 0;
};

// Whether the weight is in the set the kernels take: 16-byte aligned codes, w_stride a multiple
// of 16 and at least kvr rounded up to 16 (the bytes past kvr may hold anything), a scale grid
// covering kvr.
bool AbsorbFp8Supports(const AbsorbFp8Weight& w);

absl::Status AbsorbQueryFp8(const AbsorbQueryFp8Params<__nv_bfloat16>& p, cudaStream_t stream);
absl::Status AbsorbQueryFp8(const AbsorbQueryFp8Params<float>& p, cudaStream_t stream);
absl::Status ApplyValueFp8(const ApplyValueFp8Params<__nv_bfloat16>& p, cudaStream_t stream);
absl::Status ApplyValueFp8(const ApplyValueFp8Params<float>& p, cudaStream_t stream);

}  // namespace r1::cuda

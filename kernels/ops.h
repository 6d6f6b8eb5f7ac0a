// The ops of the DeepSeek-V3 forward pass, one header for every backend. The CPU versions
// (kernels/cpu/) are the reference: float32 math, row-major, no hidden state. CUDA versions
// (kernels/cuda/) are tested against them on random inputs.
#pragma once

#include <cstdint>

namespace r1::cpu {

// y[m, n] = sum_k x[m, k] * w[n, k]   (x [M, K], w [N, K] as stored in a checkpoint, y [M, N]).
// Both cores (all OpenMP threads) share the work.
void MatMulNT(const float* x, int64_t m, int64_t k, const float* w, int64_t n, float* y);

// Same, but adds into y instead of overwriting it.
void MatMulNTAccumulate(const float* x, int64_t m, int64_t k, const float* w, int64_t n, float* y);

// out[r, :] = x[r, :] / sqrt(mean(x[r, :]^2) + eps) * weight, for `rows` rows of `dim` values
// starting `stride` floats apart (in place when out == x).
void RmsNorm(const float* x, int64_t rows, int64_t dim, int64_t stride, const float* weight, float eps,
             float* out, int64_t out_stride);

// Rotary embedding in place on `rows` vectors of `dim` values (`stride` floats apart), row r at
// position positions[r / rows_per_position]. inv_freq has dim/2 entries; cos and sin are scaled by
// `factor`. interleave: pairs are (2i, 2i+1); otherwise (i, i + dim/2).
void ApplyRope(float* x, int64_t rows, int64_t rows_per_position, int64_t dim, int64_t stride,
               const int64_t* positions, const float* inv_freq, float factor, bool interleave);

// out[i] = silu(gate[i]) * up[i]
void SiluMul(const float* gate, const float* up, int64_t n, float* out);

// In-place numerically stable softmax over n values.
void Softmax(float* x, int64_t n);

float Dot(const float* a, const float* b, int64_t n);
// y += a * x
void Axpy(float a, const float* x, int64_t n, float* y);

}  // namespace r1::cpu

namespace r1::cpu {

// Per-token FP8 quantisation of activations, as DeepSeek's inference does before an FP8 GEMM:
// x [m, k] → q [m, k] (e4m3 codes) and scales [m, ceil(k/128)] with x ≈ q * scale for each
// 1×128 group (scale = amax / 448; an all-zero group gets scale 1).
void QuantizeFp8PerToken128(const float* x, int64_t m, int64_t k, uint8_t* q, float* scales);

}  // namespace r1::cpu

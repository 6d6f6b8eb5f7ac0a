// CPU reference kernels: plain float32, written so GCC vectorises the inner loops (independent
// accumulators instead of one serial sum) and OpenMP spreads rows of the weight over the cores.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/dtype.h"
#include "kernels/ops.h"

// Compiled twice: for x86-64-v3 (AVX2 + FMA) and for the baseline; the loader picks the one the
// processor supports (GCC function multi-versioning), so one binary runs everywhere.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define R1_CPU_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define R1_CPU_CLONES
#endif

namespace r1::cpu {

// 8-wide float vectors (GCC vector extensions): one AVX register on x86-64-v3, two SSE registers
// on the baseline; loads through memcpy are unaligned-safe and compile to plain vector loads.
// The helpers are always inlined, so the psabi note (a 32-byte vector crossing a call without
// AVX) never applies.
#pragma GCC diagnostic ignored "-Wpsabi"
typedef float V8 __attribute__((vector_size(32)));
__attribute__((always_inline)) inline V8 Load8(const float* p) {
  V8 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
__attribute__((always_inline)) inline float Sum8(const V8& v) { return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); }

R1_CPU_CLONES
float Dot(const float* a, const float* b, int64_t n) {
  V8 acc0 = {}, acc1 = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    acc0 += Load8(a + i) * Load8(b + i);
    acc1 += Load8(a + i + 8) * Load8(b + i + 8);
  }
  for (; i + 8 <= n; i += 8) acc0 += Load8(a + i) * Load8(b + i);
  float s = 0;
  for (; i < n; ++i) s += a[i] * b[i];
  return s + Sum8(acc0 + acc1);
}

R1_CPU_CLONES
void Axpy(float a, const float* x, int64_t n, float* y) {
  for (int64_t i = 0; i < n; ++i) y[i] += a * x[i];
}

namespace {

// Four rows of x against one row of w: each weight value loaded once is used four times.
inline void Dot4(const float* x0, const float* x1, const float* x2, const float* x3, const float* w,
                 int64_t k, float out[4]) {
  V8 a0 = {}, a1 = {}, a2 = {}, a3 = {};
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    const V8 wv = Load8(w + i);
    a0 += Load8(x0 + i) * wv;
    a1 += Load8(x1 + i) * wv;
    a2 += Load8(x2 + i) * wv;
    a3 += Load8(x3 + i) * wv;
  }
  float s[4] = {0, 0, 0, 0};
  for (; i < k; ++i) {
    s[0] += x0[i] * w[i];
    s[1] += x1[i] * w[i];
    s[2] += x2[i] * w[i];
    s[3] += x3[i] * w[i];
  }
  out[0] = s[0] + Sum8(a0);
  out[1] = s[1] + Sum8(a1);
  out[2] = s[2] + Sum8(a2);
  out[3] = s[3] + Sum8(a3);
}

R1_CPU_CLONES
void MatMulImpl(const float* x, int64_t m, int64_t k, const float* w, int64_t n, float* y, bool accumulate) {
  // Tiles of 64 weight rows x 4 activation rows: a tile of w stays in L1/L2 across the rows of x.
  constexpr int64_t kRowTile = 64;
  const int64_t n_tiles = (n + kRowTile - 1) / kRowTile;
  const int64_t work = m * n * k;
#pragma omp parallel for schedule(dynamic, 1) if (work > 32768)
  for (int64_t t = 0; t < n_tiles; ++t) {
    const int64_t n0 = t * kRowTile, n1 = std::min(n, n0 + kRowTile);
    int64_t r = 0;
    for (; r + 4 <= m; r += 4) {
      const float* x0 = x + r * k;
      for (int64_t c = n0; c < n1; ++c) {
        float o[4];
        Dot4(x0, x0 + k, x0 + 2 * k, x0 + 3 * k, w + c * k, k, o);
        for (int j = 0; j < 4; ++j) {
          float& dst = y[(r + j) * n + c];
          dst = accumulate ? dst + o[j] : o[j];
        }
      }
    }
    for (; r < m; ++r) {
      for (int64_t c = n0; c < n1; ++c) {
        const float v = Dot(x + r * k, w + c * k, k);
        float& dst = y[r * n + c];
        dst = accumulate ? dst + v : v;
      }
    }
  }
}

}  // namespace

void MatMulNT(const float* x, int64_t m, int64_t k, const float* w, int64_t n, float* y) {
  MatMulImpl(x, m, k, w, n, y, false);
}

void MatMulNTAccumulate(const float* x, int64_t m, int64_t k, const float* w, int64_t n, float* y) {
  MatMulImpl(x, m, k, w, n, y, true);
}

void RmsNorm(const float* x, int64_t rows, int64_t dim, int64_t stride, const float* weight, float eps,
             float* out, int64_t out_stride) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * stride;
    float* o = out + r * out_stride;
    const float ms = Dot(xr, xr, dim) / static_cast<float>(dim);
    const float inv = 1.0f / std::sqrt(ms + eps);
    for (int64_t i = 0; i < dim; ++i) o[i] = (xr[i] * inv) * weight[i];
  }
}

void ApplyRope(float* x, int64_t rows, int64_t rows_per_position, int64_t dim, int64_t stride,
               const int64_t* positions, const float* inv_freq, float factor, bool interleave) {
  const int64_t half = dim / 2;
  for (int64_t r = 0; r < rows; ++r) {
    float* v = x + r * stride;
    // float32 angle as transformers computes it (inv_freq x position, one float rounding).
    const float pos = static_cast<float>(positions[r / rows_per_position]);
    for (int64_t i = 0; i < half; ++i) {
      const float angle = inv_freq[i] * pos;
      const float c = std::cos(angle) * factor, s = std::sin(angle) * factor;
      const int64_t a = interleave ? 2 * i : i;
      const int64_t b = interleave ? 2 * i + 1 : i + half;
      const float x0 = v[a], x1 = v[b];
      v[a] = x0 * c - x1 * s;
      v[b] = x1 * c + x0 * s;
    }
  }
}

void SiluMul(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void Softmax(float* x, int64_t n) {
  if (n <= 0) return;
  float mx = x[0];
  for (int64_t i = 1; i < n; ++i) mx = std::max(mx, x[i]);
  float sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

}  // namespace r1::cpu

namespace r1::cpu {

void QuantizeFp8PerToken128(const float* x, int64_t m, int64_t k, uint8_t* q, float* scales) {
  const int64_t groups = (k + 127) / 128;
  for (int64_t r = 0; r < m; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t c0 = g * 128, c1 = std::min(k, c0 + 128);
      float amax = 0;
      for (int64_t c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(x[r * k + c]));
      const float scale = amax > 0 ? amax / 448.0f : 1.0f;
      scales[r * groups + g] = scale;
      for (int64_t c = c0; c < c1; ++c) q[r * k + c] = FloatToFp8E4M3(x[r * k + c] / scale);
    }
  }
}

}  // namespace r1::cpu

// FP8 block-scaled GEMM and BF16 GEMM through cuBLASLt, and the per-token activation quantiser.
//
// cuBLASLt is column-major. The row-major product y[m, n] = x[m, k] · w[n, k]^T is computed as the
// column-major D[n, m] = op(A)[n, k] · op(B)[k, m] with A = w (stored [k, n] column-major, ld k,
// transposed) and B = x (stored [k, m] column-major, ld k): the "TN" form Hopper's FP8 tensor
// cores require. In that view the published weight_scale_inv [n/128, k/128] row-major is the
// column-major [k/128, n/128] block grid of A (BLK128x128_32F), and the activation scales are the
// VEC128_32F vectors of B.
// Test: tests/cuda/kernels_test.cc (Fp8Gemm*, Bf16Gemm*, Quantize*).
#include "absl/strings/str_cat.h"
#include "kernels/cuda/fp8_gemm.h"

namespace r1::cuda {
namespace {

absl::Status Check(cublasStatus_t s, const char* what) {
  if (s == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("cublasLt ", what, ": status ", static_cast<int>(s)));
}

#define R1_CUBLAS(expr, what)                                    \
  do {                                                           \
    absl::Status st_ = Check((expr), what);                      \
    if (!st_.ok()) return st_;                                   \
  } while (0)

// Descriptors released on every path.
struct LtObjects {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  ~LtObjects() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

absl::Status RunMatmul(cublasLtHandle_t handle, LtObjects& o, const void* a, const void* b, void* d,
                       void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  R1_CUBLAS(cublasLtMatmulPreferenceCreate(&o.pref), "preference");
  R1_CUBLAS(cublasLtMatmulPreferenceSetAttribute(o.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
                                                 sizeof workspace_bytes),
            "workspace preference");
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  R1_CUBLAS(cublasLtMatmulAlgoGetHeuristic(handle, o.desc, o.a, o.b, o.d, o.d, o.pref, 1, &result, &found),
            "heuristic");
  if (found == 0) return absl::UnimplementedError("cublasLt: no algorithm for this GEMM");
  const float alpha = 1.0f, beta = 0.0f;
  R1_CUBLAS(cublasLtMatmul(handle, o.desc, &alpha, a, o.a, b, o.b, &beta, d, o.d, d, o.d, &result.algo, workspace,
                           workspace_bytes, stream),
            "matmul");
  return absl::OkStatus();
}

absl::Status CheckShape(int64_t m, int64_t n, int64_t k, int64_t k_align, const char* what) {
  if (m <= 0 || n <= 0 || k <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": empty shape m=", m, " n=", n, " k=", k));
  }
  if (k % k_align != 0) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": k=", k, " must be a multiple of ", k_align,
                                                   " (16-byte aligned rows)"));
  }
  if (n % 8 != 0) return absl::InvalidArgumentError(absl::StrCat(what, ": n=", n, " must be a multiple of 8"));
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<GemmRunner>> GemmRunner::Create(size_t workspace_bytes) {
  auto r = std::unique_ptr<GemmRunner>(new GemmRunner());
  R1_CUBLAS(cublasLtCreate(&r->handle_), "create");
  if (cudaMalloc(&r->workspace_, workspace_bytes) != cudaSuccess) {
    return absl::ResourceExhaustedError("gemm: cannot allocate the cuBLASLt workspace");
  }
  r->workspace_bytes_ = workspace_bytes;
  return r;
}

GemmRunner::~GemmRunner() {
  if (workspace_) cudaFree(workspace_);
  if (handle_) cublasLtDestroy(handle_);
}

absl::Status GemmRunner::Fp8(const Fp8GemmParams& p, cudaStream_t stream) {
  if (!p.x || !p.x_scales || !p.w || !p.w_scales || !p.y) return absl::InvalidArgumentError("fp8 gemm: null pointer");
  if (auto s = CheckShape(p.m, p.n, p.k, 16, "fp8 gemm"); !s.ok()) return s;
  LtObjects o;
  R1_CUBLAS(cublasLtMatmulDescCreate(&o.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "desc");
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  R1_CUBLAS(cublasLtMatmulDescSetAttribute(o.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), "transa");
  R1_CUBLAS(cublasLtMatmulDescSetAttribute(o.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), "transb");
  const cublasLtMatmulMatrixScale_t a_mode = CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
  const cublasLtMatmulMatrixScale_t b_mode = CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F;
  R1_CUBLAS(cublasLtMatmulDescSetAttribute(o.desc, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &a_mode, sizeof a_mode),
            "weight scale mode");
  R1_CUBLAS(cublasLtMatmulDescSetAttribute(o.desc, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &b_mode, sizeof b_mode),
            "activation scale mode");
  R1_CUBLAS(cublasLtMatmulDescSetAttribute(o.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &p.w_scales,
                                           sizeof p.w_scales),
            "weight scales");
  R1_CUBLAS(cublasLtMatmulDescSetAttribute(o.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &p.x_scales,
                                           sizeof p.x_scales),
            "activation scales");
  R1_CUBLAS(cublasLtMatrixLayoutCreate(&o.a, CUDA_R_8F_E4M3, p.k, p.n, p.k), "layout w");
  const int64_t rows = Fp8PaddedRows(p.m);
  R1_CUBLAS(cublasLtMatrixLayoutCreate(&o.b, CUDA_R_8F_E4M3, p.k, rows, p.k), "layout x");
  R1_CUBLAS(cublasLtMatrixLayoutCreate(&o.d, CUDA_R_16BF, p.n, rows, p.n), "layout y");
  return RunMatmul(handle_, o, p.w, p.x, p.y, workspace_, workspace_bytes_, stream);
}

absl::Status GemmRunner::Bf16(const Bf16GemmParams& p, cudaStream_t stream) {
  if (!p.x || !p.w || (!p.y == !p.y_f32)) {
    return absl::InvalidArgumentError("bf16 gemm: null pointer (give x, w, and one of y and y_f32)");
  }
  if (auto s = CheckShape(p.m, p.n, p.k, 8, "bf16 gemm"); !s.ok()) return s;
  LtObjects o;
  R1_CUBLAS(cublasLtMatmulDescCreate(&o.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "desc");
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  R1_CUBLAS(cublasLtMatmulDescSetAttribute(o.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), "transa");
  R1_CUBLAS(cublasLtMatmulDescSetAttribute(o.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), "transb");
  R1_CUBLAS(cublasLtMatrixLayoutCreate(&o.a, CUDA_R_16BF, p.k, p.n, p.k), "layout w");
  R1_CUBLAS(cublasLtMatrixLayoutCreate(&o.b, CUDA_R_16BF, p.k, p.m, p.k), "layout x");
  R1_CUBLAS(cublasLtMatrixLayoutCreate(&o.d, p.y_f32 ? CUDA_R_32F : CUDA_R_16BF, p.n, p.m, p.n), "layout y");
  void* y = p.y_f32 ? static_cast<void*>(p.y_f32) : static_cast<void*>(p.y);
  return RunMatmul(handle_, o, p.w, p.x, y, workspace_, workspace_bytes_, stream);
}

absl::Status GemmRunner::Batched(const BatchedGemmParams& p, cudaStream_t stream) {
  if (!p.x || !p.w || !p.y) return absl::InvalidArgumentError("batched gemm: null pointer");
  if (p.m <= 0 || p.n <= 0 || p.k <= 0 || p.batch <= 0 || p.batch > (1 << 30) ||
      p.ldx < p.k || p.ldy < p.n || p.ldw < (p.w_kn ? p.n : p.k)) {
    return absl::InvalidArgumentError(absl::StrCat("batched gemm: bad shape m=", p.m, " n=", p.n, " k=", p.k,
                                                   " batch=", p.batch));
  }
  // Column-major view: y^T [n, m] = op(w)^T [n, k] · x^T [k, m].
  const bool tf32 = p.type == BatchedGemmParams::Type::kTf32;
  const cudaDataType_t in = tf32 ? CUDA_R_32F : CUDA_R_16BF, out = tf32 || p.y_f32 ? CUDA_R_32F : CUDA_R_16BF;
  LtObjects o;
  R1_CUBLAS(cublasLtMatmulDescCreate(&o.desc, tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F, CUDA_R_32F),
            "desc");
  const cublasOperation_t ta = p.w_kn ? CUBLAS_OP_N : CUBLAS_OP_T, tb = CUBLAS_OP_N;
  R1_CUBLAS(cublasLtMatmulDescSetAttribute(o.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), "transa");
  R1_CUBLAS(cublasLtMatmulDescSetAttribute(o.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), "transb");
  if (p.w_kn) {
    R1_CUBLAS(cublasLtMatrixLayoutCreate(&o.a, in, p.n, p.k, p.ldw), "layout w");
  } else {
    R1_CUBLAS(cublasLtMatrixLayoutCreate(&o.a, in, p.k, p.n, p.ldw), "layout w");
  }
  R1_CUBLAS(cublasLtMatrixLayoutCreate(&o.b, in, p.k, p.m, p.ldx), "layout x");
  R1_CUBLAS(cublasLtMatrixLayoutCreate(&o.d, out, p.n, p.m, p.ldy), "layout y");
  const int32_t batch = static_cast<int32_t>(p.batch);
  auto batched = [&](cublasLtMatrixLayout_t l, int64_t stride, const char* what) -> absl::Status {
    R1_CUBLAS(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &batch, sizeof batch), what);
    R1_CUBLAS(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride),
              what);
    return absl::OkStatus();
  };
  if (auto st = batched(o.a, p.stride_w, "batch w"); !st.ok()) return st;
  if (auto st = batched(o.b, p.stride_x, "batch x"); !st.ok()) return st;
  if (auto st = batched(o.d, p.stride_y, "batch y"); !st.ok()) return st;
  return RunMatmul(handle_, o, p.w, p.x, p.y, workspace_, workspace_bytes_, stream);
}

namespace {

// One warp per (token, 128-column group): each lane holds 4 values, a shuffle reduction finds the
// group's absolute maximum, and every lane writes its 4 codes. Scales go out token-minor.
__global__ void QuantizeKernel(QuantizeParams p, int64_t rows, int64_t stride) {
  const int64_t groups = (stride + 127) / 128;
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
  const int lane = threadIdx.x % 32;
  if (warp >= rows * groups) return;
  const int64_t row = warp / groups, g = warp % groups;
  const int64_t c0 = g * 128 + lane * 4;
  float v[4];
  float amax = 0.0f;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t c = c0 + i;
    v[i] = c < p.k && row < p.m ? __bfloat162float(p.x[row * p.k + c]) : 0.0f;
    amax = fmaxf(amax, fabsf(v[i]));
  }
  for (int offset = 16; offset > 0; offset >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, offset));
  const float scale = amax > 0.0f ? amax / 448.0f : 1.0f;
  if (lane == 0) p.scales[g * rows + row] = scale;
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t c = c0 + i;
    if (c < stride) p.q[row * stride + c] = __nv_fp8_e4m3(v[i] / scale);  // pad columns: v = 0
  }
}

}  // namespace

absl::Status QuantizeFp8PerToken128(const QuantizeParams& p, cudaStream_t stream) {
  if (!p.x || !p.q || !p.scales) return absl::InvalidArgumentError("quantize: null pointer");
  if (p.m < 0 || p.k <= 0) return absl::InvalidArgumentError(absl::StrCat("quantize: bad shape m=", p.m, " k=", p.k));
  if (p.m == 0) return absl::OkStatus();
  const int64_t stride = p.q_stride == 0 ? p.k : p.q_stride;
  if (stride < p.k || (stride + 127) / 128 != (p.k + 127) / 128) {
    return absl::InvalidArgumentError(absl::StrCat("quantize: q_stride ", stride, " must be >= k ", p.k,
                                                   " within the same 128-column groups"));
  }
  const int64_t rows = Fp8PaddedRows(p.m);
  const int64_t warps = rows * ((stride + 127) / 128);
  const int threads = 256;
  const int64_t blocks = (warps * 32 + threads - 1) / threads;
  QuantizeKernel<<<static_cast<unsigned>(blocks), threads, 0, stream>>>(p, rows, stride);
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return absl::InternalError(absl::StrCat("quantize: launch failed: ", cudaGetErrorString(err)));
  return absl::OkStatus();
}

}  // namespace r1::cuda

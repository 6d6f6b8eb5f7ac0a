// Small pieces shared by the Hopper kernels: the driver's tensor-map encoder (looked up at run
// time, so the binaries need no link against libcuda) and the e4m3 mma.sync used where wgmma
// does not fit (a few rows, or shapes the wgmma kernels do not take).
#pragma once

#include <cuda.h>  // CUtensorMap and its enums
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace r1::cuda {

using TensorMapEncoder = PFN_cuTensorMapEncodeTiled_v12000;

// cuTensorMapEncodeTiled from the driver, looked up once per process (null when the driver lacks
// it; callers then refuse the shape so that another kernel runs).
inline TensorMapEncoder TensorMapEncoderFromDriver() {
  static const TensorMapEncoder fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &found) !=
            cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      return static_cast<TensorMapEncoder>(nullptr);
    }
    return reinterpret_cast<TensorMapEncoder>(f);
  }();
  return fn;
}

// c += a · b on the tensor cores, e4m3 operands (m16n8k32, row-major a, column-major b), float32
// accumulators. On Hopper this runs as f16 HMMA after converting the operands.
__device__ __forceinline__ void MmaE4m3(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                        uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

}  // namespace r1::cuda

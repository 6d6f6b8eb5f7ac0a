// Activation element types of the GPU path: bf16 (the serving numerics) or float32 (the
// reference-precision mode). Kernels that move activations are templates over T and read / write
// through these two helpers; all arithmetic is float32 either way.
#pragma once

#include <cuda_bf16.h>

namespace r1::cuda {

__device__ __forceinline__ float ToFloat(float v) { return v; }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T FromFloat(float v);
template <>
__device__ __forceinline__ float FromFloat<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) { return __float2bfloat16(v); }

}  // namespace r1::cuda

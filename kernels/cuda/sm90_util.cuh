// Small pieces shared by the Hopper kernels: the driver's tensor-map encoder (looked up at run
// time, so the binaries need no link against libcuda), the mbarrier and wgmma-ordering basics of
// the wgmma kernels, the 2-d TMA load and the streaming 16-byte load, and the e4m3 mma.sync used
// where wgmma does not fit (a few rows, or shapes
// the wgmma kernels do not take). Pieces whose semantics differ between kernels (e.g. an
// expect_tx that does or does not also arrive) stay with their kernel.
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

// Shared-memory address of a generic pointer into shared memory.
__device__ __forceinline__ uint32_t SmemAddr(const void* ptr) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(ptr));
}

// mbarrier basics (shared::cta). MbarInit: `count` arrivals complete a phase; MbarWait spins until
// the phase of the given parity has completed.
__device__ __forceinline__ void MbarInit(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void MbarWait(uint32_t bar, int parity) {
  uint32_t done = 0;
  while (!done) {
    asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, "
        "0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  }
}

// wgmma ordering: a fence before the first wgmma that reads registers or shared memory written
// since, and a commit closing the group of wgmmas issued so far.
__device__ __forceinline__ void WgmmaFence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void WgmmaCommit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }

// Box at (column c0, row c1) of a 2-d tensor map into shared memory at dst, completing on the
// mbarrier bar (its expect_tx counts the box's bytes).
__device__ __forceinline__ void TmaLoad2d(uint32_t dst, const CUtensorMap* map, int c0, int c1, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, "
      "%3}], [%4];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
}

// 16 bytes of a stream read once (a weight at decode): not kept in L1, and the 256-byte L2 line
// around it fetched with it.
__device__ __forceinline__ uint4 LoadStream16(const uint8_t* p) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];\n"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
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

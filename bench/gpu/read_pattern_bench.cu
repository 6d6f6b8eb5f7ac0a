// bench_gpu_read: how fast the GPU streams one FP8 weight matrix from HBM, per access pattern.
//   build-gpu/bench/gpu/bench_gpu_read [--only PATTERN[,PATTERN...]] [--rows N --cols N]
//
// At one token a decode-time linear layer is a pure weight stream (a GEMV does a couple of
// multiply-adds per byte), so its speed is the read bandwidth its access pattern reaches. This
// bench reads a weight-sized matrix of bytes with nothing but the loads and an XOR per 32-bit
// word, so each figure is the ceiling of a GEMV built on that pattern:
//   linear   the matrix as one flat array: each block a contiguous chunk, each thread 16-byte
//            ld.global.nc.L1::no_allocate loads, 4-8 in flight (the read reference).
//   rowgemv  the current GEMV's pattern (kernels/cuda/dense_gemv.cu): a block owns 16 rows, its
//            warps split the columns into ranges of whole 128-byte groups, one warp load touches
//            8 rows x 64 bytes, two groups loaded before use; with and without the L2::256B hint.
//   rowwarp  one warp per row at a time, each warp load 512 contiguous bytes of it, 8 in flight.
//   bulk     a shared-memory ring filled by 1-D bulk async copies (cp.async.bulk, one elected
//            thread issues, mbarrier full/empty per stage), 8 consumer warps XOR the stages.
//   tma2d    the same ring filled by 2-D TMA boxes of a tensor map (as the grouped GEMM loads
//            weight tiles): 128 rows x 128 bytes with the 128-byte swizzle, and 32 rows x 256
//            bytes.
// Shapes: 8 routed experts of 2048 x 7168 bytes back to back (16384 x 7168) and o_proj (7168 x
// 16384), 117.4 MB each, row-major, or one --rows x --cols shape (cols a multiple of 128).
//
// Each shape is allocated in as many copies as make >= 1 GiB and every launch reads the next copy,
// so the 50 MB L2 never holds what a launch reads. Per variant: one checked launch, 3 warm-up
// launches, then 3 rounds of 20 timed launches (CUDA events around each round, launches back to
// back on one stream, so each launch's ramp-up and tail count, as they do in a decode step); the
// best round is reported.
//
// Output: one table per shape; per variant its launch shape, µs per launch, GB/s (matrix bytes /
// time), that as % of the device-to-device copy rate measured at the start of the same run
// (cudaMemcpyAsync of 1 GiB, read + written bytes, best of 5) and as % of the 3350 GB/s data-sheet
// figure, and the check. Check: each kernel XORs every 32-bit word it loads and writes one word
// per block; the blocks' words XORed on the host must equal the XOR of the copy it read (from a
// plain reference kernel, itself checked against the fill formula on the host). A mismatch prints
// FAIL and the exit status is 1.
//
// Reading: a pattern's best line is the most a GEMV built on it can stream; the best linear line
// is the read reference (what plain loads reach), and the gap between it and rowgemv is what the
// current GEMV's access pattern costs. linear and rowwarp are shown at two or three grid sizes,
// bulk and tma2d at several stage sizes (stage bytes x stages = shared memory per block) and
// blocks per SM; "blk/SM" is what fits, which may be less than asked for.
#include <cuda.h>  // CUtensorMap and its enums (the encoder comes from the driver at run time)
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cuda/sm90_util.cuh"

namespace {

using r1::cuda::MbarInit;
using r1::cuda::MbarWait;
using r1::cuda::SmemAddr;
using r1::cuda::TmaLoad2d;

#define CHECK_CUDA(x)                                                                  \
  do {                                                                                 \
    cudaError_t e_ = (x);                                                              \
    if (e_ != cudaSuccess) {                                                           \
      std::fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, cudaGetErrorString(e_)); \
      std::exit(2);                                                                    \
    }                                                                                  \
  } while (0)

constexpr double kDataSheetGBs = 3350.0;  // H100 SXM HBM3
constexpr int64_t kMinTotalBytes = int64_t{1} << 30;
constexpr int64_t kCopyAlign = int64_t{2} << 20;  // every copy starts on the same alignment
constexpr int kWarmup = 3, kTimed = 20, kRounds = 3;

// ---------------------------------------------------------------------------------------------
// Content and the reference checksum.

// Word i of the allocation: a hash of i, so that a kernel reading the wrong place (or a place
// twice: XOR cancels it) changes the checksum, and every copy has its own checksum.
__host__ __device__ inline uint32_t FillWord(uint64_t i) {
  uint32_t h =
      static_cast<uint32_t>(i) * 0x9E3779B1u ^ static_cast<uint32_t>(i >> 32) * 0x85EBCA77u;
  h ^= h >> 16;
  h *= 0x7FEB352Du;
  h ^= h >> 15;
  h *= 0x846CA68Bu;
  h ^= h >> 16;
  return h;
}

__global__ void FillKernel(uint32_t* p, int64_t words) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < words;
       i += int64_t{gridDim.x} * blockDim.x) {
    p[i] = FillWord(static_cast<uint64_t>(i));
  }
}

// The XOR of all words of one copy, as plainly as possible (4-byte loads, an atomic per warp).
__global__ void ReferenceXorKernel(const uint32_t* p, int64_t words, uint32_t* result) {
  uint32_t acc = 0;
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < words;
       i += int64_t{gridDim.x} * blockDim.x) {
    acc ^= p[i];
  }
  for (int o = 16; o > 0; o >>= 1) acc ^= __shfl_xor_sync(0xffffffffu, acc, o);
  if ((threadIdx.x & 31) == 0) atomicXor(result, acc);
}

// ---------------------------------------------------------------------------------------------
// Device helpers shared by the patterns.

// A 16-byte streaming load: not kept in L1 (every byte is read once); kL2Prefetch adds the
// L2::256B hint the GEMV uses (L2 fetches the whole 256-byte block around the address).
template <bool kL2Prefetch>
__device__ __forceinline__ uint4 LoadStream(const void* p) {
  uint4 v;
  if constexpr (kL2Prefetch) {
    asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];\n"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p));
  } else {
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
        : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
        : "l"(p));
  }
  return v;
}

__device__ __forceinline__ uint32_t Fold(uint4 v) { return v.x ^ v.y ^ v.z ^ v.w; }

// The block's XOR into out[blockIdx.x]: the one store that keeps every load of the block live.
// Every thread of the block must call it.
__device__ __forceinline__ void BlockXorOut(uint32_t acc, uint32_t* out) {
  __shared__ uint32_t part[32];
  for (int o = 16; o > 0; o >>= 1) acc ^= __shfl_xor_sync(0xffffffffu, acc, o);
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    uint32_t x = 0;
    for (unsigned w = 0; w < (blockDim.x + 31) / 32; ++w) x ^= part[w];
    out[blockIdx.x] = x;
  }
}

// ---------------------------------------------------------------------------------------------
// 1. linear: chunk per block, kUnroll 16-byte loads per thread issued before any is used.
// per_block is a multiple of 32 pieces, so every warp load covers one aligned 512-byte span.
template <int kUnroll>
__global__ void __launch_bounds__(256, 1)
    LinearKernel(const uint4* w, int64_t n16, int64_t per_block, uint32_t* out) {
  const int64_t beg = blockIdx.x * per_block;
  const int64_t end = min(n16, beg + per_block);
  const int bd = static_cast<int>(blockDim.x);
  uint32_t acc = 0;
  int64_t i = beg + threadIdx.x;
  for (; i + (kUnroll - 1) * bd < end; i += kUnroll * bd) {
    uint4 v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) v[u] = LoadStream<false>(w + i + u * bd);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) acc ^= Fold(v[u]);
  }
  for (; i < end; i += bd) acc ^= Fold(LoadStream<false>(w + i));
  BlockXorOut(acc, out);
}

// ---------------------------------------------------------------------------------------------
// 2. rowgemv: the loads of RowGemvFp8Kernel without the math. Block = 16 rows; warp w takes the
// 128-byte column groups [w * groups_per_warp, ...); lane (g, t) loads rows g and g + 8 at column
// group * 128 + h * 64 + t * 16, h = 0, 1, for two groups before XORing them.
constexpr int kGemvTile = 16;
constexpr int kGemvGroup = 128;
constexpr int kGemvUnroll = 2;
constexpr int kGemvMaxWarps = 16;
constexpr int kGemvWarpsPerSm = 16;

template <bool kL2Prefetch>
__global__ void __launch_bounds__(kGemvMaxWarps * 32, 1)
    RowGemvKernel(const uint8_t* w, int64_t rows, int64_t cols, int groups_per_warp,
                  uint32_t* out) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  const int64_t row0 = int64_t{blockIdx.x} * kGemvTile;
  const int64_t ra = row0 + g, rb = ra + 8;
  const bool has_a = ra < rows, has_b = rb < rows;
  const uint8_t* pa = w + (has_a ? ra : row0) * cols + t * 16;
  const uint8_t* pb = w + (has_b ? rb : row0) * cols + t * 16;
  const int groups = static_cast<int>(cols / kGemvGroup);
  const int gbeg = warp * groups_per_warp;
  const int gend = min(groups, gbeg + groups_per_warp);
  const uint4 zero = make_uint4(0, 0, 0, 0);
  uint32_t acc = 0;
  for (int gi = gbeg; gi < gend; gi += kGemvUnroll) {
    uint4 va[kGemvUnroll][2], vb[kGemvUnroll][2];
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
      const bool live = gi + u < gend;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int64_t off = int64_t{gi + u} * kGemvGroup + h * 64;
        va[u][h] = live && has_a ? LoadStream<kL2Prefetch>(pa + off) : zero;
        vb[u][h] = live && has_b ? LoadStream<kL2Prefetch>(pb + off) : zero;
      }
    }
#pragma unroll
    for (int u = 0; u < kGemvUnroll; ++u) {
#pragma unroll
      for (int h = 0; h < 2; ++h) acc ^= Fold(va[u][h]) ^ Fold(vb[u][h]);
    }
  }
  BlockXorOut(acc, out);
}

// ---------------------------------------------------------------------------------------------
// 3. rowwarp: rows handed to the grid's warps round robin; a warp load is bytes [16 lane,
// 16 lane + 16) of one 512-byte piece of the row, kUnroll pieces issued before any is used.
template <int kUnroll>
__global__ void __launch_bounds__(256, 1)
    RowWarpKernel(const uint8_t* w, int64_t rows, int64_t cols, uint32_t* out) {
  const int lane = threadIdx.x & 31;
  const int64_t warp = (int64_t{blockIdx.x} * blockDim.x + threadIdx.x) >> 5;
  const int64_t warps = (int64_t{gridDim.x} * blockDim.x) >> 5;
  const uint4 zero = make_uint4(0, 0, 0, 0);
  uint32_t acc = 0;
  for (int64_t r = warp; r < rows; r += warps) {
    const uint8_t* p = w + r * cols + lane * 16;
    for (int64_t pc = 0; pc * 512 < cols; pc += kUnroll) {
      uint4 v[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t off = (pc + u) * 512;
        v[u] = off + lane * 16 < cols ? LoadStream<false>(p + off) : zero;
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) acc ^= Fold(v[u]);
    }
  }
  BlockXorOut(acc, out);
}

// ---------------------------------------------------------------------------------------------
// 4 and 5. bulk / tma2d: a persistent block = one producer warp (one lane issues the async
// copies) + kConsumerWarps warps that XOR each stage out of shared memory. Stage s has a "full"
// mbarrier (the producer's arrive.expect_tx plus the copy's completed bytes) and an "empty" one
// (one arrival per consumer warp), so the producer refills a stage as soon as the last warp is
// done with it, with no block-wide barrier in the loop.
constexpr int kConsumerWarps = 8;
constexpr int kSmemThreads = (kConsumerWarps + 1) * 32;
constexpr int kMaxStages = 16;
constexpr int kSmemAlign = 1024;  // the 128-byte swizzle wants 1024-byte aligned boxes

struct StreamArgs {
  const uint8_t* w = nullptr;  // bulk: the matrix as flat bytes
  int64_t bytes = 0;           // bulk: the matrix's size
  int64_t units = 0;           // pieces (bulk) or boxes (tma2d) in the matrix
  int unit_bytes = 0;          // one piece / box: one stage
  int stages = 0;
  int interleave = 0;  // 1: block b takes units b, b + grid, ...; 0: one contiguous range
  int box_cols = 0, box_rows = 0;
  int64_t col_tiles = 0;  // tma2d: boxes per row band; unit u = (band u / col_tiles, u % col_tiles)
};

__device__ __forceinline__ void MbarArriveExpectTx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void MbarArrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// 1-D bulk copy global -> this CTA's shared memory (a launch without clusters is a cluster of
// one, so the CTA's own shared::cta address is a valid shared::cluster one).
__device__ __forceinline__ void BulkLoad(uint32_t dst, const void* src, uint32_t bytes,
                                         uint32_t bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, "
      "[%3];\n" ::"r"(dst),
      "l"(src), "r"(bytes), "r"(bar)
      : "memory");
}

template <bool kTma>
__global__ void __launch_bounds__(kSmemThreads, 1)
    SmemStreamKernel(const __grid_constant__ CUtensorMap map, const StreamArgs a, uint32_t* out) {
  extern __shared__ uint8_t dyn[];
  __shared__ alignas(8) uint64_t full[kMaxStages], empty[kMaxStages];
  const uint32_t dyn_addr = SmemAddr(dyn);
  const uint32_t base = (dyn_addr + kSmemAlign - 1) & ~uint32_t{kSmemAlign - 1};
  const uint8_t* stage0 = dyn + (base - dyn_addr);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;

  int64_t first, step, count;
  if (a.interleave) {
    first = blockIdx.x;
    step = gridDim.x;
    count = first < a.units ? (a.units - first + step - 1) / step : 0;
  } else {
    const int64_t per = (a.units + gridDim.x - 1) / gridDim.x;
    first = blockIdx.x * per;
    step = 1;
    count = max(int64_t{0}, min(per, a.units - first));
  }
  if (threadIdx.x == 0) {
    for (int s = 0; s < a.stages; ++s) {
      MbarInit(SmemAddr(&full[s]), 1);
      MbarInit(SmemAddr(&empty[s]), kConsumerWarps);
    }
    // Makes the initialised barriers visible to the async proxy (the copies complete on them).
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  uint32_t acc = 0;
  if (warp == 0) {
    if (lane == 0) {
      if constexpr (kTma) {
        asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(&map))
                     : "memory");
      }
      int s = 0;
      uint32_t round = 0;
      for (int64_t i = 0; i < count; ++i) {
        if (round > 0) MbarWait(SmemAddr(&empty[s]), static_cast<int>((round - 1) & 1));
        const int64_t u = first + i * step;
        const uint32_t dst = base + static_cast<uint32_t>(s) * a.unit_bytes;
        const uint32_t bar = SmemAddr(&full[s]);
        if constexpr (kTma) {
          // Boxes past the matrix's last row or column are filled with zeros (XOR-neutral) and
          // still count their full size towards the transaction bytes.
          MbarArriveExpectTx(bar, a.unit_bytes);
          TmaLoad2d(dst, &map, static_cast<int>(u % a.col_tiles) * a.box_cols,
                    static_cast<int>(u / a.col_tiles) * a.box_rows, bar);
        } else {
          const int64_t off = u * a.unit_bytes;
          const uint32_t n = static_cast<uint32_t>(min(int64_t{a.unit_bytes}, a.bytes - off));
          MbarArriveExpectTx(bar, n);
          BulkLoad(dst, a.w + off, n, bar);
        }
        if (++s == a.stages) {
          s = 0;
          ++round;
        }
      }
    }
    __syncwarp();  // the producer lane rejoins its warp before the block's reduction
  } else {
    const int ct = static_cast<int>(threadIdx.x) - 32;
    int s = 0;
    uint32_t round = 0;
    for (int64_t i = 0; i < count; ++i) {
      MbarWait(SmemAddr(&full[s]), static_cast<int>(round & 1));
      int n16 = a.unit_bytes / 16;
      if constexpr (!kTma) {
        const int64_t off = (first + i * step) * a.unit_bytes;
        n16 = static_cast<int>(min(int64_t{a.unit_bytes}, a.bytes - off) / 16);
      }
      const uint4* src =
          reinterpret_cast<const uint4*>(stage0 + static_cast<int64_t>(s) * a.unit_bytes);
#pragma unroll 4
      for (int j = ct; j < n16; j += kConsumerWarps * 32) acc ^= Fold(src[j]);
      __syncwarp();
      if (lane == 0) MbarArrive(SmemAddr(&empty[s]));
      if (++s == a.stages) {
        s = 0;
        ++round;
      }
    }
  }
  BlockXorOut(acc, out);
}

// ---------------------------------------------------------------------------------------------
// Host side.

struct Shape {
  std::string name;
  int64_t rows = 0, cols = 0;
};

// One shape in `copies` copies, each at base + c * stride.
struct Workload {
  Shape shape;
  uint8_t* base = nullptr;
  int64_t bytes = 0, stride = 0;
  int copies = 0;
  std::vector<uint32_t> expected;  // per copy: XOR of its words
  const uint8_t* Copy(int c) const { return base + c * stride; }
};

struct Variant {
  std::string pattern, config;
  int grid = 0;
  std::function<void(int copy, cudaStream_t s)> launch;
};

struct Device {
  int sms = 0;
  double copy_gbs = 0;
};

uint32_t HostXorOfCopy(int64_t first_word, int64_t words) {
  uint32_t x = 0;
  for (int64_t i = 0; i < words; ++i) x ^= FillWord(static_cast<uint64_t>(first_word + i));
  return x;
}

Workload MakeWorkload(const Shape& shape) {
  Workload wl;
  wl.shape = shape;
  wl.bytes = shape.rows * shape.cols;
  wl.stride = (wl.bytes + kCopyAlign - 1) / kCopyAlign * kCopyAlign;
  wl.copies = static_cast<int>(std::max<int64_t>(2, (kMinTotalBytes + wl.stride - 1) / wl.stride));
  const int64_t total = wl.stride * wl.copies;
  CHECK_CUDA(cudaMalloc(&wl.base, total));
  FillKernel<<<4096, 256>>>(reinterpret_cast<uint32_t*>(wl.base), total / 4);
  CHECK_CUDA(cudaGetLastError());
  uint32_t* dev_xor = nullptr;
  CHECK_CUDA(cudaMalloc(&dev_xor, sizeof(uint32_t) * wl.copies));
  CHECK_CUDA(cudaMemset(dev_xor, 0, sizeof(uint32_t) * wl.copies));
  for (int c = 0; c < wl.copies; ++c) {
    ReferenceXorKernel<<<2048, 256>>>(reinterpret_cast<const uint32_t*>(wl.Copy(c)), wl.bytes / 4,
                                      dev_xor + c);
    CHECK_CUDA(cudaGetLastError());
  }
  wl.expected.resize(wl.copies);
  CHECK_CUDA(cudaMemcpy(wl.expected.data(), dev_xor, sizeof(uint32_t) * wl.copies,
                        cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaFree(dev_xor));
  // The reference kernel against the fill formula, on the last copy (so the copy offsets are
  // checked too).
  const int last = wl.copies - 1;
  const uint32_t host = HostXorOfCopy(last * wl.stride / 4, wl.bytes / 4);
  if (host != wl.expected[last]) {
    std::printf("FAIL: reference XOR of copy %d is %08x, fill formula gives %08x\n", last,
                wl.expected[last], host);
    std::exit(1);
  }
  return wl;
}

// Device-to-device copy rate of 1 GiB (bytes read + written), best of 5.
double MeasureCopyGBs() {
  const size_t bytes = size_t{1} << 30;
  void *src = nullptr, *dst = nullptr;
  CHECK_CUDA(cudaMalloc(&src, bytes));
  CHECK_CUDA(cudaMalloc(&dst, bytes));
  CHECK_CUDA(cudaMemset(src, 0x5a, bytes));
  cudaEvent_t a, b;
  CHECK_CUDA(cudaEventCreate(&a));
  CHECK_CUDA(cudaEventCreate(&b));
  CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice));  // warm-up
  float best = 1e30f;
  for (int i = 0; i < 5; ++i) {
    CHECK_CUDA(cudaEventRecord(a));
    CHECK_CUDA(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice));
    CHECK_CUDA(cudaEventRecord(b));
    CHECK_CUDA(cudaEventSynchronize(b));
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, a, b));
    best = std::min(best, ms);
  }
  CHECK_CUDA(cudaEventDestroy(a));
  CHECK_CUDA(cudaEventDestroy(b));
  CHECK_CUDA(cudaFree(src));
  CHECK_CUDA(cudaFree(dst));
  return 2.0 * static_cast<double>(bytes) / (best * 1e-3) / 1e9;
}

// Blocks of `kernel` per SM that fit at this block size and shared memory, capped at `want`: the
// persistent grids must be resident in one wave, or the last blocks would run alone afterwards.
template <typename Kernel>
int ResidentBlocks(Kernel kernel, int threads, size_t smem, int want) {
  int n = 0;
  CHECK_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, threads, smem));
  return std::max(1, std::min(n, want));
}

std::string Fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
std::string Fmt(const char* f, ...) {
  char buf[256];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(buf, sizeof buf, f, ap);
  va_end(ap);
  return buf;
}

void AddLinear(std::vector<Variant>& vs, const Workload& wl, const Device& dev, uint32_t* out) {
  auto add = [&](auto kernel, int unroll, int threads, int want) {
    const int bps = ResidentBlocks(kernel, threads, 0, want);
    const int grid = dev.sms * bps;
    const int64_t n16 = wl.bytes / 16;
    const int64_t per = ((n16 + grid - 1) / grid + 31) / 32 * 32;
    Variant v;
    v.pattern = "linear";
    v.config = Fmt("%d blk/SM x %d thr, %d loads of 16 B in flight", bps, threads, unroll);
    v.grid = grid;
    v.launch = [&wl, kernel, grid, threads, n16, per, out](int c, cudaStream_t s) {
      kernel<<<grid, threads, 0, s>>>(reinterpret_cast<const uint4*>(wl.Copy(c)), n16, per, out);
    };
    vs.push_back(v);
  };
  add(LinearKernel<8>, 8, 256, 2);
  add(LinearKernel<8>, 8, 128, 8);
  add(LinearKernel<4>, 4, 256, 8);
}

void AddRowGemv(std::vector<Variant>& vs, const Workload& wl, const Device& dev, uint32_t* out) {
  // Warps per block as RowGemvFp8 picks them: about 16 warps per SM over the grid, an even share
  // of the groups each, no warp without one.
  const int64_t tiles = (wl.shape.rows + kGemvTile - 1) / kGemvTile;
  const int64_t groups = wl.shape.cols / kGemvGroup;
  int64_t warps = std::clamp<int64_t>((int64_t{dev.sms} * kGemvWarpsPerSm + tiles - 1) / tiles, 1,
                                      std::min<int64_t>(kGemvMaxWarps, groups));
  const int per_warp = static_cast<int>((groups + warps - 1) / warps);
  warps = (groups + per_warp - 1) / per_warp;
  auto add = [&](auto kernel, bool hint) {
    Variant v;
    v.pattern = "rowgemv";
    v.config =
        Fmt("%lld tiles of 16 rows x %d warps, %d groups/warp%s", static_cast<long long>(tiles),
            static_cast<int>(warps), per_warp, hint ? ", L2::256B" : ", no L2 hint");
    v.grid = static_cast<int>(tiles);
    const int64_t rows = wl.shape.rows, cols = wl.shape.cols;
    v.launch = [&wl, kernel, tiles, warps, rows, cols, per_warp, out](int c, cudaStream_t s) {
      kernel<<<static_cast<unsigned>(tiles), static_cast<unsigned>(warps * 32), 0, s>>>(
          wl.Copy(c), rows, cols, per_warp, out);
    };
    vs.push_back(v);
  };
  add(RowGemvKernel<true>, true);
  add(RowGemvKernel<false>, false);
}

void AddRowWarp(std::vector<Variant>& vs, const Workload& wl, const Device& dev, uint32_t* out) {
  auto add = [&](auto kernel, int unroll, int threads, int want) {
    const int bps = ResidentBlocks(kernel, threads, 0, want);
    const int grid = dev.sms * bps;
    Variant v;
    v.pattern = "rowwarp";
    v.config = Fmt("%d blk/SM x %d thr, %d pieces of 512 B in flight", bps, threads, unroll);
    v.grid = grid;
    const int64_t rows = wl.shape.rows, cols = wl.shape.cols;
    v.launch = [&wl, kernel, grid, threads, rows, cols, out](int c, cudaStream_t s) {
      kernel<<<grid, threads, 0, s>>>(wl.Copy(c), rows, cols, out);
    };
    vs.push_back(v);
  };
  add(RowWarpKernel<8>, 8, 256, 2);
  add(RowWarpKernel<8>, 8, 128, 8);
}

// A shared-memory ring variant: stage = one piece (bulk) or box (tma2d). `maps` (tma2d): one
// tensor map per copy.
void AddSmemVariant(std::vector<Variant>& vs, const std::string& pattern, const std::string& what,
                    const Device& dev, StreamArgs args, int want_bps,
                    std::shared_ptr<std::vector<CUtensorMap>> maps, const Workload& wl,
                    uint32_t* out) {
  const bool tma = maps != nullptr;
  const size_t smem = static_cast<size_t>(args.stages) * args.unit_bytes + kSmemAlign;
  auto kernel = tma ? SmemStreamKernel<true> : SmemStreamKernel<false>;
  // The attribute is the kernel's, not the launch's: only ever raised, so that every variant
  // added before it still launches.
  static size_t smem_set[2] = {0, 0};
  if (smem > smem_set[tma]) {
    CHECK_CUDA(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    static_cast<int>(smem)));
    smem_set[tma] = smem;
  }
  int fit = 0;
  CHECK_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&fit, kernel, kSmemThreads, smem));
  if (fit == 0) {
    std::printf("%-8s %-62s does not fit in shared memory, skipped\n", pattern.c_str(),
                what.c_str());
    return;
  }
  const int bps = std::min(fit, want_bps);
  const int grid = dev.sms * bps;
  Variant v;
  v.pattern = pattern;
  v.config = Fmt("%s x %d st (%d KB), %d blk/SM", what.c_str(), args.stages,
                 args.stages * args.unit_bytes / 1024, bps);
  v.grid = grid;
  v.launch = [&wl, kernel, grid, smem, args, maps, out](int c, cudaStream_t s) {
    StreamArgs a = args;
    a.w = wl.Copy(c);
    CUtensorMap none{};
    kernel<<<grid, kSmemThreads, smem, s>>>(maps ? (*maps)[c] : none, a, out);
  };
  vs.push_back(v);
}

void AddBulk(std::vector<Variant>& vs, const Workload& wl, const Device& dev, uint32_t* out) {
  auto add = [&](const std::string& what, int piece, int stages, int bps, int interleave) {
    StreamArgs a;
    a.bytes = wl.bytes;
    a.unit_bytes = piece;
    a.units = (wl.bytes + piece - 1) / piece;
    a.stages = stages;
    a.interleave = interleave;
    AddSmemVariant(vs, "bulk", what, dev, a, bps, nullptr, wl, out);
  };
  add("16 KB pieces", 16 << 10, 4, 2, 0);
  add("16 KB pieces, round robin", 16 << 10, 4, 2, 1);
  add("8 KB pieces", 8 << 10, 8, 2, 0);
  add("32 KB pieces", 32 << 10, 4, 1, 0);
  // Whole rows: as many as make about 16 KB (one copy per stage still; rows are contiguous).
  const int64_t row_bytes = wl.shape.cols;
  const int64_t rows_per = std::max<int64_t>(1, (16 << 10) / row_bytes);
  if (rows_per * row_bytes * 4 <= (200 << 10)) {
    add(Fmt("%lld row%s = %lld B", static_cast<long long>(rows_per), rows_per > 1 ? "s" : "",
            static_cast<long long>(rows_per * row_bytes)),
        static_cast<int>(rows_per * row_bytes), 4, 2, 0);
  }
}

void AddTma2d(std::vector<Variant>& vs, const Workload& wl, const Device& dev, uint32_t* out) {
  const r1::cuda::TensorMapEncoder encode = r1::cuda::TensorMapEncoderFromDriver();
  if (encode == nullptr) {
    std::printf("tma2d    the driver has no cuTensorMapEncodeTiled, skipped\n");
    return;
  }
  auto add = [&](int box_rows, int box_cols, bool swizzle, int stages, int bps) {
    auto maps = std::make_shared<std::vector<CUtensorMap>>(wl.copies);
    const cuuint64_t dims[2] = {static_cast<cuuint64_t>(wl.shape.cols),
                                static_cast<cuuint64_t>(wl.shape.rows)};
    const cuuint64_t strides[1] = {static_cast<cuuint64_t>(wl.shape.cols)};
    const cuuint32_t box[2] = {static_cast<cuuint32_t>(box_cols),
                               static_cast<cuuint32_t>(box_rows)};
    const cuuint32_t elem_strides[2] = {1, 1};
    for (int c = 0; c < wl.copies; ++c) {
      const CUresult r =
          encode(&(*maps)[c], CU_TENSOR_MAP_DATA_TYPE_UINT8, 2, const_cast<uint8_t*>(wl.Copy(c)),
                 dims, strides, box, elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                 swizzle ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_NONE,
                 CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
      if (r != CUDA_SUCCESS) {
        std::printf("tma2d    box %d x %d: cuTensorMapEncodeTiled failed (%d), skipped\n", box_rows,
                    box_cols, static_cast<int>(r));
        return;
      }
    }
    StreamArgs a;
    a.unit_bytes = box_rows * box_cols;
    a.box_rows = box_rows;
    a.box_cols = box_cols;
    a.col_tiles = (wl.shape.cols + box_cols - 1) / box_cols;
    a.units = (wl.shape.rows + box_rows - 1) / box_rows * a.col_tiles;
    a.stages = stages;
    AddSmemVariant(vs, "tma2d",
                   Fmt("box %d rows x %d B%s", box_rows, box_cols, swizzle ? " swz128" : ""), dev,
                   a, bps, maps, wl, out);
  };
  add(128, 128, true, 4, 2);
  add(128, 128, true, 8, 1);
  add(32, 256, false, 8, 2);
}

// XOR of the per-block words of the last launch, against the copy it read.
bool Check(const Variant& v, const Workload& wl, const uint32_t* out, int copy) {
  std::vector<uint32_t> h(v.grid);
  CHECK_CUDA(cudaMemcpy(h.data(), out, sizeof(uint32_t) * v.grid, cudaMemcpyDeviceToHost));
  uint32_t x = 0;
  for (uint32_t w : h) x ^= w;
  if (x != wl.expected[copy]) {
    std::printf("FAIL: %s (%s) on copy %d: XOR %08x, expected %08x\n", v.pattern.c_str(),
                v.config.c_str(), copy, x, wl.expected[copy]);
    return false;
  }
  return true;
}

// µs per launch (best round), or a negative value when a check failed.
double TimeVariant(const Variant& v, const Workload& wl, const uint32_t* out, cudaStream_t s) {
  int k = 0;  // launches so far: launch k reads copy k % copies
  v.launch(k++ % wl.copies, s);
  CHECK_CUDA(cudaGetLastError());
  CHECK_CUDA(cudaStreamSynchronize(s));
  if (!Check(v, wl, out, 0)) return -1;
  for (int i = 0; i < kWarmup; ++i) v.launch(k++ % wl.copies, s);
  cudaEvent_t a, b;
  CHECK_CUDA(cudaEventCreate(&a));
  CHECK_CUDA(cudaEventCreate(&b));
  float best = 1e30f;
  for (int r = 0; r < kRounds; ++r) {
    CHECK_CUDA(cudaEventRecord(a, s));
    for (int i = 0; i < kTimed; ++i) v.launch(k++ % wl.copies, s);
    CHECK_CUDA(cudaEventRecord(b, s));
    CHECK_CUDA(cudaEventSynchronize(b));
    CHECK_CUDA(cudaGetLastError());
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, a, b));
    best = std::min(best, ms);
  }
  CHECK_CUDA(cudaEventDestroy(a));
  CHECK_CUDA(cudaEventDestroy(b));
  if (!Check(v, wl, out, (k - 1) % wl.copies)) return -1;
  return best * 1e3 / kTimed;
}

const char* const kPatterns[] = {"linear", "rowgemv", "rowwarp", "bulk", "tma2d"};

bool RunShape(const Shape& shape, const Device& dev, const std::vector<std::string>& only) {
  Workload wl = MakeWorkload(shape);
  const int64_t tiles = (shape.rows + kGemvTile - 1) / kGemvTile;
  const int64_t out_words = std::max<int64_t>(tiles, int64_t{dev.sms} * 32);
  uint32_t* out = nullptr;
  CHECK_CUDA(cudaMalloc(&out, sizeof(uint32_t) * out_words));
  cudaStream_t s;
  CHECK_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));

  std::printf("\n== %s: %lld rows x %lld B, %.1f MB per copy, %d copies (%.2f GB) read in turn\n",
              shape.name.c_str(), static_cast<long long>(shape.rows),
              static_cast<long long>(shape.cols), wl.bytes / 1e6, wl.copies,
              wl.stride * static_cast<double>(wl.copies) / 1e9);
  std::printf("%-8s %-62s %9s %8s %7s %7s  %s\n", "pattern", "launch shape", "us", "GB/s", "%copy",
              "%3350", "check");
  std::vector<Variant> vs;
  auto wanted = [&](const char* p) {
    return only.empty() || std::find(only.begin(), only.end(), p) != only.end();
  };
  if (wanted("linear")) AddLinear(vs, wl, dev, out);
  if (wanted("rowgemv")) AddRowGemv(vs, wl, dev, out);
  if (wanted("rowwarp")) AddRowWarp(vs, wl, dev, out);
  if (wanted("bulk")) AddBulk(vs, wl, dev, out);
  if (wanted("tma2d")) AddTma2d(vs, wl, dev, out);
  bool ok = true;
  for (const Variant& v : vs) {
    const double us = TimeVariant(v, wl, out, s);
    if (us < 0) {
      ok = false;
      std::printf("%-8s %-62s %9s %8s %7s %7s  FAIL\n", v.pattern.c_str(), v.config.c_str(), "-",
                  "-", "-", "-");
      continue;
    }
    const double gbs = static_cast<double>(wl.bytes) / (us * 1e-6) / 1e9;
    std::printf("%-8s %-62s %9.1f %8.0f %6.1f%% %6.1f%%  ok\n", v.pattern.c_str(), v.config.c_str(),
                us, gbs, 100.0 * gbs / dev.copy_gbs, 100.0 * gbs / kDataSheetGBs);
    std::fflush(stdout);
  }
  CHECK_CUDA(cudaStreamDestroy(s));
  CHECK_CUDA(cudaFree(out));
  CHECK_CUDA(cudaFree(wl.base));
  return ok;
}

void Usage(FILE* f) {
  std::fprintf(
      f,
      "usage: bench_gpu_read [--only PATTERN[,PATTERN...]] [--rows N --cols N]\n"
      "  Read bandwidth of one weight matrix (bytes) per access pattern, L2 cold.\n"
      "  --only     patterns to run: linear, rowgemv, rowwarp, bulk, tma2d (default: all)\n"
      "  --rows N   with --cols: one custom shape instead of the two default ones\n"
      "  --cols N   row length in bytes, a multiple of 128\n"
      "  default shapes: experts 16384 x 7168 (8 x 2048 rows), o_proj 7168 x 16384\n");
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> only;
  int64_t rows = 0, cols = 0;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--help" || arg == "-h") {
      Usage(stdout);
      return 0;
    } else if (arg == "--only") {
      std::string list = value();
      for (size_t pos = 0; pos <= list.size();) {
        const size_t comma = std::min(list.find(',', pos), list.size());
        const std::string p = list.substr(pos, comma - pos);
        if (std::find(std::begin(kPatterns), std::end(kPatterns), p) == std::end(kPatterns)) {
          std::fprintf(stderr, "unknown pattern '%s'\n", p.c_str());
          Usage(stderr);
          return 2;
        }
        only.push_back(p);
        pos = comma + 1;
      }
    } else if (arg == "--rows") {
      rows = std::atoll(value().c_str());
    } else if (arg == "--cols") {
      cols = std::atoll(value().c_str());
    } else {
      std::fprintf(stderr, "unknown argument '%s'\n", arg.c_str());
      Usage(stderr);
      return 2;
    }
  }
  std::vector<Shape> shapes;
  if (rows != 0 || cols != 0) {
    // cols % 128: the rowgemv pattern walks whole 128-byte groups; rows < 2^31: TMA coordinates.
    if (rows <= 0 || cols <= 0 || cols % 128 != 0 || rows >= (int64_t{1} << 31) ||
        cols >= (int64_t{1} << 31)) {
      std::fprintf(stderr,
                   "--rows and --cols go together: rows > 0, cols a positive multiple of 128\n");
      return 2;
    }
    shapes.push_back({"custom", rows, cols});
  } else {
    shapes.push_back({"experts (8 x 2048 x 7168)", 8 * 2048, 7168});
    shapes.push_back({"o_proj (7168 x 16384)", 7168, 16384});
  }

  Device dev;
  int d = 0;
  CHECK_CUDA(cudaGetDevice(&d));
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, d));
  dev.sms = prop.multiProcessorCount;
  dev.copy_gbs = MeasureCopyGBs();
  std::printf(
      "%s: %d SMs, L2 %.0f MB; device-to-device copy (1 GiB, read + write, best of 5): %.0f GB/s "
      "= %.1f%% of %.0f GB/s\n",
      prop.name, dev.sms, prop.l2CacheSize / 1e6, dev.copy_gbs,
      100.0 * dev.copy_gbs / kDataSheetGBs, kDataSheetGBs);
  std::printf("per variant: best of %d rounds of %d launches, each launch on the next copy\n",
              kRounds, kTimed);
  bool ok = true;
  for (const Shape& shape : shapes) ok = RunShape(shape, dev, only) && ok;
  if (!ok) {
    std::printf("FAIL\n");
    return 1;
  }
  return 0;
}

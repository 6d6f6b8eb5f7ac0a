// Checkpoint loading at DeepSeek-R1's real dimensions, against the disk's own read speed.
//   build-gpu/bench/gpu/bench_gpu_load [--dir /tmp/r1-load] [--layers 4] [--read-threads 8] [--keep]
// 1. Writes a checkpoint of the first `layers` layers of R1 (the first three dense, the rest MoE
//    with 256 experts) in the published layout: real tensor names and shapes, FP8 e4m3 weights
//    with random codes and 128x128 float32 weight_scale_inv blocks, BF16 embedding / lm_head /
//    norms / router, shards of at most 4 GB plus model.safetensors.index.json and config.json.
// 2. Evicts the files from the page cache (fdatasync + POSIX_FADV_DONTNEED, and drop_caches when
//    this process may write it) and checks with mincore() that nothing of them stays resident.
// 3. The disk figure: reads every file sequentially, once with one thread (dd-like, 16 MB reads)
//    and once with `read-threads` threads on separate 64 MB pieces, evicting before each.
// 4. Evicts again and loads the folder with GpuDeepseekV3Model::Load (the project's loader):
//    checkpoint bytes / wall time, and its ratio to the better disk figure. Then loads once more
//    with the files in the page cache, which shows what the loader does when the disk is not the
//    limit, and measures the pinned host-to-device copy rate for reference.
#include <cuda_runtime.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/gpu/r1_checkpoint.h"
#include "worker/model/gpu_model.h"

namespace {

using Clock = std::chrono::steady_clock;
double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

using r1::bench::Die;
using r1::bench::WriteCheckpoint;
using r1::bench::Written;

// Drops the files' pages from the page cache; returns the fraction still resident (mincore).
double Evict(const std::vector<std::string>& files, bool drop_caches) {
  for (const std::string& f : files) {
    const int fd = ::open(f.c_str(), O_RDONLY);
    if (fd < 0) Die("open " + f);
    ::fdatasync(fd);
    ::posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
  if (drop_caches) {
    ::sync();
    std::ofstream("/proc/sys/vm/drop_caches") << "3\n";
  }
  size_t resident = 0, pages = 0;
  const size_t page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> vec;
  for (const std::string& f : files) {
    const int fd = ::open(f.c_str(), O_RDONLY);
    struct stat st;
    ::fstat(fd, &st);
    const size_t size = static_cast<size_t>(st.st_size);
    void* m = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
    ::close(fd);
    if (m == MAP_FAILED) Die("mmap " + f);
    vec.resize((size + page - 1) / page);
    if (::mincore(m, size, vec.data()) != 0) Die("mincore " + f);
    for (unsigned char v : vec) resident += v & 1;
    pages += vec.size();
    ::munmap(m, size);
  }
  return pages ? static_cast<double>(resident) / static_cast<double>(pages) : 0.0;
}

// Reads every file completely; returns bytes read. threads == 1: sequential 16 MB reads, file
// after file (what dd does); otherwise the files' 64 MB pieces are shared out among the threads.
size_t ReadFiles(const std::vector<std::string>& files, int threads) {
  struct Piece {
    int file;
    size_t off, len;
  };
  constexpr size_t kPiece = size_t{64} << 20, kRead = size_t{16} << 20;
  std::vector<Piece> pieces;
  std::vector<int> fds;
  for (size_t i = 0; i < files.size(); ++i) {
    const int fd = ::open(files[i].c_str(), O_RDONLY);
    if (fd < 0) Die("open " + files[i]);
    struct stat st;
    ::fstat(fd, &st);
    fds.push_back(fd);
    for (size_t off = 0; off < static_cast<size_t>(st.st_size); off += kPiece) {
      pieces.push_back({static_cast<int>(i), off, std::min(kPiece, static_cast<size_t>(st.st_size) - off)});
    }
  }
  std::atomic<size_t> next{0}, total{0};
  auto worker = [&] {
    std::vector<uint8_t> buf(kRead);
    for (size_t i; (i = next++) < pieces.size();) {
      const Piece& p = pieces[i];
      for (size_t done = 0; done < p.len;) {
        const ssize_t r = ::pread(fds[p.file], buf.data(), std::min(kRead, p.len - done), p.off + done);
        if (r <= 0) Die("pread");
        done += static_cast<size_t>(r);
        total += static_cast<size_t>(r);
      }
    }
  };
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) pool.emplace_back(worker);
  for (auto& t : pool) t.join();
  for (int fd : fds) ::close(fd);
  return total;
}

double PinnedH2D() {
  const size_t bytes = size_t{1} << 30;
  void *h = nullptr, *d = nullptr;
  if (cudaMallocHost(&h, bytes) != cudaSuccess || cudaMalloc(&d, bytes) != cudaSuccess) return 0;
  std::memset(h, 1, bytes);
  cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice);
  const auto t0 = Clock::now();
  for (int i = 0; i < 4; ++i) cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice);
  const double gbs = 4.0 * bytes / 1e9 / Seconds(t0, Clock::now());
  cudaFreeHost(h);
  cudaFree(d);
  return gbs;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = "/tmp/r1-load";
  int layers = 4, read_threads = 8;
  bool keep = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--dir" && i + 1 < argc) dir = argv[++i];
    else if (a == "--layers" && i + 1 < argc) layers = std::atoi(argv[++i]);
    else if (a == "--read-threads" && i + 1 < argc) read_threads = std::atoi(argv[++i]);
    else if (a == "--keep") keep = true;
    else {
      std::fprintf(stderr, "usage: %s [--dir D] [--layers N] [--read-threads T] [--keep]\n", argv[0]);
      return 2;
    }
  }
  if (layers < 1 || read_threads < 1) return 2;
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

  auto t0 = Clock::now();
  const Written w = WriteCheckpoint(dir, layers, cores);
  std::printf("wrote %zu shard(s), %.2f GB of tensors, %d layers (%d MoE), in %.1f s\n", w.files.size(),
              w.data_bytes / 1e9, layers, std::max(0, layers - 3), Seconds(t0, Clock::now()));

  // May this process drop the whole page cache? (root on a VM: usually; in a container: no.)
  const bool drop_caches = static_cast<bool>(std::ofstream("/proc/sys/vm/drop_caches") << "1\n");
  std::printf("page cache eviction: fdatasync + POSIX_FADV_DONTNEED per file%s\n",
              drop_caches ? ", and /proc/sys/vm/drop_caches" : " (drop_caches not writable here)");

  double resident = Evict(w.files, drop_caches);
  t0 = Clock::now();
  size_t n = ReadFiles(w.files, 1);
  const double disk1 = n / 1e9 / Seconds(t0, Clock::now());
  std::printf("disk read, 1 thread, 16 MB reads: %.2f GB/s (%.1f%% resident before)\n", disk1, 100 * resident);
  resident = Evict(w.files, drop_caches);
  t0 = Clock::now();
  n = ReadFiles(w.files, read_threads);
  const double diskn = n / 1e9 / Seconds(t0, Clock::now());
  std::printf("disk read, %d threads: %.2f GB/s (%.1f%% resident before)\n", read_threads, diskn, 100 * resident);
  const double disk = std::max(disk1, diskn);

  r1::GpuModelOptions options;
  options.max_step_tokens = 16;
  resident = Evict(w.files, drop_caches);
  t0 = Clock::now();
  {
    auto model = r1::GpuDeepseekV3Model::Load(dir, options);
    if (!model.ok()) {
      std::fprintf(stderr, "error: %s\n", std::string(model.status().message()).c_str());
      return 1;
    }
    const double s = Seconds(t0, Clock::now());
    std::printf("load (cold): %.2f GB in %.2f s = %.2f GB/s, %.0f%% of the disk's %.2f GB/s (%.1f%% resident before); "
                "%.2f GB on the device\n",
                w.data_bytes / 1e9, s, w.data_bytes / 1e9 / s, 100 * w.data_bytes / 1e9 / s / disk, disk,
                100 * resident, (*model)->device_weight_bytes() / 1e9);
  }
  ReadFiles(w.files, read_threads);  // all in the page cache now
  t0 = Clock::now();
  {
    auto model = r1::GpuDeepseekV3Model::Load(dir, options);
    if (!model.ok()) return 1;
    const double s = Seconds(t0, Clock::now());
    std::printf("load (warm, files in the page cache): %.2f GB/s\n", w.data_bytes / 1e9 / s);
  }
  std::printf("pinned host-to-device copy: %.2f GB/s\n", PinnedH2D());
  if (!keep) std::filesystem::remove_all(dir);
  return 0;
}

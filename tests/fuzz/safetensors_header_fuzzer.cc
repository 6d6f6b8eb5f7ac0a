// Fuzz target: one .safetensors file (8-byte header length, JSON header, tensor data) through
// SafetensorsFile::Open (common/safetensors.h), the reader every worker runs on checkpoint files.
//
// The input is the whole file. It is written to a memfd and opened through /proc/self/fd, so the
// real path runs: mmap, header length checks, JSON parsing, dtype/shape/offset validation.
// Oracle, when the file is accepted: every tensor view points into the file's data section (after
// the header), holds exactly dtype size x numel bytes, shows the file's own bytes, and no two
// tensors overlap. ASan cannot see reads past an mmapped file, hence the explicit bounds checks;
// inputs are kept within one page so that the mapping's start is the page of any view.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/safetensors.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

constexpr size_t kPage = 4096;

int MemFd() {
  static const int fd = [] {
    const int made = ::memfd_create("r1-fuzz-safetensors", MFD_CLOEXEC);
    R1_FUZZ_REQUIRE(made >= 0, "memfd_create failed");
    return made;
  }();
  return fd;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > kPage) return 0;  // see above; run with -max_len=4096
  const int fd = MemFd();
  R1_FUZZ_REQUIRE(::ftruncate(fd, 0) == 0, "ftruncate");
  size_t written = 0;
  while (written < size) {
    const ssize_t n = ::pwrite(fd, data + written, size - written, static_cast<off_t>(written));
    R1_FUZZ_REQUIRE(n > 0, "pwrite");
    written += static_cast<size_t>(n);
  }
  static const std::string path = absl::StrCat("/proc/self/fd/", fd);
  auto file = r1::SafetensorsFile::Open(path);
  if (!file.ok()) {
    R1_FUZZ_REQUIRE(!file.status().message().empty(), "an error without a message");
    return 0;
  }
  R1_FUZZ_REQUIRE(size >= 8, "a file of ", size, " bytes was accepted");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data[i];
  R1_FUZZ_REQUIRE(header_len <= size - 8, "header length ", header_len, " in a ", size,
                  "-byte file was accepted");
  R1_FUZZ_REQUIRE((*file)->data_bytes() == size - 8 - header_len, "data_bytes ",
                  (*file)->data_bytes(), ", expected ", size - 8 - header_len);
  std::vector<std::pair<size_t, size_t>> spans;  // [begin, end) as file offsets
  for (const auto& [name, view] : (*file)->tensors()) {
    R1_FUZZ_REQUIRE(name == view.name, "tensor ", name, " is named ", view.name);
    R1_FUZZ_REQUIRE(name != "__metadata__", "__metadata__ was read as a tensor");
    R1_FUZZ_REQUIRE(view.file == path, "tensor ", name, " names file ", view.file);
    uint64_t numel = 1;
    for (int64_t d : view.shape) {
      R1_FUZZ_REQUIRE(d >= 0, "tensor ", name, ": negative dim");
      numel *= static_cast<uint64_t>(d);
    }
    R1_FUZZ_REQUIRE(view.nbytes == numel * r1::DTypeSize(view.dtype), "tensor ", name, ": ",
                    view.nbytes, " bytes for ", view.ShapeString());
    R1_FUZZ_REQUIRE(view.numel() == static_cast<int64_t>(numel), "tensor ", name, ": numel");
    if (view.nbytes == 0) continue;
    const auto address = reinterpret_cast<uintptr_t>(view.data);
    const size_t offset = address % kPage;  // the whole file lies in the mapping's first page
    R1_FUZZ_REQUIRE(offset >= 8 + header_len && offset + view.nbytes <= size, "tensor ", name,
                    " at file bytes [", offset, ", ", offset + view.nbytes, ") of ", size,
                    " with a ", header_len, "-byte header");
    R1_FUZZ_REQUIRE(std::memcmp(view.data, data + offset, view.nbytes) == 0, "tensor ", name,
                    " does not show the file's bytes");
    spans.emplace_back(offset, offset + view.nbytes);
  }
  std::sort(spans.begin(), spans.end());
  for (size_t i = 1; i < spans.size(); ++i) {
    R1_FUZZ_REQUIRE(spans[i].first >= spans[i - 1].second, "tensors overlap at file byte ",
                    spans[i].first);
  }
  return 0;
}

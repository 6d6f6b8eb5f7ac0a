#include "worker/kv_cache.h"

#include "absl/strings/str_cat.h"

namespace r1 {

absl::StatusOr<PagedKvCache> PagedKvCache::Create(int64_t num_blocks, int64_t block_size, int64_t layers,
                                                  int64_t latent_dim) {
  if (num_blocks <= 0 || block_size <= 0 || layers <= 0 || latent_dim <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("kv cache: bad geometry: ", num_blocks, " blocks of ",
                                                   block_size, " tokens, ", layers, " layers, latent ", latent_dim));
  }
  const double bytes = 4.0 * static_cast<double>(num_blocks) * block_size * layers * latent_dim;
  if (bytes > 64.0 * (1ull << 30)) {
    return absl::ResourceExhaustedError(absl::StrCat("kv cache: ", bytes / (1 << 30), " GiB requested; the CPU cache is limited to 64 GiB"));
  }
  PagedKvCache c;
  c.num_blocks_ = num_blocks;
  c.block_size_ = block_size;
  c.layers_ = layers;
  c.latent_dim_ = latent_dim;
  c.data_.assign(static_cast<size_t>(num_blocks * block_size * layers * latent_dim), 0.0f);
  return c;
}

BlockAllocator::BlockAllocator(int64_t num_blocks) : num_blocks_(num_blocks), in_use_(num_blocks, false) {
  free_.reserve(num_blocks);
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

absl::StatusOr<std::vector<int32_t>> BlockAllocator::Allocate(int64_t count) {
  if (count < 0 || count > num_free()) {
    return absl::ResourceExhaustedError(
        absl::StrCat("kv cache: ", count, " blocks requested, ", num_free(), " of ", num_blocks_, " free"));
  }
  std::vector<int32_t> out(free_.end() - count, free_.end());
  free_.resize(free_.size() - count);
  for (int32_t b : out) in_use_[b] = true;
  return out;
}

void BlockAllocator::Free(const std::vector<int32_t>& blocks) {
  for (int32_t b : blocks) {
    if (b >= 0 && b < num_blocks_ && in_use_[b]) {  // double frees are ignored, never corrupting
      in_use_[b] = false;
      free_.push_back(b);
    }
  }
}

}  // namespace r1

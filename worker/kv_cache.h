// The paged latent KV cache of MLA. Per token per layer it holds the compressed latent: the
// normalised kv_lora_rank values and the rotated qk_rope_head_dim key (576 floats for R1), in
// fixed-size blocks. A sequence owns a block table: position p lives in block
// table[p / block_size], slot p % block_size. The coordinator decides which blocks a sequence
// gets; BlockAllocator is the bookkeeping it (and the single-process mode) uses.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"

namespace r1 {

class PagedKvCache {
 public:
  // num_blocks blocks of block_size tokens, for `layers` layers of `latent_dim` floats.
  static absl::StatusOr<PagedKvCache> Create(int64_t num_blocks, int64_t block_size, int64_t layers,
                                             int64_t latent_dim);

  // The latent of (block, layer, slot): latent_dim floats, contiguous.
  float* At(int64_t block, int64_t layer, int64_t slot) {
    return data_.data() + ((block * layers_ + layer) * block_size_ + slot) * latent_dim_;
  }
  const float* At(int64_t block, int64_t layer, int64_t slot) const {
    return data_.data() + ((block * layers_ + layer) * block_size_ + slot) * latent_dim_;
  }

  int64_t num_blocks() const { return num_blocks_; }
  int64_t block_size() const { return block_size_; }
  int64_t latent_dim() const { return latent_dim_; }
  int64_t layers() const { return layers_; }
  size_t bytes() const { return data_.size() * sizeof(float); }

 private:
  int64_t num_blocks_ = 0, block_size_ = 0, layers_ = 0, latent_dim_ = 0;
  std::vector<float> data_;
};

// A free list of block ids.
class BlockAllocator {
 public:
  explicit BlockAllocator(int64_t num_blocks);
  // `count` blocks, or RESOURCE_EXHAUSTED leaving nothing allocated.
  absl::StatusOr<std::vector<int32_t>> Allocate(int64_t count);
  void Free(const std::vector<int32_t>& blocks);
  int64_t num_free() const { return static_cast<int64_t>(free_.size()); }
  int64_t num_blocks() const { return num_blocks_; }

 private:
  int64_t num_blocks_;
  std::vector<int32_t> free_;
  std::vector<bool> in_use_;
};

}  // namespace r1

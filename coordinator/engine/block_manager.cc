#include "coordinator/engine/block_manager.h"

#include <algorithm>

namespace r1 {
namespace {

// splitmix64's finaliser: a cheap, well-mixed 64-bit step.
uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

BlockManager::BlockManager(int64_t num_blocks, int64_t block_size)
    : block_size_(block_size), allocator_(num_blocks), info_(num_blocks) {}

uint64_t BlockManager::HashBlock(uint64_t parent_hash, absl::Span<const int32_t> tokens) {
  uint64_t h = Mix(parent_hash);
  for (int32_t t : tokens) h = Mix(h ^ static_cast<uint32_t>(t));
  return h;
}

void BlockManager::Evict(int64_t count) {
  for (int64_t i = 0; i < count && !evictable_.empty(); ++i) {
    const int32_t b = evictable_.front();
    evictable_.pop_front();
    BlockInfo& bi = info_[b];
    by_hash_.erase(*bi.hash);
    bi.hash.reset();
    bi.tokens.clear();
    allocator_.Free({b});
  }
}

void BlockManager::ForgetContents() {
  Evict(num_cached());
  for (const auto& [hash, block] : by_hash_) {
    info_[block].hash.reset();
    info_[block].tokens.clear();
  }
  by_hash_.clear();
}

absl::StatusOr<std::vector<int32_t>> BlockManager::Allocate(int64_t count) {
  if (count > num_available()) return allocator_.Allocate(count);  // the allocator's own error
  if (count > allocator_.num_free()) Evict(count - allocator_.num_free());
  auto blocks = allocator_.Allocate(count);
  if (blocks.ok()) {
    for (int32_t b : *blocks) info_[b].refs = 1;
  }
  return blocks;
}

void BlockManager::Release(const std::vector<int32_t>& blocks) {
  for (auto it = blocks.rbegin(); it != blocks.rend(); ++it) {
    BlockInfo& bi = info_[*it];
    if (bi.refs <= 0) continue;  // never corrupt the counts on a double release
    if (--bi.refs > 0) continue;
    if (bi.hash) {
      bi.lru = evictable_.insert(evictable_.end(), *it);
    } else {
      allocator_.Free({*it});
    }
  }
}

std::vector<int32_t> BlockManager::TakeCachedPrefix(absl::Span<const int32_t> tokens,
                                                    int64_t max_blocks,
                                                    std::vector<uint64_t>* hashes) {
  std::vector<int32_t> taken;
  uint64_t parent = kRootHash;
  const int64_t full =
      std::min<int64_t>(max_blocks, static_cast<int64_t>(tokens.size()) / block_size_);
  for (int64_t i = 0; i < full; ++i) {
    const absl::Span<const int32_t> chunk = tokens.subspan(i * block_size_, block_size_);
    const uint64_t h = HashBlock(parent, chunk);
    auto it = by_hash_.find(h);
    if (it == by_hash_.end()) break;
    BlockInfo& bi = info_[it->second];
    // A hash collision must never hand out someone else's cache: the contents must match too.
    if (bi.parent_hash != parent ||
        !std::equal(chunk.begin(), chunk.end(), bi.tokens.begin(), bi.tokens.end()))
      break;
    if (bi.refs++ == 0) evictable_.erase(bi.lru);
    taken.push_back(it->second);
    hashes->push_back(h);
    parent = h;
  }
  return taken;
}

void BlockManager::Register(int32_t block, uint64_t hash, uint64_t parent_hash,
                            absl::Span<const int32_t> tokens) {
  BlockInfo& bi = info_[block];
  if (bi.hash || by_hash_.contains(hash)) return;
  bi.hash = hash;
  bi.parent_hash = parent_hash;
  bi.tokens.assign(tokens.begin(), tokens.end());
  by_hash_[hash] = block;
}

}  // namespace r1

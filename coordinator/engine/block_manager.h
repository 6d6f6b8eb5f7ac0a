// KV-block accounting for the scheduler, with prefix reuse. Blocks are reference counted: a full
// block whose tokens are all computed gets a content hash, hash(parent block's hash, its
// tokens), and is registered so that another sequence whose prompt starts with the same tokens
// takes the block instead of recomputing it. When its last user lets go, a registered block is
// kept as "cached" (evictable, least recently released first) until its space is needed; an
// unregistered block goes straight back to the free list (BlockAllocator).
//
// Only full blocks are ever shared, and a full block is never written again, so sharing needs no
// copy-on-write. Not thread-safe: the engine calls it under its own lock.
#pragma once

#include <cstdint>
#include <list>
#include <optional>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/kv_cache.h"

namespace r1 {

class BlockManager {
 public:
  BlockManager(int64_t num_blocks, int64_t block_size);

  // The chained hash of one full block.
  static uint64_t HashBlock(uint64_t parent_hash, absl::Span<const int32_t> tokens);
  static constexpr uint64_t kRootHash = 0x9e3779b97f4a7c15ull;

  // `count` fresh blocks (reference count 1), evicting cached blocks if the free list is short;
  // RESOURCE_EXHAUSTED leaving nothing taken when even that is not enough.
  absl::StatusOr<std::vector<int32_t>> Allocate(int64_t count);
  // Drops one reference to each block (in reverse order, so a sequence's tail is evicted before
  // its prefix).
  void Release(const std::vector<int32_t>& blocks);

  // The longest run of registered blocks matching the full blocks of `tokens` (at most
  // `max_blocks`), each taken with one more reference; `hashes` receives their hashes.
  std::vector<int32_t> TakeCachedPrefix(absl::Span<const int32_t> tokens, int64_t max_blocks,
                                        std::vector<uint64_t>* hashes);
  // Registers `block` (now full and computed) under `hash` with its `tokens`, unless that hash is
  // already registered (then the block stays private and is freed normally).
  void Register(int32_t block, uint64_t hash, uint64_t parent_hash,
                absl::Span<const int32_t> tokens);

  // Forgets every registered prefix (the cache's contents are gone): cached blocks are freed, and
  // blocks in use stay with their users but will be freed, not cached, when released.
  void ForgetContents();

  int64_t num_blocks() const { return allocator_.num_blocks(); }
  int64_t block_size() const { return block_size_; }
  // Blocks with at least one user.
  int64_t num_used() const {
    return num_blocks() - allocator_.num_free() - static_cast<int64_t>(evictable_.size());
  }
  // Blocks with no user that still hold a registered prefix.
  int64_t num_cached() const { return static_cast<int64_t>(evictable_.size()); }
  // Blocks an Allocate could hand out now.
  int64_t num_available() const {
    return allocator_.num_free() + static_cast<int64_t>(evictable_.size());
  }

 private:
  struct BlockInfo {
    int32_t refs = 0;
    std::optional<uint64_t> hash;  // set while registered
    uint64_t parent_hash = 0;
    std::vector<int32_t> tokens;       // the registered contents, checked on every hit
    std::list<int32_t>::iterator lru;  // valid while evictable
  };
  void Evict(int64_t count);

  int64_t block_size_;
  BlockAllocator allocator_;
  std::vector<BlockInfo> info_;
  absl::flat_hash_map<uint64_t, int32_t> by_hash_;
  std::list<int32_t> evictable_;  // released registered blocks, oldest release first
};

}  // namespace r1

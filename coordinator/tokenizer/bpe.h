// Byte-level BPE with ranked merges, as Hugging Face's tokenizers runs it: the word starts as one
// symbol per byte, and the adjacent pair with the lowest merge rank is merged (the leftmost one
// among equals) until no pair has a merge. A binary heap of candidate merges with lazy deletion
// makes one word O(n log n), so a 100 KB run of one letter stays near linear time. Stale heap
// entries are recognised exactly as HF does (the pair at that position no longer merges into the
// same token), so even the odd vocabulary where two pairs merge into one token gives HF's ids.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace r1 {

class BpeModel {
 public:
  struct Merge {
    int32_t rank;    // position in the merges list; lower merges first
    int32_t result;  // the id of the merged token
  };

  // `byte_tokens[b]`: the id of the token of the single byte b (byte-level BPE has all 256).
  // `merges`: (left id, right id, merged id) in rank order.
  static absl::StatusOr<BpeModel> Create(const std::vector<int32_t>& byte_tokens,
                                         const std::vector<std::array<int32_t, 3>>& merges);

  // Appends the ids of `word` (raw bytes, not byte-level characters) to `ids`.
  void Encode(absl::string_view word, std::vector<int32_t>* ids) const;

 private:
  static uint64_t PairKey(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  const Merge* FindMerge(int32_t left, int32_t right) const {
    auto it = merges_.find(PairKey(left, right));
    return it == merges_.end() ? nullptr : &it->second;
  }

  int32_t byte_tokens_[256] = {};
  absl::flat_hash_map<uint64_t, Merge> merges_;
};

}  // namespace r1

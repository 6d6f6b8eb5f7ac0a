#include "coordinator/tokenizer/bpe.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace r1 {
namespace {

struct Symbol {
  int32_t id;
  int32_t prev;  // index of the previous live symbol, -1 at the start
  int32_t next;  // index of the next live symbol, -1 at the end
  bool live;
};

struct Candidate {
  int32_t rank;
  int32_t pos;     // index of the left symbol
  int32_t result;  // the merged id expected when the entry was pushed
};

// std heap functions build a max-heap; "greater" puts the lowest (rank, pos) on top.
struct LaterFirst {
  bool operator()(const Candidate& a, const Candidate& b) const {
    return a.rank != b.rank ? a.rank > b.rank : a.pos > b.pos;
  }
};

struct BpeScratch {
  std::vector<Symbol> symbols;
  std::vector<Candidate> heap;
};

}  // namespace

absl::StatusOr<BpeModel> BpeModel::Create(const std::vector<int32_t>& byte_tokens,
                                          const std::vector<std::array<int32_t, 3>>& merges) {
  if (byte_tokens.size() != 256) return absl::InvalidArgumentError("BPE: need 256 byte tokens");
  BpeModel model;
  for (int b = 0; b < 256; ++b) {
    if (byte_tokens[b] < 0) {
      return absl::InvalidArgumentError(absl::StrCat("BPE: no token for byte ", b));
    }
    model.byte_tokens_[b] = byte_tokens[b];
  }
  model.merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& m = merges[rank];
    // A repeated pair keeps its first (lowest) rank in HF; emplace does the same.
    model.merges_.emplace(PairKey(m[0], m[1]), Merge{static_cast<int32_t>(rank), m[2]});
  }
  return model;
}

void BpeModel::Encode(absl::string_view word, std::vector<int32_t>* ids) const {
  const int32_t n = static_cast<int32_t>(word.size());
  if (n == 0) return;
  if (n == 1) {
    ids->push_back(byte_tokens_[static_cast<unsigned char>(word[0])]);
    return;
  }
  thread_local BpeScratch scratch;
  auto& sym = scratch.symbols;
  auto& heap = scratch.heap;
  sym.resize(n);
  heap.clear();
  for (int32_t i = 0; i < n; ++i) {
    sym[i] = Symbol{byte_tokens_[static_cast<unsigned char>(word[i])], i - 1,
                    i + 1 < n ? i + 1 : -1, true};
  }
  for (int32_t i = 0; i + 1 < n; ++i) {
    if (const Merge* m = FindMerge(sym[i].id, sym[i + 1].id))
      heap.push_back({m->rank, i, m->result});
  }
  std::make_heap(heap.begin(), heap.end(), LaterFirst());
  auto push = [&](const Candidate& c) {
    heap.push_back(c);
    std::push_heap(heap.begin(), heap.end(), LaterFirst());
  };
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), LaterFirst());
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = sym[top.pos];
    if (!left.live || left.next < 0) continue;
    const int32_t right_pos = left.next;
    const Merge* m = FindMerge(left.id, sym[right_pos].id);
    if (m == nullptr || m->result != top.result) continue;  // stale entry
    left.id = top.result;
    Symbol& right = sym[right_pos];
    right.live = false;
    left.next = right.next;
    if (right.next >= 0) sym[right.next].prev = top.pos;
    if (left.prev >= 0) {
      if (const Merge* pm = FindMerge(sym[left.prev].id, left.id)) {
        push({pm->rank, left.prev, pm->result});
      }
    }
    if (left.next >= 0) {
      if (const Merge* nm = FindMerge(left.id, sym[left.next].id))
        push({nm->rank, top.pos, nm->result});
    }
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) ids->push_back(sym[i].id);
}

}  // namespace r1

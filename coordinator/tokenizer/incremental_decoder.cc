#include "coordinator/tokenizer/incremental_decoder.h"

#include "coordinator/tokenizer/utf8.h"

namespace r1 {

std::string IncrementalDecoder::Push(int32_t id) {
  std::string out;
  if (skip_special_ && tokenizer_.IsSpecial(id)) return out;
  const absl::string_view bytes = tokenizer_.TokenBytes(id);
  if (bytes.empty()) return out;
  if (pending_.empty()) {
    const size_t used = AppendUtf8Lossy(bytes, /*final=*/false, &out);
    pending_.assign(bytes.data() + used, bytes.size() - used);
    return out;
  }
  pending_.append(bytes.data(), bytes.size());
  const size_t used = AppendUtf8Lossy(pending_, /*final=*/false, &out);
  pending_.erase(0, used);
  return out;
}

std::string IncrementalDecoder::Finish() {
  std::string out;
  AppendUtf8Lossy(pending_, /*final=*/true, &out);
  pending_.clear();
  return out;
}

}  // namespace r1

// Streaming detokenization: text comes out as ids arrive, never half a UTF-8 character. Bytes that
// could still become a character wait for the next token; bytes that never can become U+FFFD,
// exactly as Decode would write them, so the pieces concatenated equal Decode(all ids).
#pragma once

#include <cstdint>
#include <string>

#include "coordinator/tokenizer/tokenizer.h"

namespace r1 {

class IncrementalDecoder {
 public:
  // `tokenizer` must outlive the decoder.
  explicit IncrementalDecoder(const Tokenizer& tokenizer, bool skip_special = false)
      : tokenizer_(tokenizer), skip_special_(skip_special) {}

  // The text that token `id` completes (often all of it, sometimes nothing yet).
  std::string Push(int32_t id);
  // The end of the stream: whatever is still held back, repaired.
  std::string Finish();

 private:
  const Tokenizer& tokenizer_;
  bool skip_special_;
  std::string pending_;  // at most 3 bytes: the start of a character not yet complete
};

}  // namespace r1

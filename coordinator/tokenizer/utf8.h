// UTF-8 repair for detokenized bytes: byte-level BPE tokens can end in the middle of a character,
// and a model can emit byte sequences that are not UTF-8 at all. Invalid input is replaced the way
// Rust's String::from_utf8_lossy (and so Hugging Face's decoder) does it: one U+FFFD for each
// maximal prefix of a valid sequence, and for each byte that cannot start one.
#pragma once

#include <cstddef>
#include <string>

#include "absl/strings/string_view.h"

namespace r1 {

// Appends `bytes` to `out` with invalid UTF-8 replaced. With `final` false, an incomplete but so
// far valid sequence at the very end is left alone (a later chunk may complete it). Returns the
// number of bytes consumed: bytes.size(), less any such held-back tail.
size_t AppendUtf8Lossy(absl::string_view bytes, bool final, std::string* out);

}  // namespace r1

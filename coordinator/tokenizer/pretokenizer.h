// DeepSeek-V3's pre-tokenizer: the three Split rules of its tokenizer.json, applied in order, each
// to every piece the previous one produced, then ByteLevel (which only maps bytes and is folded
// into the BPE vocabulary here). The rules, as Oniguruma reads them:
//   1. \p{N}{1,3}                       digit runs, cut into pieces of at most three
//   2. [一-龥぀-ゟ゠-ヿ]+                 runs of CJK ideographs and kana
//   3. [!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+   ASCII punctuation + ASCII word
//      | [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+            a word with one optional lead char
//      | ?[\p{P}\p{S}]+[\r\n]*                          punctuation (after an optional space)
//      | \s*[\r\n]+                                      whitespace up to the last line break
//      | \s+(?!\S)                                       whitespace but the last char before text
//      | \s+                                             a lone whitespace char
// Every rule is "Isolated": a match is a piece, and so is each run of text between matches.
// The matcher below is hand-written over a class table (no regex engine): one pass per rule,
// linear in the input, no allocation once the scratch buffers have grown.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/strings/string_view.h"

namespace r1 {

// Reusable buffers, so that a steady stream of Split calls allocates nothing.
struct PreTokenScratch {
  std::vector<uint16_t> classes;  // per code point: CodePointClass bits + the local bits below
  std::vector<uint32_t> offsets;  // byte offset of each code point; one extra at the end
};

// Splits `text` (which holds no added tokens) into pre-tokens and appends the byte offset at which
// each one ends to `piece_ends` (so piece k is [piece_ends[k-1], piece_ends[k]) with an implicit
// 0 before the first). Bytes that are not valid UTF-8 count as one code point each of no class.
void SplitPreTokens(absl::string_view text, PreTokenScratch* scratch,
                    std::vector<uint32_t>* piece_ends);

// Decodes one UTF-8 sequence at `p` (with `end` the end of input). Returns its length (1..4) and
// sets *cp; an invalid or truncated sequence returns 1 and sets *cp to 0xFFFFFFFF.
inline int DecodeUtf8(const unsigned char* p, const unsigned char* end, uint32_t* cp) {
  const unsigned char b0 = p[0];
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  *cp = 0xFFFFFFFF;
  const ptrdiff_t left = end - p;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    if (left >= 2 && (p[1] & 0xC0) == 0x80) {
      *cp = ((b0 & 0x1Fu) << 6) | (p[1] & 0x3Fu);
      return 2;
    }
    return 1;
  }
  if (b0 >= 0xE0 && b0 <= 0xEF) {
    if (left < 3) return 1;
    const unsigned char lo = b0 == 0xE0 ? 0xA0 : 0x80, hi = b0 == 0xED ? 0x9F : 0xBF;
    if (p[1] < lo || p[1] > hi || (p[2] & 0xC0) != 0x80) return 1;
    *cp = ((b0 & 0x0Fu) << 12) | ((p[1] & 0x3Fu) << 6) | (p[2] & 0x3Fu);
    return 3;
  }
  if (b0 >= 0xF0 && b0 <= 0xF4) {
    if (left < 4) return 1;
    const unsigned char lo = b0 == 0xF0 ? 0x90 : 0x80, hi = b0 == 0xF4 ? 0x8F : 0xBF;
    if (p[1] < lo || p[1] > hi || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return 1;
    *cp = ((b0 & 0x07u) << 18) | ((p[1] & 0x3Fu) << 12) | ((p[2] & 0x3Fu) << 6) | (p[3] & 0x3Fu);
    return 4;
  }
  return 1;
}

}  // namespace r1

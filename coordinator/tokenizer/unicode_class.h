// Per-code-point classes for DeepSeek's pre-tokenizer regexes, from ICU's general categories.
// The classes follow Oniguruma's reading of the patterns in tokenizer.json (Hugging Face's
// tokenizers compiles them with Oniguruma): \p{L} = L*, \p{M} = M*, \p{N} = N*, \p{P} = P*,
// \p{S} = S*, and \s = U+0009..U+000D, U+0085 and the categories Zs, Zl, Zp.
#pragma once

#include <cstdint>

namespace r1 {

enum CodePointClass : uint8_t {
  kClassLetter = 1 << 0,     // \p{L}
  kClassMark = 1 << 1,       // \p{M}
  kClassNumber = 1 << 2,     // \p{N}
  kClassPunct = 1 << 3,      // \p{P}
  kClassSymbol = 1 << 4,     // \p{S}
  kClassSpace = 1 << 5,      // \s
  kClassLineBreak = 1 << 6,  // [\r\n]
  kClassCjk = 1 << 7,        // [一-龥぀-ゟ゠-ヿ]: U+4E00..U+9FA5, U+3040..U+30FF
};

// The classes of `cp` (a bitwise OR of CodePointClass); 0 for code points above U+10FFFF.
// The table (1.1 MB) is built from ICU on first use; later calls are one load.
uint8_t ClassOf(uint32_t cp);

// The whole table, indexed by code point (0..0x10FFFF); built on first call.
const uint8_t* CodePointClassTable();

}  // namespace r1

// Shared by the fuzz targets of this folder: the oracle check that turns a broken invariant into a
// crash (so libFuzzer keeps the input), where the tokenizer folders are, a scratch directory for
// the targets whose parser reads files, and a UTF-8 check.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace r1::fuzz {

// Prints what failed and aborts: libFuzzer reports a crash and writes the input out.
[[noreturn]] void Fail(const char* condition, const char* file, int line, const std::string& what);

// The folder that tests/tokenizer/prepare.js writes (with r1/ and v3/ in it): $R1_FUZZ_MODEL_DIR,
// else the build tree's tests/tokenizer/reference. A missing folder aborts with the fix.
std::string ReferenceDir();
// ReferenceDir()/name, checked to hold a tokenizer.json.
std::string ModelDir(absl::string_view name);

// A private directory for this process (made once, under $TMPDIR or /tmp), removed at exit.
const std::string& ScratchDir();

// True when `text` is well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF).
// Written here on its own rather than taken from the code under test, so that it can judge it.
bool IsValidUtf8(absl::string_view text);

}  // namespace r1::fuzz

// R1_FUZZ_REQUIRE(condition, message parts…): the message (absl::StrCat of the parts) is only
// built when the check fails, so checks cost nothing on the fuzzer's hot path.
#define R1_FUZZ_REQUIRE(condition, ...)                                              \
  do {                                                                               \
    if (!(condition)) {                                                              \
      ::r1::fuzz::Fail(#condition, __FILE__, __LINE__, ::absl::StrCat(__VA_ARGS__)); \
    }                                                                                \
  } while (0)

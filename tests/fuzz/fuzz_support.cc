#include "tests/fuzz/fuzz_support.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <system_error>

namespace r1::fuzz {

void Fail(const char* condition, const char* file, int line, const std::string& what) {
  std::fprintf(stderr, "\n%s:%d: fuzz check failed: %s\n  %s\n", file, line, condition,
               what.c_str());
  std::fflush(stderr);
  std::abort();
}

std::string ReferenceDir() {
  const char* env = std::getenv("R1_FUZZ_MODEL_DIR");
  const std::string dir = env != nullptr && *env != '\0' ? env : R1_FUZZ_DEFAULT_MODEL_DIR;
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) {
    std::fprintf(stderr,
                 "%s: no tokenizer reference folder; make it with: node tests/tokenizer/prepare.js "
                 "%s (or point R1_FUZZ_MODEL_DIR at one)\n",
                 dir.c_str(), dir.c_str());
    std::exit(2);
  }
  return dir;
}

std::string ModelDir(absl::string_view name) {
  const std::string dir = absl::StrCat(ReferenceDir(), "/", name);
  std::error_code ec;
  if (!std::filesystem::exists(dir + "/tokenizer.json", ec)) {
    std::fprintf(stderr, "%s/tokenizer.json is missing (re-run tests/tokenizer/prepare.js)\n",
                 dir.c_str());
    std::exit(2);
  }
  return dir;
}

const std::string& ScratchDir() {
  static const std::string* dir = [] {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern =
        absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/r1-fuzz-XXXXXX");
    if (::mkdtemp(pattern.data()) == nullptr) {
      std::perror("mkdtemp");
      std::exit(2);
    }
    auto* made = new std::string(pattern);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(ScratchDir(), ec);
    });
    return made;
  }();
  return *dir;
}

bool IsValidUtf8(absl::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len = 0;
    uint32_t cp = 0;
    if ((c & 0xE0) == 0xC0) {
      len = 2;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      len = 3;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > n) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    static constexpr uint32_t kMinForLength[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMinForLength[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

}  // namespace r1::fuzz

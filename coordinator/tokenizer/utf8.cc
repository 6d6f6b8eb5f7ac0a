#include "coordinator/tokenizer/utf8.h"

namespace r1 {
namespace {

constexpr char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD

// The valid range of the second byte of a sequence led by b0 (Unicode Table 3-7); the later
// continuation bytes are always 0x80..0xBF. Returns the sequence length, 0 for a bad lead byte.
int Expect(unsigned char b0, unsigned char* lo, unsigned char* hi) {
  *lo = 0x80;
  *hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) return 2;
  if (b0 == 0xE0) *lo = 0xA0;
  if (b0 == 0xED) *hi = 0x9F;
  if (b0 >= 0xE0 && b0 <= 0xEF) return 3;
  if (b0 == 0xF0) *lo = 0x90;
  if (b0 == 0xF4) *hi = 0x8F;
  if (b0 >= 0xF0 && b0 <= 0xF4) return 4;
  return 0;
}

}  // namespace

size_t AppendUtf8Lossy(absl::string_view bytes, bool final, std::string* out) {
  const auto* s = reinterpret_cast<const unsigned char*>(bytes.data());
  const size_t n = bytes.size();
  size_t i = 0, clean_from = 0;  // [clean_from, i) is valid and not yet copied
  while (i < n) {
    if (s[i] < 0x80) {
      ++i;
      continue;
    }
    unsigned char lo, hi;
    const int len = Expect(s[i], &lo, &hi);
    size_t k = 1;  // bytes of this sequence that are valid so far
    if (len > 0) {
      while (k < static_cast<size_t>(len) && i + k < n) {
        const unsigned char b = s[i + k];
        if (k == 1 ? (b < lo || b > hi) : (b & 0xC0) != 0x80) break;
        ++k;
      }
      if (k == static_cast<size_t>(len)) {
        i += k;
        continue;
      }
      if (i + k == n && !final) {  // a valid prefix cut off by the end of the chunk
        out->append(bytes.data() + clean_from, i - clean_from);
        return i;
      }
    }
    out->append(bytes.data() + clean_from, i - clean_from);
    out->append(kReplacement);
    i += k;
    clean_from = i;
  }
  out->append(bytes.data() + clean_from, n - clean_from);
  return n;
}

}  // namespace r1

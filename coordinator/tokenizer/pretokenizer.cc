#include "coordinator/tokenizer/pretokenizer.h"

#include "coordinator/tokenizer/unicode_class.h"

namespace r1 {
namespace {

// Bits above the CodePointClass byte, for the ASCII-only parts of rule 3.
constexpr uint16_t kAsciiPunct = 1 << 8;  // one of !"#$%&'()*+,-./:;<=>?@[\]^_`{|}~
constexpr uint16_t kAsciiAlpha = 1 << 9;  // [A-Za-z]
constexpr uint16_t kSpace20 = 1 << 10;    // U+0020 only

constexpr uint16_t kL = kClassLetter, kM = kClassMark, kN = kClassNumber, kP = kClassPunct,
                   kS = kClassSymbol, kWs = kClassSpace, kLb = kClassLineBreak, kCjk = kClassCjk;

class Splitter {
 public:
  Splitter(const uint16_t* cls, const uint32_t* off, std::vector<uint32_t>* ends)
      : cls_(cls), off_(off), ends_(ends) {}

  // Rule 1: \p{N}{1,3}, Isolated.
  void Numbers(uint32_t a, uint32_t b) {
    uint32_t gap = a, i = a;
    while (i < b) {
      if (!(cls_[i] & kN)) {
        ++i;
        continue;
      }
      if (gap < i) Cjk(gap, i);
      uint32_t j = i + 1;
      while (j < b && j - i < 3 && (cls_[j] & kN)) ++j;
      Cjk(i, j);
      i = gap = j;
    }
    if (gap < b) Cjk(gap, b);
  }

  // Rule 2: [一-龥぀-ゟ゠-ヿ]+, Isolated.
  void Cjk(uint32_t a, uint32_t b) {
    uint32_t gap = a, i = a;
    while (i < b) {
      if (!(cls_[i] & kCjk)) {
        ++i;
        continue;
      }
      if (gap < i) Words(gap, i);
      uint32_t j = i + 1;
      while (j < b && (cls_[j] & kCjk)) ++j;
      Words(i, j);
      i = gap = j;
    }
    if (gap < b) Words(gap, b);
  }

  // Rule 3, Isolated: at each position the first alternative that matches wins; positions where
  // none matches join the run of unmatched text before the next match.
  void Words(uint32_t a, uint32_t b) {
    uint32_t gap = a, i = a;
    while (i < b) {
      const uint32_t j = MatchWordRule(i, b);
      if (j == i) {
        ++i;
        continue;
      }
      if (gap < i) Emit(i);
      Emit(j);
      i = gap = j;
    }
    if (gap < b) Emit(b);
  }

 private:
  uint32_t RunOf(uint32_t i, uint32_t b, uint16_t mask) const {
    while (i < b && (cls_[i] & mask)) ++i;
    return i;
  }

  // The end of the rule-3 match that starts at i, or i if none does.
  uint32_t MatchWordRule(uint32_t i, uint32_t b) const {
    const uint16_t c = cls_[i];
    // [ASCII punct][A-Za-z]+
    if ((c & kAsciiPunct) && i + 1 < b && (cls_[i + 1] & kAsciiAlpha)) {
      return RunOf(i + 2, b, kAsciiAlpha);
    }
    // [^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+
    if (!(c & (kLb | kL | kP | kS)) && i + 1 < b && (cls_[i + 1] & (kL | kM))) {
      return RunOf(i + 2, b, kL | kM);
    }
    if (c & (kL | kM)) return RunOf(i + 1, b, kL | kM);
    // ' '?[\p{P}\p{S}]+[\r\n]*
    {
      const uint32_t k = (c & kSpace20) ? i + 1 : i;
      if (k < b && (cls_[k] & (kP | kS))) return RunOf(RunOf(k + 1, b, kP | kS), b, kLb);
    }
    if (!(c & kWs)) return i;
    const uint32_t ws_end = RunOf(i + 1, b, kWs);
    // \s*[\r\n]+ : backtracking makes it end just after the last line break of the run.
    for (uint32_t k = ws_end; k > i; --k) {
      if (cls_[k - 1] & kLb) return k;
    }
    // \s+(?!\S) : the whole run at the end of the piece, else all but its last char.
    if (ws_end == b) return ws_end;
    if (ws_end - i >= 2) return ws_end - 1;
    // \s+
    return ws_end;
  }

  void Emit(uint32_t end_cp) { ends_->push_back(off_[end_cp]); }

  const uint16_t* cls_;
  const uint32_t* off_;
  std::vector<uint32_t>* ends_;
};

}  // namespace

void SplitPreTokens(absl::string_view text, PreTokenScratch* scratch,
                    std::vector<uint32_t>* piece_ends) {
  if (text.empty()) return;
  const uint8_t* table = CodePointClassTable();
  auto& cls = scratch->classes;
  auto& off = scratch->offsets;
  if (cls.size() < text.size()) cls.resize(text.size());
  if (off.size() < text.size() + 1) off.resize(text.size() + 1);
  const auto* begin = reinterpret_cast<const unsigned char*>(text.data());
  const auto* end = begin + text.size();
  uint32_t n = 0;
  for (const unsigned char* p = begin; p < end;) {
    uint16_t c;
    int len;
    if (*p < 0x80) {
      const unsigned char b = *p;
      c = table[b];
      if (b == ' ') c |= kSpace20;
      if ((b | 0x20) >= 'a' && (b | 0x20) <= 'z') {
        c |= kAsciiAlpha;
      } else if (b > 0x20 && b < 0x7F && !(b >= '0' && b <= '9')) {
        c |= kAsciiPunct;
      }
      len = 1;
    } else {
      uint32_t cp;
      len = DecodeUtf8(p, end, &cp);
      c = cp == 0xFFFFFFFF ? 0 : table[cp];
    }
    cls[n] = c;
    off[n] = static_cast<uint32_t>(p - begin);
    ++n;
    p += len;
  }
  off[n] = static_cast<uint32_t>(text.size());
  Splitter(cls.data(), off.data(), piece_ends).Numbers(0, n);
}

}  // namespace r1

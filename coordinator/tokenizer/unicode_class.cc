#include "coordinator/tokenizer/unicode_class.h"

#include <unicode/uchar.h>

#include <vector>

namespace r1 {
namespace {

constexpr uint32_t kMaxCodePoint = 0x10FFFF;

uint8_t Classify(uint32_t cp) {
  uint8_t c = 0;
  switch (u_charType(static_cast<UChar32>(cp))) {
    case U_UPPERCASE_LETTER:
    case U_LOWERCASE_LETTER:
    case U_TITLECASE_LETTER:
    case U_MODIFIER_LETTER:
    case U_OTHER_LETTER:
      c |= kClassLetter;
      break;
    case U_NON_SPACING_MARK:
    case U_ENCLOSING_MARK:
    case U_COMBINING_SPACING_MARK:
      c |= kClassMark;
      break;
    case U_DECIMAL_DIGIT_NUMBER:
    case U_LETTER_NUMBER:
    case U_OTHER_NUMBER:
      c |= kClassNumber;
      break;
    case U_DASH_PUNCTUATION:
    case U_START_PUNCTUATION:
    case U_END_PUNCTUATION:
    case U_CONNECTOR_PUNCTUATION:
    case U_OTHER_PUNCTUATION:
    case U_INITIAL_PUNCTUATION:
    case U_FINAL_PUNCTUATION:
      c |= kClassPunct;
      break;
    case U_MATH_SYMBOL:
    case U_CURRENCY_SYMBOL:
    case U_MODIFIER_SYMBOL:
    case U_OTHER_SYMBOL:
      c |= kClassSymbol;
      break;
    case U_SPACE_SEPARATOR:
    case U_LINE_SEPARATOR:
    case U_PARAGRAPH_SEPARATOR:
      c |= kClassSpace;
      break;
    default:
      break;
  }
  if ((cp >= 0x09 && cp <= 0x0D) || cp == 0x85) c |= kClassSpace;
  if (cp == '\r' || cp == '\n') c |= kClassLineBreak;
  if ((cp >= 0x4E00 && cp <= 0x9FA5) || (cp >= 0x3040 && cp <= 0x30FF)) c |= kClassCjk;
  return c;
}

}  // namespace

const uint8_t* CodePointClassTable() {
  static const std::vector<uint8_t>* table = [] {
    auto* t = new std::vector<uint8_t>(kMaxCodePoint + 1);
    for (uint32_t cp = 0; cp <= kMaxCodePoint; ++cp) (*t)[cp] = Classify(cp);
    return t;
  }();
  return table->data();
}

uint8_t ClassOf(uint32_t cp) { return cp > kMaxCodePoint ? 0 : CodePointClassTable()[cp]; }

}  // namespace r1

#include "cli/tokenize.h"

#include <cstdio>
#include <iostream>
#include <iterator>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "coordinator/tokenizer/tokenizer.h"
#include "coordinator/tokenizer/utf8.h"

namespace r1 {
namespace {

// Valid UTF-8 prints as itself (control characters escaped); a token that holds part of a
// character prints its bytes in hex.
std::string Printable(absl::string_view bytes) {
  std::string repaired;
  AppendUtf8Lossy(bytes, /*final=*/true, &repaired);
  return repaired == bytes ? absl::Utf8SafeCEscape(bytes) : absl::CHexEscape(bytes);
}

}  // namespace

absl::Status RunTokenize(const std::string& model_dir, const std::string& text, bool special) {
  R1_ASSIGN_OR_RETURN(auto tok, Tokenizer::Load(model_dir));
  std::string input = text;
  if (text == "-") input.assign(std::istreambuf_iterator<char>(std::cin), {});
  const std::vector<int32_t> ids = tok->Encode(input, special);
  std::printf("%s\n", absl::StrJoin(ids, ",").c_str());
  for (size_t i = 0; i < ids.size(); ++i) {
    const std::string piece = Printable(tok->TokenBytes(ids[i]));
    std::printf("%6zu %7d  %-24s \"%s\"\n", i, ids[i],
                std::string(tok->TokenString(ids[i])).c_str(), piece.c_str());
  }
  std::fflush(stdout);
  std::fprintf(stderr, "%zu tokens, %zu bytes\n", ids.size(), input.size());
  return absl::OkStatus();
}

absl::Status RunDetokenize(const std::string& model_dir, const std::vector<int32_t>& ids,
                           bool skip_special) {
  R1_ASSIGN_OR_RETURN(auto tok, Tokenizer::Load(model_dir));
  for (const int32_t id : ids) {
    if (tok->TokenString(id).empty()) {
      return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is not in the vocabulary"));
    }
  }
  const std::string text = tok->Decode(ids, skip_special);
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::printf("\n");
  return absl::OkStatus();
}

}  // namespace r1

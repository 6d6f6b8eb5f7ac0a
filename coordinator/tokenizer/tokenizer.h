// DeepSeek-V3 / R1 tokenizer: byte-level BPE with ranked merges, DeepSeek's pre-tokenizer and the
// added (control) tokens, read from the model folder's tokenizer.json and tokenizer_config.json.
// It gives the same ids as Hugging Face's tokenizers on the same files (tests/tokenizer checks
// this against the Rust library itself) and refuses a tokenizer.json whose normalizer,
// pre-tokenizer, model or decoder it does not reproduce, rather than tokenizing differently.
//
// Thread-safe: Encode/Decode are const. Each thread keeps its own cache of recently seen words.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "coordinator/tokenizer/bpe.h"

namespace r1 {

struct AddedToken {
  int32_t id = 0;
  std::string content;   // the text it stands for, e.g. "<｜User｜>"
  bool special = false;  // tokenizer.json's "special": dropped by Decode(skip_special)
};

class Tokenizer {
 public:
  // Reads `model_dir`/tokenizer.json and, when present, `model_dir`/tokenizer_config.json.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> Load(absl::string_view model_dir);
  // The same from the two files' contents (`tokenizer_config_json` may be empty).
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(
      absl::string_view tokenizer_json, absl::string_view tokenizer_config_json);

  // Token ids of `text`. With `parse_special` false the text is all plain text: "<｜User｜>" typed
  // by a user is tokenized like any other characters. With it true, added tokens found in the text
  // become their control ids (how the chat template's output is encoded). No BOS is added.
  std::vector<int32_t> Encode(absl::string_view text, bool parse_special) const;
  // Appends to `ids` instead.
  void Encode(absl::string_view text, bool parse_special, std::vector<int32_t>* ids) const;

  // The text of `ids`, with invalid UTF-8 replaced by U+FFFD as HF does; unknown ids are skipped.
  std::string Decode(absl::Span<const int32_t> ids, bool skip_special = false) const;

  // The raw bytes token `id` stands for (possibly part of a UTF-8 character); empty if unknown.
  absl::string_view TokenBytes(int32_t id) const;
  // The token as tokenizer.json writes it ("Ġhello", "<｜User｜>"); empty if unknown.
  absl::string_view TokenString(int32_t id) const;
  std::optional<int32_t> TokenToId(absl::string_view token_string) const;
  bool IsSpecial(int32_t id) const;
  bool IsAdded(int32_t id) const;
  // One more than the largest id.
  int32_t id_end() const { return static_cast<int32_t>(token_strings_.size()); }

  // From tokenizer_config.json (empty when it is absent or has none).
  const std::string& bos_token() const { return bos_token_; }
  const std::string& eos_token() const { return eos_token_; }
  std::optional<int32_t> bos_id() const { return TokenToId(bos_token_); }
  std::optional<int32_t> eos_id() const { return TokenToId(eos_token_); }
  const std::string& chat_template() const { return chat_template_; }

 private:
  Tokenizer() = default;
  absl::Status InitFromJson(absl::string_view tokenizer_json, absl::string_view config_json);
  // Appends the ids of text that holds no added tokens.
  void EncodePlain(absl::string_view text, std::vector<int32_t>* ids) const;
  // Leftmost-longest added token at or after `from`: its start and token index, or npos.
  size_t FindAddedToken(absl::string_view text, size_t from, int32_t* which, size_t* len) const;

  BpeModel bpe_;
  std::vector<std::string> token_strings_;  // by id
  std::vector<std::string> token_bytes_;    // by id
  std::vector<uint8_t> flags_;              // by id: 1 = added, 2 = special
  absl::flat_hash_map<std::string, int32_t> string_to_id_;
  std::vector<AddedToken> added_;

  // A byte trie of the added tokens' contents, for leftmost-longest matching.
  struct TrieNode {
    std::vector<std::pair<uint8_t, int32_t>> children;  // (byte, node), sorted by byte
    int32_t token = -1;                                 // index into added_ if a token ends here
  };
  std::vector<TrieNode> trie_;
  bool starts_token_[256] = {};

  std::string bos_token_, eos_token_, chat_template_;
  uint64_t serial_ = 0;  // identifies this instance to the per-thread word caches
};

}  // namespace r1

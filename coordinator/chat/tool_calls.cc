#include "coordinator/chat/tool_calls.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

namespace r1 {

std::string ToolsSection(const std::vector<ToolSpec>& tools,
                         const std::function<std::string(const std::string&)>& quote) {
  std::string s = absl::StrCat(
      "## Tools\n\nYou can call the functions below. To call them, write, after your reasoning "
      "and instead of an answer, exactly:\n",
      kToolCallsBegin, kToolCallBegin, "function", kToolSep, "FUNCTION_NAME\n```json\n",
      "{\"argument\": \"value\"}\n```", kToolCallEnd, kToolCallsEnd,
      "\nwith one ", kToolCallBegin, "…", kToolCallEnd,
      " per call when you make several. The results come back in the next turn.\n");
  for (const ToolSpec& t : tools) {
    absl::StrAppend(&s, "\n### ", quote(t.name), "\n");
    if (!t.description.empty()) absl::StrAppend(&s, "Description: ", quote(t.description), "\n");
    if (!t.parameters.empty()) absl::StrAppend(&s, "Parameters: ", quote(t.parameters), "\n");
  }
  return s;
}

absl::StatusOr<std::vector<ToolCall>> ParseToolCallBlock(absl::string_view block, bool* complete) {
  *complete = false;
  absl::string_view rest = block;
  if (!absl::ConsumePrefix(&rest, kToolCallsBegin)) {
    return absl::InvalidArgumentError("a tool-call block starts with <｜tool▁calls▁begin｜>");
  }
  std::vector<ToolCall> calls;
  while (true) {
    rest = absl::StripLeadingAsciiWhitespace(rest);
    if (rest.empty()) break;  // cut off between calls
    if (absl::ConsumePrefix(&rest, kToolCallsEnd)) {
      if (!absl::StripAsciiWhitespace(rest).empty()) {
        return absl::InvalidArgumentError("text after <｜tool▁calls▁end｜>");
      }
      *complete = true;
      break;
    }
    if (!absl::ConsumePrefix(&rest, kToolCallBegin)) {
      return absl::InvalidArgumentError("expected <｜tool▁call▁begin｜>");
    }
    const size_t end = rest.find(kToolCallEnd);
    if (end == absl::string_view::npos) {
      return absl::InvalidArgumentError("a tool call without <｜tool▁call▁end｜>");
    }
    absl::string_view call = rest.substr(0, end);
    rest.remove_prefix(end + kToolCallEnd.size());
    const size_t sep = call.find(kToolSep);
    if (sep == absl::string_view::npos) return absl::InvalidArgumentError("a tool call without <｜tool▁sep｜>");
    ToolCall c;
    c.type = std::string(absl::StripAsciiWhitespace(call.substr(0, sep)));
    call.remove_prefix(sep + kToolSep.size());
    const size_t newline = call.find('\n');
    c.name = std::string(absl::StripAsciiWhitespace(call.substr(0, newline)));
    absl::string_view args = newline == absl::string_view::npos ? absl::string_view() : call.substr(newline + 1);
    args = absl::StripAsciiWhitespace(args);
    // ```json\nARGS\n``` (the fence is what the templates write; bare JSON is accepted too).
    if (absl::ConsumePrefix(&args, "```")) {
      absl::ConsumePrefix(&args, "json");
      if (!absl::ConsumeSuffix(&args, "```")) return absl::InvalidArgumentError("an unclosed ``` in a tool call");
      args = absl::StripAsciiWhitespace(args);
    }
    if (c.type != "function") return absl::InvalidArgumentError(absl::StrCat("tool call type '", c.type, "'"));
    if (!IsValidToolName(c.name)) return absl::InvalidArgumentError(absl::StrCat("tool name '", c.name, "'"));
    c.arguments = args.empty() ? "{}" : std::string(args);
    calls.push_back(std::move(c));
  }
  if (calls.empty()) return absl::InvalidArgumentError("a tool-call block with no call");
  return calls;
}

bool IsValidToolName(absl::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char ch : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(ch)) && ch != '_' && ch != '-' && ch != '.') return false;
  }
  return true;
}

}  // namespace r1

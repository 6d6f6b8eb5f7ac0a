// Fuzz target: the chat template (coordinator/chat: ChatTemplate::Render, DeepSeek's R1 and V3
// templates) and the prompt encoder that turns a conversation into ids (coordinator/http:
// PromptEncoder::EncodeChat), with arbitrary messages and tools, on the real tokenizer files.
//
// The input is JSON, either a list of messages or an object
//   {"template": "r1"|"v3", "add_generation_prompt": bool, "messages": [...], "tools": [...]}
// where a message is {"role", "content" (string, null or absent), "reasoning" (put before the
// content inside <think>…</think>, as a client sends an earlier R1 turn back), "tool_calls":
// [{"name", "arguments"}]} and a tool is {"name", "description", "parameters"}. Fields of the
// wrong type are left out (the API layer's own checks are the request fuzzers' business).
// Oracle:
//  - Render and EncodeChat accept and refuse the same conversations;
//  - the ids decode to exactly the rendered text (with tools: the text rendered with the tools
//    section in the system prompt), so the encoder neither drops nor invents text;
//  - the control tokens in the ids do not depend on what the user wrote: they are the same when
//    every request string is replaced by a neutral one, and the same as the template's own, i.e.
//    typed "<｜User｜>", "</think>", tool-call tokens or the encoder's marker characters never
//    become control tokens.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "coordinator/chat/chat_template.h"
#include "coordinator/chat/tool_calls.h"
#include "coordinator/http/prompt_encoder.h"
#include "coordinator/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"
#include "tests/fuzz/fuzz_support.h"

namespace {

using Json = nlohmann::json;

struct Model {
  std::unique_ptr<r1::Tokenizer> tokenizer;
  std::optional<r1::ChatTemplate> chat_template;
  std::unique_ptr<r1::http::PromptEncoder> encoder;
};

const Model& TheModel(const char* name) {
  auto load = [](const char* n) {
    auto* m = new Model;
    auto t = r1::Tokenizer::Load(r1::fuzz::ModelDir(n));
    R1_FUZZ_REQUIRE(t.ok(), t.status().ToString());
    m->tokenizer = std::move(*t);
    auto tmpl =
        r1::ChatTemplate::FromJinja(m->tokenizer->chat_template(), m->tokenizer->bos_token());
    R1_FUZZ_REQUIRE(tmpl.ok(), n, ": ", tmpl.status().ToString());
    m->chat_template = *tmpl;
    m->encoder = std::make_unique<r1::http::PromptEncoder>(*m->tokenizer, *tmpl);
    return m;
  };
  static const Model* r1_model = load("r1");
  static const Model* v3_model = load("v3");
  return std::string(name) == "v3" ? *v3_model : *r1_model;
}

std::optional<std::string> StringField(const Json& object, const char* key) {
  auto it = object.find(key);
  if (it == object.end() || !it->is_string()) return std::nullopt;
  return it->get<std::string>();
}

struct Conversation {
  std::string model = "r1";
  bool add_generation_prompt = true;
  std::vector<r1::ChatMessage> messages;
  std::vector<r1::ToolSpec> tools;
};

std::optional<Conversation> Parse(const uint8_t* data, size_t size) {
  const Json j = Json::parse(data, data + size, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return std::nullopt;
  Conversation c;
  const Json* messages = &j;
  if (j.is_object()) {
    if (auto m = StringField(j, "template")) c.model = *m == "v3" ? "v3" : "r1";
    if (auto it = j.find("add_generation_prompt"); it != j.end() && it->is_boolean()) {
      c.add_generation_prompt = it->get<bool>();
    }
    auto it = j.find("messages");
    if (it == j.end()) return std::nullopt;
    messages = &*it;
    if (auto t = j.find("tools"); t != j.end() && t->is_array()) {
      for (const Json& tool : *t) {
        if (!tool.is_object()) continue;
        r1::ToolSpec spec;
        spec.name = StringField(tool, "name").value_or("f");
        spec.description = StringField(tool, "description").value_or("");
        spec.parameters = StringField(tool, "parameters").value_or("");
        c.tools.push_back(std::move(spec));
      }
    }
  }
  if (!messages->is_array()) return std::nullopt;
  for (const Json& m : *messages) {
    if (!m.is_object()) continue;
    r1::ChatMessage message;
    message.role = StringField(m, "role").value_or("user");
    message.content = StringField(m, "content");
    if (auto reasoning = StringField(m, "reasoning")) {
      message.content =
          absl::StrCat("<think>\n", *reasoning, "\n</think>\n\n", message.content.value_or(""));
    }
    if (auto calls = m.find("tool_calls"); calls != m.end() && calls->is_array()) {
      message.tool_calls.emplace();
      for (const Json& call : *calls) {
        if (!call.is_object()) continue;
        r1::ToolCall tc;
        tc.name = StringField(call, "name").value_or("");
        tc.arguments = StringField(call, "arguments").value_or("{}");
        message.tool_calls->push_back(std::move(tc));
      }
    }
    c.messages.push_back(std::move(message));
  }
  return c;
}

// The same conversation with every string the request supplied replaced by a neutral one (empty
// stays empty: the tools section prints a description only when there is one).
Conversation Neutral(Conversation c) {
  for (r1::ChatMessage& m : c.messages) {
    if (m.content) m.content = "x";
    if (m.tool_calls) {
      for (r1::ToolCall& call : *m.tool_calls) {
        call.name = "f";
        call.arguments = "{}";
      }
    }
  }
  for (r1::ToolSpec& t : c.tools) {
    t.name = "f";
    if (!t.description.empty()) t.description = "d";
    if (!t.parameters.empty()) t.parameters = "{}";
  }
  return c;
}

// The conversation as the encoder renders it: the tools section (request strings as themselves)
// appended to the first system message, or a system message of its own.
std::vector<r1::ChatMessage> WithToolsSection(const Conversation& c) {
  std::vector<r1::ChatMessage> messages = c.messages;
  if (c.tools.empty()) return messages;
  const std::string section = r1::ToolsSection(c.tools, [](const std::string& s) { return s; });
  if (!messages.empty() && messages.front().role == "system") {
    r1::ChatMessage& system = messages.front();
    system.content = system.content && !system.content->empty()
                         ? absl::StrCat(*system.content, "\n\n", section)
                         : section;
  } else {
    messages.insert(messages.begin(), r1::ChatMessage{"system", section, std::nullopt});
  }
  return messages;
}

std::vector<int32_t> ControlIds(const r1::Tokenizer& tok, const std::vector<int32_t>& ids) {
  std::vector<int32_t> out;
  for (const int32_t id : ids) {
    if (tok.IsAdded(id)) out.push_back(id);
  }
  return out;
}

std::string Describe(const r1::Tokenizer& tok, const std::vector<int32_t>& ids) {
  std::string out;
  for (const int32_t id : ids) absl::StrAppend(&out, tok.TokenString(id), " ");
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::optional<Conversation> c = Parse(data, size);
  if (!c) return 0;
  const Model& model = TheModel(c->model.c_str());
  const r1::Tokenizer& tok = *model.tokenizer;
  const std::vector<r1::ChatMessage> rendered_messages = WithToolsSection(*c);

  auto rendered = model.chat_template->Render(rendered_messages, c->add_generation_prompt);
  auto ids = model.encoder->EncodeChat(c->messages, c->add_generation_prompt, "", c->tools);
  R1_FUZZ_REQUIRE(rendered.ok() == ids.ok(), "Render: ", rendered.status().ToString(),
                  "; EncodeChat: ", ids.status().ToString());
  if (!ids.ok()) {
    R1_FUZZ_REQUIRE(ids.status().code() == absl::StatusCode::kInvalidArgument,
                    ids.status().ToString());
    return 0;
  }
  for (const int32_t id : *ids) R1_FUZZ_REQUIRE(id >= 0 && id < tok.id_end(), "id ", id);
  const std::string decoded = tok.Decode(*ids);
  R1_FUZZ_REQUIRE(decoded == *rendered, "the ids say\n", decoded, "\nthe template says\n",
                  *rendered);

  const Conversation neutral = Neutral(*c);
  auto neutral_ids =
      model.encoder->EncodeChat(neutral.messages, neutral.add_generation_prompt, "", neutral.tools);
  R1_FUZZ_REQUIRE(neutral_ids.ok(), neutral_ids.status().ToString());
  const std::vector<int32_t> control = ControlIds(tok, *ids);
  R1_FUZZ_REQUIRE(control == ControlIds(tok, *neutral_ids),
                  "request text changed the control tokens: ", Describe(tok, control), "vs ",
                  Describe(tok, ControlIds(tok, *neutral_ids)));
  auto neutral_text =
      model.chat_template->Render(WithToolsSection(neutral), neutral.add_generation_prompt);
  R1_FUZZ_REQUIRE(neutral_text.ok(), neutral_text.status().ToString());
  const std::vector<int32_t> template_control =
      ControlIds(tok, tok.Encode(*neutral_text, /*parse_special=*/true));
  R1_FUZZ_REQUIRE(control == template_control, "control tokens ", Describe(tok, control),
                  "but the template has ", Describe(tok, template_control));
  return 0;
}

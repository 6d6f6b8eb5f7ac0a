// `r1 chat`'s conversation loop on an Engine, apart from the terminal so that tests can drive it
// with strings: read a line, template the conversation (user text stays plain text), generate,
// and print the reasoning and the answer as they arrive.
//
// On a terminal the reasoning is printed faint (ANSI SGR 2) and the answer plain; otherwise (a
// pipe or a file) the reasoning is framed by "<think>" / "</think>" lines and no escapes are
// written. Commands: /exit (or /quit, or end of input) leaves, /reset forgets the conversation.
#pragma once

#include <iosfwd>
#include <string>

#include "absl/status/status.h"
#include "coordinator/engine/engine.h"
#include "coordinator/http/prompt_encoder.h"

namespace r1 {

struct ChatSessionOptions {
  std::string system;          // a system prompt, if any
  EngineSampling sampling;     // R1's defaults unless set
  int64_t max_new_tokens = 0;  // 0: up to the context
  bool ansi = false;           // faint reasoning (a terminal)
  bool prompt = false;         // print "> " before each line (a terminal)
};

absl::Status RunChatSession(Engine& engine, const http::PromptEncoder& encoder,
                            const ChatSessionOptions& options, std::istream& in, std::ostream& out);

}  // namespace r1

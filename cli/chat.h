// `r1 chat`: an interactive terminal chat with a model folder, in this process (a LocalEngine).
// The reasoning prints faint, the answer plain; /exit leaves. Works with stdin from a pipe too.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "coordinator/engine/local_engine.h"
#include "coordinator/serve/chat_session.h"

namespace CLI {
class App;
}

namespace r1 {

struct ChatCommandOptions {
  LocalEngine::Options engine;
  ChatSessionOptions session;
  double kv_memory_gb = 1.0;
  float temperature = 0.6f, top_p = 0.95f;
  int64_t seed = -1;
};

CLI::App* AddChatCommand(CLI::App& app, ChatCommandOptions& options);
absl::Status RunChatCommand(ChatCommandOptions options);

}  // namespace r1

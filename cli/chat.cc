#include "cli/chat.h"

#include <unistd.h>

#include <cstdio>
#include <iostream>

#include "CLI/CLI.hpp"
#include "common/status.h"
#include "coordinator/chat/chat_template.h"
#include "coordinator/http/prompt_encoder.h"
#include "coordinator/tokenizer/tokenizer.h"

namespace r1 {

CLI::App* AddChatCommand(CLI::App& app, ChatCommandOptions& o) {
  auto* cmd = app.add_subcommand(
      "chat",
      "Chat with a model folder in the terminal (the model runs in this process). The reasoning "
      "prints faint, the answer plain. /exit or end of input leaves, /reset starts over. With "
      "stdin or stdout not a terminal it reads lines and frames the reasoning with <think> "
      "lines instead.");
  cmd->add_option("--model", o.engine.model_dir, "Model folder")->required();
  cmd->add_option("--system", o.session.system, "A system prompt");
  cmd->add_option("--max-tokens", o.session.max_new_tokens, "Tokens per reply (0: the context)")
      ->capture_default_str();
  cmd->add_option("--temperature", o.temperature, "Sampling temperature; 0 = greedy")
      ->capture_default_str();
  cmd->add_option("--top-p", o.top_p, "Nucleus sampling threshold")->capture_default_str();
  cmd->add_option("--seed", o.seed, "Random seed (-1: random)")->capture_default_str();
  cmd->add_option("--max-context", o.engine.max_context, "Tokens per sequence (0: the model's)")
      ->capture_default_str();
  cmd->add_option("--kv-memory-gb", o.kv_memory_gb, "KV-cache memory budget in GB")
      ->capture_default_str();
  return cmd;
}

absl::Status RunChatCommand(ChatCommandOptions o) {
  o.engine.kv_memory_bytes = static_cast<int64_t>(o.kv_memory_gb * (1ll << 30));
  o.session.sampling.temperature = o.temperature;
  o.session.sampling.top_p = o.top_p;
  if (o.seed >= 0) o.session.sampling.seed = static_cast<uint64_t>(o.seed);
  const bool tty = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO);
  o.session.ansi = tty;
  o.session.prompt = tty;
  R1_ASSIGN_OR_RETURN(auto tokenizer, Tokenizer::Load(o.engine.model_dir));
  R1_ASSIGN_OR_RETURN(auto chat_template,
                      ChatTemplate::FromJinja(tokenizer->chat_template(), tokenizer->bos_token()));
  http::PromptEncoder encoder(*tokenizer, std::move(chat_template));
  if (tty) std::fprintf(stderr, "loading %s ...\n", o.engine.model_dir.c_str());
  auto engine = LocalEngine::Create(o.engine);
  if (!engine.ok()) return Annotate(engine.status(), "starting the engine");
  if (tty) std::fprintf(stderr, "ready. /exit leaves, /reset starts over.\n");
  return RunChatSession(**engine, encoder, o.session, std::cin, std::cout);
}

}  // namespace r1

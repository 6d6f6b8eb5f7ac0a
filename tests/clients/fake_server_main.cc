// r1_fake_server: the real HTTP server (RunServer, as `r1 serve` runs it) on FakeEngine, for the
// client tests. Prints "listening on URL" once the socket listens; SIGTERM drains and exits 0.
#include <cstdio>
#include <cstdlib>

#include "CLI/CLI.hpp"
#include "coordinator/serve/server.h"
#include "coordinator/tokenizer/tokenizer.h"
#include "tests/clients/fake_engine.h"

int main(int argc, char** argv) {
  CLI::App app{"r1_fake_server: the HTTP APIs on a scripted fake engine (tests only)"};
  r1::ServeOptions options;
  options.listen = "127.0.0.1:0";
  r1::testing::FakeEngine::Options engine_options;
  app.add_option("--model", options.api.model_dir, "Folder with tokenizer.json")->required();
  app.add_option("--listen", options.listen, "HOST:PORT (port 0: any free port)");
  app.add_option("--served-model-name", options.api.model_name, "Model name in the APIs");
  app.add_option("--api-key", options.api.api_key, "Require 'Authorization: Bearer KEY'");
  app.add_option("--max-context", engine_options.max_context, "Context of the fake engine");
  app.add_option("--token-delay-us", engine_options.token_delay_us, "Delay between steps");
  app.add_option("--drain-timeout-ms", options.drain_timeout_ms, "Drain deadline after SIGTERM");
  app.add_option("--max-body-bytes", options.max_body_bytes, "Request body limit");
  app.add_option("--http-threads", options.http_threads, "io threads");
  CLI11_PARSE(app, argc, argv);
  if (options.api.api_key.empty()) {
    if (const char* key = std::getenv("R1_API_KEY")) options.api.api_key = key;
  }
  auto tokenizer = r1::Tokenizer::Load(options.api.model_dir);
  if (!tokenizer.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(tokenizer.status().message()).c_str());
    return 1;
  }
  r1::testing::FakeEngine engine(**tokenizer, engine_options);
  const absl::Status s = r1::RunServer(options, engine, [](const std::string& url) {
    std::printf("listening on %s\n", url.c_str());
    std::fflush(stdout);
  });
  if (!s.ok()) {
    std::fprintf(stderr, "error: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}

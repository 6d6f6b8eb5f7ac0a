// Fuzz target: requests to the Ollama-compatible API (POST /api/chat, /api/generate,
// and the rest of /api/) through ApiServer::Handle (coordinator/http:
// routing, ollama_api.cc, api_common, the prompt encoder, GenerationJob, the text pipeline) on the
// R1 tokenizer folder and a scripted engine (api_fuzz_support.h).
//
// The input is a small HTTP request: a "METHOD PATH" line, header lines, an empty line, the body
// (see ParseFuzzRequest). A path outside /api/ is replaced by /api/chat, so that the fuzzer
// spends its time in this API. Oracle: CheckResponse (one complete response, a status this API
// may give, well-formed JSON / SSE / NDJSON, errors in the API's shape, no 500 that the engine did
// not cause) and the ScriptedEngine's checks on what reaches the engine.
#include <cstdint>

#include "tests/fuzz/api_fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  r1::fuzz::FuzzOneRequest(data, size, "/api/", "/api/chat");
  return 0;
}

// Fuzz target: requests to the OpenAI-compatible API (POST /v1/chat/completions,
// /v1/completions, and the rest of /v1/) through ApiServer::Handle (coordinator/http:
// routing, openai_api.cc, api_common, the prompt encoder, GenerationJob, the text pipeline) on the
// R1 tokenizer folder and a scripted engine (api_fuzz_support.h).
//
// The input is a small HTTP request: a "METHOD PATH" line, header lines, an empty line, the body
// (see ParseFuzzRequest). A path outside /v1/ is replaced by /v1/chat/completions, so that the
// fuzzer spends its time in this API. Oracle: CheckResponse (one complete response, a status this
// API may give, well-formed JSON / SSE / NDJSON, errors in the API's shape, no 500 that the engine
// did not cause) and the ScriptedEngine's checks on what reaches the engine.
#include <cstdint>

#include "tests/fuzz/api_fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  r1::fuzz::FuzzOneRequest(data, size, "/v1/", "/v1/chat/completions");
  return 0;
}

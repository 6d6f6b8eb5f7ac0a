// Pieces both public APIs share: the error type a handler returns (mapped to each API's JSON
// shape at the boundary), typed reads of request fields that name the offending field, UTF-8
// validation, ids and timestamps.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace r1::http {

using Json = nlohmann::json;

// An error a client caused (4xx) or one of ours (5xx), before it is put in an API's shape:
// OpenAI {"error":{"message","type","param","code"}}, Ollama {"error":"message"}.
struct ApiError {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // the request field at fault, if one is
  std::string code;   // a machine-readable reason, if any

  static ApiError BadRequest(std::string message, std::string param = "", std::string code = "");
};

// From an engine status: INVALID_ARGUMENT / OUT_OF_RANGE → 400, RESOURCE_EXHAUSTED → 429,
// UNAVAILABLE → 503, anything else → 500.
ApiError ErrorFromStatus(const absl::Status& status);

Json OpenAiErrorJson(const ApiError& error);  // {"error":{…}}
std::string OpenAiErrorBody(const ApiError& error);
std::string OllamaErrorBody(const ApiError& error);

// Serialises without throwing (invalid UTF-8 cannot occur here, but is replaced if it does).
std::string Dump(const Json& json);

// Byte offset of the first invalid UTF-8 sequence (overlongs and surrogates included), or npos.
size_t FindInvalidUtf8(absl::string_view text);

// Appends `text` as a JSON string literal (quotes included), as Dump would write it, without
// building a Json value: the per-token path of the streaming APIs. False (nothing appended) when
// `text` is not valid UTF-8; then use Dump.
bool AppendJsonString(absl::string_view text, std::string* out);

// Parses a request body: invalid UTF-8, malformed JSON and a non-object top level are errors.
ApiError ParseJsonBody(absl::string_view body, Json* out);  // status 0 when fine

// Typed optional fields of a request object. Each returns an error naming `key` when the field is
// present with the wrong type or outside [lo, hi]; JSON null counts as absent.
struct FieldReader {
  const Json& object;
  std::optional<ApiError> error;  // the first error met
  std::string prefix;             // put before field names in messages ("options.")

  std::optional<bool> Bool(const char* key);
  std::optional<int64_t> Int(const char* key, int64_t lo, int64_t hi);
  std::optional<double> Number(const char* key, double lo, double hi);
  std::optional<std::string> String(const char* key);
  // A string or an array of strings (OpenAI's and Ollama's `stop`): at most `max_items`, each
  // non-empty and at most `max_bytes`.
  std::optional<std::vector<std::string>> Strings(const char* key, size_t max_items,
                                                  size_t max_bytes);
  void Fail(const char* key, const std::string& message);
};

// "chatcmpl-" + 24 random hex digits, and so on.
std::string RandomId(absl::string_view prefix);
int64_t UnixSeconds();
// RFC 3339 with nanoseconds in UTC, as Ollama writes created_at.
std::string Rfc3339Now();

}  // namespace r1::http

#include "coordinator/http/api_common.h"

#include <chrono>
#include <cmath>
#include <ctime>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace r1::http {

ApiError ApiError::BadRequest(std::string message, std::string param, std::string code) {
  ApiError e;
  e.status = 400;
  e.message = std::move(message);
  e.param = std::move(param);
  e.code = std::move(code);
  return e;
}

ApiError ErrorFromStatus(const absl::Status& status) {
  ApiError e;
  e.message = std::string(status.message());
  switch (status.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
    case absl::StatusCode::kFailedPrecondition:
      e.status = 400;
      break;
    case absl::StatusCode::kUnimplemented:
      e.status = 400;
      e.code = "unsupported";
      break;
    case absl::StatusCode::kResourceExhausted:
      e.status = 429;
      e.type = "rate_limit_error";
      break;
    case absl::StatusCode::kUnavailable:
      e.status = 503;
      e.type = "server_error";
      break;
    default:
      e.status = 500;
      e.type = "server_error";
      break;
  }
  return e;
}

std::string Dump(const Json& json) {
  return json.dump(-1, ' ', false, Json::error_handler_t::replace);
}

bool AppendJsonString(absl::string_view text, std::string* out) {
  if (FindInvalidUtf8(text) != absl::string_view::npos) return false;
  static constexpr char kHex[] = "0123456789abcdef";
  out->reserve(out->size() + text.size() + 2);
  out->push_back('"');
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': *out += "\\\""; break;
      case '\\': *out += "\\\\"; break;
      case '\b': *out += "\\b"; break;
      case '\f': *out += "\\f"; break;
      case '\n': *out += "\\n"; break;
      case '\r': *out += "\\r"; break;
      case '\t': *out += "\\t"; break;
      default:
        if (c < 0x20) {
          *out += "\\u00";
          out->push_back(kHex[c >> 4]);
          out->push_back(kHex[c & 15]);
        } else {
          out->push_back(ch);
        }
    }
  }
  out->push_back('"');
  return true;
}

std::string OpenAiErrorBody(const ApiError& error) { return Dump(OpenAiErrorJson(error)); }

Json OpenAiErrorJson(const ApiError& error) {
  return {{"error",
           {{"message", error.message},
            {"type", error.type},
            {"param", error.param.empty() ? Json(nullptr) : Json(error.param)},
            {"code", error.code.empty() ? Json(nullptr) : Json(error.code)}}}};
}

std::string OllamaErrorBody(const ApiError& error) { return Dump(Json{{"error", error.message}}); }

size_t FindInvalidUtf8(absl::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;  // overlong
      if (c == 0xED) hi = 0x9F;  // surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return i;
    }
    if (i + len > n) return i;
    if (s[i + 1] < lo || s[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) return i;
    }
    i += len;
  }
  return absl::string_view::npos;
}

ApiError ParseJsonBody(absl::string_view body, Json* out) {
  ApiError ok;
  ok.status = 0;
  if (const size_t bad = FindInvalidUtf8(body); bad != absl::string_view::npos) {
    return ApiError::BadRequest(absl::StrCat("request body is not valid UTF-8 (at byte ", bad, ")"),
                                "", "invalid_utf8");
  }
  if (body.empty()) return ApiError::BadRequest("request body is empty; expected a JSON object");
  *out = Json::parse(body.begin(), body.end(), nullptr, /*allow_exceptions=*/false);
  if (out->is_discarded()) {
    return ApiError::BadRequest("request body is not valid JSON", "", "invalid_json");
  }
  if (!out->is_object()) return ApiError::BadRequest("request body must be a JSON object");
  return ok;
}

void FieldReader::Fail(const char* key, const std::string& message) {
  if (!error) {
    error = ApiError::BadRequest(absl::StrCat("'", prefix, key, "': ", message),
                                 absl::StrCat(prefix, key));
  }
}

std::optional<bool> FieldReader::Bool(const char* key) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return std::nullopt;
  if (!it->is_boolean()) {
    Fail(key, "expected a boolean");
    return std::nullopt;
  }
  return it->get<bool>();
}

std::optional<int64_t> FieldReader::Int(const char* key, int64_t lo, int64_t hi) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return std::nullopt;
  int64_t v;
  if (it->is_number_integer()) {
    if (it->is_number_unsigned() && it->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) {
      Fail(key, absl::StrCat("must be at most ", hi));
      return std::nullopt;
    }
    v = it->get<int64_t>();
  } else if (it->is_number_float() && std::floor(it->get<double>()) == it->get<double>() &&
             std::fabs(it->get<double>()) < 9e18) {
    v = static_cast<int64_t>(it->get<double>());
  } else {
    Fail(key, "expected an integer");
    return std::nullopt;
  }
  if (v < lo || v > hi) {
    Fail(key, absl::StrCat("must be between ", lo, " and ", hi, ", got ", v));
    return std::nullopt;
  }
  return v;
}

std::optional<double> FieldReader::Number(const char* key, double lo, double hi) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return std::nullopt;
  if (!it->is_number()) {
    Fail(key, "expected a number");
    return std::nullopt;
  }
  const double v = it->get<double>();
  if (!(v >= lo && v <= hi)) {
    Fail(key, absl::StrCat("must be between ", lo, " and ", hi, ", got ", v));
    return std::nullopt;
  }
  return v;
}

std::optional<std::string> FieldReader::String(const char* key) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return std::nullopt;
  if (!it->is_string()) {
    Fail(key, "expected a string");
    return std::nullopt;
  }
  return it->get<std::string>();
}

std::optional<std::vector<std::string>> FieldReader::Strings(const char* key, size_t max_items,
                                                             size_t max_bytes) {
  auto it = object.find(key);
  if (it == object.end() || it->is_null()) return std::nullopt;
  std::vector<std::string> out;
  if (it->is_string()) {
    out.push_back(it->get<std::string>());
  } else if (it->is_array()) {
    for (const Json& item : *it) {
      if (!item.is_string()) {
        Fail(key, "expected a string or an array of strings");
        return std::nullopt;
      }
      out.push_back(item.get<std::string>());
    }
  } else {
    Fail(key, "expected a string or an array of strings");
    return std::nullopt;
  }
  if (out.size() > max_items) {
    Fail(key, absl::StrCat("at most ", max_items, " entries"));
    return std::nullopt;
  }
  for (const std::string& s : out) {
    if (s.empty() || s.size() > max_bytes) {
      Fail(key, absl::StrCat("each entry must be 1 to ", max_bytes, " bytes"));
      return std::nullopt;
    }
  }
  return out;
}

std::string RandomId(absl::string_view prefix) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return absl::StrFormat("%s%016x%08x", prefix, rng(), static_cast<uint32_t>(rng()));
}

int64_t UnixSeconds() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string Rfc3339Now() {
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  const int64_t ns = std::chrono::duration_cast<std::chrono::nanoseconds>(now).count();
  const std::time_t secs = static_cast<std::time_t>(ns / 1'000'000'000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  return absl::StrFormat("%04d-%02d-%02dT%02d:%02d:%02d.%09dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                         static_cast<int>(ns % 1'000'000'000));
}

}  // namespace r1::http

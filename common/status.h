// Note: Debian's abseil has its own absl::string_view (not std::string_view); the project
// uses absl::string_view in interfaces so absl::StrCat accepts it.
// Status helpers shared by every library: errors are absl::Status / absl::StatusOr, with context
// added on the way up ("loading layer 7: tensor …: shard truncated").
#pragma once

#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace r1 {

// Returns `status` with `context: ` put in front of its message; OK stays OK.
inline absl::Status Annotate(const absl::Status& status, absl::string_view context) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat(context, ": ", status.message()));
}

}  // namespace r1

#define R1_STATUS_CONCAT_INNER(a, b) a##b
#define R1_STATUS_CONCAT(a, b) R1_STATUS_CONCAT_INNER(a, b)

// Returns from the current function if `expr` (an absl::Status) is not OK.
#define R1_RETURN_IF_ERROR(expr)                  \
  do {                                            \
    ::absl::Status r1_status_ = (expr);           \
    if (!r1_status_.ok()) return r1_status_;      \
  } while (0)

// `R1_ASSIGN_OR_RETURN(auto x, F())`: x = *F() or return its status.
#define R1_ASSIGN_OR_RETURN(lhs, ...) \
  R1_ASSIGN_OR_RETURN_IMPL(R1_STATUS_CONCAT(r1_statusor_, __LINE__), lhs, (__VA_ARGS__))
#define R1_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = expr;                               \
  if (!tmp.ok()) return tmp.status();            \
  lhs = std::move(*tmp)

// Minimal leveled logging to stderr: `R1_LOG(INFO) << "loaded " << n;`. Thread-safe per line.
#pragma once

#include <sstream>

namespace r1 {

enum class LogLevel { DEBUG = 0, INFO = 1, WARNING = 2, ERROR = 3 };

// Lines below this level are dropped; set from R1_LOG_LEVEL (debug|info|warning|error) at start.
LogLevel MinLogLevel();
void SetMinLogLevel(LogLevel level);

class LogLine {
 public:
  LogLine(LogLevel level, const char* file, int line);
  ~LogLine();
  std::ostream& stream() { return stream_; }

 private:
  LogLevel level_;
  std::ostringstream stream_;
};

}  // namespace r1

#define R1_LOG(level)                                              \
  if (::r1::LogLevel::level < ::r1::MinLogLevel()) {               \
  } else                                                           \
    ::r1::LogLine(::r1::LogLevel::level, __FILE__, __LINE__).stream()

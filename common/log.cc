#include "common/log.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <string>

namespace r1 {
namespace {

LogLevel LevelFromEnv() {
  const char* v = std::getenv("R1_LOG_LEVEL");
  if (v == nullptr) return LogLevel::INFO;
  std::string s(v);
  if (s == "debug") return LogLevel::DEBUG;
  if (s == "warning") return LogLevel::WARNING;
  if (s == "error") return LogLevel::ERROR;
  return LogLevel::INFO;
}

std::atomic<int>& Level() {
  static std::atomic<int> level{static_cast<int>(LevelFromEnv())};
  return level;
}

}  // namespace

LogLevel MinLogLevel() { return static_cast<LogLevel>(Level().load(std::memory_order_relaxed)); }
void SetMinLogLevel(LogLevel level) { Level().store(static_cast<int>(level)); }

LogLine::LogLine(LogLevel level, const char* file, int line) : level_(level) {
  static const char kTag[] = {'D', 'I', 'W', 'E'};
  auto now = std::chrono::system_clock::now();
  std::time_t t = std::chrono::system_clock::to_time_t(now);
  int ms = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%H:%M:%S", &tm);
  const char* base = std::strrchr(file, '/');
  stream_ << kTag[static_cast<int>(level)] << ' ' << buf << '.' << (ms / 100) << ((ms / 10) % 10)
          << (ms % 10) << ' ' << (base ? base + 1 : file) << ':' << line << "] ";
}

LogLine::~LogLine() {
  static std::mutex mu;
  stream_ << '\n';
  std::string s = stream_.str();
  std::lock_guard<std::mutex> lock(mu);
  std::fwrite(s.data(), 1, s.size(), stderr);
  (void)level_;
}

}  // namespace r1

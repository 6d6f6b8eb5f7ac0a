// Helpers for tests that run real r1-coordinator / r1-worker / mpirun processes on loopback:
// spawning with a log file each, free ports, waiting with bounded timeouts, and a gRPC client
// of the coordinator. Every wait has a deadline; every child is killed when its handle dies.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "proto/worker.grpc.pb.h"

namespace r1::testing {

namespace pb = worker::v1;
using Clock = std::chrono::steady_clock;

inline double SecondsSince(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Polls `done` every 50 ms until it holds or `timeout_s` passes; returns whether it held.
inline bool WaitFor(const std::function<bool()>& done, double timeout_s) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
  while (Clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return done();
}

// A TCP port on 127.0.0.1 that was free a moment ago.
inline int FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

inline std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Whether something accepts TCP connections on 127.0.0.1:port.
inline bool Listening(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  close(fd);
  return ok;
}

// A child process in its own process group, stdout+stderr to `log`.
class Process {
 public:
  Process(std::vector<std::string> argv, const std::string& log, const std::map<std::string, std::string>& env = {})
      : log_(log) {
    // Everything the child needs is built before fork(): after it, only exec-safe calls.
    std::map<std::string, std::string> vars;
    for (char** e = environ; *e; ++e) {
      const std::string kv = *e;
      const size_t eq = kv.find('=');
      if (eq != std::string::npos) vars[kv.substr(0, eq)] = kv.substr(eq + 1);
    }
    vars["OMP_NUM_THREADS"] = "1";  // W ranks on 2 cores: no OpenMP threads spinning
    for (const auto& [k, v] : env) vars[k] = v;
    std::vector<std::string> env_strings;
    for (const auto& [k, v] : vars) env_strings.push_back(k + "=" + v);
    std::vector<char*> args, envp;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    for (auto& e : env_strings) envp.push_back(e.data());
    envp.push_back(nullptr);
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    pid_ = fork();
    if (pid_ == 0) {
      setpgid(0, 0);
      dup2(fd, 1);
      dup2(fd, 2);
      execve(args[0], args.data(), envp.data());
      _exit(127);
    }
    close(fd);
  }
  ~Process() {
    if (running()) {
      killpg(pid_, SIGKILL);
      kill(pid_, SIGKILL);
      waitpid(pid_, &status_, 0);
    }
  }
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  void Signal(int sig) { kill(pid_, sig); }
  bool running() {
    if (exited_) return false;
    if (waitpid(pid_, &status_, WNOHANG) == pid_) exited_ = true;
    return !exited_;
  }
  // The exit code once exited within `timeout_s` (-signal if killed), or nullopt.
  std::optional<int> WaitExit(double timeout_s) {
    if (!WaitFor([&] { return !running(); }, timeout_s)) return std::nullopt;
    return WIFEXITED(status_) ? WEXITSTATUS(status_) : -WTERMSIG(status_);
  }
  std::string log() const { return ReadFile(log_); }

 private:
  std::string log_;
  pid_t pid_ = -1;
  int status_ = 0;
  bool exited_ = false;
};

inline std::string Bin(const std::string& rel) { return std::string(R1_BINARY_DIR) + "/" + rel; }
inline std::string Model(const std::string& name) {
  return std::string(R1_SOURCE_DIR) + "/tests/golden/models/" + name;
}

// A client of r1-coordinator's Coordinator service.
class CoordinatorClient {
 public:
  explicit CoordinatorClient(const std::string& address) {
    // The coordinator may not be listening yet: reconnect quickly rather than with gRPC's backoff.
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 50);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 200);
    stub_ = pb::Coordinator::NewStub(grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
  }

  std::optional<pb::StatusReply> Status() {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    pb::StatusReply reply;
    if (!stub_->Status(&ctx, pb::StatusRequest(), &reply).ok()) return std::nullopt;
    return reply;
  }
  bool WaitReady(double timeout_s) {
    return WaitFor([&] {
      auto s = Status();
      return s && s->ready();
    }, timeout_s);
  }
  grpc::Status Generate(const pb::GenerateRequest& req, pb::GenerateReply* reply, double timeout_s = 60) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000)));
    return stub_->Generate(&ctx, req, reply);
  }

 private:
  std::unique_ptr<pb::Coordinator::Stub> stub_;
};

}  // namespace r1::testing

// r1c-linkem: one cable of the simulated cluster (tests/cluster/netns.sh) whose host side can be
// given latency and loss, for kernels built without sch_netem (`tc qdisc ... netem` then fails
// with "Specified qdisc kind is unknown"). The cable is two TAP devices, one in the host's
// namespace and one on the switch's bridge; this process copies Ethernet frames between them.
// Frames the host sends are delayed and dropped as `tc qdisc add dev NIC root netem delay D loss
// P%` on the host's NIC would (its egress only); frames to the host pass at once. The settings are
// "DELAY_MS LOSS_PCT" in the --params file, read at start and again on SIGHUP.
//
//   r1c-linkem --host /run/netns/HOST TAP --switch /run/netns/SWITCH TAP --params FILE
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

volatile sig_atomic_t reload = 0;
void OnHup(int) { reload = 1; }

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "r1c-linkem: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

// Attaches to the persistent TAP device `name` in the namespace at `netns_path`.
int OpenTap(const std::string& netns_path, const std::string& name) {
  const int ns = open(netns_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (ns < 0) Die("open " + netns_path);
  if (setns(ns, CLONE_NEWNET) != 0) Die("setns " + netns_path);
  close(ns);
  const int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) Die("open /dev/net/tun");
  ifreq ifr{};
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
  std::snprintf(ifr.ifr_name, IFNAMSIZ, "%s", name.c_str());
  if (ioctl(fd, TUNSETIFF, &ifr) != 0) Die("TUNSETIFF " + name + " in " + netns_path);
  return fd;
}

struct Impairment {
  double delay_ms = 0;
  double loss_pct = 0;
};

Impairment ReadParams(const std::string& path) {
  Impairment p;
  std::ifstream in(path);
  if (in) in >> p.delay_ms >> p.loss_pct;
  std::fprintf(stderr, "r1c-linkem: host egress delay %.1f ms, loss %.1f %%\n", p.delay_ms, p.loss_pct);
  return p;
}

// Writes one frame. A full queue (EAGAIN) or a device set down (EIO: the cable pulled out with
// `netns.sh link ... down`) drops it, as a NIC would; anything else is fatal.
void Send(int fd, const char* data, size_t len, const char* to) {
  if (write(fd, data, len) < 0 && errno != EAGAIN && errno != EIO) Die(std::string("write to ") + to);
}

struct Frame {
  Clock::time_point due;
  std::vector<char> bytes;
};

}  // namespace

int main(int argc, char** argv) {
  std::string host_ns, host_tap, switch_ns, switch_tap, params;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--host" && i + 2 < argc) {
      host_ns = argv[++i];
      host_tap = argv[++i];
    } else if (a == "--switch" && i + 2 < argc) {
      switch_ns = argv[++i];
      switch_tap = argv[++i];
    } else if (a == "--params" && i + 1 < argc) {
      params = argv[++i];
    } else {
      std::fprintf(stderr, "usage: r1c-linkem --host NETNS TAP --switch NETNS TAP --params FILE\n");
      return 2;
    }
  }
  if (host_ns.empty() || switch_ns.empty() || params.empty()) {
    std::fprintf(stderr, "usage: r1c-linkem --host NETNS TAP --switch NETNS TAP --params FILE\n");
    return 2;
  }
  const int host = OpenTap(host_ns, host_tap);
  const int sw = OpenTap(switch_ns, switch_tap);  // leaves this process in the switch's namespace
  struct sigaction sa {};
  sa.sa_handler = OnHup;
  sigaction(SIGHUP, &sa, nullptr);
  Impairment imp = ReadParams(params);
  std::mt19937_64 rng(20240229);
  std::uniform_real_distribution<double> percent(0, 100);
  std::deque<Frame> queue;  // host -> switch, in order (one fixed delay keeps them ordered)
  std::vector<char> buf(65536);
  uint64_t dropped = 0, passed = 0;
  while (true) {
    if (reload) {
      reload = 0;
      imp = ReadParams(params);
      std::fprintf(stderr, "r1c-linkem: so far %llu frames passed, %llu dropped\n",
                   static_cast<unsigned long long>(passed), static_cast<unsigned long long>(dropped));
    }
    int timeout_ms = -1;
    if (!queue.empty()) {
      const auto wait = std::chrono::ceil<std::chrono::milliseconds>(queue.front().due - Clock::now()).count();
      timeout_ms = static_cast<int>(std::max<int64_t>(wait, 0));
    }
    pollfd fds[2] = {{host, POLLIN, 0}, {sw, POLLIN, 0}};
    const int n = poll(fds, 2, timeout_ms);
    if (n < 0 && errno != EINTR) Die("poll");
    if (n > 0 && (fds[0].revents & POLLIN)) {
      while (true) {
        const ssize_t len = read(host, buf.data(), buf.size());
        if (len <= 0) break;
        if (percent(rng) < imp.loss_pct) {
          ++dropped;
          continue;
        }
        ++passed;
        const auto delay = std::chrono::microseconds(static_cast<int64_t>(imp.delay_ms * 1000));
        queue.push_back({Clock::now() + delay, std::vector<char>(buf.begin(), buf.begin() + len)});
      }
    }
    if (n > 0 && (fds[1].revents & POLLIN)) {
      while (true) {
        const ssize_t len = read(sw, buf.data(), buf.size());
        if (len <= 0) break;
        Send(host, buf.data(), static_cast<size_t>(len), "the host");
      }
    }
    const auto now = Clock::now();
    while (!queue.empty() && queue.front().due <= now) {
      Send(sw, queue.front().bytes.data(), queue.front().bytes.size(), "the switch");
      queue.pop_front();
    }
  }
}

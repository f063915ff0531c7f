// SPDX-License-Identifier: Apache-2.0
// faultline-loopback-probe: what the loopback transport itself costs on this
// machine, without faultline, for reading the faultline-remote numbers.
//
// A forked child serves requests on one connection (TCP on 127.0.0.1 with
// TCP_NODELAY, or a Unix stream socket). Three measurements per transport:
//  - stream: the child writes 1 MiB blocks for --seconds; the parent reads
//    (raw bandwidth, the ceiling for any sequential scan over that socket);
//  - 64 KiB request/response, one at a time (what one demand fault of the
//    default 64 KiB fill size costs at best, no pipelining);
//  - 4 KiB request/response, one at a time: round-trip p50/p99 (the floor
//    under a 4 KiB remote fault's latency).
// The bytes are not checked (this measures the transport, not correctness).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "cli.h"

namespace {

constexpr size_t kBlock = 1 << 20;

uint64_t now_ns() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// A failed system call: "WHAT: strerror", exit 1 (through cli::run).
[[noreturn]] void die(const std::string& what) { faultline::throw_errno(what, errno); }

bool write_all(int fd, const void* p, size_t n) {
  const char* c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t w = ::send(fd, c, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    c += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool read_all(int fd, void* p, size_t n) {
  char* c = static_cast<char*>(p);
  while (n > 0) {
    ssize_t r = ::recv(fd, c, n, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    c += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

// Request: {kind, length}. kind 1: reply with `length` bytes. kind 2: stream
// `length` blocks of 1 MiB. kind 0: done.
struct Request {
  uint64_t kind;
  uint64_t length;
};

void serve(int fd) {
  std::vector<char> block(kBlock, 'x');
  Request rq{};
  while (read_all(fd, &rq, sizeof rq) && rq.kind != 0) {
    if (rq.kind == 1) {
      if (rq.length > kBlock || !write_all(fd, block.data(), rq.length)) return;
    } else {
      for (uint64_t i = 0; i < rq.length; ++i)
        if (!write_all(fd, block.data(), kBlock)) return;
    }
  }
}

struct Listener {
  int fd = -1;
  std::string unix_path;
};

Listener listen_on(bool unix_socket) {
  Listener l;
  if (unix_socket) {
    l.fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l.fd < 0) die("socket(AF_UNIX)");
    l.unix_path = "/tmp/faultline-loopback-probe-" + std::to_string(getpid()) + ".sock";
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", l.unix_path.c_str());
    ::unlink(l.unix_path.c_str());
    if (::bind(l.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) die("bind " + l.unix_path);
  } else {
    l.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l.fd < 0) die("socket(AF_INET)");
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(l.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) die("bind 127.0.0.1:0");
  }
  if (::listen(l.fd, 1) != 0) die("listen");
  return l;
}

int connect_to(const Listener& l) {
  int fd;
  if (!l.unix_path.empty()) {
    fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof a.sun_path, "%s", l.unix_path.c_str());
    if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) die("connect " + l.unix_path);
  } else {
    sockaddr_in a{};
    socklen_t len = sizeof a;
    if (::getsockname(l.fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) die("getsockname");
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) die("connect 127.0.0.1");
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  return fd;
}

double quantile_us(std::vector<uint64_t>& v, double q) {
  std::sort(v.begin(), v.end());
  return static_cast<double>(v[static_cast<size_t>(q * static_cast<double>(v.size() - 1))]) / 1000.0;
}

void probe(bool unix_socket, double seconds) {
  Listener l = listen_on(unix_socket);
  std::fflush(stdout);  // the child must not inherit (and print again) the lines above
  pid_t child = ::fork();
  if (child < 0) die("fork");
  if (child == 0) {
    int c = ::accept4(l.fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) _exit(1);
    int one = 1;
    if (!unix_socket) ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    serve(c);
    _exit(0);
  }
  int fd = connect_to(l);
  std::vector<char> buf(kBlock);
  const char* name = unix_socket ? "unix" : "tcp 127.0.0.1";

  // Stream: ask for blocks in rounds of 256 MiB until the time is up.
  uint64_t bytes = 0;
  const uint64_t t0 = now_ns();
  while (static_cast<double>(now_ns() - t0) * 1e-9 < seconds) {
    Request rq{2, 256};
    if (!write_all(fd, &rq, sizeof rq)) die("send");
    for (int i = 0; i < 256; ++i) {
      if (!read_all(fd, buf.data(), kBlock)) die("recv");
      bytes += kBlock;
    }
  }
  const double stream_s = static_cast<double>(now_ns() - t0) * 1e-9;

  auto round_trips = [&](size_t length, std::vector<uint64_t>& lat) {
    const uint64_t start = now_ns();
    while (static_cast<double>(now_ns() - start) * 1e-9 < seconds) {
      Request rq{1, length};
      const uint64_t a = now_ns();
      if (!write_all(fd, &rq, sizeof rq) || !read_all(fd, buf.data(), length)) die("request");
      lat.push_back(now_ns() - a);
    }
    return static_cast<double>(now_ns() - start) * 1e-9;
  };
  std::vector<uint64_t> lat64, lat4;
  const double s64 = round_trips(64 * 1024, lat64);
  const double s4 = round_trips(4096, lat4);
  Request done{0, 0};
  write_all(fd, &done, sizeof done);
  ::close(fd);
  int status = 0;
  ::waitpid(child, &status, 0);
  ::close(l.fd);
  if (!l.unix_path.empty()) ::unlink(l.unix_path.c_str());

  std::printf("%-14s stream %6.2f GB/s | 64 KiB req/resp %6.2f GB/s, p50 %6.1f us | 4 KiB req/resp p50 %5.1f us, p99 %6.1f us (%zu round trips)\n",
              name, static_cast<double>(bytes) / stream_s / 1e9,
              static_cast<double>(lat64.size()) * 65536.0 / s64 / 1e9, quantile_us(lat64, 0.5),
              quantile_us(lat4, 0.5), quantile_us(lat4, 0.99), lat4.size());
  (void)s4;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 2.0;
  CLI::App app("Measures loopback TCP and Unix-socket bandwidth and request/response latency\n"
               "between two processes.",
               "faultline-loopback-probe");
  faultline::cli::add_version(app, "faultline-loopback-probe");
  app.add_option("--seconds", seconds, "seconds per measurement, more than 0 and at most 60 (default 2)")
      ->type_name("S")
      ->check(CLI::Validator(
          [](std::string& text) {
            double v = 0;
            if (CLI::detail::lexical_cast(text, v) && v > 0 && v <= 60) return std::string();
            return "expected a number of seconds more than 0 and at most 60, got '" + text + "'";
          },
          ""));
  return faultline::cli::run(app, argc, argv, [&seconds] {
    signal(SIGPIPE, SIG_IGN);
    probe(false, seconds);
    probe(true, seconds);
    return 0;
  });
}

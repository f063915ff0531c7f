// SPDX-License-Identifier: Apache-2.0
// faultline-remote configurations: the faultline runtime over a RemoteBackend
// whose page server runs in another process on this machine.
//
// The server process is forked once, before the bench starts any thread, and
// serves an in-memory copy of the dataset (MemoryBackend::borrow over its own
// memory: "a region of a running process" served through the library API) on
// 127.0.0.1 (an ephemeral port) and on a Unix socket. Every run connects a
// fresh RemoteBackend, so the numbers measure the transport and the two
// processes, not the disk: compare them with faultline-memory.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>

#include "bench.h"
#include "faultline/faultline.h"
#include "faultline/page_server.h"
#include "faultline/remote_backend.h"

namespace fbench {

namespace {

bool write_all(int fd, const std::string& s) {
  size_t done = 0;
  while (done < s.size()) {
    ssize_t n = ::write(fd, s.data() + done, s.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// Reads one line ("\n" excluded); false at EOF before any byte.
bool read_line(int fd, std::string& line) {
  line.clear();
  char c;
  for (;;) {
    ssize_t n = ::read(fd, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return !line.empty();
    if (c == '\n') return true;
    line.push_back(c);
  }
}

int thread_count() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("Threads:", 0) == 0) return std::atoi(line.c_str() + 8);
  return -1;
}

// The child: serve until the control pipe closes, then report statistics.
[[noreturn]] void server_child(const Context& ctx, const std::string& unix_path, int control_fd, int report_fd) {
  // If the bench dies (watchdog, SIGBUS), the server goes with it.
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  signal(SIGPIPE, SIG_IGN);
  try {
    std::byte* mem = load_dataset(ctx.path, ctx.size);
    faultline::PageServerOptions options;
    options.listen = {"127.0.0.1:0", "unix:" + unix_path};
    faultline::PageServer server(faultline::MemoryBackend::borrow(std::span<const std::byte>(mem, ctx.size)),
                                 options);
    std::string endpoints;
    for (const std::string& e : server.endpoints()) endpoints += e + "\n";
    write_all(report_fd, endpoints + "READY\n");
    char c;
    for (;;) {  // the bench never writes: this returns at EOF, when it closes its end (or dies)
      const ssize_t n = ::read(control_fd, &c, 1);
      if (n == 0 || (n < 0 && errno != EINTR)) break;
    }
    server.stop();
    const faultline::PageServerStats s = server.stats();
    char buf[512];
    std::snprintf(buf, sizeof buf,
                  "STATS %llu connections, %llu requests, %.1f MiB sent, %llu protocol errors, %llu read errors\n",
                  static_cast<unsigned long long>(s.connections_accepted), static_cast<unsigned long long>(s.requests),
                  static_cast<double>(s.bytes_sent) / (1 << 20), static_cast<unsigned long long>(s.protocol_errors),
                  static_cast<unsigned long long>(s.read_errors));
    write_all(report_fd, buf);
    ::unlink(unix_path.c_str());
    _exit(0);
  } catch (const std::exception& e) {
    write_all(report_fd, std::string("ERROR ") + e.what() + "\n");
    ::unlink(unix_path.c_str());
    _exit(1);
  }
}

}  // namespace

bool is_remote(FlConfig cfg) {
  return cfg == FlConfig::kRemote || cfg == FlConfig::kRemote4k || cfg == FlConfig::kRemoteUnix;
}

std::string start_remote_server(const Context& ctx, RemoteServerProcess& server) {
  const int threads = thread_count();
  if (threads != 1)
    return "cannot fork the page server: the bench already runs " + std::to_string(threads) + " threads";
  std::string unix_path = ctx.dir + "/remote-" + std::to_string(getpid()) + ".sock";
  if (unix_path.size() >= 100) unix_path = "/tmp/faultline-bench-remote-" + std::to_string(getpid()) + ".sock";
  int control[2], report[2];
  if (pipe2(control, O_CLOEXEC) != 0) return std::string("pipe: ") + std::strerror(errno);
  if (pipe2(report, O_CLOEXEC) != 0) {
    ::close(control[0]);
    ::close(control[1]);
    return std::string("pipe: ") + std::strerror(errno);
  }
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = fork();
  if (pid < 0) return std::string("fork: ") + std::strerror(errno);
  if (pid == 0) {
    ::close(control[1]);
    ::close(report[0]);
    server_child(ctx, unix_path, control[0], report[1]);
  }
  ::close(control[0]);
  ::close(report[1]);
  server.pid = pid;
  server.control_fd = control[1];
  server.report_fd = report[0];
  std::string line;
  while (read_line(server.report_fd, line)) {
    if (line == "READY") return "";
    if (line.rfind("ERROR ", 0) == 0) {
      stop_remote_server(server);
      return "page server process: " + line.substr(6);
    }
    server.endpoints.push_back(line);
  }
  stop_remote_server(server);
  return "page server process exited before it was ready";
}

std::string stop_remote_server(RemoteServerProcess& server) {
  if (server.pid < 0) return "";
  ::close(server.control_fd);
  std::string stats, line;
  while (read_line(server.report_fd, line))
    if (line.rfind("STATS ", 0) == 0) stats = line.substr(6);
  ::close(server.report_fd);
  int status = 0;
  while (waitpid(server.pid, &status, 0) < 0 && errno == EINTR) {
  }
  server.pid = -1;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    stats += (stats.empty() ? "" : "; ") + std::string("server process ended abnormally (status ") +
             std::to_string(status) + ")";
  return stats;
}

std::shared_ptr<faultline::Backend> make_remote_backend(const Context& ctx, FlConfig cfg) {
  faultline::RemoteOptions o;
  o.address = cfg == FlConfig::kRemoteUnix ? ctx.remote_unix : ctx.remote_tcp;
  if (o.address.empty()) throw faultline::Error("no page server process (it failed to start; see above)");
  return faultline::connect_remote(o);
}

}  // namespace fbench

// SPDX-License-Identifier: Apache-2.0
// `faultline serve`: serves a file, or the uncompressed contents of a zstd
// snapshot, read-only to faultline clients (connect_remote(),
// faultline/remote_backend.h) with a PageServer.
//
// The endpoints are printed on stdout, one per line, as soon as they are
// bound, so a script can listen on port 0 and read the port back.
// Connections and errors are logged on stderr. SIGINT, SIGTERM and SIGHUP
// (the terminal went away) stop the server cleanly (exit 0, Unix socket
// files removed); they are blocked before the server thread starts and
// taken from a signalfd, so no handler runs in the middle of the server.
#include <fcntl.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "commands.h"
#include "faultline/error.h"
#include "faultline/file_backend.h"
#include "faultline/page_server.h"
#include "faultline/zstd_snapshot_backend.h"
#include "unique_fd.h"

namespace faultline::tools {
namespace {

constexpr const char* kDefaultListen = "127.0.0.1:7117";

const char* kServeUsage = R"(usage: faultline serve [options] FILE
       faultline serve [options] --snapshot SNAPSHOT

Serves FILE, or the uncompressed contents of a compressed snapshot
(faultline/snapshot.h; decompressed chunk by chunk as clients ask), read-only
to faultline clients (connect_remote() in faultline/remote_backend.h) over
TCP or Unix sockets. Prints each bound
endpoint on stdout, one per line, then logs connections and errors on stderr
until SIGINT, SIGTERM or SIGHUP, which stop it cleanly (exit status 0).

options:
  --listen ADDR          where to listen; repeatable. HOST:PORT (TCP; port 0
                         picks a free port, printed on stdout; [::1]:PORT for
                         IPv6) or unix:/PATH (a Unix socket; a socket file
                         left there by a server that is gone is replaced, one
                         a running server listens on or a file that is not a
                         socket is refused; removed on exit if still ours).
                         Default 127.0.0.1:7117: only this machine can connect.
  --secret-file FILE     require clients to prove they know the secret in
                         FILE (HMAC-SHA256 challenge and response; the secret
                         never crosses the wire). One trailing newline is
                         ignored. Never pass a secret on the command line.
  --max-connections N    connections at once; more are closed at once (default 64)
  --max-request SIZE     largest read one request may ask for (default 4M)
  --max-in-flight SIZE   per connection: bytes asked for, not yet sent (default 64M)
  --idle-timeout SEC     close a connection silent this long (default 60)
  --direct               read FILE with O_DIRECT (bypass the page cache)
  --snapshot SNAPSHOT    serve a snapshot instead of a FILE
  --workers N            decompression threads for --snapshot (default 1)
  -h, --help             this text

SIZE takes K, M or G suffixes (powers of 1024).
Exit status: 0 stopped by a signal, 1 the file, snapshot or an address cannot be used,
2 bad arguments.
)";

struct ServeArgs {
  std::string file;
  std::string snapshot;
  unsigned workers = 1;
  std::vector<std::string> listen;
  std::string secret_file;
  PageServerOptions server;
  bool direct = false;
};

// A usage error: printed with a pointer to --help, exit status 2.
struct UsageError {
  std::string message;
};

bool parse_count(const std::string& s, uint64_t& out) {
  if (s.empty() || s[0] == '-') return false;
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (errno != 0 || end == s.c_str()) return false;
  std::string suffix = end;
  uint64_t mult = 1;
  if (suffix.empty()) mult = 1;
  else if (suffix == "K" || suffix == "k") mult = 1ull << 10;
  else if (suffix == "M" || suffix == "m") mult = 1ull << 20;
  else if (suffix == "G" || suffix == "g") mult = 1ull << 30;
  else return false;
  if (v > UINT64_MAX / mult) return false;
  out = v * mult;
  return true;
}

uint64_t parse_option_number(const std::string& option, const std::string& value, uint64_t lo, uint64_t hi) {
  uint64_t v = 0;
  if (!parse_count(value, v) || v < lo || v > hi)
    throw UsageError{option + ": expected a number from " + std::to_string(lo) + " to " + std::to_string(hi) +
                     " (K, M, G suffixes allowed), got '" + value + "'"};
  return v;
}

ServeArgs parse_serve_args(int argc, char** argv, bool& help) {
  ServeArgs a;
  help = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    bool has_value = false;
    if (arg.rfind("--", 0) == 0 && arg.find('=') != std::string::npos) {
      value = arg.substr(arg.find('=') + 1);
      arg = arg.substr(0, arg.find('='));
      has_value = true;
    }
    auto take = [&]() -> std::string {
      if (has_value) return value;
      if (i + 1 >= argc) throw UsageError{arg + ": missing value"};
      return argv[++i];
    };
    auto no_value = [&]() {
      if (has_value) throw UsageError{arg + ": takes no value"};
    };
    if (arg == "-h" || arg == "--help") {
      help = true;
      return a;
    } else if (arg == "--listen") {
      std::string v = take();
      if (v.empty()) throw UsageError{"--listen: empty address"};
      a.listen.push_back(v);
    } else if (arg == "--secret-file") {
      a.secret_file = take();
      if (a.secret_file.empty()) throw UsageError{"--secret-file: empty file name"};
    } else if (arg == "--secret") {
      throw UsageError{"--secret: not accepted (a secret on the command line is visible to every user in ps); "
                       "put it in a file readable only by you and use --secret-file"};
    } else if (arg == "--max-connections") {
      a.server.max_connections = parse_option_number(arg, take(), 1, 65536);
    } else if (arg == "--max-request") {
      a.server.max_request_bytes = static_cast<uint32_t>(parse_option_number(arg, take(), 4096, 1ull << 30));
    } else if (arg == "--max-in-flight") {
      a.server.max_in_flight_bytes = parse_option_number(arg, take(), 4096, 1ull << 40);
    } else if (arg == "--idle-timeout") {
      a.server.idle_timeout = std::chrono::seconds(parse_option_number(arg, take(), 1, 7 * 86400));
    } else if (arg == "--snapshot") {
      if (!a.snapshot.empty()) throw UsageError{"--snapshot given twice"};
      a.snapshot = take();
      if (a.snapshot.empty()) throw UsageError{"--snapshot: empty file name"};
    } else if (arg == "--workers") {
      a.workers = static_cast<unsigned>(parse_option_number(arg, take(), 1, 256));
    } else if (arg == "--direct") {
      no_value();
      a.direct = true;
    } else if (!arg.empty() && arg[0] == '-') {
      throw UsageError{"unknown option '" + arg + "'"};
    } else {
      if (!a.file.empty()) throw UsageError{"more than one FILE: '" + a.file + "' and '" + arg + "'"};
      a.file = arg;
    }
  }
  if (a.file.empty() && a.snapshot.empty()) throw UsageError{"missing FILE (or --snapshot SNAPSHOT) to serve"};
  if (!a.file.empty() && !a.snapshot.empty())
    throw UsageError{"both FILE '" + a.file + "' and --snapshot '" + a.snapshot + "': serve one"};
  if (!a.snapshot.empty() && a.direct) throw UsageError{"--direct applies to FILE, not to --snapshot"};
  if (a.server.max_in_flight_bytes < a.server.max_request_bytes)
    throw UsageError{"--max-in-flight (" + std::to_string(a.server.max_in_flight_bytes) +
                     ") must be at least --max-request (" + std::to_string(a.server.max_request_bytes) + ")"};
  if (a.listen.empty()) a.listen.push_back(kDefaultListen);
  return a;
}

// Reads the shared secret. Throws Error naming the file.
std::string read_secret(const std::string& path) {
  detail::UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_errno("--secret-file " + path, errno);
  std::string secret;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("--secret-file " + path + ": read", errno);
    if (n == 0) break;
    secret.append(buf, static_cast<size_t>(n));
    if (secret.size() > (1u << 20)) throw Error("--secret-file " + path + ": larger than 1 MiB; is it the right file?");
  }
  struct stat st {};
  const bool others_can_read = ::fstat(fd.get(), &st) == 0 && (st.st_mode & 0044) != 0;
  if (!secret.empty() && secret.back() == '\n') secret.pop_back();
  if (!secret.empty() && secret.back() == '\r') secret.pop_back();
  if (secret.empty()) throw Error("--secret-file " + path + ": empty (no secret in it)");
  if (others_can_read)
    std::fprintf(stderr, "faultline serve: warning: %s is readable by other users (chmod 600 it)\n", path.c_str());
  return secret;
}

// One log line on stderr: "faultline serve: HH:MM:SS.mmm message".
void log_line(const std::string& message) {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t{};
  gmtime_r(&ts.tv_sec, &t);
  std::fprintf(stderr, "faultline serve: %02d:%02d:%02d.%03ld %s\n", t.tm_hour, t.tm_min, t.tm_sec,
               ts.tv_nsec / 1000000, message.c_str());
}

// The signalfd that delivers SIGINT, SIGTERM and SIGHUP; closed with the object.
class StopSignals {
 public:
  StopSignals() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    sigaddset(&set_, SIGHUP);
    // Blocked in this thread before the server thread exists, so every thread
    // has them blocked and only the signalfd sees them.
    if (int e = pthread_sigmask(SIG_BLOCK, &set_, nullptr); e != 0) throw_errno("pthread_sigmask", e);
    fd_ = detail::UniqueFd(signalfd(-1, &set_, SFD_CLOEXEC));
    if (!fd_) throw_errno("signalfd", errno);
  }
  StopSignals(const StopSignals&) = delete;
  StopSignals& operator=(const StopSignals&) = delete;

  // Blocks until one of the signals arrives; returns its number.
  int wait() {
    for (;;) {
      signalfd_siginfo info{};
      ssize_t n = ::read(fd_.get(), &info, sizeof info);
      if (n == static_cast<ssize_t>(sizeof info)) return static_cast<int>(info.ssi_signo);
      if (n < 0 && errno != EINTR) throw_errno("read(signalfd)", errno);
    }
  }

 private:
  sigset_t set_{};
  detail::UniqueFd fd_;
};

std::string stats_line(const PageServerStats& s) {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "%llu connections (%llu rejected), %llu requests, %llu bytes sent, %llu protocol errors, "
                "%llu authentication failures, %llu idle timeouts, %llu read errors",
                static_cast<unsigned long long>(s.connections_accepted),
                static_cast<unsigned long long>(s.connections_rejected), static_cast<unsigned long long>(s.requests),
                static_cast<unsigned long long>(s.bytes_sent), static_cast<unsigned long long>(s.protocol_errors),
                static_cast<unsigned long long>(s.auth_failures), static_cast<unsigned long long>(s.idle_timeouts),
                static_cast<unsigned long long>(s.read_errors));
  return buf;
}

int serve(const ServeArgs& args) {
  // A client that goes away while we write must not kill the server.
  signal(SIGPIPE, SIG_IGN);
  StopSignals stop_signals;

  PageServerOptions options = args.server;
  options.listen = args.listen;
  if (!args.secret_file.empty()) options.secret = read_secret(args.secret_file);
  options.log = log_line;

  std::shared_ptr<Backend> source;
  if (!args.snapshot.empty()) {
    ZstdSnapshotOptions snapshot_options;
    snapshot_options.workers = args.workers;
    source = open_zstd_snapshot(args.snapshot, snapshot_options);
  } else {
    FileBackendOptions file_options;
    file_options.direct = args.direct;
    source = std::make_shared<FileBackend>(args.file, file_options);
  }
  const uint64_t size = source->size();
  const std::string name = source->name();
  PageServer server(source, options);
  source.reset();

  const std::vector<std::string> endpoints = server.endpoints();
  for (const std::string& e : endpoints) std::printf("%s\n", e.c_str());
  std::fflush(stdout);
  std::string where;
  for (const std::string& e : endpoints) where += (where.empty() ? "" : ", ") + e;
  log_line("serving " + name + " (" + std::to_string(size) + " bytes) on " + where +
           (options.secret.empty() ? " without authentication" : " with shared-secret authentication"));

  const int sig = stop_signals.wait();
  log_line(std::string("received ") + (sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "SIGHUP") + ", stopping");
  server.stop();
  log_line("stopped: " + stats_line(server.stats()));
  return 0;
}

}  // namespace

int serve_command(int argc, char** argv) {
  bool help = false;
  ServeArgs args;
  try {
    args = parse_serve_args(argc, argv, help);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "faultline serve: %s\nTry 'faultline serve --help'.\n", e.message.c_str());
    return 2;
  }
  if (help) {
    std::fputs(kServeUsage, stdout);
    return 0;
  }
  try {
    return serve(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "faultline serve: %s\n", e.what());
    return 1;
  }
}

}  // namespace faultline::tools

// SPDX-License-Identifier: Apache-2.0
// `faultline serve`: serves a file, or the uncompressed contents of a zstd
// snapshot, read-only to faultline clients (connect_remote(),
// faultline/remote_backend.h) with a PageServer.
//
// Arguments through CLI11 (tools/cli/cli.h). The endpoints are printed on
// stdout, one per line, as soon as they are bound (then the --metrics URL),
// so a script can listen on port 0 and read the port back. Connections and
// errors are logged on stderr. --metrics serves the page server's counters
// over HTTP (metrics_http.h, serve_metrics.h) from a thread of its own. SIGINT, SIGTERM and SIGHUP
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

#include "cli.h"
#include "commands.h"
#include "faultline/error.h"
#include "faultline/file_backend.h"
#include "faultline/page_server.h"
#include "faultline/http_backend.h"
#include "faultline/zstd_snapshot_backend.h"
#include "metrics_http.h"
#include "url_source.h"
#include "serve_metrics.h"
#include "unique_fd.h"

namespace faultline::tools {
namespace {

constexpr const char* kDefaultListen = "127.0.0.1:7117";

constexpr const char* kAbout =
    "Serves FILE, or the uncompressed contents of a compressed snapshot\n"
    "(decompressed chunk by chunk as clients ask), read-only to faultline\n"
    "clients (connect_remote() in faultline/remote_backend.h) over TCP or Unix\n"
    "sockets. FILE and SNAPSHOT may be http:// or https:// URLs, read with\n"
    "range requests (docs/http.md): a page server in front of a web server or\n"
    "an object store.";

constexpr const char* kFooter =
    "Prints each bound --listen endpoint on stdout, one per line in the order\n"
    "given, then, with --metrics, one more line: the metrics URL\n"
    "(http://HOST:PORT/metrics, the port resolved). Then logs connections and\n"
    "errors on stderr until SIGINT, SIGTERM or SIGHUP, which stop it cleanly.\n"
    "\n"
    "--metrics serves Prometheus text format (version 0.0.4) at GET /metrics\n"
    "over HTTP/1.1: requests, bytes sent, errors by kind, connections and a\n"
    "request-latency histogram (docs/serve.md lists them). Only there: it is\n"
    "no page-server address, and a page-server address serves no HTTP.\n"
    "\n"
    "SIZE is a number of bytes with an optional suffix K, M, G or T (powers\n"
    "of 1024; KiB and KB mean K too).\n"
    "\n"
    "Exit status: 0 stopped by a signal, 1 the file, snapshot, an address or\n"
    "standard output cannot be used, 2 bad arguments.";

struct ServeArgs {
  std::string file;
  std::string snapshot;
  unsigned workers = 1;
  std::vector<std::string> listen;
  std::string secret_file;
  std::string metrics;
  PageServerOptions server;
  unsigned idle_timeout_s = 60;
  bool direct = false;
  UrlArgs url;
};

// Adds serve's options to `app`, writing into `a`; the checks that involve
// several options run once all are parsed.
void add_serve_options(CLI::App& app, ServeArgs& a) {
  auto not_empty = CLI::Validator(
      [](std::string& v) { return v.empty() ? std::string("empty value") : std::string(); }, "");
  app.add_option("FILE", a.file, "the file (or http(s) URL) to serve (or --snapshot)")->type_name("");
  app.add_option("--listen", a.listen,
                 "where to listen; repeatable. HOST:PORT (TCP;\n"
                 "port 0 picks a free port, printed on stdout;\n"
                 "[::1]:PORT for IPv6) or unix:/PATH (a Unix\n"
                 "socket; a socket file left by a server that is\n"
                 "gone is replaced, one a running server listens\n"
                 "on or a file that is not a socket is refused;\n"
                 "removed on exit if still ours; PATH.lock beside\n"
                 "it serialises servers starting there). Default\n"
                 "127.0.0.1:7117: only this machine can connect.")
      ->type_name("ADDR")
      ->allow_extra_args(false)  // (one address per --listen: FILE may follow)
      ->check(not_empty);
  app.add_option("--secret-file", a.secret_file,
                 "require clients to prove they know the secret\n"
                 "in FILE (HMAC-SHA256 challenge and response;\n"
                 "the secret never crosses the wire). One trailing\n"
                 "newline is ignored. Never pass a secret on the\n"
                 "command line.")
      ->type_name("FILE")
      ->check(not_empty);
  app.add_option("--secret",
                 [](const CLI::results_t&) -> bool {
                   throw CLI::ValidationError(
                       "--secret", "not accepted (a secret on the command line is visible to every user in ps); "
                                   "put it in a file readable only by you and use --secret-file");
                 },
                 "refused: use --secret-file")
      ->type_name("SECRET");
  app.add_option("--max-connections", a.server.max_connections,
                 "connections at once, 1 to 65536; more are\n"
                 "closed at once (default 64)")
      ->check(CLI::Range(1, 65536).description(""))
      ->type_name("N");
  cli::add_size(app, "--max-request", a.server.max_request_bytes,
                "largest read one request may ask for, 4K to 1G\n"
                "(default 4M)",
                4096, 1u << 30);
  cli::add_size(app, "--max-in-flight", a.server.max_in_flight_bytes,
                "per connection: bytes asked for, not yet sent, 4K\n"
                "to 1T (default 64M)",
                4096, uint64_t{1} << 40);
  app.add_option("--idle-timeout", a.idle_timeout_s,
                 "close a connection silent this long, 1 to 604800\n"
                 "(default 60)")
      ->check(CLI::Range(1, 7 * 86400).description(""))
      ->type_name("SEC");
  app.add_flag("--direct", a.direct, "read FILE with O_DIRECT (bypass the page cache)");
  app.add_option("--snapshot", a.snapshot, "serve this compressed snapshot (a file or an\nhttp(s) URL) instead of a FILE")
      ->type_name("SNAPSHOT")
      ->check(not_empty);
  app.add_option("--workers", a.workers, "decompression threads for --snapshot, 1 to 256\n(default 1)")
      ->check(CLI::Range(1, 256).description(""))
      ->type_name("N");
  app.add_option("--metrics", a.metrics,
                 "serve Prometheus metrics over HTTP at\n"
                 "http://ADDR/metrics; HOST:PORT, port 0 picks a\n"
                 "free port (the URL is printed on stdout after\n"
                 "the endpoints). Off by default.")
      ->type_name("ADDR")
      ->check(not_empty);
  a.url.add_to(app);
  app.callback([&a] {
    if (a.file.empty() && a.snapshot.empty()) throw CLI::ValidationError("missing FILE (or --snapshot SNAPSHOT) to serve");
    if (!a.file.empty() && !a.snapshot.empty())
      throw CLI::ValidationError("both FILE '" + a.file + "' and --snapshot '" + a.snapshot + "': serve one");
    if (!a.snapshot.empty() && a.direct) throw CLI::ValidationError("--direct applies to FILE, not to --snapshot");
    if (a.direct && is_http_url(a.file)) throw CLI::ValidationError("--direct applies to a local FILE, not to a URL");
    if (a.server.max_in_flight_bytes < a.server.max_request_bytes)
      throw CLI::ValidationError("--max-in-flight (" + std::to_string(a.server.max_in_flight_bytes) +
                                 ") must be at least --max-request (" + std::to_string(a.server.max_request_bytes) +
                                 ")");
    if (a.listen.empty()) a.listen.push_back(kDefaultListen);
    const bool ephemeral = a.metrics.size() >= 2 && a.metrics.compare(a.metrics.size() - 2, 2, ":0") == 0;
    for (const std::string& l : a.listen)
      if (!a.metrics.empty() && !ephemeral && l == a.metrics)
        throw CLI::ValidationError("--metrics " + a.metrics + " is also a --listen address: give it one of its own");
    a.server.idle_timeout = std::chrono::seconds(a.idle_timeout_s);
  });
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

// One log line on stderr: "faultline serve: HH:MM:SS.mmm [LEVEL: ]message";
// also the page server's LogSink (every level: the operator asked to serve).
void log_line(LogLevel level, std::string_view message) {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t{};
  gmtime_r(&ts.tv_sec, &t);
  const char* tag = level == LogLevel::kError ? "error: " : level == LogLevel::kWarning ? "warning: " : "";
  std::fprintf(stderr, "faultline serve: %02d:%02d:%02d.%03ld %s%.*s\n", t.tm_hour, t.tm_min, t.tm_sec,
               ts.tv_nsec / 1000000, tag, static_cast<int>(message.size()), message.data());
}
void log_line(const std::string& message) { log_line(LogLevel::kInfo, message); }

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
                "%llu authentication failures, %llu idle timeouts, %llu read errors, %llu zero bytes",
                static_cast<unsigned long long>(s.connections_accepted),
                static_cast<unsigned long long>(s.connections_rejected), static_cast<unsigned long long>(s.requests),
                static_cast<unsigned long long>(s.bytes_sent), static_cast<unsigned long long>(s.protocol_errors),
                static_cast<unsigned long long>(s.auth_failures), static_cast<unsigned long long>(s.idle_timeouts),
                static_cast<unsigned long long>(s.read_errors), static_cast<unsigned long long>(s.zero_bytes));
  return buf;
}

int serve(const ServeArgs& args) {
  // A client that goes away while we write must not kill the server.
  signal(SIGPIPE, SIG_IGN);
  StopSignals stop_signals;  // (before any thread starts: see there)

  PageServerOptions options = args.server;
  options.listen = args.listen;
  if (!args.secret_file.empty()) options.secret = read_secret(args.secret_file);
  options.log = [](LogLevel level, std::string_view message) { log_line(level, message); };

  std::shared_ptr<Backend> source;
  if (!args.snapshot.empty()) {
    ZstdSnapshotOptions snapshot_options;
    snapshot_options.workers = args.workers;
    source = is_http_url(args.snapshot) ? open_zstd_snapshot(args.url.open(args.snapshot), snapshot_options)
                                        : open_zstd_snapshot(args.snapshot, snapshot_options);
  } else if (is_http_url(args.file)) {
    source = args.url.open(args.file);
  } else {
    FileBackendOptions file_options;
    file_options.direct = args.direct;
    source = std::make_shared<FileBackend>(args.file, file_options);
  }
  const uint64_t size = source->size();
  const std::string name = source->name();
  PageServer server(source, options);
  source.reset();
  std::unique_ptr<MetricsHttpServer> metrics;
  if (!args.metrics.empty())
    metrics = std::make_unique<MetricsHttpServer>(args.metrics,
                                                  [&server] { return page_server_metrics_text(server.stats()); });

  const std::vector<std::string> endpoints = server.endpoints();
  for (const std::string& e : endpoints) std::printf("%s\n", e.c_str());
  if (metrics) std::printf("http://%s/metrics\n", metrics->endpoint().c_str());
  // A script waits for these lines: if they cannot be written, stop now
  // (cli::run reports it) rather than serve where nobody knows.
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) return 1;
  std::string where;
  for (const std::string& e : endpoints) where += (where.empty() ? "" : ", ") + e;
  log_line("serving " + name + " (" + std::to_string(size) + " bytes) on " + where +
           (options.secret.empty() ? " without authentication" : " with shared-secret authentication") +
           (metrics ? ", metrics at http://" + metrics->endpoint() + "/metrics" : ""));

  const int sig = stop_signals.wait();
  log_line(std::string("received ") + (sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "SIGHUP") + ", stopping");
  if (metrics) metrics->stop();
  server.stop();
  log_line("stopped: " + stats_line(server.stats()));
  return 0;
}

}  // namespace

int serve_command(int argc, char** argv) {
  CLI::App app(kAbout, "faultline serve");
  app.footer(kFooter);
  ServeArgs args;
  add_serve_options(app, args);
  return cli::run(app, argc, argv, [&] {
    try {
      return serve(args);
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {  // (std::system_error from a thread, say: reported, not a crash)
      throw Error(e.what());
    }
  });
}

}  // namespace faultline::tools

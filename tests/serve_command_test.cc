// SPDX-License-Identifier: Apache-2.0
// `faultline serve` end to end: the real binary, started on port 0 (and a
// Unix socket), mapped from this process over a RemoteBackend with every
// byte checked, then stopped with SIGTERM and expected to exit 0. Also
// --snapshot, a file and a snapshot read over http(s) from a real nginx,
// a secret file, and the errors: bad arguments, a missing file,
// a file that is not a snapshot, an address in use.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <utility>  // (before Asio: 1.74's awaitable.hpp uses std::exchange without it)

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "faultline/faultline.h"
#include "faultline/page_server.h"
#include "faultline/remote_backend.h"
#include "faultline/snapshot.h"
#include "child_process.h"
#include "nginx_fixture.h"
#include "snapshot_test_util.h"
#include "test_util.h"
#ifdef FAULTLINE_CLI_PATH  // (the tool's targets exist)
#include "metrics_http.h"
#include "serve_metrics.h"
#endif

extern char** environ;

using namespace faultline;
using namespace faultline::test;

#ifdef FAULTLINE_CLI_PATH

namespace {

// A `faultline` process (child_process.h).
class CliProcess : public ChildProcess {
 public:
  explicit CliProcess(std::vector<std::string> args, std::vector<std::string> env = {},
                      const std::string& stdout_path = "")
      : ChildProcess(FAULTLINE_CLI_PATH, std::move(args), std::move(env), stdout_path) {}
};

// Waits until the server has logged `n` clean disconnections, so a stop
// that follows finds no connection open.
void wait_for_disconnects(const CliProcess& server, size_t n) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  size_t seen = 0;
  for (;;) {
    const std::string log = server.stderr_text();
    seen = 0;
    for (size_t at = log.find(": disconnected"); at != std::string::npos; at = log.find(": disconnected", at + 1)) ++seen;
    if (seen >= n || std::chrono::steady_clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  INFO("server log: " << server.stderr_text());
  REQUIRE(seen >= n);
}

// Maps the object served at `address` and compares it with `want`, byte for
// byte. Returns "" or what differed; uses no Catch macro, so that a second
// client thread can run it (Catch's assertions are not thread-safe).
std::string serve_mismatch(const std::string& address, const std::vector<std::byte>& want,
                           const std::string& secret = "") {
  try {
    RemoteOptions ro;
    ro.address = address;
    ro.secret = secret;
    auto remote = connect_remote(ro);
    if (remote->size() != want.size()) return address + ": size " + std::to_string(remote->size());
    Runtime rt;
    for (uint32_t fill : {4096u, 65536u}) {
      RegionOptions o;
      o.fill_size = fill;
      Region r = rt.map(remote, o);
      const long at = first_mismatch(r.data(), want.data(), want.size());
      if (at != -1) return address + " fill " + std::to_string(fill) + ": first mismatch at " + std::to_string(at);
      if (r.stats().errors != 0) return address + " fill " + std::to_string(fill) + ": read errors";
    }
    return "";
  } catch (const std::exception& e) {
    return address + ": " + e.what();
  }
}

void check_served(const std::string& address, const std::vector<std::byte>& want, const std::string& secret = "") {
  REQUIRE(serve_mismatch(address, want, secret) == "");
}

std::string unix_path(const char* tag) {
  return "/tmp/faultline-serve-test-" + std::to_string(getpid()) + "-" + tag + ".sock";
}

}  // namespace

TEST_CASE("faultline serve: port 0 and a Unix socket, every byte, clean exit on SIGTERM, SIGINT or SIGHUP",
          "[serve][fork]") {
  const auto data = pattern(3 * 1024 * 1024 + 777, 61);
  TempFile file(data);
  const std::string sock = unix_path("a");
  const int sig = GENERATE(SIGTERM, SIGINT, SIGHUP);
  CliProcess server({"serve", file.path(), "--listen", "127.0.0.1:0", "--listen", "unix:" + sock});
  const std::string tcp = server.read_line();
  const std::string local = server.read_line();
  INFO("stderr: " << server.stderr_text());
  REQUIRE(tcp.rfind("127.0.0.1:", 0) == 0);
  REQUIRE(tcp != "127.0.0.1:0");  // the bound port, not the requested one
  REQUIRE(local == "unix:" + sock);

  check_served(tcp, data);
  check_served(local, data);
  // Two clients at once.
  std::string other_result;
  std::thread other([&] { other_result = serve_mismatch(tcp, data); });
  const std::string local_result = serve_mismatch(local, data);
  other.join();
  REQUIRE(other_result == "");
  REQUIRE(local_result == "");

  wait_for_disconnects(server, 4);
  server.signal(sig);
  REQUIRE(server.wait() == 0);
  const std::string log = server.stderr_text();
  CHECK(log.find(file.path()) != std::string::npos);  // "serving FILE ..."
  const char* received = sig == SIGTERM ? "received SIGTERM" : sig == SIGINT ? "received SIGINT" : "received SIGHUP";
  CHECK(log.find(received) != std::string::npos);
  CHECK(log.find("stopped:") != std::string::npos);
  struct stat st {};
  CHECK(::lstat(sock.c_str(), &st) != 0);  // its socket file removed
  // Stopped means gone: nobody accepts there any more.
  RemoteOptions ro;
  ro.address = tcp;
  ro.deadline = std::chrono::milliseconds(500);
  CHECK_THROWS_AS(connect_remote(ro), Error);
}

TEST_CASE("faultline serve: SIGTERM with a client connected still exits 0", "[serve][fork]") {
  const auto data = pattern(1024 * 1024, 65);
  TempFile file(data);
  // Under ASan, LeakSanitizer checks that no connection object outlives the
  // stop (they once did: their handlers were dropped unrun, each holding its
  // connection); a leak makes the exit status nonzero.
  CliProcess server({"serve", file.path(), "--listen", "127.0.0.1:0"});
  const std::string tcp = server.read_line();
  INFO("stderr: " << server.stderr_text());
  REQUIRE(!tcp.empty());
  RemoteOptions ro;
  ro.address = tcp;
  ro.deadline = std::chrono::milliseconds(2000);
  auto remote = connect_remote(ro);
  {
    Runtime rt;
    Region r = rt.map(remote);
    REQUIRE(first_mismatch(r.data(), data.data(), 65536) == -1);  // the connection is in use
  }
  server.signal(SIGTERM);
  CHECK(server.wait() == 0);
  CHECK(server.stderr_text().find("stopped:") != std::string::npos);
}

TEST_CASE("faultline serve --snapshot: the snapshot's uncompressed bytes", "[serve][fork]") {
  // Zero runs (stored as flags) between patterned stretches, a short last chunk.
  auto data = pattern(2 * 1024 * 1024 + 4096 * 3 + 100, 64);
  std::fill(data.begin() + 65536, data.begin() + 5 * 65536, std::byte{0});
  const std::string snap = "/tmp/faultline-serve-test-" + std::to_string(getpid()) + ".snap";
  SnapshotWriteOptions so;
  so.chunk_size = 64 * 1024;
  so.threads = 1;
  write_snapshot(data, snap, so);
  CliProcess server({"serve", "--snapshot", snap, "--workers", "2", "--listen", "127.0.0.1:0"});
  const std::string tcp = server.read_line();
  INFO("stderr: " << server.stderr_text());
  REQUIRE(tcp.rfind("127.0.0.1:", 0) == 0);
  check_served(tcp, data);
  wait_for_disconnects(server, 1);
  server.signal(SIGTERM);
  CHECK(server.wait() == 0);
  CHECK(server.stderr_text().find(snap) != std::string::npos);
  ::unlink(snap.c_str());
}

TEST_CASE("faultline serve URL and --snapshot URL: a page server in front of a web server", "[serve][fork][http]") {
  if (!Nginx::available()) {
    WARN("SKIPPED: no /usr/sbin/nginx (Debian's nginx-light)");
    return;
  }
  auto data = pattern(2 * 1024 * 1024 + 5000, 66);
  std::fill(data.begin() + 65536, data.begin() + 3 * 65536, std::byte{0});  // zero chunks in the snapshot
  for (const bool tls : {false, true}) {
    Nginx web(tls);
    {
      std::ofstream out(web.root() + "/image", std::ios::binary);
      out.write(reinterpret_cast<const char*>(data.data()), static_cast<std::streamsize>(data.size()));
    }
    SnapshotWriteOptions so;
    so.chunk_size = 64 * 1024;
    write_snapshot(data, web.root() + "/image.flsnap", so);
    for (const char* what : {"image", "image.flsnap"}) {
      const bool snap = std::string(what) == "image.flsnap";
      std::vector<std::string> args = {"serve", "--listen", "127.0.0.1:0"};
      if (snap) args.push_back("--snapshot");
      args.push_back(web.url(what));
      if (tls) args.insert(args.end(), {"--ca-file", web.ca_file()});
      CliProcess server(args);
      const std::string tcp = server.read_line();
      INFO(web.url(what) << " stderr: " << server.stderr_text());
      REQUIRE(tcp.rfind("127.0.0.1:", 0) == 0);
      check_served(tcp, data);
      wait_for_disconnects(server, 1);
      server.signal(SIGTERM);
      CHECK(server.wait() == 0);
      CHECK(server.stderr_text().find(web.url(what)) != std::string::npos);  // "serving http..."
    }
    if (tls) {  // without the CA file the certificate does not verify: exit 1, saying so
      CliProcess server({"serve", "--listen", "127.0.0.1:0", web.url("image")});
      CHECK(server.wait() == 1);
      CHECK_THAT(server.stderr_text(), Catch::Contains("certificate verify failed"));
    }
  }
  CliProcess direct({"serve", "--direct", "http://127.0.0.1:1/image"});
  CHECK(direct.wait() == 2);
  CHECK_THAT(direct.stderr_text(), Catch::Contains("--direct applies to a local FILE, not to a URL"));
}

TEST_CASE("faultline serve: a shared secret from a file", "[serve][fork]") {
  const auto data = pattern(256 * 1024, 62);
  TempFile file(data);
  const std::string secret_path = "/tmp/faultline-serve-test-" + std::to_string(getpid()) + ".secret";
  {
    std::ofstream s(secret_path);
    s << "correct horse battery staple\n";  // the trailing newline is not part of the secret
  }
  chmod(secret_path.c_str(), 0600);
  CliProcess server({"serve", file.path(), "--listen", "127.0.0.1:0", "--secret-file", secret_path});
  const std::string tcp = server.read_line();
  INFO("stderr: " << server.stderr_text());
  REQUIRE(tcp.rfind("127.0.0.1:", 0) == 0);
  check_served(tcp, data, "correct horse battery staple");
  RemoteOptions ro;
  ro.address = tcp;
  ro.deadline = std::chrono::milliseconds(3000);
  ro.secret = "wrong";
  CHECK_THROWS_AS(connect_remote(ro), Error);
  ro.secret = "";
  CHECK_THROWS_AS(connect_remote(ro), Error);
  wait_for_disconnects(server, 1);
  server.signal(SIGTERM);
  CHECK(server.wait() == 0);
  ::unlink(secret_path.c_str());
}

TEST_CASE("faultline serve: errors name the problem", "[serve][fork]") {
  TempFile file(pattern(8192, 63));
  struct Case {
    std::vector<std::string> args;
    int status;
    std::string message;
  };
  const std::string missing = "/nonexistent/faultline-serve-test.dat";
  const std::string empty_secret = "/tmp/faultline-serve-test-" + std::to_string(getpid()) + ".empty";
  { std::ofstream(empty_secret) << "\n"; }
  const std::vector<Case> cases = {
      {{"serve"}, 2, "missing FILE"},
      {{"serve", file.path(), "--bogus"}, 2, "not expected: --bogus"},
      {{"serve", file.path(), "--secret", "x"}, 2, "--secret-file"},
      {{"serve", file.path(), "--max-connections", "0"}, 2, "--max-connections"},
      {{"serve", file.path(), "--max-request", "12Q"}, 2, "--max-request"},
      {{"serve", file.path(), "--listen"}, 2, "--listen: 1 required ADDR missing"},
      {{"serve", file.path(), "--listen", ""}, 2, "--listen: empty value"},
      {{"serve", file.path(), "--max-request", "8M", "--max-in-flight", "4M"}, 2, "must be at least --max-request"},
      {{"serve", "--snapshot", file.path(), "--direct"}, 2, "--direct applies to FILE"},
      {{"serve", file.path(), "--listen", "127.0.0.1:7", "--metrics", "127.0.0.1:7"}, 2, "also a --listen address"},
      {{"serve", file.path(), "--listen", "127.0.0.1:0", "--metrics", "nonsense"}, 1, "'nonsense': expected HOST:PORT"},
      {{"serve", missing, "--listen", "127.0.0.1:0"}, 1, missing},
      {{"serve", file.path(), "--listen", "127.0.0.1:0", "--secret-file", missing}, 1, missing},
      {{"serve", file.path(), "--listen", "127.0.0.1:0", "--secret-file", empty_secret}, 1, "empty"},
      {{"serve", file.path(), "--listen", "999.1.2.3:80"}, 1, "999.1.2.3:80"},
      {{"serve", file.path(), "--listen", "unix:/nonexistent-dir/x.sock"}, 1, "/nonexistent-dir/x.sock"},
      {{"serve", "--snapshot", file.path(), "--listen", "127.0.0.1:0"}, 1, file.path()},  // not a snapshot
      {{"serve", file.path(), "--snapshot", file.path()}, 2, "serve one"},
  };
  for (const Case& c : cases) {
    CliProcess p(c.args);
    const int status = p.wait();
    const std::string err = p.stderr_text();
    INFO("args: " << c.args.back() << "\nstderr: " << err);
    CHECK(status == c.status);
    CHECK(err.find(c.message) != std::string::npos);
    CHECK(p.read_line(100).empty());  // no endpoint printed
  }
  ::unlink(empty_secret.c_str());

  // An address already in use is named, and the first server is unharmed.
  CliProcess first({"serve", file.path(), "--listen", "127.0.0.1:0"});
  const std::string tcp = first.read_line();
  REQUIRE(!tcp.empty());
  CliProcess second({"serve", file.path(), "--listen", tcp});
  CHECK(second.wait() == 1);
  CHECK(second.stderr_text().find(tcp) != std::string::npos);
  check_served(tcp, pattern(8192, 63));
  wait_for_disconnects(first, 1);
  first.signal(SIGTERM);
  const int first_status = first.wait();
  INFO("first server's stderr: " << first.stderr_text());
  CHECK(first_status == 0);

}

TEST_CASE("faultline serve --help lists every option and what is printed", "[serve][fork]") {
  CliProcess help({"serve", "--help"});
  std::string text;
  for (std::string line = help.read_line(); !line.empty() || text.find("Exit status") == std::string::npos;
       line = help.read_line()) {
    text += line + "\n";
    if (text.size() > 100000) break;
  }
  CHECK(help.wait() == 0);
  INFO(text);
  CHECK(text.find("Usage: faultline serve [OPTIONS] [FILE]") != std::string::npos);
  for (const char* option : {"--listen ADDR", "--secret-file FILE", "--secret SECRET", "--max-connections N",
                             "--max-request SIZE", "--max-in-flight SIZE", "--idle-timeout SEC", "--direct",
                             "--snapshot SNAPSHOT", "--workers N", "--metrics ADDR", "-h,--help"})
    CHECK(text.find(option) != std::string::npos);
  CHECK(text.find("the metrics URL") != std::string::npos);  // what --metrics prints
  CHECK(text.find("(http://HOST:PORT/metrics") != std::string::npos);
}

TEST_CASE("faultline serve: endpoints that cannot be written to stdout are an error, exit 1", "[serve][fork]") {
  TempFile file(pattern(8192, 69));
  const std::string sock = unix_path("full");
  CliProcess server({"serve", file.path(), "--listen", "unix:" + sock}, {}, "/dev/full");
  const int status = server.wait();
  const std::string err = server.stderr_text();
  INFO("stderr: " << err);
  CHECK(status == 1);
  CHECK(err.find("faultline serve: cannot write to standard output") != std::string::npos);
  struct stat st {};
  CHECK(::lstat(sock.c_str(), &st) != 0);  // it did not stay to serve, and cleaned up
}

// CPU seconds (user + system) process `pid` has used, from /proc/PID/stat.
double cpu_seconds_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(stat.rfind(')') != std::string::npos);
  std::istringstream fields(stat.substr(stat.rfind(')') + 2));  // from field 3, the state
  std::vector<std::string> f{std::istream_iterator<std::string>(fields), std::istream_iterator<std::string>()};
  REQUIRE(f.size() > 12);
  return double(std::stoull(f[11]) + std::stoull(f[12])) / double(sysconf(_SC_CLK_TCK));  // utime, stime
}

TEST_CASE("faultline serve sleeps when idle after serving clients", "[serve][fork]") {
  const auto data = pattern(1024 * 1024 + 4096, 67);
  TempFile file(data);
  CliProcess server({"serve", file.path(), "--listen", "127.0.0.1:0"});
  const std::string tcp = server.read_line();
  INFO("stderr: " << server.stderr_text());
  REQUIRE(!tcp.empty());
  check_served(tcp, data);
  wait_for_disconnects(server, 1);
  // A spinning server burns close to 100% of a CPU; one that sleeps, next to
  // nothing. 20% is out of reach of a sleeping server even under load.
  const double cpu0 = cpu_seconds_of(server.pid());
  const auto wall0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  const double share = (cpu_seconds_of(server.pid()) - cpu0) /
                       std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  INFO("idle server's CPU share: " << share);
  CHECK(share < 0.2);
  check_served(tcp, data);  // and it still serves
  wait_for_disconnects(server, 2);
  server.signal(SIGTERM);
  CHECK(server.wait() == 0);
}

TEST_CASE("faultline serve refuses a Unix socket another server listens on", "[serve][fork]") {
  const auto data = pattern(256 * 1024, 68);
  TempFile file(data);
  const std::string sock = unix_path("live");
  CliProcess first({"serve", file.path(), "--listen", "unix:" + sock});
  REQUIRE(first.read_line() == "unix:" + sock);
  CliProcess second({"serve", file.path(), "--listen", "unix:" + sock});
  CHECK(second.wait() == 1);
  const std::string err = second.stderr_text();
  INFO("second server's stderr: " << err);
  CHECK(err.find(sock + " is in use by a running server") != std::string::npos);
  CHECK(second.read_line(100).empty());  // no endpoint printed
  // The first server keeps its socket and serves on it.
  check_served("unix:" + sock, data);
  // Two connections, the second server's probe (which may end in a reset:
  // it leaves the HELLO unread) and the check, both closed before the stop.
  auto count = [](const std::string& log, const char* what) {
    size_t n = 0;
    for (size_t at = log.find(what); at != std::string::npos; at = log.find(what, at + 1)) ++n;
    return n;
  };
  REQUIRE(wait_until([&] {
    const std::string log = first.stderr_text();
    const size_t closed = count(log, ": disconnected") + count(log, ": read failed") + count(log, ": write failed");
    return count(log, ": connected") == 2 && closed == 2;
  }));
  first.signal(SIGTERM);
  CHECK(first.wait() == 0);
  struct stat st {};
  CHECK(::lstat(sock.c_str(), &st) != 0);
}

TEST_CASE("two faultline serve started together on one stale Unix socket: one serves, one refuses", "[serve][fork]") {
  const auto data = pattern(128 * 1024, 82);
  TempFile file(data);
  const std::string sock = unix_path("race");
  for (int round = 0; round < 10; ++round) {  // (without the lock, a few rounds see both take the path)
    INFO("round " << round);
    {
      // The socket file of a server that died without removing it.
      int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      REQUIRE(s >= 0);
      sockaddr_un un{};
      un.sun_family = AF_UNIX;
      std::memcpy(un.sun_path, sock.c_str(), sock.size() + 1);
      REQUIRE(::bind(s, reinterpret_cast<sockaddr*>(&un), sizeof un) == 0);
      REQUIRE(::listen(s, 1) == 0);
      ::close(s);
    }
    CliProcess a({"serve", file.path(), "--listen", "unix:" + sock});
    CliProcess b({"serve", file.path(), "--listen", "unix:" + sock});
    // The one that lost exits 1 at once; the winner prints its endpoint and serves.
    REQUIRE(wait_until([&] {
      return a.stderr_text().find("cannot listen") != std::string::npos ||
             b.stderr_text().find("cannot listen") != std::string::npos;
    }));
    CliProcess& loser = a.stderr_text().find("cannot listen") != std::string::npos ? a : b;
    CliProcess& winner = &loser == &a ? b : a;
    INFO("winner's stderr: " << winner.stderr_text() << "\nloser's stderr: " << loser.stderr_text());
    CHECK(loser.wait() == 1);
    CHECK(loser.stderr_text().find(sock + " is in use by a running server") != std::string::npos);
    CHECK(loser.read_line(100).empty());  // no endpoint printed
    REQUIRE(winner.read_line() == "unix:" + sock);
    check_served("unix:" + sock, data);
    REQUIRE(wait_until([&] { return winner.stderr_text().find(": disconnected") != std::string::npos; }));
    winner.signal(SIGTERM);
    CHECK(winner.wait() == 0);
    struct stat st {};
    CHECK(::lstat(sock.c_str(), &st) != 0);              // the socket removed on exit
    CHECK(::lstat((sock + ".lock").c_str(), &st) != 0);  // and no lock file left
  }
}

namespace {

// An HTTP/1.1 exchange with Boost.Beast, everything within 10 s: the
// status, Content-Type and body, or `error` if there was no HTTP answer.
struct HttpReply {
  int status = 0;
  std::string content_type, body, error;
};
HttpReply http_request(const std::string& host_port, boost::beast::http::verb verb, const std::string& target) {
  namespace asio = boost::asio;
  namespace beast = boost::beast;
  namespace http = beast::http;
  HttpReply reply;
  const size_t colon = host_port.rfind(':');
  asio::io_context io;
  asio::ip::tcp::resolver resolver(io);
  boost::system::error_code ec;
  const auto where = resolver.resolve(host_port.substr(0, colon), host_port.substr(colon + 1), ec);
  if (ec) return {0, "", "", "resolve: " + ec.message()};
  beast::tcp_stream stream(io);
  stream.expires_after(std::chrono::seconds(10));
  http::request<http::empty_body> request{verb, target, 11};
  request.set(http::field::host, host_port);
  beast::flat_buffer buffer;
  http::response<http::string_body> response;
  stream.async_connect(where, [&](beast::error_code e, const asio::ip::tcp::endpoint&) {
    if (e) return void(reply.error = "connect: " + e.message());
    http::async_write(stream, request, [&](beast::error_code e, size_t) {
      if (e) return void(reply.error = "write: " + e.message());
      http::async_read(stream, buffer, response, [&](beast::error_code e, size_t) {
        if (e) return void(reply.error = "read: " + e.message());
        reply.status = static_cast<int>(response.result_int());
        reply.content_type = std::string(response[http::field::content_type]);
        reply.body = response.body();
      });
    });
  });
  io.run();
  return reply;
}

// A Prometheus text exposition, checked for form: every sample's metric has
// one "# HELP" and one "# TYPE" line before it. Samples by name with labels
// ("x_bucket{le=\"0.001\"}"), in order of appearance in `order`.
struct Exposition {
  std::map<std::string, double> samples;
  std::map<std::string, std::string> types;
  std::vector<std::string> order;
  std::string problem;  // the first malformed line, if any

  explicit Exposition(const std::string& text) {
    std::map<std::string, int> helps;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
      std::istringstream words(line);
      std::string a, b, c;
      words >> a >> b >> c;
      if (a == "#" && b == "HELP") {
        helps[c]++;
      } else if (a == "#" && b == "TYPE") {
        types[c] = line.substr(line.rfind(' ') + 1);
      } else if (!a.empty() && a[0] != '#' && !b.empty() && c.empty()) {
        std::string family = a.substr(0, a.find('{'));
        for (const char* suffix : {"_bucket", "_sum", "_count"})
          if (!types.count(family) && family.size() > std::strlen(suffix) &&
              family.compare(family.size() - std::strlen(suffix), std::string::npos, suffix) == 0)
            family.resize(family.size() - std::strlen(suffix));
        if (helps[family] != 1 || !types.count(family)) problem = "no single HELP and TYPE before: " + line;
        samples[a] = std::stod(b);
        order.push_back(a);
      } else if (problem.empty()) {
        problem = "malformed: " + line;
      }
    }
  }
  double at(const std::string& name) const {
    auto it = samples.find(name);
    return it == samples.end() ? -1 : it->second;
  }
};

// Checks the latency histogram of `e`: cumulative buckets that never
// decrease, ending in +Inf, which equals _count; returns _count.
double check_histogram(const Exposition& e) {
  const std::string h = "faultline_page_server_request_duration_seconds";
  CHECK(e.types.at(h) == "histogram");
  double previous = 0;
  size_t buckets = 0;
  std::string last;
  for (const std::string& name : e.order) {
    if (name.rfind(h + "_bucket{", 0) != 0) continue;
    CHECK(e.at(name) >= previous);
    previous = e.at(name);
    last = name;
    ++buckets;
  }
  CHECK(buckets == kPageServerLatencyBoundsUs.size() + 1);
  CHECK(last == h + "_bucket{le=\"+Inf\"}");
  CHECK(e.at(h + "_count") == previous);
  return e.at(h + "_count");
}

std::string metrics_host_port(const std::string& url) {  // "http://H:P/metrics" -> "H:P"
  REQUIRE(url.rfind("http://", 0) == 0);
  REQUIRE(url.size() > 15);
  REQUIRE(url.compare(url.size() - 8, 8, "/metrics") == 0);
  return url.substr(7, url.size() - 15);
}

}  // namespace

TEST_CASE("faultline serve --metrics: Prometheus counters match what a client read", "[serve][fork][metrics]") {
  const auto data = pattern(2 * 1024 * 1024, 80);
  TempFile file(data);
  const std::string sock = unix_path("metrics");
  CliProcess server({"serve", file.path(), "--listen", "127.0.0.1:0", "--listen", "unix:" + sock, "--metrics",
                     "127.0.0.1:0"});
  const std::string tcp = server.read_line();
  REQUIRE(server.read_line() == "unix:" + sock);
  const std::string url = server.read_line();
  INFO("stderr: " << server.stderr_text());
  const std::string metrics = metrics_host_port(url);
  REQUIRE(metrics.rfind("127.0.0.1:", 0) == 0);
  REQUIRE(metrics != "127.0.0.1:0");

  // Nothing read yet: zeros, well formed.
  {
    const HttpReply r = http_request(metrics, boost::beast::http::verb::get, "/metrics");
    REQUIRE(r.error == "");
    CHECK(r.status == 200);
    CHECK(r.content_type == "text/plain; version=0.0.4; charset=utf-8");
    const Exposition e(r.body);
    CHECK(e.problem == "");
    CHECK(e.at("faultline_page_server_requests_total") == 0);
    CHECK(e.at("faultline_page_server_connections_total") == 0);
    CHECK(check_histogram(e) == 0);
  }

  // Known reads: 64 KiB fills, no read-ahead, every other chunk of the first
  // MiB over TCP and all of the second MiB over the Unix socket.
  uint64_t bytes_read = 0;
  for (const std::string& address : {tcp, "unix:" + sock}) {
    RemoteOptions ro;
    ro.address = address;
    Runtime rt;
    RegionOptions o;
    o.fill_size = 65536;
    o.readahead = false;
    Region r = rt.map(connect_remote(ro), o);
    const size_t first = address == tcp ? 0 : 1024 * 1024;
    const size_t step = address == tcp ? 2 * 65536 : 65536;
    for (size_t at = first; at < first + 1024 * 1024; at += step)
      REQUIRE(first_mismatch(r.data() + at, data.data() + at, 65536) == -1);
    CHECK(r.stats().errors == 0);
    bytes_read += r.stats().bytes_read;
  }
  CHECK(bytes_read == 8 * 65536 + 16 * 65536);
  wait_for_disconnects(server, 2);

  const HttpReply r = http_request(metrics, boost::beast::http::verb::get, "/metrics");
  REQUIRE(r.error == "");
  REQUIRE(r.status == 200);
  const Exposition e(r.body);
  INFO("metrics:\n" << r.body);
  CHECK(e.problem == "");
  CHECK(e.at("faultline_page_server_bytes_sent_total") == double(bytes_read));
  CHECK(e.at("faultline_page_server_zero_bytes_total") == 0);
  const double requests = e.at("faultline_page_server_requests_total");
  CHECK(requests > 0);
  CHECK(check_histogram(e) == requests);
  CHECK(e.at("faultline_page_server_request_duration_seconds_sum") > 0);
  CHECK(e.at("faultline_page_server_connections_total") == 2);
  CHECK(e.at("faultline_page_server_connections_open") == 0);
  CHECK(e.types.at("faultline_page_server_connections_open") == "gauge");
  CHECK(e.types.at("faultline_page_server_bytes_sent_total") == "counter");
  for (const char* zero : {"faultline_page_server_read_errors_total", "faultline_page_server_protocol_errors_total",
                           "faultline_page_server_auth_failures_total", "faultline_page_server_idle_timeouts_total",
                           "faultline_page_server_connections_rejected_total"})
    CHECK(e.at(zero) == 0);

  // Only GET /metrics.
  CHECK(http_request(metrics, boost::beast::http::verb::get, "/").status == 404);
  CHECK(http_request(metrics, boost::beast::http::verb::get, "/metricsx").status == 404);
  CHECK(http_request(metrics, boost::beast::http::verb::post, "/metrics").status == 405);
  CHECK(http_request(metrics, boost::beast::http::verb::delete_, "/metrics").status == 405);

  // The metrics endpoint is no page server, and a page server speaks no HTTP
  // (it counts the attempt as a protocol error).
  RemoteOptions ro;
  ro.address = metrics;
  ro.deadline = std::chrono::milliseconds(1000);
  CHECK_THROWS_AS(connect_remote(ro), Error);
  const HttpReply wrong = http_request(tcp, boost::beast::http::verb::get, "/metrics");
  CHECK(wrong.status == 0);
  CHECK(wrong.error != "");
  REQUIRE(wait_until([&] {
    return Exposition(http_request(metrics, boost::beast::http::verb::get, "/metrics").body)
               .at("faultline_page_server_protocol_errors_total") == 1;
  }));

  // A scraper holding its connection open does not keep the server from stopping.
  boost::asio::io_context io;
  boost::asio::ip::tcp::socket idle(io);
  idle.connect({boost::asio::ip::make_address("127.0.0.1"),
                static_cast<unsigned short>(std::stoi(metrics.substr(metrics.rfind(':') + 1)))});
  server.signal(SIGTERM);
  CHECK(server.wait() == 0);
  CHECK(server.stderr_text().find("metrics at " + url) != std::string::npos);
  CHECK(http_request(metrics, boost::beast::http::verb::get, "/metrics").error.rfind("connect: ", 0) == 0);
}

TEST_CASE("MetricsHttpServer serves a PageServer's counters while clients read (in process)", "[serve][metrics]") {
  // In process, so that the thread sanitizer sees the HTTP thread reading
  // counters while the server thread updates them.
  const auto data = pattern(1024 * 1024, 81);
  PageServer server(std::make_shared<MemoryBackend>(data), {});
  tools::MetricsHttpServer http("127.0.0.1:0", [&server] { return tools::page_server_metrics_text(server.stats()); });
  RemoteOptions ro;
  ro.address = server.endpoints().at(0);
  std::string reader_problem;
  uint64_t bytes_read = 0;
  std::thread reader([&] {
    try {
      Runtime rt;
      RegionOptions o;
      o.fill_size = 4096;
      o.readahead = false;
      Region r = rt.map(connect_remote(ro), o);
      if (first_mismatch(r.data(), data.data(), data.size()) != -1) reader_problem = "bytes differ";
      bytes_read = r.stats().bytes_read;
    } catch (const std::exception& e) {
      reader_problem = e.what();
    }
  });
  double last_requests = 0;
  for (int i = 0; i < 20; ++i) {  // scrapes during the reads
    const HttpReply r = http_request(http.endpoint(), boost::beast::http::verb::get, "/metrics");
    REQUIRE(r.status == 200);
    const Exposition e(r.body);
    REQUIRE(e.problem == "");
    CHECK(e.at("faultline_page_server_requests_total") >= last_requests);  // counters never go back
    last_requests = e.at("faultline_page_server_requests_total");
  }
  reader.join();
  REQUIRE(reader_problem == "");
  CHECK(bytes_read == data.size());
  REQUIRE(wait_until([&] { return server.stats().connections_open == 0; }));
  const Exposition e(http_request(http.endpoint(), boost::beast::http::verb::get, "/metrics").body);
  CHECK(e.at("faultline_page_server_bytes_sent_total") == double(data.size()));
  CHECK(check_histogram(e) == e.at("faultline_page_server_requests_total"));
  CHECK(e.at("faultline_page_server_requests_total") == double(server.stats().requests));
  http.stop();
  CHECK(http_request(http.endpoint(), boost::beast::http::verb::get, "/metrics").error.rfind("connect: ", 0) == 0);
}

#endif  // FAULTLINE_CLI_PATH

// Not the command: the library API the README shows for serving a region of
// a running process. Here the region is itself lazy (a faultline Region), so
// the server's reads fault it in: a chain of two lazy peers.
TEST_CASE("a PageServer over a faultline region's own memory serves it to a remote peer", "[serve]") {
  const auto data = pattern(4 * 1024 * 1024 + 4096, 66);
  Runtime near;
  Region source = near.map(std::make_shared<MemoryBackend>(data));
  PageServer server(MemoryBackend::borrow(source.span()), {});
  RemoteOptions ro;
  ro.address = server.endpoints().at(0);
  Runtime far;
  Region copy = far.map(connect_remote(ro));
  REQUIRE(copy.size() == data.size());
  for (size_t i = 0; i < data.size(); ++i)
    if (copy.data()[i] != data[i]) FAIL("byte " << i << " differs");
  CHECK(source.stats().faults > 0);  // the server's reads are what loaded the source
  CHECK(copy.stats().errors == 0);
  // Counted when the server's write completes, which may be just after the
  // client has the bytes.
  CHECK(wait_until([&] { return server.stats().bytes_sent >= data.size(); }));
}

// SPDX-License-Identifier: Apache-2.0
// PageServer's life cycle, in process: an idle server sleeps (it once spun a
// CPU forever after its first client, waking on a completion eventfd that
// stayed readable), and a Unix socket path is taken only from a dead server
// and removed only by the server that bound it.
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "backend_test_util.h"
#include "faultline/error.h"
#include "faultline/file_backend.h"
#include "faultline/memory_backend.h"
#include "faultline/page_server.h"
#include "faultline/remote_backend.h"
#include "faultline/snapshot.h"
#include "faultline/zstd_snapshot_backend.h"
#include "test_util.h"

using namespace faultline;
using namespace faultline::test;

namespace {

// Reads [offset, offset + length) through `b` the way the fault loop does
// (submit, then reap on every edge of completion_fd()) and returns the bytes.
std::vector<std::byte> read_through(Backend& b, Staging& staging, uint64_t offset, uint32_t length) {
  REQUIRE(length <= staging.size());
  Poller poller(b.completion_fd());
  ReadRequest r;
  r.offset = offset;
  r.length = length;
  r.dest = staging.data();
  r.tag = 42;
  r.urgent = true;
  b.submit(std::span(&r, 1));
  ReadCompletion c;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (b.reap(std::span(&c, 1)) == 0) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    poller.wait(100);
  }
  REQUIRE(c.tag == 42);
  REQUIRE(c.result == int64_t{length});
  std::vector<std::byte> out(length);
  if (c.zero)
    std::fill(out.begin(), out.end(), std::byte{0});
  else
    std::memcpy(out.data(), c.data ? c.data : staging.data(), length);
  return out;
}

// Reads a few stretches of `want` from the server at `address` and checks
// every byte. Returns the connected client, to keep it open.
std::shared_ptr<Backend> read_some(const std::string& address, const std::vector<std::byte>& want) {
  RemoteOptions ro;
  ro.address = address;
  std::shared_ptr<Backend> remote = connect_remote(ro);
  REQUIRE(remote->size() == want.size());
  Staging staging(256 * 1024);
  remote->attach_staging(staging.span());
  for (uint64_t offset : {uint64_t{0}, uint64_t{65536}, uint64_t{want.size() / 2 & ~uint64_t{4095}}}) {
    const auto got = read_through(*remote, staging, offset, 65536);
    INFO(address << " offset " << offset);
    REQUIRE(first_mismatch(got.data(), want.data() + offset, got.size()) == -1);
  }
  return remote;
}

double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

// The share of one CPU this process burns while the calling thread sleeps
// `ms` (the server thread is the only other one doing anything).
double idle_cpu_share(int ms) {
  const double cpu0 = process_cpu_seconds();
  const auto wall0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  const double cpu = process_cpu_seconds() - cpu0;
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall0).count();
  return cpu / wall;
}

// Serves `source` and checks that the server sleeps once its client is
// idle, and again once it has gone.
void check_idle_server_sleeps(std::shared_ptr<Backend> source, const std::vector<std::byte>& want) {
  PageServer server(std::move(source), {});
  {
    std::shared_ptr<Backend> client = read_some(server.endpoints().at(0), want);
    // A spinning server burns close to 100%; a sleeping one next to nothing.
    // 20% cannot be reached by a server that sleeps, even under load.
    const double connected = idle_cpu_share(2000);
    INFO("CPU share with an idle client connected: " << connected);
    CHECK(connected < 0.2);
  }
  REQUIRE(wait_until([&] { return server.stats().connections_open == 0; }));
  const double alone = idle_cpu_share(1500);
  INFO("CPU share after the client left: " << alone);
  CHECK(alone < 0.2);
  // And it still serves.
  read_some(server.endpoints().at(0), want);
}

// A Unix socket path unique to this process and tag, removed with the object.
struct SocketPath {
  std::string path;
  explicit SocketPath(const char* tag)
      : path("/tmp/faultline-ps-test-" + std::to_string(getpid()) + "-" + tag + ".sock") {
    ::unlink(path.c_str());
  }
  ~SocketPath() { ::unlink(path.c_str()); }
  std::string address() const { return "unix:" + path; }
};

PageServerOptions listen_on(const std::string& address) {
  PageServerOptions o;
  o.listen = {address};
  return o;
}

struct stat stat_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  return st;
}

}  // namespace

TEST_CASE("PageServer over a FileBackend sleeps when idle after serving a client", "[serve][page_server]") {
  const auto data = pattern(2 * 1024 * 1024 + 4096, 71);
  TempFile file(data);
  check_idle_server_sleeps(std::make_shared<FileBackend>(file.path()), data);
}

TEST_CASE("PageServer over a zstd snapshot sleeps when idle after serving a client", "[serve][page_server]") {
  auto data = pattern(2 * 1024 * 1024 + 4096, 72);
  std::fill(data.begin() + 65536, data.begin() + 3 * 65536, std::byte{0});
  const std::string snap = "/tmp/faultline-ps-test-" + std::to_string(getpid()) + ".snap";
  SnapshotWriteOptions so;
  so.chunk_size = 64 * 1024;
  so.threads = 1;
  write_snapshot(data, snap, so);
  check_idle_server_sleeps(open_zstd_snapshot(snap, {}), data);
  ::unlink(snap.c_str());
}

TEST_CASE("A PageServer relaying a remote backend sleeps when idle", "[serve][page_server]") {
  // The remote backend's completion_fd() is an epoll fd, not an eventfd.
  const auto data = pattern(1024 * 1024 + 4096, 78);
  TempFile file(data);
  PageServer origin(std::make_shared<FileBackend>(file.path()), {});
  RemoteOptions ro;
  ro.address = origin.endpoints().at(0);
  check_idle_server_sleeps(connect_remote(ro), data);
}

TEST_CASE("PageServer refuses a Unix socket a running server listens on", "[serve][page_server]") {
  const auto data = pattern(512 * 1024, 73);
  SocketPath sock("live");
  PageServer first(std::make_shared<MemoryBackend>(data), listen_on(sock.address()));
  const struct stat bound = stat_of(sock.path);
  try {
    PageServer second(std::make_shared<MemoryBackend>(data), listen_on(sock.address()));
    FAIL("a second server took over " << sock.path);
  } catch (const Error& e) {
    const std::string what = e.what();
    INFO(what);
    CHECK(what.find(sock.path) != std::string::npos);
    CHECK(what.find("in use by a running server") != std::string::npos);
  }
  // The first server's socket is untouched and still serves.
  const struct stat after = stat_of(sock.path);
  CHECK(after.st_ino == bound.st_ino);
  CHECK(after.st_dev == bound.st_dev);
  read_some(sock.address(), data);
}

TEST_CASE("PageServer reuses the socket file a dead server left behind", "[serve][page_server]") {
  const auto data = pattern(512 * 1024, 74);
  SocketPath sock("stale");
  {
    // A listener that dies without removing its socket file.
    int s = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(s >= 0);
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    std::memcpy(un.sun_path, sock.path.c_str(), sock.path.size() + 1);
    REQUIRE(::bind(s, reinterpret_cast<sockaddr*>(&un), sizeof un) == 0);
    REQUIRE(::listen(s, 1) == 0);
    ::close(s);
  }
  REQUIRE(S_ISSOCK(stat_of(sock.path).st_mode));
  PageServer server(std::make_shared<MemoryBackend>(data), listen_on(sock.address()));
  CHECK(server.endpoints().at(0) == sock.address());
  read_some(sock.address(), data);
  server.stop();
  struct stat st {};
  CHECK(::lstat(sock.path.c_str(), &st) != 0);  // removed on stop
}

TEST_CASE("PageServer refuses a Unix socket path that is not a socket, and leaves it alone", "[serve][page_server]") {
  SocketPath sock("file");
  { std::ofstream(sock.path) << "precious"; }
  try {
    PageServer server(std::make_shared<MemoryBackend>(pattern(8192, 75)), listen_on(sock.address()));
    FAIL("the server bound over a regular file");
  } catch (const Error& e) {
    const std::string what = e.what();
    INFO(what);
    CHECK(what.find(sock.path) != std::string::npos);
    CHECK(what.find("not a socket") != std::string::npos);
  }
  std::ifstream in(sock.path);
  std::stringstream contents;
  contents << in.rdbuf();
  CHECK(contents.str() == "precious");
}

TEST_CASE("A stopping PageServer leaves its successor's socket in place", "[serve][page_server]") {
  const auto data_a = pattern(256 * 1024, 76);
  const auto data_b = pattern(256 * 1024, 77);
  SocketPath sock("successor");
  PageServer a(std::make_shared<MemoryBackend>(data_a), listen_on(sock.address()));
  // Someone removes A's socket file and B binds the path anew.
  REQUIRE(::unlink(sock.path.c_str()) == 0);
  PageServer b(std::make_shared<MemoryBackend>(data_b), listen_on(sock.address()));
  const struct stat bound = stat_of(sock.path);
  a.stop();
  const struct stat after = stat_of(sock.path);  // still there
  CHECK(after.st_ino == bound.st_ino);
  read_some(sock.address(), data_b);
  b.stop();
  struct stat st {};
  CHECK(::lstat(sock.path.c_str(), &st) != 0);  // B removes its own
}

// SPDX-License-Identifier: Apache-2.0
// HttpBackend against a real nginx on loopback (tests/nginx_fixture.h), over
// http and https: every byte through a region, pinning (a replaced file
// fails the reads after it, never mixes), a server that ignores Range, a
// server killed mid-read, a slow server past the deadline, authentication,
// TLS verification and option errors.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "faultline/error.h"
#include "faultline/http_backend.h"
#include "faultline/region.h"
#include "faultline/runtime.h"
#include "faultline/snapshot.h"
#include "faultline/zstd_snapshot_backend.h"
#include "nginx_fixture.h"
#include "read_all.h"
#include "run_cli.h"
#include "snapshot_test_util.h"
#include "test_util.h"

using namespace faultline;
using namespace std::chrono_literals;
namespace t = faultline::test;
using t::read_all;

namespace {

constexpr size_t kKiB = 1024, kMiB = 1024 * 1024;

void write_file(const std::string& path, const std::vector<std::byte>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  t::check(out.good(), "writing a served file");
}

// (Both also run in forked children: t::check, not REQUIRE.)
// Replaces the file at `path` (rename over it: a new inode, as an upload
// does) with `bytes`, dated `shift` later, so nginx's ETag (mtime-size)
// changes even within the same second.
void replace_file(const std::string& path, const std::vector<std::byte>& bytes, int shift_s = 100) {
  struct stat st {};
  t::check(::stat(path.c_str(), &st) == 0, "stat of a served file");
  write_file(path + ".new", bytes);
  timespec times[2] = {st.st_atim, st.st_mtim};
  times[1].tv_sec += shift_s;
  t::check(::utimensat(AT_FDCWD, (path + ".new").c_str(), times, 0) == 0, "utimensat");
  std::filesystem::rename(path + ".new", path);
}

HttpOptions options_for(const t::Nginx& server, const std::string& path) {
  HttpOptions o;
  o.url = server.url(path);
  o.ca_file = server.ca_file();
  return o;
}

// Messages a backend logged.
struct Log {
  std::mutex mu;
  std::vector<std::string> lines;
  LogSink sink() {
    return [this](LogLevel, std::string_view m) {
      std::lock_guard lock(mu);
      lines.emplace_back(m);
    };
  }
  bool any_contains(const std::string& s) {
    std::lock_guard lock(mu);
    for (auto& l : lines)
      if (l.find(s) != std::string::npos) return true;
    return false;
  }
};


#define SKIP_WITHOUT_NGINX()                                            \
  do {                                                                  \
    if (!t::Nginx::available()) {                                       \
      WARN("SKIPPED: no /usr/sbin/nginx (Debian's nginx-light)"); \
      return;                                                           \
    }                                                                   \
  } while (0)

}  // namespace

TEST_CASE("a region over http and https holds every byte of the served file, 4 KiB and 64 KiB fills", "[http]") {
  SKIP_WITHOUT_NGINX();
  auto data = t::pattern(3 * kMiB + 1234, 21);
  for (bool tls : {false, true}) {
    INFO((tls ? "https" : "http"));
    t::Nginx server(tls);
    write_file(server.root() + "/image", data);
    auto backend = std::make_shared<HttpBackend>(options_for(server, "image"));
    CHECK(backend->size() == data.size());
    CHECK(backend->name() == "http " + server.url("image"));
    CHECK(!backend->validator().empty());
    Runtime rt;
    for (uint32_t fill : {4096u, 65536u}) {
      INFO("fill " << fill);
      RegionOptions o;
      o.fill_size = fill;
      Region r = rt.map(backend, o);
      REQUIRE(t::first_mismatch(r.data(), data.data(), data.size()) == -1);
      CHECK(r.stats().errors == 0);
    }
    HttpCounters c = backend->counters();
    CHECK(c.bytes >= 2 * data.size());
    CHECK(c.stale == 0);
    CHECK(c.timeouts == 0);
    CHECK(c.connects >= 1);
    CHECK(c.connects <= 5 + c.retries);  // kept alive, not one connection per request (4 + the demand lane)
    // Demand reads go on the fault thread's own connection over http only.
    if (tls)
      CHECK(c.lane_requests == 0);
    else
      CHECK(c.lane_requests > 0);
  }
}

namespace {

// Reads page 0 as a demand read until one is answered on the demand lane
// (its connection is opened in the background at construction).
void wait_for_lane(HttpBackend& b) {
  std::vector<std::byte> page(4096);
  for (int i = 0; i < 200 && b.counters().lane_requests == 0; ++i) {
    REQUIRE(read_all(b, {{0, 4096, page.data(), 1, true}}).at(1).result == 4096);
    if (b.counters().lane_requests == 0) std::this_thread::sleep_for(5ms);
  }
  REQUIRE(b.counters().lane_requests > 0);
}

}  // namespace

TEST_CASE("demand reads on the fault thread's lane: every byte, pipelined, merged into scattered parts, "
          "across a server that closes each connection after two answers",
          "[http][lane]") {
  SKIP_WITHOUT_NGINX();
  auto data = t::pattern(4 * kMiB, 38);
  t::Nginx server;
  write_file(server.root() + "/image", data);
  for (std::string path : {"image", "close2/image"}) {
    INFO(path);
    HttpBackend b(options_for(server, path));
    wait_for_lane(b);
    const HttpCounters before = b.counters();
    constexpr int kRounds = 60;
    for (int round = 0; round < kRounds; ++round) {
      // Three jobs: two adjacent reads merged into one range whose parts
      // land in swapped places, and two reads far apart.
      std::vector<std::byte> staging(4 * 8 * kKiB, std::byte{0});
      const uint64_t at = (uint64_t(round) * 97 % 400) * 8 * kKiB;
      const uint64_t far = data.size() - (round + 1) * 12 * kKiB, farther = (round + 7) * 4 * kKiB + 3 * kMiB;
      std::vector<ReadRequest> reads = {{at, 8 * kKiB, staging.data() + 8 * kKiB, 1, true},
                                        {at + 8 * kKiB, 8 * kKiB, staging.data(), 2, true},
                                        {far, 8 * kKiB, staging.data() + 16 * kKiB, 3, true},
                                        {farther, 8 * kKiB, staging.data() + 24 * kKiB, 4, true}};
      auto done = read_all(b, reads);
      for (auto& [tag, c] : done) REQUIRE(c.result == int64_t(8 * kKiB));
      REQUIRE(t::first_mismatch(staging.data() + 8 * kKiB, data.data() + at, 8 * kKiB) == -1);
      REQUIRE(t::first_mismatch(staging.data(), data.data() + at + 8 * kKiB, 8 * kKiB) == -1);
      REQUIRE(t::first_mismatch(staging.data() + 16 * kKiB, data.data() + far, 8 * kKiB) == -1);
      REQUIRE(t::first_mismatch(staging.data() + 24 * kKiB, data.data() + farther, 8 * kKiB) == -1);
    }
    const HttpCounters c = b.counters();
    CHECK(c.timeouts == 0);
    CHECK(c.stale == 0);
    CHECK(c.requests - before.requests >= 3 * kRounds);
    if (path == "image") {
      CHECK(c.lane_requests - before.lane_requests >= 3 * kRounds * 9 / 10);  // nearly all on the lane
      CHECK(c.connects == before.connects);  // one keep-alive lane throughout
    } else {
      // Every second answer closes the lane (and loses the third request
      // pipelined on it, which the I/O thread's connections then serve).
      CHECK(c.lane_requests > before.lane_requests);
      CHECK(c.connects - before.connects >= kRounds / 2);
      CHECK(c.retries > before.retries);
    }
  }
}

TEST_CASE("a stopped server: a demand read on the lane fails at its deadline, and the lane comes back", "[http][lane]") {
  SKIP_WITHOUT_NGINX();
  auto data = t::pattern(1 * kMiB, 39);
  t::Nginx server;
  write_file(server.root() + "/image", data);
  HttpOptions o = options_for(server, "image");
  o.deadline = 1000ms;
  o.log = [](LogLevel, std::string_view) {};
  HttpBackend b(o);
  wait_for_lane(b);
  const HttpCounters before = b.counters();
  REQUIRE(::kill(server.pid(), SIGSTOP) == 0);
  std::vector<std::byte> page(4096);
  auto start = std::chrono::steady_clock::now();
  auto done = read_all(b, {{8192, 4096, page.data(), 7, true}});
  auto took = std::chrono::steady_clock::now() - start;
  REQUIRE(::kill(server.pid(), SIGCONT) == 0);
  CHECK(done.at(7).result == -ETIMEDOUT);
  CHECK(took >= 900ms);
  CHECK(took < 3000ms);
  CHECK(b.counters().timeouts == before.timeouts + 1);
  // The server is back: demand reads are answered on a new lane.
  const uint64_t lane_before = b.counters().lane_requests;
  for (int i = 0; i < 200 && b.counters().lane_requests == lane_before; ++i) {
    REQUIRE(read_all(b, {{12288, 4096, page.data(), 8, true}}).at(8).result == 4096);
    REQUIRE(t::first_mismatch(page.data(), data.data() + 12288, 4096) == -1);
    std::this_thread::sleep_for(5ms);
  }
  CHECK(b.counters().lane_requests > lane_before);
}

TEST_CASE("adjacent reads are merged into one range, each read gets its own bytes", "[http]") {
  SKIP_WITHOUT_NGINX();
  auto data = t::pattern(2 * kMiB, 22);
  t::Nginx server;
  write_file(server.root() + "/image", data);
  HttpOptions o = options_for(server, "image");
  o.max_request_bytes = 64 * kKiB;
  HttpBackend b(o);
  std::vector<std::byte> staging(64 * 4 * kKiB);
  std::vector<ReadRequest> reads;
  for (uint32_t i = 0; i < 64; ++i)  // 64 adjacent 4 KiB reads from 1 MiB: 4 ranges of 64 KiB
    reads.push_back({kMiB + i * 4 * kKiB, 4 * kKiB, staging.data() + i * 4 * kKiB, i, false});
  auto done = read_all(b, reads);
  for (auto& [tag, c] : done) REQUIRE(c.result == 4 * kKiB);
  CHECK(t::first_mismatch(staging.data(), data.data() + kMiB, staging.size()) == -1);
  CHECK(b.counters().requests == 4);  // the merged ranges (the pinning request is not counted)

  // A read past the end is short; a blocking read_range sees the same bytes.
  std::vector<std::byte> tail(8 * kKiB);
  auto past = read_all(b, {{data.size() - 4096, 8192, tail.data(), 99, true}});
  CHECK(past.at(99).result == 4096);
  CHECK(t::first_mismatch(tail.data(), data.data() + data.size() - 4096, 4096) == -1);
  std::vector<std::byte> blocking(300 * kKiB);
  CHECK(b.read_range(12345, blocking) == int64_t(blocking.size()));
  CHECK(t::first_mismatch(blocking.data(), data.data() + 12345, blocking.size()) == -1);
}

TEST_CASE("a queued read-ahead raised by make_urgent overtakes the queue on the connection kept for demand",
          "[http][urgent]") {
  SKIP_WITHOUT_NGINX();
  auto data = t::pattern(2 * kMiB, 23);
  // nginx sends a second's worth of limit_rate at once, then paces: at
  // 32 KiB/s each 64 KiB read takes about a second, so a test thread
  // preempted between submit() and make_urgent() (a loaded machine) still
  // raises read 3 while reads 1 and 2 wait in the queue.
  t::Nginx server(false, 32 * 1024);
  write_file(server.root() + "/image", data);
  HttpOptions o = options_for(server, "slow/image");
  o.connections = 2;              // read-ahead may use one of them
  o.requests_per_connection = 1;  // and one request at a time: the rest wait in the queue
  HttpBackend b(o);
  // Two demand reads at once open both connections first (within the first
  // second's allowance: at once): the raised read must not wait for a connect.
  std::vector<std::byte> warm(2 * 4 * kKiB);
  auto opened = read_all(b, {{0, 4 * kKiB, warm.data(), 100, true}, {kMiB, 4 * kKiB, warm.data() + 4 * kKiB, 101, true}});
  REQUIRE(opened.at(100).result == 4 * kKiB);
  REQUIRE(opened.at(101).result == 4 * kKiB);
  constexpr uint32_t kReads = 4, kLength = 64 * kKiB;
  std::vector<std::byte> staging(kReads * kLength);
  std::vector<ReadRequest> reads;
  for (uint32_t i = 0; i < kReads; ++i)  // apart from each other: one request each
    reads.push_back({i * 128 * kKiB, kLength, staging.data() + i * kLength, i, false});
  std::vector<uint64_t> order;
  auto done = read_all(b, reads, [&] { b.make_urgent(kReads - 1); }, &order);
  for (uint32_t i = 0; i < kReads; ++i) {
    REQUIRE(done.at(i).result == kLength);
    CHECK(t::first_mismatch(staging.data() + i * kLength, data.data() + i * 128 * kKiB, kLength) == -1);
  }
  CHECK(b.counters().raised == 1);
  // Sent at once on the free connection: only read 0, already on the other
  // one, may come first. Unraised it would be last (3).
  auto at = std::find(order.begin(), order.end(), kReads - 1) - order.begin();
  CHECK(at <= 1);
}

TEST_CASE("https: the certificate is verified against the CA file, refused without it", "[http]") {
  SKIP_WITHOUT_NGINX();
  t::Nginx server(true);
  auto data = t::pattern(100 * kKiB, 23);
  write_file(server.root() + "/image", data);
  HttpOptions o;
  o.url = server.url("image");
  try {
    HttpBackend b(o);
    FAIL("a self-signed certificate was accepted without a CA file");
  } catch (const Error& e) {
    std::string m = e.what();
    INFO(m);
    CHECK(m.find("http backend " + server.url("image")) != std::string::npos);
    CHECK(m.find("certificate verify failed") != std::string::npos);
    CHECK(m.find("self-signed certificate") != std::string::npos);
    CHECK(m.find("ca_file") != std::string::npos);
  }
  o.ca_file = server.ca_file();
  CHECK(HttpBackend(o).size() == data.size());
  // The certificate names localhost and 127.0.0.1 (checked as an IP address).
  o.url = "https://127.0.0.1:" + std::to_string(server.port()) + "/image";
  CHECK(HttpBackend(o).size() == data.size());
  // The opt-out for tests.
  HttpOptions skip;
  skip.url = server.url("image");
  skip.insecure_skip_verify = true;
  HttpBackend b(skip);
  std::vector<std::byte> got(data.size());
  CHECK(b.read_range(0, got) == int64_t(got.size()));
  CHECK(got == data);
  // A CA file that does not exist is named.
  o.ca_file = server.root() + "/no-such-ca.pem";
  CHECK_THROWS_WITH(HttpBackend(o), Catch::Contains("the CA file " + o.ca_file));
}

TEST_CASE("a server that ignores Range is refused at open, with the reason", "[http]") {
  SKIP_WITHOUT_NGINX();
  t::Nginx server;
  write_file(server.root() + "/image", t::pattern(200 * kKiB, 24));
  CHECK_THROWS_WITH(HttpBackend(options_for(server, "norange/image")),
                    Catch::Contains("http backend " + server.url("norange/image")) &&
                        Catch::Contains("ignores Range requests"));
  CHECK_THROWS_WITH(HttpBackend(options_for(server, "missing")), Catch::Contains("answered 404 Not Found"));
  write_file(server.root() + "/empty", {});
  CHECK_THROWS_WITH(HttpBackend(options_for(server, "empty")), Catch::Contains("the object is empty"));
}

TEST_CASE("a replaced object fails the reads after the change with -ESTALE, never mixes", "[http]") {
  SKIP_WITHOUT_NGINX();
  auto a = t::pattern(1 * kMiB, 25), b = t::pattern(1 * kMiB, 26);
  t::Nginx server;
  write_file(server.root() + "/image", a);
  Log log;
  HttpOptions o = options_for(server, "image");
  o.log = log.sink();
  HttpBackend backend(o);
  std::vector<std::byte> got(256 * kKiB);
  REQUIRE(backend.read_range(0, got) == int64_t(got.size()));
  CHECK(t::first_mismatch(got.data(), a.data(), got.size()) == -1);
  std::string pinned = backend.validator();

  replace_file(server.root() + "/image", b);
  std::fill(got.begin(), got.end(), std::byte{0});
  CHECK(backend.read_range(256 * kKiB, got) == -ESTALE);
  // Whatever reached the buffer before the 412 is not b's (nginx sends no
  // body bytes with it); and from now on every read fails at once.
  CHECK(t::first_mismatch(got.data(), b.data() + 256 * kKiB, 4096) != -1);
  CHECK(backend.read_range(0, got) == -ESTALE);
  std::vector<std::byte> staging(8192);
  auto done = read_all(backend, {{0, 4096, staging.data(), 1, true}, {4096, 4096, staging.data() + 4096, 2, false}});
  CHECK(done.at(1).result == -ESTALE);
  CHECK(done.at(2).result == -ESTALE);
  CHECK(backend.counters().stale >= 1);
  CHECK(log.any_contains("the object changed"));
  // A new backend pins the new object.
  HttpBackend fresh(o);
  CHECK(fresh.validator() != pinned);
  REQUIRE(fresh.read_range(0, got) == int64_t(got.size()));
  CHECK(t::first_mismatch(got.data(), b.data(), got.size()) == -1);
}

TEST_CASE("a region over a replaced object gives SIGBUS for the pages read after it, old bytes before",
          "[http][fork]") {
  SKIP_WITHOUT_NGINX();
  auto a = t::pattern(4 * kMiB, 27), b = t::pattern(4 * kMiB, 28);
  t::Nginx server;
  write_file(server.root() + "/image", a);
  HttpOptions o = options_for(server, "image");
  o.log = [](LogLevel, std::string_view) {};
  int sig = t::run_in_child([&] {
    t::catch_fault_signals();
    Runtime rt;
    RegionOptions ro;
    ro.fill_size = 4096;
    ro.readahead = false;
    Region r = rt.map(std::make_shared<HttpBackend>(o), ro);
    const size_t half = a.size() / 2;
    t::check(t::first_mismatch(r.data(), a.data(), half) == -1, "the first half holds the old bytes");
    replace_file(server.root() + "/image", b);
    size_t bus = 0;
    for (size_t at = half; at < a.size(); at += 4096) {
      std::byte v{};
      if (t::read_signal(r.data() + at, &v) == SIGBUS) {
        ++bus;
        continue;
      }
      t::check(false, "a page read after the change was placed");
    }
    t::check(bus == half / 4096, "every page after the change gets SIGBUS");
    t::check(t::first_mismatch(r.data(), a.data(), half) == -1, "the old pages are unchanged");
    t::check(r.stats().errors > 0, "the region counts the failed reads");
  }, 120000);
  CHECK(sig == 0);
}

TEST_CASE("nginx killed mid-read: reads fail with -ETIMEDOUT at the deadline, no hang", "[http]") {
  SKIP_WITHOUT_NGINX();
  auto data = t::pattern(2 * kMiB, 29);
  t::Nginx server;
  write_file(server.root() + "/image", data);
  HttpOptions o = options_for(server, "image");
  o.deadline = 1500ms;
  o.log = [](LogLevel, std::string_view) {};
  HttpBackend backend(o);
  std::vector<std::byte> got(512 * kKiB);
  REQUIRE(backend.read_range(0, got) == int64_t(got.size()));
  server.kill();
  CHECK(backend.read_range(512 * kKiB, got) == -ETIMEDOUT);
  std::vector<std::byte> staging(64 * kKiB);
  auto done = read_all(backend, {{0, 32768, staging.data(), 1, true}, {65536, 32768, staging.data() + 32768, 2, false}});
  CHECK(done.at(1).result == -ETIMEDOUT);
  CHECK(done.at(2).result == -ETIMEDOUT);
  CHECK(backend.counters().timeouts >= 3);
}

TEST_CASE("nginx killed under a region: its later pages get SIGBUS after the deadline", "[http][fork]") {
  SKIP_WITHOUT_NGINX();
  auto data = t::pattern(16 * kMiB, 30);
  t::Nginx server;
  write_file(server.root() + "/image", data);
  pid_t nginx = server.pid();
  HttpOptions o = options_for(server, "image");
  o.deadline = 1500ms;
  o.log = [](LogLevel, std::string_view) {};
  int sig = t::run_in_child([&] {
    t::catch_fault_signals();
    Runtime rt;
    RegionOptions ro;
    ro.fill_size = 4096;
    ro.readahead_max = 256 * kKiB;
    Region r = rt.map(std::make_shared<HttpBackend>(o), ro);
    t::check(t::first_mismatch(r.data(), data.data(), 2 * kMiB) == -1, "the bytes before the kill");
    ::kill(nginx, SIGKILL);
    size_t at = 2 * kMiB;
    int got = 0;
    std::byte v{};
    for (; at < data.size(); at += 4096) {
      got = t::read_signal(r.data() + at, &v);
      if (got) break;
      t::check(v == data[at], "a page served before the kill holds its bytes");
    }
    t::check(got == SIGBUS, "a page after the kill gets SIGBUS");
    t::check(r.stats().errors > 0, "the region counts the failed reads");
  }, 120000);
  CHECK(sig == 0);
}

TEST_CASE("a server slower than the deadline fails the reads cleanly", "[http]") {
  SKIP_WITHOUT_NGINX();
  auto data = t::pattern(1 * kMiB, 31);
  t::Nginx server(false, 16 * 1024);  // 16 KiB/s
  write_file(server.root() + "/image", data);
  HttpOptions o = options_for(server, "slow/image");
  o.deadline = 1000ms;
  o.log = [](LogLevel, std::string_view) {};
  HttpBackend backend(o);
  std::vector<std::byte> got(256 * kKiB);
  CHECK(backend.read_range(0, got) == -ETIMEDOUT);
  std::vector<std::byte> staging(128 * kKiB);
  auto done = read_all(backend, {{0, 65536, staging.data(), 1, true}, {65536, 65536, staging.data() + 65536, 2, false}});
  CHECK(done.at(1).result == -ETIMEDOUT);
  CHECK(done.at(2).result == -ETIMEDOUT);
  // Small reads still get through the slow server within the deadline.
  std::vector<std::byte> small(4096);
  CHECK(backend.read_range(8192, small) == 4096);
  CHECK(t::first_mismatch(small.data(), data.data() + 8192, 4096) == -1);
}

TEST_CASE("a slow server under a region: the pages get SIGBUS, no hang", "[http][fork]") {
  SKIP_WITHOUT_NGINX();
  auto data = t::pattern(1 * kMiB, 32);
  t::Nginx server(false, 16 * 1024);
  write_file(server.root() + "/image", data);
  HttpOptions o = options_for(server, "slow/image");
  o.deadline = 1000ms;
  o.log = [](LogLevel, std::string_view) {};
  int sig = t::run_in_child([&] {
    t::catch_fault_signals();
    Runtime rt;
    RegionOptions ro;
    ro.fill_size = 256 * kKiB;  // 16 s at 16 KiB/s
    Region r = rt.map(std::make_shared<HttpBackend>(o), ro);
    t::check(t::read_signal(r.data() + 5000) == SIGBUS, "the page gets SIGBUS");
  }, 120000);
  CHECK(sig == 0);
}

TEST_CASE("an auth header or file is sent with every request and never logged", "[http]") {
  SKIP_WITHOUT_NGINX();
  const std::string token = "s3cret-token-4711";
  t::Nginx server(false, 16 * 1024, "Bearer " + token);
  auto data = t::pattern(300 * kKiB, 33);
  write_file(server.root() + "/image", data);
  Log log;
  HttpOptions o = options_for(server, "auth/image");
  o.log = log.sink();
  try {
    HttpBackend b(o);
    FAIL("opened without the token");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("answered 401") != std::string::npos);
  }
  o.auth_header = "Authorization: Bearer " + token;
  {
    HttpBackend b(o);
    std::vector<std::byte> got(data.size());
    CHECK(b.read_range(0, got) == int64_t(got.size()));
    CHECK(got == data);
  }
  t::TempDir dir;
  std::ofstream(dir.file("token")) << token << "\n";
  o.auth_header.clear();
  o.auth_file = dir.file("token");
  {
    HttpBackend b(o);
    std::vector<std::byte> got(data.size());
    CHECK(b.read_range(0, got) == int64_t(got.size()));
    // The object changes: the error logged names the problem, not the token.
    replace_file(server.root() + "/image", t::pattern(300 * kKiB, 34));
    CHECK(b.read_range(0, got) == -ESTALE);
  }
  std::ofstream(dir.file("header")) << "Authorization: Bearer " << token << "\n";
  o.auth_file = dir.file("header");
  CHECK(HttpBackend(o).size() == 300 * kKiB);
  CHECK(log.any_contains("the object changed"));
  CHECK(!log.any_contains(token));
  o.auth_header = "Authorization: x";
  CHECK_THROWS_WITH(HttpBackend(o), Catch::Contains("auth_header or auth_file, not both"));
  o.auth_header = "no colon here";
  o.auth_file.clear();
  CHECK_THROWS_WITH(HttpBackend(o), Catch::Contains("'Name: value'") && !Catch::Contains("no colon here"));
}

TEST_CASE("bad URLs and options are refused with the field named; a query is never shown", "[http]") {
  SKIP_WITHOUT_NGINX();
  t::Nginx server;
  write_file(server.root() + "/image", t::pattern(64 * kKiB, 35));
  HttpOptions o;
  o.url = "ftp://example.com/x";
  CHECK_THROWS_WITH(HttpBackend(o), Catch::Contains("must start with http:// or https://"));
  o.url = "http://user:pw@127.0.0.1/x";
  CHECK_THROWS_WITH(HttpBackend(o), Catch::Contains("credentials in the URL"));
  o.url = "http://127.0.0.1:99999/x";
  CHECK_THROWS_WITH(HttpBackend(o), Catch::Contains("bad port '99999'"));
  o.url = server.url("image");
  o.connections = 0;
  CHECK_THROWS_WITH(HttpBackend(o), Catch::Contains("HttpOptions.connections = 0"));
  o.connections = 4;
  o.max_request_bytes = 100;
  CHECK_THROWS_WITH(HttpBackend(o), Catch::Contains("HttpOptions.max_request_bytes = 100"));
  o.max_request_bytes = 1u << 20;
  o.queue_depth = 5000;
  CHECK_THROWS_WITH(HttpBackend(o), Catch::Contains("HttpOptions.queue_depth = 5000"));
  o.queue_depth = 64;
  // A presigned URL's signature stays out of names and errors.
  o.url = server.url("image") + "?X-Amz-Signature=deadbeef";
  HttpBackend b(o);
  CHECK(b.name() == "http " + server.url("image") + "?...");
  o.url = server.url("missing") + "?X-Amz-Signature=deadbeef";
  CHECK_THROWS_WITH(HttpBackend(o), Catch::Contains("404") && !Catch::Contains("deadbeef"));
  // Nothing listens: refused, named.
  uint16_t port = server.port();
  server.kill();
  o.url = "http://127.0.0.1:" + std::to_string(port) + "/image";
  o.deadline = 2000ms;
  CHECK_THROWS_WITH(HttpBackend(o), Catch::Contains("connect to 127.0.0.1:" + std::to_string(port)));
}

TEST_CASE("a zstd snapshot served by nginx restores every byte, through a region and a SnapshotReader", "[http]") {
  SKIP_WITHOUT_NGINX();
  // Random, zero and text-like stretches: stored, compressed and zero chunks.
  std::vector<std::byte> data = t::pattern(5 * kMiB + 4321, 36);
  std::fill(data.begin() + kMiB, data.begin() + 2 * kMiB, std::byte{0});
  for (size_t i = 3 * kMiB; i < 4 * kMiB; ++i) data[i] = std::byte(static_cast<uint8_t>('a' + (i / 7) % 26));
  for (bool tls : {false, true}) {
    INFO((tls ? "https" : "http"));
    t::Nginx server(tls);
    SnapshotWriteOptions w;
    w.chunk_size = 64 * kKiB;
    w.threads = 1;
    write_snapshot(data, server.root() + "/snap", w);
    HttpOptions o = options_for(server, "snap");
    ZstdSnapshotOptions zo;
    zo.workers = 2;
    auto http = std::make_shared<HttpBackend>(o);
    auto snap = std::make_shared<ZstdSnapshotBackend>(http, zo);
    CHECK(snap->size() == data.size());
    CHECK(snap->name() == "zstd snapshot http " + server.url("snap"));
    Runtime rt;
    for (uint32_t fill : {4096u, 65536u}) {
      INFO("fill " << fill);
      RegionOptions ro;
      ro.fill_size = fill;
      Region r = rt.map(snap, ro);
      REQUIRE(t::first_mismatch(r.data(), data.data(), data.size()) == -1);
      CHECK(r.stats().errors == 0);
    }
    CHECK(snap->counters().corrupt_chunks == 0);
    CHECK(snap->counters().zero_chunks > 0);
    CHECK(http->counters().bytes > 0);

    HttpBackend reader_source(o);
    SnapshotReader reader = SnapshotReader::open(
        "http " + server.url("snap"), reader_source.size(), [&](void* buf, size_t n, uint64_t offset) {
          int64_t got = reader_source.read_range(offset, {static_cast<std::byte*>(buf), n});
          if (got < 0) errno = static_cast<int>(-got);
          return got == int64_t(n);
        });
    CHECK(reader.info().size == data.size());
    std::vector<std::byte> chunk(64 * kKiB);
    for (uint64_t i = 0; i < reader.info().chunk_count; ++i) {
      reader.read_chunk(i, chunk);
      REQUIRE(t::first_mismatch(chunk.data(), data.data() + i * chunk.size(), reader.chunk_length(i)) == -1);
    }
  }
}

TEST_CASE("a snapshot URL that is not a snapshot is refused at open, naming the URL and field", "[http]") {
  SKIP_WITHOUT_NGINX();
  t::Nginx server;
  write_file(server.root() + "/raw", t::pattern(256 * kKiB, 37));
  auto http = std::make_shared<HttpBackend>(options_for(server, "raw"));
  CHECK_THROWS_WITH(ZstdSnapshotBackend(http, {}),
                    Catch::Contains("snapshot http " + server.url("raw")) && Catch::Contains("wrong magic bytes"));
}

#ifdef FAULTLINE_CLI_PATH
using faultline::test::run_cli;

TEST_CASE("faultline snapshot inspect and verify read a snapshot from an http(s) URL", "[http][cli]") {
  SKIP_WITHOUT_NGINX();
  std::vector<std::byte> data = t::pattern(3 * kMiB + 99, 38);
  std::fill(data.begin(), data.begin() + kMiB, std::byte{0});
  for (bool tls : {false, true}) {
    INFO((tls ? "https" : "http"));
    t::Nginx server(tls);
    SnapshotWriteOptions w;
    w.threads = 1;
    write_snapshot(data, server.root() + "/snap", w);
    std::string ca = tls ? " --ca-file " + server.ca_file() : "";
    std::string url = server.url("snap");
    auto [rc, out] = run_cli("snapshot inspect '" + url + "?sig=hush'" + ca);
    INFO(out);
    CHECK(rc == 0);
    CHECK(out.find("file:              http " + url + "?...") != std::string::npos);
    CHECK(out.find("uncompressed size: " + std::to_string(data.size())) != std::string::npos);
    CHECK(out.find("zero chunks:       16") != std::string::npos);
    CHECK(out.find("hush") == std::string::npos);
    auto [vrc, vout] = run_cli("snapshot verify --threads 3 " + url + ca);
    INFO(vout);
    CHECK(vrc == 0);
    CHECK(vout.find(": ok: 49 chunks (16 zero)") != std::string::npos);
    if (tls) {
      auto [brc, bout] = run_cli("snapshot verify " + url);
      INFO(bout);
      CHECK(brc == 1);
      CHECK(bout.find("certificate verify failed") != std::string::npos);
      auto [irc, iout] = run_cli("snapshot inspect --insecure " + url);
      CHECK(irc == 0);
    }
    // A corrupt chunk in the served file is found and named.
    auto bytes = t::read_bytes(server.root() + "/snap");
    bytes[bytes.size() / 2] ^= 0xff;
    t::write_bytes(server.root() + "/snap", bytes);
    auto [crc, cout] = run_cli("snapshot verify " + url + ca);
    INFO(cout);
    CHECK(crc == 1);
    CHECK(cout.find("FAILED: 1 of 49 chunks bad") != std::string::npos);
  }
}
#endif  // FAULTLINE_CLI_PATH

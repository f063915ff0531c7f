// SPDX-License-Identifier: Apache-2.0
// Live migration (faultline/migration.h): each mode with writers running,
// every byte of the destination against the source at its stop; failures of
// the peer, the connection and the secret.
#include <faultline/error.h>
#include <faultline/memory_backend.h>
#include <faultline/migration.h>
#include <faultline/page_server.h>
#include <faultline/runtime.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstring>
#include <future>
#include <random>
#include <thread>

#include "migration_protocol.h"
#include "test_util.h"
#include "unique_fd.h"

using namespace faultline;
using faultline::test::first_mismatch;
using faultline::test::pattern;

namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kMiB = 1 << 20;

// Source regions with writers stamping tagged words into a hot set, paused
// by the migration's stop callback; what the regions held at the stop.
class Workload {
 public:
  Workload(std::vector<uint64_t> sizes, int writers) {
    for (size_t i = 0; i < sizes.size(); ++i) {
      RegionOptions o;
      o.writable = true;
      o.track_dirty = true;
      o.length = sizes[i];
      regions.push_back(rt.map(std::make_shared<MemoryBackend>(pattern(sizes[i], uint32_t(7 + i))), o));
    }
    for (Region& r : regions) pointers.push_back(&r);
    for (int w = 0; w < writers; ++w) threads.emplace_back([this, w] { write_loop(w); });
  }
  ~Workload() { quit(); }

  void quit() {
    quit_ = true;
    for (auto& t : threads) t.join();
    threads.clear();
  }

  MigrationHooks hooks() {
    MigrationHooks h;
    h.stop = [this] {
      pause_ = true;
      while (paused_.load() != static_cast<int>(threads.size())) std::this_thread::yield();
      std::vector<std::vector<std::byte>> bytes;
      for (Region& r : regions) bytes.emplace_back(r.data(), r.data() + r.size());
      stops++;
      at_stop.set_value(std::move(bytes));
    };
    h.state = [] {
      std::vector<std::byte> s(10000);
      for (size_t i = 0; i < s.size(); ++i) s[i] = std::byte(i * 7);
      return s;
    };
    h.resume = [this] {
      resumes++;
      pause_ = false;
    };
    return h;
  }

  Runtime rt;
  std::vector<Region> regions;
  std::vector<Region*> pointers;
  std::promise<std::vector<std::vector<std::byte>>> at_stop;
  std::atomic<int> stops{0}, resumes{0};
  std::atomic<uint64_t> writes{0};

 private:
  void write_loop(int w) {
    std::mt19937_64 rng(w + 1);
    uint64_t seq = 0;
    while (!quit_) {
      if (pause_) {
        paused_++;
        while (pause_ && !quit_) std::this_thread::yield();
        paused_--;
        continue;
      }
      Region& r = regions[rng() % regions.size()];
      uint64_t hot = std::max<uint64_t>(1, r.size() / kPage / 20);  // 5% of the pages
      uint64_t page = rng() % hot * 20 % (r.size() / kPage);        // spread over the region
      uint64_t word = page * kPage / 8 + rng() % (kPage / 8);
      reinterpret_cast<std::atomic<uint64_t>*>(r.data())[word].store(++seq << 8 | uint64_t(w),
                                                                      std::memory_order_relaxed);
      writes++;
    }
  }

  std::vector<std::thread> threads;
  std::atomic<bool> pause_{false}, quit_{false};
  std::atomic<int> paused_{0};
};

struct DestResult {
  std::string error;
  long mismatch_at_resume = -2, mismatch_after = -2;
  size_t mismatch_region = 0;
  uint64_t faults_at_resume = 0;  // the receiver's, before anyone reads
  uint64_t faults_reading = 0;    // faults while reading every byte after the resume
  std::vector<std::byte> state;
  MigrationMetrics metrics;
};

// Accepts one migration and compares every byte with the source's at its
// stop: at once (post-copy: through faults, while the push runs) and after
// wait().
DestResult receive_and_check(MigrationListener& listener, std::future<std::vector<std::vector<std::byte>>> at_stop) {
  DestResult d;
  try {
    Runtime rt;
    IncomingMigration in = listener.accept(rt, std::chrono::seconds(20));
    auto want = at_stop.get();
    auto compare = [&](long* out) {
      *out = -1;
      for (size_t i = 0; i < want.size() && *out == -1; ++i) {
        if (in.regions()[i].size() != want[i].size()) *out = -3;
        else *out = first_mismatch(in.regions()[i].data(), want[i].data(), want[i].size());
        d.mismatch_region = i;
      }
    };
    for (Region& r : in.regions()) d.faults_at_resume += r.stats().faults;
    compare(&d.mismatch_at_resume);
    for (Region& r : in.regions()) d.faults_reading += r.stats().faults;
    d.faults_reading -= d.faults_at_resume;
    d.metrics = in.wait();
    compare(&d.mismatch_after);
    d.state = in.state();
  } catch (const std::exception& e) {
    d.error = e.what();
  }
  return d;
}

MigrationOptions options_for(MigrationMode mode) {
  MigrationOptions o;
  o.mode = mode;
  o.secret = "sesame";
  o.deadline = std::chrono::milliseconds(10000);
  o.dest_region.fill_size = 16 * 1024;
  return o;
}

// Asked of a runtime that is gone before the test forks: a fork while a
// runtime's thread still starts can copy a held allocator lock into the
// child (ASan's), which then hangs on its first allocation of that size.
bool kernel_has_wp_async() {
  Runtime probe;
  return probe.mode().wp_async;
}

}  // namespace

TEST_CASE("migration moves every byte in each mode while writers run", "[migration]") {
  auto mode = GENERATE(MigrationMode::kPrecopy, MigrationMode::kPostcopy, MigrationMode::kHybrid);
  auto address = GENERATE(std::string("127.0.0.1:0"), std::string("unix"));
  INFO(migration_mode_name(mode) << " over " << address);
  if (!kernel_has_wp_async()) {
    WARN("SKIPPED: dirty tracking needs UFFD_FEATURE_WP_ASYNC (Linux 6.7+)");
    return;
  }
  std::string listen = address == "unix" ? "unix:/tmp/faultline-mig-" + std::to_string(getpid()) : address;
  MigrationOptions o = options_for(mode);
  // A ragged second region: the last page is partly outside it.
  Workload w({16 * kMiB, kMiB + 123}, 3);
  MigrationListener listener(listen, o);
  auto dest = std::async(std::launch::async, receive_and_check, std::ref(listener), w.at_stop.get_future());
  MigrationMetrics m = migrate_out(w.pointers, listener.endpoint(), w.hooks(), o);
  DestResult d = dest.get();
  uint64_t writes_before = w.writes.load();
  w.quit();
  REQUIRE(d.error == "");
  INFO("region " << d.mismatch_region);
  CHECK(d.mismatch_at_resume == -1);
  CHECK(d.mismatch_after == -1);
  REQUIRE(d.state.size() == 10000);
  CHECK(d.state[9999] == std::byte(9999 * 7 % 256));
  CHECK(w.stops == 1);
  CHECK(w.resumes == 0);
  CHECK(writes_before > 0);
  CHECK(m.mode == mode);
  CHECK(m.downtime_ns > 0);
  CHECK(m.total_ns >= m.downtime_ns);
  CHECK(m.bytes_sent > 0);
  const uint64_t pages = 16 * kMiB / kPage + kMiB / kPage + 1;
  if (mode == MigrationMode::kPostcopy) {
    CHECK(m.rounds.empty());
    CHECK(m.final_pages == pages);
    // Every page is pushed or fetched; a fault may beat the push to a page.
    CHECK(m.pages_pushed + m.pages_requested >= pages);
  } else {
    REQUIRE(!m.rounds.empty());
    CHECK(m.rounds[0].pages == pages);
    CHECK(m.pages_sent >= pages);
  }
  if (mode == MigrationMode::kHybrid) CHECK(m.rounds.size() <= o.hybrid_rounds);
  // The rounds were placed without a fault: the first from the frames it
  // came in, the later ones written into placed pages. Pre-copy placed every
  // page before the resume: reading them all faults nowhere. Post-copy reads
  // fault (that is how the pages come).
  if (mode != MigrationMode::kPostcopy) CHECK(d.faults_at_resume == 0);
  if (mode == MigrationMode::kPrecopy) CHECK(d.faults_reading == 0);
  // Blocked time is the destination's threads' (sent back in COMPLETE).
  CHECK(m.blocked_ns == d.metrics.blocked_ns);
  if (mode == MigrationMode::kPostcopy) CHECK(m.blocked_ns > 0);
  // The JSON names what a user looks for.
  std::string json = m.to_json();
  CHECK(json.find("\"downtime_ms\"") != std::string::npos);
  CHECK(json.find("\"rounds\"") != std::string::npos);
  if (mode != MigrationMode::kPrecopy) CHECK(json.find("\"blocked_ms\"") != std::string::npos);
}

TEST_CASE("a page sent in an early round and written again arrives with its last bytes", "[migration]") {
  auto mode = GENERATE(MigrationMode::kPrecopy, MigrationMode::kHybrid);
  if (!kernel_has_wp_async()) {
    WARN("SKIPPED: dirty tracking needs UFFD_FEATURE_WP_ASYNC (Linux 6.7+)");
    return;
  }
  MigrationOptions o = options_for(mode);
  // Converges only once a round leaves nothing dirty.
  o.downtime_limit = std::chrono::milliseconds(0);
  o.max_rounds = 4;
  o.hybrid_rounds = 3;
  Workload w({8 * kMiB}, 2);
  MigrationListener listener("127.0.0.1:0", o);
  auto dest = std::async(std::launch::async, receive_and_check, std::ref(listener), w.at_stop.get_future());
  MigrationMetrics m = migrate_out(w.pointers, listener.endpoint(), w.hooks(), o);
  DestResult d = dest.get();
  w.quit();
  REQUIRE(d.error == "");
  REQUIRE(m.rounds.size() >= 2);
  CHECK(m.rounds.size() <= (mode == MigrationMode::kPrecopy ? 4u : 3u));
  // Round 1 re-sent pages written after round 0 had sent them (round 0
  // copies 8 MiB while two threads write)...
  CHECK(m.rounds[1].pages > 0);
  CHECK(m.rounds[1].pages < m.rounds[0].pages);
  // ...and the destination holds what the source held at the stop.
  CHECK(d.mismatch_at_resume == -1);
  CHECK(d.mismatch_after == -1);
}

TEST_CASE("migration with a wrong or missing secret fails on both sides", "[migration]") {
  if (!kernel_has_wp_async()) {
    WARN("SKIPPED: dirty tracking needs UFFD_FEATURE_WP_ASYNC (Linux 6.7+)");
    return;
  }
  auto secrets = GENERATE(std::pair<std::string, std::string>{"right", "wrong"},
                          std::pair<std::string, std::string>{"", "wrong"},
                          std::pair<std::string, std::string>{"right", ""});
  MigrationOptions src = options_for(MigrationMode::kPostcopy), dst = src;
  src.secret = secrets.first;
  dst.secret = secrets.second;
  Workload w({kMiB}, 1);
  MigrationListener listener("127.0.0.1:0", dst);
  auto dest = std::async(std::launch::async, [&] {
    Runtime rt;
    try {
      listener.accept(rt, std::chrono::seconds(10));
      return std::string();
    } catch (const Error& e) {
      return std::string(e.what());
    }
  });
  std::string src_error;
  int err = 0;
  try {
    migrate_out(w.pointers, listener.endpoint(), w.hooks(), src);
  } catch (const Error& e) {
    src_error = e.what();
    err = e.sys_errno();
  }
  std::string dst_error = dest.get();
  INFO(src_error << " / " << dst_error);
  CHECK(!src_error.empty());
  CHECK(!dst_error.empty());
  CHECK((err == EACCES || err == ECONNRESET || err == EPIPE));
  CHECK(w.stops == 0);  // nothing was stopped: the source runs on
}

TEST_CASE("a garbage peer gets an error, never a crash or a hang", "[migration]") {
  if (!kernel_has_wp_async()) {
    WARN("SKIPPED: dirty tracking needs UFFD_FEATURE_WP_ASYNC (Linux 6.7+)");
    return;
  }
  MigrationOptions o = options_for(MigrationMode::kPrecopy);
  o.deadline = std::chrono::milliseconds(2000);
  auto garbage = GENERATE(std::string("GET / HTTP/1.1\r\n\r\n"), std::string(20, '\0'), std::string(5000, '\xff'),
                          std::string("short"));

  SECTION("as the destination") {
    // A listener that answers the source with garbage.
    detail::UniqueFd l(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(l.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(l.get(), 1) == 0);
    socklen_t len = sizeof a;
    ::getsockname(l.get(), reinterpret_cast<sockaddr*>(&a), &len);
    std::thread peer([&] {
      int c = ::accept(l.get(), nullptr, nullptr);
      if (c < 0) return;
      (void)!::write(c, garbage.data(), garbage.size());
      pollfd p{c, POLLIN, 0};
      ::poll(&p, 1, 3000);  // until the source gives up
      ::close(c);
    });
    Workload w({kMiB}, 1);
    std::string error;
    try {
      migrate_out(w.pointers, "127.0.0.1:" + std::to_string(ntohs(a.sin_port)), w.hooks(), o);
    } catch (const Error& e) {
      error = e.what();
    }
    peer.join();
    INFO(error);
    CHECK(!error.empty());
    CHECK(w.stops == 0);
  }

  SECTION("a page server where a migration destination should be") {
    PageServer server(std::make_shared<MemoryBackend>(pattern(kMiB)), {});
    Workload w({kMiB}, 1);
    std::string error;
    try {
      migrate_out(w.pointers, server.endpoints()[0], w.hooks(), o);
    } catch (const Error& e) {
      error = e.what();
    }
    INFO(error);
    CHECK(error.find("not allowed") != std::string::npos);
    CHECK(w.stops == 0);
  }

  SECTION("as the source") {
    MigrationListener listener("127.0.0.1:0", o);
    std::thread peer([&] {
      detail::UniqueFd c = migration::connect_to(listener.endpoint(), std::chrono::milliseconds(2000));
      (void)!::write(c.get(), garbage.data(), garbage.size());
      pollfd p{c.get(), POLLIN, 0};
      ::poll(&p, 1, 3000);
    });
    std::string error;
    Runtime rt;
    try {
      listener.accept(rt, std::chrono::seconds(5));
    } catch (const Error& e) {
      error = e.what();
    }
    peer.join();
    INFO(error);
    CHECK(!error.empty());
  }
}

namespace {

// A child process running `body`, killed (if still there) with the object.
class Child {
 public:
  explicit Child(const std::function<void()>& body) {
    pid_ = ::fork();
    if (pid_ == 0) {
      try {
        body();
      } catch (const std::exception& e) {
        std::fprintf(stderr, "child: %s\n", e.what());
        _exit(1);
      }
      _exit(0);
    }
  }
  ~Child() { kill(); }
  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
};

std::string unix_address(const char* what) {
  return "unix:/tmp/faultline-mig-" + std::string(what) + "-" + std::to_string(getpid());
}

// A region full of data that takes a while to send (256 MiB: round 0 lasts
// far longer than the tests wait before killing the peer).
Region big_region(Runtime& rt, uint64_t size, uint8_t fill) {
  RegionOptions o;
  o.writable = true;
  o.track_dirty = true;
  o.length = size;
  Region r = rt.map(std::make_shared<MemoryBackend>(std::vector<std::byte>(kPage)), o);
  std::memset(r.data(), fill, r.size());
  return r;
}

}  // namespace

TEST_CASE("the destination dying during pre-copy leaves the source running, with an error", "[migration][fork]") {
  if (!kernel_has_wp_async()) {
    WARN("SKIPPED: dirty tracking needs UFFD_FEATURE_WP_ASYNC (Linux 6.7+)");
    return;
  }
  std::string address = unix_address("dest-dies");
  MigrationOptions o = options_for(MigrationMode::kPrecopy);
  o.deadline = std::chrono::milliseconds(3000);
  // Rounds until the kill: the writers dirty their region all along, and a
  // limit of 0 ms is met only by nothing dirty; 1000 rounds of about 1 MiB
  // take well over the 300 ms before the kill.
  o.downtime_limit = std::chrono::milliseconds(0);
  o.max_rounds = 1000;
  Child dest([&] {
    Runtime rt;
    MigrationListener listener(address, o);
    listener.accept(rt, std::chrono::seconds(20));
    std::this_thread::sleep_for(std::chrono::seconds(20));
  });
  Workload w({kMiB}, 2);
  Region big = big_region(w.rt, 256 * kMiB, 0x5a);
  std::vector<Region*> regions = {&w.regions[0], &big};
  // The child may still be binding: retry the connect for a while.
  std::string error;
  auto killer = std::async(std::launch::async, [&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    dest.kill();
  });
  for (int attempt = 0; attempt < 200; ++attempt) {
    try {
      migrate_out(regions, address, w.hooks(), o);
      error = "";
      break;
    } catch (const Error& e) {
      error = e.what();
      if (e.sys_errno() != ECONNREFUSED) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  killer.get();
  ::unlink(address.substr(5).c_str());  // (the killed listener could not remove its socket)
  INFO(error);
  CHECK(!error.empty());
  CHECK(w.stops == 0);  // never stopped: the writers went on throughout
  uint64_t before = w.writes.load();
  CHECK(faultline::test::wait_until([&] { return w.writes.load() > before + 100; }));
  // Untouched by the failed migration.
  CHECK(big.data()[big.size() - 1] == std::byte(0x5a));
  CHECK(big.take_dirty().size() <= 1);  // only what the writers do (they write the small region)
}

TEST_CASE("the source dying during pre-copy fails the destination's accept", "[migration][fork]") {
  if (!kernel_has_wp_async()) {
    WARN("SKIPPED: dirty tracking needs UFFD_FEATURE_WP_ASYNC (Linux 6.7+)");
    return;
  }
  MigrationOptions o = options_for(MigrationMode::kPrecopy);
  o.deadline = std::chrono::milliseconds(3000);
  MigrationListener listener("127.0.0.1:0", o);
  std::string address = listener.endpoint();
  int ready[2];
  REQUIRE(::pipe(ready) == 0);
  Child source([&] {
    Runtime rt;
    Region big = big_region(rt, 256 * kMiB, 0x33);
    Region* r = &big;
    MigrationHooks h;
    h.stop = [] {};
    (void)!::write(ready[1], "x", 1);  // filled: the migration starts now
    migrate_out(std::span<Region* const>(&r, 1), address, h, o);
  });
  ::close(ready[1]);
  auto killer = std::async(std::launch::async, [&] {
    char c;
    (void)!::read(ready[0], &c, 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
    source.kill();
  });
  std::string error;
  Runtime rt;
  try {
    listener.accept(rt, std::chrono::seconds(20));
  } catch (const Error& e) {
    error = e.what();
  }
  killer.get();
  ::close(ready[0]);
  INFO(error);
  CHECK(error.find("closed the connection") != std::string::npos);
}

TEST_CASE("post-copy: with the source gone, a fault on a page not yet there gets SIGBUS", "[migration][fork]") {
  if (!kernel_has_wp_async()) {
    WARN("SKIPPED: dirty tracking needs UFFD_FEATURE_WP_ASYNC (Linux 6.7+)");
    return;
  }
  int sig = faultline::test::run_in_child(
      [] {
        faultline::test::catch_fault_signals();
        MigrationOptions o = options_for(MigrationMode::kPostcopy);
        o.postcopy_deadline = std::chrono::milliseconds(500);
        o.deadline = std::chrono::milliseconds(2000);
        MigrationListener listener("127.0.0.1:0", o);
        std::string address = listener.endpoint();
        Child source([&] {
          Runtime rt;
          Region big = big_region(rt, 256 * kMiB, 0x77);
          Region* r = &big;
          MigrationHooks h;
          h.stop = [] {};
          migrate_out(std::span<Region* const>(&r, 1), address, h, o);
        });
        Runtime rt;
        IncomingMigration in = listener.accept(rt, std::chrono::seconds(20));
        Region& r = in.regions()[0];
        std::byte b{};
        // The first page is there or comes at once (the push starts there).
        faultline::test::check(faultline::test::read_signal(r.data(), &b) == 0 && b == std::byte(0x77),
                               "first page read");
        source.kill();
        // The push had no time to reach the last page: its fault waits for
        // the source for postcopy_deadline, then SIGBUS.
        faultline::test::check(faultline::test::read_signal(r.data() + r.size() - 1) == SIGBUS,
                               "SIGBUS on a page the dead source never sent");
        bool failed = false;
        try {
          in.wait();
        } catch (const Error&) {
          failed = true;
        }
        faultline::test::check(failed, "wait() reports the failure");
      },
      60000);
  CHECK(sig == 0);
}

namespace {

// A TCP relay on loopback between the source and the destination's
// listener, standing in for the network: it cuts its first connection once
// `cut_after` bytes went from the source to the destination; later
// connections are relayed once reconnects are allowed, and closed at once
// before that. It keeps the first bytes the source sent (its OFFER).
class Relay {
 public:
  Relay(const std::string& target, uint64_t cut_after, bool reconnects_allowed)
      : target_(target), cut_after_(cut_after), allowed_(reconnects_allowed) {
    listen_ = detail::UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(listen_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(listen_.get(), 4) != 0)
      throw Error("relay: cannot listen", errno);
    socklen_t len = sizeof a;
    ::getsockname(listen_.get(), reinterpret_cast<sockaddr*>(&a), &len);
    endpoint_ = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
    acceptor_ = std::thread([this] { accept_loop(); });
  }
  ~Relay() {
    quit_ = true;
    acceptor_.join();
    for (auto& t : pumps_) t.join();
  }
  const std::string& endpoint() const { return endpoint_; }
  int cuts() const { return cuts_.load(); }
  int connections() const { return connections_.load(); }  // relayed
  void allow_reconnects() { allowed_ = true; }
  // The OFFER's nonce_s: after the 20-byte header, magic, version, mode,
  // reserved and caps (12 bytes). Valid once cuts() > 0.
  std::array<uint8_t, remote::kNonceSize> offer_nonce() const {
    std::array<uint8_t, remote::kNonceSize> n{};
    std::memcpy(n.data(), first_bytes_.data() + 32, n.size());
    return n;
  }

 private:
  void accept_loop() {
    while (!quit_) {
      pollfd p{listen_.get(), POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      detail::UniqueFd c(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!c || (connections_ > 0 && !allowed_)) continue;  // (closed at once)
      detail::UniqueFd d = migration::connect_to(target_, std::chrono::milliseconds(2000));
      ::fcntl(d.get(), F_SETFL, ::fcntl(d.get(), F_GETFL) & ~O_NONBLOCK);  // the pump blocks on writes
      bool first = connections_++ == 0;
      pumps_.emplace_back([this, c = std::move(c), d = std::move(d), first]() mutable {
        pump(std::move(c), std::move(d), first);
      });
    }
  }
  // Copies both ways until either side closes (or, on the first
  // connection, until the cut).
  void pump(detail::UniqueFd src, detail::UniqueFd dst, bool first) {
    uint64_t forwarded = 0;
    std::vector<char> buf(64 * 1024);
    while (!quit_) {
      pollfd p[2] = {{src.get(), POLLIN, 0}, {dst.get(), POLLIN, 0}};
      if (::poll(p, 2, 20) <= 0) continue;
      for (int i = 0; i < 2; ++i) {
        if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
        ssize_t n = ::read(p[i].fd, buf.data(), buf.size());
        if (n <= 0) return;  // closing both ends ends the other side too
        for (ssize_t off = 0; off < n;) {
          ssize_t w = ::write(p[1 - i].fd, buf.data() + off, static_cast<size_t>(n - off));
          if (w <= 0) return;
          off += w;
        }
        if (i == 0 && first && forwarded < 64)
          first_bytes_.insert(first_bytes_.end(), buf.data(), buf.data() + std::min<ssize_t>(n, 64));
        if (i == 0) forwarded += static_cast<uint64_t>(n);
      }
      if (first && forwarded >= cut_after_) {
        cuts_++;
        ::shutdown(src.get(), SHUT_RDWR);
        ::shutdown(dst.get(), SHUT_RDWR);
        return;
      }
    }
  }

  std::string target_, endpoint_;
  uint64_t cut_after_;
  std::atomic<bool> allowed_;
  std::vector<char> first_bytes_;  // the first pump's, read after cuts_ is set
  detail::UniqueFd listen_;
  std::atomic<bool> quit_{false};
  std::atomic<int> cuts_{0}, connections_{0};
  std::thread acceptor_;
  std::vector<std::thread> pumps_;  // the acceptor's only
};

}  // namespace

TEST_CASE("post-copy recovery: the stream cut mid-push is reconnected and every byte arrives", "[migration]") {
  if (!kernel_has_wp_async()) {
    WARN("SKIPPED: dirty tracking needs UFFD_FEATURE_WP_ASYNC (Linux 6.7+)");
    return;
  }
  const bool back = GENERATE(true, false);
  INFO((back ? "the source reconnects" : "the network stays down for the stream"));
  MigrationOptions o = options_for(MigrationMode::kPostcopy);
  o.postcopy_deadline = std::chrono::milliseconds(3000);
  Workload w({32 * kMiB}, 2);
  MigrationListener listener("127.0.0.1:0", o);
  // A quarter into the push: the source's handshake and state go first.
  Relay relay(listener.endpoint(), 8 * kMiB, back);
  auto dest = std::async(std::launch::async, receive_and_check, std::ref(listener), w.at_stop.get_future());
  MigrationMetrics m;
  std::string error;
  try {
    m = migrate_out(w.pointers, relay.endpoint(), w.hooks(), o);
  } catch (const Error& e) {
    error = e.what();
  }
  DestResult d = dest.get();
  INFO("source: " << error);
  INFO("destination: " << d.error);
  CHECK(relay.cuts() == 1);
  // The destination has every byte either way: over the new stream, or
  // pulled over the urgent lane (which the source serves while it tries).
  CHECK(d.error.empty());
  CHECK(d.mismatch_at_resume == -1);
  CHECK(d.mismatch_after == -1);
  if (back) {
    CHECK(error.empty());
    CHECK(m.recoveries == 1);
    CHECK(d.metrics.recoveries == 1);
    CHECK(relay.connections() == 2);
  } else {
    CHECK(error.find("not recovered") != std::string::npos);
    CHECK(d.metrics.recoveries == 0);
  }
  CHECK(w.stops == 1);
}

TEST_CASE("post-copy recovery: a reconnect for another migration or with the wrong secret is refused", "[migration]") {
  if (!kernel_has_wp_async()) {
    WARN("SKIPPED: dirty tracking needs UFFD_FEATURE_WP_ASYNC (Linux 6.7+)");
    return;
  }
  // The destination waits for its source; impostors on the listener are
  // turned away (and do not end the wait), the real source's reconnect then
  // completes the migration.
  MigrationOptions o = options_for(MigrationMode::kPostcopy);
  o.postcopy_deadline = std::chrono::milliseconds(3000);
  Workload w({16 * kMiB}, 1);
  MigrationListener listener("127.0.0.1:0", o);
  Relay relay(listener.endpoint(), 4 * kMiB, false);
  std::vector<std::string> impostor_errors;
  std::thread impostor([&] {
    while (relay.cuts() == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
    for (bool this_migration : {false, true}) {
      try {
        migration::Channel ch(migration::connect_to(listener.endpoint(), std::chrono::milliseconds(2000)),
                              std::chrono::milliseconds(2000), "destination");
        migration::Received r = ch.receive({{migration::Frame::kHello, migration::kHelloSize}});
        migration::Hello hello;
        migration::decode_hello(r.payload, &hello);
        // Another migration's nonce with the right secret; this one's with a wrong one.
        auto nonce = this_migration ? relay.offer_nonce() : remote::random_nonce();
        std::vector<std::byte> resume(migration::kResumeSize);
        std::memcpy(resume.data(), nonce.data(), nonce.size());
        auto proof = remote::handshake_mac(this_migration ? "wrong" : "sesame", "resume", hello.nonce, nonce);
        std::memcpy(resume.data() + nonce.size(), proof.data(), proof.size());
        ch.send(migration::Frame::kResume, 0, 0, resume);
        ch.receive({{migration::Frame::kAccept, remote::kMacSize}});
        impostor_errors.push_back("accepted");
      } catch (const Error& e) {
        impostor_errors.push_back(e.what());
      }
    }
    relay.allow_reconnects();  // now the real source gets through
  });
  auto dest = std::async(std::launch::async, receive_and_check, std::ref(listener), w.at_stop.get_future());
  std::string error;
  MigrationMetrics m;
  try {
    m = migrate_out(w.pointers, relay.endpoint(), w.hooks(), o);
  } catch (const Error& e) {
    error = e.what();
  }
  impostor.join();
  DestResult d = dest.get();
  INFO("source: " << error << "; destination: " << d.error);
  REQUIRE(impostor_errors.size() == 2);
  INFO(impostor_errors[0] << "; " << impostor_errors[1]);
  CHECK(impostor_errors[0].find("not the migration in progress") != std::string::npos);
  CHECK(impostor_errors[1].find("authentication failed") != std::string::npos);
  CHECK(m.recoveries == 1);
  CHECK(error.empty());
  CHECK(d.error.empty());
  CHECK(d.mismatch_after == -1);
}

// SPDX-License-Identifier: Apache-2.0
// Live migration (faultline/migration.h): each mode with writers running,
// every byte of the destination against the source at its stop; failures of
// the peer, the connection and the secret.
#include <faultline/error.h>
#include <faultline/memory_backend.h>
#include <faultline/migration.h>
#include <faultline/runtime.h>
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
    compare(&d.mismatch_at_resume);
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

}  // namespace

TEST_CASE("migration moves every byte in each mode while writers run", "[migration]") {
  auto mode = GENERATE(MigrationMode::kPrecopy, MigrationMode::kPostcopy, MigrationMode::kHybrid);
  auto address = GENERATE(std::string("127.0.0.1:0"), std::string("unix"));
  INFO(migration_mode_name(mode) << " over " << address);
  Runtime probe;
  if (!probe.mode().wp_async) {
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
  // The JSON names what a user looks for.
  std::string json = m.to_json();
  CHECK(json.find("\"downtime_ms\"") != std::string::npos);
  CHECK(json.find("\"rounds\"") != std::string::npos);
  if (mode != MigrationMode::kPrecopy) CHECK(json.find("\"blocked_ms\"") != std::string::npos);
}

TEST_CASE("a page sent in an early round and written again arrives with its last bytes", "[migration]") {
  auto mode = GENERATE(MigrationMode::kPrecopy, MigrationMode::kHybrid);
  Runtime probe;
  if (!probe.mode().wp_async) {
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
  // copies 8 MiB while three threads write)...
  CHECK(m.rounds[1].pages > 0);
  CHECK(m.rounds[1].pages < m.rounds[0].pages);
  // ...and the destination holds what the source held at the stop.
  CHECK(d.mismatch_at_resume == -1);
  CHECK(d.mismatch_after == -1);
}

TEST_CASE("migration with a wrong or missing secret fails on both sides", "[migration]") {
  Runtime probe;
  if (!probe.mode().wp_async) {
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
  Runtime probe;
  if (!probe.mode().wp_async) {
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

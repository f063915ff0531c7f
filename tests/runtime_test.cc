// SPDX-License-Identifier: Apache-2.0
// Runtime behaviour over the memory backend and the scripted test backend:
// contents, concurrency, error paths, tear-down, limits.
#include <execinfo.h>
#include <fcntl.h>
#include <malloc.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "faultline/version.h"
#include "stats_internal.h"
#include "test_options.h"
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "faultline/faultline.h"
#include "test_backends.h"
#include "test_util.h"

using namespace faultline;
using namespace faultline::test;

namespace {

constexpr size_t kKiB = 1024, kMiB = 1024 * 1024;

// ASan's allocator maps memory of its own as it goes, so mapping counts are
// only exact without it; the checks that a region's own range is gone hold
// everywhere.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAsan = true;
#else
constexpr bool kAsan = false;
#endif

size_t rss_bytes() {
  std::ifstream statm("/proc/self/statm");
  size_t pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * 4096;
}


}  // namespace

TEST_CASE("every fill size places the right bytes, with any offset and a ragged tail", "[runtime]") {
  uint32_t fill = GENERATE(4096u, 8192u, 16384u, 32768u, 65536u, 131072u, 262144u, 524288u, 1048576u, 2097152u);
  bool readahead = GENERATE(false, true);
  uint64_t offset = GENERATE(uint64_t{0}, uint64_t{3 * 4096}, uint64_t{12345});
  auto data = pattern(5 * kMiB + 1234, fill);
  Runtime rt;
  RegionOptions o;
  o.fill_size = fill;
  o.readahead = readahead;
  o.readahead_max = std::max<uint64_t>(fill, kMiB);
  o.offset = offset;
  Region r = rt.map(MemoryBackend::borrow(data), o);
  REQUIRE(r.size() == data.size() - offset);
  REQUIRE(first_mismatch(r.data(), data.data() + offset, r.size()) == -1);
  // The rest of the last page is zero, as past the end of a file in mmap.
  size_t page_end = (r.size() + 4095) / 4096 * 4096;
  for (size_t i = r.size(); i < page_end; ++i) REQUIRE(r.data()[i] == std::byte{0});
  INFO("fill " << fill << " readahead " << readahead << " offset " << offset);
  CHECK(wait_until([&] { return r.stats().bytes_installed == page_end; }));
  auto s = r.stats();
  CHECK(s.errors == 0);
  if (!readahead) CHECK(s.faults == (page_end + fill - 1) / fill);
}

TEST_CASE("a region longer than its backend reads zeros past the end", "[runtime]") {
  auto data = pattern(kMiB + 100);
  Runtime rt;
  RegionOptions o;
  o.length = 10 * kMiB;
  Region r = rt.map(MemoryBackend::borrow(data), o);
  REQUIRE(r.size() == 10 * kMiB);
  REQUIRE(first_mismatch(r.data(), data.data(), data.size()) == -1);
  for (size_t i = data.size(); i < r.size(); i += 511) REQUIRE(r.data()[i] == std::byte{0});
  CHECK(wait_until([&] { return r.stats().zero_pages == (10 * kMiB - 17 * 64 * kKiB) / 4096; }));  // chunks 17.. hold no data
}

TEST_CASE("all-zero chunks are placed as zero pages and stay writable", "[runtime]") {
  auto data = pattern(4 * kMiB);
  std::fill(data.begin() + kMiB, data.begin() + 2 * kMiB, std::byte{0});  // 16 zero chunks of 64 KiB
  Runtime rt;
  RegionOptions o;
  o.readahead = false;
  o.writable = true;
  Region r = rt.map(MemoryBackend::borrow(data), o);
  REQUIRE(first_mismatch(r.data(), data.data(), data.size()) == -1);
  CHECK(wait_until([&] { return r.stats().zero_pages == kMiB / 4096; }));
  r.data()[kMiB + 5] = std::byte{42};  // copy-on-write of the shared zero page
  CHECK(r.data()[kMiB + 5] == std::byte{42});
  CHECK(r.data()[kMiB + 4096 + 5] == std::byte{0});
}

TEST_CASE("zeros_as_pages places zero chunks as pages of their own: writing them faults no more", "[runtime]") {
  auto data = pattern(64 * 1024);
  for (bool as_pages : {false, true}) {
    INFO("zeros_as_pages " << as_pages);
    Runtime rt;
    RegionOptions o;
    o.writable = true;
    o.readahead = false;
    o.length = 2 * kMiB;  // all but the first chunk hold no data: zero chunks
    o.zeros_as_pages = as_pages;
    Region r = rt.map(MemoryBackend::borrow(data), o);
    for (size_t at = 0; at < r.size(); at += 4096) REQUIRE(r.data()[at] == (at < data.size() ? data[at] : std::byte{0}));
    // Every page is placed now; a write faults only where the shared zero
    // page is mapped (copy-on-write), counted on this thread.
    rusage before{}, after{};
    getrusage(RUSAGE_THREAD, &before);
    for (size_t at = 64 * 1024; at < r.size(); at += 4096) r.data()[at + 1] = std::byte{9};
    getrusage(RUSAGE_THREAD, &after);
    const long faults = after.ru_minflt - before.ru_minflt;
    const long pages = static_cast<long>((r.size() - 64 * 1024) / 4096);
    if (as_pages)
      CHECK(faults == 0);
    else
      CHECK(faults >= pages);
    CHECK(r.data()[64 * 1024 + 1] == std::byte{9});
    CHECK(r.data()[64 * 1024] == std::byte{0});
    // (The last chunk's count may trail its wake-up by a moment.)
    CHECK(wait_until([&] { return r.stats().zero_pages == static_cast<uint64_t>(pages); }));
  }
}

// These run in the test process so that TSan sees them; a thread left
// asleep shows up as ctest's timeout.
TEST_CASE("eight threads faulting the same and different pages all get the right bytes", "[runtime][threads]") {
  bool readahead = GENERATE(false, true);
  auto data = pattern(32 * kMiB, 7);
  auto backend = std::make_shared<ScriptedBackend>(data);
  Runtime rt;
  RegionOptions o;
  o.readahead = readahead;
  Region r = rt.map(backend, o);
  std::atomic<long> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      // Even threads walk the same pages in the same order; odd ones take
      // their own stripes, in reverse.
      for (size_t k = 0; k < data.size() / 4096; ++k) {
        size_t page = t % 2 == 0 ? k : (data.size() / 4096 - 1 - k);
        if (t % 2 == 1 && page % 4 != static_cast<size_t>(t / 2)) continue;
        size_t i = page * 4096 + (k * 31) % 4096;
        if (r.data()[i] != data[i]) bad++;
      }
    });
  for (auto& th : threads) th.join();
  REQUIRE(bad == 0);
  REQUIRE(first_mismatch(r.data(), data.data(), data.size()) == -1);
  if (!readahead) CHECK(backend->reads() == data.size() / (64 * kKiB));  // one read per chunk
}

TEST_CASE("wait_ns sums every faulting thread's wait, not one per chunk", "[runtime][threads]") {
  auto data = pattern(kMiB, 5);
  auto backend = std::make_shared<ScriptedBackend>(data);
  backend->hold();  // the chunk's read stays in flight until release()
  Runtime rt;
  RegionOptions o;
  o.readahead = false;
  Region r = rt.map(backend, o);
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t)
    threads.emplace_back([&, t] {
      if (r.data()[t * 4096] != data[t * 4096]) bad++;  // three pages of chunk 0
    });
  // All three threads are parked on their faults (messages read) before
  // the hold begins to count.
  REQUIRE(wait_until([&] { return r.stats().faults == 3; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  backend->release();
  for (auto& th : threads) th.join();
  CHECK(bad == 0);
  CHECK(backend->reads() == 1);
  CHECK(wait_until([&] { return r.stats().latency_count == 3; }));
  StatsSnapshot s = r.stats();
  CHECK(s.wait_ns >= 3 * 100'000'000ull);
  CHECK(s.wait_ns >= 3 * s.latency_p50_ns * 15 / 16);  // (quantiles exact to 1/16)
  CHECK(rt.stats().wait_ns == s.wait_ns);
}

TEST_CASE("faults on chunks partly present (EEXIST) are served and woken", "[runtime][threads]") {
  auto data = pattern(8 * kMiB, 3);
  Runtime rt;
  RegionOptions o;
  o.writable = true;
  o.fill_size = 256 * kKiB;
  o.reload_removed = true;  // dropped pages load the backend's bytes again
  Region r = rt.map(MemoryBackend::borrow(data), o);
  REQUIRE(first_mismatch(r.data(), data.data(), data.size()) == -1);
  for (int round = 0; round < 20; ++round) {
    // Drop every other page, so each chunk is partly present: refilling it
    // hits EEXIST on the pages that stayed.
    for (size_t p = round % 2; p < data.size() / 4096; p += 2) madvise(r.data() + p * 4096, 4096, MADV_DONTNEED);
    std::atomic<long> bad{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
      threads.emplace_back([&, t] {
        for (size_t i = t * 997; i < data.size(); i += 4096)
          if (r.data()[i] != data[i]) bad++;
      });
    r.prefetch(0, data.size());  // races the demand faults for the same chunks
    for (auto& th : threads) th.join();
    REQUIRE(bad == 0);
  }
  REQUIRE(first_mismatch(r.data(), data.data(), data.size()) == -1);
}

TEST_CASE("a backend error gives SIGBUS to the access and everything else keeps working", "[runtime][errors][fork]") {
  bool use_poison = GENERATE(true, false);
  REQUIRE(run_in_child([&] {
            catch_fault_signals();
            auto data = pattern(4 * kMiB, 5);
            auto failing = std::make_shared<ScriptedBackend>(data);
            failing->fail_at(3 * 64 * kKiB + 100, 1, EIO);  // chunk 3 cannot be read
            detail::EngineTestOptions test;
            test.use_uffdio_poison = use_poison;
            Runtime rt = detail::make_runtime({}, test);
            RegionOptions o;
            o.readahead = false;
            Region bad = rt.map(failing, o);
            Region good = rt.map(MemoryBackend::borrow(data), o);
            std::byte v{};
            check(read_signal(bad.data() + 3 * 64 * kKiB + 5) == SIGBUS, "no SIGBUS");
            check(read_signal(bad.data() + 4 * 64 * kKiB - 1) == SIGBUS, "no SIGBUS at the chunk's end");
            check(read_signal(bad.data() + 4 * 64 * kKiB, &v) == 0 && v == data[4 * 64 * kKiB], "next chunk");
            check(read_signal(bad.data() + 2 * 64 * kKiB + 7, &v) == 0 && v == data[2 * 64 * kKiB + 7], "prev chunk");
            check(first_mismatch(good.data(), data.data(), data.size()) == -1, "other region");
            check(bad.stats().errors == 1 && rt.stats().errors == 1, "error counted once");
            check(read_signal(bad.data() + 3 * 64 * kKiB) == SIGBUS, "SIGBUS again");
          }) == 0);
  // Unhandled, the signal ends the process, as with mmap on an I/O error.
  CHECK(run_in_child([] {
          auto failing = std::make_shared<ScriptedBackend>(pattern(kMiB));
          failing->fail_at(0, kMiB, EIO);
          Runtime rt;
          Region r = rt.map(failing);
          (void)*static_cast<volatile std::byte*>(r.data());
        }) == SIGBUS);
}

TEST_CASE("transient errors and short reads are retried", "[runtime][errors]") {
  auto data = pattern(2 * kMiB, 9);
  auto backend = std::make_shared<ScriptedBackend>(data);
  Runtime rt;
  RegionOptions o;
  o.readahead = false;
  SECTION("EAGAIN") {
    backend->transient_failures(2);
    Region r = rt.map(backend, o);
    REQUIRE(first_mismatch(r.data(), data.data(), data.size()) == -1);
    CHECK(r.stats().retries == 2);
    CHECK(r.stats().errors == 0);
  }
  SECTION("short reads") {
    backend->set_short_reads(true);
    Region r = rt.map(backend, o);
    REQUIRE(first_mismatch(r.data(), data.data(), data.size()) == -1);
    CHECK(r.stats().retries > 0);
    CHECK(r.stats().errors == 0);
  }
}

TEST_CASE("a read that keeps failing with EAGAIN ends in SIGBUS, not a hang", "[runtime][errors][fork]") {
  CHECK(run_in_child([] {
          auto b = std::make_shared<ScriptedBackend>(pattern(kMiB));
          b->transient_failures(1000000);
          Runtime rt;
          Region r = rt.map(b);
          (void)*static_cast<volatile std::byte*>(r.data());
        }) == SIGBUS);
}

TEST_CASE("destroying a region with reads in flight neither hangs nor leaks", "[runtime][teardown][fork]") {
  REQUIRE(run_in_child([] {
            catch_fault_signals();
            auto data = pattern(4 * kMiB);
            auto backend = std::make_shared<ScriptedBackend>(data);
            mallopt(M_ARENA_MAX, 1);  // new threads would map malloc arenas of their own
            {  // glibc keeps freed thread stacks mapped: fill its cache first
              Runtime warm;
              std::vector<std::thread> ts;
              for (int t = 0; t < 6; ++t) ts.emplace_back([] {});
              for (auto& th : ts) th.join();
            }
            size_t fds = open_fd_count(), maps = mapping_count();
            {
              Runtime rt;
              auto region = std::make_unique<Region>(rt.map(backend));
              backend->hold();
              std::atomic<int> finished{0};
              std::vector<std::thread> threads;
              std::byte* base = region->data();
              size_t size = region->size();
              for (int t = 0; t < 4; ++t)
                threads.emplace_back([&, t] {
                  // Either the page (served or zero after the unregister) or
                  // SIGSEGV once the range is unmapped: never a hang.
                  read_signal(base + t * 512 * kKiB);
                  finished++;
                });
              check(wait_until([&] { return backend->pending() >= 1; }), "faults never reached the backend");
              std::thread releaser([&] {
                std::this_thread::sleep_for(std::chrono::milliseconds(50));
                backend->release();
              });
              region.reset();  // waits only for the reads in flight
              releaser.join();
              for (auto& th : threads) th.join();
              check(finished == 4, "threads left asleep");
              check(!is_uffd_registered(base, size), "region still registered");
            }
            check(open_fd_count() == fds, "fd leak");
            if (!kAsan) check(mapping_count() <= maps + 4, "mapping leak");
          }) == 0);
}

TEST_CASE("destroying the runtime while faults are pending still serves them", "[runtime][teardown]") {
  size_t fault_threads = threads_named("faultline");
  auto data = pattern(4 * kMiB, 11);
  auto backend = std::make_shared<ScriptedBackend>(data);
  auto rt = std::make_unique<Runtime>();
  Region r = rt->map(backend);
  backend->hold();
  std::byte seen{};
  std::thread reader([&] { seen = r.data()[kMiB + 3]; });
  REQUIRE(wait_until([&] { return backend->pending() >= 1; }));
  rt.reset();  // the region keeps the fault thread alive
  backend->release();
  reader.join();
  CHECK(seen == data[kMiB + 3]);
  CHECK(first_mismatch(r.data(), data.data(), data.size()) == -1);
  CHECK(threads_named("faultline") == fault_threads + 1);  // the region kept it alive
  r.reset();
  CHECK(threads_named("faultline") == fault_threads);
}

TEST_CASE("write(2) from an unfilled page works in kernel-fault mode", "[runtime]") {
  Runtime rt;
  if (rt.mode().user_mode_only) {
    WARN("SKIPPED: needs kernel-mode faults (user-mode-only uffd here)");
    return;
  }
  auto data = pattern(3 * kMiB, 13);
  Region r = rt.map(MemoryBackend::borrow(data));
  TempFile out(std::vector<std::byte>{});
  int fd = open(out.path().c_str(), O_RDWR | O_TRUNC);
  REQUIRE(fd >= 0);
  // The kernel copies from region memory nobody has touched yet.
  REQUIRE(write(fd, r.data() + 100, 2 * kMiB) == static_cast<ssize_t>(2 * kMiB));
  std::vector<std::byte> back(2 * kMiB);
  REQUIRE(pread(fd, back.data(), back.size(), 0) == static_cast<ssize_t>(back.size()));
  close(fd);
  CHECK(first_mismatch(back.data(), data.data() + 100, back.size()) == -1);
}

TEST_CASE("a thousand regions come and go without leaking, and two thousand live at once", "[runtime][limits]") {
  auto data = pattern(256 * kKiB, 17);
  auto backend = MemoryBackend::borrow(data);
  Runtime rt;
  { Region warm = rt.map(backend); }
  size_t fds = open_fd_count(), maps = mapping_count(), threads = thread_count();
  std::vector<std::pair<std::byte*, size_t>> ranges;
  for (int i = 0; i < 1000; ++i) {
    Region r = rt.map(backend);
    REQUIRE(r.data()[i * 37 % data.size()] == data[i * 37 % data.size()]);
    if (i == 0) REQUIRE(is_uffd_registered(r.data(), r.size()));  // the probe sees live regions
    ranges.emplace_back(r.data(), r.size());
  }
  CHECK(open_fd_count() == fds);
  // A leak would show once per region.
  if (!kAsan) CHECK(mapping_count() <= maps + 4);
  for (auto [p, n] : ranges) REQUIRE(!is_uffd_registered(p, n));
  CHECK(thread_count() == threads);

  std::vector<Region> live;
  for (int i = 0; i < 2000; ++i) {
    RegionOptions o;
    o.offset = static_cast<uint64_t>(i % 16) * 4096;
    o.fill_size = 4096u << (i % 6);
    live.push_back(rt.map(backend, o));
  }
  for (size_t i = 0; i < live.size(); ++i) {
    size_t at = (i * 4099) % live[i].size();
    REQUIRE(live[i].data()[at] == data[live[i].options().offset + at]);
  }
  live.clear();
  CHECK(open_fd_count() == fds);
  if (!kAsan) CHECK(mapping_count() <= maps + 4);
}

TEST_CASE("invalid options and inputs are rejected with an error naming the problem", "[runtime][errors]") {
  auto data = pattern(kMiB);
  auto backend = MemoryBackend::borrow(data);
  Runtime rt;
  auto fails_with = [&](RegionOptions o, const std::string& text) {
    try {
      rt.map(backend, o);
    } catch (const Error& e) {
      INFO(e.what());
      CHECK(std::string(e.what()).find(text) != std::string::npos);
      return;
    }
    FAIL("no error for " << text);
  };
  RegionOptions o;
  o.fill_size = 3000;
  fails_with(o, "RegionOptions.fill_size = 3000");
  o.fill_size = 3 * 8192;
  fails_with(o, "fill_size = 24576");
  o.fill_size = 4 * 1024 * 1024;
  fails_with(o, "fill_size = 4194304");
  o = {};
  o.fill_size = 1 << 20;
  o.readahead_max = 64 * 1024;
  fails_with(o, "RegionOptions.readahead_max = 65536");
  o = {};
  o.offset = kMiB;
  fails_with(o, "RegionOptions.offset = 1048576 is past the end");
  o.offset = 5 * kMiB;
  fails_with(o, "offset = 5242880");
  o = {};
  o.length = uint64_t{1} << 50;
  fails_with(o, "RegionOptions.length");
  CHECK_THROWS_WITH(rt.map(nullptr), Catch::Contains("null"));
  CHECK_THROWS_WITH(rt.map(std::make_shared<MemoryBackend>(std::vector<std::byte>{})), Catch::Contains("empty"));
  Region r = rt.map(backend);
  CHECK_THROWS_WITH(r.prefetch(2 * kMiB, 10), Catch::Contains("past the end of the region"));
  RuntimeOptions ro;
  ro.read_retries = -1;
  CHECK_THROWS_WITH(Runtime(ro), Catch::Contains("RuntimeOptions.read_retries"));
}

TEST_CASE("MADV_DONTNEED with reload_removed drops writes: the pages load again from the backend", "[runtime]") {
  auto data = pattern(2 * kMiB, 19);
  Runtime rt;
  RegionOptions o;
  o.writable = true;
  o.reload_removed = true;
  Region r = rt.map(MemoryBackend::borrow(data), o);
  std::memset(r.data(), 0xAB, kMiB);
  CHECK(r.data()[100] == std::byte{0xAB});
  CHECK(data[100] != std::byte{0xAB});  // private: the backend never changes
  REQUIRE(madvise(r.data(), kMiB, MADV_DONTNEED) == 0);
  REQUIRE(first_mismatch(r.data(), data.data(), data.size()) == -1);
}

TEST_CASE("MADV_DONTNEED racing placements never leaves a thread faulting forever", "[runtime][race][fork]") {
  // madvise() reports REMOVE and zaps the range only after the fault thread
  // has read the event, so a chunk placed in between is gone again while
  // marked present. The runtime must notice (the page is not mapped) and
  // load it again, not wake the thread into the same fault forever.
  // A file backend reads asynchronously: the widest window for the race.
  int fill = GENERATE(64 * 1024, 256 * 1024);
  auto data = pattern(16 * kMiB, 29);
  TempFile file(data);
  CHECK(run_in_child(
            [&] {
              Runtime rt;
              RegionOptions o;
              o.fill_size = static_cast<uint32_t>(fill);
              o.readahead = false;
              o.reload_removed = true;  // the readers check the file's bytes
              Region r = rt.map(std::make_shared<FileBackend>(file.path()), o);
              std::atomic<bool> stop{false};
              std::atomic<uint64_t> reads{0}, wrong{0};
              std::vector<std::thread> threads;
              for (int t = 0; t < 6; ++t)
                threads.emplace_back([&, t] {
                  uint64_t x = 0x9E3779B97F4A7C15ull * (t + 1);
                  while (!stop) {
                    x = x * 6364136223846793005ull + 1442695040888963407ull;
                    size_t at = (x >> 20) % (2 * kMiB);  // a hot part, to make the race likely
                    if (t < 4) {  // readers
                      if (r.data()[at] != data[at]) wrong++;
                      reads++;
                    } else {  // droppers: up to 64 KiB, page-aligned
                      size_t start = at & ~size_t{4095};
                      size_t len = ((x >> 8) % 16 + 1) * 4096;
                      madvise(r.data() + start, len, MADV_DONTNEED);
                      // Leave the readers time to use what they fault in.
                      std::this_thread::sleep_for(std::chrono::microseconds(300));
                    }
                  }
                });
              std::this_thread::sleep_for(std::chrono::milliseconds(1500));
              stop = true;
              for (auto& th : threads) th.join();
              check(wrong == 0, "wrong bytes");
              check(reads > 1000, "readers made no progress");
              // A chunk left marked present but unmapped would hang this.
              check(first_mismatch(r.data(), data.data(), data.size()) == -1, "contents after the race");
            },
            15000) == 0);
}

TEST_CASE("unmapping part of a region leaves the rest served", "[runtime]") {
  auto data = pattern(4 * kMiB, 23);
  Runtime rt;
  Region r = rt.map(MemoryBackend::borrow(data));
  REQUIRE(munmap(r.data() + kMiB, kMiB) == 0);
  CHECK(first_mismatch(r.data(), data.data(), kMiB) == -1);
  CHECK(first_mismatch(r.data() + 2 * kMiB, data.data() + 2 * kMiB, 2 * kMiB) == -1);
  r.prefetch(0, r.size());  // must skip the hole
  r.reset();
}

TEST_CASE("pages unmapped while their read is in flight end the fault with SIGSEGV, not a hang",
          "[runtime][fork]") {
  CHECK(run_in_child(
            [] {
              auto data = pattern(4 * kMiB, 29);
              auto backend = std::make_shared<ScriptedBackend>(data);
              Runtime rt;
              Region r = rt.map(backend);
              backend->hold();
              std::byte* target = r.data() + kMiB + 5;
              std::thread reader([target] { [[maybe_unused]] volatile std::byte b = *target; });
              check(wait_until([&] { return backend->pending() >= 1; }), "the fault never reached the backend");
              check(munmap(r.data() + kMiB, kMiB) == 0, "munmap");
              backend->release();  // placing now fails with ENOENT; the reader must be woken
              reader.join();       // not reached: the reader's second fault is a SIGSEGV
            },
            15000) == SIGSEGV);
}

TEST_CASE("a read-only region refuses writes with SIGSEGV", "[runtime][fork]") {
  CHECK(run_in_child([] {
          auto data = pattern(kMiB);
          Runtime rt;
          Region r = rt.map(MemoryBackend::borrow(data));
          *static_cast<volatile std::byte*>(r.data() + 10) = std::byte{1};
        }) == SIGSEGV);
}

TEST_CASE("a forked child reads an inherited region (EVENT_FORK), or gets SIGSEGV without it", "[runtime][fork]") {
  auto data = pattern(4 * kMiB, 41);
  Runtime rt;
  Region r = rt.map(MemoryBackend::borrow(data));
  CHECK(first_mismatch(r.data(), data.data(), kMiB) == -1);  // placed before the fork
  const std::byte* p = r.data();
  // With the fork event the child's copy is served (tests/uffd_events_test.cc
  // checks more); without it the region is MADV_DONTFORK.
  int expected = rt.mode().event_fork ? 0 : SIGSEGV;
  INFO(rt.mode().describe());
  CHECK(run_in_child([&] {
          check(first_mismatch(p, data.data(), kMiB) == -1, "the placed part");
        }) == expected);
  CHECK(run_in_child([&] {
          check(first_mismatch(p + 3 * kMiB, data.data() + 3 * kMiB, kMiB) == -1, "a part not placed");
        }) == expected);
  // A child that maps again gets the data.
  CHECK(run_in_child([&data] {
          Runtime child;
          Region again = child.map(MemoryBackend::borrow(data));
          if (first_mismatch(again.data(), data.data(), data.size()) != -1) _exit(4);
        }) == 0);
  CHECK(first_mismatch(r.data(), data.data(), data.size()) == -1);
}

TEST_CASE("prefetch loads in the background so later touches do not fault", "[runtime]") {
  auto data = pattern(16 * kMiB, 29);
  auto backend = std::make_shared<ScriptedBackend>(data);
  Runtime rt;
  Region r = rt.map(backend);
  r.prefetch(4 * kMiB, 8 * kMiB);
  REQUIRE(wait_until([&] { return r.stats().pages_installed == 8 * kMiB / 4096; }));
  CHECK(r.stats().prefetch_chunks == 8 * kMiB / (64 * kKiB));
  CHECK(first_mismatch(r.data() + 4 * kMiB, data.data() + 4 * kMiB, 8 * kMiB) == -1);
  CHECK(r.stats().faults == 0);
  CHECK(first_mismatch(r.data(), data.data(), data.size()) == -1);
  CHECK(r.stats().faults > 0);
}

TEST_CASE("a demand fault on a queued prefetch is served before the rest of the queue", "[runtime][urgent]") {
  auto data = pattern(4 * kMiB, 37);
  auto backend = std::make_shared<ScriptedBackend>(data, 32);
  Runtime rt;
  RegionOptions o;
  o.readahead = false;  // only the prefetch and the demand fault
  Region r = rt.map(backend, o);
  backend->hold();
  r.prefetch(0, 8 * 64 * kKiB);
  REQUIRE(wait_until([&] { return backend->pending() == 8; }));
  std::byte seen{};
  std::thread reader([&] { seen = r.data()[6 * 64 * kKiB + 5]; });
  REQUIRE(wait_until([&] { return backend->raised() == 1; }));
  backend->release();
  reader.join();
  CHECK(seen == data[6 * 64 * kKiB + 5]);
  std::vector<uint64_t> order = backend->served();
  REQUIRE(order.size() == 8);
  CHECK(order[0] == 6 * 64 * kKiB);  // the raised read, then the queue in order
  CHECK(order[1] == 0);
  CHECK(r.stats().prefetch_hits == 1);
  CHECK(r.stats().raised_reads == 1);
  CHECK(backend->reads() == 8);  // raised, not read twice
  CHECK(first_mismatch(r.data(), data.data(), data.size()) == -1);
}

TEST_CASE("read-ahead turns a sequential scan into few faults", "[runtime]") {
  auto data = pattern(32 * kMiB, 31);
  auto backend = std::make_shared<ScriptedBackend>(data, 32);
  Runtime rt;
  RegionOptions o;
  uint64_t chunks = data.size() / o.fill_size;
  SECTION("on") {
    Region r = rt.map(backend, o);
    REQUIRE(first_mismatch(r.data(), data.data(), data.size()) == -1);
    CHECK(r.stats().faults < chunks / 4);
    CHECK(r.stats().readahead_chunks > chunks / 2);
    StatsSnapshot s = r.stats();
    CHECK(s.readahead_bytes == s.readahead_chunks * o.fill_size);
    CHECK(s.readahead_used_bytes > data.size() / 2);  // the stream went over what was read ahead
    CHECK(s.readahead_wasted_bytes == 0);
    CHECK(s.readahead_hit_ratio() == 1.0);
  }
  SECTION("lookups of two neighbouring chunks: read-ahead backs off to nothing") {
    Region r = rt.map(backend, o);
    // Pairs going down the region, 12 chunks apart: none lands in a window
    // read ahead after an earlier one (which, still in flight under load,
    // would count as used).
    for (uint64_t k = 0; k < 40; ++k) {
      uint64_t c = chunks - 2 - k * 12;
      REQUIRE(r.data()[c * o.fill_size] == data[c * o.fill_size]);
      REQUIRE(r.data()[(c + 1) * o.fill_size] == data[(c + 1) * o.fill_size]);
    }
    StatsSnapshot s = r.stats();
    INFO(s.to_json());
    CHECK(s.readahead_used_bytes == 0);
    CHECK(s.readahead_wasted_bytes > 0);
    CHECK(s.readahead_hit_ratio() == 0.0);
    // Five windows of 256 KiB at most (caps 64, 32, 16, 8, 4 chunks), then off.
    CHECK(s.readahead_chunks <= 5 * 4);
    CHECK(s.to_json().find("\"readahead_hit_ratio\":0.0") != std::string::npos);
  }
  SECTION("off") {
    o.readahead = false;
    Region r = rt.map(backend, o);
    REQUIRE(first_mismatch(r.data(), data.data(), data.size()) == -1);
    CHECK(r.stats().faults == chunks);
    CHECK(r.stats().readahead_chunks == 0);
  }
  SECTION("sparse random access does not trigger it") {
    // Three faults in each 4 MiB window, out of order: under the read-around
    // threshold, and never two chunks in a row.
    Region r = rt.map(backend, o);
    for (uint64_t w = 0; w < chunks / 64; ++w)
      for (uint64_t c : {w * 64 + 40, w * 64 + 7, w * 64 + 23})
        REQUIRE(r.data()[c * o.fill_size + 5] == data[c * o.fill_size + 5]);
    CHECK(r.stats().readahead_chunks == 0);
    CHECK(r.stats().bytes_read == 3 * (chunks / 64) * o.fill_size);
  }
}

TEST_CASE("random faults crowding into one window read the rest of it", "[runtime]") {
  auto data = pattern(32 * kMiB, 37);
  auto backend = std::make_shared<ScriptedBackend>(data, 32);
  Runtime rt;
  RegionOptions o;  // 64 KiB fills, 4 MiB read-ahead windows of 64 chunks
  Region r = rt.map(backend, o);
  // Window 2 (chunks 128..191) takes sixteen random faults (a quarter of it:
  // the threshold), never two neighbours in a row.
  std::vector<uint64_t> chunks;
  for (uint64_t k = 0; k < 16; ++k) chunks.push_back(128 + (k * 37) % 64);
  for (size_t k = 0; k < chunks.size(); ++k) {
    if (k == 15) CHECK(r.stats().readahead_chunks == 0);  // not before the sixteenth
    REQUIRE(r.data()[chunks[k] * o.fill_size] == data[chunks[k] * o.fill_size]);
  }
  REQUIRE(wait_until([&] { return r.stats().pages_installed == 64 * o.fill_size / 4096; }));
  CHECK(r.stats().readahead_chunks == 48);
  CHECK(first_mismatch(r.data() + 128 * o.fill_size, data.data() + 128 * o.fill_size, 64 * o.fill_size) == -1);
  CHECK(r.stats().faults == 16);  // the whole window was there before it was touched
  // The windows around it were left alone.
  CHECK(r.stats().bytes_read == 64 * o.fill_size);
}

TEST_CASE("statistics are exported as JSON and add up per runtime", "[runtime][stats]") {
  auto data = pattern(2 * kMiB);
  Runtime rt;
  RegionOptions o;
  o.readahead = false;
  Region a = rt.map(MemoryBackend::borrow(data), o);
  Region b = rt.map(MemoryBackend::borrow(data), o);
  REQUIRE(first_mismatch(a.data(), data.data(), data.size()) == -1);
  REQUIRE(first_mismatch(b.data(), data.data(), kMiB) == -1);
  REQUIRE(wait_until([&] { return rt.stats().latency_count == 48; }));
  auto sa = a.stats(), sb = b.stats(), total = rt.stats();
  CHECK(sa.faults == 32);
  CHECK(sb.faults == 16);
  CHECK(total.faults == 48);
  CHECK(total.bytes_read == 3 * kMiB);
  CHECK(sa.latency_count == 32);
  CHECK(sa.latency_p50_ns > 0);
  CHECK(sa.latency_p50_ns <= sa.latency_p99_ns);
  CHECK(sa.latency_p99_ns <= sa.latency_max_ns);
  auto json = nlohmann::ordered_json::parse(total.to_json());
  CHECK(json["version"] == version());
  CHECK(json["faults"] == 48);
  CHECK(json["bytes_read"] == 3 * kMiB);
  CHECK(json["errors"] == 0);
  CHECK(json["latency_ns"]["count"] == 48);
  CHECK(json["latency_ns"]["p99"] == total.latency_p99_ns);
  CHECK(json["latency_ns"]["max"] == total.latency_max_ns);
  // for_each walks the same list the JSON is written from, in its order.
  std::vector<std::string> names;
  total.for_each([&](std::string_view name, uint64_t value) {
    names.emplace_back(name);
    if (name.rfind("latency_", 0) != 0) CHECK(json[std::string(name)] == value);
  });
  // less "version", "readahead_hit_ratio" and "latency_ns", plus its five fields
  REQUIRE(names.size() == json.size() - 3 + 5);
  CHECK(json["readahead_hit_ratio"] == total.readahead_hit_ratio());
  CHECK(names.front() == "faults");
  CHECK(names[1] == "pages_installed");
  CHECK(names.back() == "latency_max_ns");
  auto it = json.begin();
  CHECK(it.key() == "version");
  for (size_t i = 0; i + 5 < names.size(); ++i) CHECK((++it).key() == names[i]);
}

TEST_CASE("the latency histogram is exact to 1/16 of a value", "[stats]") {
  detail::LatencyHistogram h;
  for (uint64_t v = 1; v <= 1000; ++v) h.record(v * 1000);  // 1 µs .. 1 ms
  CHECK(h.count() == 1000);
  CHECK(h.max_ns() == 1000000);
  auto near = [](uint64_t got, uint64_t want) { return got >= want - want / 16 && got <= want + want / 16; };
  CHECK(near(h.quantile_ns(0.5), 500000));
  CHECK(near(h.quantile_ns(0.9), 900000));
  CHECK(near(h.quantile_ns(0.99), 990000));
  for (int b = 1; b < detail::LatencyHistogram::kBuckets - 1; ++b) {
    REQUIRE(detail::LatencyHistogram::bucket_of(detail::LatencyHistogram::bucket_low(b)) == b);
    REQUIRE(detail::LatencyHistogram::bucket_low(b) < detail::LatencyHistogram::bucket_low(b + 1));
  }
}

TEST_CASE("reserving a 1 TiB region is cheap in time and memory", "[runtime][limits]") {
  auto data = pattern(kMiB, 37);
  Runtime rt;
  size_t before = rss_bytes();
  RegionOptions o;
  o.length = uint64_t{1} << 40;
  Region r = rt.map(MemoryBackend::borrow(data), o);
  CHECK(rss_bytes() - before < 64 * kMiB);
  CHECK(r.data()[12345] == data[12345]);
  CHECK(r.data()[(uint64_t{1} << 39) + 7] == std::byte{0});
  CHECK(r.data()[(uint64_t{1} << 40) - 1] == std::byte{0});
  CHECK(rss_bytes() - before < 64 * kMiB);
}

namespace {
size_t all_threads() {
  size_t n = 0;
  for ([[maybe_unused]] const auto& task : std::filesystem::directory_iterator("/proc/self/task")) n++;
  return n;
}
}  // namespace

TEST_CASE("poisoning without UFFDIO_POISON uses one thread however many ranges fail", "[runtime][errors]") {
  auto data = pattern(4 * kMiB, 6);
  auto failing = std::make_shared<ScriptedBackend>(data);
  for (uint64_t c = 0; c < 64; c += 2) failing->fail_at(c * 64 * kKiB, 1, EIO);  // every other chunk
  RuntimeOptions ro;
  ro.read_retries = 0;
  detail::EngineTestOptions test;
  test.use_uffdio_poison = false;
  Runtime rt = detail::make_runtime(ro, test);
  RegionOptions o;
  o.readahead = false;
  size_t before = all_threads();
  {
    Region r = rt.map(failing, o);
    r.prefetch(0, data.size());  // no access: the failures are poisoned in the background
    size_t most = 0, most_named = 0;
    REQUIRE(wait_until([&] {
      most_named = std::max(most_named, threads_named("faultline-poisn"));
      most = std::max(most, all_threads());
      return r.stats().errors == 32;
    }));
    // The poisoner lives as long as the runtime once started (it names
    // itself, so wait for that rather than sample a moment).
    REQUIRE(wait_until([&] { return threads_named("faultline-poisn") == 1; }));
    CHECK(most_named <= 1);
    CHECK(most <= before + 1);  // the poisoner, not a thread per range
    // The chunks that could be read are there.
    for (uint64_t c = 1; c < 64; c += 2)
      REQUIRE(first_mismatch(r.data() + c * 64 * kKiB, data.data() + c * 64 * kKiB, 64 * kKiB) == -1);
  }  // closing waits for every poisoned range to be reported: no hang, no stray thread writing
  CHECK(threads_named("faultline-poisn") <= 1);
}

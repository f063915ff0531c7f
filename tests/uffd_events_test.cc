// SPDX-License-Identifier: Apache-2.0
// userfaultfd events on local regions (runtime/uffd_events.cc): what the
// application does to region memory with madvise, munmap, mremap and fork,
// checked byte for byte against what each event promises (docs/design.md,
// "Events").
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "faultline/faultline.h"
#include "test_backends.h"
#include "test_util.h"

using namespace faultline;
using namespace faultline::test;

namespace {

constexpr size_t kKiB = 1024, kMiB = 1024 * 1024;

// The bytes a region over `data` must show, with [s, e) ranges removed.
std::vector<std::byte> with_zeros(std::vector<std::byte> data, std::initializer_list<std::pair<size_t, size_t>> removed) {
  for (auto [s, e] : removed) std::memset(data.data() + s, 0, e - s);
  return data;
}

// Reads [from, to) of `got` from `threads` threads at once (each starting
// at its own place, so they meet on chunks), and returns the first index
// that differs from `want`, or -1. Catch stays on this thread.
long read_concurrently(const std::byte* got, const std::vector<std::byte>& want, size_t from, size_t to,
                       int threads = 4) {
  std::atomic<long> bad{-1};
  std::vector<std::thread> readers;
  for (int t = 0; t < threads; ++t)
    readers.emplace_back([&, t] {
      size_t n = to - from, start = n / threads * t;
      for (size_t k = 0; k < n; k += 4096) {
        size_t page = from + (start + k) % n / 4096 * 4096;
        size_t end = std::min(page + 4096, to);
        long m = first_mismatch(got + page, want.data() + page, end - page);
        if (m >= 0) {
          long expected = -1;
          bad.compare_exchange_strong(expected, static_cast<long>(page) + m);
        }
      }
    });
  for (auto& r : readers) r.join();
  return bad.load();
}

}  // namespace

TEST_CASE("MADV_DONTNEED on a file region: faulted and unfaulted ranges read zeros", "[runtime][events]") {
  auto data = pattern(4 * kMiB, 71);
  TempFile file(data);
  Runtime rt;
  REQUIRE(rt.mode().event_remove);
  RegionOptions o;
  o.fill_size = 64 * kKiB;
  Region r = rt.map(std::make_shared<FileBackend>(file.path()), o);
  const std::byte* p = r.data();
  // Fault in the first half.
  REQUIRE(read_concurrently(p, data, 0, 2 * kMiB) == -1);
  // Removed: part of the faulted half (not chunk-aligned), and a range
  // never touched (partly inside chunks that are not loaded).
  size_t a0 = 256 * kKiB + 4 * kKiB, a1 = kMiB + 12 * kKiB;
  size_t b0 = 3 * kMiB + 8 * kKiB, b1 = 3 * kMiB + 512 * kKiB - 4 * kKiB;
  REQUIRE(madvise(const_cast<std::byte*>(p) + a0, a1 - a0, MADV_DONTNEED) == 0);
  REQUIRE(madvise(const_cast<std::byte*>(p) + b0, b1 - b0, MADV_DONTNEED) == 0);
  auto want = with_zeros(data, {{a0, a1}, {b0, b1}});
  CHECK(read_concurrently(p, want, 0, data.size()) == -1);
  CHECK(read_concurrently(p, want, 0, data.size()) == -1);  // again, all present now
  CHECK(r.stats().removes == 2);
  CHECK(rt.stats().removes == 2);
}

TEST_CASE("MADV_DONTNEED on a writable region: written pages too read zeros, then take new writes",
          "[runtime][events]") {
  auto data = pattern(1 * kMiB, 72);
  Runtime rt;
  RegionOptions o;
  o.writable = true;
  Region r = rt.map(MemoryBackend::borrow(data), o);
  std::byte* p = r.data();
  std::memset(p + 100 * kKiB, 0x5a, 8 * kKiB);
  REQUIRE(madvise(p + 96 * kKiB, 32 * kKiB, MADV_DONTNEED) == 0);
  auto want = with_zeros(data, {{96 * kKiB, 128 * kKiB}});
  CHECK(first_mismatch(p, want.data(), data.size()) == -1);
  p[100 * kKiB] = std::byte{7};
  CHECK(p[100 * kKiB] == std::byte{7});
}

TEST_CASE("REMOVE racing a read in flight: the read completing later never places old data", "[runtime][events]") {
  auto data = pattern(2 * kMiB, 73);
  auto backend = std::make_shared<ScriptedBackend>(data);
  Runtime rt;
  RegionOptions o;
  o.fill_size = 64 * kKiB;
  o.readahead = false;
  Region r = rt.map(backend, o);
  std::byte* p = r.data();
  backend->hold();
  // A reader faults on chunk 0, page 5; its read is held in flight.
  std::atomic<int> seen{-1};
  std::thread reader([&] { seen = static_cast<int>(p[5 * 4096]); });
  REQUIRE(wait_until([&] { return backend->reads() >= 1; }));
  // Meanwhile the application removes pages 2..9 of that chunk (its
  // madvise returns once the runtime read the event).
  REQUIRE(madvise(p + 2 * 4096, 8 * 4096, MADV_DONTNEED) == 0);
  backend->release();
  reader.join();
  CHECK(seen.load() == 0);
  auto want = with_zeros(data, {{2 * 4096, 10 * 4096}});
  CHECK(first_mismatch(p, want.data(), data.size()) == -1);
  CHECK(r.stats().removes == 1);
}

TEST_CASE("munmap of part of a region: the rest is served, the range is not, close works", "[runtime][events]") {
  auto data = pattern(2 * kMiB, 74);
  auto backend = std::make_shared<ScriptedBackend>(data);
  Runtime rt;
  REQUIRE(rt.mode().event_unmap);
  RegionOptions o;
  o.fill_size = 64 * kKiB;
  Region r = rt.map(backend, o);
  std::byte* p = r.data();
  // A hole inside chunk 0 (pages 2..5, nothing loaded yet: the chunk's
  // placement must go around it), and chunks 8..11 whole.
  REQUIRE(munmap(p + 2 * 4096, 4 * 4096) == 0);
  REQUIRE(munmap(p + 8 * 64 * kKiB, 4 * 64 * kKiB) == 0);
  auto check_range = [&](size_t s, size_t e) { return first_mismatch(p + s, data.data() + s, e - s); };
  CHECK(check_range(0, 2 * 4096) == -1);
  CHECK(check_range(6 * 4096, 8 * 64 * kKiB) == -1);
  CHECK(check_range(12 * 64 * kKiB, data.size()) == -1);
  CHECK(r.stats().unmaps == 2);
  // Something else mapped into the hole must survive the region's close.
  void* other = mmap(p + 8 * 64 * kKiB, 64 * kKiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  REQUIRE(other == p + 8 * 64 * kKiB);
  static_cast<char*>(other)[0] = 42;
  r.close();
  CHECK(static_cast<char*>(other)[0] == 42);
  munmap(other, 64 * kKiB);
}

TEST_CASE("munmap with a read in flight for the range: the read is dropped, nothing is placed", "[runtime][events]") {
  auto data = pattern(1 * kMiB, 75);
  auto backend = std::make_shared<ScriptedBackend>(data);
  Runtime rt;
  RegionOptions o;
  o.fill_size = 64 * kKiB;
  o.readahead = false;
  Region r = rt.map(backend, o);
  std::byte* p = r.data();
  backend->hold();
  r.prefetch(4 * 64 * kKiB, 64 * kKiB);  // chunk 4, held in flight
  REQUIRE(wait_until([&] { return backend->reads() >= 1; }));
  REQUIRE(munmap(p + 4 * 64 * kKiB, 64 * kKiB) == 0);
  // A new mapping in the hole must not receive the old read's bytes.
  void* other = mmap(p + 4 * 64 * kKiB, 64 * kKiB, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  REQUIRE(other == p + 4 * 64 * kKiB);
  backend->release();
  REQUIRE(wait_until([&] { return backend->pending() == 0; }));
  CHECK(first_mismatch(p, data.data(), 4 * 64 * kKiB) == -1);  // a round trip through the loop
  std::vector<std::byte> zeros(64 * kKiB);
  CHECK(first_mismatch(static_cast<std::byte*>(other), zeros.data(), zeros.size()) == -1);
  // (stats are counted just after the wake: wait for them to settle)
  CHECK(wait_until([&] { return r.stats().pages_installed == 4 * 16; }, 2000));
  CHECK(r.stats().pages_installed == 4 * 16);  // chunk 4's read placed nothing
  r.close();
  munmap(other, 64 * kKiB);
}

TEST_CASE("mremap of a whole region: served at its new address, data() follows", "[runtime][events]") {
  auto data = pattern(3 * kMiB + 5000, 76);
  TempFile file(data);
  Runtime rt;
  REQUIRE(rt.mode().event_remap);
  RegionOptions o;
  o.fill_size = 64 * kKiB;
  Region r = rt.map(std::make_shared<FileBackend>(file.path()), o);
  std::byte* old = r.data();
  size_t len = (data.size() + 4095) / 4096 * 4096;
  REQUIRE(first_mismatch(old, data.data(), kMiB) == -1);  // the first MiB is loaded before the move
  void* spot = mmap(nullptr, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  REQUIRE(spot != MAP_FAILED);
  void* moved = mremap(old, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, spot);
  REQUIRE(moved == spot);
  CHECK(r.data() == static_cast<std::byte*>(moved));
  auto want = data;
  want.resize(len);  // zeros past the end
  CHECK(read_concurrently(r.data(), want, 0, len) == -1);
  CHECK(r.stats().remaps == 1);
  r.close();  // unmaps the new address
  unsigned char vec;
  CHECK(mincore(moved, 4096, &vec) != 0);  // ENOMEM: nothing mapped there any more
}

TEST_CASE("fork: the child reads every byte of an inherited region", "[runtime][events][fork]") {
  auto data = pattern(2 * kMiB + 777, 77);
  TempFile file(data);
  std::mutex mu;
  std::vector<std::string> warnings;
  RuntimeOptions ro;
  ro.log = [&](LogLevel level, std::string_view m) {
    std::lock_guard<std::mutex> l(mu);
    if (level == LogLevel::kWarning) warnings.emplace_back(m);
  };
  Runtime rt(ro);
  if (!rt.mode().event_fork) {
    // What is left: the fork is reported (once per runtime), the child's
    // touch is a SIGSEGV, not a silent wrong read.
    Region r = rt.map(std::make_shared<FileBackend>(file.path()));
    const std::byte* p = r.data();
    CHECK(run_in_child([p] { (void)*static_cast<const volatile std::byte*>(p); }) == SIGSEGV);
    CHECK(run_in_child([p] { (void)*static_cast<const volatile std::byte*>(p); }) == SIGSEGV);
    std::lock_guard<std::mutex> l(mu);
    REQUIRE(warnings.size() == 1);
    CHECK_THAT(warnings[0], Catch::Contains("does not inherit") && Catch::Contains("CAP_SYS_PTRACE"));
    WARN("SKIPPED: the kernel refused UFFD_FEATURE_EVENT_FORK (it needs CAP_SYS_PTRACE): "
         "checked the report and the SIGSEGV only");
    return;
  }
  RegionOptions o;
  o.fill_size = 64 * kKiB;
  Region r = rt.map(std::make_shared<FileBackend>(file.path()), o);
  const std::byte* p = r.data();
  REQUIRE(first_mismatch(p, data.data(), 512 * kKiB) == -1);  // some present before the fork
  REQUIRE(madvise(const_cast<std::byte*>(p) + 100 * kKiB, 8 * kKiB, MADV_DONTNEED) == 0);
  auto want = with_zeros(data, {{100 * kKiB, 108 * kKiB}});
  pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // Every byte, from two threads (the child's own), then out without
    // running the parent's destructors.
    long bad = read_concurrently(p, want, 0, data.size(), 2);
    _exit(bad == -1 ? 0 : 3);
  }
  int status = 0;
  pid_t got = 0;
  for (int i = 0; i < 20000 && (got = waitpid(child, &status, WNOHANG)) == 0; ++i) usleep(1000);
  if (got == 0) {
    kill(child, SIGKILL);
    waitpid(child, &status, 0);
    FAIL("the child hung");
  }
  INFO("child status " << status);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(rt.stats().forks == 1);
  // The parent goes on as before.
  CHECK(first_mismatch(p, want.data(), data.size()) == -1);
}

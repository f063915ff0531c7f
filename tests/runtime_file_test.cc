// SPDX-License-Identifier: Apache-2.0
// The runtime over FileBackend: the same contents guarantees as over memory,
// through io_uring and the pread workers, buffered and O_DIRECT, and what a
// real I/O failure (a file truncated under the mapping) turns into.
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <thread>

#include "faultline/faultline.h"
#include "test_util.h"

using namespace faultline;
using namespace faultline::test;

namespace {

constexpr size_t kKiB = 1024, kMiB = 1024 * 1024;

sigjmp_buf g_jump;
void on_sigbus(int) { siglongjmp(g_jump, 1); }

}  // namespace

TEST_CASE("file regions hold the file's bytes for every fill size, engine and mode", "[runtime][file]") {
  auto engine = GENERATE(FileBackendOptions::Engine::kIoUring, FileBackendOptions::Engine::kPread);
  bool direct = GENERATE(false, true);
  uint64_t offset = GENERATE(uint64_t{0}, uint64_t{8192}, uint64_t{12345});
  if (direct && offset % 4096 != 0) return;  // rejected: see the error test below
  auto data = pattern(5 * kMiB + 1234, 41);
  TempFile file(data);
  FileBackendOptions fo;
  fo.engine = engine;
  fo.direct = direct;
  auto backend = std::make_shared<FileBackend>(file.path(), fo);
  Runtime rt;
  for (uint32_t fill = 4096; fill <= 2 * kMiB; fill *= 2) {
    RegionOptions o;
    o.offset = offset;
    o.fill_size = fill;
    o.readahead_max = std::max<uint64_t>(fill, 2 * kMiB);
    Region r = rt.map(backend, o);
    INFO("fill " << fill << " direct " << direct << " offset " << offset << " " << backend->name());
    REQUIRE(r.size() == data.size() - offset);
    REQUIRE(first_mismatch(r.data(), data.data() + offset, r.size()) == -1);
    for (size_t i = r.size(); i % 4096 != 0; ++i) REQUIRE(r.data()[i] == std::byte{0});  // the ragged tail
    CHECK(r.stats().errors == 0);
  }
}

TEST_CASE("many threads fault one file region at random and agree with the file", "[runtime][file][threads]") {
  auto data = pattern(16 * kMiB, 43);
  TempFile file(data);
  Runtime rt;
  RegionOptions o;
  o.fill_size = 16 * kKiB;
  Region r = rt.map(std::make_shared<FileBackend>(file.path()), o);
  std::atomic<long> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      uint64_t x = 88172645463325252ull + t;
      for (int k = 0; k < 2000; ++k) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        size_t i = x % data.size();
        if (r.data()[i] != data[i]) bad++;
      }
    });
  for (auto& th : threads) th.join();
  CHECK(bad == 0);
  CHECK(first_mismatch(r.data(), data.data(), data.size()) == -1);
}

TEST_CASE("a file truncated under the mapping gives SIGBUS past the new end, like mmap", "[runtime][file][errors][fork]") {
  auto data = pattern(4 * kMiB, 47);
  TempFile file(data);
  TempFile other(data);
  int status = run_in_child([&] {
    Runtime rt;
    RegionOptions o;
    o.readahead = false;
    Region r = rt.map(std::make_shared<FileBackend>(file.path()), o);
    Region fine = rt.map(std::make_shared<FileBackend>(other.path()), o);
    if (r.data()[100] != data[100]) _exit(10);  // before: served
    if (truncate(file.path().c_str(), kMiB) != 0) _exit(11);
    if (r.data()[kMiB - 1] != data[kMiB - 1]) _exit(12);  // still inside the file
    signal(SIGBUS, on_sigbus);
    if (sigsetjmp(g_jump, 1) == 0) {
      (void)*static_cast<volatile std::byte*>(r.data() + 2 * kMiB);  // the read comes back short
      _exit(13);
    }
    if (first_mismatch(fine.data(), data.data(), data.size()) != -1) _exit(14);  // the rest still works
    if (r.stats().errors != 1) _exit(15);
    _exit(0);
  });
  CHECK(status == 0);
}

TEST_CASE("file problems are reported with the path and the field", "[runtime][file][errors]") {
  auto data = pattern(kMiB);
  TempFile file(data);
  TempFile empty(std::vector<std::byte>{});
  CHECK_THROWS_WITH(FileBackend("/nonexistent/faultline/data"), Catch::Contains("/nonexistent/faultline/data"));
  CHECK_THROWS_WITH(FileBackend(empty.path()), Catch::Contains(empty.path()) && Catch::Contains("empty"));
  Runtime rt;
  auto backend = std::make_shared<FileBackend>(file.path());
  RegionOptions o;
  o.offset = 2 * kMiB;
  CHECK_THROWS_WITH(rt.map(backend, o), Catch::Contains("RegionOptions.offset = 2097152") &&
                                            Catch::Contains(file.path()) && Catch::Contains("past the end"));
  FileBackendOptions direct;
  direct.direct = true;
  o.offset = 12345;
  CHECK_THROWS_WITH(rt.map(std::make_shared<FileBackend>(file.path(), direct), o),
                    Catch::Contains("RegionOptions.offset = 12345") && Catch::Contains("aligned to 4096"));
}

TEST_CASE("a file region holds its data once: the page cache copy is dropped unless kept", "[runtime][file][cache]") {
  auto engine = GENERATE(FileBackendOptions::Engine::kIoUring, FileBackendOptions::Engine::kPread);
  bool keep = GENERATE(false, true);
  auto data = pattern(16 * kMiB, 47);
  TempFile file(data);  // just written: every page is in the cache
  {
    int fd = open(file.path().c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(fd >= 0);
    REQUIRE(fsync(fd) == 0);  // clean pages: dirty ones cannot be dropped
    close(fd);
  }
  REQUIRE(page_cache_bytes(file.path()) > 15 * kMiB);
  FileBackendOptions fo;
  fo.engine = engine;
  fo.keep_cache = keep;
  INFO("engine " << static_cast<int>(engine) << " keep_cache " << keep);
  {
    Runtime rt;
    Region r = rt.map(std::make_shared<FileBackend>(file.path(), fo));
    REQUIRE(first_mismatch(r.data(), data.data(), data.size()) == -1);
  }  // the backend goes with the region: what its last reads left cached is dropped too
  uint64_t cached = page_cache_bytes(file.path());
  if (keep)
    CHECK(cached > 15 * kMiB);
  else
    CHECK(cached < kMiB);
}

// SPDX-License-Identifier: Apache-2.0
// Regions of 2 MiB huge pages (RegionOptions::page_size): mapped from the
// machine's reserved pool, placed a whole page at a time (zeros too: there
// is no ZEROPAGE for them), removed pages reading zeros, and the options
// that cannot work with them refused by name. The pool is reserved by the
// test as root (test_util.h, HugePages); without it the tests skip.
#include <sys/mman.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "faultline/faultline.h"
#include "test_util.h"

using namespace faultline;
using namespace faultline::test;

namespace {

constexpr uint64_t kHuge = 2 * 1024 * 1024;

RegionOptions huge_options() {
  RegionOptions o;
  o.page_size = kHuge;
  o.fill_size = kHuge;
  return o;
}

// The KernelPageSize /proc/self/smaps reports for the mapping at `addr`, in kB.
long kernel_page_kb(const void* addr) {
  std::ifstream smaps("/proc/self/smaps");
  auto want = reinterpret_cast<uintptr_t>(addr);
  bool in = false;
  for (std::string line; std::getline(smaps, line);) {
    size_t dash = line.find('-'), space = line.find(' ');
    if (dash != std::string::npos && space != std::string::npos && dash < space &&
        line.find_first_not_of("0123456789abcdef") == dash) {
      in = std::stoull(line.substr(0, dash), nullptr, 16) <= want && want < std::stoull(line.substr(dash + 1), nullptr, 16);
      continue;
    }
    if (in && line.rfind("KernelPageSize:", 0) == 0) return std::stol(line.substr(15));
  }
  return -1;
}

}  // namespace

TEST_CASE("a region of 2 MiB pages places whole pages, every byte checked", "[runtime][huge]") {
  HugePages pool(4);
  if (!pool.ok()) {
    WARN("SKIPPED: " << pool.why());
    return;
  }
  // Backend data ends inside the third page; the fourth holds none (it is
  // placed from zeros by UFFDIO_COPY); the offset is not page-aligned.
  auto data = pattern(5 * 1024 * 1024 + 1234, 7);
  const uint64_t offset = 12345;
  RegionOptions o = huge_options();
  o.offset = offset;
  o.length = 4 * kHuge;
  o.readahead = false;  // (so every page is faulted: read-ahead would place the last one unasked)
  Runtime rt;
  Region r = rt.map(MemoryBackend::borrow(data), o);
  REQUIRE(r.size() == 4 * kHuge);
  CHECK(kernel_page_kb(r.data()) == 2048);
  // Four threads, each starting in a different page, fault the same pages.
  std::vector<std::thread> threads;
  std::vector<long> mismatch(4, -2);
  const size_t valid = data.size() - offset;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      std::vector<std::byte> want(data.begin() + offset, data.end());
      want.resize(r.size());  // zeros past the backend's data
      long bad = -1;
      for (size_t k = 0; k < r.size() / 4096 && bad < 0; ++k) {
        size_t at = ((k + static_cast<size_t>(t) * 512) % (r.size() / 4096)) * 4096;
        if (std::memcmp(r.data() + at, want.data() + at, 4096) != 0) bad = static_cast<long>(at);
      }
      mismatch[t] = bad;
    });
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) CHECK(mismatch[t] == -1);
  CHECK(valid < 3 * kHuge);
  StatsSnapshot s = r.stats();
  CHECK(s.errors == 0);
  CHECK(s.bytes_installed == 4 * kHuge);  // each page once, however many threads faulted it
  CHECK(s.faults >= 4);
}

TEST_CASE("a writable region of 2 MiB pages: a removed page reads zeros, then takes writes", "[runtime][huge][events]") {
  HugePages pool(2);
  if (!pool.ok()) {
    WARN("SKIPPED: " << pool.why());
    return;
  }
  auto data = pattern(2 * kHuge, 9);
  RegionOptions o = huge_options();
  o.writable = true;
  Runtime rt;
  Region r = rt.map(MemoryBackend::borrow(data), o);
  REQUIRE(first_mismatch(r.data(), data.data(), data.size()) == -1);
  r.data()[10] = std::byte{0x5a};
  REQUIRE(madvise(r.data() + kHuge, kHuge, MADV_DONTNEED) == 0);
  CHECK(r.data()[10] == std::byte{0x5a});  // the other page is untouched
  for (size_t at = kHuge; at < 2 * kHuge; at += 4096) REQUIRE(r.data()[at + 7] == std::byte{0});
  r.data()[kHuge + 3] = std::byte{0x77};
  CHECK(r.data()[kHuge + 3] == std::byte{0x77});
  CHECK(r.stats().removes == 1);
}

TEST_CASE("2 MiB pages refuse what cannot work with them, naming the option", "[runtime][huge][errors]") {
  auto data = pattern(4 * kHuge);
  auto backend = MemoryBackend::borrow(data);
  Runtime rt;
  auto map_error = [&](const RegionOptions& o) { return error_of([&] { rt.map(backend, o); }); };
  RegionOptions o = huge_options();
  o.page_size = 8192;
  CHECK_THAT(map_error(o), Catch::Contains("RegionOptions.page_size = 8192: must be 4096 or 2097152"));
  o = huge_options();
  o.fill_size = 64 * 1024;
  CHECK_THAT(map_error(o), Catch::Contains("RegionOptions.fill_size = 65536") &&
                              Catch::Contains("does not work with 2 MiB pages"));
  o = huge_options();
  o.budget.bytes = 16 * kHuge;
  CHECK_THAT(map_error(o), Catch::Contains("a memory budget does not work with 2 MiB pages"));
  o = huge_options();
  o.writable = o.track_dirty = true;
  CHECK_THAT(map_error(o), Catch::Contains("RegionOptions.track_dirty does not work with 2 MiB pages"));

  // More pages than the pool has free: an error with the figures, at map().
  HugePages pool(1);
  if (!pool.ok()) {
    WARN("SKIPPED: the pool part: " << pool.why());
    return;
  }
  std::ifstream meminfo("/proc/meminfo");
  long free_pages = -1;
  for (std::string line; std::getline(meminfo, line);)
    if (line.rfind("HugePages_Free:", 0) == 0) free_pages = std::stol(line.substr(15));
  REQUIRE(free_pages >= 1);
  o = huge_options();
  o.length = static_cast<uint64_t>(free_pages + 1) * kHuge;
  std::string e = map_error(o);
  CHECK_THAT(e, Catch::Contains(std::to_string(free_pages + 1) + " are needed and " + std::to_string(free_pages) +
                                " are free (HugePages_Free in /proc/meminfo)"));
  CHECK_THAT(e, Catch::Contains("sysctl vm.nr_hugepages"));
}

// SPDX-License-Identifier: Apache-2.0
// Memory budgets: eviction keeps resident memory within the budget
// (checked with mincore), evicted chunks fault back with the right bytes,
// the policies, several regions under one runtime budget, concurrent
// readers, option errors.
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#include "eviction.h"
#include "faultline/faultline.h"
#include "test_options.h"
#include "test_util.h"

using namespace faultline;
using namespace faultline::test;

namespace {

constexpr size_t kKiB = 1024, kMiB = 1024 * 1024, kPage = 4096;

// Bytes of [p, p + len) the kernel has resident; UINT64_MAX if mincore
// fails (which every caller's bound check then reports). No Catch macro:
// reader threads call it, and Catch's assertions are not thread-safe.
uint64_t mincore_bytes(const void* p, size_t len) {
  size_t pages = (len + kPage - 1) / kPage;
  std::vector<unsigned char> vec(pages);
  if (mincore(const_cast<void*>(p), len, vec.data()) != 0) return UINT64_MAX;
  uint64_t n = 0;
  for (unsigned char v : vec) n += v & 1;
  return n * kPage;
}

// Waits until the runtime's resident counter for `region` and mincore agree
// (the loop thread counts a placement just after the wake, a drop just after
// its madvise), then returns the agreed value.
uint64_t settled_resident(const Region& region) {
  uint64_t counted = 0, truth = 0;
  for (int i = 0; i < 400; ++i) {
    counted = region.stats().resident_bytes;
    truth = mincore_bytes(region.data(), region.size());
    if (counted == truth) return truth;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  FAIL("resident counter " << counted << " never matched mincore " << truth);
  return truth;
}

// The same for all regions of a runtime at one moment, and the runtime's
// own gauge with them: drops still finishing in one region must not be
// counted before they are seen in another.
uint64_t settled_resident(const Runtime& runtime, const std::vector<Region>& regions) {
  uint64_t counted = 0, truth = 0;
  for (int i = 0; i < 400; ++i) {
    bool each = true;
    truth = 0;
    for (const Region& r : regions) {
      uint64_t b = mincore_bytes(r.data(), r.size());
      each = each && r.stats().resident_bytes == b;
      truth += b;
    }
    counted = runtime.stats().resident_bytes;
    if (each && counted == truth) return truth;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  FAIL("runtime resident counter " << counted << " never matched mincore " << truth << " with every region's");
  return truth;
}

bool same_page(const Region& region, const std::vector<std::byte>& source, size_t page) {
  return std::memcmp(region.data() + page * kPage, source.data() + page * kPage, kPage) == 0;
}

// Misses of `trace` with a cache of `capacity` chunks run by `policy`. The
// policy sees misses only, as in the runtime (hits do not fault).
size_t simulate_misses(detail::ChunkPolicy& policy, const std::vector<uint64_t>& trace, uint64_t capacity) {
  size_t misses = 0;
  uint64_t tick = 0;
  for (uint64_t c : trace) {
    detail::ChunkPlace p = policy.where(c);
    if (p == detail::ChunkPlace::kRecent || p == detail::ChunkPlace::kFrequent) continue;
    ++misses;
    if (policy.resident() == capacity) {
      uint64_t victim, t;
      REQUIRE(policy.peek_victim(&victim, &t));
      policy.evict(victim);
    }
    policy.placed(c, ++tick);
  }
  return misses;
}

}  // namespace

TEST_CASE("a scan four times the budget never holds more than the budget (mincore)", "[budget]") {
  const size_t size = 32 * kMiB, budget = 4 * kMiB;
  auto source = pattern(size, 7);
  detail::EngineTestOptions test;
  test.evict_with_move = GENERATE(true, false);  // UFFDIO_MOVE, or MADV_DONTNEED and its REMOVE events
  Runtime runtime = detail::make_runtime({}, test);
  RegionOptions o;
  o.budget.bytes = budget;
  o.eviction = GENERATE(EvictionPolicy::kAdaptive, EvictionPolicy::kFifo);
  Region region = runtime.map(std::make_shared<MemoryBackend>(source), o);
  CHECK(region.options().readahead_max == budget / 8);  // read-ahead capped at an eighth of the budget
  uint64_t peak = 0;
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t page = 0; page < size / kPage; ++page) {
      REQUIRE(same_page(region, source, page));
      if (page % 16 == 15) peak = std::max(peak, mincore_bytes(region.data(), size));
    }
  }
  // The contract (issue #5): never above the budget by more than the fills
  // in flight: at most the read-ahead window and a demand fill. The runtime
  // aims for none (placements are held) and the settled check below is
  // strict; mid-scan, ASan runs have seen mincore two to four chunks over,
  // not yet explained (docs/memory-budget.md).
  CHECK(peak <= budget + region.options().readahead_max + o.fill_size);
  CHECK(peak >= budget / 2);  // it did fill up to the watermarks
  uint64_t resident = settled_resident(region);
  CHECK(resident <= budget);
  StatsSnapshot s = region.stats();
  CHECK(s.evicted_chunks > 0);
  CHECK(s.evicted_bytes == s.evicted_chunks * o.fill_size);
  CHECK(s.refaults > 0);  // the second pass faults evicted chunks back
  CHECK(s.bytes_installed - s.evicted_bytes == resident);
  CHECK(runtime.stats().resident_bytes == resident);
}

TEST_CASE("evicted chunks fault back with the right bytes, from memory and from a file", "[budget]") {
  const size_t size = 16 * kMiB, budget = 2 * kMiB;
  auto source = pattern(size, 11);
  const bool from_file = GENERATE(false, true);
  TempFile file(source);
  std::shared_ptr<Backend> backend;
  if (from_file)
    backend = std::make_shared<FileBackend>(file.path());
  else
    backend = std::make_shared<MemoryBackend>(source);
  Runtime runtime;
  RegionOptions o;
  o.fill_size = GENERATE(4096u, 65536u);
  o.budget.bytes = budget;
  Region region = runtime.map(backend, o);
  uint64_t rng = 12345;
  size_t wrong = 0;
  // 5000 random reads of 4096 pages with 512 resident: most reads evict,
  // and about 2000 land on a page read before, most of them evicted since.
  for (int i = 0; i < 5000; ++i) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    size_t page = (rng >> 33) % (size / kPage);
    if (!same_page(region, source, page)) ++wrong;
  }
  CHECK(wrong == 0);
  // The region is still readable whole after all that eviction.
  CHECK(std::memcmp(region.data(), source.data(), size) == 0);
  StatsSnapshot s = region.stats();
  CHECK(s.evicted_chunks > 0);
  CHECK(s.refaults > 0);
  CHECK(settled_resident(region) <= budget);
}

TEST_CASE("eviction policies: ghosts remember evicted chunks and a refault promotes", "[budget][policy]") {
  auto policy = detail::make_policy(EvictionPolicy::kAdaptive, 1000, 4);
  for (uint64_t c = 0; c < 4; ++c) policy->placed(c, c + 1);
  CHECK(policy->resident() == 4);
  uint64_t victim, tick;
  REQUIRE(policy->peek_victim(&victim, &tick));
  CHECK(victim == 0);  // oldest first
  CHECK(tick == 1);
  policy->evict(victim);
  CHECK(policy->where(0) == detail::ChunkPlace::kGhostRecent);
  CHECK(policy->was_evicted(0));
  policy->placed(0, 10);  // faults back while remembered: proven reuse
  CHECK(policy->where(0) == detail::ChunkPlace::kFrequent);
  // The recent side goes first while it is above its target.
  REQUIRE(policy->peek_victim(&victim, &tick));
  CHECK(policy->where(victim) == detail::ChunkPlace::kRecent);
  // A chunk that cannot be dropped goes behind the others of its list.
  policy->keep(victim, 11);
  uint64_t next;
  REQUIRE(policy->peek_victim(&next, &tick));
  CHECK(next != victim);
  // Evicting more than the ghost lists hold forgets the oldest ghosts.
  for (uint64_t c = 100; c < 140; ++c) {
    policy->placed(c, 100 + c);
    REQUIRE(policy->peek_victim(&victim, &tick));
    policy->evict(victim);
  }
  size_t ghosts = 0, forgotten = 0;
  for (uint64_t c = 0; c < 140; ++c) {
    auto p = policy->where(c);
    ghosts += p == detail::ChunkPlace::kGhostRecent || p == detail::ChunkPlace::kGhostFrequent;
    forgotten += p == detail::ChunkPlace::kEvicted;
  }
  CHECK(ghosts <= 8);  // each ghost list remembers at most `capacity` chunks
  CHECK(forgotten > 0);
  CHECK(policy->resident() == 4);
  // The application dropping a chunk itself: forgotten, not a ghost.
  REQUIRE(policy->peek_victim(&victim, &tick));
  policy->forget(victim);
  CHECK(policy->where(victim) == detail::ChunkPlace::kAbsent);
  CHECK(policy->resident() == 3);

  auto fifo = detail::make_policy(EvictionPolicy::kFifo, 100, 4);
  for (uint64_t c = 0; c < 4; ++c) fifo->placed(c, c + 1);
  REQUIRE(fifo->peek_victim(&victim, &tick));
  CHECK(victim == 0);
  fifo->evict(0);
  CHECK(fifo->where(0) == detail::ChunkPlace::kEvicted);
  fifo->placed(0, 9);
  CHECK(fifo->where(0) == detail::ChunkPlace::kRecent);  // FIFO learns nothing from the refault
}

TEST_CASE("the adaptive policy beats FIFO on a loop plus a scan", "[budget][policy]") {
  // A loop over 60 hot chunks, each round followed by 100 chunks read once.
  // Capacity 100: the hot set fits, but FIFO lets the scan push it out.
  const uint64_t capacity = 100;
  std::vector<uint64_t> trace;
  uint64_t fresh = 1000;
  for (int round = 0; round < 50; ++round) {
    for (uint64_t c = 0; c < 60; ++c) trace.push_back(c);
    for (int i = 0; i < 100; ++i) trace.push_back(fresh++);
  }
  auto adaptive = detail::make_policy(EvictionPolicy::kAdaptive, fresh, capacity);
  auto fifo = detail::make_policy(EvictionPolicy::kFifo, fresh, capacity);
  size_t adaptive_misses = simulate_misses(*adaptive, trace, capacity);
  size_t fifo_misses = simulate_misses(*fifo, trace, capacity);
  INFO("adaptive " << adaptive_misses << " misses, FIFO " << fifo_misses);
  CHECK(fifo_misses == trace.size());  // every hot chunk was pushed out before its next turn
  CHECK(adaptive_misses < fifo_misses * 3 / 4);
  CHECK(adaptive_misses >= 50 * 100);  // the scan always misses
}

TEST_CASE("a runtime budget holds over several regions", "[budget]") {
  const size_t size = 8 * kMiB, budget = 6 * kMiB;
  RuntimeOptions ro;
  ro.budget.bytes = budget;
  Runtime runtime(ro);
  std::vector<std::vector<std::byte>> sources;
  std::vector<Region> regions;
  for (uint32_t i = 0; i < 3; ++i) {
    sources.push_back(pattern(size, 20 + i));
    RegionOptions o;
    o.fill_size = i == 2 ? 4096 : 65536;  // different fills share the budget
    o.eviction = i == 1 ? EvictionPolicy::kFifo : EvictionPolicy::kAdaptive;
    // The peak below sums three mincore calls: a read-ahead placed in one
    // region while a drop finishes in another, between the calls, would be
    // counted with the chunk it replaced. Without read-ahead every
    // placement is this thread's own fault, so between the calls resident
    // memory only shrinks. (The single-region scan test covers read-ahead.)
    o.readahead = false;
    regions.push_back(runtime.map(std::make_shared<MemoryBackend>(sources.back()), o));
  }
  auto total = [&] {
    uint64_t n = 0;
    for (auto& r : regions) {
      uint64_t b = mincore_bytes(r.data(), r.size());
      if (b == UINT64_MAX) return b;
      n += b;
    }
    return n;
  };
  uint64_t peak = 0;
  size_t wrong = 0;
  for (int pass = 0; pass < 2; ++pass)
    for (size_t page = 0; page < size / kPage; ++page)
      for (size_t i = 0; i < regions.size(); ++i) {
        if (!same_page(regions[i], sources[i], page)) ++wrong;
        if (page % 16 == 15 && i == 2) peak = std::max(peak, total());
      }
  CHECK(wrong == 0);
  CHECK(peak <= budget);
  for (auto& r : regions) CHECK(r.stats().evicted_chunks > 0);
  CHECK(settled_resident(runtime, regions) <= budget);
}

TEST_CASE("a region budget inside a runtime budget: the tighter one holds", "[budget]") {
  RuntimeOptions ro;
  ro.budget.bytes = 8 * kMiB;
  Runtime runtime(ro);
  auto a = pattern(8 * kMiB, 31), b = pattern(8 * kMiB, 32);
  RegionOptions small;
  small.budget.bytes = 1 * kMiB;
  Region ra = runtime.map(std::make_shared<MemoryBackend>(a), small);
  Region rb = runtime.map(std::make_shared<MemoryBackend>(b));
  CHECK(rb.options().readahead_max == 1 * kMiB);  // an eighth of the runtime's 8 MiB
  for (size_t page = 0; page < 8 * kMiB / kPage; ++page) {
    REQUIRE(same_page(ra, a, page));
    REQUIRE(same_page(rb, b, page));
  }
  CHECK(settled_resident(ra) <= 1 * kMiB);
  CHECK(settled_resident(ra) + settled_resident(rb) <= 8 * kMiB);
}

TEST_CASE("readers racing with eviction always see the right bytes", "[budget][threads]") {
  const size_t size = 16 * kMiB, budget = 2 * kMiB;
  auto source = pattern(size, 41);
  detail::EngineTestOptions test;
  test.evict_with_move = GENERATE(true, false);
  Runtime runtime = detail::make_runtime({}, test);
  RegionOptions o;
  o.fill_size = 16 * 1024;
  o.budget.bytes = budget;
  Region region = runtime.map(std::make_shared<MemoryBackend>(source), o);
  std::atomic<size_t> wrong{0};
  std::atomic<uint64_t> peak{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      uint64_t rng = 777 + static_cast<uint64_t>(t);
      for (int i = 0; i < 4000; ++i) {
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        // Half the reads go to a hot eighth of the region.
        size_t pages = size / kPage;
        size_t page = (rng >> 40) & 1 ? (rng >> 20) % (pages / 8) : (rng >> 20) % pages;
        size_t word = (rng >> 8) % (kPage / 8);
        uint64_t got, want;
        std::memcpy(&got, region.data() + page * kPage + word * 8, 8);
        std::memcpy(&want, source.data() + page * kPage + word * 8, 8);
        if (got != want) wrong++;
        if (i % 256 == 0) {
          uint64_t now = mincore_bytes(region.data(), size);
          uint64_t old = peak.load();
          while (now > old && !peak.compare_exchange_weak(old, now)) {
          }
        }
      }
    });
  for (auto& th : threads) th.join();
  CHECK(wrong == 0);
  CHECK(peak.load() <= budget);
  CHECK(region.stats().evicted_chunks > 0);
  CHECK(settled_resident(region) <= budget);
}

TEST_CASE("the application's own MADV_DONTNEED keeps the resident count exact", "[budget]") {
  auto source = pattern(4 * kMiB, 51);
  Runtime runtime;
  RegionOptions o;
  o.budget.bytes = 2 * kMiB;
  o.readahead = false;  // exactly the chunks touched
  o.reload_removed = true;  // the dropped pages load the source's bytes again
  Region region = runtime.map(std::make_shared<MemoryBackend>(source), o);
  for (size_t page = 0; page < 256; ++page) REQUIRE(same_page(region, source, page));  // 1 MiB
  CHECK(settled_resident(region) == 1 * kMiB);
  REQUIRE(madvise(region.data(), 512 * kKiB, MADV_DONTNEED) == 0);
  CHECK(settled_resident(region) == 512 * kKiB);
  for (size_t page = 0; page < 256; ++page) REQUIRE(same_page(region, source, page));
  CHECK(settled_resident(region) == 1 * kMiB);
  CHECK(region.stats().evicted_chunks == 0);
}

TEST_CASE("writable regions keep every chunk: writes are never dropped", "[budget]") {
  auto source = pattern(4 * kMiB, 61);
  Runtime runtime;
  RegionOptions o;
  o.writable = true;
  o.budget.bytes = 1 * kMiB;
  Region region = runtime.map(std::make_shared<MemoryBackend>(source), o);
  for (size_t page = 0; page < 4 * kMiB / kPage; ++page) region.data()[page * kPage] = std::byte{0xEE};
  size_t wrong = 0;
  for (size_t page = 0; page < 4 * kMiB / kPage; ++page) {
    wrong += region.data()[page * kPage] != std::byte{0xEE};
    wrong += std::memcmp(region.data() + page * kPage + 1, source.data() + page * kPage + 1, kPage - 1) != 0;
  }
  CHECK(wrong == 0);
  CHECK(region.stats().evicted_chunks == 0);
  CHECK(settled_resident(region) == 4 * kMiB);  // over its budget, by design (docs/memory-budget.md)
}

TEST_CASE("budget options are checked and the errors name the field", "[budget][errors]") {
  auto backend = std::make_shared<MemoryBackend>(pattern(1 * kMiB));
  Runtime runtime;
  auto map_error = [&](RegionOptions o) -> std::string {
    try {
      runtime.map(backend, o);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  RegionOptions o;
  o.budget.bytes = 3 * 65536;
  CHECK_THAT(map_error(o), Catch::Contains("RegionOptions.budget.bytes = 196608") && Catch::Contains("4 fills"));
  o.budget.bytes = 1 * kMiB;
  o.budget.high = 1.5;
  CHECK_THAT(map_error(o), Catch::Contains("RegionOptions.budget.high") && Catch::Contains("(0, 1]"));
  o.budget.high = 0.9;
  o.budget.low = 0.95;
  CHECK_THAT(map_error(o), Catch::Contains("RegionOptions.budget.low"));
  o.budget.low = std::nan("");
  CHECK_THAT(map_error(o), Catch::Contains("RegionOptions.budget.low"));
  o.budget.low = 0.5;
  o.eviction = static_cast<EvictionPolicy>(7);
  CHECK_THAT(map_error(o), Catch::Contains("RegionOptions.eviction = 7"));

  RuntimeOptions ro;
  ro.budget.bytes = 1000;
  CHECK_THROWS_WITH(Runtime(ro), Catch::Contains("RuntimeOptions.budget.bytes = 1000"));
  ro.budget.bytes = 1 * kMiB;
  ro.budget.high = 0;
  CHECK_THROWS_WITH(Runtime(ro), Catch::Contains("RuntimeOptions.budget.high"));
  ro.budget.high = 0.95;
  ro.budget.bytes = 128 * kKiB;
  Runtime small(ro);
  RegionOptions big_fill;
  big_fill.fill_size = 64 * 1024;
  CHECK_THROWS_WITH(small.map(backend, big_fill), Catch::Contains("RuntimeOptions.budget.bytes = 131072") &&
                                                      Catch::Contains("fill_size = 65536"));
  big_fill.fill_size = 4096;
  CHECK_NOTHROW(small.map(backend, big_fill));
}

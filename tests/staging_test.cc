// SPDX-License-Identifier: Apache-2.0
#include <catch2/catch.hpp>
#include <set>

#include "staging.h"

using faultline::detail::StagingArena;

TEST_CASE("the staging arena hands out aligned, disjoint blocks and merges them back", "[staging]") {
  StagingArena arena(4 * 1024 * 1024);
  REQUIRE(arena.memory().size() == 4 * 1024 * 1024);
  std::vector<std::pair<std::byte*, size_t>> blocks;
  // Fill it with a mix of sizes until it is full.
  size_t sizes[] = {4096, 65536, 8192, 2 * 1024 * 1024, 4096, 262144, 16384};
  for (int i = 0;; ++i) {
    size_t n = sizes[i % 7];
    std::byte* p = arena.allocate(n);
    if (!p) {
      if (n == 4096) break;
      continue;
    }
    REQUIRE(reinterpret_cast<uintptr_t>(p) % n == 0);  // buddy blocks are size-aligned
    REQUIRE(p >= arena.memory().data());
    REQUIRE(p + n <= arena.memory().data() + arena.memory().size());
    blocks.emplace_back(p, n);
    if (i > 10000) FAIL("never filled");
  }
  CHECK(arena.bytes_in_use() == arena.memory().size());
  std::set<std::byte*> starts;
  for (auto [p, n] : blocks)
    for (size_t off = 0; off < n; off += 4096) REQUIRE(starts.insert(p + off).second);  // no overlap
  CHECK(arena.allocate(4096) == nullptr);
  for (auto [p, n] : blocks) arena.release(p, n);
  CHECK(arena.bytes_in_use() == 0);
  // Everything merged back: two whole 2 MiB blocks are available again.
  std::byte* a = arena.allocate(2 * 1024 * 1024);
  std::byte* b = arena.allocate(2 * 1024 * 1024);
  CHECK(a != nullptr);
  CHECK(b != nullptr);
  CHECK(arena.allocate(4096) == nullptr);
}

TEST_CASE("odd sizes round up to a power of two", "[staging]") {
  StagingArena arena(1);
  REQUIRE(arena.memory().size() == 2 * 1024 * 1024);
  std::byte* p = arena.allocate(5000);
  REQUIRE(p != nullptr);
  CHECK(arena.bytes_in_use() == 8192);
  arena.release(p, 5000);
  CHECK(arena.bytes_in_use() == 0);
}

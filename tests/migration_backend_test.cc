// SPDX-License-Identifier: Apache-2.0
// DestPages, the backend a migration destination's regions are mapped over:
// pushed frames are served in place and their buffers recycled only once
// the runtime is done with them; what a fault fetched first is not taken
// from a later push. Driven the way the fault loop drives a backend.
#include <catch2/catch.hpp>

#include <cerrno>
#include <cstring>

#include "faultline/memory_backend.h"
#include "migration_backend.h"
#include "test_util.h"

using faultline::MemoryBackend;
using faultline::ReadCompletion;
using faultline::ReadRequest;
using faultline::migration::DestPages;
using faultline::test::pattern;

namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kChunk = 16 * 1024;
constexpr uint64_t kObject = 1 << 20;

// One read of [offset, offset + kChunk) through submit() and reap().
struct OneRead {
  ReadCompletion c{};
  std::vector<std::byte> staging = std::vector<std::byte>(kChunk);
  const std::byte* bytes() const { return c.data ? c.data : staging.data(); }
};

OneRead read_chunk(DestPages& pages, uint64_t offset, uint64_t tag) {
  OneRead r;
  ReadRequest req{offset, static_cast<uint32_t>(kChunk), r.staging.data(), tag, true};
  pages.submit({&req, 1});
  for (int spins = 0; spins < 1000; ++spins)
    if (pages.reap({&r.c, 1}) == 1) return r;
  FAIL("no completion for the read at " << offset);
  return r;
}

// A frame as the receiver has it: `bytes` of the source at `offset`.
std::vector<std::byte> frame_of(const std::vector<std::byte>& source, uint64_t offset, uint64_t length) {
  return {source.begin() + static_cast<std::ptrdiff_t>(offset),
          source.begin() + static_cast<std::ptrdiff_t>(offset + length)};
}

}  // namespace

TEST_CASE("post-copy destination: a pushed frame is placed from where it came in, its buffer reused after",
          "[migration][backend]") {
  auto source = pattern(kObject, 71);
  DestPages pages(kObject, std::make_shared<MemoryBackend>(source));
  pages.mark_missing_all();
  REQUIRE(pages.pages_pending() == kObject / kPage);

  std::vector<std::byte> frame = frame_of(source, 0, 256 * 1024);
  const std::byte* at = frame.data();
  REQUIRE(pages.store(0, std::move(frame), 256 * 1024) == 64);
  CHECK(pages.available(0, 256 * 1024));
  CHECK(pages.pages_pending() == kObject / kPage);  // owed until the runtime has them

  // Each chunk comes straight from the frame, no copy into staging.
  for (uint64_t off = 0; off < 256 * 1024; off += kChunk) {
    OneRead r = read_chunk(pages, off, off + 1);
    REQUIRE(r.c.tag == off + 1);
    REQUIRE(r.c.result == static_cast<int64_t>(kChunk));
    CHECK(r.c.data == at + off);
    REQUIRE(std::memcmp(r.bytes(), source.data() + off, kChunk) == 0);
    // Not recycled while the runtime may still be placing from it.
    if (off + kChunk < 256 * 1024) CHECK(pages.spare_buffer().empty());
  }
  CHECK(pages.pages_pending() == kObject / kPage - 64);
  // The last completion was handed out by that reap(): the frame is free
  // only from the next call on.
  CHECK(pages.spare_buffer().empty());
  ReadCompletion none;
  CHECK(pages.reap({&none, 1}) == 0);
  std::vector<std::byte> spare = pages.spare_buffer();
  CHECK(spare.data() == at);
  CHECK(pages.spare_buffer().empty());
}

TEST_CASE("post-copy destination: a chunk across two frames, zeros, and pages a fault fetched first",
          "[migration][backend]") {
  auto source = pattern(kObject, 72);
  DestPages pages(kObject, std::make_shared<MemoryBackend>(source));
  pages.mark_missing_all();

  // A chunk split between two frames is copied together into staging.
  REQUIRE(pages.store(0, frame_of(source, 0, 2 * kPage), 2 * kPage) == 2);
  CHECK_FALSE(pages.available(0, kChunk));
  REQUIRE(pages.store(2 * kPage, frame_of(source, 2 * kPage, 2 * kPage), 2 * kPage) == 2);
  CHECK(pages.available(0, kChunk));
  OneRead split = read_chunk(pages, 0, 1);
  CHECK(split.c.data == nullptr);
  REQUIRE(split.c.result == static_cast<int64_t>(kChunk));
  CHECK(std::memcmp(split.staging.data(), source.data(), kChunk) == 0);

  // A chunk the push said is zero needs no bytes at all.
  REQUIRE(pages.store_zero(kChunk, kChunk) == 4);
  OneRead zero = read_chunk(pages, kChunk, 2);
  CHECK(zero.c.zero);
  CHECK(zero.c.result == static_cast<int64_t>(kChunk));

  // A chunk not pushed yet goes to the source (the urgent lane)...
  uint64_t off = 512 * 1024;
  OneRead fetched = read_chunk(pages, off, 3);
  REQUIRE(fetched.c.tag == 3);
  REQUIRE(fetched.c.result == static_cast<int64_t>(kChunk));
  CHECK(std::memcmp(fetched.bytes(), source.data() + off, kChunk) == 0);
  // ...and when the push brings it later, nothing is taken: the runtime
  // holds those pages, and the frame is free again at the next call.
  std::vector<std::byte> late = frame_of(source, off, kChunk);
  const std::byte* late_at = late.data();
  CHECK(pages.store(off, std::move(late), kChunk) == 0);
  ReadCompletion none;
  CHECK(pages.reap({&none, 1}) == 0);
  CHECK(pages.spare_buffer().data() == late_at);

  // Every page accounted for once: 4 + 4 + 4 of 256 are no longer owed.
  CHECK(pages.pages_pending() == kObject / kPage - 12);
  CHECK(pages.missing_ranges().front() == std::make_pair<uint64_t, uint64_t>(2 * kChunk, off - 2 * kChunk));
}

TEST_CASE("post-copy destination: frames still held when it goes are freed with it", "[migration][backend]") {
  // Under ASan this is the leak and double-free check: one frame with
  // pages still stored, one handed to the runtime, one waiting to recycle.
  auto source = pattern(kObject, 73);
  auto pages = std::make_unique<DestPages>(kObject, std::make_shared<MemoryBackend>(source));
  pages->mark_missing_all();
  REQUIRE(pages->store(0, frame_of(source, 0, 64 * 1024), 64 * 1024) == 16);
  REQUIRE(pages->store(64 * 1024, frame_of(source, 64 * 1024, kChunk), kChunk) == 4);
  OneRead r = read_chunk(*pages, 0, 1);
  CHECK(r.c.data != nullptr);
  OneRead whole = read_chunk(*pages, 64 * 1024, 2);  // the second frame: retired
  CHECK(std::memcmp(whole.bytes(), source.data() + 64 * 1024, kChunk) == 0);
  pages.reset();
}

TEST_CASE("pre-copy destination: the first round placed from its frames; a page never sent is an error",
          "[migration][backend]") {
  auto source = pattern(kObject, 74);
  DestPages pages(kObject, nullptr);  // no urgent lane
  pages.mark_missing_all();
  std::vector<std::byte> frame = frame_of(source, 0, kChunk);
  const std::byte* at = frame.data();
  REQUIRE(pages.store(0, std::move(frame), kChunk) == 4);
  REQUIRE(pages.store_zero(kChunk, kChunk) == 4);
  OneRead r = read_chunk(pages, 0, 1);
  REQUIRE(r.c.result == static_cast<int64_t>(kChunk));
  CHECK(r.c.data == at);
  CHECK(std::memcmp(r.bytes(), source.data(), kChunk) == 0);
  OneRead z = read_chunk(pages, kChunk, 2);
  CHECK(z.c.result == static_cast<int64_t>(kChunk));
  CHECK(z.c.zero);
  // Nowhere to fetch the rest from: the read fails (the chunk gets SIGBUS),
  // never zeros standing in for bytes the source has.
  OneRead missing = read_chunk(pages, 2 * kChunk, 3);
  CHECK(missing.c.result == -EIO);
  CHECK(pages.pages_pending() == kObject / kPage - 8);
}

TEST_CASE("hybrid destination: STALE hands back only the pages the region held", "[migration][backend]") {
  auto source = pattern(kObject, 75);
  DestPages pages(kObject, std::make_shared<MemoryBackend>(source));
  std::vector<std::pair<uint64_t, uint64_t>> held;
  pages.mark_missing(kPage, 3 * kPage, &held);
  pages.mark_missing(8 * kPage, kPage, &held);
  using Run = std::pair<uint64_t, uint64_t>;
  CHECK(held == std::vector<Run>{{kPage, 3 * kPage}, {8 * kPage, kPage}});
  CHECK(pages.pages_pending() == 4);
  // The late STALE lists pages again: only the new ones are dropped.
  held.clear();
  pages.mark_missing(0, 10 * kPage, &held);
  CHECK(held == std::vector<Run>{{0, kPage}, {4 * kPage, 4 * kPage}, {9 * kPage, kPage}});
  CHECK(pages.pages_pending() == 10);
  CHECK(pages.missing_ranges() == std::vector<Run>{{0, 10 * kPage}});
}

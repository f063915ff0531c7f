// SPDX-License-Identifier: Apache-2.0
// The read-ahead / read-around detector alone: chunk numbers in, windows
// out. No kernel, no backend.
#include <catch2/catch.hpp>

#include <vector>

#include "readahead.h"

using faultline::detail::ReadaheadDetector;

namespace {

constexpr uint32_t kShift64K = 16;  // 64 KiB fills
constexpr uint64_t kMiB = 1024 * 1024;

// Every chunk the current window offers, taking each.
std::vector<uint64_t> drain(ReadaheadDetector& d) {
  std::vector<uint64_t> out;
  uint64_t c;
  while (d.next([](uint64_t) { return true; }, &c)) {
    out.push_back(c);
    d.taken(c);
  }
  return out;
}

}  // namespace

TEST_CASE("read-ahead: a stream opens a 256 KiB window that doubles up to readahead_max", "[readahead]") {
  ReadaheadDetector d(1024, kShift64K, 4 * kMiB, false);  // window cap: 64 chunks
  ReadaheadDetector::Span around;
  // The first fault is random (no stream yet): nothing to read ahead.
  CHECK_FALSE(d.on_fault(10, &around));
  CHECK_FALSE(d.pending());
  // The next chunk in order starts the stream: 256 KiB = 4 chunks ahead.
  d.on_fault(11, &around);
  CHECK(drain(d) == std::vector<uint64_t>{12, 13, 14, 15});
  // Each further sequential fault doubles the window, ending past the fault.
  d.on_fault(12, &around);  // window 8: up to chunk 20
  CHECK(drain(d) == std::vector<uint64_t>{16, 17, 18, 19, 20});
  uint64_t chunk = 13;
  for (int i = 0; i < 10; ++i) d.on_fault(chunk++, &around);
  std::vector<uint64_t> got = drain(d);
  REQUIRE_FALSE(got.empty());
  CHECK(got.back() == (chunk - 1) + 64);  // capped at 4 MiB / 64 KiB
}

TEST_CASE("read-ahead: chunks already present or in flight are skipped", "[readahead]") {
  ReadaheadDetector d(100, kShift64K, 4 * kMiB, false);
  ReadaheadDetector::Span around;
  d.on_fault(0, &around);
  d.on_fault(1, &around);
  uint64_t c;
  REQUIRE(d.next([](uint64_t x) { return x % 2 == 1; }, &c));
  CHECK(c == 3);
}

TEST_CASE("read-ahead: a random fault ends the stream and its window", "[readahead]") {
  ReadaheadDetector d(1000, kShift64K, 4 * kMiB, false);
  ReadaheadDetector::Span around;
  d.on_fault(0, &around);
  d.on_fault(1, &around);
  REQUIRE(d.pending());
  d.on_fault(500, &around);
  CHECK_FALSE(d.pending());
  // A fault inside the old window does not revive it.
  d.on_fault(3, &around);
  CHECK_FALSE(d.pending());
}

TEST_CASE("read-ahead: the window never passes the end of the region", "[readahead]") {
  ReadaheadDetector d(8, kShift64K, 4 * kMiB, false);
  ReadaheadDetector::Span around;
  for (uint64_t c = 0; c < 6; ++c) d.on_fault(c, &around);
  std::vector<uint64_t> got = drain(d);
  REQUIRE_FALSE(got.empty());
  CHECK(got.back() == 7);
}

TEST_CASE("read-around: a window dense with random faults is read whole, once", "[readahead]") {
  // 1 MiB windows of 16 chunks: a quarter is 4 random faults.
  ReadaheadDetector d(64, kShift64K, kMiB, true);
  ReadaheadDetector::Span around;
  // Random faults in window 1 (chunks 16..31), never two in order.
  CHECK_FALSE(d.on_fault(20, &around));
  CHECK_FALSE(d.on_fault(30, &around));
  CHECK_FALSE(d.on_fault(17, &around));
  REQUIRE(d.on_fault(25, &around));
  CHECK(around.first == 16);
  CHECK(around.last == 32);
  // Done: more faults there ask for nothing.
  CHECK_FALSE(d.on_fault(22, &around));
  CHECK_FALSE(d.on_fault(28, &around));
}

TEST_CASE("read-around: point lookups, three per window, trigger nothing", "[readahead]") {
  ReadaheadDetector d(4096, kShift64K, kMiB, true);  // 256 windows of 16 chunks
  ReadaheadDetector::Span around;
  for (uint64_t round = 0; round < 3; ++round)
    for (uint64_t w = 0; w < 256; ++w) CHECK_FALSE(d.on_fault(w * 16 + round * 5, &around));
  // The fourth in any window is a quarter of it.
  CHECK(d.on_fault(7 * 16 + 15, &around));
  CHECK(around.first == 7 * 16);
}

TEST_CASE("read-around: off for backends that complete at once", "[readahead]") {
  ReadaheadDetector d(64, kShift64K, kMiB, false);
  ReadaheadDetector::Span around;
  for (uint64_t c : {20, 30, 17, 25, 22, 28}) CHECK_FALSE(d.on_fault(c, &around));
}

TEST_CASE("read-around: the last window is clipped to the region", "[readahead]") {
  ReadaheadDetector d(40, kShift64K, kMiB, true);  // windows 0-15, 16-31, 32-39
  ReadaheadDetector::Span around;
  bool got = false;
  for (uint64_t c : {33, 39, 35, 37}) got = d.on_fault(c, &around);
  REQUIRE(got);
  CHECK(around.first == 32);
  CHECK(around.last == 40);
}

TEST_CASE("read-ahead backs off to zero on lookups that waste it, and comes back on a stream", "[readahead]") {
  ReadaheadDetector d(1 << 20, kShift64K, 4 * kMiB, false);  // cap 64 chunks, first window 4
  ReadaheadDetector::Span around;
  ReadaheadDetector::Verdict v;
  REQUIRE(d.cap() == 64);
  // Lookups that touch two chunks in order, far apart: each pair opens a
  // window, the next pair leaves it unused.
  uint64_t wasted = 0, used = 0, opened = 0;
  uint64_t at = 1000;
  for (int pair = 0; pair < 12; ++pair, at = (at * 7919 + 104729) % 1000000) {
    d.on_fault(at, &around, &v);
    wasted += v.wasted;
    used += v.used;
    d.on_fault(at + 1, &around, &v);
    wasted += v.wasted;
    used += v.used;
    std::vector<uint64_t> got = drain(d);
    if (!got.empty()) opened++;
  }
  CHECK(used == 0);
  CHECK(wasted == 4 * opened);    // every chunk handed out was judged wasted
  CHECK(opened == 5);             // caps 64, 32, 16, 8, 4 ... then off
  CHECK(d.cap() == 0);
  d.on_fault(5000, &around);
  d.on_fault(5001, &around);      // a pair no longer opens anything
  CHECK_FALSE(d.pending());

  // A stream: after kRecoverRun faults in order the first window opens, and
  // each time the stream goes past its read-ahead the cap doubles.
  uint64_t f = 200000;
  for (uint64_t i = 0; i < ReadaheadDetector::kRecoverRun; ++i) {
    d.on_fault(f++, &around, &v);
    CHECK_FALSE(d.pending());
  }
  uint64_t stream_used = 0, stream_wasted = 0;
  for (int step = 0; step < 12; ++step) {
    d.on_fault(f, &around, &v);
    stream_used += v.used;
    stream_wasted += v.wasted;
    std::vector<uint64_t> got = drain(d);
    f = got.empty() ? f + 1 : got.back() + 1;  // the stream faults right after what was read ahead
  }
  CHECK(stream_wasted == 0);
  CHECK(stream_used > 64);
  CHECK(d.cap() == 64);  // all the way back
}

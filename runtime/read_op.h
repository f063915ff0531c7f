// SPDX-License-Identifier: Apache-2.0
// One chunk read from a backend and placed into a region, and the stages it
// goes through. The fault loop owns every ReadOp (loop thread only); the
// stage says which of its queues holds the op, or what it waits for.
//
// Stages (docs/design.md, "A read in flight", draws them; keep both true):
//
//   kFree      not a read: recycled in the loop's spare list
//   kQueued    created, or in the demand queue: waits for queue depth or
//              staging (a first read, a retry, or a read again after a
//              write-back drop made its bytes stale)
//   kReading   handed to the backend: in a batch or in flight
//   kPlacing   its bytes are in hand (or there is nothing to read):
//              install() is placing it
//   kHeld      waits for drops in flight: its own chunk's, or ones that
//              make room under a memory budget
//   kDeferred  placing said EAGAIN or ENOMEM: tried again every loop
//              iteration, for up to 30 s, then poisoned
//   kInstalled placed: the chunk is present
//   kPoisoned  not servable (the backend failed, placing failed, or it was
//              stuck for 30 s): SIGBUS for whoever touches its pages
//
// advance() moves an op on; debug and sanitizer builds abort on a
// transition the loop never makes, naming the chunk and both stages.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace faultline::detail {

struct RegionState;

struct ReadOp {
  enum class Kind { kDemand, kReadahead, kReadaround, kPrefetch, kDrain };
  enum class Stage : uint8_t { kFree, kQueued, kReading, kPlacing, kHeld, kDeferred, kInstalled, kPoisoned };

  RegionState* region = nullptr;
  uint64_t chunk = 0;
  Kind kind = Kind::kDemand;
  Stage stage = Stage::kFree;
  uint64_t offset = 0;   // byte offset of the chunk in the region
  uint32_t length = 0;   // bytes placed (whole pages)
  uint32_t valid = 0;    // bytes the backend holds for it; the rest is zero
  uint32_t want = 0;     // bytes read: valid rounded up to the backend's alignment
  uint32_t got = 0;      // bytes read so far
  uint32_t placed = 0;   // bytes placed so far (an install can be deferred)
  int attempts = 0;          // reads in a row that made no progress
  uint64_t deferred_since = 0;  // first EAGAIN of a placement still pending (ns)
  uint32_t drain_bytes = 0;     // counted in Engine::drain_in_flight_ until finished
  bool zero = false;     // place with ZEROPAGE
  uint32_t reserved = 0;  // bytes counted against the budgets while its placement is under way
  bool stale = false;    // read while its chunk was being written back and dropped: read again
  std::byte* staging = nullptr;
  const std::byte* source = nullptr;  // the backend's own copy of the bytes, if it lent one
  std::vector<uint64_t> waiters;  // read times (ns) of the faults waiting on it

  // Whether the loop ever moves an op from stage `from` to stage `to`.
  static constexpr bool may_advance(Stage from, Stage to) {
    auto bit = [](Stage s) { return 1u << static_cast<unsigned>(s); };
    unsigned next = 0;
    switch (from) {
      case Stage::kFree: next = bit(Stage::kQueued); break;
      // kFree: the region closed, or a background read found no room.
      case Stage::kQueued: next = bit(Stage::kReading) | bit(Stage::kPlacing) | bit(Stage::kFree); break;
      // kQueued: a retry; kFree: the region closed while it was in flight.
      case Stage::kReading:
        next = bit(Stage::kQueued) | bit(Stage::kPlacing) | bit(Stage::kPoisoned) | bit(Stage::kFree);
        break;
      // kQueued: stale, read again; kFree: the range is gone (ENOENT, ESRCH).
      case Stage::kPlacing:
        next = bit(Stage::kHeld) | bit(Stage::kQueued) | bit(Stage::kDeferred) | bit(Stage::kInstalled) |
               bit(Stage::kPoisoned) | bit(Stage::kFree);
        break;
      // kFree: the region closed.
      case Stage::kHeld:
      case Stage::kDeferred: next = bit(Stage::kPlacing) | bit(Stage::kFree); break;
      case Stage::kInstalled:
      case Stage::kPoisoned: next = bit(Stage::kFree); break;
    }
    return (next & bit(to)) != 0;
  }

  static const char* stage_name(Stage s) {
    static const char* const names[] = {"free",     "queued",   "reading",   "placing",
                                        "held",     "deferred", "installed", "poisoned"};
    return names[static_cast<unsigned>(s)];
  }

  // Moves the op to stage `to`.
  void advance(Stage to) {
#if FAULTLINE_CHECK_THREADS  // the debug and sanitizer builds' internal checks
    if (!may_advance(stage, to)) broken("cannot go to stage", to);
#endif
    stage = to;
  }
  // Where a step assumes a stage (a completion is of a read in flight...).
  void expect(Stage s) const {
#if FAULTLINE_CHECK_THREADS
    if (stage != s) broken("was expected in stage", s);
#else
    (void)s;
#endif
  }
  [[noreturn]] void broken(const char* what, Stage other) const {
    std::fprintf(stderr, "faultline: internal error: the read of chunk %llu (stage %s) %s %s\n",
                 static_cast<unsigned long long>(chunk), stage_name(stage), what, stage_name(other));
    std::abort();
  }
};

}  // namespace faultline::detail

// SPDX-License-Identifier: Apache-2.0
// Replacement policies for memory budgets: which resident chunk goes next.
//
// A policy sees what the fault path sees: a chunk placed (after a first
// touch, a fault on a chunk evicted earlier, read-ahead or prefetch) and a
// chunk leaving memory. It never sees hits: accesses to resident pages do
// not fault. So recency inside the resident set is unknown, and the one
// reuse signal is a chunk faulting back after it was evicted.
//
// Per-chunk state lives in an array indexed by chunk number (no allocation
// per event); its pages are reserved lazily, so a huge region costs address
// space, not memory, until its chunks are touched. Used by the fault-loop
// thread only.
#pragma once

#include <cstdint>
#include <memory>

#include "faultline/options.h"
#include "unique_fd.h"

namespace faultline::detail {

// Where a chunk stands in a policy's lists.
enum class ChunkPlace : uint8_t {
  kAbsent,         // never placed (or forgotten)
  kRecent,         // resident, placed once since it was last absent (ARC's T1; FIFO's one list)
  kFrequent,       // resident, faulted back after an eviction (ARC's T2)
  kGhostRecent,    // evicted from kRecent, still remembered (ARC's B1)
  kGhostFrequent,  // evicted from kFrequent, still remembered (ARC's B2)
  kEvicted,        // evicted, no longer in a ghost list
};

class ChunkPolicy {
 public:
  virtual ~ChunkPolicy() = default;

  // `chunk` was placed. `tick` increases with every placement of the
  // runtime: it orders victims of different regions.
  virtual void placed(uint64_t chunk, uint64_t tick) = 0;
  // The chunk to evict next and the tick it was placed (or kept) at; false
  // when nothing is resident.
  virtual bool peek_victim(uint64_t* chunk, uint64_t* tick) const = 0;
  // Takes the chunk peek_victim() named out of the resident set.
  virtual void evict(uint64_t chunk) = 0;
  // The chunk peek_victim() named cannot be dropped now: it goes behind
  // every other resident chunk of its list.
  virtual void keep(uint64_t chunk, uint64_t tick) = 0;
  // The chunk left memory without being evicted (MADV_DONTNEED by the
  // application, munmap): no longer resident, nothing remembered.
  virtual void forget(uint64_t chunk) = 0;

  virtual ChunkPlace where(uint64_t chunk) const = 0;
  virtual uint64_t resident() const = 0;  // chunks
  bool was_evicted(uint64_t chunk) const {
    ChunkPlace p = where(chunk);
    return p == ChunkPlace::kGhostRecent || p == ChunkPlace::kGhostFrequent || p == ChunkPlace::kEvicted;
  }
};

// `chunks`: chunk numbers are below it. `capacity`: the chunks the budget
// holds (sizes the adaptive policy's ghost lists). Throws Error when the
// state array cannot be reserved.
std::unique_ptr<ChunkPolicy> make_policy(EvictionPolicy kind, uint64_t chunks, uint64_t capacity);
// Whether `kind` is a value of EvictionPolicy (Runtime::map() rejects others
// whether or not the region has a budget).
bool is_policy(EvictionPolicy kind);

}  // namespace faultline::detail

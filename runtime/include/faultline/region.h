// SPDX-License-Identifier: Apache-2.0
// A Region is a range of address space whose pages are filled on first touch
// from a backend. Obtain one from Runtime::map(). Move-only.
//
// Destroying a region waits for its reads in flight, unregisters and unmaps
// the range. Threads still touching it must be done with it: after
// destruction the memory is gone, as after munmap.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "faultline/dirty_log.h"
#include "faultline/options.h"
#include "faultline/stats.h"

namespace faultline {

namespace detail {
class Engine;
struct RegionState;
}

class Region {
 public:
  Region() = default;
  Region(Region&& other) noexcept;
  Region& operator=(Region&& other) noexcept;
  ~Region();

  // Null for a foreign region (Runtime::map_foreign): its memory is in
  // another process, at address().
  std::byte* data() const;
  uintptr_t address() const;  // where the region starts, in its process
  size_t size() const;  // the length asked for (not rounded to pages)
  std::span<std::byte> span() const { return {data(), size()}; }
  const RegionOptions& options() const;
  // RegionOptions::shared_memory: the memfd holding the region's bytes, for
  // another process to map (pass it over a Unix socket, or dup() it). It
  // belongs to the region: valid while the region lives. -1 otherwise.
  int shared_memory_fd() const;

  // Asks the runtime to load [offset, offset + length) in the background,
  // like MADV_WILLNEED. Returns at once; demand faults go first.
  void prefetch(uint64_t offset, uint64_t length);

  // Working sets (REAP-style restore; see faultline/working_set.h).
  // The chunks demand-faulted so far, as region byte offsets (multiples of
  // fill_size) in first-touch order. The region must have been mapped with
  // RegionOptions.record_touches; throws Error otherwise.
  std::vector<uint64_t> touched_chunks() const;
  // Loads the chunks holding these region offsets in the background, in
  // this order, queued behind earlier prefetch() calls; demand faults still
  // go first. Returns at once. Throws Error, naming the index, if an offset
  // is past the end of the region.
  void prefetch_chunks(std::span<const uint64_t> offsets);
  // After everything queued so far, loads the rest of the region in the
  // background. Reads in flight for it start at 64 KiB and double with each
  // chunk placed while no demand fault arrives, up to 4 MiB; a demand fault
  // drops them back to 64 KiB, so it never waits behind much (CRIU's
  // lazy-pages drain). Counted as prefetch in the statistics.
  void drain();

  StatsSnapshot stats() const;

  // Dirty tracking (RegionOptions::track_dirty; faultline/dirty_log.h).
  // The pages written since the previous call, or since map(), in order;
  // the next call reports only what is written after this one started.
  // Throws Error if the region does not track writes, or is a write-back
  // region (whose log the runtime consumes itself).
  std::vector<DirtyRange> take_dirty();

  // Write-back regions (RegionOptions::write_back), like msync(MS_SYNC):
  // returns once every page written before the call is in the backend and
  // the backend is synced. Writes racing with it are kept: a page written
  // during its own write-back is written again by the next flush. Throws
  // Error (with the errno, e.g. ENOSPC or EIO) if a write or the sync
  // fails; then nothing is lost: the data stays in memory, resident, and
  // the next flush() or close() writes it again. Safe to call from several
  // threads. Throws Error on a region without write_back.
  void flush();

  // Closes the region: for a write-back region, flush() first. If that
  // throws, the region stays open and intact (free space, then close again).
  // Other regions: same as reset().
  void close();

  // Unmaps now (what the destructor does). The region is empty afterwards.
  // A write-back region is flushed first; if that fails, the error is
  // printed to stderr with the number of bytes lost, and the region is
  // unmapped anyway (a destructor cannot report it otherwise): call close()
  // to handle write-back errors.
  void reset();

 private:
  friend class Runtime;
  Region(std::shared_ptr<detail::Engine> engine, std::shared_ptr<detail::RegionState> state);

  std::shared_ptr<detail::Engine> engine_;
  std::shared_ptr<detail::RegionState> state_;
};

}  // namespace faultline

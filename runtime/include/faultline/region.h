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

  std::byte* data() const;
  size_t size() const;  // the length asked for (not rounded to pages)
  std::span<std::byte> span() const { return {data(), size()}; }
  const RegionOptions& options() const;

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

  // Unmaps now (what the destructor does). The region is empty afterwards.
  void reset();

 private:
  friend class Runtime;
  Region(std::shared_ptr<detail::Engine> engine, std::shared_ptr<detail::RegionState> state);

  std::shared_ptr<detail::Engine> engine_;
  std::shared_ptr<detail::RegionState> state_;
};

}  // namespace faultline

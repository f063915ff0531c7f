// SPDX-License-Identifier: Apache-2.0
// Fault statistics, kept per region and per runtime.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace faultline {

// The counters, one list: StatsSnapshot's fields, the runtime's atomics,
// the JSON and the benchmark's columns are all generated from it, so a new
// counter is one line here. X(name, meaning).
#define FAULTLINE_STATS_COUNTERS(X)                                                                \
  X(faults, "fault messages served")                                                             \
  X(pages_installed, "4 KiB pages placed (copied or zero)")                                       \
  X(bytes_installed, "bytes placed")                                                              \
  X(bytes_read, "bytes the backend delivered")                                                    \
  X(zero_pages, "pages placed with UFFDIO_ZEROPAGE")                                              \
  X(readahead_chunks, "chunks fetched by read-ahead")                                             \
  X(readahead_hits, "faults that found their chunk already on its way by read-ahead")            \
  X(readahead_bytes, "bytes placed by read-ahead and read-around")                                \
  X(readahead_used_bytes, "read-ahead bytes the stream went on to use")                           \
  X(readahead_wasted_bytes, "read-ahead bytes the access pattern left unused")                    \
  X(prefetch_chunks, "chunks fetched for prefetch()")                                             \
  X(prefetch_hits, "faults that found their chunk already on its way by prefetch")               \
  X(raised_reads, "background reads a demand fault made urgent in the backend's queue")          \
  X(retries, "backend reads retried (short, EAGAIN, EINTR)")                                      \
  X(errors, "chunks poisoned because the backend could not serve them, and unhandled events")    \
  X(resident_bytes, "placed and not yet dropped (a gauge, not a counter)")                        \
  X(evicted_chunks, "chunks dropped to keep a memory budget")                                     \
  X(evicted_bytes, "bytes dropped to keep a memory budget")                                       \
  X(refaults, "demand faults on chunks evicted earlier")                                          \
  X(removes, "UFFD_EVENT_REMOVE: ranges dropped by MADV_DONTNEED/MADV_REMOVE (read zeros after)") \
  X(unmaps, "UFFD_EVENT_UNMAP: ranges munmap'ed by the application (no longer served)")          \
  X(remaps, "UFFD_EVENT_REMAP: moves by mremap")                                                  \
  X(forks, "UFFD_EVENT_FORK: forked children whose copy is served")                             \
  X(wait_ns, "fault service times summed: each fault message is one thread's wait, read to wake")

// The numbers of a region or a runtime at one moment, as plain data
// (Region::stats(), Runtime::stats()). Counters are read one by one while
// faults are served: a consistent-enough picture, not a transaction. A
// fault's pages and latency are counted just after its thread is woken (the
// wake comes first: it is what the thread waits for), so a thread that reads
// the stats right after its own fault may not see it for a moment.
struct StatsSnapshot {
#define FAULTLINE_STATS_FIELD(name, meaning) uint64_t name = 0;
  FAULTLINE_STATS_COUNTERS(FAULTLINE_STATS_FIELD)
#undef FAULTLINE_STATS_FIELD
  // Fault service times (fault message read to wake), in nanoseconds;
  // quantiles exact to within 1/16 of their value.
  uint64_t latency_count = 0;
  uint64_t latency_p50_ns = 0;
  uint64_t latency_p90_ns = 0;
  uint64_t latency_p99_ns = 0;
  uint64_t latency_max_ns = 0;

  // readahead_used_bytes / (used + wasted): how much of the judged
  // read-ahead paid off (docs/design.md, "Read-ahead"); 1 when none was judged.
  double readahead_hit_ratio() const;

  // Calls f(name, value) for each counter of FAULTLINE_STATS_COUNTERS, in
  // its order, then for the latency fields (latency_count ... latency_max_ns).
  void for_each(const std::function<void(std::string_view name, uint64_t value)>& f) const;
  // {"version":..., the counters..., "readahead_hit_ratio":..., "latency_ns":{"count","p50","p90","p99","max"}}
  std::string to_json() const;
};

}  // namespace faultline

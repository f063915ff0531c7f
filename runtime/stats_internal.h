// SPDX-License-Identifier: Apache-2.0
// The runtime's side of the statistics: the live counters the fault loop
// writes and anyone reads (relaxed atomics), and the latency histogram.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>

#include "faultline/stats.h"

namespace faultline::detail {

// A log-linear latency histogram in nanoseconds (16 buckets per power of
// two: quantiles are exact to within 1/16 of their value). record() must be
// called by one thread at a time; the readers may be any threads.
class LatencyHistogram {
 public:
  static constexpr int kSubBits = 4;
  static constexpr int kBuckets = (64 - kSubBits + 1) << kSubBits;

  void record(uint64_t ns);
  uint64_t count() const;
  uint64_t max_ns() const { return max_.load(std::memory_order_relaxed); }
  // The q-quantile (0 < q <= 1) in nanoseconds; 0 when empty.
  uint64_t quantile_ns(double q) const;

  static int bucket_of(uint64_t ns);
  static uint64_t bucket_low(int bucket);

 private:
  std::array<std::atomic<uint64_t>, kBuckets> buckets_{};
  std::atomic<uint64_t> max_{0};
};

// Written by the fault-loop thread only, read by any thread at any time.
struct Stats {
#define FAULTLINE_STATS_ATOMIC(name, meaning) std::atomic<uint64_t> name{0};
  FAULTLINE_STATS_COUNTERS(FAULTLINE_STATS_ATOMIC)
#undef FAULTLINE_STATS_ATOMIC
  LatencyHistogram latency;

  StatsSnapshot snapshot() const;
};

}  // namespace faultline::detail

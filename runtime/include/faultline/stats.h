// SPDX-License-Identifier: Apache-2.0
// Fault statistics, kept per region and per runtime.
//
// Stats is written by the fault-loop thread and may be read from any thread
// at any time: counters are relaxed atomics, so a snapshot taken while
// faults are served is a consistent-enough picture, not a transaction.
// A fault's pages and latency are counted just after its thread is woken
// (the wake comes first: it is what the thread waits for), so a thread that
// reads the stats right after its own fault may not see it for a moment.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>

namespace faultline {

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

// Plain copy of the numbers at one moment.
struct StatsSnapshot {
  uint64_t faults = 0;            // fault messages served
  uint64_t pages_installed = 0;   // 4 KiB pages placed (copied or zero)
  uint64_t bytes_installed = 0;
  uint64_t bytes_read = 0;        // bytes the backend delivered
  uint64_t zero_pages = 0;        // pages placed with UFFDIO_ZEROPAGE
  uint64_t readahead_chunks = 0;  // chunks fetched by read-ahead
  uint64_t readahead_hits = 0;    // faults that found their chunk already on its way by read-ahead
  uint64_t prefetch_chunks = 0;   // chunks fetched for prefetch()
  uint64_t prefetch_hits = 0;     // faults that found their chunk already on its way by prefetch
  uint64_t retries = 0;           // backend reads retried (short, EAGAIN, EINTR)
  uint64_t errors = 0;            // chunks poisoned because the backend could not serve them
  uint64_t resident_bytes = 0;    // placed and not yet dropped (a gauge, not a counter)
  uint64_t evicted_chunks = 0;    // chunks dropped to keep a memory budget
  uint64_t evicted_bytes = 0;
  uint64_t refaults = 0;          // demand faults on chunks evicted earlier
  uint64_t latency_count = 0;     // fault service times recorded (message read to wake)
  uint64_t latency_p50_ns = 0;
  uint64_t latency_p90_ns = 0;
  uint64_t latency_p99_ns = 0;
  uint64_t latency_max_ns = 0;

  std::string to_json() const;
};

class Stats {
 public:
  std::atomic<uint64_t> faults{0};
  std::atomic<uint64_t> pages_installed{0};
  std::atomic<uint64_t> bytes_installed{0};
  std::atomic<uint64_t> bytes_read{0};
  std::atomic<uint64_t> zero_pages{0};
  std::atomic<uint64_t> readahead_chunks{0};
  std::atomic<uint64_t> readahead_hits{0};
  std::atomic<uint64_t> prefetch_chunks{0};
  std::atomic<uint64_t> prefetch_hits{0};
  std::atomic<uint64_t> retries{0};
  std::atomic<uint64_t> errors{0};
  std::atomic<uint64_t> resident_bytes{0};
  std::atomic<uint64_t> evicted_chunks{0};
  std::atomic<uint64_t> evicted_bytes{0};
  std::atomic<uint64_t> refaults{0};
  LatencyHistogram latency;

  StatsSnapshot snapshot() const;
};

}  // namespace faultline

// SPDX-License-Identifier: Apache-2.0
#include "faultline/stats.h"

#include <bit>

#include <nlohmann/json.hpp>

#include "faultline/version.h"

namespace faultline {

int LatencyHistogram::bucket_of(uint64_t ns) {
  if (ns < (uint64_t{1} << kSubBits)) return static_cast<int>(ns);
  int exp = std::bit_width(ns) - 1;  // >= kSubBits
  int sub = static_cast<int>((ns >> (exp - kSubBits)) & ((1u << kSubBits) - 1));
  return ((exp - kSubBits + 1) << kSubBits) + sub;
}

uint64_t LatencyHistogram::bucket_low(int bucket) {
  if (bucket < (1 << kSubBits)) return static_cast<uint64_t>(bucket);
  int exp = (bucket >> kSubBits) + kSubBits - 1;
  uint64_t sub = static_cast<uint64_t>(bucket & ((1 << kSubBits) - 1));
  return (uint64_t{1} << exp) + (sub << (exp - kSubBits));
}

void LatencyHistogram::record(uint64_t ns) {
  // One writer (see the header): no locked read-modify-write needed.
  auto& b = buckets_[bucket_of(ns)];
  b.store(b.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  if (ns > max_.load(std::memory_order_relaxed)) max_.store(ns, std::memory_order_relaxed);
}

uint64_t LatencyHistogram::count() const {
  uint64_t n = 0;
  for (auto& b : buckets_) n += b.load(std::memory_order_relaxed);
  return n;
}

uint64_t LatencyHistogram::quantile_ns(double q) const {
  uint64_t total = count();
  if (total == 0) return 0;
  uint64_t rank = static_cast<uint64_t>(q * static_cast<double>(total) + 0.5);
  if (rank < 1) rank = 1;
  uint64_t seen = 0;
  for (int i = 0; i < kBuckets; ++i) {
    seen += buckets_[i].load(std::memory_order_relaxed);
    if (seen >= rank) {
      // Middle of the bucket, but never above the largest value seen.
      uint64_t low = bucket_low(i);
      uint64_t high = i + 1 < kBuckets ? bucket_low(i + 1) : low;
      uint64_t mid = low + (high - low) / 2;
      uint64_t mx = max_ns();
      return mid < mx ? mid : mx;
    }
  }
  return max_ns();
}

StatsSnapshot Stats::snapshot() const {
  auto get = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  StatsSnapshot s;
  s.faults = get(faults);
  s.pages_installed = get(pages_installed);
  s.bytes_installed = get(bytes_installed);
  s.bytes_read = get(bytes_read);
  s.zero_pages = get(zero_pages);
  s.readahead_chunks = get(readahead_chunks);
  s.readahead_hits = get(readahead_hits);
  s.prefetch_chunks = get(prefetch_chunks);
  s.prefetch_hits = get(prefetch_hits);
  s.retries = get(retries);
  s.errors = get(errors);
  s.resident_bytes = get(resident_bytes);
  s.evicted_chunks = get(evicted_chunks);
  s.evicted_bytes = get(evicted_bytes);
  s.refaults = get(refaults);
  s.latency_count = latency.count();
  s.latency_p50_ns = latency.quantile_ns(0.50);
  s.latency_p90_ns = latency.quantile_ns(0.90);
  s.latency_p99_ns = latency.quantile_ns(0.99);
  s.latency_max_ns = latency.max_ns();
  return s;
}

std::string StatsSnapshot::to_json() const {
  // ordered_json: the keys in the order a reader expects, counters first.
  nlohmann::ordered_json j = {
      {"version", version()},
      {"faults", faults},
      {"pages_installed", pages_installed},
      {"bytes_installed", bytes_installed},
      {"bytes_read", bytes_read},
      {"zero_pages", zero_pages},
      {"readahead_chunks", readahead_chunks},
      {"readahead_hits", readahead_hits},
      {"prefetch_chunks", prefetch_chunks},
      {"prefetch_hits", prefetch_hits},
      {"retries", retries},
      {"errors", errors},
      {"resident_bytes", resident_bytes},
      {"evicted_chunks", evicted_chunks},
      {"evicted_bytes", evicted_bytes},
      {"refaults", refaults},
      {"latency_ns",
       {{"count", latency_count},
        {"p50", latency_p50_ns},
        {"p90", latency_p90_ns},
        {"p99", latency_p99_ns},
        {"max", latency_max_ns}}},
  };
  return j.dump();
}

}  // namespace faultline

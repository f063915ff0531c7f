// SPDX-License-Identifier: Apache-2.0
#include "stats_internal.h"

#include <bit>

#include <nlohmann/json.hpp>

#include "faultline/version.h"

namespace faultline {
namespace detail {

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
  StatsSnapshot s;
#define FAULTLINE_STATS_LOAD(name, meaning) s.name = name.load(std::memory_order_relaxed);
  FAULTLINE_STATS_COUNTERS(FAULTLINE_STATS_LOAD)
#undef FAULTLINE_STATS_LOAD
  s.latency_count = latency.count();
  s.latency_p50_ns = latency.quantile_ns(0.50);
  s.latency_p90_ns = latency.quantile_ns(0.90);
  s.latency_p99_ns = latency.quantile_ns(0.99);
  s.latency_max_ns = latency.max_ns();
  return s;
}

}  // namespace detail

void StatsSnapshot::for_each(const std::function<void(std::string_view name, uint64_t value)>& f) const {
#define FAULTLINE_STATS_VISIT(name, meaning) f(#name, name);
  FAULTLINE_STATS_COUNTERS(FAULTLINE_STATS_VISIT)
#undef FAULTLINE_STATS_VISIT
  f("latency_count", latency_count);
  f("latency_p50_ns", latency_p50_ns);
  f("latency_p90_ns", latency_p90_ns);
  f("latency_p99_ns", latency_p99_ns);
  f("latency_max_ns", latency_max_ns);
}

double StatsSnapshot::readahead_hit_ratio() const {
  uint64_t judged = readahead_used_bytes + readahead_wasted_bytes;
  return judged == 0 ? 1.0 : static_cast<double>(readahead_used_bytes) / static_cast<double>(judged);
}

std::string StatsSnapshot::to_json() const {
  // ordered_json: the keys in the list's order.
  nlohmann::ordered_json j;
  j["version"] = version();
#define FAULTLINE_STATS_JSON(name, meaning) j[#name] = name;
  FAULTLINE_STATS_COUNTERS(FAULTLINE_STATS_JSON)
#undef FAULTLINE_STATS_JSON
  j["readahead_hit_ratio"] = readahead_hit_ratio();
  j["latency_ns"] = {{"count", latency_count},
                     {"p50", latency_p50_ns},
                     {"p90", latency_p90_ns},
                     {"p99", latency_p99_ns},
                     {"max", latency_max_ns}};
  return j.dump();
}

}  // namespace faultline

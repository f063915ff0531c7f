// SPDX-License-Identifier: Apache-2.0
// What one case's runs add up to: the medians over the repeats that the
// table, the targets and the JSON report.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "bench.h"
#include "configs.h"

namespace fbench {

// One workload x configuration x cache state, run once per repeat.
struct Case {
  Workload w;
  const ConfigDef* c;
  bool cold;
  std::string label() const {
    return std::string(workload_name(w)) + "/" + c->name + "/" + (cold ? "cold" : "warm");
  }
};

// A case's runs and, after aggregate(), their medians (NAN: not measured).
struct Agg {
  Case k;
  std::vector<RunResult> runs;
  double seconds = NAN, ns_per_page = NAN, gb_per_s = NAN, faults = NAN, p50 = NAN, p90 = NAN, p99 = NAN, peak_rss_mb = NAN;
  double rss_before_mb = NAN, rss_after_mb = NAN, rss_delta_mb = NAN, installed_mb = NAN, cached_before_pct = NAN,
         cache_after_mb = NAN;
  double minflt = NAN, majflt = NAN;
  double budget_mb = NAN, memory_peak_mb = NAN, evicted = NAN, refaults = NAN;
  double svc_p50 = NAN, svc_p99 = NAN;
  double first_access_us = NAN;  // vm-restore
  // migrate: medians of the ok runs, but lost_writes and wrong_words are
  // the most of any run (a target for every run).
  MigrateFigures migrate;
  LiveSnapFigures live_snapshot;  // live-snapshot: medians, but max_stall_ms is the longest of any run
  double rt_faults = NAN, rt_pages = NAN, rt_read_mb = NAN, rt_ra_chunks = NAN, rt_ra_hits = NAN, rt_p50 = NAN, rt_p99 = NAN,
         rt_max = NAN;
  bool all_ok = true;
  bool all_dropped = true;
  bool rss_check_applies = false;
  bool rss_ok = true;
  double rss_limit_mb = NAN;  // median
  std::string rt_json;        // StatsSnapshot::to_json() of the median run, "" if none
  uint64_t bytes = 0, accesses = 0;
  std::vector<std::string> errors;
};

// The reserve workload of one configuration: its runs and medians.
struct ReserveSummary {
  std::string config;
  std::vector<ReserveResult> runs;
  double map_ms = NAN, runtime_ms = NAN, unmap_ms = NAN, rss_map_mb = NAN, rss_total_mb = NAN;
  bool ok = true, zeros_ok = true, met = false;
  std::vector<std::string> errors;
};

// Median of v; NAN if empty.
double median(std::vector<double> v);
// Quantile q of nanosecond latencies, in microseconds; NAN if empty.
double quantile_us(std::vector<uint64_t> v, double q);

// Fills a's medians, flags and errors from a.runs.
void aggregate(Agg& a);
// Fills r's medians, flags and errors from r.runs.
void aggregate(ReserveSummary& r);

}  // namespace fbench

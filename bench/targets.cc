// SPDX-License-Identifier: Apache-2.0
// The performance targets (targets.h). Three shapes of target, each with one
// helper: a ratio of two cases' medians, a case's throughput against a
// fixed GB/s, and a limit that every run must stay under (counted).
#include "targets.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <functional>
#include <initializer_list>
#include <string>

#include "report_text.h"

namespace fbench {
namespace {

constexpr const char* kNotMeasured = "not measured (configuration filtered out or failed)";
constexpr bool kCold = true, kWarm = false;

// A case (results.h) by its configuration's name.
struct CaseName {
  Workload w;
  const char* config;
  bool cold;
};

// Why a target has no value: a configuration skipped (and why), or else
// filtered out or failed.
std::string not_measured(const Bench& b, std::initializer_list<const char*> configs) {
  for (const char* c : configs)
    for (const auto& s : b.skipped)
      if (s.config == c) return "not measured: " + s.config + " skipped (" + s.reason + ")";
  return kNotMeasured;
}

const Agg* find_agg(const Bench& b, const CaseName& c) {
  for (const auto& a : b.aggs)
    if (a.k.w == c.w && std::strcmp(a.k.c->name, c.config) == 0 && a.k.cold == c.cold) return &a;
  return nullptr;
}

// What a ratio compares: throughput (GB/s), the fault latency p50, or runs
// per second (1 / median seconds: for workloads whose bytes differ between
// the two sides, or are not the point).
enum class Measure { kGbPerS, kFaultP50, kRunsPerSecond, kSeconds };

double measure(const Agg& a, Measure m) {
  switch (m) {
    case Measure::kGbPerS: return a.gb_per_s;
    case Measure::kFaultP50: return a.p50;
    case Measure::kRunsPerSecond: return 1.0 / a.seconds;
    case Measure::kSeconds: return a.seconds;
  }
  return NAN;
}

// x's measure over y's, against the threshold.
struct Ratio {
  std::string name;
  CaseName x, y;
  double threshold;
  bool higher_is_better;
  Measure measure;
};

Target ratio(const Bench& b, const Ratio& r) {
  Target tg;
  tg.name = r.name;
  tg.threshold = r.threshold;
  tg.higher_is_better = r.higher_is_better;
  const Agg* x = find_agg(b, r.x);
  const Agg* y = find_agg(b, r.y);
  if (!x || !y || !x->all_ok || !y->all_ok) {
    tg.detail = not_measured(b, {r.x.config, r.y.config});
    return tg;
  }
  const double vx = measure(*x, r.measure), vy = measure(*y, r.measure);
  tg.value = vx / vy;
  tg.known = std::isfinite(tg.value);
  tg.met = tg.known && (r.higher_is_better ? tg.value >= r.threshold : tg.value <= r.threshold);
  char d[256];
  if (r.measure == Measure::kFaultP50)
    std::snprintf(d, sizeof d, "%.2f us / %.2f us", vx, vy);
  else if (r.measure == Measure::kGbPerS || x->bytes)
    std::snprintf(d, sizeof d, "%.3f GB/s / %.3f GB/s", x->gb_per_s, y->gb_per_s);
  else  // (runs with no bytes of their own: live snapshots)
    std::snprintf(d, sizeof d, "%.4f s / %.4f s", x->seconds, y->seconds);
  tg.detail = d;
  return tg;
}

// The case's throughput at least `threshold` GB/s.
Target at_least_gb_per_s(const Bench& b, const std::string& name, const CaseName& c, double threshold) {
  Target tg;
  tg.name = name;
  tg.threshold = threshold;
  const Agg* x = find_agg(b, c);
  if (!x || !x->all_ok || !std::isfinite(x->gb_per_s)) {
    tg.detail = kNotMeasured;
    return tg;
  }
  tg.known = true;
  tg.value = x->gb_per_s;
  tg.met = tg.value >= threshold;
  tg.detail = fmt(x->gb_per_s, "%.3f") + " GB/s";
  return tg;
}

// One figure of a case against a fixed threshold (migrate's: seconds,
// milliseconds, microseconds, counts), printed with `unit`. A case whose
// runs failed is still judged when `failed_too` (lost writes fail a run,
// and are exactly what the target counts).
Target figure(const Bench& b, const std::string& name, const CaseName& c, const std::function<double(const Agg&)>& get,
              double threshold, bool higher_is_better, const char* unit, bool failed_too = false) {
  Target tg;
  tg.name = name;
  tg.threshold = threshold;
  tg.higher_is_better = higher_is_better;
  const Agg* x = find_agg(b, c);
  const double v = x ? get(*x) : NAN;
  if (!x || (!x->all_ok && !failed_too) || !std::isfinite(v)) {
    tg.detail = not_measured(b, {c.config});
    return tg;
  }
  tg.known = true;
  tg.value = v;
  tg.met = higher_is_better ? v >= threshold : v <= threshold;
  tg.detail = fmt(v, v == std::floor(v) && std::fabs(v) < 1e15 ? "%.0f" : "%.3f") + " " + unit;
  return tg;
}

// On a VM whose idle vCPUs halt, a wake across CPUs costs tens of
// microseconds: unpinned, each run's p50 depends on where the scheduler put
// the two threads. Runs in different placements cannot be compared, so a
// p50 ratio whose per-run p50s spread more than 3x is unknown.
void mark_unreliable_p50(const Bench& b, const Ratio& r, Target& tg) {
  double lo = INFINITY, hi = 0;
  for (const Agg* a : {find_agg(b, r.x), find_agg(b, r.y)})
    if (a)
      for (const auto& run : a->runs)
        if (run.ok && !run.lat_ns.empty()) {
          const double p = quantile_us(run.lat_ns, 0.5);
          lo = std::min(lo, p);
          hi = std::max(hi, p);
        }
  if (!tg.known || hi <= 3 * lo) return;
  char d[320];
  std::snprintf(d, sizeof d,
                "UNRELIABLE: per-run p50s range %.1f-%.1f us (thread placement differs between runs: a wake "
                "across CPUs is slow here); rerun with --pin same or --pin split. Medians: %s",
                lo, hi, tg.detail.c_str());
  tg.detail = d;
  tg.known = false;
}

// Runs checked against a limit of their own: how many, how many over, and
// the description of the one nearest to (or furthest over) its limit.
class RunLimits {
 public:
  // `describe` is called only when this run is the nearest so far.
  void add(double value, double limit, const std::function<std::string()>& describe) {
    ++runs_;
    if (value > limit) ++over_;
    if (value - limit > worst_margin_) {
      worst_margin_ = value - limit;
      worst_ = describe();
    }
  }

  // The target: met when at least one run was checked and none was over; its
  // detail reads "N RUNS_TEXT, M over; WORST_PREFIX" and the description.
  Target target(const std::string& name, const char* runs_text, const char* worst_prefix) const {
    Target tg;
    tg.name = name;
    tg.known = runs_ > 0;
    tg.met = runs_ > 0 && over_ == 0;
    tg.value = over_;
    tg.threshold = 0;
    tg.higher_is_better = false;
    tg.detail = std::to_string(runs_) + " " + runs_text + ", " + std::to_string(over_) + " over; " + worst_prefix + worst_;
    return tg;
  }

 private:
  int runs_ = 0, over_ = 0;
  double worst_margin_ = -INFINITY;
  std::string worst_;
};

// `format` with a case's label and three figures, for RunLimits descriptions.
std::string describe_run(const char* format, const std::string& label, double a, double b, double c) {
  char d[200];
  std::snprintf(d, sizeof d, format, label.c_str(), a, b, c);
  return d;
}

// The runtime's fixed overhead in a budget run: its staging memory (pinned
// by O_DIRECT's fixed buffers); the eviction state is inside the 5%.
Target budget_peaks(const Bench& b) {
  constexpr double kStagingMb = static_cast<double>(kStagingBytes) / static_cast<double>(kMiB);
  RunLimits check;
  for (const auto& a : b.aggs) {
    if (a.k.c->kind != Kind::kBudget || is_cgroup_child(*a.k.c)) continue;
    for (const auto& r : a.runs) {
      if (!r.ok || !r.budget_bytes) continue;
      const double budget = static_cast<double>(r.budget_bytes) / static_cast<double>(kMiB);
      const double peak = static_cast<double>(r.memory_peak_kb) / 1024.0;
      const double limit = budget * 1.05 + kStagingMb;
      check.add(peak, limit, [&] {
        return describe_run("highest: %s %.1f MiB (budget %.0f MiB, limit %.1f)", a.k.label(), peak, budget, limit);
      });
    }
  }
  // "highest: " is in the description, so that with no budget run the detail ends at "over; ".
  return check.target("memory peak <= budget + 5% + 4 MiB staging (every faultline budget run)", "runs", "");
}

Target rss_after_runs(const Bench& b) {
  RunLimits check;
  for (const auto& a : b.aggs) {
    if (!faultline_kind(a.k.c->kind) || !a.rss_check_applies) continue;
    for (const auto& r : a.runs) {
      if (!r.ok) continue;
      const double delta = (static_cast<double>(r.rss_after_kb) - static_cast<double>(r.rss_before_kb)) / 1024.0;
      const double installed = static_cast<double>(r.installed_bytes) / static_cast<double>(kMiB);
      const double limit = installed * 1.02 + 32.0;
      check.add(delta, limit, [&] {
        return describe_run("%s: RSS +%.1f MiB vs installed %.1f MiB (limit %.1f)", a.k.label(), delta, installed,
                            limit);
      });
    }
  }
  return check.target("RSS after a workload <= installed bytes + 2% + 32 MiB (every faultline run)", "runs checked",
                      "closest: ");
}

Target snapshot_size(const Bench& b) {
  Target tg;
  tg.name = "zstd snapshot of the VM-like image <= 1.02 x `zstd -3` of the whole image";
  tg.threshold = 1.02;
  tg.higher_is_better = false;
  if (b.zstd.have_vm && b.zstd.vm_zstd3_bytes > 0) {
    tg.known = true;
    tg.value = static_cast<double>(b.zstd.vm_snapshot_bytes) / static_cast<double>(b.zstd.vm_zstd3_bytes);
    tg.met = tg.value <= tg.threshold;
    tg.detail = "snapshot " + std::to_string(b.zstd.vm_snapshot_bytes) + " bytes, zstd -3 " +
                std::to_string(b.zstd.vm_zstd3_bytes) + " bytes";
  } else {
    tg.detail = b.zstd.have_vm ? "zstd -3 not measured: " + b.zstd.zstd3_error
                               : "not measured (no restore workload selected)";
  }
  return tg;
}

Target reserve(const ReserveSummary& r) {
  Target tg;
  tg.name = "reserve 1 TiB (" + r.config + "): map < 10 ms and RSS increase < 64 MiB";
  tg.known = r.ok;
  tg.met = r.met;
  tg.value = r.map_ms;
  tg.threshold = 10.0;
  tg.higher_is_better = false;
  char d[256];
  std::snprintf(d, sizeof d, "map %.3f ms, RSS +%.2f MiB (runtime + map), zeros %s", r.map_ms, r.rss_total_mb,
                r.zeros_ok ? "ok" : "WRONG");
  tg.detail = r.ok ? d : "error: " + (r.errors.empty() ? std::string("?") : r.errors[0]);
  return tg;
}

}  // namespace

std::vector<Target> compute_targets(const Bench& b) {
  using W = Workload;
  constexpr bool kHigher = true, kLower = false;
  std::vector<Target> t;
  t.push_back(ratio(b, {"faultline-memory seq GB/s >= 0.70 x uffdio-copy-bulk (2 MiB) copy GB/s",
                        {W::kSeq, "faultline-memory", kWarm}, {W::kCopy, "uffdio-copy-bulk", kWarm}, 0.70, kHigher,
                        Measure::kGbPerS}));
  const Ratio floor{"faultline-memory-4k rand fault p50 <= 1.1 x uffd-textbook rand fault p50",
                    {W::kRand, "faultline-memory-4k", kWarm}, {W::kRand, "uffd-textbook", kWarm}, 1.10, kLower,
                    Measure::kFaultP50};
  t.push_back(ratio(b, floor));
  mark_unreliable_p50(b, floor, t.back());
  t.push_back(ratio(b, {"faultline-file cold seq GB/s >= 0.8 x mmap-seq cold seq GB/s",
                        {W::kSeq, "faultline-file", kCold}, {W::kSeq, "mmap-seq", kCold}, 0.80, kHigher,
                        Measure::kGbPerS}));
  // Remote (issue #4): a page server process over loopback, against the same
  // runtime fed from memory in-process.
  t.push_back(ratio(b, {"faultline-remote rand fault p50 <= 2.0 x faultline-memory rand fault p50",
                        {W::kRand, "faultline-remote", kWarm}, {W::kRand, "faultline-memory", kWarm}, 2.0, kLower,
                        Measure::kFaultP50}));
  t.push_back(ratio(b, {"faultline-remote-4k rand fault p50 <= 2.0 x faultline-memory-4k rand fault p50",
                        {W::kRand, "faultline-remote-4k", kWarm}, {W::kRand, "faultline-memory-4k", kWarm}, 2.0,
                        kLower, Measure::kFaultP50}));
  t.push_back(at_least_gb_per_s(b, "faultline-remote seq >= 1.0 GB/s (loopback TCP, read-ahead on)",
                                {W::kSeq, "faultline-remote", kWarm}, 1.0));
  // HTTP (issue #16): nginx on loopback against the page server, in one run.
  t.push_back(ratio(b, {"faultline-http seq GB/s >= 0.7 x faultline-remote seq GB/s",
                        {W::kSeq, "faultline-http", kWarm}, {W::kSeq, "faultline-remote", kWarm}, 0.7, kHigher,
                        Measure::kGbPerS}));
  const Ratio http4k{"faultline-http-4k rand fault p50 <= 1.5 x faultline-remote-4k rand fault p50",
                     {W::kRand, "faultline-http-4k", kWarm}, {W::kRand, "faultline-remote-4k", kWarm}, 1.5, kLower,
                     Measure::kFaultP50};
  t.push_back(ratio(b, http4k));
  mark_unreliable_p50(b, http4k, t.back());
  t.push_back(ratio(b, {"faultline-file cold mt-rand throughput >= 1.5 x mmap cold mt-rand",
                        {W::kMtRand, "faultline-file", kCold}, {W::kMtRand, "mmap", kCold}, 1.50, kHigher,
                        Measure::kRunsPerSecond}));
  t.push_back(ratio(b, {"write-flush: faultline-file (write-back region, flush) >= 0.8 x mmap-msync",
                        {W::kWriteFlush, "faultline-file", kWarm}, {W::kWriteFlush, "mmap-msync", kWarm}, 0.80,
                        kHigher, Measure::kRunsPerSecond}));
  t.push_back(ratio(b, {"budget-zipf: faultline-file-budget throughput >= 1.0 x mmap-cgroup",
                        {W::kBudgetZipf, "faultline-file-budget", kCold}, {W::kBudgetZipf, "mmap-cgroup", kCold}, 1.0,
                        kHigher, Measure::kRunsPerSecond}));
  t.push_back(ratio(b, {"budget-zipf: faultline-file-budget (adaptive) throughput > 1.0 x faultline-file-budget-fifo",
                        {W::kBudgetZipf, "faultline-file-budget", kCold},
                        {W::kBudgetZipf, "faultline-file-budget-fifo", kCold}, 1.0, kHigher,
                        Measure::kRunsPerSecond}));
  t.push_back(budget_peaks(b));
  // zstd snapshot restore (issue #3), cold and warm.
  for (bool cold : {kCold, kWarm}) {
    const std::string cache = cold ? "(cold)" : "(warm)";
    const CaseName ws{W::kRestore, "zstd-lazy-ws", cold};
    t.push_back(ratio(b, {"zstd-lazy-ws restore >= 3.7x faster than zstd-lazy " + cache, ws,
                          {W::kRestore, "zstd-lazy", cold}, 3.7, kHigher, Measure::kRunsPerSecond}));
    t.push_back(ratio(b, {"zstd-lazy-ws restore >= 5x faster than zstd-eager " + cache, ws,
                          {W::kRestore, "zstd-eager", cold}, 5.0, kHigher, Measure::kRunsPerSecond}));
    const CaseName full{W::kRestore, "zstd-full", cold};
    t.push_back(at_least_gb_per_s(b, "zstd-full sequential restore >= 1 GB/s of uncompressed data " + cache, full, 1.0));
    if (t.back().known) {
      const Agg& a = *find_agg(b, full);
      t.back().detail += " (" + fmt(a.seconds, "%.3f") + " s for " +
                         fmt(static_cast<double>(a.bytes) / static_cast<double>(kMiB), "%.0f") + " MiB)";
    }
  }
  // vm-restore (issue #12): faultline handle against Firecracker's example
  // handler and its file backend, in one run.
  for (bool cold : {kCold, kWarm}) {
    const std::string cache = cold ? "(cold)" : "(warm)";
    const CaseName ws{W::kVmRestore, "handle-ws", cold}, fc{W::kVmRestore, "fc-example", cold};
    t.push_back(ratio(b, {"vm-restore handle-ws >= 3.7x faster than fc-example " + cache, ws, fc, 3.7, kHigher,
                          Measure::kRunsPerSecond}));
    t.push_back(ratio(b, {"vm-restore handle >= 1.5x faster than fc-example " + cache,
                          {W::kVmRestore, "handle", cold}, fc, 1.5, kHigher, Measure::kRunsPerSecond}));
  }
  t.push_back(ratio(b, {"vm-restore handle-ws no slower than fc-file (cold)", {W::kVmRestore, "handle-ws", kCold},
                        {W::kVmRestore, "fc-file", kCold}, 1.0, kHigher, Measure::kRunsPerSecond}));
  // migrate (issue #13), against QEMU 7.2's reference run on this machine.
  const CaseName pre{W::kMigrate, "migrate-precopy", kWarm}, post{W::kMigrate, "migrate-postcopy", kWarm},
      hybrid{W::kMigrate, "migrate-hybrid", kWarm};
  for (const CaseName& c : {pre, post, hybrid})
    t.push_back(figure(b, std::string(c.config) + ": lost_writes = 0 in every run", c,
                       [](const Agg& a) { return a.migrate.measured ? static_cast<double>(a.migrate.lost_writes) : NAN; },
                       0, kLower, "lost writes (the most of any run)", true));
  t.push_back(figure(b, "migrate-precopy downtime <= 20 ms", pre, [](const Agg& a) { return a.migrate.downtime_ms; }, 20,
                     kLower, "ms"));
  t.push_back(figure(b, "migrate-postcopy downtime <= 5 ms", post, [](const Agg& a) { return a.migrate.downtime_ms; }, 5,
                     kLower, "ms"));
  t.push_back(figure(b, "migrate-postcopy request p50 <= 250 us (background push running)", post,
                     [](const Agg& a) { return a.migrate.request_p50_us; }, 250, kLower, "us"));
  t.push_back(figure(b, "migrate-precopy total <= 2.6 s", pre, [](const Agg& a) { return a.seconds; }, 2.6, kLower, "s"));
  for (const CaseName& c : {post, hybrid})
    t.push_back(figure(b, std::string(c.config) + " total <= 1.8 s", c, [](const Agg& a) { return a.seconds; }, 1.8,
                       kLower, "s"));
  // live-snapshot (issue #14), in one run.
  const CaseName stop{W::kLiveSnapshot, "snapshot-stop", kWarm}, live{W::kLiveSnapshot, "snapshot-live", kWarm},
      incr{W::kLiveSnapshot, "snapshot-incremental", kWarm};
  t.push_back(figure(b, "snapshot-live max_stall_ms <= 5 (the longest of any run)", live,
                     [](const Agg& a) { return a.live_snapshot.max_stall_ms; }, 5, kLower, "ms"));
  t.push_back(figure(b, "snapshot-live writer_rate_ratio >= 0.7", live,
                     [](const Agg& a) { return a.live_snapshot.writer_rate_ratio; }, 0.7, kHigher, ""));
  t.push_back(ratio(b, {"snapshot-live seconds <= 1.3 x snapshot-stop (as runs/s: live >= 0.77 x stop)", live, stop,
                        1 / 1.3, kHigher, Measure::kRunsPerSecond}));
  t.push_back(ratio(b, {"snapshot-incremental seconds <= 0.15 x snapshot-live", incr, live, 0.15, kLower,
                        Measure::kSeconds}));
  t.push_back(figure(b, "snapshot-incremental size <= 1.1 x the written chunks compressed", incr,
                     [](const Agg& a) { return a.live_snapshot.file_bytes / a.live_snapshot.dirty_bytes; }, 1.1, kLower,
                     "x"));
  for (bool cold : {kCold, kWarm})
    t.push_back(ratio(b, {std::string("restore of a 10-layer chain (zstd-chain-lazy) <= 1.1 x its flattening "
                                      "(zstd-flat-lazy) ") + (cold ? "(cold)" : "(warm)"),
                          {W::kRestore, "zstd-chain-lazy", cold}, {W::kRestore, "zstd-flat-lazy", cold}, 1.1, kLower,
                          Measure::kSeconds}));
  t.push_back(snapshot_size(b));
  for (const auto& r : b.reserves)
    if (r.config != std::string("mmap")) t.push_back(reserve(r));
  t.push_back(rss_after_runs(b));
  return t;
}

}  // namespace fbench

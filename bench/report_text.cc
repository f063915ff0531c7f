// SPDX-License-Identifier: Apache-2.0
// The text report on standard output (report_text.h).
#include "report_text.h"

#include <cmath>

namespace fbench {

std::string fmt(double v, const char* f) {
  if (!std::isfinite(v)) return "-";
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

void print_table(const Bench& b, FILE* f) {
  std::fprintf(f, "\n%-11s %-26s %-5s %9s %9s %8s %8s %9s %8s %8s %8s %8s %s\n", "workload", "config", "cache", "seconds",
               "ns/page", "GB/s", "faults", "p50(us)", "p99(us)", "svc-p50", "peakMB", "rssΔMB", "ok");
  for (const auto& a : b.aggs) {
    std::fprintf(f, "%-11s %-26s %-5s %9s %9s %8s %8s %9s %8s %8s %8s %8s %s\n", workload_name(a.k.w), a.k.c->name,
                 a.k.cold ? "cold" : "warm", fmt(a.seconds, "%.4f").c_str(), fmt(a.ns_per_page, "%.0f").c_str(),
                 fmt(a.gb_per_s, "%.3f").c_str(), fmt(a.faults, "%.0f").c_str(), fmt(a.p50, "%.2f").c_str(),
                 fmt(a.p99, "%.1f").c_str(), fmt(a.svc_p50, "%.2f").c_str(), fmt(a.peak_rss_mb, "%.0f").c_str(),
                 fmt(a.rss_delta_mb, "%.0f").c_str(),
                 !a.all_ok ? ("ERROR: " + (a.errors.empty() ? std::string("?") : a.errors[0])).c_str()
                 : (a.k.cold && !a.all_dropped) ? "NOT COLD (drop_caches failed)"
                 : (a.rss_check_applies && !a.rss_ok) ? "RSS over installed+2%+32MiB"
                                                      : "ok");
  }
  std::fprintf(f,
               "\nmedians over %d repeats; seconds = timed window (map + advise + workload); p50/p99 = per-access\n"
               "latency seen by the application (rand, mt-rand); svc-p50 = fault service time, message read to\n"
               "wake (the runtime's histogram; uffd-textbook's handler measures the same span);\n"
               "faults = runtime fault messages (faultline), handled messages (uffd-textbook), minflt+majflt (mmap).\n"
               "Memory-backed configs and the uffd floors do not use the page cache: they run under 'warm' only.\n",
               b.o.repeat);
  if (!b.reserves.empty()) {
    std::fprintf(f, "\nreserve (1 TiB region, nothing touched; medians):\n");
    std::fprintf(f, "  %-18s %10s %10s %12s %12s %10s %s\n", "config", "map ms", "runtime ms", "RSS map MiB",
                 "RSS tot MiB", "unmap ms", "");
    for (const auto& r : b.reserves)
      std::fprintf(f, "  %-18s %10s %10s %12s %12s %10s %s\n", r.config.c_str(), fmt(r.map_ms, "%.3f").c_str(),
                   fmt(r.runtime_ms, "%.3f").c_str(), fmt(r.rss_map_mb, "%.2f").c_str(),
                   fmt(r.rss_total_mb, "%.2f").c_str(), fmt(r.unmap_ms, "%.3f").c_str(),
                   !r.ok ? ("ERROR: " + r.errors[0]).c_str() : !r.zeros_ok ? "WRONG CONTENT" : "");
  }
  bool any = false;
  for (const auto& a : b.aggs) {
    if (!a.rss_check_applies || !faultline_kind(a.k.c->kind)) continue;
    if (!any) {
      std::fprintf(f, "\nresident memory vs installed pages after the workload (faultline; medians):\n");
      std::fprintf(f, "  %-8s %-21s %-5s %12s %12s %12s %s\n", "workload", "config", "cache", "RSS Δ MiB", "installed",
                   "limit", "check");
      any = true;
    }
    std::fprintf(f, "  %-8s %-21s %-5s %12s %12s %12s %s\n", workload_name(a.k.w), a.k.c->name, a.k.cold ? "cold" : "warm",
                 fmt(a.rss_delta_mb, "%.1f").c_str(), fmt(a.installed_mb, "%.1f").c_str(),
                 fmt(a.rss_limit_mb, "%.1f").c_str(), a.rss_ok ? "ok" : "OVER");
  }
  any = false;
  for (const auto& a : b.aggs) {
    if (a.k.c->kind != Kind::kVm) continue;
    if (!any) {
      std::fprintf(f, "\nvm-restore (a VMM process, Firecracker's handshake; medians): seconds from mapping the guest\n"
                      "memory to its working set read, first access from then to the first page read\n");
      std::fprintf(f, "  %-16s %-5s %10s %16s\n", "config", "cache", "seconds", "first access us");
      any = true;
    }
    std::fprintf(f, "  %-16s %-5s %10s %16s\n", a.k.c->name, a.k.cold ? "cold" : "warm", fmt(a.seconds, "%.4f").c_str(),
                 fmt(a.first_access_us, "%.1f").c_str());
  }
  any = false;
  for (const auto& a : b.aggs) {
    if (!a.migrate.measured) continue;
    if (!any) {
      std::fprintf(f, "\nmigrate (samples/live_migration over loopback TCP; medians, lost writes and wrong words the\n"
                      "most of any run): total, downtime = stop to resume, post-copy request latency and blocked time\n");
      std::fprintf(f, "  %-17s %9s %12s %7s %11s %12s %12s %11s %6s %6s %14s\n", "config", "total s", "downtime ms",
                   "rounds", "sent MiB", "req p50 us", "req p99 us", "blocked ms", "lost", "wrong", "dest peak MiB");
      any = true;
    }
    const MigrateFigures& m = a.migrate;
    std::fprintf(f, "  %-17s %9s %12s %7s %11s %12s %12s %11s %6llu %6llu %14s\n", a.k.c->name, fmt(a.seconds, "%.3f").c_str(),
                 fmt(m.downtime_ms, "%.1f").c_str(), fmt(m.rounds, "%.0f").c_str(),
                 fmt(m.bytes_sent / static_cast<double>(kMiB), "%.0f").c_str(), fmt(m.request_p50_us, "%.0f").c_str(),
                 fmt(m.request_p99_us, "%.0f").c_str(), fmt(m.blocked_ms, "%.1f").c_str(),
                 static_cast<unsigned long long>(m.lost_writes), static_cast<unsigned long long>(m.wrong_words),
                 fmt(m.dest_peak_mb, "%.0f").c_str());
  }
  any = false;
  for (const auto& a : b.aggs) {
    if (!a.live_snapshot.measured) continue;
    if (!any) {
      std::fprintf(f, "\nlive-snapshot (medians; max stall the longest of any run): seconds of the snapshot, its file,\n"
                      "the longest a writer was held, writes/s during it over the second before, the protect step;\n"
                      "floor: the least a protect step can take here (only the writers' chunks protected again:\n"
                      "one UFFDIO_WRITEPROTECT each, or one over the whole range, whichever is less)\n");
      std::fprintf(f, "  %-21s %9s %10s %13s %12s %11s %11s %14s %9s\n", "config", "seconds", "file MiB", "max stall ms",
                   "rate ratio", "protect ms", "held", "bytes/dirty", "floor ms");
      any = true;
    }
    const LiveSnapFigures& x = a.live_snapshot;
    std::fprintf(f, "  %-21s %9s %10s %13s %12s %11s %11s %14s %9s\n", a.k.c->name, fmt(a.seconds, "%.3f").c_str(),
                 fmt(x.file_bytes / static_cast<double>(kMiB), "%.1f").c_str(), fmt(x.max_stall_ms, "%.2f").c_str(),
                 fmt(x.writer_rate_ratio, "%.3f").c_str(), fmt(x.protect_ms, "%.2f").c_str(),
                 fmt(x.held_writes, "%.0f").c_str(), fmt(x.file_bytes / x.dirty_bytes, "%.3f").c_str(),
                 fmt(std::fmin(x.floor_chunks_ms, x.floor_range_ms), "%.2f").c_str());
  }
  any = false;
  for (const auto& a : b.aggs) {
    if (!a.k.c->file_cache || !std::isfinite(a.cache_after_mb) || a.k.c->kind == Kind::kVm) continue;
    if (!any) {
      std::fprintf(f, "\npage cache of the file after the run (mincore on a fresh mapping; medians): for faultline,\n"
                      "data held twice shows as RSS Δ + cache above what was installed (mmap's RSS is\n"
                      "the cache pages it maps, so its sum counts them twice)\n");
      std::fprintf(f, "  %-11s %-26s %-5s %12s %12s %14s\n", "workload", "config", "cache", "cache MiB", "RSS Δ MiB",
                   "RSS Δ + cache");
      any = true;
    }
    std::fprintf(f, "  %-11s %-26s %-5s %12s %12s %14s\n", workload_name(a.k.w), a.k.c->name, a.k.cold ? "cold" : "warm",
                 fmt(a.cache_after_mb, "%.1f").c_str(), fmt(a.rss_delta_mb, "%.1f").c_str(),
                 fmt(a.rss_delta_mb + a.cache_after_mb, "%.1f").c_str());
  }
}

void print_budget(const Bench& b, FILE* f) {
  bool any = false;
  for (const auto& a : b.aggs) {
    if (a.k.c->kind != Kind::kBudget) continue;
    if (!any) {
      std::fprintf(f, "\nmemory budgets (dataset 4x the budget; medians): memory = faultline VmHWM - RSS before the\n"
                      "runtime (region + staging + eviction state), mmap-cgroup the cgroup's peak (page cache + child);\n"
                      "misses = runtime faults (faultline), major faults (mmap)\n");
      std::fprintf(f, "  %-11s %-26s %10s %10s %10s %9s %10s %10s %8s\n", "workload", "config", "budgetMB", "memoryMB",
                   "accesses", "misses", "hit-rate", "evicted", "refaults");
      any = true;
    }
    double misses = is_cgroup_child(*a.k.c) ? a.majflt : a.faults;
    std::fprintf(f, "  %-11s %-26s %10s %10s %10llu %9s %10s %10s %8s\n", workload_name(a.k.w), a.k.c->name,
                 fmt(a.budget_mb, "%.0f").c_str(), fmt(a.memory_peak_mb, "%.1f").c_str(),
                 static_cast<unsigned long long>(a.accesses), fmt(misses, "%.0f").c_str(),
                 fmt(1.0 - misses / static_cast<double>(a.accesses ? a.accesses : 1), "%.3f").c_str(),
                 fmt(a.evicted, "%.0f").c_str(), fmt(a.refaults, "%.0f").c_str());
  }
}

void print_targets(const std::vector<Target>& t, FILE* f) {
  std::fprintf(f, "\ntargets:\n");
  for (const auto& x : t)
    std::fprintf(f, "  [%s] %s\n         %s%s\n", !x.known ? "n/a " : x.met ? "MET " : "MISS", x.name.c_str(),
                 x.known && x.name.find("x ") != std::string::npos ? ("ratio " + fmt(x.value, "%.3f") + ": ").c_str() : "",
                 x.detail.c_str());
}

}  // namespace fbench

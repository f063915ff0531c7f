// SPDX-License-Identifier: Apache-2.0
// Medians over a case's repeats (results.h).
#include "results.h"

#include <algorithm>

namespace fbench {

double median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

double quantile_us(std::vector<uint64_t> v, double q) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  size_t idx = static_cast<size_t>(std::floor(q * static_cast<double>(v.size() - 1)));
  return static_cast<double>(v[idx]) / 1000.0;
}

namespace {

void aggregate_migrate(Agg& a) {
  std::vector<double> down, blocked, p50, p99, bytes, rounds, peak;
  MigrateFigures& m = a.migrate;
  for (const RunResult& r : a.runs) {
    if (!r.migrate.measured) continue;
    m.measured = true;
    m.lost_writes = std::max(m.lost_writes, r.migrate.lost_writes);
    m.wrong_words = std::max(m.wrong_words, r.migrate.wrong_words);
    if (!r.ok) continue;
    auto add = [](std::vector<double>& v, double x) {  // (NAN: the mode has none, e.g. pre-copy's requests)
      if (std::isfinite(x)) v.push_back(x);
    };
    add(down, r.migrate.downtime_ms);
    add(blocked, r.migrate.blocked_ms);
    add(p50, r.migrate.request_p50_us);
    add(p99, r.migrate.request_p99_us);
    add(bytes, r.migrate.bytes_sent);
    add(rounds, r.migrate.rounds);
    add(peak, r.migrate.dest_peak_mb);
  }
  m.downtime_ms = median(down);
  m.blocked_ms = median(blocked);
  m.request_p50_us = median(p50);
  m.request_p99_us = median(p99);
  m.bytes_sent = median(bytes);
  m.rounds = median(rounds);
  m.dest_peak_mb = median(peak);
}

void aggregate_live_snapshot(Agg& a) {
  std::vector<double> bytes, ratio, protect, held, dirty, floor_chunks, floor_range;
  LiveSnapFigures& f = a.live_snapshot;
  for (const RunResult& r : a.runs) {
    if (!r.ok || !r.live_snapshot.measured) continue;
    const LiveSnapFigures& x = r.live_snapshot;
    f.measured = true;
    f.max_stall_ms = std::isfinite(f.max_stall_ms) ? std::max(f.max_stall_ms, x.max_stall_ms) : x.max_stall_ms;
    bytes.push_back(x.file_bytes);
    ratio.push_back(x.writer_rate_ratio);
    protect.push_back(x.protect_ms);
    held.push_back(x.held_writes);
    if (std::isfinite(x.dirty_bytes)) dirty.push_back(x.dirty_bytes);
    if (std::isfinite(x.floor_chunks_ms)) floor_chunks.push_back(x.floor_chunks_ms);
    if (std::isfinite(x.floor_range_ms)) floor_range.push_back(x.floor_range_ms);
  }
  f.file_bytes = median(bytes);
  f.writer_rate_ratio = median(ratio);
  f.protect_ms = median(protect);
  f.held_writes = median(held);
  f.dirty_bytes = median(dirty);
  f.floor_chunks_ms = median(floor_chunks);
  f.floor_range_ms = median(floor_range);
}

}  // namespace

void aggregate(Agg& a) {
  std::vector<double> sec, faults, p50, p90, p99, peak, before, after, delta, inst, cached, cached_after, minf, majf,
      limit;
  std::vector<double> first_access;
  std::vector<double> rtf, rtp, rtr, rtc, rth, rt5, rt9, rtm, sv5, sv9, bud, mpk, evi, ref;
  const RunResult* median_run = nullptr;
  for (const auto& r : a.runs) {
    if (!r.ok) {
      a.all_ok = false;
      if (std::find(a.errors.begin(), a.errors.end(), r.error) == a.errors.end()) a.errors.push_back(r.error);
      continue;
    }
    a.bytes = r.bytes;
    a.accesses = r.accesses;
    sec.push_back(r.seconds);
    if (r.first_access_us >= 0) first_access.push_back(r.first_access_us);
    faults.push_back(static_cast<double>(r.faults));
    if (!r.lat_ns.empty()) {
      p50.push_back(quantile_us(r.lat_ns, 0.50));
      p90.push_back(quantile_us(r.lat_ns, 0.90));
      p99.push_back(quantile_us(r.lat_ns, 0.99));
    }
    peak.push_back(static_cast<double>(r.peak_rss_kb) / 1024.0);
    before.push_back(static_cast<double>(r.rss_before_kb) / 1024.0);
    after.push_back(static_cast<double>(r.rss_after_kb) / 1024.0);
    double d = (static_cast<double>(r.rss_after_kb) - static_cast<double>(r.rss_before_kb)) / 1024.0;
    delta.push_back(d);
    minf.push_back(static_cast<double>(r.minflt));
    if (r.budget_bytes) {
      bud.push_back(static_cast<double>(r.budget_bytes) / static_cast<double>(kMiB));
      mpk.push_back(static_cast<double>(r.memory_peak_kb) / 1024.0);
      if (r.has_rt) {
        evi.push_back(static_cast<double>(r.rt_evicted_chunks));
        ref.push_back(static_cast<double>(r.rt_refaults));
      }
    }
    majf.push_back(static_cast<double>(r.majflt));
    if (r.cached_before >= 0) cached.push_back(r.cached_before * 100.0);
    if (r.cache_after_mb >= 0) cached_after.push_back(r.cache_after_mb);
    if (a.k.cold && !r.cache_dropped) a.all_dropped = false;
    if (a.k.c->kind != Kind::kMmap && !runs_in_other_process(*a.k.c)) {
      double im = static_cast<double>(r.installed_bytes) / static_cast<double>(kMiB);
      inst.push_back(im);
      double lim = im * 1.02 + 32.0;
      limit.push_back(lim);
      a.rss_check_applies = true;
      if (d > lim) a.rss_ok = false;
    }
    if (r.has_service) {
      sv5.push_back(static_cast<double>(r.svc_p50_ns) / 1000.0);
      sv9.push_back(static_cast<double>(r.svc_p99_ns) / 1000.0);
    }
    if (r.has_rt) {
      rtf.push_back(static_cast<double>(r.rt_faults));
      rtp.push_back(static_cast<double>(r.rt_pages_installed));
      rtr.push_back(static_cast<double>(r.rt_bytes_read) / static_cast<double>(kMiB));
      rtc.push_back(static_cast<double>(r.rt_readahead_chunks));
      rth.push_back(static_cast<double>(r.rt_readahead_hits));
      rt5.push_back(static_cast<double>(r.rt_lat_p50_ns) / 1000.0);
      rt9.push_back(static_cast<double>(r.rt_lat_p99_ns) / 1000.0);
      rtm.push_back(static_cast<double>(r.rt_lat_max_ns) / 1000.0);
    }
  }
  a.seconds = median(sec);
  a.first_access_us = median(first_access);
  aggregate_migrate(a);
  aggregate_live_snapshot(a);
  if (!sec.empty()) {
    // the run whose time is the (upper) median: its runtime snapshot goes in the JSON
    double best = INFINITY;
    for (const auto& r : a.runs)
      if (r.ok && std::fabs(r.seconds - a.seconds) < best) {
        best = std::fabs(r.seconds - a.seconds);
        median_run = &r;
      }
  }
  if (median_run && median_run->has_rt) a.rt_json = median_run->rt_json;
  if (a.accesses) a.ns_per_page = a.seconds * 1e9 / static_cast<double>(a.accesses);
  a.gb_per_s = static_cast<double>(a.bytes) / a.seconds / 1e9;
  a.faults = median(faults);
  a.p50 = median(p50);
  a.p90 = median(p90);
  a.p99 = median(p99);
  a.peak_rss_mb = median(peak);
  a.rss_before_mb = median(before);
  a.rss_after_mb = median(after);
  a.rss_delta_mb = median(delta);
  a.installed_mb = median(inst);
  a.rss_limit_mb = median(limit);
  a.cached_before_pct = median(cached);
  a.cache_after_mb = median(cached_after);
  a.minflt = median(minf);
  a.majflt = median(majf);
  a.budget_mb = median(bud);
  a.memory_peak_mb = median(mpk);
  a.evicted = median(evi);
  a.refaults = median(ref);
  a.svc_p50 = median(sv5);
  a.svc_p99 = median(sv9);
  a.rt_faults = median(rtf);
  a.rt_pages = median(rtp);
  a.rt_read_mb = median(rtr);
  a.rt_ra_chunks = median(rtc);
  a.rt_ra_hits = median(rth);
  a.rt_p50 = median(rt5);
  a.rt_p99 = median(rt9);
  a.rt_max = median(rtm);
}

void aggregate(ReserveSummary& r) {
  std::vector<double> m, rt, um, rm, rtot;
  for (const auto& rr : r.runs) {
    if (!rr.ok) {
      r.ok = false;
      if (std::find(r.errors.begin(), r.errors.end(), rr.error) == r.errors.end()) r.errors.push_back(rr.error);
      continue;
    }
    if (!rr.zeros_ok) r.zeros_ok = false;
    m.push_back(rr.map_ms);
    rt.push_back(rr.runtime_ms);
    um.push_back(rr.unmap_ms);
    rm.push_back(rr.rss_map_mb);
    rtot.push_back(rr.rss_total_mb);
  }
  r.map_ms = median(m);
  r.runtime_ms = median(rt);
  r.unmap_ms = median(um);
  r.rss_map_mb = median(rm);
  r.rss_total_mb = median(rtot);
  r.met = r.ok && r.zeros_ok && r.map_ms < 10.0 && r.rss_total_mb < 64.0;
}

}  // namespace fbench

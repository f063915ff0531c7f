// SPDX-License-Identifier: Apache-2.0
// The JSON report (report_json.h) with nlohmann-json. ordered_json keeps the
// keys in the order a reader of the file expects (machine first, then the
// parameters, the results...).
#include "report_json.h"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>

#include "faultline/error.h"

namespace fbench {
namespace {

using Json = nlohmann::ordered_json;

// A measured figure; null when it was not measured (NAN). Whole values
// (counts, and medians of counts) are written as integers, as readers of the
// earlier reports saw them.
Json number(double v) {
  if (!std::isfinite(v)) return nullptr;
  if (v == std::floor(v) && std::fabs(v) < 9e15) return static_cast<int64_t>(v);
  return v;
}

Json machine(const Bench& b) {
  const MachineInfo& m = b.mi;
  return Json{{"cpu_model", m.cpu_model},
              {"cores", m.cores},
              {"kernel", m.kernel},
              {"mem_total_mb", m.mem_total_kb / 1024},
              {"hostname", m.hostname},
              {"thp", m.thp},
              {"dataset_disk", m.disk},
              {"read_ahead_kb", m.read_ahead_kb},
              {"uffd_mode", b.uffd_mode},
              {"date", m.date},
              {"loadavg_start", number(b.load_start)},
              {"loadavg_end", number(b.load_end)},
              {"drop_caches", b.drop_error.empty() ? std::string("ok") : b.drop_error}};
}

Json params(const Bench& b) {
  return Json{{"size", b.ctx.size},
              {"budget_data", b.ctx.budget_data},
              {"dataset", b.ctx.path},
              {"repeat", b.o.repeat},
              {"quick", b.o.quick},
              {"seed", b.o.seed},
              {"threads", b.o.threads},
              {"fraction", b.o.fraction},
              {"zipf_s", b.o.zipf_s},
              {"custom", b.o.custom.spec},
              {"pin", pin_name(b.o.pin)},
              {"mt_rand_pages", "disjoint"},
              {"zstd_workers", b.ctx.zstd_workers},
              {"total_seconds", number(b.total_s)}};
}

// The runtime's statistics of a faultline case (medians, and the whole
// snapshot of the median run as the runtime reports it); null for others.
Json runtime(const Agg& a) {
  if (!faultline_kind(a.k.c->kind) || !std::isfinite(a.rt_faults)) return nullptr;
  Json snapshot = nullptr;
  if (!a.rt_json.empty()) {
    try {
      snapshot = Json::parse(a.rt_json);
    } catch (const Json::parse_error& e) {
      throw faultline::Error("runtime statistics of " + a.k.label() + " are not JSON: " + e.what());
    }
  }
  return Json{{"faults", number(a.rt_faults)},
              {"pages_installed", number(a.rt_pages)},
              {"bytes_read_mb", number(a.rt_read_mb)},
              {"readahead_chunks", number(a.rt_ra_chunks)},
              {"readahead_hits", number(a.rt_ra_hits)},
              {"latency_p50_us", number(a.rt_p50)},
              {"latency_p99_us", number(a.rt_p99)},
              {"latency_max_us", number(a.rt_max)},
              {"snapshot_of_median_run", std::move(snapshot)}};
}

Json result(const Agg& a) {
  Json j{{"workload", workload_name(a.k.w)},
         {"config", a.k.c->name},
         {"cache", a.k.cold ? "cold" : "warm"},
         {"bytes", a.bytes},
         {"accesses", a.accesses},
         {"seconds", number(a.seconds)},
         {"ns_per_page", number(a.ns_per_page)},
         {"gb_per_s", number(a.gb_per_s)},
         {"faults", number(a.faults)},
         {"fault_p50_us", number(a.p50)},
         {"fault_p90_us", number(a.p90)},
         {"fault_p99_us", number(a.p99)},
         {"service_p50_us", number(a.svc_p50)},
         {"service_p99_us", number(a.svc_p99)},
         {"peak_rss_mb", number(a.peak_rss_mb)},
         {"rss_before_mb", number(a.rss_before_mb)},
         {"rss_after_mb", number(a.rss_after_mb)},
         {"rss_delta_mb", number(a.rss_delta_mb)},
         {"installed_mb", number(a.installed_mb)},
         {"rss_check", a.rss_check_applies ? Json{{"limit_mb", number(a.rss_limit_mb)}, {"ok", a.rss_ok}} : Json(nullptr)},
         {"minflt", number(a.minflt)},
         {"majflt", number(a.majflt)},
         {"budget_mb", number(a.budget_mb)},
         {"memory_peak_mb", number(a.memory_peak_mb)},
         {"evicted_chunks", number(a.evicted)},
         {"refaults", number(a.refaults)},
         {"first_access_us", number(a.first_access_us)}};
  // migrate: the fields, at the top level of the result.
  if (a.migrate.measured) {
    j["total_s"] = number(a.seconds);
    j["downtime_ms"] = number(a.migrate.downtime_ms);
    j["blocked_ms"] = number(a.migrate.blocked_ms);
    j["request_p50_us"] = number(a.migrate.request_p50_us);
    j["request_p99_us"] = number(a.migrate.request_p99_us);
    j["bytes_sent"] = number(a.migrate.bytes_sent);
    j["rounds"] = number(a.migrate.rounds);
    j["lost_writes"] = a.migrate.lost_writes;
    j["wrong_words"] = a.migrate.wrong_words;
    j["dest_peak_rss_mb"] = number(a.migrate.dest_peak_mb);
  }
  if (a.live_snapshot.measured) {
    const LiveSnapFigures& f = a.live_snapshot;
    j["bytes"] = number(f.file_bytes);  // (the snapshot file's, as the issue names it)
    j["max_stall_ms"] = number(f.max_stall_ms);
    j["writer_rate_ratio"] = number(f.writer_rate_ratio);
    j["protect_ms"] = number(f.protect_ms);
    j["held_writes"] = number(f.held_writes);
    j["dirty_bytes"] = number(f.dirty_bytes);
    j["bytes_per_dirty_byte"] = number(f.file_bytes / f.dirty_bytes);
    j["protect_floor_ms"] = number(std::fmin(f.floor_chunks_ms, f.floor_range_ms));
    j["protect_floor_chunks_ms"] = number(f.floor_chunks_ms);
    j["protect_floor_range_ms"] = number(f.floor_range_ms);
  }
  const bool cache_known = a.k.c->file_cache;
  j["cache_dropped"] = cache_known && a.k.cold ? Json(a.all_dropped) : Json(nullptr);
  j["cached_before_pct"] = cache_known ? number(a.cached_before_pct) : Json(nullptr);
  j["cache_after_mb"] = cache_known ? number(a.cache_after_mb) : Json(nullptr);
  j["repeats"] = a.runs.size();
  Json seconds = Json::array(), p50 = Json::array();
  for (const RunResult& r : a.runs) {
    seconds.push_back(r.ok ? number(r.seconds) : Json(nullptr));
    p50.push_back(r.ok && !r.lat_ns.empty() ? number(quantile_us(r.lat_ns, 0.5)) : Json(nullptr));
  }
  j["seconds_all"] = std::move(seconds);
  j["fault_p50_us_all"] = std::move(p50);
  j["ok"] = a.all_ok;
  j["errors"] = a.errors;
  j["runtime"] = runtime(a);
  return j;
}

Json reserve(const ReserveSummary& r) {
  return Json{{"config", r.config},
              {"length_bytes", kTiB},
              {"map_ms", number(r.map_ms)},
              {"runtime_ms", r.config == "mmap" ? Json(nullptr) : number(r.runtime_ms)},
              {"unmap_ms", number(r.unmap_ms)},
              {"rss_map_mb", number(r.rss_map_mb)},
              {"rss_total_mb", number(r.rss_total_mb)},
              {"zeros_ok", r.zeros_ok},
              {"ok", r.ok},
              {"target_met", r.met},
              {"repeats", r.runs.size()},
              {"errors", r.errors}};
}

Json target(const Target& t) {
  return Json{{"name", t.name},
              {"value", number(t.value)},
              {"threshold", number(t.threshold)},
              {"met", t.known ? Json(t.met) : Json(nullptr)},
              {"detail", t.detail}};
}

}  // namespace

void write_json(const Bench& b, const std::vector<Target>& targets, const std::string& path) {
  Json results = Json::array(), reserves = Json::array(), target_list = Json::array();
  for (const Agg& a : b.aggs) results.push_back(result(a));
  for (const ReserveSummary& r : b.reserves) reserves.push_back(reserve(r));
  for (const Target& t : targets) target_list.push_back(target(t));
  Json skipped = Json::array();
  for (const Bench::Skipped& s : b.skipped) skipped.push_back(Json{{"config", s.config}, {"reason", s.reason}});
  const Json report{{"machine", machine(b)},
                    {"params", params(b)},
                    {"results", std::move(results)},
                    {"reserve", std::move(reserves)},
                    {"targets", std::move(target_list)},
                    {"skipped", std::move(skipped)}};
  // Text from the machine (a CPU model, an error message) may hold bytes
  // that are not UTF-8: replace them rather than fail the whole report.
  const std::string text = report.dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out) {
    const int err = errno;
    throw faultline::Error("cannot write --json " + path + (err ? std::string(": ") + std::strerror(err) : ""), err);
  }
}

}  // namespace fbench

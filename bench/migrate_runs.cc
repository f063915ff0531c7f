// SPDX-License-Identifier: Apache-2.0
// The migrate workload (issue #13): samples/live_migration is the workload,
// run as a child of the bench for each run. It maps a --size region, starts
// two writers on a 5% hot set at kMigrateWriteRate page writes per second,
// forks the destination (a listener on 127.0.0.1), migrates to it after
// half its --run-ms, and the destination carries on for --run-ms and checks
// every word. Its --json output is one line of the source's metrics
// (MigrationMetrics::to_json) and one of the destination's check; the run's
// seconds are the migration's total.
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>

#include "bench.h"
#include "spawn.h"

namespace fbench {
namespace {

const char* mode_flag(MigrateConfig c) {
  switch (c) {
    case MigrateConfig::kPrecopy: return "--precopy";
    case MigrateConfig::kPostcopy: return "--postcopy";
    case MigrateConfig::kHybrid: return "--hybrid";
  }
  return "";
}

double number_at(const nlohmann::json& j, std::initializer_list<const char*> path) {
  const nlohmann::json* at = &j;
  for (const char* key : path) {
    if (!at->is_object() || !at->contains(key)) return NAN;
    at = &(*at)[key];
  }
  return at->is_number() ? at->get<double>() : NAN;
}

// The two JSON lines of the child's stdout into r. Throws faultline::Error.
void read_report(const std::string& out, RunResult& r) {
  nlohmann::json source, dest;
  std::istringstream lines(out);
  for (std::string line; std::getline(lines, line);) {
    if (line.empty() || line[0] != '{') continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded()) continue;
    (j.contains("destination") ? dest : source) = j;
  }
  if (source.is_null() || dest.is_null())
    throw faultline::Error("live_migration printed no " + std::string(source.is_null() ? "metrics" : "check") +
                           " line: " + out.substr(0, 400));
  MigrateFigures& m = r.migrate;
  m.measured = true;
  r.seconds = number_at(source, {"total_ms"}) / 1e3;
  m.downtime_ms = number_at(source, {"downtime_ms"});
  m.bytes_sent = number_at(source, {"bytes_sent"});
  m.rounds = source.contains("rounds") && source["rounds"].is_array() ? static_cast<double>(source["rounds"].size()) : NAN;
  m.blocked_ms = number_at(source, {"postcopy", "blocked_ms"});
  m.request_p50_us = number_at(source, {"postcopy", "request_us", "p50"});
  m.request_p99_us = number_at(source, {"postcopy", "request_us", "p99"});
  m.lost_writes = static_cast<uint64_t>(number_at(dest, {"destination", "lost_writes"}));
  m.wrong_words = static_cast<uint64_t>(number_at(dest, {"destination", "wrong_words"}));
  m.dest_peak_mb = number_at(dest, {"destination", "peak_rss_mb"});
}

}  // namespace

RunResult run_migrate(const Context& ctx, MigrateConfig cfg) {
  return failing_on_error<RunResult>([&](RunResult& r) {
    const Scratch out(ctx.dir, "migrate.out"), err(ctx.dir, "migrate.err");
    Process p;
    spawn(p, ctx.migration_path,
          {mode_flag(cfg), "--size", std::to_string(ctx.size), "--rate", std::to_string(kMigrateWriteRate),
           "--writers", "2", "--hot", "5", "--run-ms", "1000", "--json"},
          err.path, out.path);
    const int status = p.wait(240000);
    const std::string text = read_text(out.path);
    if (status != 0 && status != 1)  // (1: a lost write or a wrong word: reported below)
      throw faultline::Error("live_migration " + std::string(mode_flag(cfg)) + " failed (status " +
                             std::to_string(status) + "): " + read_text(err.path).substr(0, 600));
    try {
      read_report(text, r);
    } catch (const faultline::Error& e) {
      throw faultline::Error(std::string(e.what()) + "; its stderr: " + read_text(err.path).substr(0, 600));
    }
    if (r.migrate.lost_writes || r.migrate.wrong_words) {
      r.ok = false;
      r.error = std::to_string(r.migrate.lost_writes) + " lost writes, " + std::to_string(r.migrate.wrong_words) +
                " wrong words at the destination";
    }
  });
}

}  // namespace fbench

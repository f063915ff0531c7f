// SPDX-License-Identifier: Apache-2.0
#include <nlohmann/json.hpp>

#include "faultline/migration.h"

namespace faultline {

std::string MigrationMetrics::to_json() const {
  nlohmann::ordered_json j;
  j["mode"] = migration_mode_name(mode);
  j["setup_ms"] = static_cast<double>(setup_ns) / 1e6;
  j["total_ms"] = static_cast<double>(total_ns) / 1e6;
  j["downtime_ms"] = static_cast<double>(downtime_ns) / 1e6;
  j["bytes_sent"] = bytes_sent;
  j["pages_sent"] = pages_sent;
  j["bandwidth_mib_s"] = bandwidth_bytes_per_s / (1 << 20);
  j["final_pages"] = final_pages;
  nlohmann::ordered_json rs = nlohmann::ordered_json::array();
  for (const MigrationRound& r : rounds)
    rs.push_back({{"pages", r.pages},
                  {"zero_pages", r.zero_pages},
                  {"bytes", r.bytes},
                  {"ms", static_cast<double>(r.duration_ns) / 1e6},
                  {"dirty_pages_per_s", r.dirty_pages_per_s}});
  j["rounds"] = rs;
  if (mode != MigrationMode::kPrecopy) {
    j["postcopy"] = {{"ms", static_cast<double>(postcopy_ns) / 1e6},
                     {"pages_pushed", pages_pushed},
                     {"pages_requested", pages_requested},
                     {"requests", requests},
                     {"request_us", {{"p50", static_cast<double>(request_p50_ns) / 1e3},
                                     {"p99", static_cast<double>(request_p99_ns) / 1e3},
                                     {"max", static_cast<double>(request_max_ns) / 1e3}}},
                     {"blocked_ms", static_cast<double>(blocked_ns) / 1e6},
                     {"recoveries", recoveries}};
  }
  return j.dump();
}

}  // namespace faultline

// SPDX-License-Identifier: Apache-2.0
// One invocation of faultline-bench: its options, the shared context of the
// runners, what was learnt about the machine, and the results. Filled by
// setup, the schedule and the aggregation in turn; read by the reports.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "bench.h"
#include "options.h"
#include "results.h"

namespace fbench {

struct Bench {
  Options o;
  Context ctx;
  std::string dataset_msg;
  std::string drop_error;  // "" if drop_caches works
  std::string uffd_mode;
  MachineInfo mi;
  std::vector<Agg> aggs;
  std::vector<ReserveSummary> reserves;
  double total_s = 0;
  double load_start = -1, load_end = -1;
  uint64_t write_runs = 0;  // write-flush: every run writes different bytes
  ZstdSetup zstd;  // what prepare_zstd() made (zstd configurations)
  // Configurations left out of this run and why (e.g. nginx not installed).
  struct Skipped {
    std::string config, reason;
  };
  std::vector<Skipped> skipped;
};

}  // namespace fbench

// SPDX-License-Identifier: Apache-2.0
// A page server's counters (PageServerStats) in Prometheus' text exposition
// format, version 0.0.4: what `faultline serve --metrics` answers at
// GET /metrics. The metric names and types are listed in docs/serve.md.
#pragma once

#include <string>

#include "faultline/page_server.h"

namespace faultline::tools {

// "# HELP" and "# TYPE" lines and a sample for every metric, each line
// ending in '\n'; the latency histogram's buckets are cumulative.
std::string page_server_metrics_text(const PageServerStats& stats);

}  // namespace faultline::tools

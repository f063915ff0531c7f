// SPDX-License-Identifier: Apache-2.0
// The JSON report (--json FILE): machine, parameters, every case's medians
// and per-run figures, the reserve runs and the targets. bench/report.py
// turns it into the Markdown tables of docs/benchmarks.md, which also
// describes the keys.
#pragma once

#include <string>
#include <vector>

#include "session.h"
#include "targets.h"

namespace fbench {

// Writes the report to `path`; throws faultline::Error if it cannot.
void write_json(const Bench& b, const std::vector<Target>& targets, const std::string& path);

}  // namespace fbench

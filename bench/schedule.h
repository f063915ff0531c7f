// SPDX-License-Identifier: Apache-2.0
// Which cases a command line asks for, and running them: every case once
// per repeat, interleaved in a shuffled order so that drift on the machine
// spreads over all of them; then the reserve workload.
#pragma once

#include <vector>

#include "results.h"
#include "session.h"
#include "watchdog.h"

namespace fbench {

// Every selected workload x configuration x cache state (not reserve).
std::vector<Case> make_cases(const Options& o);
// Whether the reserve workload has a configuration to run.
bool wants_reserve(const Options& o);

// Runs b.aggs's cases o.repeat times (b.aggs holds one Agg per case).
void run_repeats(Bench& b, Watchdog& wd);
// Runs the reserve workload, when selected, into b.reserves.
void run_reserve(Bench& b, Watchdog& wd);

}  // namespace fbench

// SPDX-License-Identifier: Apache-2.0
// The project's performance targets, checked against a finished bench's
// medians (docs/benchmarks.md lists them and why each threshold).
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "session.h"

namespace fbench {

// One target: met, missed, or unknown (not measured, or unreliable).
struct Target {
  std::string name;
  std::string detail;
  double value = NAN;
  double threshold = NAN;
  bool higher_is_better = true;
  bool known = false;
  bool met = false;
};

std::vector<Target> compute_targets(const Bench& b);

}  // namespace fbench

// SPDX-License-Identifier: Apache-2.0
// The text report: the results table, the reserve and RSS checks, the
// memory budgets and the targets, as faultline-bench prints them.
#pragma once

#include <cstdio>
#include <string>
#include <vector>

#include "session.h"
#include "targets.h"

namespace fbench {

// v formatted with printf format f (one conversion), "-" if not finite.
std::string fmt(double v, const char* f);

void print_table(const Bench& b, FILE* f);
void print_budget(const Bench& b, FILE* f);
void print_targets(const std::vector<Target>& t, FILE* f);

}  // namespace fbench

// SPDX-License-Identifier: Apache-2.0
// The accounting of one memory budget: a region's own, or the runtime's
// over all its regions. The fault loop keeps one per region and one for the
// runtime, and treats them alike (budget.cc). Loop thread only.
#pragma once

#include <algorithm>
#include <cstdint>

#include "faultline/options.h"

namespace faultline::detail {

struct BudgetAccount {
  MemoryBudget limit;           // bytes 0: no budget (resident is still counted)
  uint64_t resident = 0;        // bytes placed, including chunks being dropped
  uint64_t dropping = 0;        // bytes handed to the evictor, not yet dropped
  uint64_t reserved = 0;        // bytes of placements under way
  uint64_t evict_retry_at = 0;  // resident level at which a pass that found nothing to drop is tried again

  bool limited() const { return limit.bytes != 0; }
  // Whether placing `bytes` more would exceed the budget.
  bool full_with(uint64_t bytes) const { return limited() && resident + reserved + bytes > limit.bytes; }
  uint64_t high_bytes() const { return fraction(limit.high); }
  uint64_t low_bytes() const { return fraction(limit.low); }
  // What stays once the drops under way finish.
  uint64_t kept() const { return resident + reserved - dropping; }
  // A pass that found too little to drop is not repeated for every
  // placement: only after another sixteenth of the budget was placed.
  bool may_evict() const { return resident >= evict_retry_at; }
  void found_too_little() { evict_retry_at = resident + std::max<uint64_t>(1, limit.bytes / 16); }

 private:
  uint64_t fraction(double f) const { return static_cast<uint64_t>(static_cast<double>(limit.bytes) * f); }
};

}  // namespace faultline::detail

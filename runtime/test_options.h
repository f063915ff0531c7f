// SPDX-License-Identifier: Apache-2.0
// Switches that exist only to test the runtime's fallback paths on a kernel
// that has the fast ones. Not a public header (not installed): the tests and
// the bench reach them through detail::make_runtime(); an application never
// needs them, the runtime picks the fast path wherever the kernel has it.
#pragma once

#include "faultline/options.h"
#include "faultline/runtime.h"

namespace faultline::detail {

struct EngineTestOptions {
  // Unservable pages are poisoned with UFFDIO_POISON where the kernel has it
  // (6.6+). Otherwise, or when this is false, the runtime maps an empty file
  // over them, which gives the same SIGBUS.
  bool use_uffdio_poison = true;
  // Evicted chunks leave with UFFDIO_MOVE where the kernel has it (6.8+),
  // which raises no event; otherwise, or when this is false, with
  // MADV_DONTNEED, whose REMOVE event costs a round trip with the fault
  // thread per chunk.
  bool evict_with_move = true;
};

// detail::make_runtime(options, test), declared in faultline/runtime.h (a
// friend of Runtime), builds a Runtime with them.

}  // namespace faultline::detail

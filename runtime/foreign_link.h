// SPDX-License-Identifier: Apache-2.0
// What a ForeignSpace handle, its regions and the engine share about one
// adopted userfaultfd (faultline/foreign.h).
//
// The UffdSpace is owned here until the loop takes it into its spaces
// (adopt), and again after the process exits, so that `space` stays valid
// for as long as anyone holds the link: a region never points at a freed
// space. The descriptor closes when the last holder lets go.
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "uffd_space.h"
#include "unique_fd.h"

namespace faultline::detail {

struct ForeignLink {
  ForeignLink(std::unique_ptr<UffdSpace> s, UniqueFd process)
      : pid(s->pid), space(s.get()), pidfd(std::move(process)), held(std::move(s)) {}

  const pid_t pid;
  UffdSpace* const space;

  // ---- Loop thread only (after adopt) ----
  UniqueFd pidfd;                   // readable once the process has exited
  std::unique_ptr<UffdSpace> held;  // before adopt and after the exit; the engine's in between
  std::vector<uintptr_t> orphans;   // faults (page addresses) no region covered yet
  bool failed = false;              // ForeignSpace::fail(): everything unserved is poisoned

  // ---- Shared ----
  std::mutex mu;
  std::condition_variable exited_cv;
  bool exited = false;  // guarded by mu
};

}  // namespace faultline::detail

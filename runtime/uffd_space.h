// SPDX-License-Identifier: Apache-2.0
// One userfaultfd as the fault loop serves it: the descriptor and its
// features, the address space it belongs to, the regions registered on it
// by address, and the wakes and event counts of the current pass.
//
// A runtime serves its own process's userfaultfd, and may serve others (a
// VMM's, a forked child's): each is a UffdSpace, polled by the same loop.
// Addresses mean something only within their space, so everything keyed by
// address (regions, wakes) lives here, never in the engine.
//
// Loop thread only, except `uffd`, which is fixed after creation: other
// threads (the evictor, write-back, Region::close) issue ioctls on its fd.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "uffd.h"

namespace faultline::detail {

struct RegionState;

struct UffdSpace {
  // `pid` of a forked child: the kernel's fork message does not name the
  // child, only its new userfaultfd.
  static constexpr pid_t kForkedChild = -1;

  explicit UffdSpace(Uffd u, pid_t owner = 0) : uffd(std::move(u)), pid(owner) {}

  int fd() const { return uffd.fd.get(); }
  bool local() const { return pid == 0; }
  // The region holding `addr`, or null.
  RegionState* region_at(uintptr_t addr) const;

  const Uffd uffd;
  const pid_t pid;  // 0: this process
  std::map<uintptr_t, RegionState*> regions;  // by base address
  // Ranges whose waiters are woken at the end of the pass (flush_wakes).
  std::vector<std::pair<uintptr_t, uint64_t>> wakes;
  // Events read, by kind; `unhandled` counts messages the loop has no
  // handler for (each is also logged): never silently dropped.
  struct {
    uint64_t faults = 0, removes = 0, unmaps = 0, remaps = 0, forks = 0, unhandled = 0;
  } events;
  // Regions the space owns, not an application's Region handle: a forked
  // child's copies (uffd_events.cc). Freed with the space.
  std::vector<std::shared_ptr<RegionState>> owned;
  bool forked_child() const { return pid == kForkedChild; }
  bool gone = false;  // the process exited: its regions are being detached
};

}  // namespace faultline::detail

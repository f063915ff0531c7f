// SPDX-License-Identifier: Apache-2.0
// A Runtime serves page faults for the regions mapped through it.
//
// It owns one fault-handling thread: an epoll loop over a userfaultfd, an
// eventfd for control and the completion fds of the backends. An idle runtime
// sleeps in epoll_wait and uses no CPU.
//
// Lifetime: regions keep their runtime's thread alive. Destroying the Runtime
// object while regions still exist is allowed; the thread stops when the last
// of them is destroyed, so no access to a live region is ever left unserved.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "faultline/backend.h"
#include "faultline/foreign.h"
#include "faultline/options.h"
#include "faultline/region.h"
#include "faultline/stats.h"

namespace faultline {

class Runtime;

namespace detail {
class Engine;
class StatsWriter;
struct EngineTestOptions;
// A Runtime with the switches that test its fallback paths
// (runtime/test_options.h, a private header: for the tests and the bench).
Runtime make_runtime(const RuntimeOptions& options, const EngineTestOptions& test);
}  // namespace detail

// How the userfaultfd was opened, and what the kernel offers.
struct UffdMode {
  bool via_dev_userfaultfd = false;  // /dev/userfaultfd rather than the syscall
  // Only user-mode faults are handled: a kernel access to an unfilled page
  // (read(2) into the region, write(2) from it, io_uring on it) fails with
  // EFAULT instead of waiting for the page. Happens without privilege.
  bool user_mode_only = false;
  bool poison = false;  // UFFDIO_POISON available (SIGBUS for unservable pages)
  // UFFD_FEATURE_WP_ASYNC enabled (6.7+): dirty tracking and write-back
  // regions (RegionOptions::track_dirty, write_back) are possible.
  bool wp_async = false;
  // UFFD_FEATURE_MOVE enabled (6.8+): write-back regions can be evicted
  // under a memory budget (pages are taken out atomically, then written).
  bool move = false;
  // UFFD_FEATURE_MINOR_SHMEM enabled (5.13+): shared-memory regions
  // (RegionOptions::shared_memory) are possible.
  bool minor_shmem = false;
  // The events enabled (docs/design.md, "Events"). REMOVE: MADV_DONTNEED or
  // MADV_REMOVE on a region; its pages read zeros afterwards. UNMAP: munmap
  // of a region's range stops its service. REMAP: a region moved by mremap
  // is followed. FORK: a forked child's copy of every region is served too,
  // on the child's own userfaultfd (needs CAP_SYS_PTRACE; without it
  // regions are not inherited, MADV_DONTFORK, and a child touching one gets
  // SIGSEGV).
  bool event_remove = false, event_unmap = false, event_remap = false, event_fork = false;
  uint64_t features = 0;  // UFFDIO_API features the kernel offers
  uint64_t enabled = 0;   // those enabled on the runtime's userfaultfd

  std::string describe() const;
};

class Runtime {
 public:
  // Opens the userfaultfd and starts the fault thread. Throws Error if
  // userfaultfd is unavailable (the message says why: privilege, seccomp...).
  explicit Runtime(const RuntimeOptions& options = {});
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Reserves address space for `backend` (see RegionOptions) and registers
  // it. Nothing is read until the memory is touched. Throws Error on invalid
  // options, naming the field.
  //
  // fork(): with UffdMode::event_fork the child inherits each region, with
  // the pages present at the fork, and this process's fault thread serves
  // the rest of the child's copy until the child exits or execs. The child
  // must not use this Runtime or its Regions (its copy has no fault
  // thread); to map more, it makes a Runtime of its own. Without the event
  // the range is not inherited (MADV_DONTFORK): touching it in the child
  // raises SIGSEGV, at once and every time.
  //
  // The caller must not mremap() a region: the moved range is no longer
  // served and reads zeros where nothing was loaded (docs/design.md, Known
  // limits).
  Region map(std::shared_ptr<Backend> backend, const RegionOptions& options = {});

  // Another process's memory (faultline/foreign.h, docs/firecracker.md).
  //
  // Takes ownership of `uffd`, a userfaultfd that process `pid` created,
  // called UFFDIO_API on and registered its memory with (MISSING mode),
  // and serves it from now on (it is made non-blocking: the flag is shared
  // with the creator's descriptor). Throws Error (closing `uffd`) if it is
  // not a userfaultfd, pid is not a live process, or pidfd_open(2) is not
  // available. Faults in it that no region covers wait until one does
  // (map_foreign) or ForeignSpace::fail().
  ForeignSpace adopt(int uffd, pid_t pid);
  // Serves [address, address + length) of `space`'s process from `backend`
  // (RegionOptions.offset into it; options.length 0 or equal to `length`).
  // address and length must be multiples of 4096 and the range registered
  // with that uffd by its owner; it must not overlap another region of the
  // space. The returned Region's data() is null (the memory is not ours);
  // address() is where it lies in that process. Destroying the Region stops
  // serving it but leaves the range registered: faults there then wait, as
  // outside every region. Options that would touch the memory from this
  // process are refused with an Error naming them: budget (here and in
  // RuntimeOptions), track_dirty, write_back, writable (the owner decides
  // the protection).
  Region map_foreign(const ForeignSpace& space, uintptr_t address, uint64_t length, std::shared_ptr<Backend> backend,
                     const RegionOptions& options = {});

  const UffdMode& mode() const;
  // Totals over every region this runtime has served, including destroyed ones.
  StatsSnapshot stats() const;

 private:
  friend Runtime detail::make_runtime(const RuntimeOptions&, const detail::EngineTestOptions&);
  Runtime(const RuntimeOptions& options, const detail::EngineTestOptions& test);

  std::shared_ptr<detail::Engine> engine_;
  std::unique_ptr<detail::StatsWriter> stats_writer_;  // RuntimeOptions::stats_file; stops before the engine
};

}  // namespace faultline

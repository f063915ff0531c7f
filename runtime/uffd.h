// SPDX-License-Identifier: Apache-2.0
// Thin wrappers over the userfaultfd descriptor and its ioctls. They know the
// kernel's partial-progress rules so the fault loop does not have to.
#pragma once

#include <cstdint>

#include "faultline/runtime.h"
#include "unique_fd.h"

namespace faultline::detail {

constexpr uint64_t kPageSize = 4096;
constexpr uint64_t kHugePageSize = 2 * 1024 * 1024;  // RegionOptions.page_size of hugetlb memory

struct Uffd {
  UniqueFd fd;
  UffdMode mode;
};

// Opens a userfaultfd: /dev/userfaultfd first, then the syscall, then the
// syscall with UFFD_USER_MODE_ONLY. Probes features on a throwaway
// descriptor and enables the REMOVE, UNMAP and REMAP events and POISON
// where offered, and FORK too with `fork_event` where the caller may have it
// (it needs CAP_SYS_PTRACE; without, the uffd has no FORK). UffdMode says
// which are on. Throws Error explaining why userfaultfd is unavailable.
Uffd open_uffd(bool fork_event);

// Opens a userfaultfd the way open_uffd() does, with the features in
// `wanted` that the kernel offers (and no others). *offered gets what the
// kernel offers. For users with their own needs (a live snapshot's
// synchronous write-protect). Throws Error.
UniqueFd open_uffd_features(uint64_t wanted, uint64_t* offered);

// Registers [addr, addr + len) in MISSING mode, and in WP mode too when
// `track_writes` (dirty tracking: needs UffdMode::wp_async), and in MINOR
// mode too when `minor` (shared memory: needs UffdMode::minor_shmem).
// Throws Error.
void uffd_register(int uffd, void* addr, uint64_t len, bool track_writes = false, bool minor = false);
// Unregisters; wakes every thread waiting on the range. Errors are ignored:
// the range may already be partly unmapped by the application.
void uffd_unregister(int uffd, void* addr, uint64_t len);

// Outcome of placing pages with COPY, ZEROPAGE, CONTINUE or POISON.
struct PlaceResult {
  uint64_t done = 0;        // bytes handled (placed, or already present)
  int error = 0;            // 0 when done == len; EAGAIN: retry the rest
                            // later; ENOENT/ESRCH: range or process gone
  bool hit_existing = false;  // some pages were already present (EEXIST):
                              // their waiters need an explicit wake
};

// kContinue maps pages already in a shared memory file's page cache.
enum class Place { kCopy, kZero, kContinue, kPoison };

// Places pages over [dst, dst + len), skipping pages that already exist and
// continuing after partial progress. `src` is used for kCopy only.
// `write_protect` (kCopy only) installs the pages write-protected
// (UFFDIO_COPY_MODE_WP), so that the application's first write to them is
// seen by dirty tracking. `page` is the memory's page size: dst and len
// are multiples of it (hugetlb memory takes whole 2 MiB pages, and no
// kZero).
PlaceResult uffd_place(int uffd, Place how, uintptr_t dst, const void* src, uint64_t len, bool wake,
                       bool write_protect = false, uint64_t page = kPageSize);

// UFFDIO_POISON over [addr, addr + len) of memory whose page size is not
// known (a range of another process): 4 KiB pages, or whole 2 MiB ones
// where the kernel says EINVAL (hugetlb memory), the range then widened to
// the huge pages it touches. Skips pages already present.
PlaceResult uffd_poison_any(int uffd, uintptr_t addr, uint64_t len);

// UFFDIO_MOVE of [src, src + len) to dst (both in ranges registered with
// this uffd; holes in src are skipped): atomic per page under the page-table
// lock, so a concurrent writer's store is either moved or faults afterwards.
// Returns 0 or an errno (after partial progress too: the caller checks which
// pages moved).
int uffd_move(int uffd, uintptr_t dst, uintptr_t src, uint64_t len);

// Whether the address space the userfaultfd serves is gone (its process
// exited or exec'd): the kernel sends no message for that, so this asks,
// with an UNREGISTER of the lowest page a process may map (no region is
// there, so it changes nothing), which fails with ENOMEM once it is gone.
bool uffd_mm_gone(int uffd);

// Wakes threads waiting on [addr, addr + len). Errors are ignored.
void uffd_wake(int uffd, uintptr_t addr, uint64_t len);

}  // namespace faultline::detail

// SPDX-License-Identifier: Apache-2.0
// Serving another process's memory: a VMM (Firecracker, for one) creates a
// userfaultfd, registers its guest memory on it and hands the descriptor
// over a Unix socket (SCM_RIGHTS). Runtime::adopt() takes that descriptor
// into the runtime's fault loop as a ForeignSpace; Runtime::map_foreign()
// then serves ranges of that process's memory from a backend, with the
// same fill sizes, read-ahead, working sets, drain, statistics and SIGBUS
// on failure as a local region (docs/firecracker.md).
//
// The runtime never dereferences foreign memory: every page goes in by an
// ioctl on the adopted descriptor (UFFDIO_COPY from a staging buffer in this
// process, UFFDIO_ZEROPAGE, UFFDIO_POISON).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

namespace faultline {

class Runtime;

namespace detail {
class Engine;
struct ForeignLink;
}  // namespace detail

// A range of another process's address space.
struct ForeignRange {
  uintptr_t address = 0;  // multiple of 4096
  uint64_t length = 0;    // multiple of 4096
};

// A userfaultfd of another process, adopted by a Runtime (Runtime::adopt).
// Copyable: copies name the same space. The space is served while its
// process lives; when the process exits (seen through a pidfd: an orphaned
// userfaultfd reports nothing by itself) its regions are dropped and
// exited() turns true. Keeping a handle (or one of its regions) keeps the
// descriptor open, and the runtime alive.
class ForeignSpace {
 public:
  ForeignSpace() = default;

  pid_t pid() const;
  // The process has exited: its regions are no longer served.
  bool exited() const;
  // Waits until the process exits or `timeout` passes; returns exited().
  bool wait_exit(std::chrono::milliseconds timeout) const;
  // Gives up on the process: every page of its regions not placed yet is
  // poisoned (UFFDIO_POISON: the access gets SIGBUS), threads waiting on
  // them are woken into that SIGBUS, and faults outside every region are
  // poisoned too, as is every range in `also` (registered ranges no region
  // was mapped on yet: a handler that could not make sense of its
  // instructions still knows where the memory is). For a handler that
  // cannot go on: the guest fails instead of hanging, also on pages it
  // touches after this process has exited. Returns once done. The regions
  // stay mapped (their stats readable); nothing more is loaded into them.
  void fail(const std::vector<ForeignRange>& also = {});

  explicit operator bool() const { return link_ != nullptr; }

 private:
  friend class Runtime;
  ForeignSpace(std::shared_ptr<detail::Engine> engine, std::shared_ptr<detail::ForeignLink> link);

  std::shared_ptr<detail::Engine> engine_;
  std::shared_ptr<detail::ForeignLink> link_;
};

}  // namespace faultline

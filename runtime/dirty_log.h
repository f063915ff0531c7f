// SPDX-License-Identifier: Apache-2.0
// DirtyLog: the kernel side of dirty tracking for one region (see
// faultline/dirty_log.h for the idea). It owns a descriptor of
// /proc/self/pagemap and runs the atomic get-and-clear PAGEMAP_SCAN over the
// region, skipping chunks the fault loop poisoned (a poisoned page must never
// be read: it raises SIGBUS).
#pragma once

#include <cstdint>
#include <mutex>
#include <set>
#include <vector>

#include "thread_checks.h"
#include "unique_fd.h"

namespace faultline::detail {

// A run of pages, as page indices from the region's start.
struct PageRun {
  uint64_t first = 0;
  uint64_t count = 0;
  uint64_t end() const { return first + count; }
};

// Merges two sorted lists of runs into one sorted list of disjoint runs.
std::vector<PageRun> merge_runs(const std::vector<PageRun>& a, const std::vector<PageRun>& b);

class DirtyLog {
 public:
  // Opens /proc/self/pagemap.
  // Throws Error.
  DirtyLog(uintptr_t base, uint64_t map_length);
  DirtyLog(const DirtyLog&) = delete;
  DirtyLog& operator=(const DirtyLog&) = delete;

  // The pages written since the previous take() (or since the region was
  // mapped), sorted, and write-protected again in the same ioctl. One
  // caller at a time is served (a mutex), since each call consumes what it
  // returns. Throws Error if the kernel refuses the scan.
  std::vector<PageRun> take();

  // The fault loop poisoned [offset, offset + length): never scan or read it.
  void mark_poisoned(uint64_t offset, uint64_t length);
  // The parts of `run` that are not poisoned.
  std::vector<PageRun> readable(PageRun run) const;

 private:
  void scan(uint64_t first_page, uint64_t end_page, std::vector<PageRun>& out);

  const uintptr_t base_;
  const uint64_t pages_;
  UniqueFd pagemap_;
  Mutex take_mu_;  // one take() at a time
  mutable Mutex poison_mu_;
  std::set<std::pair<uint64_t, uint64_t>> poisoned_ GUARDED_BY(poison_mu_);  // [first page, end page)
};

}  // namespace faultline::detail

// SPDX-License-Identifier: Apache-2.0
#include "dirty_log.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "faultline/error.h"
#include "uffd.h"

// PAGEMAP_SCAN (Linux 6.7) is newer than the distro headers.
#ifndef PAGEMAP_SCAN
#include <linux/types.h>
#define PAGE_IS_WRITTEN (1 << 1)
#define PAGE_IS_PRESENT (1 << 3)
#define PAGE_IS_SWAPPED (1 << 4)
#define PM_SCAN_WP_MATCHING (1 << 0)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)
struct page_region {
  __u64 start;
  __u64 end;
  __u64 categories;
};
struct pm_scan_arg {
  __u64 size;
  __u64 flags;
  __u64 start;
  __u64 end;
  __u64 walk_end;
  __u64 vec;
  __u64 vec_len;
  __u64 max_pages;
  __u64 category_inverted;
  __u64 category_mask;
  __u64 category_anyof_mask;
  __u64 return_mask;
};
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#endif

namespace faultline::detail {

std::vector<PageRun> merge_runs(const std::vector<PageRun>& a, const std::vector<PageRun>& b) {
  std::vector<PageRun> all;
  all.reserve(a.size() + b.size());
  std::merge(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(all),
             [](const PageRun& x, const PageRun& y) { return x.first < y.first; });
  std::vector<PageRun> out;
  for (const PageRun& r : all) {
    if (!out.empty() && r.first <= out.back().end())
      out.back().count = std::max(out.back().end(), r.end()) - out.back().first;
    else
      out.push_back(r);
  }
  return out;
}

DirtyLog::DirtyLog(uintptr_t base, uint64_t map_length) : base_(base), pages_(map_length / kPageSize) {
  pagemap_ = UniqueFd(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
  if (!pagemap_) throw_errno("dirty tracking: cannot open /proc/self/pagemap", errno);
}

void DirtyLog::mark_poisoned(uint64_t offset, uint64_t length) {
  if (length == 0) return;
  MutexLock lock(poison_mu_);
  poisoned_.insert({offset / kPageSize, (offset + length + kPageSize - 1) / kPageSize});
}

std::vector<PageRun> DirtyLog::readable(PageRun run) const {
  std::vector<PageRun> out;
  uint64_t at = run.first;
  {
    MutexLock lock(poison_mu_);
    for (const auto& [lo, hi] : poisoned_) {
      if (hi <= at) continue;
      if (lo >= run.end()) break;
      if (lo > at) out.push_back({at, lo - at});
      at = hi;
    }
  }
  if (at < run.end()) out.push_back({at, run.end() - at});
  return out;
}

std::vector<PageRun> DirtyLog::take() {
  MutexLock lock(take_mu_);
  std::vector<std::pair<uint64_t, uint64_t>> holes;
  {
    MutexLock plock(poison_mu_);
    holes.assign(poisoned_.begin(), poisoned_.end());
  }
  std::vector<PageRun> out;
  // Poisoned pages are skipped: reading them would raise SIGBUS, and a
  // range replaced by the poisoning fallback is no longer write-tracked.
  uint64_t at = 0;
  for (const auto& [lo, hi] : holes) {
    if (lo > at) scan(at, std::min(lo, pages_), out);
    at = std::max(at, hi);
  }
  if (at < pages_) scan(at, pages_, out);
  return out;
}

void DirtyLog::scan(uint64_t first_page, uint64_t end_page, std::vector<PageRun>& out) {
  page_region vec[256];
  pm_scan_arg arg{};
  arg.size = sizeof arg;
  // Written pages are reported and write-protected again atomically, under
  // the page-table lock: a scan followed by a separate UFFDIO_WRITEPROTECT
  // would lose the writes landing in between.
  arg.flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC;
  arg.start = base_ + first_page * kPageSize;
  arg.end = base_ + end_page * kPageSize;
  arg.vec = reinterpret_cast<uintptr_t>(vec);
  arg.vec_len = std::size(vec);
  arg.category_mask = PAGE_IS_WRITTEN;
  // Only pages with data: this kernel reports a page never installed (or
  // dropped) as written too, and arming it would allocate page tables over
  // the whole of a sparse region. Nothing there needs writing back.
  arg.category_anyof_mask = PAGE_IS_PRESENT | PAGE_IS_SWAPPED;
  arg.return_mask = PAGE_IS_WRITTEN;
  while (arg.start < arg.end) {
    int n = ioctl(pagemap_.get(), PAGEMAP_SCAN, &arg);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("dirty tracking: PAGEMAP_SCAN of " + std::to_string((arg.end - arg.start) / kPageSize) +
                      " pages (needs Linux 6.7+ and a region registered for write-protection)",
                  errno);
    }
    for (int i = 0; i < n; ++i) {
      PageRun run{(vec[i].start - base_) / kPageSize, (vec[i].end - vec[i].start) / kPageSize};
      if (!out.empty() && out.back().end() == run.first)
        out.back().count += run.count;
      else
        out.push_back(run);
    }
    // The walk stops early when vec is full; go on from where it stopped
    // (the pages after it were neither reported nor re-protected).
    if (arg.walk_end <= arg.start || arg.walk_end >= arg.end) break;
    arg.start = arg.walk_end;
  }
}

}  // namespace faultline::detail

// SPDX-License-Identifier: Apache-2.0
// Dirty tracking: which pages of a region the application wrote since a
// point in time (incremental snapshots, live migration, write-back).
//
// A region mapped with RegionOptions::track_dirty (or write_back) is
// registered for userfaultfd write-protection in asynchronous mode
// (UFFD_FEATURE_WP_ASYNC, Linux 6.7+), and every page the runtime installs is
// installed write-protected. The application's first write to a page after a
// point in time lifts the protection in the kernel, without a fault message
// and without stopping the writer (~1-2 us). Region::take_dirty() then asks
// the kernel, with one PAGEMAP_SCAN ioctl per run of pages, for the written
// pages and write-protects them again in the same step, under the page-table
// lock: a write that lands while the scan runs is either reported now or
// lifts the new protection and is reported next time. No write is missed.
//
// What counts as written: any store by the application, or by the kernel on
// its behalf (read(2) into the region). Not counted: the runtime's own
// installs, and stores by devices into pinned memory (registered io_uring
// buffers, RDMA), which the page tables never see. A page dropped with
// MADV_DONTNEED and loaded again reads as not written.
#pragma once

#include <cstdint>

namespace faultline {

// A run of written pages: region byte offsets, multiples of 4096 (the last
// run may end at the region's length rather than a page boundary).
struct DirtyRange {
  uint64_t offset = 0;
  uint64_t length = 0;
};

}  // namespace faultline

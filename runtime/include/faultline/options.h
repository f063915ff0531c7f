// SPDX-License-Identifier: Apache-2.0
// Options for a Runtime and for each Region. Plain data; validated when the
// runtime or region is created, with an Error naming the field and value.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>

#include "faultline/log.h"

namespace faultline {

// A cap on resident memory, for one region or for all regions of a runtime.
// Above high * bytes the runtime evicts whole fill chunks, off the fault
// path, until low * bytes remain; a placement that would exceed `bytes`
// waits for those drops (see docs/memory-budget.md).
struct MemoryBudget {
  uint64_t bytes = 0;  // 0: no budget
  double high = 0.95;  // fraction of bytes that starts eviction; (0, 1]
  double low = 0.85;   // fraction of bytes eviction brings it back to; (0, high]
};

// Which resident chunk a budget evicts first.
enum class EvictionPolicy {
  // ARC-like: chunks placed once are kept apart from chunks that faulted
  // again after an eviction (remembered in ghost lists), and the split
  // between the two adapts to which ghosts fault back. Resists scans.
  kAdaptive,
  // First in, first out (UMap's policy): for comparison.
  kFifo,
};

struct RegionOptions {
  // Byte offset in the backend where the region starts. Must be below the
  // backend's size and a multiple of the backend's alignment().
  uint64_t offset = 0;
  // Length of the region in bytes; 0 means "to the end of the backend".
  // It may exceed what the backend holds: the rest reads as zeros.
  uint64_t length = 0;
  // Bytes installed per fault: a power of two from 4 KiB to 2 MiB.
  uint32_t fill_size = 64 * 1024;
  // The memory's page size: 4096, or 2 MiB (2097152) for huge pages. A
  // local region is then mapped with MAP_HUGETLB from the pages the machine
  // has reserved (sysctl vm.nr_hugepages; too few free is an error naming
  // them); a foreign one is a VMM's hugetlbfs guest memory. Pages are
  // placed whole, so fill_size must equal page_size, and a budget,
  // track_dirty and write_back are refused (docs/design.md, "Huge pages").
  uint32_t page_size = 4096;
  // Shared memory, as VMMs with shared guest memory use: the region is a
  // memfd that other processes may map too (Region::shared_memory_fd()).
  // The runtime fills its page cache with pwrite and resolves the fault
  // with UFFDIO_CONTINUE (docs/design.md says why not through a second
  // mapping). Writes land in the memfd,
  // shared, never in the backend; MADV_DONTNEED drops only the mapping (the
  // bytes stay), MADV_REMOVE punches them out (zeros). Another process's
  // mapping is not served: it sees what was placed and zeros elsewhere,
  // and what it writes to a page not placed yet is overwritten when the
  // runtime places it (drain the region before sharing it). Not
  // inherited by fork() (MADV_DONTFORK). Needs UFFD_FEATURE_MINOR_SHMEM
  // (UffdMode::minor_shmem); refused with a budget, track_dirty,
  // write_back, reload_removed and 2 MiB pages.
  bool shared_memory = false;
  // Sequential-stream detection: after two faults in order, the runtime reads
  // ahead of the stream, doubling the window on each further sequential
  // fault up to readahead_max bytes (like the kernel's readahead).
  bool readahead = true;
  uint64_t readahead_max = 4 * 1024 * 1024;
  // Writable regions keep writes in memory only (private copy-on-write
  // semantics: the backend is never written) unless write_back is set.
  // Read-only ones get SIGSEGV on a write, as a PROT_READ mapping does.
  bool writable = false;
  // Dirty tracking (faultline/dirty_log.h): Region::take_dirty() reports the
  // pages written since its previous call. Needs writable and
  // UffdMode::wp_async (Linux 6.7+). Costs ~1-2 us on the first write to each
  // page after each take_dirty().
  bool track_dirty = false;
  // Write-back (like a MAP_SHARED file mapping with msync): the pages the
  // application writes go back to the backend on Region::flush(), on
  // Region::close() and before the runtime drops them to stay within a
  // memory budget. Needs writable, a backend whose writable() is true (a
  // FileBackend opened with FileBackendOptions::writable), a region that
  // lies within the backend (length <= size - offset), and
  // UffdMode::wp_async. Implies track_dirty; take_dirty() is then reserved
  // for the runtime.
  bool write_back = false;
  // Record which chunks the application touches, in first-touch order, for
  // Region::touched_chunks() (a working set to prefetch on the next run).
  // Read-ahead is turned off for such a region: it would load chunks
  // without a fault and hide them from the record.
  bool record_touches = false;
  // What pages the application drops with madvise(MADV_DONTNEED) or
  // MADV_REMOVE (a balloon) read afterwards: zeros, as anonymous memory
  // does and a VM's guest expects (false, the default: never the
  // backend's bytes again), or the backend's bytes loaded anew, as a
  // private file mapping does (true). Write-back regions always reload.
  bool reload_removed = false;
  // Writable regions: chunks of zeros are placed as pages of their own
  // (UFFDIO_COPY from zeros) rather than as the shared zero page
  // (UFFDIO_ZEROPAGE), so the first write to each page does not fault
  // again (a copy-on-write, with a TLB flush of every CPU the process runs
  // on). For regions whose zero chunks will be written (a migration's
  // destination); zero chunks never written then cost memory.
  bool zeros_as_pages = false;
  // Resident memory of this region. bytes must be 0 or at least 4 fills.
  // Writable (private) regions never drop a chunk: what was written exists
  // nowhere else, so their budget is a target they may exceed.
  // Read-ahead is capped at a budget's bytes / 8 (this one's or the runtime's,
  // the smaller), so a stream cannot evict the chunks it is about to read.
  MemoryBudget budget;
  EvictionPolicy eviction = EvictionPolicy::kAdaptive;
};

struct RuntimeOptions {
  // Staging memory for reads in flight, shared by all regions. It bounds the
  // bytes in flight and is the runtime's main fixed memory cost.
  size_t staging_bytes = 16 * 1024 * 1024;
  // How often a failed or short backend read is retried before its pages are
  // poisoned (SIGBUS for the access).
  int read_retries = 3;
  // Resident memory of all regions together (staging not included).
  // bytes must be 0 or at least 64 KiB, and at least 4 fills of every
  // region mapped. Each region evicts with its own RegionOptions::eviction.
  MemoryBudget budget;
  // Where warnings go (faultline/log.h); empty: stderr.
  LogSink log;
  // For long jobs: the runtime's stats JSON (StatsSnapshot::to_json, all
  // regions) is written to this file every stats_interval, replaced
  // crash-safely (a reader sees a whole file), and a last time when the
  // runtime is destroyed. A failed write is logged and retried. Empty: never.
  std::string stats_file;
  std::chrono::milliseconds stats_interval{1000};  // 10 ms .. 1 day
  // A forked child's copy of the regions is served where
  // UffdMode::event_fork (with CAP_SYS_PTRACE); without it the first fork()
  // while regions exist logs a warning (a child touching one gets SIGSEGV). false: regions are MADV_DONTFORK and forks
  // are not reported, for a caller that handles fork() itself (the preload
  // library maps the files for real in its children).
  bool serve_forks = true;
};

}  // namespace faultline

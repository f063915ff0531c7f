// SPDX-License-Identifier: Apache-2.0
// WriteBack: the write-back state of one write-back region
// (RegionOptions::write_back): the pages collected from the dirty log but
// not yet durable, and the procedure that makes them durable.
//
// Every pass first takes the dirty log (get-and-clear, dirty_log.h) and
// only then copies pages out of the region: a page written while its copy
// is being written back lifts the fresh write-protection and is caught by
// the next pass. Pages stay in `pending_` until the backend has written them
// and sync() has succeeded; after any failure they are written again next
// time, and the region keeps them resident meanwhile.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "dirty_log.h"
#include "faultline/backend.h"
#include "faultline/log.h"
#include "thread_checks.h"

namespace faultline::detail {

// What write-back needs of its region: a narrow view of the parts fixed at
// map(), so the threads that write back (application threads in flush(),
// the evictor in drop_chunk()) never touch the fault loop's state.
struct WriteBackTarget {
  Backend* backend = nullptr;
  uint64_t backend_offset = 0;  // RegionOptions::offset
  std::byte* base = nullptr;    // the region's memory
  uint64_t length = 0;          // the region's length
  DirtyLog* dirty = nullptr;    // the region's dirty log
  LogSink log;                  // RuntimeOptions::log
};

class WriteBack {
 public:
  // `uffd` is the runtime's userfaultfd (for eviction, see drop_chunk()).
  // The target must outlive this object (both belong to one region).
  WriteBack(int uffd, const WriteBackTarget& target) : uffd_(uffd), target_(target) {}
  ~WriteBack();
  WriteBack(const WriteBack&) = delete;
  WriteBack& operator=(const WriteBack&) = delete;

  // Writes back every page written before the call and syncs the backend
  // (msync MS_SYNC). Throws Error naming the backend, the offset and the
  // errno if a write or the sync fails; nothing is forgotten then.
  void flush();

  // Bytes collected but not yet durable (after a failed flush).
  uint64_t pending_bytes() const;

  const LogSink& log() const { return target_.log; }

  // Eviction under a memory budget (the evictor thread): drops the chunk at
  // [addr, addr + length) without losing a write. Its pages are taken out of
  // the region atomically (UFFDIO_MOVE into scratch memory: a racing store
  // either moved with its page or faults and waits), compared with the
  // backend's bytes (read_data), and the pages that differ are written.
  // Returns false, with every page back in place, if a move or a write
  // failed: the chunk stays resident and its data is flushed later.
  bool drop_chunk(uintptr_t addr, uint64_t length);

 private:
  // Writes pending_ to the backend; returns the failure, if any.
  WriteResult write_pending() REQUIRES(mu_);

  bool move_back(uintptr_t addr, uint64_t length);

  const int uffd_;
  const WriteBackTarget target_;
  mutable Mutex mu_;  // one pass (flush or drop) at a time; guards the rest
  std::vector<PageRun> pending_ GUARDED_BY(mu_);
  bool unsynced_ GUARDED_BY(mu_) = false;  // drops wrote pages that no sync has covered yet
  Mapping scratch_;        // registered with the uffd: UFFDIO_MOVE's destination
  std::vector<std::byte> compare_;
  std::unique_ptr<std::byte[], void (*)(void*)> buffer_{nullptr, nullptr};
};

}  // namespace faultline::detail

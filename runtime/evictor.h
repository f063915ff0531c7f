// SPDX-License-Identifier: Apache-2.0
// The thread that drops evicted chunks (faultline-evict in ps -L).
//
// The fault loop cannot drop them itself: MADV_DONTNEED on a registered range
// raises a REMOVE event and the kernel waits until the loop has read it, so
// the loop would wait for itself. The evictor moves the pages out with
// UFFDIO_MOVE (no event) or calls madvise, and reports each finished group
// of drops through `done`; the loop keeps reading events in the meantime. The caller keeps every range mapped until its drop is
// reported (regions count drops as work in flight).
#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "faultline/log.h"
#include "thread_checks.h"

namespace faultline::detail {

struct RegionState;
class WriteBack;

struct Drop {
  RegionState* region = nullptr;  // the loop's tag: the evictor never looks inside
  WriteBack* writeback = nullptr;  // the region's, for write-back regions
  uint64_t chunk = 0;
  uintptr_t addr = 0;
  uint64_t length = 0;
  // Set by the evictor: a write-back chunk that could not be written (its
  // pages are back in place; it stays resident).
  bool kept = false;
};

class Evictor {
 public:
  // `done` runs on the evictor thread with drops whose pages are gone.
  // `move`: the uffd has UFFDIO_MOVE (see zap_runs()).
  Evictor(std::function<void(std::vector<Drop>)> done, int uffd, bool move, LogSink log);
  ~Evictor();  // drops what is queued, then stops
  Evictor(const Evictor&) = delete;
  Evictor& operator=(const Evictor&) = delete;

  void submit(std::vector<Drop> drops);

 private:
  void run();
  void zap_runs();

  std::function<void(std::vector<Drop>)> done_;
  const int uffd_;
  const bool move_;
  const LogSink log_;
  std::vector<std::pair<uintptr_t, uint64_t>> runs_;  // evictor thread: address ranges to zap
  Mutex mu_;
  CondVar cv_;
  std::vector<Drop> queue_ GUARDED_BY(mu_);
  bool stop_ GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace faultline::detail

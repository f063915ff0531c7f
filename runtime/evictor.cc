// SPDX-License-Identifier: Apache-2.0
#include "evictor.h"

#include <errno.h>
#include <pthread.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "faultline/error.h"
#include "log.h"
#include "uffd.h"
#include "writeback.h"

namespace faultline::detail {

namespace {
// Drops reported at a time: placements held for these chunks, and for room
// under the budget, go on without waiting for the whole batch.
constexpr size_t kReportEvery = 64;
}  // namespace

Evictor::Evictor(std::function<void(std::vector<Drop>)> done, int uffd, bool move, LogSink log)
    : done_(std::move(done)), uffd_(uffd), move_(move), log_(std::move(log)) {
  thread_ = std::thread([this] { run(); });
}

Evictor::~Evictor() {
  {
    MutexLock lock(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  thread_.join();
}

void Evictor::submit(std::vector<Drop> drops) {
  {
    MutexLock lock(mu_);
    queue_.insert(queue_.end(), drops.begin(), drops.end());
  }
  cv_.notify_one();
}

void Evictor::run() {
  pthread_setname_np(pthread_self(), "faultline-evict");
  std::vector<Drop> work;
  for (;;) {
    {
      MutexLock lock(mu_);
      while (!stop_ && queue_.empty()) cv_.wait(mu_);
      if (queue_.empty()) return;  // stop_, nothing left
      work.swap(queue_);
    }
    // In address order, adjacent chunks share one madvise (and one REMOVE).
    std::sort(work.begin(), work.end(), [](const Drop& a, const Drop& b) { return a.addr < b.addr; });
    // Chunks of write-back regions are written back as they are dropped
    // (writeback.cc); the rest are zapped below.
    auto write_back = [](const Drop& d) { return d.writeback != nullptr; };
    for (Drop& d : work)
      if (write_back(d)) d.kept = !d.writeback->drop_chunk(d.addr, d.length);
    for (size_t i = 0; i < work.size();) {
      size_t end = std::min(work.size(), i + kReportEvery);
      for (size_t j = i; j < end;) {
        if (write_back(work[j])) {
          ++j;
          continue;
        }
        uintptr_t start = work[j].addr, stop = start + work[j].length;
        size_t k = j + 1;
        while (k < end && work[k].addr == stop && !write_back(work[k])) stop += work[k++].length;
        runs_.emplace_back(start, stop - start);
        j = k;
      }
      zap_runs();
      done_(std::vector<Drop>(work.begin() + static_cast<ptrdiff_t>(i), work.begin() + static_cast<ptrdiff_t>(end)));
      i = end;
    }
    work.clear();
  }
}

// With UFFDIO_MOVE the pages go to a scratch range (registered: the ioctl
// wants its destination there), which is unregistered and unmapped
// afterwards: no event for the fault loop to read, so no round trip with it
// per chunk. The chunk's PTEs are empty once moved; a touch faults and the
// loop holds that fault's placement until the drop is reported. Without
// MOVE (or if it fails), MADV_DONTNEED: its REMOVE event makes the kernel
// wait for the loop to read it.
void Evictor::zap_runs() {
  uint64_t total = 0;
  for (auto [addr, len] : runs_) total += len;
  Mapping scratch;
  if (move_ && total > 0) {
    void* p = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p != MAP_FAILED) {
      scratch = Mapping(p, total);
      madvise(p, total, MADV_NOHUGEPAGE);
      try {
        uffd_register(uffd_, p, total);
      } catch (const Error&) {
        scratch.reset();
      }
    }
  }
  uint64_t offset = 0;
  for (auto [addr, len] : runs_) {
    bool moved = scratch.data() &&
                 uffd_move(uffd_, reinterpret_cast<uintptr_t>(scratch.data()) + offset, addr, len) == 0;
    offset += len;
    if (moved) continue;
    if (madvise(reinterpret_cast<void*>(addr), len, MADV_DONTNEED) != 0 && errno != ENOMEM)
      logf(log_, LogLevel::kError, "madvise(MADV_DONTNEED) of %zu bytes at %p failed: %s",
                   static_cast<size_t>(len), reinterpret_cast<void*>(addr), std::strerror(errno));
  }
  if (scratch.data()) uffd_unregister(uffd_, scratch.data(), scratch.size());
  runs_.clear();
}

}  // namespace faultline::detail

#include "evictor.h"

#include <errno.h>
#include <pthread.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "engine.h"

namespace faultline::detail {

namespace {
// Drops reported at a time: placements held for these chunks, and for room
// under the budget, go on without waiting for the whole batch.
constexpr size_t kReportEvery = 64;
}  // namespace

Evictor::Evictor(std::function<void(std::vector<Drop>)> done) : done_(std::move(done)) {
  thread_ = std::thread([this] { run(); });
}

Evictor::~Evictor() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_one();
  thread_.join();
}

void Evictor::submit(std::vector<Drop> drops) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.insert(queue_.end(), drops.begin(), drops.end());
  }
  cv_.notify_one();
}

void Evictor::run() {
  pthread_setname_np(pthread_self(), "faultline-evict");
  std::vector<Drop> work;
  for (;;) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop_, nothing left
      work.swap(queue_);
    }
    // In address order, adjacent chunks share one madvise (and one REMOVE).
    std::sort(work.begin(), work.end(), [](const Drop& a, const Drop& b) { return a.addr < b.addr; });
    // Chunks of write-back regions are written back as they are dropped
    // (writeback.cc); the rest are zapped below.
    auto write_back = [](const Drop& d) { return d.region->writeback != nullptr; };
    for (Drop& d : work)
      if (write_back(d)) d.kept = !d.region->writeback->drop_chunk(*d.region, d.addr, d.length);
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
        if (madvise(reinterpret_cast<void*>(start), stop - start, MADV_DONTNEED) != 0 && errno != ENOMEM)
          std::fprintf(stderr, "faultline: madvise(MADV_DONTNEED) of %zu bytes at %p failed: %s\n",
                       static_cast<size_t>(stop - start), reinterpret_cast<void*>(start), std::strerror(errno));
        j = k;
      }
      done_(std::vector<Drop>(work.begin() + static_cast<ptrdiff_t>(i), work.begin() + static_cast<ptrdiff_t>(end)));
      i = end;
    }
    work.clear();
  }
}

}  // namespace faultline::detail

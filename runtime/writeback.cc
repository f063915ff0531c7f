#include "writeback.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "engine.h"
#include "faultline/error.h"

namespace faultline::detail {

namespace {
// Pages are copied out of the region into this much memory at a time and
// handed to the backend as one batch (its writes may run concurrently).
constexpr uint64_t kBufferBytes = 4 * 1024 * 1024;
}  // namespace

uint64_t WriteBack::pending_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t pages = 0;
  for (const PageRun& r : pending_) pages += r.count;
  return pages * kPageSize;
}

void WriteBack::flush(RegionState& r) {
  std::lock_guard<std::mutex> lock(mu_);
  // Take before copying: see the class comment.
  pending_ = merge_runs(pending_, r.dirty->take());
  if (pending_.empty()) return;
  WriteResult w = write_pending(r);
  if (w.error != 0)
    throw Error("write-back of " + r.backend->name() + ": writing at offset " + std::to_string(w.offset) +
                    " failed: " + std::strerror(w.error) + " (the data stays in memory; flush again)",
                w.error);
  if (int err = r.backend->sync_data(); err != 0)
    throw Error("write-back of " + r.backend->name() + ": sync failed: " + std::strerror(err) +
                    " (the data stays in memory and is written again by the next flush)",
                err);
  pending_.clear();
}

WriteResult WriteBack::write_pending(RegionState& r) {
  if (!buffer_) {
    buffer_ = {static_cast<std::byte*>(std::aligned_alloc(kPageSize, kBufferBytes)), std::free};
    if (!buffer_) return {ENOMEM, r.options.offset};
  }
  const std::byte* base = r.memory.data();
  std::vector<WriteRequest> batch;
  uint64_t used = 0;
  auto send = [&]() -> WriteResult {
    WriteResult w{};
    if (!batch.empty()) w = r.backend->write_data(batch);
    batch.clear();
    used = 0;
    return w;
  };
  auto add = [&](const PageRun& run) -> WriteResult {
    uint64_t at = run.first * kPageSize, end = std::min(run.end() * kPageSize, r.length);
    while (at < end) {
      if (used == kBufferBytes)
        if (WriteResult w = send(); w.error != 0) return w;
      uint64_t n = std::min(end - at, kBufferBytes - used);
      std::memcpy(buffer_.get() + used, base + at, n);
      batch.push_back({r.options.offset + at, static_cast<uint32_t>(n), buffer_.get() + used});
      used += (n + kPageSize - 1) & ~(kPageSize - 1);
      at += n;
    }
    return {};
  };
  for (const PageRun& dirty_run : pending_)
    for (const PageRun& run : r.dirty->readable(dirty_run))  // a poisoned page would raise SIGBUS
      if (WriteResult w = add(run); w.error != 0) return w;
  return send();
}

}  // namespace faultline::detail

// SPDX-License-Identifier: Apache-2.0
#include "writeback.h"

#include <sys/mman.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "faultline/error.h"
#include "log.h"
#include "uffd.h"

namespace faultline::detail {

namespace {
// Pages are copied out of the region into this much memory at a time and
// handed to the backend as one batch (its writes may run concurrently).
constexpr uint64_t kBufferBytes = 4 * 1024 * 1024;
// Copies region memory that application threads may be writing right now
// (that race is the point: a page stored to during its copy is caught by
// the next pass). Word-sized relaxed atomic loads make the race a defined
// one for applications that store atomically, and visible as such to TSan.
void copy_racy(std::byte* dst, const std::byte* src, uint64_t n) {
  uint64_t words = n / 8;
  const auto* s = reinterpret_cast<const uint64_t*>(src);
  auto* d = reinterpret_cast<uint64_t*>(dst);
  for (uint64_t i = 0; i < words; ++i) d[i] = __atomic_load_n(&s[i], __ATOMIC_RELAXED);
  for (uint64_t i = words * 8; i < n; ++i)
    dst[i] = std::byte(__atomic_load_n(reinterpret_cast<const uint8_t*>(src + i), __ATOMIC_RELAXED));
}

}  // namespace

uint64_t WriteBack::pending_bytes() const {
  MutexLock lock(mu_);
  uint64_t pages = 0;
  for (const PageRun& r : pending_) pages += r.count;
  return pages * kPageSize;
}

void WriteBack::flush() {
  MutexLock lock(mu_);
  // Take before copying: see the class comment.
  pending_ = merge_runs(pending_, target_.dirty->take());
  if (pending_.empty() && !unsynced_) return;
  WriteResult w = write_pending();
  if (w.error != 0)  // (backend errors are negative errno values)
    throw Error("write-back of " + target_.backend->name() + ": writing at offset " + std::to_string(w.offset) +
                    " failed: " + std::strerror(-w.error) + " (the data stays in memory; flush again)",
                -w.error);
  if (int err = -target_.backend->sync_data(); err != 0)
    throw Error("write-back of " + target_.backend->name() + ": sync failed: " + std::strerror(err) +
                    " (the data stays in memory and is written again by the next flush)",
                err);
  pending_.clear();
  unsynced_ = false;
}

WriteBack::~WriteBack() {
  // Unregistered first: unmapping a registered range would wait for the
  // fault loop to read an UNMAP event.
  if (scratch_) uffd_unregister(uffd_, scratch_.data(), scratch_.size());
}

bool WriteBack::move_back(uintptr_t addr, uint64_t length) {
  int err = uffd_move(uffd_, addr, reinterpret_cast<uintptr_t>(scratch_.data()), length);
  if (err == 0) return true;
  // Never seen; the bytes must not be lost: the scratch memory keeps them
  // (left mapped for good) and says where they belong.
  logf(target_.log, LogLevel::kError, "write-back eviction cannot put %llu bytes back at %p (%s); they are kept at %p",
               static_cast<unsigned long long>(length), reinterpret_cast<void*>(addr), std::strerror(err),
               static_cast<void*>(scratch_.data()));
  uffd_unregister(uffd_, scratch_.data(), scratch_.size());
  (void)scratch_.release();
  return false;
}

bool WriteBack::drop_chunk(uintptr_t addr, uint64_t length) {
  MutexLock lock(mu_);
  if (!scratch_ || scratch_.size() < length) {
    if (scratch_) uffd_unregister(uffd_, scratch_.data(), scratch_.size());
    void* p = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) return false;
    scratch_ = Mapping(p, length);
    madvise(p, length, MADV_NOHUGEPAGE);
    madvise(p, length, MADV_DONTFORK);
    try {
      uffd_register(uffd_, p, length);
    } catch (const Error&) {
      scratch_.reset();
      return false;
    }
  }
  std::byte* s = scratch_.data();
  const uint64_t pages = length / kPageSize;
  // 1. Take the pages out. From here on the application faults on them and
  //    the fault loop holds those faults until this drop is reported.
  int err = uffd_move(uffd_, reinterpret_cast<uintptr_t>(s), addr, length);
  std::vector<unsigned char> moved(pages);
  if (mincore(s, length, moved.data()) != 0) std::fill(moved.begin(), moved.end(), 1);
  if (err != 0) {
    move_back(addr, length);
    return false;
  }
  // 2. UFFDIO_MOVE raises no event: an madvise of the emptied range raises
  //    the REMOVE that tells the fault loop the chunk is gone.
  madvise(reinterpret_cast<void*>(addr), length, MADV_DONTNEED);
  // 3. Write the pages whose bytes differ from the backend's.
  const uint64_t region_offset = addr - reinterpret_cast<uintptr_t>(target_.base);
  const uint64_t valid = std::min(length, target_.length - region_offset);
  compare_.resize(length);
  int64_t got = target_.backend->read_data(target_.backend_offset + region_offset, std::span(compare_.data(), valid));
  std::vector<WriteRequest> writes;
  for (uint64_t i = 0; i < pages; ++i) {
    if (!(moved[i] & 1)) continue;
    uint64_t at = i * kPageSize;
    if (at >= valid) break;
    uint64_t n = std::min(kPageSize, valid - at);
    bool same = got >= 0 && static_cast<uint64_t>(got) >= at + n && std::memcmp(s + at, compare_.data() + at, n) == 0;
    if (same) continue;
    if (!writes.empty() && writes.back().offset + writes.back().length == target_.backend_offset + region_offset + at)
      writes.back().length += static_cast<uint32_t>(n);
    else
      writes.push_back({target_.backend_offset + region_offset + at, static_cast<uint32_t>(n), s + at});
  }
  if (!writes.empty()) {
    WriteResult w = target_.backend->write_data(writes);
    if (w.error != 0) {
      logf(target_.log, LogLevel::kError, "write-back of %s at offset %llu failed while evicting (%s); the chunk stays "
                   "in memory", target_.backend->name().c_str(), static_cast<unsigned long long>(w.offset),
                   std::strerror(-w.error));
      move_back(addr, length);  // back as written pages: the next flush retries them
      return false;
    }
    unsynced_ = true;
  }
  madvise(s, length, MADV_DONTNEED);
  return true;
}

WriteResult WriteBack::write_pending() {
  if (!buffer_) {
    buffer_ = {static_cast<std::byte*>(std::aligned_alloc(kPageSize, kBufferBytes)), std::free};
    if (!buffer_) return {-ENOMEM, target_.backend_offset};
  }
  const std::byte* base = target_.base;
  std::vector<WriteRequest> batch;
  uint64_t used = 0;
  auto send = [&]() -> WriteResult {
    WriteResult w{};
    if (!batch.empty()) w = target_.backend->write_data(batch);
    batch.clear();
    used = 0;
    return w;
  };
  auto add = [&](const PageRun& run) -> WriteResult {
    uint64_t at = run.first * kPageSize, end = std::min(run.end() * kPageSize, target_.length);
    while (at < end) {
      if (used == kBufferBytes)
        if (WriteResult w = send(); w.error != 0) return w;
      uint64_t n = std::min(end - at, kBufferBytes - used);
      copy_racy(buffer_.get() + used, base + at, n);
      batch.push_back({target_.backend_offset + at, static_cast<uint32_t>(n), buffer_.get() + used});
      used += (n + kPageSize - 1) & ~(kPageSize - 1);
      at += n;
    }
    return {};
  };
  for (const PageRun& dirty_run : pending_)
    for (const PageRun& run : target_.dirty->readable(dirty_run))  // a poisoned page would raise SIGBUS
      if (WriteResult w = add(run); w.error != 0) return w;
  return send();
}

}  // namespace faultline::detail

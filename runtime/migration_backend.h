// SPDX-License-Identifier: Apache-2.0
// The two Backends of a post-copy migration (docs/migration.md):
//
// SourcePages serves the source's regions, laid end to end as one object,
// to the page server of the urgent lane. The source is stopped by then, so
// the bytes do not change under it.
//
// DestPages is what the destination's regions are mapped over. It knows,
// per page, whether the region holds it already, whether a PAGES frame has
// delivered it (pre-copy's first round, post-copy's background push: then
// it is served from the frame it came in, kept until the runtime has placed
// its pages: no copy, and no memory of its own to fault in and give back),
// or whether it must be fetched: then the read goes to the urgent lane (a
// RemoteBackend to the source's page server), which serves demand faults
// before anything else. Later pre-copy rounds are written into the regions
// by the receiver itself, before anyone else sees them.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "faultline/backend.h"
#include "faultline/region.h"

namespace faultline::migration {

// Copies bytes the application may be writing: word by word with atomic
// loads, so the race is a defined one (a torn page is sent again: its write
// is in the dirty log). `src` is 8-byte aligned.
inline void copy_live(std::byte* dst, const std::byte* src, size_t n) {
  size_t words = n / 8;
  auto* d = reinterpret_cast<uint64_t*>(dst);
  auto* s = reinterpret_cast<const std::atomic<uint64_t>*>(src);
  for (size_t i = 0; i < words; ++i) d[i] = s[i].load(std::memory_order_relaxed);
  auto* tail = reinterpret_cast<const std::atomic<std::byte>*>(src);
  for (size_t i = words * 8; i < n; ++i) dst[i] = tail[i].load(std::memory_order_relaxed);
}

class SourcePages : public Backend {
 public:
  // `regions` outlive the backend; `bases` from region_bases().
  SourcePages(std::vector<Region*> regions, std::vector<uint64_t> bases, uint64_t object_size);
  uint64_t size() const override { return size_; }
  std::string name() const override { return "migration source (" + std::to_string(size_) + " bytes)"; }
  uint32_t queue_depth() const override { return 256; }
  uint32_t alignment() const override { return 4096; }
  int completion_fd() const override { return -1; }
  void submit(std::span<const ReadRequest> reads) override;
  size_t reap(std::span<ReadCompletion> out) override;

  // The end of the last page asked for: where the background push goes on.
  uint64_t last_request_end() const { return last_end_.load(std::memory_order_relaxed); }

 private:
  std::vector<Region*> regions_;
  std::vector<uint64_t> bases_;
  uint64_t size_;
  std::vector<ReadCompletion> done_;
  std::atomic<uint64_t> last_end_{UINT64_MAX};
};

class DestPages : public Backend {
 public:
  enum State : uint8_t { kLocal = 0, kMissing = 1, kStored = 2, kStoredZero = 3 };

  // `urgent` is null in pre-copy: a read of a missing page is then an error
  // (the receiver asks only for pages it has).
  DestPages(uint64_t object_size, std::shared_ptr<Backend> urgent);
  ~DestPages() override;

  uint64_t size() const override { return size_; }
  std::string name() const override { return "migration destination (" + std::to_string(size_) + " bytes)"; }
  uint32_t queue_depth() const override { return urgent_ ? urgent_->queue_depth() : 256; }
  uint32_t alignment() const override { return 4096; }
  int completion_fd() const override { return urgent_ ? urgent_->completion_fd() : -1; }
  void submit(std::span<const ReadRequest> reads) override;
  size_t reap(std::span<ReadCompletion> out) override;

  // Before the first round (every page), or at a hybrid switch-over before
  // the regions are exposed (these object ranges): the pages must come from
  // the source. mark_missing() appends to `held` the runs of pages that were
  // placed until now (the caller drops them); pages still missing from an
  // earlier call are not in it.
  void mark_missing_all();
  void mark_missing(uint64_t offset, uint64_t length, std::vector<std::pair<uint64_t, uint64_t>>* held);
  // From the receiver: pushed pages, the first `length` bytes of `frame`,
  // which is kept (not copied) until the runtime has placed them. A page no
  // longer missing (fetched by a fault meanwhile) is dropped. Returns pages
  // taken.
  uint64_t store(uint64_t offset, std::vector<std::byte> frame, size_t length);
  // A buffer of a frame whose pages are all placed, for the receiver to read
  // the next frame into (its memory is faulted in already), or an empty one.
  // With many frames waiting for the runtime, waits a little for one: the
  // receiver then yields the CPU to the placing instead of faulting in
  // memory to run further ahead of it.
  std::vector<std::byte> spare_buffer();
  uint64_t store_zero(uint64_t offset, uint64_t length);
  // Whether every page of [offset, offset + length) is no longer missing
  // (a prefetch of it will not need the network).
  bool available(uint64_t offset, uint64_t length) const;
  uint64_t pages_pending() const { return pending_.load(std::memory_order_acquire); }
  // The object ranges still missing (what a reconnected source must push),
  // as (offset, length) runs of pages.
  std::vector<std::pair<uint64_t, uint64_t>> missing_ranges() const;
  // Once nothing is pending: frees the spare buffers, and from then on
  // every buffer once its pages are placed.
  void release_buffers();

  struct Figures {
    uint64_t pages_requested = 0, requests = 0;
    std::vector<uint64_t> latencies_ns;  // urgent reads
  };
  Figures figures() const;

 private:
  struct Forwarded {
    uint64_t tag, offset, start_ns;
    uint32_t length;
    bool urgent;
  };
  // A PAGES frame's payload. refs: its pages still kStored, plus one while
  // store() works on it. At 0 it is retired, and recycled only at the fault
  // loop's next submit() or reap(): the runtime may be placing from it (a
  // completion's data) until then.
  struct Pushed {
    std::vector<std::byte> bytes;
    uint64_t offset;
    std::atomic<uint32_t> refs;
  };
  uint8_t state(uint64_t page) const { return pages_[page].load(std::memory_order_acquire); }
  void settle(uint64_t offset, uint64_t length);  // pages now in the runtime's hands
  void unref(Pushed* f);
  void recycle_retired();
  void release_handed();
  void serve(const ReadRequest& r, uint64_t n);

  uint64_t size_;
  uint64_t page_count_;
  std::unique_ptr<std::atomic<uint8_t>[]> pages_;
  std::atomic<uint64_t> pending_{0};  // pages not kLocal
  std::unique_ptr<std::atomic<Pushed*>[]> pushed_;  // by page; meaningful while kStored
  std::mutex buffers_mu_;  // the receiver's and the fault loop's
  std::vector<std::vector<std::byte>> spare_;
  std::vector<Pushed*> retired_;
  std::condition_variable spare_cv_;
  uint64_t frames_ = 0;  // Pushed alive
  bool released_ = false;
  std::shared_ptr<Backend> urgent_;
  struct Served {
    ReadCompletion c;
    Pushed* hold;  // the frame c.data points into, or null
  };
  std::vector<Served> done_;
  std::vector<Pushed*> handed_;  // frames of the last reap()'s completions
  std::unordered_map<uint64_t, Forwarded> forwarded_;
  uint64_t next_tag_ = 1;
  std::vector<ReadRequest> batch_;
  std::vector<ReadCompletion> inner_;
  mutable std::mutex figures_mu_;
  Figures figures_;
};

}  // namespace faultline::migration

// SPDX-License-Identifier: Apache-2.0
#include "migration_backend.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "faultline/error.h"

namespace faultline::migration {

namespace {

constexpr uint64_t kPage = 4096;

uint64_t now_ns() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace

// ---- Source -------------------------------------------------------------------

SourcePages::SourcePages(std::vector<Region*> regions, std::vector<uint64_t> bases, uint64_t object_size)
    : regions_(std::move(regions)), bases_(std::move(bases)), size_(object_size) {}

void SourcePages::submit(std::span<const ReadRequest> reads) {
  for (const ReadRequest& r : reads) {
    uint64_t n = r.offset < size_ ? std::min<uint64_t>(r.length, size_ - r.offset) : 0;
    // Copied, not lent: the region's pages may not be resident, and a
    // user-mode copy is what the source's runtime serves.
    for (uint64_t done = 0; done < n;) {
      uint64_t at = r.offset + done;
      size_t i = static_cast<size_t>(std::upper_bound(bases_.begin(), bases_.end(), at) - bases_.begin()) - 1;
      uint64_t in_region = at - bases_[i];
      uint64_t extent = i + 1 < bases_.size() ? bases_[i + 1] - bases_[i] : size_ - bases_[i];
      uint64_t take = std::min(n - done, extent - in_region);
      uint64_t real = in_region < regions_[i]->size() ? std::min<uint64_t>(take, regions_[i]->size() - in_region) : 0;
      // (The source is stopped; atomic loads only tell TSan so, which does
      // not see the order the sockets give.)
      if (real) copy_live(r.dest + done, regions_[i]->data() + in_region, real);
      if (real < take) std::memset(r.dest + done + real, 0, take - real);  // the last page's tail
      done += take;
    }
    if (n) last_end_.store(r.offset + n, std::memory_order_relaxed);
    done_.push_back({r.tag, static_cast<int64_t>(n), false, nullptr});
  }
}

size_t SourcePages::reap(std::span<ReadCompletion> out) {
  size_t n = std::min(out.size(), done_.size());
  std::copy_n(done_.begin(), n, out.begin());
  done_.erase(done_.begin(), done_.begin() + static_cast<std::ptrdiff_t>(n));
  return n;
}

// ---- Destination ------------------------------------------------------------

DestPages::DestPages(uint64_t object_size, std::shared_ptr<Backend> urgent)
    : size_(object_size), page_count_((object_size + kPage - 1) / kPage),
      pages_(new std::atomic<uint8_t>[page_count_]), urgent_(std::move(urgent)) {
  for (uint64_t i = 0; i < page_count_; ++i) pages_[i].store(kLocal, std::memory_order_relaxed);
  pushed_.reset(new std::atomic<Pushed*>[page_count_]);
  for (uint64_t i = 0; i < page_count_; ++i) pushed_[i].store(nullptr, std::memory_order_relaxed);
}

// Every frame still referenced is held by a completion or is one some page
// is kStored in; each is deleted once (the page table holds it many times).
DestPages::~DestPages() {
  for (Served& s : done_)
    if (s.hold) handed_.push_back(s.hold);
  release_handed();
  std::vector<Pushed*> live;
  for (uint64_t p = 0; p < page_count_; ++p)
    if (state(p) == kStored) live.push_back(pushed_[p].load(std::memory_order_relaxed));
  std::sort(live.begin(), live.end());
  live.erase(std::unique(live.begin(), live.end()), live.end());
  for (Pushed* f : live) delete f;
}

void DestPages::mark_missing_all() {
  for (uint64_t i = 0; i < page_count_; ++i) pages_[i].store(kMissing, std::memory_order_relaxed);
  pending_.store(page_count_, std::memory_order_release);
}

void DestPages::mark_missing(uint64_t offset, uint64_t length, std::vector<std::pair<uint64_t, uint64_t>>* held) {
  uint64_t first = offset / kPage, end = std::min(page_count_, (offset + length + kPage - 1) / kPage);
  uint64_t added = 0;
  for (uint64_t p = first; p < end; ++p) {
    uint8_t want = kLocal;
    if (!pages_[p].compare_exchange_strong(want, kMissing, std::memory_order_acq_rel)) continue;
    added++;
    if (!held->empty() && held->back().first + held->back().second == p * kPage)
      held->back().second += kPage;
    else
      held->emplace_back(p * kPage, kPage);
  }
  pending_.fetch_add(added, std::memory_order_release);
}

uint64_t DestPages::store(uint64_t offset, std::vector<std::byte> frame, size_t length) {
  auto* f = new Pushed{std::move(frame), offset, 1};
  {
    std::lock_guard lock(buffers_mu_);
    frames_++;
  }
  uint64_t taken = 0;
  for (uint64_t done = 0; done < length; done += kPage) {
    uint64_t p = (offset + done) / kPage;
    if (p >= page_count_) break;
    if (state(p) != kMissing) continue;
    // The frame first, then the state (release): the fault loop looks at
    // the frame only after it saw kStored (acquire).
    f->refs.fetch_add(1, std::memory_order_relaxed);
    pushed_[p].store(f, std::memory_order_relaxed);
    uint8_t want = kMissing;
    if (pages_[p].compare_exchange_strong(want, kStored, std::memory_order_acq_rel))
      taken++;
    else
      f->refs.fetch_sub(1, std::memory_order_relaxed);
  }
  unref(f);
  return taken;
}

std::vector<std::byte> DestPages::spare_buffer() {
  constexpr uint64_t kFramesAhead = 32;
  std::unique_lock lock(buffers_mu_);
  if (spare_.empty() && frames_ >= kFramesAhead)
    spare_cv_.wait_for(lock, std::chrono::milliseconds(10), [&] { return !spare_.empty(); });
  if (spare_.empty()) return {};
  std::vector<std::byte> b = std::move(spare_.back());
  spare_.pop_back();
  return b;
}

void DestPages::unref(Pushed* f) {
  if (f->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  std::lock_guard lock(buffers_mu_);
  retired_.push_back(f);
}

// At the fault loop's submit() and reap(): what it placed from a retired
// frame was placed by then. The buffers are kept for the receiver, as many
// as may be waiting for the runtime (their pages are faulted in; a new one
// costs a page fault per page, ~10 us each on the development VM). With
// half as many, a 1 GiB post-copy allocated 1,008 of its 4,096 frames anew.
void DestPages::recycle_retired() {
  constexpr size_t kSpareBuffers = 32;
  std::vector<Pushed*> done;
  {
    std::lock_guard lock(buffers_mu_);
    done.swap(retired_);
    for (Pushed* f : done)
      if (!released_ && spare_.size() < kSpareBuffers) spare_.push_back(std::move(f->bytes));
    frames_ -= done.size();
  }
  if (!done.empty()) spare_cv_.notify_one();
  for (Pushed* f : done) delete f;
}

uint64_t DestPages::store_zero(uint64_t offset, uint64_t length) {
  uint64_t taken = 0;
  uint64_t end = std::min(page_count_, (offset + length) / kPage);
  for (uint64_t p = offset / kPage; p < end; ++p) {
    uint8_t want = kMissing;
    if (pages_[p].compare_exchange_strong(want, kStoredZero, std::memory_order_acq_rel)) taken++;
  }
  return taken;
}

bool DestPages::available(uint64_t offset, uint64_t length) const {
  uint64_t end = std::min(page_count_, (offset + length + kPage - 1) / kPage);
  for (uint64_t p = offset / kPage; p < end; ++p)
    if (state(p) == kMissing) return false;
  return true;
}

std::vector<std::pair<uint64_t, uint64_t>> DestPages::missing_ranges() const {
  std::vector<std::pair<uint64_t, uint64_t>> runs;
  for (uint64_t p = 0; p < page_count_;) {
    if (state(p) != kMissing) {
      ++p;
      continue;
    }
    uint64_t e = p;
    while (e < page_count_ && state(e) == kMissing) ++e;
    runs.emplace_back(p * kPage, (e - p) * kPage);
    p = e;
  }
  return runs;
}

void DestPages::settle(uint64_t offset, uint64_t length) {
  uint64_t end = std::min(page_count_, (offset + length + kPage - 1) / kPage);
  uint64_t gone = 0;
  for (uint64_t p = offset / kPage; p < end; ++p) {
    uint8_t was = pages_[p].exchange(kLocal, std::memory_order_acq_rel);
    if (was == kStored) unref(pushed_[p].load(std::memory_order_relaxed));
    if (was != kLocal) gone++;
  }
  if (gone) pending_.fetch_sub(gone, std::memory_order_acq_rel);
}

void DestPages::submit(std::span<const ReadRequest> reads) {
  release_handed();
  batch_.clear();
  uint64_t now = 0;
  for (const ReadRequest& r : reads) {
    uint64_t n = r.offset < size_ ? std::min<uint64_t>(r.length, size_ - r.offset) : 0;
    if (pending_.load(std::memory_order_acquire) == 0) {
      // Nothing is owed by the source: every page is placed, and the
      // runtime's placement skips present pages (EEXIST).
      done_.push_back({{r.tag, static_cast<int64_t>(n), true, nullptr}, nullptr});
      continue;
    }
    if (!available(r.offset, n)) {
      if (!urgent_) {
        // Pre-copy has nowhere to fetch from: the receiver asks only for
        // what it has, so this is a bug, and the runtime poisons the chunk.
        done_.push_back({{r.tag, -EIO, false, nullptr}, nullptr});
        continue;
      }
      if (!now) now = now_ns();
      uint64_t tag = next_tag_++;
      forwarded_[tag] = {r.tag, r.offset, now, static_cast<uint32_t>(n), r.urgent};
      ReadRequest f = r;
      f.tag = tag;
      batch_.push_back(f);
      continue;
    }
    serve(r, n);
  }
  if (!batch_.empty()) urgent_->submit(batch_);
}

// A read whose pages are all here. Pages the region already holds (kLocal)
// get zeros: the runtime's placement skips present pages (EEXIST). When
// every page came in one frame, the runtime places straight from it.
void DestPages::serve(const ReadRequest& r, uint64_t n) {
  Pushed* one = nullptr;
  bool any = false, whole = n > 0;
  for (uint64_t done = 0; done < n; done += kPage) {
    uint64_t p = (r.offset + done) / kPage;
    if (state(p) != kStored) {
      whole = false;
      continue;
    }
    Pushed* f = pushed_[p].load(std::memory_order_relaxed);
    if (any && f != one) whole = false;
    one = f, any = true;
  }
  Served s{{r.tag, static_cast<int64_t>(n), !any, nullptr}, nullptr};
  if (any && whole) {
    one->refs.fetch_add(1, std::memory_order_relaxed);  // until the runtime has placed it
    s.hold = one;
    s.c.data = one->bytes.data() + (r.offset - one->offset);
  } else if (any) {
    for (uint64_t done = 0; done < n; done += kPage) {
      uint64_t p = (r.offset + done) / kPage;
      uint64_t len = std::min<uint64_t>(kPage, n - done);
      if (state(p) == kStored) {
        Pushed* f = pushed_[p].load(std::memory_order_relaxed);
        std::memcpy(r.dest + done, f->bytes.data() + (p * kPage - f->offset), len);
      } else {
        std::memset(r.dest + done, 0, len);
      }
    }
  }
  settle(r.offset, n);
  done_.push_back(s);
}

// The runtime has placed what the last reap() handed it by the next call.
void DestPages::release_handed() {
  for (Pushed* f : handed_) unref(f);
  handed_.clear();
  recycle_retired();
}

size_t DestPages::reap(std::span<ReadCompletion> out) {
  release_handed();
  size_t n = std::min(out.size(), done_.size());
  for (size_t i = 0; i < n; ++i) {
    out[i] = done_[i].c;
    if (done_[i].hold) handed_.push_back(done_[i].hold);
  }
  done_.erase(done_.begin(), done_.begin() + static_cast<std::ptrdiff_t>(n));
  if (!urgent_ || n == out.size()) return n;
  inner_.resize(out.size() - n);
  size_t got = urgent_->reap(inner_);
  uint64_t now = got ? now_ns() : 0;
  for (size_t i = 0; i < got; ++i) {
    ReadCompletion c = inner_[i];
    auto it = forwarded_.find(c.tag);
    if (it == forwarded_.end()) continue;  // cannot happen: the remote backend answers what it was asked
    Forwarded f = it->second;
    forwarded_.erase(it);
    if (c.result == static_cast<int64_t>(f.length)) {
      settle(f.offset, f.length);  // (pages pushed meanwhile are no longer needed)
      std::lock_guard lock(figures_mu_);
      if (f.urgent) {
        figures_.requests++;
        figures_.pages_requested += (f.length + kPage - 1) / kPage;
        figures_.latencies_ns.push_back(now - f.start_ns);
      }
    }
    c.tag = f.tag;
    out[n++] = c;
  }
  return n;
}

void DestPages::release_buffers() {
  if (pending_.load(std::memory_order_acquire) != 0) return;
  std::lock_guard lock(buffers_mu_);
  released_ = true;
  spare_.clear();
  spare_.shrink_to_fit();
}

DestPages::Figures DestPages::figures() const {
  std::lock_guard lock(figures_mu_);
  return figures_;
}

}  // namespace faultline::migration

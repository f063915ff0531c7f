// SPDX-License-Identifier: Apache-2.0
#include "migration_backend.h"

#include <sys/mman.h>

#include <algorithm>
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
  if (urgent_) {
    // The pushed pages wait here for the runtime to place them. Reserved,
    // not committed: only what is pushed and not yet placed uses memory.
    void* p = ::mmap(nullptr, page_count_ * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
    if (p == MAP_FAILED) throw_errno("migration: cannot reserve " + std::to_string(size_) + " bytes of store", errno);
    store_ = detail::Mapping(p, page_count_ * kPage);
  }
}

void DestPages::mark_missing_all() {
  for (uint64_t i = 0; i < page_count_; ++i) pages_[i].store(kMissing, std::memory_order_relaxed);
  pending_.store(page_count_, std::memory_order_release);
}

void DestPages::mark_missing(uint64_t offset, uint64_t length) {
  uint64_t first = offset / kPage, end = std::min(page_count_, (offset + length + kPage - 1) / kPage);
  uint64_t added = 0;
  for (uint64_t p = first; p < end; ++p)
    if (pages_[p].exchange(kMissing, std::memory_order_acq_rel) == kLocal) added++;
  pending_.fetch_add(added, std::memory_order_release);
}

uint64_t DestPages::store(uint64_t offset, std::span<const std::byte> bytes) {
  uint64_t taken = 0;
  for (uint64_t done = 0; done < bytes.size(); done += kPage) {
    uint64_t p = (offset + done) / kPage;
    if (p >= page_count_) break;
    if (state(p) != kMissing) continue;
    // Bytes first, then the state (release): the fault loop reads the bytes
    // only after it saw kStored (acquire).
    std::memcpy(store_.data() + p * kPage, bytes.data() + done, std::min<uint64_t>(kPage, bytes.size() - done));
    uint8_t want = kMissing;
    if (pages_[p].compare_exchange_strong(want, kStored, std::memory_order_acq_rel)) taken++;
  }
  return taken;
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
  for (uint64_t p = offset / kPage; p < end; ++p)
    if (pages_[p].exchange(kLocal, std::memory_order_acq_rel) != kLocal) gone++;
  if (gone) pending_.fetch_sub(gone, std::memory_order_acq_rel);
}

void DestPages::submit(std::span<const ReadRequest> reads) {
  batch_.clear();
  uint64_t now = 0;
  for (const ReadRequest& r : reads) {
    uint64_t n = r.offset < size_ ? std::min<uint64_t>(r.length, size_ - r.offset) : 0;
    if (!urgent_ || pending_.load(std::memory_order_acquire) == 0) {
      // Nothing is owed by the source: a page the region lacks is a zero
      // page (pre-copy never writes them; see the receiver).
      done_.push_back({r.tag, static_cast<int64_t>(n), true, nullptr});
      continue;
    }
    if (!available(r.offset, n)) {
      if (!now) now = now_ns();
      uint64_t tag = next_tag_++;
      forwarded_[tag] = {r.tag, r.offset, now, static_cast<uint32_t>(n), r.urgent};
      ReadRequest f = r;
      f.tag = tag;
      batch_.push_back(f);
      continue;
    }
    // Served here. Pages the region already holds get zeros: the runtime's
    // placement skips present pages (EEXIST), and a kLocal page that is
    // not present is one pre-copy never wrote, a zero page.
    bool from_store = false;
    for (uint64_t done = 0; done < n; done += kPage) {
      uint64_t p = (r.offset + done) / kPage;
      uint64_t len = std::min<uint64_t>(kPage, n - done);
      if (state(p) == kStored) {
        std::memcpy(r.dest + done, store_.data() + p * kPage, len);
        from_store = true;
      } else {
        std::memset(r.dest + done, 0, len);
      }
    }
    settle(r.offset, n);
    if (from_store) free_store(r.offset, n);
    done_.push_back({r.tag, static_cast<int64_t>(n), false, nullptr});
  }
  if (!batch_.empty()) urgent_->submit(batch_);
}

size_t DestPages::reap(std::span<ReadCompletion> out) {
  size_t n = std::min(out.size(), done_.size());
  std::copy_n(done_.begin(), n, out.begin());
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
      settle(f.offset, f.length);
      free_store(f.offset, f.length);  // (pushed meanwhile, and no longer needed)
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

// The store's pages of a range the runtime has in hand now: returned to the
// kernel, so the store holds only what is pushed and not placed yet (the
// destination's memory stays near the regions' size, not twice it). The
// receiver writes a page only while it is kMissing, which a settled page
// never is again; one it was still copying when the fetch settled it is
// dropped with the range, harmlessly (its bytes were not needed).
void DestPages::free_store(uint64_t offset, uint64_t length) {
  uint64_t first = offset / kPage * kPage, end = std::min(page_count_ * kPage, (offset + length + kPage - 1) / kPage * kPage);
  if (end > first) ::madvise(store_.data() + first, end - first, MADV_DONTNEED);
}

void DestPages::release_store() {
  if (store_.data() && pending_.load(std::memory_order_acquire) == 0)
    ::madvise(store_.data(), page_count_ * kPage, MADV_DONTNEED);
}

DestPages::Figures DestPages::figures() const {
  std::lock_guard lock(figures_mu_);
  return figures_;
}

}  // namespace faultline::migration

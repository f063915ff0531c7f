// SPDX-License-Identifier: Apache-2.0
#include "faultline/memory_backend.h"

#include <algorithm>

namespace faultline {

MemoryBackend::MemoryBackend(std::vector<std::byte> bytes) : owned_(std::move(bytes)), view_(owned_) {}

std::shared_ptr<MemoryBackend> MemoryBackend::borrow(std::span<const std::byte> bytes) {
  std::shared_ptr<MemoryBackend> b(new MemoryBackend());
  b->view_ = bytes;
  return b;
}

std::string MemoryBackend::name() const { return "memory (" + std::to_string(view_.size()) + " bytes)"; }

void MemoryBackend::submit(std::span<const ReadRequest> reads) {
  for (const ReadRequest& r : reads) {
    uint64_t n = r.offset < view_.size() ? std::min<uint64_t>(r.length, view_.size() - r.offset) : 0;
    // No copy into staging: the runtime places the pages straight from here.
    done_.push_back({r.tag, static_cast<int64_t>(n), false, view_.data() + r.offset});
  }
}

size_t MemoryBackend::reap(std::span<ReadCompletion> out) {
  size_t n = std::min(out.size(), done_.size());
  std::copy(done_.begin(), done_.begin() + static_cast<std::ptrdiff_t>(n), out.begin());
  done_.erase(done_.begin(), done_.begin() + static_cast<std::ptrdiff_t>(n));
  return n;
}

}  // namespace faultline

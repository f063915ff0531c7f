// StagingArena: the memory backends read into before UFFDIO_COPY places it.
//
// One mapping per runtime, handed out as power-of-two blocks from 4 KiB to
// 2 MiB by a buddy allocator, so fills of every size share it without
// fragmenting for good. The lowest free block is always reused first, which
// keeps the working part of the arena warm in cache and resident.
// Not thread-safe: used by the fault loop only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <set>
#include <span>
#include <vector>

#include "unique_fd.h"

namespace faultline::detail {

class StagingArena {
 public:
  static constexpr size_t kMinBlock = 4096;
  static constexpr size_t kMaxBlock = 2 * 1024 * 1024;

  // `bytes` is rounded up to a multiple of kMaxBlock. Throws Error.
  explicit StagingArena(size_t bytes);

  // A block of at least `bytes` (<= kMaxBlock), or nullptr if none is free.
  std::byte* allocate(size_t bytes);
  void release(std::byte* block, size_t bytes);

  std::span<std::byte> memory() const { return {mapping_.data(), mapping_.size()}; }
  size_t bytes_in_use() const { return in_use_; }

 private:
  static int order_of(size_t bytes);

  Mapping mapping_;
  std::vector<std::set<uint32_t>> free_;  // per order: free block indexes (in 4 KiB pages)
  size_t in_use_ = 0;
};

}  // namespace faultline::detail

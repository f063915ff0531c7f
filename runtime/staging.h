// SPDX-License-Identifier: Apache-2.0
// StagingArena: the memory backends read into before UFFDIO_COPY places it.
//
// One mapping per runtime, handed out as power-of-two blocks from 4 KiB to
// 2 MiB by a buddy allocator, so fills of every size share it without
// fragmenting for good. Released blocks wait on a per-size list and are
// handed out again as they are (the fault path's steady state: no splitting,
// no merging); they merge back only when an allocation would otherwise fail.
// Reuse is last-in first-out, which keeps the working part warm in cache.
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
  std::byte* split_from_buddies(int order);
  void merge_into_buddies(uint32_t index, int order);
  bool merge_recent();

  Mapping mapping_;
  std::vector<std::set<uint32_t>> free_;  // per order: free buddy blocks (index in 4 KiB pages)
  std::vector<std::vector<uint32_t>> recent_;  // per order: released, not merged yet
  size_t in_use_ = 0;
};

}  // namespace faultline::detail

// SPDX-License-Identifier: Apache-2.0
#include "staging.h"

#include <errno.h>
#include <sys/mman.h>

#include <bit>

#include "faultline/error.h"

namespace faultline::detail {

namespace {
constexpr int kMaxOrder = 9;  // 4 KiB << 9 == 2 MiB
}

StagingArena::StagingArena(size_t bytes) : free_(kMaxOrder + 1), recent_(kMaxOrder + 1) {
  size_t blocks = (bytes + kMaxBlock - 1) / kMaxBlock;
  if (blocks == 0) blocks = 1;
  size_t len = blocks * kMaxBlock;
  void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) throw_errno("cannot map " + std::to_string(len) + " bytes of staging memory", errno);
  mapping_ = Mapping(p, len);
  for (size_t b = 0; b < blocks; ++b) free_[kMaxOrder].insert(static_cast<uint32_t>(b << kMaxOrder));
}

int StagingArena::order_of(size_t bytes) {
  size_t pages = (bytes + kMinBlock - 1) / kMinBlock;
  return std::bit_width(std::bit_ceil(pages)) - 1;
}

std::byte* StagingArena::allocate(size_t bytes) {
  int order = order_of(bytes);
  if (order > kMaxOrder) return nullptr;
  uint32_t index;
  if (!recent_[order].empty()) {
    index = recent_[order].back();
    recent_[order].pop_back();
  } else {
    std::byte* p = split_from_buddies(order);
    if (!p && merge_recent()) p = split_from_buddies(order);
    if (!p) return nullptr;
    index = static_cast<uint32_t>((p - mapping_.data()) / kMinBlock);
  }
  in_use_ += kMinBlock << order;
  return mapping_.data() + size_t{index} * kMinBlock;
}

void StagingArena::release(std::byte* block, size_t bytes) {
  int order = order_of(bytes);
  in_use_ -= kMinBlock << order;
  recent_[order].push_back(static_cast<uint32_t>((block - mapping_.data()) / kMinBlock));
}

std::byte* StagingArena::split_from_buddies(int order) {
  int k = order;
  while (k <= kMaxOrder && free_[k].empty()) ++k;
  if (k > kMaxOrder) return nullptr;
  uint32_t index = *free_[k].begin();
  free_[k].erase(free_[k].begin());
  while (k > order) {  // split, keeping the lower half
    --k;
    free_[k].insert(index + (1u << k));
  }
  return mapping_.data() + size_t{index} * kMinBlock;
}

void StagingArena::merge_into_buddies(uint32_t index, int order) {
  while (order < kMaxOrder) {
    uint32_t buddy = index ^ (1u << order);
    if (free_[order].erase(buddy) == 0) break;
    index &= ~(1u << order);
    ++order;
  }
  free_[order].insert(index);
}

bool StagingArena::merge_recent() {
  bool any = false;
  for (int order = 0; order <= kMaxOrder; ++order) {
    for (uint32_t index : recent_[order]) merge_into_buddies(index, order);
    any |= !recent_[order].empty();
    recent_[order].clear();
  }
  return any;
}

}  // namespace faultline::detail

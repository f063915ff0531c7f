#include "staging.h"

#include <errno.h>
#include <sys/mman.h>

#include <bit>

#include "faultline/error.h"

namespace faultline::detail {

namespace {
constexpr int kMaxOrder = 9;  // 4 KiB << 9 == 2 MiB
}

StagingArena::StagingArena(size_t bytes) : free_(kMaxOrder + 1) {
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
  int k = order;
  while (k <= kMaxOrder && free_[k].empty()) ++k;
  if (k > kMaxOrder) return nullptr;
  uint32_t index = *free_[k].begin();
  free_[k].erase(free_[k].begin());
  while (k > order) {  // split, keeping the lower half
    --k;
    free_[k].insert(index + (1u << k));
  }
  in_use_ += kMinBlock << order;
  return mapping_.data() + size_t{index} * kMinBlock;
}

void StagingArena::release(std::byte* block, size_t bytes) {
  int order = order_of(bytes);
  uint32_t index = static_cast<uint32_t>((block - mapping_.data()) / kMinBlock);
  in_use_ -= kMinBlock << order;
  while (order < kMaxOrder) {  // merge with free buddies
    uint32_t buddy = index ^ (1u << order);
    if (free_[order].erase(buddy) == 0) break;
    index &= ~(1u << order);
    ++order;
  }
  free_[order].insert(index);
}

}  // namespace faultline::detail

// SPDX-License-Identifier: Apache-2.0
// Little-endian integers in byte buffers: every format faultline stores or
// sends (snapshots, working sets, the page protocol) writes them so, whatever
// the host's byte order. `bytes` is the field's width, 1 to 8.
#pragma once

#include <cstdint>

namespace faultline::detail {

inline void put_le(void* dest, uint64_t value, int bytes) {
  auto* p = static_cast<unsigned char*>(dest);
  for (int i = 0; i < bytes; ++i) p[i] = static_cast<unsigned char>(value >> (8 * i));
}

inline uint64_t get_le(const void* src, int bytes) {
  const auto* p = static_cast<const unsigned char*>(src);
  uint64_t value = 0;
  for (int i = 0; i < bytes; ++i) value |= uint64_t{p[i]} << (8 * i);
  return value;
}

}  // namespace faultline::detail

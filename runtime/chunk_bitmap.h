// SPDX-License-Identifier: Apache-2.0
// A bit per chunk of a region: present, resident, being dropped, touched.
//
// The words come from calloc, which for a large block is fresh zeroed mmap
// memory: the bitmap of a 64 TiB reservation costs address space, not RAM,
// until its chunks are used. A bitmap that was never allocated reads as all
// clear and must not be written (regions allocate only the maps their
// options need). Not synchronised: each bitmap has one owning thread.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "faultline/error.h"

namespace faultline::detail {

class ChunkBitmap {
 public:
  ChunkBitmap() = default;
  // `what` names the map in the out-of-memory error.
  ChunkBitmap(uint64_t bits, const char* what)
      : words_(static_cast<uint64_t*>(std::calloc((bits + 63) / 64 ? (bits + 63) / 64 : 1, sizeof(uint64_t))),
               std::free) {
    if (!words_) throw Error(std::string("out of memory for the region's ") + what);
  }

  explicit operator bool() const { return words_ != nullptr; }

  bool test(uint64_t bit) const { return words_ && ((words_[bit >> 6] >> (bit & 63)) & 1); }
  void set(uint64_t bit) { words_[bit >> 6] |= mask(bit); }
  void clear(uint64_t bit) { words_[bit >> 6] &= ~mask(bit); }
  void assign(uint64_t bit, bool on) { on ? set(bit) : clear(bit); }
  // Sets the bit; returns whether it was set already.
  bool test_and_set(uint64_t bit) {
    uint64_t& word = words_[bit >> 6];
    bool was = (word & mask(bit)) != 0;
    word |= mask(bit);
    return was;
  }

 private:
  static uint64_t mask(uint64_t bit) { return uint64_t{1} << (bit & 63); }

  std::unique_ptr<uint64_t[], void (*)(void*)> words_{nullptr, std::free};
};

}  // namespace faultline::detail

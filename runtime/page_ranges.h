// SPDX-License-Identifier: Apache-2.0
// A set of byte ranges of a region, merged where they touch: the pages the
// application removed (MADV_DONTNEED: they read zeros from then on) or
// unmapped (nothing to serve there). Events arrive as ranges and are few,
// so a balloon of any size is one entry, not a bit per page.
//
// Plain data, not synchronised: owned by the fault-loop thread (readers on
// other threads only after the region left the loop).
#pragma once

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <map>

namespace faultline::detail {

class PageRanges {
 public:
  bool empty() const { return ranges_.empty(); }

  // Adds [start, end), merging with the ranges it overlaps or touches.
  void add(uint64_t start, uint64_t end) {
    if (start >= end) return;
    auto it = ranges_.upper_bound(start);
    if (it != ranges_.begin() && std::prev(it)->second >= start) --it;
    while (it != ranges_.end() && it->first <= end) {
      start = std::min(start, it->first);
      end = std::max(end, it->second);
      it = ranges_.erase(it);
    }
    ranges_.emplace(start, end);
  }

  // The end of the range holding `at`, or `at` if none does.
  uint64_t run_end(uint64_t at) const {
    auto it = ranges_.upper_bound(at);
    if (it == ranges_.begin()) return at;
    --it;
    return at < it->second ? it->second : at;
  }

  // The start of the first range after `at` (UINT64_MAX if none).
  uint64_t next_start(uint64_t at) const {
    auto it = ranges_.upper_bound(at);
    return it == ranges_.end() ? UINT64_MAX : it->first;
  }

  // Whether [start, end) lies inside the set.
  bool covers(uint64_t start, uint64_t end) const { return run_end(start) >= end; }

  // Calls f(s, e) for each part of [start, end) inside the set, in order.
  template <typename F>
  void for_each_in(uint64_t start, uint64_t end, F f) const {
    auto it = ranges_.upper_bound(start);
    if (it != ranges_.begin()) --it;
    for (; it != ranges_.end() && it->first < end; ++it) {
      uint64_t s = std::max(start, it->first), e = std::min(end, it->second);
      if (s < e) f(s, e);
    }
  }

  // Calls f(s, e) for each part of [start, end) outside the set, in order.
  template <typename F>
  void for_each_outside(uint64_t start, uint64_t end, F f) const {
    uint64_t at = start;
    for_each_in(start, end, [&](uint64_t s, uint64_t e) {
      if (at < s) f(at, s);
      at = e;
    });
    if (at < end) f(at, end);
  }

 private:
  std::map<uint64_t, uint64_t> ranges_;  // start -> end
};

}  // namespace faultline::detail

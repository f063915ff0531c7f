// SPDX-License-Identifier: Apache-2.0
#include "readahead.h"

#include <algorithm>
#include <cstdlib>

#include "faultline/error.h"

namespace faultline::detail {

ReadaheadDetector::ReadaheadDetector(uint64_t chunks, uint32_t fill_shift, uint64_t readahead_max, bool readaround)
    : chunks_(chunks), max_window_(std::max<uint64_t>(1, readahead_max >> fill_shift)), window_chunks_(max_window_) {
  // The first window is 256 KiB (at least 2 chunks), as the kernel's
  // initial readahead.
  initial_window_ = std::min(max_window_, std::max<uint64_t>(2, (256 * 1024) >> fill_shift));
  cap_ = max_window_;
  if (readaround) {
    // calloc: a huge region's counters cost nothing until faults touch them.
    window_faults_ = {static_cast<uint8_t*>(std::calloc(chunks / window_chunks_ + 1, 1)), std::free};
    if (!window_faults_) throw Error("out of memory for the region's read-around counters");
  }
}

bool ReadaheadDetector::on_fault(uint64_t chunk, Span* around, Verdict* verdict) {
  Verdict v;
  // Sequential: the next chunk, or a fault inside (or right after) the
  // window read ahead last time: the stream outran the read-ahead.
  bool by_one = chunk == last_fault_ + 1;
  bool sequential = by_one || (end_ > 0 && chunk >= start_ && chunk <= end_);
  last_fault_ = chunk;
  run_ = sequential ? run_ + 1 : 0;
  if (!sequential) {  // a random fault ends the stream and its pending read-ahead
    v.wasted = judge_wasted();
    // Mostly wasted: the pattern is not one read-ahead helps. Halve the
    // cap; below the first window there is no point: off.
    if (v.wasted > stream_used_) {
      cap_ /= 2;
      if (cap_ < initial_window_) cap_ = 0;
    }
    stream_used_ = 0;
    window_ = 0;
    start_ = next_ = end_ = 0;
    if (verdict) *verdict = v;
    return note_random(chunk, around);
  }
  v.used = judge_used(chunk);
  stream_used_ += v.used;
  if (verdict) *verdict = v;
  if (v.used > 0) cap_ = std::min(max_window_, std::max(cap_ * 2, initial_window_));  // it paid: open up
  if (cap_ == 0) {
    if (run_ < kRecoverRun) return false;  // backed off: only a longer stream reopens it
    cap_ = initial_window_;
  }
  window_ = std::min(window_ ? window_ * 2 : initial_window_, cap_);
  start_ = chunk;
  next_ = std::max(next_, chunk + 1);
  end_ = std::min(chunks_, std::max(end_, chunk + 1 + window_));
  return false;
}

// Chunks handed out at or before the stream's new position: it went past
// them, so they served it (or were on their way when it got there).
uint64_t ReadaheadDetector::judge_used(uint64_t chunk) {
  uint64_t n = 0;
  while (!taken_.empty() && taken_.front() <= chunk) {
    taken_.pop_front();
    n++;
  }
  return n;
}

uint64_t ReadaheadDetector::judge_wasted() {
  uint64_t n = taken_.size();
  taken_.clear();
  return n;
}

// Random faults that crowd into one window say the access is dense there:
// reading the rest of the window in one go (many reads in flight, adjacent
// ones merged by the block layer) beats waiting for each miss. Point
// lookups (a few per window) never get there.
bool ReadaheadDetector::note_random(uint64_t chunk, Span* around) {
  if (!window_faults_) return false;
  uint64_t w = chunk / window_chunks_;
  uint8_t& faults = window_faults_[w];
  if (faults == kWindowDone) return false;
  uint64_t threshold = std::max<uint64_t>(4, window_chunks_ / 4);
  if (++faults < threshold) return false;
  faults = kWindowDone;
  around->first = w * window_chunks_;
  around->last = std::min(chunks_, around->first + window_chunks_);
  return true;
}

}  // namespace faultline::detail

// SPDX-License-Identifier: Apache-2.0
// Read-ahead and read-around for one region: from the order of its demand
// faults, which chunks to read before anyone asks for them.
//
//  - Read-ahead follows a sequential stream: two faults in order start a
//    window ahead of the stream that doubles on each further sequential
//    fault, up to readahead_max (like the kernel's readahead). A random
//    fault ends the stream and its pending window.
//  - Read-ahead pays for itself: each chunk it hands out is judged once,
//    by the faults that follow. A stream that goes on past a chunk (the
//    next sequential fault lands at or beyond it) used it; a random fault
//    that leaves chunks of the window behind wasted them. A window mostly
//    wasted halves the region's cap on the window (below the first
//    window's size: zero, no read-ahead at all); a stream that reaches its
//    window doubles it again, up to readahead_max. With the cap at zero, a
//    run of kRecoverRun faults in order opens the first window again.
//    (Installed pages never fault again and anonymous memory has no
//    accessed bit to read cheaply, so the next fault's position is the
//    signal: docs/design.md, "Read-ahead that pays for itself".)
//  - Read-around catches dense random access: random faults are counted
//    per window of readahead_max bytes, and a window that takes a quarter
//    of its chunks (at least 4) is read whole, once (as mmap's read-around).
//    It hides read latency, so it is only for backends whose reads take
//    time (asynchronous completions).
//
// Pure bookkeeping over chunk numbers: no kernel, no backend; the fault
// loop asks it and queues the reads. Loop thread only.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>

namespace faultline::detail {

class ReadaheadDetector {
 public:
  // A whole window to read because random faults crowded into it.
  struct Span {
    uint64_t first = 0, last = 0;  // chunks [first, last)
  };
  // Read-ahead chunks judged by one fault.
  struct Verdict {
    uint64_t used = 0, wasted = 0;
  };
  // Faults in order that reopen read-ahead after it backed off to zero.
  static constexpr uint64_t kRecoverRun = 4;

  ReadaheadDetector() = default;
  // A region of `chunks` chunks of 1 << fill_shift bytes whose windows
  // are readahead_max bytes; `readaround`: random faults may trigger it.
  ReadaheadDetector(uint64_t chunks, uint32_t fill_shift, uint64_t readahead_max, bool readaround);

  // A demand fault on `chunk`. Returns true and sets *around when this
  // fault made its window dense enough to be read whole. *verdict (if
  // given) gets the read-ahead chunks this fault judged.
  bool on_fault(uint64_t chunk, Span* around, Verdict* verdict = nullptr);

  // The next chunk of the window ahead of the stream that `wanted(chunk)`
  // accepts (chunks already present or being read are skipped); false when
  // the window is used up. taken() moves past the chunk returned.
  template <typename Wanted>
  bool next(Wanted&& wanted, uint64_t* chunk) {
    while (next_ < end_ && !wanted(next_)) next_++;
    if (next_ >= end_) return false;
    *chunk = next_;
    return true;
  }
  void taken(uint64_t chunk) {
    next_ = chunk + 1;
    taken_.push_back(chunk);
  }
  bool pending() const { return next_ < end_; }
  // Drops the window (the region is going away).
  void stop() {
    next_ = end_ = 0;
    taken_.clear();
  }
  // The largest window read-ahead may open now, in chunks (0: backed off).
  uint64_t cap() const { return cap_; }

 private:
  static constexpr uint8_t kWindowDone = 255;

  bool note_random(uint64_t chunk, Span* around);
  // Judges the chunks handed out before `chunk` (used) or all of them (wasted).
  uint64_t judge_used(uint64_t chunk);
  uint64_t judge_wasted();

  uint64_t chunks_ = 0;
  uint64_t max_window_ = 1;  // chunks
  uint64_t initial_window_ = 2;
  // The stream: its last fault and the window read ahead of it.
  uint64_t last_fault_ = UINT64_MAX;
  uint64_t window_ = 0;  // chunks
  uint64_t start_ = 0, next_ = 0, end_ = 0;
  // Pays for itself: the cap on the window, faults in order in a row, the
  // chunks handed out and not judged yet (ascending), and how many of the
  // current stream's chunks were used.
  uint64_t cap_ = 1;
  uint64_t run_ = 0;
  std::deque<uint64_t> taken_;
  uint64_t stream_used_ = 0;
  // Read-around: random faults per window; kWindowDone once read whole.
  uint64_t window_chunks_ = 1;
  std::unique_ptr<uint8_t[], void (*)(void*)> window_faults_{nullptr, nullptr};
};

}  // namespace faultline::detail

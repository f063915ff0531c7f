// SPDX-License-Identifier: Apache-2.0
// Read-ahead and read-around for one region: from the order of its demand
// faults, which chunks to read before anyone asks for them.
//
//  - Read-ahead follows a sequential stream: two faults in order start a
//    window ahead of the stream that doubles on each further sequential
//    fault, up to readahead_max (like the kernel's readahead). A random
//    fault ends the stream and its pending window.
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
#include <memory>

namespace faultline::detail {

class ReadaheadDetector {
 public:
  // A whole window to read because random faults crowded into it.
  struct Span {
    uint64_t first = 0, last = 0;  // chunks [first, last)
  };

  ReadaheadDetector() = default;
  // A region of `chunks` chunks of 1 << fill_shift bytes whose windows
  // are readahead_max bytes; `readaround`: random faults may trigger it.
  ReadaheadDetector(uint64_t chunks, uint32_t fill_shift, uint64_t readahead_max, bool readaround);

  // A demand fault on `chunk`. Returns true and sets *around when this
  // fault made its window dense enough to be read whole.
  bool on_fault(uint64_t chunk, Span* around);

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
  void taken(uint64_t chunk) { next_ = chunk + 1; }
  bool pending() const { return next_ < end_; }
  // Drops the window (the region is going away).
  void stop() { next_ = end_ = 0; }

 private:
  static constexpr uint8_t kWindowDone = 255;

  bool note_random(uint64_t chunk, Span* around);

  uint64_t chunks_ = 0;
  uint64_t max_window_ = 1;  // chunks
  uint64_t initial_window_ = 2;
  // The stream: its last fault and the window read ahead of it.
  uint64_t last_fault_ = UINT64_MAX;
  uint64_t window_ = 0;  // chunks
  uint64_t start_ = 0, next_ = 0, end_ = 0;
  // Read-around: random faults per window; kWindowDone once read whole.
  uint64_t window_chunks_ = 1;
  std::unique_ptr<uint8_t[], void (*)(void*)> window_faults_{nullptr, nullptr};
};

}  // namespace faultline::detail

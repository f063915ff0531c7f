// SPDX-License-Identifier: Apache-2.0
#include "uring_reader.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>

#include "event_fd.h"

namespace faultline::detail {
namespace {

// The I/O priority "best effort, level 0" (linux/ioprio.h: class 2 in the
// bits from 13 up). Spelled out here because that header cannot be compiled
// as C++ since linux-libc-dev 6.1.192 (a parameter named `class`).
constexpr uint16_t kIoprioBestEffortHighest = 2 << 13;

// The kernel refuses registered buffers larger than 1 GiB: bigger memory is
// registered as several buffers.
constexpr size_t kMaxFixedBuffer = size_t{1} << 30;
// io_uring_submit attempts on EAGAIN/EBUSY (or no progress) before the rest
// of a batch is failed.
constexpr int kSubmitAttempts = 16;
// Buffered reads at least this long go straight to io_uring's io-wq workers
// (IOSQE_ASYNC). Inline, the copy out of the page cache runs on the fault-loop
// thread inside io_uring_submit, and reads of uncached pages crawl through
// io_uring's page-by-page async retry. Measured on the development VM
// (medians of 3-5 interleaved runs, MB/s): cold 1 MiB sequential QD8 505
// inline vs 1520 with IOSQE_ASYNC (pread workers 1448); cold 64 KiB
// sequential QD32 1171 vs 1521; cached 64 KiB..1 MiB QD8 about equal or
// better; cached 64 KiB QD1 latency 17-23 us inline vs 15 us. Small reads
// stay inline: a cached 4 KiB read costs ~2 us that way.
constexpr uint32_t kAsyncReadBytes = 64 << 10;
// How long the destructor waits for reads still in flight.
constexpr auto kDrainTimeout = std::chrono::seconds(1);

}  // namespace

unsigned default_max_background(unsigned entries) {
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  unsigned workers = std::min<unsigned>(entries, 4 * static_cast<unsigned>(cpus > 0 ? cpus : 1));
  return std::max(1u, workers > 2 ? workers - 2 : 1u);
}

void uring_rewind_sq(io_uring* ring) {
  io_uring_sq& sq = ring->sq;
  unsigned head = io_uring_smp_load_acquire(sq.khead);
  sq.sqe_head = head;
  sq.sqe_tail = head;
  io_uring_smp_store_release(sq.ktail, head);
}

UringReader::~UringReader() {
  if (!live_) return;
  drain();
  io_uring_queue_exit(&ring_);  // also releases the registered buffers and eventfd
}

int UringReader::init(const UringReaderOptions& options, int efd) {
  io_uring_params p{};
  // SUBMIT_ALL (5.18): a request that fails at submission does not stop the
  // rest of the batch. Older kernels reject the flag: retry without it.
  p.flags = IORING_SETUP_SUBMIT_ALL;
  int r = io_uring_queue_init_params(options.entries, &ring_, &p);
  if (r == -EINVAL) {
    p = io_uring_params{};
    r = io_uring_queue_init_params(options.entries, &ring_, &p);
  }
  if (r < 0) return r;
  r = io_uring_register_eventfd(&ring_, efd);
  if (r < 0) {
    io_uring_queue_exit(&ring_);
    return r;
  }
  live_ = true;
  efd_ = efd;
  sq_entries_ = p.sq_entries;
  cq_entries_ = p.cq_entries;
  // IOSQE_ASYNC exists since 5.6; NATIVE_WORKERS (5.12) also makes io-wq
  // workers threads of this process.
  async_large_reads_ = options.async_large_reads && (p.features & IORING_FEAT_NATIVE_WORKERS) != 0;
  max_background_ = options.max_background;
  background_.reserve(max_background_);
  unconsumed_.reserve(p.sq_entries);
  return 0;
}

int UringReader::register_buffers(std::span<std::byte> memory) {
  if (buffers_ != nullptr) {
    io_uring_unregister_buffers(&ring_);
    buffers_ = nullptr;
    buffers_len_ = 0;
  }
  if (memory.empty()) return 0;
  std::vector<iovec> iov;
  for (size_t off = 0; off < memory.size(); off += kMaxFixedBuffer)
    iov.push_back(iovec{memory.data() + off, std::min(kMaxFixedBuffer, memory.size() - off)});
  int r = io_uring_register_buffers(&ring_, iov.data(), static_cast<unsigned>(iov.size()));
  if (r < 0) return r;
  buffers_ = memory.data();
  buffers_len_ = memory.size();
  return 0;
}

void UringReader::set_aside(uint64_t tag, int err) {
  aside_.push_back(UringCompletion{tag, -err, false});
  signal_ = true;
}

void UringReader::queue(const UringRead& read) {
  if (!read.urgent && max_background_ > 0) {
    if (background_.size() >= max_background_ || !waiting_.empty()) return waiting_.push_back(read);
    background_.push_back(read.tag);
  }
  prep(read);
}

void UringReader::prep(const UringRead& read) {
  // Past the CQ size, completions could overflow (dropped on kernels
  // without IORING_FEAT_NODROP): refuse instead; the runtime retries EAGAIN.
  if (in_flight_ + unconsumed_.size() >= cq_entries_) {
    forget_background(read.tag);
    return set_aside(read.tag, EAGAIN);
  }
  io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
  if (sqe == nullptr) {  // more than the SQ holds in one batch: push out what we have
    flush();
    sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) {
      forget_background(read.tag);
      return set_aside(read.tag, EBUSY);
    }
  }
  bool fixed = false;
  if (buffers_ != nullptr && read.dest >= buffers_ && read.length > 0 &&
      static_cast<size_t>(read.dest - buffers_) + read.length <= buffers_len_) {
    size_t first = static_cast<size_t>(read.dest - buffers_);
    size_t index = first / kMaxFixedBuffer;
    if ((first + read.length - 1) / kMaxFixedBuffer == index) {
      io_uring_prep_read_fixed(sqe, read.fd, read.dest, read.length, read.offset, static_cast<int>(index));
      fixed = true;
    }
  }
  if (!fixed) io_uring_prep_read(sqe, read.fd, read.dest, read.length, read.offset);
  if (async_large_reads_ && read.length >= kAsyncReadBytes) sqe->flags |= IOSQE_ASYNC;
  // The block layer's priority for direct reads (buffered ones take the
  // task's): best effort, level 0, which every user may ask for.
  if (read.urgent) sqe->ioprio = kIoprioBestEffortHighest;
  io_uring_sqe_set_data64(sqe, read.tag);
  unconsumed_.push_back(read.tag);
}

void UringReader::forget_background(uint64_t tag) {
  if (background_.empty()) return;
  auto it = std::find(background_.begin(), background_.end(), tag);
  if (it == background_.end()) return;
  *it = background_.back();
  background_.pop_back();
}

// Background reads that waited, into the ring as far as there is room.
void UringReader::admit_waiting() {
  bool queued = false;
  while (!waiting_.empty() && background_.size() < max_background_) {
    UringRead read = waiting_.front();
    waiting_.pop_front();
    background_.push_back(read.tag);
    prep(read);
    queued = true;
  }
  if (queued) submit();
}

bool UringReader::make_urgent(uint64_t tag) {
  auto it = std::find_if(waiting_.begin(), waiting_.end(), [&](const UringRead& r) { return r.tag == tag; });
  if (it == waiting_.end()) return false;
  UringRead read = *it;
  waiting_.erase(it);
  read.urgent = true;
  prep(read);
  submit();
  return true;
}

int UringReader::submit() {
  int err = flush();
  // The runtime reaps right after submit(), but make what was set aside
  // visible to an edge-triggered poller too.
  if (signal_) signal_eventfd(efd_);
  signal_ = false;
  return err;
}

// Submits the SQEs queued since the last flush. Normally one io_uring_submit.
int UringReader::flush() {
  size_t consumed = 0;
  int attempts = 0;
  while (consumed < unconsumed_.size()) {
    int r = io_uring_submit(&ring_);
    if (r > 0) {
      // Partial progress leaves the rest queued in the SQ ring: go on.
      consumed += static_cast<size_t>(r);
      in_flight_ += static_cast<uint64_t>(r);
      continue;
    }
    if ((r == -EAGAIN || r == -EBUSY || r == -EINTR || r == 0) && ++attempts < kSubmitAttempts) {
      // EBUSY: completions are backed up; move them aside to make room.
      if (r == -EBUSY) set_aside_cqes();
      else if (r == -EAGAIN) sched_yield();
      continue;
    }
    // Give up on the rest: take the SQEs back out of the ring so a later
    // submit cannot start them too, and complete them with the error.
    int err = r < 0 ? -r : EAGAIN;
    uring_rewind_sq(&ring_);
    for (size_t i = consumed; i < unconsumed_.size(); ++i) {
      forget_background(unconsumed_[i]);
      set_aside(unconsumed_[i], err);
    }
    unconsumed_.clear();
    return -err;
  }
  unconsumed_.clear();
  return 0;
}

void UringReader::set_aside_cqes() {
  io_uring_cqe* cqes[64];
  for (;;) {
    unsigned got = io_uring_peek_batch_cqe(&ring_, cqes, 64);
    for (unsigned i = 0; i < got; ++i) aside_.push_back(UringCompletion{io_uring_cqe_get_data64(cqes[i]), cqes[i]->res});
    io_uring_cq_advance(&ring_, got);
    in_flight_ -= got;
    if (got > 0) signal_ = true;
    if (got < 64) break;
  }
}

size_t UringReader::reap(std::span<UringCompletion> out) {
  size_t n = 0;
  while (n < out.size() && !aside_.empty()) {
    out[n++] = aside_.front();
    aside_.pop_front();
  }
  io_uring_cqe* cqes[64];
  while (n < out.size()) {
    unsigned want = static_cast<unsigned>(std::min<size_t>(64, out.size() - n));
    unsigned got = io_uring_peek_batch_cqe(&ring_, cqes, want);
    for (unsigned i = 0; i < got; ++i) out[n++] = UringCompletion{io_uring_cqe_get_data64(cqes[i]), cqes[i]->res};
    io_uring_cq_advance(&ring_, got);
    in_flight_ -= got;
    if (got < want) break;
  }
  if (!background_.empty())
    for (size_t i = 0; i < n; ++i) forget_background(out[i].tag);
  // After the CQ was read: reads admitted now complete in a later reap(),
  // behind every read that was in the ring before them.
  admit_waiting();
  return n;
}

bool UringReader::ready() const {
  return !aside_.empty() || io_uring_cq_ready(&ring_) > 0;
}

// The owner reaps everything before destroying a reader; if it did not,
// wait (bounded) so no read writes into memory after it is gone.
void UringReader::drain() {
  auto deadline = std::chrono::steady_clock::now() + kDrainTimeout;
  while (in_flight_ > 0 && std::chrono::steady_clock::now() < deadline) {
    __kernel_timespec ts{0, 50'000'000};
    io_uring_cqe* cqe = nullptr;
    int r = io_uring_wait_cqe_timeout(&ring_, &cqe, &ts);
    if (r == 0 && cqe != nullptr) {
      io_uring_cqe_seen(&ring_, cqe);
      --in_flight_;
    } else if (r != -ETIME && r != -EINTR && r != -EAGAIN) {
      break;
    }
  }
}

}  // namespace faultline::detail

// SPDX-License-Identifier: Apache-2.0
// UringReader: the io_uring half of an asynchronous backend. It owns one ring
// with the backend's completion eventfd registered, takes reads of (fd,
// offset, length, dest, tag), starts a batch of them with one
// io_uring_submit, and hands back exactly one completion per read, whatever
// went wrong. FileBackend and ZstdSnapshotBackend read through it.
//
// The caller must:
//  - use it from one thread, the fault loop's (submit() and reap() of a
//    Backend): io_uring runs the completion of inline reads as task_work on
//    the submitting task;
//  - keep every dest valid until its completion has been reaped, and the
//    eventfd open while the reader lives;
//  - call submit() after queue(), and reap() whenever the eventfd had an
//    edge, until reap() returns fewer than it was asked for.
//
// What it does, so a backend need not:
//  - init(): IORING_SETUP_SUBMIT_ALL where the kernel has it (a read that
//    fails at submission does not stop the rest of the batch), and the
//    eventfd registered with io_uring_register_eventfd. Not the _async
//    variant: it signals only completions posted from io-wq workers, so
//    reads completing inline or through task_work would never raise an edge.
//  - queue(): a read that would take the reads in flight past capacity()
//    (the CQ's size: more could overflow it) completes with -EAGAIN; a batch
//    larger than the SQ is pushed out in pieces. Buffered reads of 64 KiB
//    and more are flagged IOSQE_ASYNC (see uring_reader.cc), reads into
//    registered buffers use READ_FIXED.
//  - submit(): EAGAIN, EBUSY and EINTR are retried a few times (on EBUSY the
//    ready completions are moved aside to make room); after that the reads
//    the kernel did not take are withdrawn from the SQ and complete with the
//    error (UringCompletion::submitted = false).
//  - Whenever completions are moved aside in queue() or submit() (failures,
//    completions taken off the CQ on EBUSY), one eventfd write says so, so
//    an edge-triggered poller comes back for them.
//  - Background reads (UringRead::urgent false) beyond max_background in
//    the kernel wait in a queue of the reader's own, and enter the ring as
//    reads complete; urgent reads go in at once, at the best best-effort
//    I/O priority. make_urgent() sends a waiting background read in at
//    once. Why: io_uring hands buffered reads to io-wq workers, whose queue
//    is FIFO, so a demand read submitted behind a deep queue of read-ahead
//    waits for all of it (docs/design.md, "Demand first").
//  - The destructor waits (up to a second) for reads still in flight, so
//    none lands in memory its owner is about to free.
#pragma once

#include <liburing.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <span>
#include <vector>

namespace faultline::detail {

// `length` bytes of `fd` at `offset` into `dest`; `tag` comes back with the
// completion.
struct UringRead {
  int fd = -1;
  uint64_t offset = 0;
  uint32_t length = 0;
  std::byte* dest = nullptr;
  uint64_t tag = 0;
  // false: read-ahead or prefetch, which may wait for room (max_background).
  bool urgent = true;
};

struct UringCompletion {
  uint64_t tag = 0;
  int32_t result = 0;  // bytes read (short at the end of the file), or -errno
  // false: the kernel never took the read (no room, or submission failed);
  // result says why, and dest was not written.
  bool submitted = true;
};

struct UringReaderOptions {
  unsigned entries = 64;  // SQ entries; the kernel makes the CQ twice that
  // Flag buffered reads of 64 KiB and more IOSQE_ASYNC (O_DIRECT reads are
  // asynchronous anyway: set false for them).
  bool async_large_reads = true;
  // Background reads in the kernel at most (0: no limit); the rest wait in
  // the reader until reads complete.
  unsigned max_background = 0;
};

// The default max_background for a ring of `entries`: two io-wq workers
// fewer than io_uring starts at most (min(entries, 4 per CPU)), so a demand
// read always finds a worker free.
unsigned default_max_background(unsigned entries);

// Drops the SQEs queued in `ring` but not consumed by the kernel. Without
// SQPOLL the kernel reads the SQ tail only inside io_uring_enter, so moving
// it back to the kernel's head is safe. (liburing 2.x keeps the SQ array as
// an identity map and tracks sqe_head/sqe_tail in struct io_uring_sq.)
void uring_rewind_sq(io_uring* ring);

class UringReader {
 public:
  UringReader() = default;
  ~UringReader();
  UringReader(const UringReader&) = delete;
  UringReader& operator=(const UringReader&) = delete;

  // Sets up the ring and registers `efd`. Returns 0, or the negative errno
  // of the step that failed (then nothing is left set up).
  int init(const UringReaderOptions& options, int efd);
  bool live() const { return live_; }

  unsigned sq_entries() const { return sq_entries_; }
  // Reads in flight at most (the CQ's size).
  unsigned capacity() const { return cq_entries_; }
  // Reads taken by the kernel whose completion is not reaped yet.
  uint64_t in_flight() const { return in_flight_; }
  // Background reads waiting in the reader for room in the kernel.
  size_t waiting() const { return waiting_.size(); }

  // Registers `memory` as fixed buffers (in pieces of at most 1 GiB, the
  // kernel's limit), replacing any registered before; empty: unregisters.
  // Returns 0 or the negative errno (then plain reads are used).
  int register_buffers(std::span<std::byte> memory);

  // Prepares one read for the next submit().
  void queue(const UringRead& read);
  // Starts every read queued since the last submit(): one io_uring_submit
  // unless the kernel takes them in pieces. Returns 0, or the negative errno
  // it gave up with (those reads then complete with it).
  int submit();

  // Moves up to out.size() completions into out: first those moved aside,
  // then the CQ's. Never blocks.
  size_t reap(std::span<UringCompletion> out);
  // Whether reap() has something to return now.
  bool ready() const;
  // The read queued with `tag` is now urgent: if it still waits in the
  // reader, it is submitted at once (returns true). One the kernel already
  // has cannot be moved (false).
  bool make_urgent(uint64_t tag);

 private:
  void set_aside(uint64_t tag, int err);
  void prep(const UringRead& read);
  void forget_background(uint64_t tag);
  void admit_waiting();
  void set_aside_cqes();
  int flush();
  void drain();

  io_uring ring_{};
  bool live_ = false;
  int efd_ = -1;
  unsigned sq_entries_ = 0;
  unsigned cq_entries_ = 0;
  bool async_large_reads_ = false;
  uint64_t in_flight_ = 0;               // consumed by the kernel, CQE not yet reaped
  unsigned max_background_ = 0;
  std::vector<uint64_t> background_;     // tags of background reads in the ring (at most max_background_)
  std::deque<UringRead> waiting_;        // background reads held back
  std::vector<uint64_t> unconsumed_;     // tags of SQEs queued, not yet taken by the kernel
  std::deque<UringCompletion> aside_;    // failed in queue()/submit(), or taken off the CQ on EBUSY
  bool signal_ = false;                  // aside_ grew since the last submit()
  std::byte* buffers_ = nullptr;         // registered fixed buffers, if any
  size_t buffers_len_ = 0;
};

}  // namespace faultline::detail

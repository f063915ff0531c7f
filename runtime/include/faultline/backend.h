// SPDX-License-Identifier: Apache-2.0
// The Backend interface: where a region's bytes come from.
//
// A backend is an object of size() bytes that the runtime reads asynchronously
// and in batches. The runtime hands it ReadRequests pointing into the
// runtime's own staging memory (never into a registered region: a read there
// would fault on itself), and collects ReadCompletions later. Completion is
// signalled through completion_fd(), which the fault loop polls edge-triggered
// next to the userfaultfd, so a slow read never blocks other faults.
//
// Contract (what the runtime guarantees, and what a backend must do):
//  - submit() and reap() are called only from the fault-loop thread of one
//    Runtime. A backend may be shared by many regions of that runtime, not by
//    two runtimes at once. size(), name(), alignment() and queue_depth() may be
//    called from any thread and must not change.
//  - The runtime never has more than queue_depth() reads in flight.
//  - Every submitted request gets exactly one completion, carrying its tag,
//    within bounded time (a backend with a remote peer enforces its own
//    deadline and completes with an error past it). submit() never throws and
//    never blocks for long: a request that cannot be started completes with
//    an error.
//  - offset, length and dest of a request are multiples of alignment(), and
//    offset < size(). length may run past size(): the read is then short.
//  - A completion may already be available when submit() returns; the runtime
//    calls reap() right after submit() and again whenever completion_fd() has
//    had an edge, each time until reap() returns fewer than it asked for. The
//    runtime never reads completion_fd() itself. completion_fd() may be -1 if
//    every read completes inside submit(). reap() never blocks.
//  - submit() and reap() run on the fault-loop thread, so work a kernel
//    interface runs "on the submitting task" (io_uring task_work) happens
//    there; do not hand the same backend to another thread.
//  - make_urgent(tag) says a thread now waits on a read submitted as
//    background (urgent false): the fault loop calls it, once per read, when
//    a demand fault lands on a chunk being read ahead or prefetched. A
//    backend with a queue of its own moves the read ahead of the background
//    work still queued (and asks its own source, or its peer, to do the
//    same); one whose reads are all in the kernel or on the wire already
//    may do nothing. The default does nothing. It never completes the read
//    itself and never blocks. The tag may also have completed meanwhile
//    (not yet reaped): then there is nothing to do.
//  - A read error or a short read is reported as is; the runtime retries
//    short and EAGAIN/EINTR reads a few times, then poisons the pages so the
//    faulting access gets SIGBUS.
//
// Errors, everywhere in this interface, are negative errno values (-EIO,
// -EROFS, -ETIMEDOUT...): ReadCompletion::result, WriteResult::error,
// sync_data() and read_data(). 0 or a byte count means success. Only
// construction fails by exception (faultline::Error); the methods never throw.
//
// The write path (optional; used by write-back regions, RegionOptions::
// write_back). A backend that can store bytes overrides writable(),
// write_data(), sync_data() and read_data() (named so as not to hide write(2)
// and sync(2) in a backend's own code); the defaults say "read-only", so a read-only
// backend needs nothing. Contract:
//  - write_data() and sync_data() are called from application threads
//    (Region::flush, Region::close) and from the runtime's eviction, never
//    from the fault loop. Two regions over one backend may call them at the
//    same time: a backend serializes them itself if it must. They may block
//    (they are the slow part of a flush) and run while the fault loop calls
//    submit() and reap(), so a backend keeps its writes apart from its reads.
//  - write_data() stores every byte of every request before it returns, or
//    reports the first failure; requests may be carried out in any order
//    and concurrently. A request never crosses size() (write-back regions
//    lie within the backend). src stays valid until write_data() returns.
//  - sync_data() returns once everything written before it is durable.
//  - Failures are values, not exceptions: a negative errno (-ENOSPC, -EIO...),
//    0 for success. The runtime keeps the pages dirty and resident and writes
//    them all again on the next flush, so a later successful write_data()
//    plus sync_data() of the same bytes must make them durable (after an
//    fsync error, re-writing is what makes this true on Linux).
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace faultline {

struct ReadRequest {
  uint64_t offset = 0;      // byte offset in the backend object
  uint32_t length = 0;      // bytes wanted
  std::byte* dest = nullptr;  // staging memory; valid until the completion is reaped
  uint64_t tag = 0;         // opaque to the backend, returned in the completion
  bool urgent = false;      // a thread is blocked on it (demand fault); the
                            // rest is read-ahead or prefetch. Backends with a
                            // queue of their own serve urgent reads first.
};

struct ReadCompletion {
  uint64_t tag = 0;
  // Bytes read into dest (0..length; short only at the end of the object or
  // on a transient problem), or a negative errno.
  int64_t result = 0;
  // The backend knows the bytes are all zero (a sparse hole, a zero chunk in
  // a snapshot) and did not write dest; result is the length it covers.
  bool zero = false;
  // The bytes already sit in the backend's memory (a buffer, a mapped file):
  // they are at data, dest was not written, and the runtime places them from
  // there. Must stay valid and unchanged until the next submit() or reap().
  const std::byte* data = nullptr;
};

// One piece of a write-back: `length` bytes from `src` to `offset`.
struct WriteRequest {
  uint64_t offset = 0;
  uint32_t length = 0;
  const std::byte* src = nullptr;
};

struct WriteResult {
  int error = 0;        // 0, or the negative errno of the first failure
  uint64_t offset = 0;  // backend offset of the request that failed
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual uint64_t size() const = 0;
  // For errors, logs and statistics, e.g. "file /data/x (io_uring)".
  virtual std::string name() const = 0;
  virtual uint32_t queue_depth() const = 0;
  virtual uint32_t alignment() const { return 1; }
  virtual int completion_fd() const = 0;

  virtual void submit(std::span<const ReadRequest> reads) = 0;
  // Moves up to out.size() completions into out; returns how many.
  virtual size_t reap(std::span<ReadCompletion> out) = 0;
  // The read submitted with `tag` is now a demand read: serve it before the
  // background reads still queued (see the contract above).
  virtual void make_urgent(uint64_t tag) { (void)tag; }

  // Called by the runtime before the first submit(), with the staging memory
  // every dest will point into, and again (with the same span) if the backend
  // is attached anew after its last region went away. A backend may pin or
  // register it (io_uring fixed buffers); it must not write it outside reads.
  // Failure to register is not an error: plain reads work.
  virtual void attach_staging(std::span<std::byte> staging) { (void)staging; }

  // The write path: see the contract above. Defaults: read-only, every
  // call fails with -EROFS.
  virtual bool writable() const { return false; }
  // When writable() is false: why, and what (if anything) would change it,
  // for the error a write-back region over this backend gets.
  virtual std::string read_only_reason() const { return "this backend is read-only"; }
  virtual WriteResult write_data(std::span<const WriteRequest> writes) {
    return {-EROFS, writes.empty() ? 0 : writes[0].offset};
  }
  // 0, or a negative errno.
  virtual int sync_data() { return -EROFS; }
  // Reads back what write_data() stored: a blocking read of out.size()
  // bytes at offset, from any thread but the fault loop's. Returns the
  // bytes read or -errno. Before dropping a chunk of a write-back region
  // under a memory budget, the runtime compares it with these bytes to
  // learn which pages still need writing.
  virtual int64_t read_data(uint64_t offset, std::span<std::byte> out) {
    (void)offset, (void)out;
    return -EROFS;
  }
};

}  // namespace faultline

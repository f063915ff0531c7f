// SPDX-License-Identifier: Apache-2.0
// FileBackend: reads a local file with io_uring (liburing), or with pread(2)
// on a few worker threads when io_uring is unavailable or not wanted.
//
// io_uring engine
//   One ring of queue_depth SQEs (the kernel gives the CQ twice that), an
//   eventfd registered with io_uring_register_eventfd (not the _async variant,
//   which only signals completions posted from io-wq workers, so reads that
//   complete inline or through task_work would never raise an edge). The
//   runtime polls the eventfd edge-triggered and never reads it; nor do we.
//   submit() prepares one SQE per request (a fixed-buffer read when the
//   destination lies in the registered staging memory) and calls
//   io_uring_submit once. reap() peeks CQEs in batches and never blocks.
//
// pread engine
//   pread_threads workers take requests from a mutex-protected queue (urgent
//   ones first), put completions on a second queue, and write the eventfd
//   when that queue goes from empty to non-empty.
//
// Both engines: if reap() fills `out` and completions are still left, it
// writes the eventfd itself, so a caller that reaps in small batches still
// gets an edge for the rest.
#include "faultline/file_backend.h"

#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "faultline/error.h"
#include "unique_fd.h"

#ifndef STATX_DIOALIGN
#define STATX_DIOALIGN 0x00002000U
#endif

namespace faultline {
namespace {

using detail::UniqueFd;

constexpr uint32_t kMaxQueueDepth = 4096;
constexpr uint32_t kMaxPreadThreads = 1024;
// O_DIRECT alignment floor. Logical block sizes are 512 or 4096 on nearly
// every device, the runtime stages whole pages anyway, and 4096 keeps reads
// valid if the file is later copied to a 4Kn disk. statx(STATX_DIOALIGN)
// raises it when the file system asks for more.
constexpr uint32_t kDirectAlignment = 4096;
// The kernel refuses registered buffers larger than 1 GiB: bigger staging
// memory is registered as several buffers.
constexpr size_t kMaxFixedBuffer = size_t{1} << 30;
// io_uring_submit attempts on EAGAIN/EBUSY (or partial progress) before the
// rest of a batch is failed.
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

std::string errno_text(int err) { return std::strerror(err); }

void signal_eventfd(int efd) {
  uint64_t one = 1;
  ssize_t r = ::write(efd, &one, sizeof one);  // EAGAIN only after 2^64-2 writes
  (void)r;
}

// Reads r.length bytes or up to the end of the file; a short result means EOF
// or an error after some progress.
int64_t pread_fully(int fd, const ReadRequest& r) {
  uint64_t done = 0;
  while (done < r.length) {
    ssize_t n = ::pread(fd, r.dest + done, r.length - done, static_cast<off_t>(r.offset + done));
    if (n > 0) {
      done += static_cast<uint64_t>(n);
    } else if (n == 0) {
      break;
    } else if (errno != EINTR) {
      return done > 0 ? static_cast<int64_t>(done) : -int64_t{errno};
    }
  }
  return static_cast<int64_t>(done);
}

const char* file_type(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

// Owns an initialised ring.
struct Ring {
  io_uring ring{};
  bool live = false;
  Ring() = default;
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;
  ~Ring() { reset(); }
  void reset() {
    if (live) io_uring_queue_exit(&ring);
    live = false;
  }
};

// The pread engine. Owns its threads; the destructor stops and joins them,
// dropping requests still queued (the runtime has none in flight by then).
class PreadPool {
 public:
  PreadPool(int fd, int efd) : fd_(fd), efd_(efd) {}
  PreadPool(const PreadPool&) = delete;
  PreadPool& operator=(const PreadPool&) = delete;
  ~PreadPool() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

  // Throws std::system_error if a thread cannot be created; the threads
  // already started are joined by the destructor.
  void start(uint32_t n) {
    threads_.reserve(n);
    for (uint32_t i = 0; i < n; ++i) {
      threads_.emplace_back([this] { run(); });
      pthread_setname_np(threads_.back().native_handle(), "faultline-pread");
    }
  }

  void submit(std::span<const ReadRequest> reads) {
    if (reads.empty()) return;
    {
      std::lock_guard lock(mu_);
      for (const ReadRequest& r : reads) (r.urgent ? urgent_ : normal_).push_back(r);
    }
    if (reads.size() == 1)
      cv_.notify_one();
    else
      cv_.notify_all();
  }

  size_t reap(std::span<ReadCompletion> out) {
    size_t n = 0;
    bool more = false;
    {
      std::lock_guard lock(mu_);
      while (n < out.size() && !done_.empty()) {
        out[n++] = done_.front();
        done_.pop_front();
      }
      more = !done_.empty();
    }
    // Workers only signal on empty -> non-empty; re-arm the edge for what is left.
    if (more) signal_eventfd(efd_);
    return n;
  }

 private:
  void run() {
    for (;;) {
      ReadRequest r;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [this] { return stopping_ || !urgent_.empty() || !normal_.empty(); });
        if (stopping_) return;
        auto& q = urgent_.empty() ? normal_ : urgent_;
        r = q.front();
        q.pop_front();
      }
      ReadCompletion c{r.tag, pread_fully(fd_, r), false};
      bool was_empty;
      {
        std::lock_guard lock(mu_);
        was_empty = done_.empty();
        done_.push_back(c);
      }
      if (was_empty) signal_eventfd(efd_);
    }
  }

  const int fd_;
  const int efd_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<ReadRequest> urgent_;
  std::deque<ReadRequest> normal_;
  std::deque<ReadCompletion> done_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace

class FileBackend::Impl {
 public:
  Impl(const std::string& path, const FileBackendOptions& options);
  ~Impl();
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  void submit(std::span<const ReadRequest> reads);
  size_t reap(std::span<ReadCompletion> out);
  void attach_staging(std::span<std::byte> staging);

  std::string path_;
  FileBackendOptions options_;
  uint64_t size_ = 0;
  uint32_t alignment_ = 1;
  bool uring_ = false;
  std::string name_;

  // Members are destroyed in reverse order: the workers and the ring go
  // before the descriptors they use.
  UniqueFd file_;
  UniqueFd efd_;

  // io_uring engine. Only the fault-loop thread touches these.
  Ring ring_;
  unsigned cq_entries_ = 0;
  bool async_large_reads_ = false;       // see kAsyncReadBytes
  uint64_t in_flight_ = 0;               // consumed by the kernel, CQE not yet reaped
  std::vector<uint64_t> pending_tags_;   // SQEs of this submit() not yet consumed
  std::deque<ReadCompletion> deferred_;  // failed in submit(), or reaped early on EBUSY
  std::byte* staging_ = nullptr;         // registered fixed buffers, if any
  size_t staging_len_ = 0;

  // pread engine.
  std::unique_ptr<PreadPool> pool_;

  // Write path (options_.writable): its own ring, used by one caller at a
  // time under write_mu_, never by the fault loop.
  WriteResult write_data(std::span<const WriteRequest> writes);
  int sync_data();
  std::mutex write_mu_;
  UniqueFd write_file_;  // file_ itself, or a buffered descriptor when direct
  Ring write_ring_;
  bool write_ring_tried_ = false;

 private:
  int setup_uring();  // 0 or an errno
  void prepare(io_uring_sqe* sqe, const ReadRequest& r);
  void flush();
  void fail(uint64_t tag, int err) { deferred_.push_back(ReadCompletion{tag, -int64_t{err}, false}); }
  static void rewind_sq(io_uring* ring);
  void defer_ready_cqes();
  void drain_in_flight();
};

FileBackend::Impl::Impl(const std::string& path, const FileBackendOptions& options)
    : path_(path), options_(options) {
  using Engine = FileBackendOptions::Engine;
  if (options.queue_depth < 1 || options.queue_depth > kMaxQueueDepth)
    throw Error("FileBackendOptions.queue_depth = " + std::to_string(options.queue_depth) + " for " + path +
                ": must be 1.." + std::to_string(kMaxQueueDepth));
  if (options.pread_threads < 1 || options.pread_threads > kMaxPreadThreads)
    throw Error("FileBackendOptions.pread_threads = " + std::to_string(options.pread_threads) + " for " +
                path + ": must be 1.." + std::to_string(kMaxPreadThreads));
  if (options.engine != Engine::kAuto && options.engine != Engine::kIoUring && options.engine != Engine::kPread)
    throw Error("FileBackendOptions.engine = " + std::to_string(static_cast<int>(options.engine)) + " for " +
                path + ": not a known engine");
  if (path.empty()) throw Error("FileBackend: empty path", ENOENT);

  // O_NONBLOCK so that opening a FIFO by mistake does not block; it is
  // cleared again below (on a regular file it would make io_uring reads of
  // uncached data fail with EAGAIN instead of waiting).
  int flags = (options.writable ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NONBLOCK | (options.direct ? O_DIRECT : 0);
  file_ = UniqueFd(::open(path.c_str(), flags));
  if (!file_) {
    int err = errno;
    if (options.direct && err == EINVAL)
      throw Error("cannot open " + path + " with O_DIRECT (FileBackendOptions.direct = true): " + errno_text(err) +
                      " (the file system does not support direct I/O)",
                  err);
    throw Error("cannot open " + path + ": " + errno_text(err), err);
  }
  struct stat st {};
  if (::fstat(file_.get(), &st) != 0) {
    int err = errno;
    throw Error("cannot stat " + path + ": " + errno_text(err), err);
  }
  if (!S_ISREG(st.st_mode)) throw Error(path + " is " + file_type(st.st_mode) + ", not a regular file", EINVAL);
  if (st.st_size <= 0) throw Error(path + " is empty: nothing to map", EINVAL);
  size_ = static_cast<uint64_t>(st.st_size);
  int fl = ::fcntl(file_.get(), F_GETFL);
  if (fl < 0 || ::fcntl(file_.get(), F_SETFL, fl & ~O_NONBLOCK) != 0) {
    int err = errno;
    throw Error("cannot clear O_NONBLOCK on " + path + ": " + errno_text(err), err);
  }

  if (options.direct) {
    alignment_ = kDirectAlignment;
    struct statx sx {};
    if (::statx(file_.get(), "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 && (sx.stx_mask & STATX_DIOALIGN)) {
      alignment_ = std::max({alignment_, uint32_t{sx.stx_dio_offset_align}, uint32_t{sx.stx_dio_mem_align}});
    }
  }

  if (options.writable) {
    // Write-back goes through the page cache (pages are written one or a
    // few at a time, and the last one may be partial): with O_DIRECT reads,
    // a second, buffered descriptor. Direct reads flush the cache first.
    write_file_ = UniqueFd(options.direct ? ::open(path.c_str(), O_RDWR | O_CLOEXEC) : ::dup(file_.get()));
    if (!write_file_) {
      int err = errno;
      throw Error("cannot open " + path + " for writing: " + errno_text(err), err);
    }
  }

  efd_ = UniqueFd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!efd_) {
    int err = errno;
    throw Error("cannot create the completion eventfd for " + path + ": " + errno_text(err), err);
  }

  if (options.engine != Engine::kPread) {
    int err = setup_uring();
    if (err == 0) {
      uring_ = true;
    } else if (options.engine == Engine::kIoUring) {
      throw Error("io_uring unavailable for " + path + " (FileBackendOptions.engine = kIoUring): " + errno_text(err),
                  err);
    } else {
      std::fprintf(stderr, "faultline: io_uring unavailable for %s (%s), using pread workers\n", path.c_str(),
                   errno_text(err).c_str());
    }
  }
  if (!uring_) {
    pool_ = std::make_unique<PreadPool>(file_.get(), efd_.get());
    try {
      pool_->start(options.pread_threads);
    } catch (const std::system_error& e) {
      int err = e.code().value();
      throw Error("cannot start " + std::to_string(options.pread_threads) + " pread workers for " + path + ": " +
                      e.what(),
                  err);
    }
  }
  name_ = "file " + path + " (" + (uring_ ? "io_uring" : "pread") + (options.direct ? ", O_DIRECT" : "") +
          (options.writable ? ", read-write" : "") + ")";
}

FileBackend::Impl::~Impl() {
  if (uring_) drain_in_flight();
  // Members do the rest: pool_ joins its workers, the ring is torn down
  // (which releases the registered buffers and eventfd), then the fds close.
}

int FileBackend::Impl::setup_uring() {
  io_uring_params p{};
  // SUBMIT_ALL (5.18): a request that fails at submission does not stop the
  // rest of the batch. Older kernels reject the flag: retry without it.
  p.flags = IORING_SETUP_SUBMIT_ALL;
  int r = io_uring_queue_init_params(options_.queue_depth, &ring_.ring, &p);
  if (r == -EINVAL) {
    p = io_uring_params{};
    r = io_uring_queue_init_params(options_.queue_depth, &ring_.ring, &p);
  }
  if (r < 0) return -r;
  ring_.live = true;
  r = io_uring_register_eventfd(&ring_.ring, efd_.get());
  if (r < 0) {
    ring_.reset();
    return -r;
  }
  cq_entries_ = p.cq_entries;
  // IOSQE_ASYNC exists since 5.6; NATIVE_WORKERS (5.12) also makes io-wq
  // workers threads of this process. O_DIRECT reads are asynchronous anyway.
  async_large_reads_ = !options_.direct && (p.features & IORING_FEAT_NATIVE_WORKERS) != 0;
  pending_tags_.reserve(p.sq_entries);
  return 0;
}

void FileBackend::Impl::prepare(io_uring_sqe* sqe, const ReadRequest& r) {
  const int fd = file_.get();
  bool fixed = false;
  if (staging_ != nullptr && r.dest >= staging_ && r.length > 0 &&
      static_cast<size_t>(r.dest - staging_) + r.length <= staging_len_) {
    size_t first = static_cast<size_t>(r.dest - staging_);
    size_t index = first / kMaxFixedBuffer;
    if ((first + r.length - 1) / kMaxFixedBuffer == index) {
      io_uring_prep_read_fixed(sqe, fd, r.dest, r.length, r.offset, static_cast<int>(index));
      fixed = true;
    }
  }
  if (!fixed) io_uring_prep_read(sqe, fd, r.dest, r.length, r.offset);
  if (async_large_reads_ && r.length >= kAsyncReadBytes) sqe->flags |= IOSQE_ASYNC;
  io_uring_sqe_set_data64(sqe, r.tag);
}

void FileBackend::Impl::submit(std::span<const ReadRequest> reads) {
  if (!uring_) {
    pool_->submit(reads);
    return;
  }
  const size_t failed_before = deferred_.size();
  pending_tags_.clear();
  for (const ReadRequest& r : reads) {
    // The runtime keeps at most queue_depth() reads in flight. Past the CQ
    // size, completions could overflow (dropped on kernels without
    // IORING_FEAT_NODROP): refuse instead; the runtime retries EAGAIN.
    if (in_flight_ + pending_tags_.size() >= cq_entries_) {
      fail(r.tag, EAGAIN);
      continue;
    }
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_.ring);
    if (sqe == nullptr) {  // more than the SQ holds in one call: push out what we have
      flush();
      sqe = io_uring_get_sqe(&ring_.ring);
      if (sqe == nullptr) {
        fail(r.tag, EBUSY);
        continue;
      }
    }
    prepare(sqe, r);
    pending_tags_.push_back(r.tag);
  }
  flush();
  // The runtime reaps right after submit(), but make failures visible to an
  // edge-triggered poller too.
  if (deferred_.size() != failed_before) signal_eventfd(efd_.get());
}

// Submits the SQEs prepared since the last flush. Normally one io_uring_submit.
void FileBackend::Impl::flush() {
  size_t consumed = 0;
  int attempts = 0;
  while (consumed < pending_tags_.size()) {
    int r = io_uring_submit(&ring_.ring);
    if (r > 0) {
      // Partial progress leaves the rest queued in the SQ ring: go on.
      consumed += static_cast<size_t>(r);
      in_flight_ += static_cast<uint64_t>(r);
      continue;
    }
    if ((r == -EAGAIN || r == -EBUSY || r == -EINTR || r == 0) && ++attempts < kSubmitAttempts) {
      // EBUSY: completions are backed up; move them aside to make room.
      if (r == -EBUSY) defer_ready_cqes();
      else if (r == -EAGAIN) sched_yield();
      continue;
    }
    // Give up on the rest: take the SQEs back out of the ring so a later
    // submit cannot start them too, and complete them with the error.
    int err = r < 0 ? -r : EAGAIN;
    rewind_sq(&ring_.ring);
    for (size_t i = consumed; i < pending_tags_.size(); ++i) fail(pending_tags_[i], err);
    break;
  }
  pending_tags_.clear();
}

// Drops the SQEs that were queued but not consumed by the kernel. Without
// SQPOLL the kernel reads the SQ tail only inside io_uring_enter, so moving
// it back to the kernel's head is safe. (liburing 2.x keeps the SQ array as
// an identity map and tracks sqe_head/sqe_tail in struct io_uring_sq.)
void FileBackend::Impl::rewind_sq(io_uring* ring) {
  io_uring_sq& sq = ring->sq;
  unsigned head = io_uring_smp_load_acquire(sq.khead);
  sq.sqe_head = head;
  sq.sqe_tail = head;
  io_uring_smp_store_release(sq.ktail, head);
}

void FileBackend::Impl::defer_ready_cqes() {
  io_uring_cqe* cqes[64];
  for (;;) {
    unsigned got = io_uring_peek_batch_cqe(&ring_.ring, cqes, 64);
    for (unsigned i = 0; i < got; ++i)
      deferred_.push_back(ReadCompletion{io_uring_cqe_get_data64(cqes[i]), cqes[i]->res, false});
    io_uring_cq_advance(&ring_.ring, got);
    in_flight_ -= got;
    if (got < 64) break;
  }
}

size_t FileBackend::Impl::reap(std::span<ReadCompletion> out) {
  if (!uring_) return pool_->reap(out);
  size_t n = 0;
  while (n < out.size() && !deferred_.empty()) {
    out[n++] = deferred_.front();
    deferred_.pop_front();
  }
  io_uring_cqe* cqes[64];
  while (n < out.size()) {
    unsigned want = static_cast<unsigned>(std::min<size_t>(64, out.size() - n));
    unsigned got = io_uring_peek_batch_cqe(&ring_.ring, cqes, want);
    for (unsigned i = 0; i < got; ++i)
      out[n++] = ReadCompletion{io_uring_cqe_get_data64(cqes[i]), cqes[i]->res, false};
    io_uring_cq_advance(&ring_.ring, got);
    in_flight_ -= got;
    if (got < want) break;
  }
  // `out` is full and completions are left: re-arm the edge for them.
  if (n == out.size() && (!deferred_.empty() || io_uring_cq_ready(&ring_.ring) > 0)) signal_eventfd(efd_.get());
  return n;
}

void FileBackend::Impl::attach_staging(std::span<std::byte> staging) {
  if (!uring_ || !options_.direct) return;
  if (staging_ != nullptr) {
    // A new runtime after an old one: its staging memory replaces the old.
    io_uring_unregister_buffers(&ring_.ring);
    staging_ = nullptr;
    staging_len_ = 0;
  }
  if (staging.empty()) return;
  std::vector<iovec> iov;
  for (size_t off = 0; off < staging.size(); off += kMaxFixedBuffer)
    iov.push_back(iovec{staging.data() + off, std::min(kMaxFixedBuffer, staging.size() - off)});
  int r = io_uring_register_buffers(&ring_.ring, iov.data(), static_cast<unsigned>(iov.size()));
  if (r < 0) {
    // Not fatal: plain reads into the same memory work, at the cost of
    // pinning pages per read. ENOMEM usually means RLIMIT_MEMLOCK.
    std::fprintf(stderr, "faultline: cannot register %zu bytes of staging memory with io_uring for %s (%s), "
                 "using unregistered buffers\n", staging.size(), path_.c_str(), errno_text(-r).c_str());
    return;
  }
  staging_ = staging.data();
  staging_len_ = staging.size();
}

// The runtime reaps everything before destroying a backend; if it did not,
// wait (bounded) so no read writes into staging memory after we are gone.
void FileBackend::Impl::drain_in_flight() {
  auto deadline = std::chrono::steady_clock::now() + kDrainTimeout;
  while (in_flight_ > 0 && std::chrono::steady_clock::now() < deadline) {
    __kernel_timespec ts{0, 50'000'000};
    io_uring_cqe* cqe = nullptr;
    int r = io_uring_wait_cqe_timeout(&ring_.ring, &cqe, &ts);
    if (r == 0 && cqe != nullptr) {
      io_uring_cqe_seen(&ring_.ring, cqe);
      --in_flight_;
    } else if (r != -ETIME && r != -EINTR && r != -EAGAIN) {
      break;
    }
  }
}

// Writes every request with up to queue_depth in flight on the write ring;
// short writes continue where they stopped, EINTR/EAGAIN are retried.
WriteResult FileBackend::Impl::write_data(std::span<const WriteRequest> writes) {
  if (!options_.writable) return {EROFS, writes.empty() ? 0 : writes[0].offset};
  std::lock_guard lock(write_mu_);
  if (!write_ring_tried_ && options_.engine != FileBackendOptions::Engine::kPread) {
    write_ring_tried_ = true;
    if (io_uring_queue_init(std::min<uint32_t>(options_.queue_depth, 256), &write_ring_.ring, 0) == 0)
      write_ring_.live = true;
  }
  const int fd = write_file_.get();
  struct Piece {
    uint64_t offset;
    uint32_t length;
    const std::byte* src;
  };
  std::deque<Piece> todo;
  for (const WriteRequest& w : writes)
    if (w.length > 0) todo.push_back({w.offset, w.length, w.src});
  if (!write_ring_.live) {  // pwrite(2)
    for (const Piece& p : todo) {
      uint64_t done = 0;
      while (done < p.length) {
        ssize_t n = ::pwrite(fd, p.src + done, p.length - done, static_cast<off_t>(p.offset + done));
        if (n > 0) done += static_cast<uint64_t>(n);
        else if (n < 0 && errno == EINTR) continue;
        else return {n == 0 ? EIO : errno, p.offset + done};
      }
    }
    return {};
  }
  io_uring* ring = &write_ring_.ring;
  std::vector<Piece> slots;  // in flight, by index in user data
  std::vector<uint32_t> free_slots;
  WriteResult first_error{};
  uint32_t in_flight = 0;
  const uint32_t depth = std::min<uint32_t>(options_.queue_depth, 256);
  while (!todo.empty() || in_flight > 0) {
    while (!todo.empty() && in_flight < depth && first_error.error == 0) {
      io_uring_sqe* sqe = io_uring_get_sqe(ring);
      if (sqe == nullptr) break;
      Piece p = todo.front();
      todo.pop_front();
      uint32_t slot;
      if (free_slots.empty()) {
        slot = static_cast<uint32_t>(slots.size());
        slots.push_back(p);
      } else {
        slot = free_slots.back();
        free_slots.pop_back();
        slots[slot] = p;
      }
      io_uring_prep_write(sqe, fd, p.src, p.length, p.offset);
      io_uring_sqe_set_data64(sqe, slot);
      ++in_flight;
    }
    if (in_flight == 0) break;  // an error stopped new submissions and all are back
    int r = io_uring_submit_and_wait(ring, 1);
    if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
      // The ring refuses work (never seen in practice). Report it, but wait
      // for every write it took: they read src, which the caller reuses.
      if (first_error.error == 0) first_error = {-r, slots.empty() ? 0 : slots[0].offset};
      std::fprintf(stderr, "faultline: io_uring write submission for %s failed: %s\n", path_.c_str(),
                   errno_text(-r).c_str());
      uint32_t never_taken = io_uring_sq_ready(ring);
      rewind_sq(ring);
      io_uring_cqe* c = nullptr;
      for (uint32_t n = in_flight - never_taken; n > 0; --n) {
        if (io_uring_wait_cqe(ring, &c) != 0) {
          std::fprintf(stderr, "faultline: cannot wait for io_uring writes to %s; aborting\n", path_.c_str());
          std::abort();  // returning would let the kernel read freed memory
        }
        io_uring_cqe_seen(ring, c);
      }
      return first_error;
    }
    io_uring_cqe* cqe;
    while (io_uring_peek_cqe(ring, &cqe) == 0) {
      uint32_t slot = static_cast<uint32_t>(io_uring_cqe_get_data64(cqe));
      int res = cqe->res;
      io_uring_cqe_seen(ring, cqe);
      --in_flight;
      Piece p = slots[slot];
      free_slots.push_back(slot);
      if (res == -EINTR || res == -EAGAIN) {
        todo.push_front(p);
      } else if (res <= 0) {
        if (first_error.error == 0) first_error = {res == 0 ? EIO : -res, p.offset};
      } else if (static_cast<uint32_t>(res) < p.length) {
        // Short (a full disk fills up mid-write): continue; the next
        // attempt reports the reason.
        todo.push_front({p.offset + static_cast<uint32_t>(res), p.length - static_cast<uint32_t>(res),
                         p.src + res});
      }
    }
  }
  return first_error;
}

int FileBackend::Impl::sync_data() {
  if (!options_.writable) return EROFS;
  std::lock_guard lock(write_mu_);
  if (write_ring_.live) {
    io_uring_sqe* sqe = io_uring_get_sqe(&write_ring_.ring);
    if (sqe != nullptr) {
      // Data and what is needed to read it back (fdatasync), as msync
      // MS_SYNC does: the file's size never changes, only its timestamps.
      io_uring_prep_fsync(sqe, write_file_.get(), IORING_FSYNC_DATASYNC);
      int r;
      do r = io_uring_submit_and_wait(&write_ring_.ring, 1);
      while (r == -EINTR);
      io_uring_cqe* cqe;
      if (r >= 0 && io_uring_wait_cqe(&write_ring_.ring, &cqe) == 0) {
        int res = cqe->res;
        io_uring_cqe_seen(&write_ring_.ring, cqe);
        return res < 0 ? -res : 0;
      }
    }
  }
  return ::fdatasync(write_file_.get()) == 0 ? 0 : errno;
}

FileBackend::FileBackend(const std::string& path, const FileBackendOptions& options)
    : impl_(std::make_unique<Impl>(path, options)) {}

FileBackend::~FileBackend() = default;

uint64_t FileBackend::size() const { return impl_->size_; }
std::string FileBackend::name() const { return impl_->name_; }
uint32_t FileBackend::queue_depth() const { return impl_->options_.queue_depth; }
uint32_t FileBackend::alignment() const { return impl_->alignment_; }
int FileBackend::completion_fd() const { return impl_->efd_.get(); }
void FileBackend::submit(std::span<const ReadRequest> reads) { impl_->submit(reads); }
size_t FileBackend::reap(std::span<ReadCompletion> out) { return impl_->reap(out); }
void FileBackend::attach_staging(std::span<std::byte> staging) { impl_->attach_staging(staging); }
bool FileBackend::writable() const { return impl_->options_.writable; }
WriteResult FileBackend::write_data(std::span<const WriteRequest> writes) { return impl_->write_data(writes); }
int FileBackend::sync_data() { return impl_->sync_data(); }
int64_t FileBackend::read_data(uint64_t offset, std::span<std::byte> out) {
  if (!impl_->options_.writable) return -EROFS;
  ReadRequest r{offset, static_cast<uint32_t>(out.size()), out.data(), 0, false};
  return pread_fully(impl_->write_file_.get(), r);
}
std::string FileBackend::engine() const { return impl_->uring_ ? "io_uring" : "pread"; }

}  // namespace faultline

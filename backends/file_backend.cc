// SPDX-License-Identifier: Apache-2.0
// FileBackend: reads a local file with io_uring (liburing), or with pread(2)
// on a few worker threads when io_uring is unavailable or not wanted.
//
// io_uring engine
//   A UringReader (uring_reader.h) of queue_depth SQEs, on the eventfd that
//   is completion_fd(). submit() queues one read per request (a fixed-buffer
//   read when the destination lies in the registered staging memory, which
//   only O_DIRECT registers) and submits them with one io_uring_submit.
//   reap() takes the reader's completions and never blocks. Background
//   reads past FileBackendOptions::background_reads wait in the reader;
//   make_urgent() sends one in at once.
//
// pread engine
//   pread_threads workers take requests from a mutex-protected queue (urgent
//   ones first), put completions on a second queue, and write the eventfd
//   when that queue goes from empty to non-empty.
//
// Both engines: buffered reads drop the pages they read from the page cache
// (POSIX_FADV_DONTNEED) unless keep_cache: the ranges of one reap() are
// dropped at the start of the next submit() or reap(), once the runtime has
// placed them, so the fault path does not wait for it.
//
// Both engines: if reap() fills `out` and completions are still left, it
// writes the eventfd itself, so a caller that reaps in small batches still
// gets an edge for the rest.
#include "faultline/file_backend.h"

#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <mutex>
#include <unordered_map>
#include <system_error>
#include <thread>
#include <vector>

#include "backend_limits.h"
#include "event_fd.h"
#include "faultline/error.h"
#include "log.h"
#include "unique_fd.h"
#include "uring_reader.h"

#ifndef STATX_DIOALIGN
#define STATX_DIOALIGN 0x00002000U
#endif

namespace faultline {
namespace {

using detail::check_option_range;
using detail::kMaxQueueDepth;
using detail::signal_eventfd;
using detail::UniqueFd;
using detail::UringCompletion;
using detail::UringRead;

constexpr uint32_t kMaxPreadThreads = 1024;
// O_DIRECT alignment floor. Logical block sizes are 512 or 4096 on nearly
// every device, the runtime stages whole pages anyway, and 4096 keeps reads
// valid if the file is later copied to a 4Kn disk. statx(STATX_DIOALIGN)
// raises it when the file system asks for more.
constexpr uint32_t kDirectAlignment = 4096;

std::string errno_text(int err) { return std::strerror(err); }

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

// Owns an initialised ring (the write path's).
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

  void make_urgent(uint64_t tag) {
    std::lock_guard lock(mu_);
    auto it = std::find_if(normal_.begin(), normal_.end(), [&](const ReadRequest& r) { return r.tag == tag; });
    if (it == normal_.end()) return;  // being read already
    urgent_.push_back(*it);
    normal_.erase(it);
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
  void make_urgent(uint64_t tag);
  void attach_staging(std::span<std::byte> staging);
  // Page-cache dropping (not keep_cache, not direct): where each read in
  // flight starts, and the ranges read since the last drop_read().
  void note_read(const ReadRequest& r);
  void note_done(uint64_t tag, int64_t result);
  void drop_read();
  bool drop_cache_ = false;
  std::unordered_map<uint64_t, uint64_t> read_offsets_;  // by tag
  std::vector<std::pair<uint64_t, uint64_t>> read_ranges_;  // [offset, end)
  static constexpr uint64_t kDropBlock = 2 << 20;  // the largest page-cache folio
  std::unordered_map<uint64_t, uint64_t> block_bytes_;  // bytes read of blocks not yet dropped whole

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

  // io_uring engine. Only the fault-loop thread touches it; its destructor
  // waits for reads still in flight.
  detail::UringReader reader_;

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
};

FileBackend::Impl::Impl(const std::string& path, const FileBackendOptions& options)
    : path_(path), options_(options) {
  using Engine = FileBackendOptions::Engine;
  check_option_range("FileBackendOptions.queue_depth", options.queue_depth, 1, kMaxQueueDepth, path);
  check_option_range("FileBackendOptions.pread_threads", options.pread_threads, 1, kMaxPreadThreads, path);
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

  efd_ = detail::make_eventfd();
  if (!efd_) {
    int err = errno;
    throw Error("cannot create the completion eventfd for " + path + ": " + errno_text(err), err);
  }

  drop_cache_ = !options.direct && !options.keep_cache;
  if (drop_cache_) read_offsets_.reserve(options.queue_depth * 2);
  if (options.engine != Engine::kPread) {
    // O_DIRECT reads are asynchronous anyway: IOSQE_ASYNC only for buffered ones.
    unsigned background =
        options.background_reads ? options.background_reads : detail::default_max_background(options.queue_depth);
    int err = -reader_.init(
        {.entries = options.queue_depth, .async_large_reads = !options.direct, .max_background = background},
        efd_.get());
    if (err == 0) {
      uring_ = true;
    } else if (options.engine == Engine::kIoUring) {
      throw Error("io_uring unavailable for " + path + " (FileBackendOptions.engine = kIoUring): " + errno_text(err),
                  err);
    } else {
      detail::logf(options.log, LogLevel::kWarning, "io_uring unavailable for %s (%s), using pread workers",
                   path.c_str(), errno_text(err).c_str());
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

// The pread workers and the reader stop before the fds close.
FileBackend::Impl::~Impl() { drop_read(); }

void FileBackend::Impl::submit(std::span<const ReadRequest> reads) {
  drop_read();
  if (drop_cache_)
    for (const ReadRequest& r : reads) note_read(r);
  if (!uring_) {
    pool_->submit(reads);
    return;
  }
  for (const ReadRequest& r : reads)
    reader_.queue(UringRead{file_.get(), r.offset, r.length, r.dest, r.tag, r.urgent});
  reader_.submit();
}

size_t FileBackend::Impl::reap(std::span<ReadCompletion> out) {
  drop_read();
  size_t n = 0;
  if (!uring_) {
    n = pool_->reap(out);
  } else {
    UringCompletion done[64];
    while (n < out.size()) {
      size_t want = std::min(std::size(done), out.size() - n);
      size_t got = reader_.reap({done, want});
      for (size_t i = 0; i < got; ++i) out[n++] = ReadCompletion{done[i].tag, done[i].result, false};
      if (got < want) break;
    }
    // `out` is full and completions are left: re-arm the edge for them.
    if (n == out.size() && reader_.ready()) signal_eventfd(efd_.get());
  }
  if (drop_cache_)
    for (size_t i = 0; i < n; ++i) note_done(out[i].tag, out[i].result);
  return n;
}

void FileBackend::Impl::make_urgent(uint64_t tag) {
  if (uring_)
    reader_.make_urgent(tag);
  else
    pool_->make_urgent(tag);
}

void FileBackend::Impl::note_read(const ReadRequest& r) { read_offsets_[r.tag] = r.offset; }

void FileBackend::Impl::note_done(uint64_t tag, int64_t result) {
  auto it = read_offsets_.find(tag);
  if (it == read_offsets_.end()) return;
  if (result > 0) read_ranges_.emplace_back(it->second, it->second + static_cast<uint64_t>(result));
  read_offsets_.erase(it);
}

// Drops what the last reap() read from the page cache: one fadvise per run
// of adjacent ranges. Called before the next submit() or reap(), by when the
// runtime has placed those bytes. The kernel drops only whole folios inside
// the range, and a file written or read in bulk sits in large folios (up to
// 2 MiB), so each aligned kDropBlock is also dropped whole once reads have
// covered all of it. Pages of a block read only in part that the kernel
// put in a larger folio, or read ahead past the last read, stay cached.
void FileBackend::Impl::drop_read() {
  if (read_ranges_.empty()) return;
  std::sort(read_ranges_.begin(), read_ranges_.end());
  auto drop = [&](uint64_t start, uint64_t end) {
    ::posix_fadvise(file_.get(), static_cast<off_t>(start), static_cast<off_t>(end - start), POSIX_FADV_DONTNEED);
  };
  uint64_t start = read_ranges_[0].first, end = read_ranges_[0].second;
  for (size_t i = 1; i <= read_ranges_.size(); ++i) {
    if (i < read_ranges_.size() && read_ranges_[i].first <= end) {
      end = std::max(end, read_ranges_[i].second);
      continue;
    }
    drop(start, end);
    if (i < read_ranges_.size()) start = read_ranges_[i].first, end = read_ranges_[i].second;
  }
  for (auto [from, to] : read_ranges_) {
    while (from < to) {
      uint64_t block = from / kDropBlock;
      uint64_t block_end = std::min(size_, (block + 1) * kDropBlock);
      uint64_t n = std::min(to, block_end) - from;
      uint64_t& covered = block_bytes_[block];
      covered += n;
      if (covered >= block_end - block * kDropBlock) {  // read all of it (at least once)
        drop(block * kDropBlock, block_end);
        block_bytes_.erase(block);
      }
      from += n;
    }
  }
  read_ranges_.clear();
}

void FileBackend::Impl::attach_staging(std::span<std::byte> staging) {
  if (!uring_ || !options_.direct) return;
  // A new runtime after an old one: its staging memory replaces the old.
  int r = reader_.register_buffers(staging);
  if (r < 0) {
    // Not fatal: plain reads into the same memory work, at the cost of
    // pinning pages per read. ENOMEM usually means RLIMIT_MEMLOCK.
    detail::logf(options_.log, LogLevel::kWarning,
                 "cannot register %zu bytes of staging memory with io_uring for %s (%s), using unregistered buffers",
                 staging.size(), path_.c_str(), errno_text(-r).c_str());
  }
}

// Writes every request with up to queue_depth in flight on the write ring;
// short writes continue where they stopped, EINTR/EAGAIN are retried.
WriteResult FileBackend::Impl::write_data(std::span<const WriteRequest> writes) {
  if (!options_.writable) return {-EROFS, writes.empty() ? 0 : writes[0].offset};
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
        else return {n == 0 ? -EIO : -errno, p.offset + done};
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
      if (first_error.error == 0) first_error = {r, slots.empty() ? 0 : slots[0].offset};
      detail::logf(options_.log, LogLevel::kError, "io_uring write submission for %s failed: %s", path_.c_str(),
                   errno_text(-r).c_str());
      uint32_t never_taken = io_uring_sq_ready(ring);
      detail::uring_rewind_sq(ring);
      io_uring_cqe* c = nullptr;
      for (uint32_t n = in_flight - never_taken; n > 0; --n) {
        if (io_uring_wait_cqe(ring, &c) != 0) {
          detail::logf(options_.log, LogLevel::kError, "cannot wait for io_uring writes to %s; aborting", path_.c_str());
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
        if (first_error.error == 0) first_error = {res == 0 ? -EIO : res, p.offset};
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
  if (!options_.writable) return -EROFS;
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
        return res < 0 ? res : 0;
      }
    }
  }
  return ::fdatasync(write_file_.get()) == 0 ? 0 : -errno;
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
void FileBackend::make_urgent(uint64_t tag) { impl_->make_urgent(tag); }
void FileBackend::attach_staging(std::span<std::byte> staging) { impl_->attach_staging(staging); }
bool FileBackend::writable() const { return impl_->options_.writable; }
std::string FileBackend::read_only_reason() const {
  return "the file was opened read-only; open it with FileBackendOptions::writable = true";
}
WriteResult FileBackend::write_data(std::span<const WriteRequest> writes) { return impl_->write_data(writes); }
int FileBackend::sync_data() { return impl_->sync_data(); }
int64_t FileBackend::read_data(uint64_t offset, std::span<std::byte> out) {
  if (!impl_->options_.writable) return -EROFS;
  ReadRequest r{offset, static_cast<uint32_t>(out.size()), out.data(), 0, false};
  return pread_fully(impl_->write_file_.get(), r);
}
std::string FileBackend::engine() const { return impl_->uring_ ? "io_uring" : "pread"; }

}  // namespace faultline

// SPDX-License-Identifier: Apache-2.0
// LiveSnapshotter: point-in-time and incremental snapshots of live memory
// with synchronous userfaultfd write-protect (faultline/live_snapshot.h).
//
// Threads and who does what:
//   handler     [own thread] the only thread that reads the uffd and the only
//               one that changes protection while a snapshot is being taken
//               (in track_writes mode). It runs the protect step itself, so
//               that no held write is released before the step is over.
//   background  [snapshot()'s caller] copies every chunk the snapshot needs
//               that the handler has not copied yet, in address order.
//   compressors [pool] compress copied chunks and append them to the file in
//               whatever order they come (the index says where each is).
// Per-chunk state (atomic, below) decides who copies a chunk: whoever moves
// it from kNeeded to kCopying. The copy reads memory that is still
// write-protected, so it holds the contents at the instant.
#include "faultline/live_snapshot.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "atomic_file.h"
#include "crc32c.h"
#include "faultline/error.h"
#include "snapshot_format.h"
#include "uffd.h"
#include "unique_fd.h"

#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

namespace faultline {

namespace {

using detail::ChunkEntry;
using detail::UniqueFd;
using Clock = std::chrono::steady_clock;

// Chunk states.
enum : uint8_t {
  kUnprotected,  // writable: written since the last instant (or never snapshotted)
  kClean,        // protected, not written since the last snapshot that saved it
  kNeeded,       // protected, part of the snapshot being taken, not copied yet
  kCopying,      // protected, being copied by the handler or the background
  kSaved,        // protected, copied for the snapshot being taken
};

struct ZstdCCtxDeleter {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};

// Written chunks closer than this are write-protected by one call (see the
// protect step).
constexpr uint64_t kMergeGap = 4u << 20;

bool all_zero(const std::byte* p, size_t n) {
  return n == 0 || (p[0] == std::byte{0} && std::memcmp(p, p + 1, n - 1) == 0);
}

// Copies live memory. Under TSan, a plain loop the sanitizer does not see:
// the writers it races with are held by the kernel (write-protect), an
// ordering TSan cannot know about.
#if defined(__SANITIZE_THREAD__)
__attribute__((no_sanitize("thread"))) void copy_live(std::byte* dst, const std::byte* src, size_t n) {
  auto* d = reinterpret_cast<uint64_t*>(dst);
  auto* s = reinterpret_cast<const volatile uint64_t*>(src);
  for (size_t i = 0; i < n / 8; ++i) d[i] = s[i];
}
#else
void copy_live(std::byte* dst, const std::byte* src, size_t n) { std::memcpy(dst, src, n); }
#endif

std::string parent_name_for(const std::string& child, const std::string& parent) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::path c = fs::absolute(child, ec), p = fs::absolute(parent, ec);
  if (c.parent_path() == p.parent_path()) return p.filename().string();
  return p.lexically_normal().string();
}

}  // namespace

class LiveSnapshotter::Impl {
 public:
  Impl(void* addr, size_t length, const LiveSnapshotOptions& options);
  ~Impl();
  LiveSnapshotStats take(const std::string& path, bool child);

  std::string last_path_;

 private:
  struct Job {
    uint64_t chunk;
    std::vector<std::byte> bytes;
  };

  // Handler thread.
  void handle_loop();
  void on_fault(uintptr_t address);
  void protect(uintptr_t start, uint64_t len, bool wp);
  // Runs `f` on the handler thread and waits for it.
  void on_handler(std::function<void()> f);
  // Copies chunk c (state kCopying, ours) and queues it for compression.
  void copy_chunk(uint64_t c);
  void compress_loop(int nice);  // at this nice value (if above 0)
  std::vector<std::byte> take_buffer();
  // After a failed snapshot: chunks it still needed become plain protected
  // ones (a write un-protects them), and copies queued for it are dropped.
  void abandon() noexcept;

  uintptr_t base_;
  uint64_t length_;
  LiveSnapshotOptions options_;
  uint64_t chunks_;
  UniqueFd uffd_;
  UniqueFd wake_;  // eventfd: a command or stop for the handler
  bool populate_ = false;  // no WP_UNPOPULATED: map holes (read-only) before protecting
  std::unique_ptr<std::atomic<uint8_t>[]> state_;
  bool have_parent_ = false;  // last_path_ is complete and tracking since its instant
  detail::SnapshotId parent_id_{};

  std::mutex cmd_mu_;
  std::condition_variable cmd_cv_;
  std::function<void()> cmd_;  // guarded by cmd_mu_
  bool cmd_done_ = false;      // guarded by cmd_mu_
  std::atomic<bool> stop_{false};
  std::thread handler_;

  // The snapshot being taken.
  std::atomic<bool> active_{false};
  std::atomic<uint64_t> held_{0}, saved_for_writer_{0};
  std::mutex q_mu_;
  std::condition_variable q_cv_, room_cv_;
  std::deque<Job> queue_;                     // guarded by q_mu_
  std::vector<std::vector<std::byte>> free_;  // guarded by q_mu_
  size_t outstanding_ = 0;                    // buffers out of free_, guarded by q_mu_
  bool q_closed_ = false;                     // guarded by q_mu_
  std::mutex file_mu_;
  detail::AtomicFile* file_ = nullptr;  // guarded by file_mu_
  uint64_t pos_ = 0;                    // guarded by file_mu_
  std::vector<ChunkEntry> index_;       // guarded by file_mu_
  uint64_t stored_bytes_ = 0;           // guarded by file_mu_
  std::string error_;                   // guarded by file_mu_
  std::vector<bool> needed_;            // chunks this snapshot stores (set in the protect step)
  uint64_t pushed_ = 0;                 // jobs queued by copy_chunk(), guarded by q_mu_
};

LiveSnapshotter::Impl::Impl(void* addr, size_t length, const LiveSnapshotOptions& o)
    : base_(reinterpret_cast<uintptr_t>(addr)), length_(length), options_(o) {
  const std::string what = "live snapshot of [" + std::to_string(base_) + ", +" + std::to_string(length) + ")";
  if (o.chunk_size < detail::kMinChunkSize || o.chunk_size > detail::kMaxChunkSize || !std::has_single_bit(o.chunk_size))
    throw Error(what + ": chunk_size = " + std::to_string(o.chunk_size) + ": must be a power of two from 4096 to 4194304");
  if (o.level < ZSTD_minCLevel() || o.level > ZSTD_maxCLevel())
    throw Error(what + ": level = " + std::to_string(o.level) + ": out of zstd's range");
  if (o.compress_nice < 0 || o.compress_nice > 19)
    throw Error(what + ": compress_nice = " + std::to_string(o.compress_nice) + ": must be 0 .. 19");
  if (o.threads > 1024) throw Error(what + ": threads = " + std::to_string(o.threads) + ": at most 1024");
  if (length == 0 || base_ % detail::kPageSize || length % detail::kPageSize)
    throw Error(what + ": the range must be non-empty and page-aligned", EINVAL);
  if (length > detail::kMaxSnapshotSize) throw Error(what + ": larger than the snapshot format's limit", EINVAL);
  chunks_ = (length + o.chunk_size - 1) / o.chunk_size;

  uint64_t offered = 0;
  uffd_ = detail::open_uffd_features(UFFD_FEATURE_WP_UNPOPULATED, &offered);
  if (!(offered & UFFD_FEATURE_PAGEFAULT_FLAG_WP))
    throw Error(what + ": this kernel's userfaultfd has no write-protect support (UFFD_FEATURE_PAGEFAULT_FLAG_WP)",
                ENOTSUP);
  // Without WP_UNPOPULATED (kernel < 6.4) holes cannot be protected: they
  // get the zero page (MADV_POPULATE_READ) before each protect step.
  populate_ = !(offered & UFFD_FEATURE_WP_UNPOPULATED);
  uffdio_register reg{};
  reg.range.start = base_;
  reg.range.len = length;
  reg.mode = UFFDIO_REGISTER_MODE_WP;
  if (::ioctl(uffd_.get(), UFFDIO_REGISTER, &reg) != 0) {
    int err = errno;
    if (err == EBUSY)
      throw Error(what + ": the range is already registered with another userfaultfd (a faultline Region, or "
                         "another live snapshotter): live snapshots need memory the program mapped itself",
                  err);
    if (err == EINVAL)
      throw Error(what + ": cannot register it for write-protect (EINVAL): it must be mapped, private, anonymous "
                         "and writable",
                  err);
    throw_errno(what + ": UFFDIO_REGISTER (write-protect)", err);
  }
  state_ = std::make_unique<std::atomic<uint8_t>[]>(chunks_);
  for (uint64_t c = 0; c < chunks_; ++c) state_[c].store(kUnprotected, std::memory_order_relaxed);
  wake_ = UniqueFd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!wake_) {
    int err = errno;
    uffdio_range r{base_, length_};
    ::ioctl(uffd_.get(), UFFDIO_UNREGISTER, &r);
    throw_errno(what + ": eventfd", err);
  }
  handler_ = std::thread([this] { handle_loop(); });
  pthread_setname_np(handler_.native_handle(), "faultline-livewp");
}

LiveSnapshotter::Impl::~Impl() {
  stop_.store(true);
  uint64_t one = 1;
  [[maybe_unused]] ssize_t r = ::write(wake_.get(), &one, sizeof one);
  handler_.join();
  // Un-protect (waking anyone held), then unregister; closing the uffd wakes
  // any thread still waiting on it.
  uffdio_writeprotect wp{};
  wp.range = {base_, length_};
  wp.mode = 0;
  ::ioctl(uffd_.get(), UFFDIO_WRITEPROTECT, &wp);
  uffdio_range range{base_, length_};
  ::ioctl(uffd_.get(), UFFDIO_UNREGISTER, &range);
}

void LiveSnapshotter::Impl::protect(uintptr_t start, uint64_t len, bool wp) {
  uffdio_writeprotect w{};
  w.range = {start, len};
  w.mode = wp ? UFFDIO_WRITEPROTECT_MODE_WP : 0;
  while (::ioctl(uffd_.get(), UFFDIO_WRITEPROTECT, &w) != 0) {
    if (errno == EAGAIN || errno == EINTR) continue;
    throw_errno("live snapshot: UFFDIO_WRITEPROTECT", errno);
  }
}

void LiveSnapshotter::Impl::on_handler(std::function<void()> f) {
  std::exception_ptr failure;
  auto wrapped = [&] {
    try {
      f();
    } catch (...) {
      failure = std::current_exception();
    }
  };
  {
    std::lock_guard lock(cmd_mu_);
    cmd_ = wrapped;
    cmd_done_ = false;
  }
  uint64_t one = 1;
  if (::write(wake_.get(), &one, sizeof one) != sizeof one) throw_errno("live snapshot: eventfd write", errno);
  std::unique_lock lock(cmd_mu_);
  cmd_cv_.wait(lock, [&] { return cmd_done_; });
  if (failure) std::rethrow_exception(failure);
}

void LiveSnapshotter::Impl::handle_loop() {
  uffd_msg msgs[64];
  for (;;) {
    pollfd fds[2] = {{uffd_.get(), POLLIN, 0}, {wake_.get(), POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) std::abort();  // cannot wait: nothing sane to do
    if (fds[1].revents & POLLIN) {
      uint64_t v;
      [[maybe_unused]] ssize_t r = ::read(wake_.get(), &v, sizeof v);
      if (stop_.load()) return;
      std::function<void()> cmd;
      {
        std::lock_guard lock(cmd_mu_);
        cmd.swap(cmd_);
      }
      if (cmd) {
        cmd();
        std::lock_guard lock(cmd_mu_);
        cmd_done_ = true;
        cmd_cv_.notify_all();
      }
    }
    for (;;) {
      ssize_t n = ::read(uffd_.get(), msgs, sizeof msgs);
      if (n <= 0) break;  // EAGAIN: all read
      for (ssize_t i = 0; i < n / static_cast<ssize_t>(sizeof(uffd_msg)); ++i)
        if (msgs[i].event == UFFD_EVENT_PAGEFAULT) on_fault(static_cast<uintptr_t>(msgs[i].arg.pagefault.address));
      if (n < static_cast<ssize_t>(sizeof msgs)) break;
    }
  }
}

// A write to a protected page: save its chunk if the snapshot being taken
// still needs it, then un-protect the chunk and wake the writer.
void LiveSnapshotter::Impl::on_fault(uintptr_t address) {
  const uintptr_t page = address & ~(detail::kPageSize - 1);
  if (page < base_ || page >= base_ + length_) return;
  const uint64_t c = (page - base_) / options_.chunk_size;
  held_.fetch_add(1, std::memory_order_relaxed);
  uint8_t s = state_[c].load(std::memory_order_acquire);
  if (s == kUnprotected) {  // a message that arrived after we un-protected it
    detail::uffd_wake(uffd_.get(), page, detail::kPageSize);
    return;
  }
  if (s == kNeeded && state_[c].compare_exchange_strong(s, kCopying, std::memory_order_acq_rel)) {
    saved_for_writer_.fetch_add(1, std::memory_order_relaxed);
    copy_chunk(c);
  } else {
    // The background is copying it: wait for the copy (a few microseconds).
    while ((s = state_[c].load(std::memory_order_acquire)) == kCopying) state_[c].wait(kCopying);
  }
  const uintptr_t start = base_ + c * options_.chunk_size;
  const uint64_t len = std::min<uint64_t>(options_.chunk_size, base_ + length_ - start);
  state_[c].store(kUnprotected, std::memory_order_release);
  try {
    protect(start, len, false);  // wakes the writers held in it
  } catch (const Error&) {
    detail::uffd_wake(uffd_.get(), start, len);  // never leave a writer held
  }
}

std::vector<std::byte> LiveSnapshotter::Impl::take_buffer() {
  std::lock_guard lock(q_mu_);
  ++outstanding_;
  if (free_.empty()) return std::vector<std::byte>(options_.chunk_size);
  std::vector<std::byte> b = std::move(free_.back());
  free_.pop_back();
  return b;
}

void LiveSnapshotter::Impl::copy_chunk(uint64_t c) {
  const uintptr_t start = base_ + c * options_.chunk_size;
  const uint64_t len = std::min<uint64_t>(options_.chunk_size, base_ + length_ - start);
  std::vector<std::byte> buf = take_buffer();
  copy_live(buf.data(), reinterpret_cast<const std::byte*>(start), len);
  state_[c].store(kSaved, std::memory_order_release);
  state_[c].notify_all();
  if (!options_.track_writes && state_[c].exchange(kUnprotected) == kSaved) {
    try {
      protect(start, len, false);
    } catch (const Error&) {
      detail::uffd_wake(uffd_.get(), start, len);
    }
  }
  {
    std::lock_guard lock(q_mu_);
    queue_.push_back(Job{c, std::move(buf)});
    ++pushed_;
  }
  q_cv_.notify_one();
  room_cv_.notify_all();
}

void LiveSnapshotter::Impl::compress_loop(int nice) {
  // (Per thread on Linux; a failure only leaves the priority as it was.)
  if (nice > 0) ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), std::min(19, nice));
  std::unique_ptr<ZSTD_CCtx, ZstdCCtxDeleter> cctx(ZSTD_createCCtx());
  std::vector<unsigned char> out(ZSTD_compressBound(options_.chunk_size));
  for (;;) {
    Job job;
    {
      std::unique_lock lock(q_mu_);
      q_cv_.wait(lock, [&] { return q_closed_ || !queue_.empty(); });
      if (queue_.empty()) return;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    const uint64_t len = std::min<uint64_t>(options_.chunk_size, length_ - job.chunk * options_.chunk_size);
    ChunkEntry e;
    std::string error;
    size_t r = 0;
    if (!all_zero(job.bytes.data(), len)) {
      if (!cctx) {
        error = "cannot create a zstd compression context";
      } else {
        r = ZSTD_compressCCtx(cctx.get(), out.data(), out.size(), job.bytes.data(), len, options_.level);
        if (ZSTD_isError(r)) error = std::string("zstd compression failed: ") + ZSTD_getErrorName(r);
        e.length = static_cast<uint32_t>(r);
        e.checksum = detail::crc32c(job.bytes.data(), len);
      }
    }
    {
      std::lock_guard lock(file_mu_);
      if (!error.empty() && error_.empty()) error_ = error;
      if (error_.empty()) {
        try {
          if (e.length) {
            file_->append(out.data(), e.length);
            e.offset = pos_;
            pos_ += e.length;
          }
          index_[job.chunk] = e;
          stored_bytes_ += len;
        } catch (const std::exception& ex) {
          error_ = ex.what();
        }
      }
    }
    {
      std::lock_guard lock(q_mu_);
      free_.push_back(std::move(job.bytes));
      --outstanding_;
    }
    room_cv_.notify_all();
  }
}

void LiveSnapshotter::Impl::abandon() noexcept {
  auto reset = [this] {
    for (uint64_t c = 0; c < chunks_; ++c) {
      uint8_t s = kNeeded;
      state_[c].compare_exchange_strong(s, kClean, std::memory_order_acq_rel);
    }
    std::lock_guard lock(q_mu_);
    queue_.clear();
  };
  try {
    on_handler(reset);  // the handler is the other thread that copies
  } catch (...) {
    // The eventfd cannot be written: the handler may be copying a chunk as
    // we go, and a stale copy is never used (the next snapshot's protect
    // step drops the queue and sets every state again).
    reset();
  }
}

LiveSnapshotStats LiveSnapshotter::Impl::take(const std::string& path, bool child) {
  const std::string what = "live snapshot " + path;
  if (child && !options_.track_writes)
    throw Error(what + ": a child snapshot needs LiveSnapshotOptions::track_writes", EINVAL);
  if (child && !have_parent_)
    throw Error(what + ": no parent: take a full snapshot() first (or the last one failed)", EINVAL);
  const std::string parent_name = child ? parent_name_for(path, last_path_) : std::string();
  if (parent_name.size() > detail::kMaxParentPath)
    throw Error(what + ": the parent's path " + parent_name + " is longer than " +
                std::to_string(detail::kMaxParentPath) + " bytes", ENAMETOOLONG);
  have_parent_ = false;  // until this one is complete

  LiveSnapshotStats st;
  const uint32_t version = child ? detail::kSnapshotVersion2 : detail::kSnapshotVersion;
  const uint32_t hbytes = detail::header_bytes_of(version);
  detail::AtomicFile file(path, what, 0666);
  std::vector<unsigned char> header(hbytes, 0);
  file.append(header.data(), header.size());  // the real one goes in last
  if (child) file.append(parent_name.data(), parent_name.size());
  index_.assign(chunks_, ChunkEntry{});
  pos_ = hbytes + parent_name.size();
  stored_bytes_ = 0;
  error_.clear();
  file_ = &file;
  held_ = 0;
  saved_for_writer_ = 0;
  {
    std::lock_guard lock(q_mu_);
    q_closed_ = false;
    queue_.clear();
    outstanding_ = 0;
    pushed_ = 0;
  }

  struct Abandon {
    Impl* self;
    bool armed = true;
    ~Abandon() {
      if (armed) self->abandon();
    }
  } abandon_on_failure{this};

  // The instant: protect what the snapshot needs, on the handler thread.
  const auto t0 = Clock::now();
  on_handler([&] {
    const auto p0 = Clock::now();
    {
      // Copies the handler made before the instant are not this image's.
      std::lock_guard lock(q_mu_);
      queue_.clear();
      outstanding_ = 0;
      pushed_ = 0;
    }
    auto needed = [&](uint64_t c) { return !child || state_[c].load() == kUnprotected; };
    if (populate_ && ::madvise(reinterpret_cast<void*>(base_), length_, MADV_POPULATE_READ) != 0)
      throw_errno(what + ": MADV_POPULATE_READ (needed without UFFD_FEATURE_WP_UNPOPULATED)", errno);
    if (!child) {
      protect(base_, length_, true);
    } else {
      // Runs of written chunks, those less than kMergeGap apart as one: the
      // chunks between are protected already (kClean) and protecting them
      // again costs a page-table walk, far less than the TLB flush of
      // another call (bench: 819 scattered chunks of 1 GiB one call each
      // 93 ms, the whole range in one 26 ms).
      const uint64_t gap_chunks = std::max<uint64_t>(1, kMergeGap / options_.chunk_size);
      for (uint64_t c = 0; c < chunks_;) {
        if (!needed(c)) {
          ++c;
          continue;
        }
        uint64_t e = c, last = c;  // [c, last] holds every needed chunk found so far
        for (; e < chunks_ && e - last <= gap_chunks; ++e)
          if (needed(e)) last = e;
        e = last + 1;
        const uintptr_t start = base_ + c * options_.chunk_size;
        protect(start, std::min<uint64_t>((e - c) * options_.chunk_size, base_ + length_ - start), true);
        c = e;
      }
    }
    needed_.assign(chunks_, false);
    for (uint64_t c = 0; c < chunks_; ++c) {
      needed_[c] = needed(c);
      state_[c].store(needed_[c] ? kNeeded : kClean, std::memory_order_release);
    }
    st.protect_seconds = std::chrono::duration<double>(Clock::now() - p0).count();
    if (options_.at_instant) options_.at_instant();
  });

  unsigned threads = options_.threads ? options_.threads : std::max(1u, std::thread::hardware_concurrency());
  threads = std::max(1u, threads);
  const size_t window = size_t{threads} * 4;
  std::vector<std::thread> pool;
  auto finish_pool = [&] {
    {
      std::lock_guard lock(q_mu_);
      q_closed_ = true;
    }
    q_cv_.notify_all();
    for (auto& t : pool) t.join();
    pool.clear();
  };
  uint64_t needed_chunks = 0;
  try {
    errno = 0;
    const int caller_nice = ::getpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()));
    const int nice = errno == 0 ? caller_nice + options_.compress_nice : 0;
    for (unsigned t = 0; t < threads; ++t) pool.emplace_back([this, nice] { compress_loop(nice); });
    // The background copy, in address order, a bounded window ahead of the
    // compressors (the handler's copies do not wait for room).
    for (uint64_t c = 0; c < chunks_; ++c) {
      uint8_t s = state_[c].load(std::memory_order_acquire);
      if (!needed_[c]) continue;
      ++needed_chunks;
      if (s != kNeeded) continue;
      {
        std::unique_lock lock(q_mu_);
        room_cv_.wait(lock, [&] { return outstanding_ < window; });
      }
      if (state_[c].compare_exchange_strong(s, kCopying, std::memory_order_acq_rel)) copy_chunk(c);
      std::lock_guard lock(file_mu_);
      if (!error_.empty()) break;
    }
    // Chunks the handler claimed may still be on their way to the queue.
    bool failed;
    {
      std::lock_guard lock(file_mu_);
      failed = !error_.empty();
    }
    if (!failed) {
      std::unique_lock lock(q_mu_);
      room_cv_.wait(lock, [&] { return pushed_ >= needed_chunks; });
    }
  } catch (...) {
    finish_pool();
    file_ = nullptr;
    throw;
  }
  finish_pool();
  file_ = nullptr;
  if (!error_.empty()) throw Error("cannot write " + what + ": " + error_);

  // Chunks saved (kSaved) are clean with respect to this snapshot.
  for (uint64_t c = 0; c < chunks_; ++c) {
    uint8_t s = kSaved;
    state_[c].compare_exchange_strong(s, kClean, std::memory_order_acq_rel);
  }
  std::vector<unsigned char> raw(chunks_ * detail::kSnapshotEntryBytes);
  for (uint64_t c = 0; c < chunks_; ++c) {
    ChunkEntry e = index_[c];
    if (!needed_[c]) {
      e = ChunkEntry{detail::kInheritedOffset, 0, 0};
      st.inherited_chunks++;
    } else {
      st.stored_chunks++;
    }
    detail::encode_entry(e, raw.data() + c * detail::kSnapshotEntryBytes);
  }
  file.append(raw.data(), raw.size());
  detail::SnapshotHeader h;
  h.version = version;
  h.header_bytes = hbytes;
  h.chunk_size = options_.chunk_size;
  h.size = length_;
  h.chunk_count = chunks_;
  h.index_offset = pos_;
  h.index_checksum = detail::crc32c(raw.data(), raw.size());
  if (child) {
    h.flags = detail::kFlagParent;
    h.parent_path_length = static_cast<uint32_t>(parent_name.size());
    h.parent_id = parent_id_;
  }
  detail::encode_header(h, header.data());
  file.write_at(0, header.data(), header.size());
  file.commit();
  abandon_on_failure.armed = false;
  st.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  st.stored_bytes = stored_bytes_;
  st.file_bytes = pos_ + raw.size();
  st.held_writes = held_.load();
  st.saved_for_writer = saved_for_writer_.load();

  // What the next child names: this file, by its content id (as a reader
  // computes it, from the file as written).
  uint64_t bytes = 0;
  UniqueFd fd = detail::open_regular_file(path, "snapshot ", &bytes);
  parent_id_ = detail::read_snapshot_index(fd.get(), path, bytes).id;
  last_path_ = path;
  have_parent_ = options_.track_writes;
  return st;
}

LiveSnapshotter::LiveSnapshotter(void* addr, size_t length, const LiveSnapshotOptions& options)
    : impl_(std::make_unique<Impl>(addr, length, options)) {}
LiveSnapshotter::~LiveSnapshotter() = default;
LiveSnapshotStats LiveSnapshotter::snapshot(const std::string& path) { return impl_->take(path, false); }
LiveSnapshotStats LiveSnapshotter::snapshot_child(const std::string& path) { return impl_->take(path, true); }
const std::string& LiveSnapshotter::last_snapshot() const { return impl_->last_path_; }

}  // namespace faultline

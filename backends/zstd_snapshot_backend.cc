// SPDX-License-Identifier: Apache-2.0
// ZstdSnapshotBackend: serves a region from a compressed snapshot.
//
// How a request travels (ReadRequest = one runtime chunk, any offset/length):
//   submit()   [fault thread] splits it into pieces, one per snapshot chunk
//              it covers. A zero chunk's piece is zeroed at once (a request
//              made only of zero chunks completes as `zero`); a piece that
//              covers part of a chunk may be copied from the cache of
//              decompressed chunks. Every other piece joins the ChunkJob of
//              its chunk (one per chunk being read, shared by all requests
//              that want it). New jobs are sorted by file offset and
//              neighbours merged into reads of up to 1 MiB, submitted to our
//              own io_uring ring (a UringReader, uring_reader.h; its eventfd
//              is completion_fd()).
//   reap()     [fault thread] hands jobs whose read completed to the
//              workers (demand jobs ahead of the rest), then collects the
//              jobs the workers finished, and completes every request whose
//              pieces are all done.
//   make_urgent() [fault thread] a demand fault on a background request:
//              its jobs become urgent wherever they are (a read not yet
//              started goes to the front, the reader or the source is told,
//              a job waiting for a worker moves to the urgent queue).
//   workers    decompress a job's frame straight into the staging memory of
//              a request that wants the whole chunk (else into a buffer that
//              then goes into the cache), check length and CRC-32C, copy to
//              the other pieces, and write the eventfd.
// All bookkeeping (requests, jobs, buffers) is on the fault thread; workers
// see a job only between the two queues, under the queue mutex.
#include "faultline/zstd_snapshot_backend.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <list>
#include <mutex>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <vector>

#include "backend_limits.h"
#include "event_fd.h"
#include "faultline/error.h"
#include "log.h"
#include "snapshot_format.h"
#include "unique_fd.h"
#include "uring_reader.h"

namespace faultline {

namespace {

using detail::check_option_range;
using detail::ChunkEntry;
using detail::kMaxQueueDepth;
using detail::signal_eventfd;
using detail::UniqueFd;
using detail::UringCompletion;
using detail::UringReaderOptions;

constexpr unsigned kMaxWorkers = 256;
// Neighbouring compressed chunks are read together up to this many bytes:
// fewer, larger reads for read-ahead, prefetch and drain batches.
constexpr uint32_t kMaxMergedRead = 1 << 20;

struct Request {
  uint64_t tag = 0;
  int64_t result = 0;    // bytes, until an error replaces it
  uint32_t pending = 0;  // pieces not done yet
};

// Bytes [from, from + len) of a chunk, wanted at dest for req.
struct Target {
  Request* req;
  std::byte* dest;
  uint32_t from;
  uint32_t len;
};

struct ReadBuf;

// One snapshot chunk being read and decompressed for one or more targets.
struct ChunkJob {
  uint64_t chunk = 0;
  bool urgent = false;
  ReadBuf* buf = nullptr;
  const std::byte* frame = nullptr;  // inside buf, once read
  std::vector<Target> targets;
  int error = 0;  // errno for every target (set by the reader or the worker)
};

// One io_uring read, covering the frames of one or more jobs.
struct ReadBuf {
  std::unique_ptr<std::byte[]> bytes;
  int fd = -1;  // the layer's file (a chain has one per layer)
  uint32_t capacity = 0;
  uint64_t offset = 0;
  uint32_t length = 0;
  std::vector<ChunkJob*> jobs;
  uint32_t jobs_left = 0;  // not yet finished by the workers
};

// Decompressed chunks for requests that want only part of one. LRU; any thread.
class ChunkCache {
 public:
  explicit ChunkCache(size_t capacity) : capacity_(capacity) {}
  using Bytes = std::shared_ptr<const std::byte[]>;

  Bytes find(uint64_t chunk) {
    std::lock_guard lock(mu_);
    auto it = map_.find(chunk);
    if (it == map_.end()) return nullptr;
    lru_.splice(lru_.begin(), lru_, it->second);
    return it->second->bytes;
  }

  void insert(uint64_t chunk, Bytes bytes, size_t len) {
    if (len > capacity_) return;
    std::lock_guard lock(mu_);
    if (map_.count(chunk)) return;
    lru_.push_front({chunk, std::move(bytes), len});
    map_[chunk] = lru_.begin();
    used_ += len;
    while (used_ > capacity_) {
      used_ -= lru_.back().len;
      map_.erase(lru_.back().chunk);
      lru_.pop_back();
    }
  }

 private:
  struct Entry {
    uint64_t chunk;
    Bytes bytes;
    size_t len;
  };
  const size_t capacity_;
  std::mutex mu_;
  std::list<Entry> lru_;  // most recent first
  std::unordered_map<uint64_t, std::list<Entry>::iterator> map_;
  size_t used_ = 0;
};

struct Counters {
  std::atomic<uint64_t> chunks_decompressed{0}, compressed_bytes_read{0}, io_reads{0}, zero_chunks{0},
      cache_hits{0}, corrupt_chunks{0};
};

struct DCtxDeleter {
  void operator()(ZSTD_DCtx* c) const { ZSTD_freeDCtx(c); }
};

// A blocking read of n bytes at offset through a Backend nobody else drives
// yet (the source, while the snapshot backend is being opened): submit,
// then reap until the completion comes (the source bounds its time).
bool read_through(Backend& source, void* buf, size_t n, uint64_t offset) {
  auto* p = static_cast<std::byte*>(buf);
  while (n > 0) {
    uint32_t len = static_cast<uint32_t>(std::min<size_t>(n, 1u << 20));
    ReadRequest r{offset, len, p, 0, true};
    source.submit({&r, 1});
    ReadCompletion c;
    while (source.reap({&c, 1}) == 0) {
      pollfd pfd{source.completion_fd(), POLLIN, 0};
      if (pfd.fd < 0 || ::poll(&pfd, 1, 1) > 0) std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    if (c.result <= 0) {
      errno = c.result < 0 ? static_cast<int>(-c.result) : 0;
      return false;
    }
    if (c.zero) std::memset(p, 0, static_cast<size_t>(c.result));
    else if (c.data) std::memcpy(p, c.data, static_cast<size_t>(c.result));
    p += c.result;
    n -= static_cast<size_t>(c.result);
    offset += static_cast<uint64_t>(c.result);
  }
  return true;
}

}  // namespace

class ZstdSnapshotBackend::Impl {
 public:
  Impl(const std::string& path, const ZstdSnapshotOptions& options);
  Impl(std::shared_ptr<Backend> source, const ZstdSnapshotOptions& options);
  ~Impl();

  void submit(std::span<const ReadRequest> reads);
  size_t reap(std::span<ReadCompletion> out);
  void make_urgent(uint64_t tag);

  std::string path_;
  ZstdSnapshotOptions options_;
  // The snapshot and its parents (one layer for a self-contained file), and
  // their merged index: each chunk's entry in the newest layer holding it.
  detail::SnapshotChain chain_;
  detail::SnapshotIndex index_;
  UniqueFd efd_;
  Counters counters_;
  // Compressed bytes come from this Backend rather than file_ (a snapshot
  // served over HTTP). completion_fd() is then epoll_, holding efd_ and the
  // source's completion fd, both edge-triggered.
  std::shared_ptr<Backend> source_;
  UniqueFd epoll_;

 private:
  void start_threads();
  // The reads of the source: queued, submitted and reaped like reader_'s.
  void submit_source();
  size_t reap_source(std::span<UringCompletion> out);
  uint32_t source_in_flight_ = 0;
  void add_piece(Request* req, uint64_t chunk, uint32_t from, uint32_t len, std::byte* dest, bool urgent);
  void start_reads();
  void submit_ring();
  void harvest_cqes();
  void finish_job(ChunkJob* job);
  void settle(Request* req, int err);
  void work();
  void decode(ChunkJob* job, ZSTD_DCtx* dctx);

  Request* new_request();
  ChunkJob* new_job();
  ReadBuf* new_buf(uint32_t length);

  // Fault-thread state.
  std::unordered_map<uint64_t, ChunkJob*> reading_;   // jobs not yet handed to the workers, by chunk
  std::unordered_map<uint64_t, ChunkJob*> decoding_;  // jobs with the workers, by chunk
  // Parts of chunks asked for while the chunk was with the workers: served
  // from the cache when its job finishes, not decompressed a second time.
  std::unordered_map<uint64_t, std::vector<Target>> followers_;
  std::vector<ChunkJob*> new_jobs_;                  // created by this submit(), not yet in a read
  std::deque<ReadBuf*> unsubmitted_;                 // reads waiting for room in the ring
  std::vector<ReadBuf*> in_source_;                  // reads submitted to source_, not yet reaped
  std::deque<ReadCompletion> ready_;
  std::vector<Request*> spare_requests_;
  std::vector<ChunkJob*> spare_jobs_;
  std::vector<ReadBuf*> spare_bufs_;
  std::vector<std::unique_ptr<Request>> all_requests_;
  std::vector<std::unique_ptr<ChunkJob>> all_jobs_;
  std::vector<std::unique_ptr<ReadBuf>> all_bufs_;
  std::vector<ChunkJob*> finished_local_;  // finished jobs being settled, or failed before the workers
  std::vector<ChunkJob*> settling_;

  ChunkCache cache_;
  // After the buffers it reads into: its destructor waits for reads in flight.
  detail::UringReader reader_;

  // Shared with the workers, under mu_.
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<ChunkJob*> urgent_jobs_, background_jobs_;
  std::vector<ChunkJob*> finished_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

ZstdSnapshotBackend::Impl::Impl(const std::string& path, const ZstdSnapshotOptions& options)
    : path_(path), options_(options), cache_(options.cache_bytes) {
  check_option_range("ZstdSnapshotOptions.queue_depth", options.queue_depth, 1, kMaxQueueDepth, path);
  check_option_range("ZstdSnapshotOptions.workers", options.workers, 1, kMaxWorkers, path);
  chain_ = detail::open_snapshot_chain(path);
  index_ = chain_.merged;
  if (index_.info.size == 0) throw Error("snapshot " + path + " is empty: nothing to map", EINVAL);

  efd_ = detail::make_eventfd();
  if (!efd_) throw_errno("cannot create the completion eventfd for snapshot " + path, errno);
  unsigned entries = std::clamp<unsigned>(options.queue_depth, 8, 1024);
  UringReaderOptions ro{
      .entries = entries, .async_large_reads = true, .max_background = detail::default_max_background(entries)};
  if (int r = reader_.init(ro, efd_.get()); r < 0)
    throw_errno("cannot set up io_uring for snapshot " + path, -r);
  start_threads();
}

ZstdSnapshotBackend::Impl::Impl(std::shared_ptr<Backend> source, const ZstdSnapshotOptions& options)
    : path_(source->name()), options_(options), source_(std::move(source)), cache_(options.cache_bytes) {
  check_option_range("ZstdSnapshotOptions.queue_depth", options.queue_depth, 1, kMaxQueueDepth, path_);
  check_option_range("ZstdSnapshotOptions.workers", options.workers, 1, kMaxWorkers, path_);
  Backend& src = *source_;
  index_ = detail::read_snapshot_index(
      [&src](void* buf, size_t n, uint64_t offset) { return read_through(src, buf, n, offset); }, path_, src.size());
  if (index_.has_parent)
    throw Error("snapshot " + path_ + " is an incremental layer (its parent is " + index_.parent_path +
                    "): chains are served from local files; flatten it (faultline snapshot flatten) to serve it here",
                EINVAL);
  chain_.layer_of.assign(index_.info.chunk_count, 0);
  chain_.layers.push_back(detail::ChainLayer{path_, nullptr, index_});
  if (index_.info.size == 0) throw Error("snapshot " + path_ + " is empty: nothing to map", EINVAL);
  efd_ = detail::make_eventfd();
  if (!efd_) throw_errno("cannot create the completion eventfd for snapshot " + path_, errno);
  epoll_ = UniqueFd(::epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_) throw_errno("cannot create an epoll fd for snapshot " + path_, errno);
  for (int fd : {efd_.get(), src.completion_fd()}) {
    if (fd < 0) continue;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLET;
    ev.data.fd = fd;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) throw_errno("epoll_ctl for snapshot " + path_, errno);
  }
  start_threads();
}

void ZstdSnapshotBackend::Impl::start_threads() {
  const std::string& path = path_;
  const ZstdSnapshotOptions& options = options_;
  try {
    for (unsigned i = 0; i < options.workers; ++i) {
      workers_.emplace_back([this] { work(); });
      pthread_setname_np(workers_.back().native_handle(), "faultline-zstd");
    }
  } catch (const std::system_error& e) {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    throw Error("cannot start " + std::to_string(options.workers) + " decompression workers for snapshot " + path +
                    ": " + e.what(),
                e.code().value());
  }
}

ZstdSnapshotBackend::Impl::~Impl() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
  // Reads of the source still in flight land in our buffers: wait for them
  // (the source completes every read in bounded time).
  while (source_ && source_in_flight_ > 0) {
    UringCompletion done[64];
    if (reap_source(done) == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  // Then reader_ waits (bounded) for reads still in flight, before the
  // buffers they land in are freed.
}

void ZstdSnapshotBackend::Impl::submit_source() {
  std::vector<ReadRequest> batch;
  while (!unsubmitted_.empty() && source_in_flight_ + batch.size() < source_->queue_depth()) {
    ReadBuf* buf = unsubmitted_.front();
    unsubmitted_.pop_front();
    bool urgent = false;
    for (const ChunkJob* job : buf->jobs) urgent |= job->urgent;
    batch.push_back({buf->offset, buf->length, buf->bytes.get(), reinterpret_cast<uint64_t>(buf), urgent});
    in_source_.push_back(buf);
  }
  if (batch.empty()) return;
  source_in_flight_ += static_cast<uint32_t>(batch.size());
  source_->submit(batch);
}

size_t ZstdSnapshotBackend::Impl::reap_source(std::span<UringCompletion> out) {
  ReadCompletion got[64];
  size_t n = source_->reap(std::span(got, std::min(out.size(), std::size(got))));
  for (size_t i = 0; i < n; ++i) {
    auto* buf = reinterpret_cast<ReadBuf*>(got[i].tag);
    std::erase(in_source_, buf);
    int64_t r = got[i].result;
    if (r > 0 && got[i].zero) std::memset(buf->bytes.get(), 0, static_cast<size_t>(r));
    if (r > 0 && got[i].data) std::memcpy(buf->bytes.get(), got[i].data, static_cast<size_t>(r));
    out[i] = UringCompletion{got[i].tag, static_cast<int32_t>(r), true};
  }
  source_in_flight_ -= static_cast<uint32_t>(n);
  return n;
}

Request* ZstdSnapshotBackend::Impl::new_request() {
  if (spare_requests_.empty()) {
    all_requests_.push_back(std::make_unique<Request>());
    return all_requests_.back().get();
  }
  Request* r = spare_requests_.back();
  spare_requests_.pop_back();
  return r;
}

ChunkJob* ZstdSnapshotBackend::Impl::new_job() {
  if (spare_jobs_.empty()) {
    all_jobs_.push_back(std::make_unique<ChunkJob>());
    return all_jobs_.back().get();
  }
  ChunkJob* j = spare_jobs_.back();
  spare_jobs_.pop_back();
  return j;
}

ReadBuf* ZstdSnapshotBackend::Impl::new_buf(uint32_t length) {
  ReadBuf* b;
  if (spare_bufs_.empty()) {
    all_bufs_.push_back(std::make_unique<ReadBuf>());
    b = all_bufs_.back().get();
  } else {
    b = spare_bufs_.back();
    spare_bufs_.pop_back();
  }
  if (b->capacity < length) {
    b->bytes = std::make_unique_for_overwrite<std::byte[]>(length);
    b->capacity = length;
  }
  b->length = length;
  return b;
}

// ---- submit -------------------------------------------------------------------

void ZstdSnapshotBackend::Impl::submit(std::span<const ReadRequest> reads) {
  const uint64_t size = index_.info.size;
  const uint64_t cs = index_.info.chunk_size;
  bool completed_now = false;
  for (const ReadRequest& rr : reads) {
    if (rr.offset >= size || rr.length == 0) {
      ready_.push_back(ReadCompletion{rr.tag, 0, false, nullptr});
      completed_now = true;
      continue;
    }
    const uint64_t end = std::min<uint64_t>(rr.offset + rr.length, size);
    const uint64_t first = rr.offset / cs, last = (end - 1) / cs;
    bool all_zero = true;
    for (uint64_t c = first; c <= last && all_zero; ++c) all_zero = index_.entries[c].zero();
    if (all_zero) {
      counters_.zero_chunks.fetch_add(last - first + 1, std::memory_order_relaxed);
      ready_.push_back(ReadCompletion{rr.tag, static_cast<int64_t>(end - rr.offset), true, nullptr});
      completed_now = true;
      continue;
    }
    Request* req = new_request();
    req->tag = rr.tag;
    req->result = static_cast<int64_t>(end - rr.offset);
    req->pending = 0;
    for (uint64_t c = first; c <= last; ++c) {
      uint64_t chunk_start = c * cs;
      uint64_t lo = std::max(rr.offset, chunk_start), hi = std::min(end, chunk_start + cs);
      add_piece(req, c, static_cast<uint32_t>(lo - chunk_start), static_cast<uint32_t>(hi - lo),
                rr.dest + (lo - rr.offset), rr.urgent);
    }
    if (req->pending == 0) {  // served from zeros and the cache
      ready_.push_back(ReadCompletion{req->tag, req->result, false, nullptr});
      spare_requests_.push_back(req);
      completed_now = true;
    }
  }
  start_reads();
  // For an edge-triggered poller (the runtime reaps right after submit() anyway).
  if (completed_now) signal_eventfd(efd_.get());
}

void ZstdSnapshotBackend::Impl::add_piece(Request* req, uint64_t chunk, uint32_t from, uint32_t len,
                                          std::byte* dest, bool urgent) {
  const ChunkEntry& e = index_.entries[chunk];
  if (e.zero()) {
    std::memset(dest, 0, len);
    counters_.zero_chunks.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  bool whole = from == 0 && len == index_.chunk_length(chunk);
  if (!whole) {
    if (ChunkCache::Bytes bytes = cache_.find(chunk)) {
      std::memcpy(dest, bytes.get() + from, len);
      counters_.cache_hits.fetch_add(1, std::memory_order_relaxed);
      return;
    }
  }
  if (!whole && !reading_.count(chunk) && decoding_.count(chunk)) {
    followers_[chunk].push_back(Target{req, dest, from, len});
    req->pending++;
    return;
  }
  ChunkJob*& job = reading_[chunk];
  if (!job) {  // nobody is reading this chunk yet
    job = new_job();
    job->chunk = chunk;
    job->urgent = false;
    job->buf = nullptr;
    job->frame = nullptr;
    job->error = 0;
    job->targets.clear();
    new_jobs_.push_back(job);
  }
  job->urgent |= urgent;
  job->targets.push_back(Target{req, dest, from, len});
  req->pending++;
}

// Puts this submit's new jobs into reads: by file offset, neighbours merged.
void ZstdSnapshotBackend::Impl::start_reads() {
  if (new_jobs_.empty()) return;
  // By layer, then file offset: only neighbours in one file are merged.
  auto offset_of = [&](const ChunkJob* j) { return index_.entries[j->chunk].offset; };
  auto layer_of = [&](const ChunkJob* j) { return chain_.layer_of[j->chunk]; };
  std::sort(new_jobs_.begin(), new_jobs_.end(), [&](ChunkJob* a, ChunkJob* b) {
    return layer_of(a) != layer_of(b) ? layer_of(a) < layer_of(b) : offset_of(a) < offset_of(b);
  });
  for (size_t i = 0; i < new_jobs_.size();) {
    uint64_t start = offset_of(new_jobs_[i]);
    uint64_t stop = start + index_.entries[new_jobs_[i]->chunk].length;
    size_t j = i + 1;
    while (j < new_jobs_.size() && layer_of(new_jobs_[j]) == layer_of(new_jobs_[i]) && offset_of(new_jobs_[j]) == stop &&
           stop - start + index_.entries[new_jobs_[j]->chunk].length <= kMaxMergedRead)
      stop += index_.entries[new_jobs_[j++]->chunk].length;
    ReadBuf* buf = new_buf(static_cast<uint32_t>(stop - start));
    buf->offset = start;
    buf->fd = source_ ? -1 : chain_.fd_of(new_jobs_[i]->chunk);
    buf->jobs.assign(new_jobs_.begin() + static_cast<ptrdiff_t>(i), new_jobs_.begin() + static_cast<ptrdiff_t>(j));
    buf->jobs_left = static_cast<uint32_t>(j - i);
    for (ChunkJob* job : buf->jobs) job->buf = buf;
    unsubmitted_.push_back(buf);
    i = j;
  }
  new_jobs_.clear();
  submit_ring();
}

// Starts the reads that wait, as many as the SQ holds (so a batch is one
// io_uring_submit); the rest wait for room, made by reap().
void ZstdSnapshotBackend::Impl::submit_ring() {
  if (source_) return submit_source();
  size_t queued = 0;
  while (!unsubmitted_.empty() && reader_.in_flight() + reader_.waiting() + queued < reader_.sq_entries()) {
    ReadBuf* buf = unsubmitted_.front();
    unsubmitted_.pop_front();
    bool urgent = false;
    for (const ChunkJob* job : buf->jobs) urgent |= job->urgent;
    reader_.queue({buf->fd, buf->offset, buf->length, buf->bytes.get(), reinterpret_cast<uint64_t>(buf), urgent});
    ++queued;
  }
  if (queued == 0) return;
  // Reads it gave up on come back from the reader as not submitted: their
  // jobs fail in harvest_cqes().
  if (int r = reader_.submit(); r < 0) {
    int err = -r;
    detail::logf(options_.log, LogLevel::kError, "snapshot %s: io_uring_submit failed: %s", path_.c_str(),
                 std::strerror(err));
  }
}

// ---- raising a request -----------------------------------------------------------

void ZstdSnapshotBackend::Impl::make_urgent(uint64_t tag) {
  auto wanted_by = [&](const ChunkJob* job) {
    for (const Target& t : job->targets)
      if (t.req->tag == tag) return true;
    return false;
  };
  // Jobs whose read has not completed: the read goes first.
  for (auto& [chunk, job] : reading_) {
    if (job->urgent || !wanted_by(job)) continue;
    job->urgent = true;
    ReadBuf* buf = job->buf;
    auto it = std::find(unsubmitted_.begin(), unsubmitted_.end(), buf);
    if (it != unsubmitted_.end()) {
      unsubmitted_.erase(it);
      unsubmitted_.push_front(buf);
    } else if (source_) {
      if (std::find(in_source_.begin(), in_source_.end(), buf) != in_source_.end())
        source_->make_urgent(reinterpret_cast<uint64_t>(buf));
    } else {
      reader_.make_urgent(reinterpret_cast<uint64_t>(buf));
    }
  }
  // Jobs read, waiting for a worker: into the urgent queue.
  std::lock_guard lock(mu_);
  for (auto& [chunk, job] : decoding_) {
    if (job->urgent || !wanted_by(job)) continue;
    auto it = std::find(background_jobs_.begin(), background_jobs_.end(), job);
    if (it == background_jobs_.end()) continue;  // a worker has it
    background_jobs_.erase(it);
    job->urgent = true;
    urgent_jobs_.push_back(job);
  }
}

// ---- completions ----------------------------------------------------------------

void ZstdSnapshotBackend::Impl::harvest_cqes() {
  UringCompletion done[64];
  std::vector<ChunkJob*>& failed = finished_local_;
  bool queued = false;
  for (;;) {
    size_t got = source_ ? reap_source(done) : reader_.reap(done);
    for (size_t i = 0; i < got; ++i) {
      auto* buf = reinterpret_cast<ReadBuf*>(done[i].tag);
      int res = done[i].result;
      if (!done[i].submitted) {  // never read: not a read error of the file
        for (ChunkJob* job : buf->jobs) {
          reading_.erase(job->chunk);
          job->error = -res;
          failed.push_back(job);
        }
        continue;
      }
      int err = res < 0 ? -res : static_cast<uint32_t>(res) < buf->length ? EIO : 0;  // short: the file shrank
      if (res > 0) counters_.compressed_bytes_read.fetch_add(static_cast<uint64_t>(res), std::memory_order_relaxed);
      counters_.io_reads.fetch_add(1, std::memory_order_relaxed);
      for (ChunkJob* job : buf->jobs) {
        reading_.erase(job->chunk);
        if (err) {
          job->error = err;
          if (err != EAGAIN && err != EINTR) {
            counters_.corrupt_chunks.fetch_add(1, std::memory_order_relaxed);
            detail::logf(options_.log, LogLevel::kError, "snapshot %s: cannot read chunk %llu at offset %llu: %s",
                         path_.c_str(),
                         static_cast<unsigned long long>(job->chunk),
                         static_cast<unsigned long long>(index_.entries[job->chunk].offset),
                         res < 0 ? std::strerror(err) : "short read (the file shrank)");
          }
          failed.push_back(job);
          continue;
        }
        job->frame = buf->bytes.get() + (index_.entries[job->chunk].offset - buf->offset);
      }
      if (!err) {
        for (ChunkJob* job : buf->jobs) decoding_[job->chunk] = job;
        std::lock_guard lock(mu_);
        for (ChunkJob* job : buf->jobs) (job->urgent ? urgent_jobs_ : background_jobs_).push_back(job);
        queued = true;
      }
    }
    if (got < std::size(done)) break;
  }
  if (queued) cv_.notify_all();
}

void ZstdSnapshotBackend::Impl::settle(Request* req, int err) {
  if (err) req->result = -int64_t{err};
  if (--req->pending == 0) {
    ready_.push_back(ReadCompletion{req->tag, req->result, false, nullptr});
    spare_requests_.push_back(req);
  }
}

// A job is done (by a worker, or failed on read): settle its targets, then
// the followers that waited for it.
void ZstdSnapshotBackend::Impl::finish_job(ChunkJob* job) {
  for (const Target& t : job->targets) settle(t.req, job->error);
  auto it = decoding_.find(job->chunk);
  if (it != decoding_.end() && it->second == job) decoding_.erase(it);
  auto f = followers_.find(job->chunk);
  if (f != followers_.end()) {
    std::vector<Target> waiting = std::move(f->second);
    followers_.erase(f);
    ChunkCache::Bytes bytes = job->error ? nullptr : cache_.find(job->chunk);
    for (const Target& t : waiting) {
      if (bytes || job->error) {
        if (bytes) {
          std::memcpy(t.dest, bytes.get() + t.from, t.len);
          counters_.cache_hits.fetch_add(1, std::memory_order_relaxed);
        }
        settle(t.req, job->error);
      } else {  // not cached (no room): read it again
        t.req->pending--;
        add_piece(t.req, job->chunk, t.from, t.len, t.dest, true);
      }
    }
  }
  ReadBuf* buf = job->buf;
  if (--buf->jobs_left == 0) {
    buf->jobs.clear();
    spare_bufs_.push_back(buf);
  }
  spare_jobs_.push_back(job);
}

size_t ZstdSnapshotBackend::Impl::reap(std::span<ReadCompletion> out) {
  if (epoll_) {
    // Empties our epoll's ready list, so the runtime's epoll sees the next
    // completion (of the source or of a worker) as a new edge.
    epoll_event events[4];
    while (::epoll_wait(epoll_.get(), events, 4, 0) == 4) {
    }
  }
  harvest_cqes();
  submit_ring();  // reads that waited for room
  {
    std::lock_guard lock(mu_);
    finished_local_.insert(finished_local_.end(), finished_.begin(), finished_.end());
    finished_.clear();
  }
  // Settling a job can start reads (followers that found no cached copy),
  // and a read that cannot be submitted fails its jobs at once: repeat.
  while (!finished_local_.empty()) {
    settling_.swap(finished_local_);
    for (ChunkJob* job : settling_) finish_job(job);
    settling_.clear();
    start_reads();
  }
  size_t n = 0;
  while (n < out.size() && !ready_.empty()) {
    out[n++] = ready_.front();
    ready_.pop_front();
  }
  // `out` is full and more is ready: re-arm the edge for it.
  if (n == out.size() && !ready_.empty()) signal_eventfd(efd_.get());
  return n;
}

// ---- workers --------------------------------------------------------------------

void ZstdSnapshotBackend::Impl::work() {
  std::unique_ptr<ZSTD_DCtx, DCtxDeleter> dctx(ZSTD_createDCtx());
  for (;;) {
    ChunkJob* job;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return stopping_ || !urgent_jobs_.empty() || !background_jobs_.empty(); });
      if (stopping_) return;
      auto& q = urgent_jobs_.empty() ? background_jobs_ : urgent_jobs_;
      job = q.front();
      q.pop_front();
    }
    if (!dctx) {
      job->error = ENOMEM;
    } else {
      decode(job, dctx.get());
    }
    bool was_empty;
    {
      std::lock_guard lock(mu_);
      was_empty = finished_.empty();
      finished_.push_back(job);
    }
    if (was_empty) signal_eventfd(efd_.get());
  }
}

void ZstdSnapshotBackend::Impl::decode(ChunkJob* job, ZSTD_DCtx* dctx) {
  const ChunkEntry& e = index_.entries[job->chunk];
  const uint64_t len = index_.chunk_length(job->chunk);
  // Decompress straight into a target that wants the whole chunk; otherwise
  // into a buffer that then goes into the cache.
  std::byte* dst = nullptr;
  for (const Target& t : job->targets)
    if (t.from == 0 && t.len == len) {
      dst = t.dest;
      break;
    }
  std::shared_ptr<std::byte[]> own;
  if (!dst) {
    own = std::make_shared_for_overwrite<std::byte[]>(len);
    dst = own.get();
  }
  detail::ChunkCheck check = detail::decode_chunk(dctx, chain_.dictionary_of(job->chunk), {job->frame, e.length}, dst, len, e);
  counters_.chunks_decompressed.fetch_add(1, std::memory_order_relaxed);
  if (check.status != detail::ChunkCheck::kOk) {
    counters_.corrupt_chunks.fetch_add(1, std::memory_order_relaxed);
    detail::logf(options_.log, LogLevel::kError, "snapshot %s: chunk %llu at offset %llu: %s; its pages get SIGBUS",
                 path_.c_str(), static_cast<unsigned long long>(job->chunk),
                 static_cast<unsigned long long>(e.offset), detail::describe(check, len, e).c_str());
    job->error = EBADMSG;
    return;
  }
  bool partial = false;
  for (const Target& t : job->targets) {
    if (t.dest != dst) std::memcpy(t.dest, dst + t.from, t.len);
    partial |= t.len != len;
  }
  // Requests for parts of a chunk tend to come back for its other parts.
  if (partial && !own && len <= options_.cache_bytes) {
    own = std::make_shared_for_overwrite<std::byte[]>(len);
    std::memcpy(own.get(), dst, len);
  }
  if (own) cache_.insert(job->chunk, std::move(own), len);
}

// ---- the public class -----------------------------------------------------------

ZstdSnapshotBackend::ZstdSnapshotBackend(const std::string& path, const ZstdSnapshotOptions& options)
    : impl_(std::make_unique<Impl>(path, options)) {}
ZstdSnapshotBackend::ZstdSnapshotBackend(std::shared_ptr<Backend> source, const ZstdSnapshotOptions& options)
    : impl_(std::make_unique<Impl>(std::move(source), options)) {}
ZstdSnapshotBackend::~ZstdSnapshotBackend() = default;

uint64_t ZstdSnapshotBackend::size() const { return impl_->index_.info.size; }
std::string ZstdSnapshotBackend::name() const { return "zstd snapshot " + impl_->path_; }
uint32_t ZstdSnapshotBackend::queue_depth() const { return impl_->options_.queue_depth; }
int ZstdSnapshotBackend::completion_fd() const { return impl_->epoll_ ? impl_->epoll_.get() : impl_->efd_.get(); }
void ZstdSnapshotBackend::submit(std::span<const ReadRequest> reads) { impl_->submit(reads); }
size_t ZstdSnapshotBackend::reap(std::span<ReadCompletion> out) { return impl_->reap(out); }
void ZstdSnapshotBackend::make_urgent(uint64_t tag) { impl_->make_urgent(tag); }
uint32_t ZstdSnapshotBackend::chunk_size() const { return impl_->index_.info.chunk_size; }

ZstdSnapshotCounters ZstdSnapshotBackend::counters() const {
  const Counters& c = impl_->counters_;
  ZstdSnapshotCounters out;
  out.chunks_decompressed = c.chunks_decompressed.load(std::memory_order_relaxed);
  out.compressed_bytes_read = c.compressed_bytes_read.load(std::memory_order_relaxed);
  out.io_reads = c.io_reads.load(std::memory_order_relaxed);
  out.zero_chunks = c.zero_chunks.load(std::memory_order_relaxed);
  out.cache_hits = c.cache_hits.load(std::memory_order_relaxed);
  out.corrupt_chunks = c.corrupt_chunks.load(std::memory_order_relaxed);
  return out;
}

std::shared_ptr<Backend> open_zstd_snapshot(const std::string& path, const ZstdSnapshotOptions& options) {
  return std::make_shared<ZstdSnapshotBackend>(path, options);
}

std::shared_ptr<Backend> open_zstd_snapshot(std::shared_ptr<Backend> source, const ZstdSnapshotOptions& options) {
  return std::make_shared<ZstdSnapshotBackend>(std::move(source), options);
}

}  // namespace faultline

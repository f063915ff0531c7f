// SPDX-License-Identifier: Apache-2.0
// FileBackend serves a region from a local file with io_uring (liburing):
// up to queue_depth reads in flight, submitted in batches, completions
// signalled on an eventfd registered with the ring. Buffered by default;
// O_DIRECT on request (the runtime then aligns every read to 4 KiB and the
// staging memory is registered as a fixed buffer).
//
// If io_uring cannot be set up (an old kernel, a seccomp filter), it falls
// back to pread(2) on a few worker threads and says so once on stderr; name()
// and engine() tell which is in use.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "faultline/backend.h"
#include "faultline/log.h"

namespace faultline {

struct FileBackendOptions {
  enum class Engine { kAuto, kIoUring, kPread };
  Engine engine = Engine::kAuto;  // kIoUring fails rather than fall back
  bool direct = false;            // O_DIRECT: bypass the page cache
  uint32_t queue_depth = 64;      // reads in flight, 1..4096
  uint32_t pread_threads = 4;     // workers for the pread engine
  // Open read-write, for write-back regions (RegionOptions::write_back):
  // write_data() writes through an io_uring of its own (queue_depth writes
  // in flight; pwrite(2) where io_uring is unavailable) and sync_data() is
  // fdatasync (IORING_FSYNC_DATASYNC). Writes go through the page cache
  // even with `direct`.
  bool writable = false;
  // Buffered reads: keep the file's pages in the page cache after reading
  // them. By default the backend drops them behind its reads
  // (POSIX_FADV_DONTNEED), since the region now holds the bytes: a page
  // is then in memory once, not twice. Keep them when other readers of the
  // file (or a later run) should find it cached. Ignored with `direct`.
  bool keep_cache = false;
  // io_uring engine: background reads (read-ahead, prefetch) in the kernel
  // at most; the rest wait in the backend, so a demand read never queues
  // behind them in io_uring's worker pool. 0: two fewer than io_uring's
  // bounded workers (min(queue_depth, 4 per CPU)), at least 1.
  uint32_t background_reads = 0;
  LogSink log;  // where warnings go (faultline/log.h); empty: stderr
};

class FileBackend final : public Backend {
 public:
  // Opens `path` (read-only unless options.writable). Throws Error naming the path if it is missing,
  // unreadable, not a regular file or empty, or if an option is invalid.
  explicit FileBackend(const std::string& path, const FileBackendOptions& options = {});
  ~FileBackend() override;

  uint64_t size() const override;
  std::string name() const override;
  uint32_t queue_depth() const override;
  uint32_t alignment() const override;
  int completion_fd() const override;
  void submit(std::span<const ReadRequest> reads) override;
  size_t reap(std::span<ReadCompletion> out) override;
  void make_urgent(uint64_t tag) override;
  void attach_staging(std::span<std::byte> staging) override;
  bool writable() const override;
  std::string read_only_reason() const override;
  WriteResult write_data(std::span<const WriteRequest> writes) override;
  int sync_data() override;
  int64_t read_data(uint64_t offset, std::span<std::byte> out) override;

  // "io_uring" or "pread".
  std::string engine() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace faultline

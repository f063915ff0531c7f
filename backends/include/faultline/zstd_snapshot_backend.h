// SPDX-License-Identifier: Apache-2.0
// ZstdSnapshotBackend serves a Region from a compressed snapshot
// (faultline/snapshot.h): the lazy half of a snapshot restore.
//
// The fault thread reads compressed chunks with io_uring (neighbouring chunks
// merged into reads of up to 1 MiB); worker threads decompress them straight
// into the runtime's staging memory, check each chunk's checksum and signal
// completion on an eventfd the fault loop polls, so one slow chunk never
// stalls other faults. Demand reads are decompressed before read-ahead and
// prefetch. All-zero chunks complete at once as zero pages. Requests that
// cover only part of a chunk (fill_size < chunk_size) are served from a
// small LRU cache of decompressed chunks.
//
// A chunk that fails its checks (corrupt zstd frame, wrong length, checksum
// mismatch, read error) completes with -EBADMSG (or the read's errno): the
// runtime poisons the pages of that read, so the access gets SIGBUS, and
// wrong bytes are never installed. The backend counts such chunks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "faultline/backend.h"
#include "faultline/log.h"

namespace faultline {

struct ZstdSnapshotOptions {
  uint32_t queue_depth = 64;    // runtime reads in flight, 1..4096
  unsigned workers = 1;         // decompression threads, 1..256
  size_t cache_bytes = 8u << 20;  // decompressed chunks kept for partial-chunk reads; 0 = none
  LogSink log;  // where warnings go (faultline/log.h), e.g. a corrupt chunk; empty: stderr
};

// Counters of one backend; any thread may read them.
struct ZstdSnapshotCounters {
  uint64_t chunks_decompressed = 0;
  uint64_t compressed_bytes_read = 0;  // from the snapshot file
  uint64_t io_reads = 0;               // io_uring reads (after merging)
  uint64_t zero_chunks = 0;            // chunk pieces served as zeros, without reading
  uint64_t cache_hits = 0;             // partial-chunk reads served from the cache
  uint64_t corrupt_chunks = 0;         // chunks that failed their checks (or could not be read)
};

class ZstdSnapshotBackend final : public Backend {
 public:
  // Opens and checks the snapshot's header and index. Throws Error naming
  // the file and the field at fault, or the option at fault.
  explicit ZstdSnapshotBackend(const std::string& path, const ZstdSnapshotOptions& options = {});
  // The snapshot is the object of `source` (e.g. an HttpBackend over its
  // URL): the index is read through it at once, chunks as they are needed.
  // The source is this backend's alone: it drives it from the same threads
  // (the runtime's fault loop) and must be its only user.
  explicit ZstdSnapshotBackend(std::shared_ptr<Backend> source, const ZstdSnapshotOptions& options = {});
  ~ZstdSnapshotBackend() override;

  uint64_t size() const override;
  std::string name() const override;
  uint32_t queue_depth() const override;
  int completion_fd() const override;
  void submit(std::span<const ReadRequest> reads) override;
  size_t reap(std::span<ReadCompletion> out) override;
  void make_urgent(uint64_t tag) override;

  ZstdSnapshotCounters counters() const;
  uint32_t chunk_size() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// A Backend over the snapshot at `path` (a ZstdSnapshotBackend). Throws Error
// at open on a bad header or index, naming the file and field.
std::shared_ptr<Backend> open_zstd_snapshot(const std::string& path, const ZstdSnapshotOptions& options = {});
// The same over the compressed bytes of `source` (see the constructor).
std::shared_ptr<Backend> open_zstd_snapshot(std::shared_ptr<Backend> source, const ZstdSnapshotOptions& options = {});

}  // namespace faultline

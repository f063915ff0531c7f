// SPDX-License-Identifier: Apache-2.0
// Compressed snapshots: a byte image (a file, a region, any memory range)
// cut into fixed-size chunks, each compressed on its own with zstd, plus an
// index, so that any chunk can be read and decompressed alone. The on-disk
// format is described in docs/snapshot-format.md.
//
// write_snapshot*() make one; SnapshotReader checks one and reads chunks;
// open_zstd_snapshot() (faultline/zstd_snapshot_backend.h) serves one to a
// Region, so a restore faults in only what the application touches.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace faultline {

struct SnapshotWriteOptions {
  // Uncompressed bytes per chunk: a power of two from 4 KiB to 4 MiB.
  uint32_t chunk_size = 64 * 1024;
  // zstd compression level (ZSTD_minCLevel()..ZSTD_maxCLevel(), 0 = zstd's default).
  int level = 3;
  // Compression threads; 0 = one per hardware thread.
  unsigned threads = 0;
  // Largest zstd dictionary to train from a sample of the chunks and store
  // in the snapshot (0 = none). Independent chunks each start without
  // history; a shared dictionary gives them back the common strings and
  // entropy tables. It is kept only where a held-out sample says it saves
  // more than it costs. At most 1 MiB.
  uint32_t dictionary_bytes = 64 * 1024;
  // Called now and then, and once at the end, with the uncompressed bytes
  // written so far and the total. Always called from the thread that called
  // write_snapshot*(), never concurrently. Optional.
  std::function<void(uint64_t done_bytes, uint64_t total_bytes)> progress;
};

// Writes `data` as a snapshot at `path`, crash-safely: a temporary file in
// the same directory, fsync, rename over `path`, fsync of the directory. A
// reader never sees half a snapshot under `path`; on failure nothing is left
// behind. The file gets mode 0666 narrowed by the umask, like any new file.
// Throws Error naming the file and the problem (or the bad option).
void write_snapshot(std::span<const std::byte> data, const std::string& path,
                    const SnapshotWriteOptions& options = {});

// The same, for the contents of the file (or block device) at input_path.
// The snapshot is never readable or writable by more users than the input:
// its mode is the input's read and write bits, narrowed by the umask.
// Throws Error naming the input if it cannot be read, or if it changed while
// it was being read (its size, mtime or ctime differ afterwards, or it has
// bytes past the size read): a torn image is never written. Changes the
// file's size and timestamps do not show (stores through a shared mapping,
// writes to a block device's contents) cannot be seen: to snapshot a file
// that is in use, stop its writer or snapshot a copy.
void write_snapshot_from_file(const std::string& input_path, const std::string& path,
                              const SnapshotWriteOptions& options = {});

// What a snapshot's header and index say.
struct SnapshotInfo {
  uint32_t version = 0;        // format version
  uint32_t chunk_size = 0;     // uncompressed bytes per chunk (the last may be short)
  uint32_t flags = 0;          // header flags (bit 0: compressed with a stored dictionary)
  uint64_t size = 0;           // uncompressed bytes
  uint64_t chunk_count = 0;
  uint64_t zero_chunks = 0;    // chunks stored as a flag, without data
  uint64_t compressed_bytes = 0;  // the chunks' compressed data, without header and index
  uint64_t file_bytes = 0;     // the whole file
  uint32_t dictionary_bytes = 0;  // the stored zstd dictionary (0 = none)
  // Incremental snapshots (format version 2). A layer holds only the chunks
  // written since its parent; the parent is named by path and content id.
  std::string id;                 // this file's content id (SHA-256, hex)
  std::string parent;             // the parent's path as stored ("" = none)
  std::string parent_id;          // the content id the parent must have (hex)
  uint64_t inherited_chunks = 0;  // chunks this layer leaves to its parent
  uint32_t layers = 1;            // files in the chain (of an opened chain)
};

// One file of an open chain: where it is and what its own header and index say.
struct SnapshotLayer {
  std::string path;  // the parent path resolved against the child's directory
  SnapshotInfo info;
};

// Writes the image of the chain at `chain_path` (a snapshot and its parents)
// as one self-contained snapshot at `path`, crash-safely like
// write_snapshot(). Throws Error naming the layer or the file at fault.
void flatten_snapshot(const std::string& chain_path, const std::string& path,
                      const SnapshotWriteOptions& options = {});

// A snapshot file opened for reading. open() checks the header and the index
// completely (bounds, overlaps, overflows, checksums) and throws Error naming
// the file and the field at fault; chunk data is checked when read. A file
// with a parent (an incremental layer) is opened with its whole chain, which
// then reads as one image: each chunk from the newest layer holding it.
//
// Read-only and thread-compatible: const methods may be called from many
// threads at once. Copies share the open file.
class SnapshotReader {
 public:
  static SnapshotReader open(const std::string& path);
  // This one file alone, its parents neither opened nor checked: chunks it
  // leaves to its parent report chunk_is_inherited(), and read_chunk()
  // refuses them. For checking each layer of a chain on its own.
  static SnapshotReader open_layer(const std::string& path);
  // A snapshot that is not a local file: `read_at(buf, n, offset)` reads n
  // bytes of its file_bytes into buf and returns whether it got them all
  // (errno says why not); it may be called from many threads at once (e.g.
  // over HttpBackend::read_range). `name` stands for the file in errors.
  // Opened like open_layer(): a parent is not followed.
  using ReadAt = std::function<bool(void* buf, size_t n, uint64_t offset)>;
  static SnapshotReader open(const std::string& name, uint64_t file_bytes, ReadAt read_at);

  const std::string& path() const;
  const SnapshotInfo& info() const;
  // Uncompressed bytes of chunk `index` (chunk_size, except a short last one).
  // Throws Error if index >= chunk_count (so do the other chunk methods).
  uint64_t chunk_length(uint64_t index) const;
  bool chunk_is_zero(uint64_t index) const;
  bool chunk_is_inherited(uint64_t index) const;
  // The files of the chain, newest first (one for a self-contained file).
  const std::vector<SnapshotLayer>& layers() const;
  // Reads chunk `index`, decompresses it into out and checks its length and
  // checksum. out.size() must be at least chunk_length(index). Throws Error
  // naming the file, chunk index, file offset and problem (read error,
  // corrupt zstd frame, decompressed size mismatch, checksum mismatch); out
  // may then hold garbage.
  void read_chunk(uint64_t index, std::span<std::byte> out) const;

 private:
  class Impl;
  explicit SnapshotReader(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

}  // namespace faultline

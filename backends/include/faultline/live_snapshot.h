// SPDX-License-Identifier: Apache-2.0
// Point-in-time snapshots of memory that the program keeps writing, and
// incremental snapshots that hold only the chunks written since the last one.
//
// LiveSnapshotter owns its own userfaultfd with synchronous write-protect
// over one writable private anonymous range of the caller's (not a faultline
// Region: see below). snapshot() write-protects the whole range: that is the
// instant. Writer threads keep running: a write to a chunk not yet saved is
// held only until that chunk's contents at the instant are copied, then the
// chunk is un-protected and the writer woken; a background thread copies the
// rest, and compression threads write the chunks in the zstd snapshot format
// (faultline/snapshot.h) through a temporary file, fsync and rename. Writers
// are paused only for the protect step itself (a write that arrives during
// it is held until the step is over, which is what makes the image one
// instant and not a smear of them).
//
// With track_writes (the default), chunks stay protected after they are
// saved, and the first write to each is recorded (and then un-protected):
// snapshot_child() then stores only the chunks written since the previous
// snapshot and names that file as its parent, by path and content id. Such
// a chain restores lazily as one image (open_zstd_snapshot() of the newest
// file), and `faultline snapshot flatten` makes one self-contained file.
//
// faultline Regions cannot be snapshotted this way: their range belongs to
// the runtime's userfaultfd (with asynchronous write-protect when dirty
// tracking is on), and a range can be registered with one userfaultfd only.
// The constructor refuses such a range with an Error saying so.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace faultline {

struct LiveSnapshotOptions {
  // Uncompressed bytes per chunk: a power of two from 4 KiB to 4 MiB. Also
  // the unit a held writer waits for (one chunk's copy).
  uint32_t chunk_size = 64 * 1024;
  int level = 3;         // zstd level
  unsigned threads = 0;  // compression threads; 0 = one per hardware thread
  // How much nicer (setpriority) than the snapshot's caller the compression
  // threads run, 0 .. 19: when the CPUs are busy, the program's writers
  // and the thread that releases held writes get them first, and a writer
  // is held for a copy, not for a compressor's time slice.
  int compress_nice = 10;
  // Keep saved chunks protected and record first writes, so that the next
  // snapshot can be a child. Off: a saved chunk is un-protected at once (no
  // write after it costs a fault), and snapshot_child() is refused.
  bool track_writes = true;
  // Called on the snapshotter's own thread right after each protect step,
  // before any held write is let through: what the program records here
  // (a counter, a log position) is consistent with the image. It must not
  // write the range (that write would wait for this very thread). Optional.
  std::function<void()> at_instant;
};

// What one snapshot took.
struct LiveSnapshotStats {
  double seconds = 0;          // from the start of the protect step to the rename
  double protect_seconds = 0;  // the protect step on the snapshotter's thread (the only pause of writers)
  uint64_t stored_chunks = 0;  // chunks in the file with data or the zero flag
  uint64_t inherited_chunks = 0;  // chunks left to the parent (a child)
  uint64_t stored_bytes = 0;   // uncompressed bytes of the stored chunks
  uint64_t file_bytes = 0;     // the snapshot file
  uint64_t held_writes = 0;    // write-protect faults served during the snapshot
  uint64_t saved_for_writer = 0;  // chunks copied ahead of the background because a writer waited
};

// Thread-compatible: one thread calls snapshot*() at a time; any threads may
// write the range meanwhile. The caller guarantees that the range stays
// mapped, private, anonymous and writable for the object's lifetime.
class LiveSnapshotter {
 public:
  // Registers [addr, addr + length) for write-protection (page-aligned; the
  // length need not be a multiple of the chunk size). Throws Error: no
  // userfaultfd or write-protect support, a range registered with another
  // userfaultfd (a faultline Region), a bad option.
  LiveSnapshotter(void* addr, size_t length, const LiveSnapshotOptions& options = {});
  // Un-protects and unregisters the range; held writers are woken.
  ~LiveSnapshotter();
  LiveSnapshotter(const LiveSnapshotter&) = delete;
  LiveSnapshotter& operator=(const LiveSnapshotter&) = delete;

  // Writes a full image of the range as it is now to `path`. Returns when
  // the file is complete (renamed into place). Throws Error naming the file;
  // then nothing is left under `path` and the next snapshot must be full.
  LiveSnapshotStats snapshot(const std::string& path);
  // Writes to `path` only the chunks written since the last successful
  // snapshot*(), naming that file as the parent (by its path, relative when
  // both are in one directory, and its content id). Throws Error if there is
  // no parent yet or track_writes is off.
  LiveSnapshotStats snapshot_child(const std::string& path);

  // The file the next snapshot_child() names as its parent ("" = none).
  const std::string& last_snapshot() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace faultline

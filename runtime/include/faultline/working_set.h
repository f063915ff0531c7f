// SPDX-License-Identifier: Apache-2.0
// A working set: the chunks a run of the application touched, in the order it
// first touched them (REAP, ASPLOS'21). Record one with
// RegionOptions.record_touches and Region::touched_chunks(), save it next to
// the data, and on the next run hand it to Region::prefetch_chunks() right
// after map(): the runtime loads those chunks while the application already
// runs, so it hardly faults.
//
// The file format (little-endian; docs/design.md, "Working sets"):
//   magic "FLWSET\0\0", u32 version (1), u32 fill_size, u64 region_length,
//   u64 count, count x u64 offsets, u64 FNV-1a of everything before it.
// A working set is a hint: a stale one only costs reads, never correctness.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace faultline {

struct WorkingSet {
  uint32_t fill_size = 0;      // the recording region's fill size
  uint64_t region_length = 0;  // the recording region's length
  std::vector<uint64_t> offsets;  // region byte offsets, multiples of fill_size, first touch first
};

// Writes `ws` to `path` atomically: a temporary file in the same directory,
// fsync, rename, fsync of the directory. A reader never sees half a file
// under `path`. The file gets mode 0666 narrowed by the umask, like any new
// file. Throws Error naming the file on failure (nothing is left behind) or
// on a working set whose offsets are not multiples of fill_size or past
// region_length.
void save_working_set(const std::string& path, const WorkingSet& ws);

// Reads and checks a working-set file. Throws Error naming the file and the
// field that is wrong (magic, version, fill_size, count, offsets[i],
// checksum) or the I/O error.
WorkingSet load_working_set(const std::string& path);

}  // namespace faultline

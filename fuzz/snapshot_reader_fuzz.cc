// SPDX-License-Identifier: Apache-2.0
// libFuzzer target: SnapshotReader on arbitrary bytes. Opens the input as a
// snapshot file (a memfd) and, if the header and index pass, reads every
// chunk. Anything but faultline::Error (a crash, a hang, an out-of-bounds
// access under ASan, another exception) is a bug.
//
// Input: one mode byte, then the file. With bit 0 of the mode byte set, the
// header, dictionary and index checksums are recomputed before the file is
// opened, so the fuzzer gets past them to the checks behind them.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "crc32c.h"
#include "faultline/error.h"
#include "faultline/snapshot.h"
#include "snapshot_format.h"
#include "unique_fd.h"

namespace {

uint64_t get(const unsigned char* p, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= uint64_t{p[i]} << (8 * i);
  return v;
}

void put(unsigned char* p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) p[i] = static_cast<unsigned char>(v >> (8 * i));
}

void fix_checksums(std::vector<unsigned char>& f) {
  using namespace faultline::detail;
  if (f.size() < kSnapshotHeaderBytes) return;
  uint64_t count = get(f.data() + 32, 8), index_offset = get(f.data() + 40, 8);
  uint64_t dict_length = get(f.data() + 52, 4);
  if (dict_length <= f.size() - kSnapshotHeaderBytes)
    put(f.data() + 56, crc32c(f.data() + kSnapshotHeaderBytes, dict_length), 4);
  if (index_offset <= f.size() && count <= (f.size() - index_offset) / kSnapshotEntryBytes)
    put(f.data() + 48, crc32c(f.data() + index_offset, count * kSnapshotEntryBytes), 4);
  put(f.data() + 60, crc32c(f.data(), 60), 4);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  std::vector<unsigned char> file(data + 1, data + size);
  if (data[0] & 1) fix_checksums(file);

  faultline::detail::UniqueFd fd(memfd_create("snapshot-fuzz", MFD_CLOEXEC));
  if (!fd) std::abort();
  for (size_t done = 0; done < file.size();) {
    ssize_t n = write(fd.get(), file.data() + done, file.size() - done);
    if (n <= 0) std::abort();
    done += static_cast<size_t>(n);
  }
  std::string path = "/proc/self/fd/" + std::to_string(fd.get());
  try {
    faultline::SnapshotReader r = faultline::SnapshotReader::open(path);
    const faultline::SnapshotInfo& info = r.info();
    // What open() promised.
    if (info.file_bytes != file.size() || info.compressed_bytes > info.file_bytes ||
        info.zero_chunks > info.chunk_count || info.chunk_count * uint64_t{info.chunk_size} < info.size)
      std::abort();
    std::vector<std::byte> out(info.chunk_size);
    for (uint64_t i = 0; i < info.chunk_count; ++i) {
      if (r.chunk_length(i) > info.chunk_size || r.chunk_length(i) == 0) std::abort();
      try {
        r.read_chunk(i, out);
        if (r.chunk_is_zero(i))
          for (uint64_t k = 0; k < r.chunk_length(i); ++k)
            if (out[k] != std::byte{0}) std::abort();
      } catch (const faultline::Error&) {
      }
    }
  } catch (const faultline::Error&) {
  }
  return 0;
}

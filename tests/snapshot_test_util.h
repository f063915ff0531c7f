// SPDX-License-Identifier: Apache-2.0
// Helpers for the snapshot tests: a temporary directory, whole-file reads and
// writes, and patching a snapshot's header or index entries with valid
// checksums (so a test reaches the check it is about, not the checksum).
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "crc32c.h"
#include "little_endian.h"
#include "snapshot_format.h"

namespace faultline::test {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/faultline-snap-XXXXXX";
    if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
    path = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::string file(const std::string& name) const { return path + "/" + name; }
  size_t entries() const {
    size_t n = 0;
    for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(path)) ++n;
    return n;
  }
};

inline std::vector<unsigned char> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<unsigned char>(std::istreambuf_iterator<char>(in), {});
}

inline void write_bytes(const std::string& path, const std::vector<unsigned char>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

using detail::get_le;

inline detail::SnapshotHeader decode_header_for_test(const unsigned char* h) { return detail::decode_header(h); }

// Changes header fields and re-encodes the header with a valid checksum.
inline void patch_header(std::vector<unsigned char>& f, const std::function<void(detail::SnapshotHeader&)>& edit) {
  detail::SnapshotHeader hd = decode_header_for_test(f.data());
  edit(hd);
  detail::encode_header(hd, f.data());
}

// Changes index entry i, then fixes the index and header checksums.
inline void patch_entry(std::vector<unsigned char>& f, uint64_t i, const std::function<void(detail::ChunkEntry&)>& edit) {
  detail::SnapshotHeader hd = decode_header_for_test(f.data());
  unsigned char* p = f.data() + hd.index_offset + i * detail::kSnapshotEntryBytes;
  detail::ChunkEntry e = detail::decode_entry(p);
  edit(e);
  detail::encode_entry(e, p);
  hd.index_checksum = detail::crc32c(f.data() + hd.index_offset, hd.chunk_count * detail::kSnapshotEntryBytes);
  detail::encode_header(hd, f.data());
}

inline detail::ChunkEntry entry_of(const std::vector<unsigned char>& f, uint64_t i) {
  detail::SnapshotHeader hd = decode_header_for_test(f.data());
  return detail::decode_entry(f.data() + hd.index_offset + i * detail::kSnapshotEntryBytes);
}

}  // namespace faultline::test

// SPDX-License-Identifier: Apache-2.0
// The snapshot file format, version 1 (docs/snapshot-format.md), and the
// checks shared by SnapshotReader and ZstdSnapshotBackend. Private to the
// library (and its tests and fuzzers).
//
//   offset 0                  header, 64 bytes
//   offset 64                 zstd dictionary, dict_length bytes (flag kFlagDictionary)
//   offset 64 + dict_length   chunk data: zstd frames, in chunk order
//   offset index_offset       index: chunk_count entries of 16 bytes
//   end of file               == index_offset + 16 * chunk_count
//
// All integers little-endian.
#pragma once

#include <zstd.h>
#include <zstd_errors.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "faultline/snapshot.h"

namespace faultline::detail {

inline constexpr char kSnapshotMagic[8] = {'F', 'L', 'Z', 'S', 'N', 'A', 'P', 0};
inline constexpr uint32_t kSnapshotVersion = 1;
inline constexpr uint32_t kSnapshotHeaderBytes = 64;
inline constexpr uint32_t kSnapshotEntryBytes = 16;
inline constexpr uint32_t kMinChunkSize = 4 * 1024;
inline constexpr uint32_t kMaxChunkSize = 4 * 1024 * 1024;
// 256 TiB: far beyond any image (regions stop at 64 TiB), and small enough
// that no size or count derived from it can overflow 64 bits.
inline constexpr uint64_t kMaxSnapshotSize = uint64_t{1} << 48;
// Header flags.
inline constexpr uint32_t kFlagDictionary = 1;  // chunks are compressed with the stored dictionary
inline constexpr uint32_t kKnownFlags = kFlagDictionary;
inline constexpr uint32_t kMaxDictionaryBytes = 1 << 20;

// Header layout (byte offsets).
//   0  magic[8]          "FLZSNAP\0"
//   8  u32 version       1
//  12  u32 header_bytes  64
//  16  u32 chunk_size    power of two, 4 KiB..4 MiB
//  20  u32 flags         bit 0: kFlagDictionary; other bits 0
//  24  u64 size          uncompressed bytes
//  32  u64 chunk_count   ceil(size / chunk_size)
//  40  u64 index_offset
//  48  u32 index_checksum   CRC-32C of the index bytes
//  52  u32 dict_length      bytes of the dictionary (0 without kFlagDictionary)
//  56  u32 dict_checksum    CRC-32C of the dictionary (0 without kFlagDictionary)
//  60  u32 header_checksum  CRC-32C of bytes 0..59
struct SnapshotHeader {
  uint32_t version = kSnapshotVersion;
  uint32_t header_bytes = kSnapshotHeaderBytes;
  uint32_t chunk_size = 0;
  uint32_t flags = 0;
  uint64_t size = 0;
  uint64_t chunk_count = 0;
  uint64_t index_offset = 0;
  uint32_t index_checksum = 0;
  uint32_t dict_length = 0;
  uint32_t dict_checksum = 0;
};

// Index entry: u64 offset, u32 length, u32 checksum. length 0 is the zero
// flag: the chunk is all zero bytes and has no data (offset and checksum
// are 0 then). Otherwise [offset, offset + length) holds one zstd frame whose
// content is the chunk, and checksum is the CRC-32C of the uncompressed chunk.
struct ChunkEntry {
  uint64_t offset = 0;
  uint32_t length = 0;
  uint32_t checksum = 0;
  bool zero() const { return length == 0; }
};

// Encodes the header with its checksum into 64 bytes.
void encode_header(const SnapshotHeader& h, unsigned char out[kSnapshotHeaderBytes]);
void encode_entry(const ChunkEntry& e, unsigned char out[kSnapshotEntryBytes]);
ChunkEntry decode_entry(const unsigned char in[kSnapshotEntryBytes]);

struct DDictDeleter {
  void operator()(ZSTD_DDict* d) const { ZSTD_freeDDict(d); }
};

// A snapshot's header, dictionary and index, checked.
struct SnapshotIndex {
  SnapshotInfo info;
  std::vector<ChunkEntry> entries;
  // The dictionary, digested for decompression; null without one. Read-only:
  // shared by every decompression context.
  std::shared_ptr<const ZSTD_DDict> dictionary;
  uint64_t chunk_length(uint64_t i) const {
    return i + 1 < info.chunk_count ? info.chunk_size : info.size - (info.chunk_count - 1) * uint64_t{info.chunk_size};
  }
};

// Reads and checks the header and index of the snapshot open as fd (a file
// of file_bytes bytes). Throws Error naming `path` and the field at fault.
SnapshotIndex read_snapshot_index(int fd, const std::string& path, uint64_t file_bytes);
// The same through `read_at`, which reads n bytes at offset into buf and
// returns whether it got them all (errno set on failure): a snapshot that is
// not a local file (an HttpBackend's object).
using ReadAt = SnapshotReader::ReadAt;
SnapshotIndex read_snapshot_index(const ReadAt& read_at, const std::string& path, uint64_t file_bytes);

// The outcome of decoding one chunk.
struct ChunkCheck {
  enum Status { kOk, kBadFrame, kWrongSize, kBadChecksum } status = kOk;
  uint64_t produced = 0;  // decompressed bytes (kWrongSize), or 0 if unknown
  uint32_t checksum = 0;  // computed (kBadChecksum)
  const char* zstd_error = nullptr;  // kBadFrame
};

// Decompresses one chunk's frame into dst (room for exactly `length` bytes),
// with the snapshot's dictionary if it has one (may be null), and checks its
// length and checksum against the index entry.
ChunkCheck decode_chunk(ZSTD_DCtx* dctx, const ZSTD_DDict* dictionary, std::span<const std::byte> frame,
                        std::byte* dst, uint64_t length, const ChunkEntry& entry);
// "decompressed size mismatch: 100 bytes, expected 65536" and the like.
std::string describe(const ChunkCheck& check, uint64_t length, const ChunkEntry& entry);

}  // namespace faultline::detail

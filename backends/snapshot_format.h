// SPDX-License-Identifier: Apache-2.0
// The snapshot file format, versions 1 and 2 (docs/snapshot-format.md), and
// the checks shared by SnapshotReader and ZstdSnapshotBackend. Private to the
// library (and its tests and fuzzers).
//
//   offset 0                  header, 64 bytes (version 1) or 128 (version 2)
//   offset H                  parent path, parent_path_length bytes (version 2, flag kFlagParent)
//   then                      zstd dictionary, dict_length bytes (flag kFlagDictionary)
//   then                      chunk data: zstd frames
//   offset index_offset       index: chunk_count entries of 16 bytes
//   end of file               == index_offset + 16 * chunk_count
//
// All integers little-endian.
#pragma once

#include <zstd.h>
#include <zstd_errors.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "faultline/snapshot.h"
#include "unique_fd.h"

namespace faultline::detail {

inline constexpr char kSnapshotMagic[8] = {'F', 'L', 'Z', 'S', 'N', 'A', 'P', 0};
// Version 1: a self-contained image, 64-byte header. Version 2: a 128-byte
// header that can name a parent layer (an incremental snapshot). Writers use
// version 1 whenever the file has no parent, so older readers still read it.
inline constexpr uint32_t kSnapshotVersion = 1;
inline constexpr uint32_t kSnapshotVersion2 = 2;
inline constexpr uint32_t kSnapshotHeaderBytes = 64;
inline constexpr uint32_t kSnapshotHeaderBytesV2 = 128;
inline constexpr uint32_t kMaxParentPath = 4096;
// A layer's content identifier: SHA-256 of its header, parent path and index.
inline constexpr size_t kSnapshotIdBytes = 32;
using SnapshotId = std::array<unsigned char, kSnapshotIdBytes>;
// The index entry of a chunk that a child layer does not hold: its parent does.
inline constexpr uint64_t kInheritedOffset = ~uint64_t{0};
// Chains deeper than this are refused (and a loop of parents is one).
inline constexpr uint32_t kMaxChainDepth = 1024;
inline constexpr uint32_t kSnapshotEntryBytes = 16;
inline constexpr uint32_t kMinChunkSize = 4 * 1024;
inline constexpr uint32_t kMaxChunkSize = 4 * 1024 * 1024;
// 256 TiB: far beyond any image (regions stop at 64 TiB), and small enough
// that no size or count derived from it can overflow 64 bits.
inline constexpr uint64_t kMaxSnapshotSize = uint64_t{1} << 48;
// Header flags.
inline constexpr uint32_t kFlagDictionary = 1;  // chunks are compressed with the stored dictionary
inline constexpr uint32_t kFlagParent = 2;      // version 2: the file names a parent layer
inline constexpr uint32_t kKnownFlags = kFlagDictionary;
inline constexpr uint32_t kKnownFlagsV2 = kFlagDictionary | kFlagParent;
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
// Version 2 (128 bytes): bytes 0..59 as above (version 2, header_bytes 128),
//  60  u32 parent_path_length  with kFlagParent 1..4096, else 0
//  64  parent_id[32]           SHA-256 content id of the parent, else zeros
//  96  28 reserved bytes       zero
// 124  u32 header_checksum     CRC-32C of bytes 0..123
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
  // Version 2 only.
  uint32_t parent_path_length = 0;
  SnapshotId parent_id{};
};

// Bytes of the header of `version` (1 or 2).
inline uint32_t header_bytes_of(uint32_t version) {
  return version >= kSnapshotVersion2 ? kSnapshotHeaderBytesV2 : kSnapshotHeaderBytes;
}

// Index entry: u64 offset, u32 length, u32 checksum. length 0 is the zero
// flag: the chunk is all zero bytes and has no data (offset and checksum
// are 0 then), unless offset is kInheritedOffset: the chunk is the parent
// layer's (version 2 with kFlagParent only). Otherwise [offset, offset + length) holds one zstd frame whose
// content is the chunk, and checksum is the CRC-32C of the uncompressed chunk.
struct ChunkEntry {
  uint64_t offset = 0;
  uint32_t length = 0;
  uint32_t checksum = 0;
  bool zero() const { return length == 0 && offset != kInheritedOffset; }
  bool inherited() const { return length == 0 && offset == kInheritedOffset; }
  bool stored() const { return length != 0; }
};

// Encodes the header with its checksum into header_bytes_of(h.version) bytes.
void encode_header(const SnapshotHeader& h, unsigned char* out);
// The fields of an encoded header (no checks).
SnapshotHeader decode_header(const unsigned char* in);
// SHA-256 of `parts`, one after the other: a layer's content id.
SnapshotId sha256(std::initializer_list<std::span<const unsigned char>> parts);
std::string to_hex(const SnapshotId& id);
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
  // This file's content id, and (with kFlagParent) the parent it names: the
  // path as stored (relative to this file's directory unless absolute) and
  // the id the parent must have.
  SnapshotId id{};
  bool has_parent = false;
  std::string parent_path;
  SnapshotId parent_id{};
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

// One layer of an open chain: its file and its own index.
struct ChainLayer {
  std::string path;  // as opened (the parent path resolved against the child's directory)
  std::shared_ptr<const UniqueFd> fd;  // shared by the readers' copies
  SnapshotIndex index;
};

// A snapshot and its ancestors, opened and checked (each parent's id is the
// one its child names; all have the same size and chunk size), with one
// merged index: chunk i's entry in the newest layer that holds it. A fault
// costs one lookup whatever the chain's depth.
struct SnapshotChain {
  std::vector<ChainLayer> layers;    // newest (the file opened) first
  SnapshotIndex merged;              // entries never inherited; info sums the chain
  std::vector<uint32_t> layer_of;    // per chunk: index into layers
  const ZSTD_DDict* dictionary_of(uint64_t chunk) const { return layers[layer_of[chunk]].index.dictionary.get(); }
  int fd_of(uint64_t chunk) const { return layers[layer_of[chunk]].fd->get(); }
};

// Opens the regular file `path` for reading without blocking on a FIFO;
// refuses any other type naming it (what + path, "is a FIFO, not a regular
// file"). Sets *bytes to its size.
UniqueFd open_regular_file(const std::string& path, const std::string& what, uint64_t* bytes);

// Opens `path` and follows its parents. Throws Error naming the layer and
// the problem: a parent that cannot be opened ("its parent P (named by C)
// cannot be opened"), whose id is not the one named, or that does not fit.
SnapshotChain open_snapshot_chain(const std::string& path);
// Where a child's stored parent path points: relative to the child's directory.
std::string resolve_parent_path(const std::string& child_path, const std::string& parent_path);

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

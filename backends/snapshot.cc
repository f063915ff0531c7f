// SPDX-License-Identifier: Apache-2.0
// Snapshot writer (chunked, multi-threaded zstd, crash-safe) and reader
// (checks everything before trusting it). Format: snapshot_format.h and
// docs/snapshot-format.md.
#include "faultline/snapshot.h"

#include <errno.h>
#include <zdict.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <numeric>
#include <thread>
#include <vector>

#include "atomic_file.h"
#include "crc32c.h"
#include "faultline/error.h"
#include "little_endian.h"
#include "snapshot_format.h"
#include "unique_fd.h"

namespace faultline {

namespace detail {

namespace {

std::string hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(v));
  return buf;
}

// Reads exactly n bytes at offset; returns false on end of file (errno 0) or
// an error (errno set).
bool pread_exact(int fd, void* buf, size_t n, uint64_t offset) {
  auto* p = static_cast<unsigned char*>(buf);
  while (n > 0) {
    ssize_t r = ::pread(fd, p, n, static_cast<off_t>(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      if (r == 0) errno = 0;
      return false;
    }
    p += r;
    n -= static_cast<size_t>(r);
    offset += static_cast<uint64_t>(r);
  }
  return true;
}

}  // namespace

void encode_header(const SnapshotHeader& h, unsigned char* out) {
  const uint32_t bytes = header_bytes_of(h.version);
  std::memset(out, 0, bytes);
  std::memcpy(out, kSnapshotMagic, 8);
  put_le(out + 8, h.version, 4);
  put_le(out + 12, h.header_bytes, 4);
  put_le(out + 16, h.chunk_size, 4);
  put_le(out + 20, h.flags, 4);
  put_le(out + 24, h.size, 8);
  put_le(out + 32, h.chunk_count, 8);
  put_le(out + 40, h.index_offset, 8);
  put_le(out + 48, h.index_checksum, 4);
  put_le(out + 52, h.dict_length, 4);
  put_le(out + 56, h.dict_checksum, 4);
  if (bytes == kSnapshotHeaderBytesV2) {
    put_le(out + 60, h.parent_path_length, 4);
    std::memcpy(out + 64, h.parent_id.data(), kSnapshotIdBytes);
  }
  put_le(out + bytes - 4, crc32c(out, bytes - 4), 4);
}

SnapshotHeader decode_header(const unsigned char* h) {
  SnapshotHeader hd;
  hd.version = static_cast<uint32_t>(get_le(h + 8, 4));
  hd.header_bytes = static_cast<uint32_t>(get_le(h + 12, 4));
  hd.chunk_size = static_cast<uint32_t>(get_le(h + 16, 4));
  hd.flags = static_cast<uint32_t>(get_le(h + 20, 4));
  hd.size = get_le(h + 24, 8);
  hd.chunk_count = get_le(h + 32, 8);
  hd.index_offset = get_le(h + 40, 8);
  hd.index_checksum = static_cast<uint32_t>(get_le(h + 48, 4));
  hd.dict_length = static_cast<uint32_t>(get_le(h + 52, 4));
  hd.dict_checksum = static_cast<uint32_t>(get_le(h + 56, 4));
  if (hd.version == kSnapshotVersion2) {
    hd.parent_path_length = static_cast<uint32_t>(get_le(h + 60, 4));
    std::memcpy(hd.parent_id.data(), h + 64, kSnapshotIdBytes);
  }
  return hd;
}

SnapshotId sha256(std::initializer_list<std::span<const unsigned char>> parts) {
  SnapshotId id{};
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  unsigned int len = 0;
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) throw Error("cannot start SHA-256 (OpenSSL)");
  for (auto part : parts)
    if (EVP_DigestUpdate(ctx.get(), part.data(), part.size()) != 1) throw Error("SHA-256 failed (OpenSSL)");
  if (EVP_DigestFinal_ex(ctx.get(), id.data(), &len) != 1 || len != kSnapshotIdBytes) throw Error("SHA-256 failed (OpenSSL)");
  return id;
}

std::string to_hex(const SnapshotId& id) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : id) {
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

void encode_entry(const ChunkEntry& e, unsigned char out[kSnapshotEntryBytes]) {
  put_le(out, e.offset, 8);
  put_le(out + 8, e.length, 4);
  put_le(out + 12, e.checksum, 4);
}

ChunkEntry decode_entry(const unsigned char in[kSnapshotEntryBytes]) {
  ChunkEntry e;
  e.offset = get_le(in, 8);
  e.length = static_cast<uint32_t>(get_le(in + 8, 4));
  e.checksum = static_cast<uint32_t>(get_le(in + 12, 4));
  return e;
}

SnapshotIndex read_snapshot_index(int fd, const std::string& path, uint64_t file_bytes) {
  return read_snapshot_index([fd](void* buf, size_t n, uint64_t offset) { return pread_exact(fd, buf, n, offset); },
                             path, file_bytes);
}

SnapshotIndex read_snapshot_index(const ReadAt& read_at, const std::string& path, uint64_t file_bytes) {
  auto pread_exact = [&](void* buf, size_t n, uint64_t offset) {
    errno = 0;
    return read_at(buf, n, offset);
  };
  const std::string what = "snapshot " + path + ": ";
  auto bad = [&](const std::string& problem) { throw Error(what + problem); };
  if (file_bytes < kSnapshotHeaderBytes)
    bad("truncated: the file is " + std::to_string(file_bytes) + " bytes, shorter than the " +
        std::to_string(kSnapshotHeaderBytes) + "-byte header");
  unsigned char h[kSnapshotHeaderBytesV2];
  if (!pread_exact(h, kSnapshotHeaderBytes, 0)) throw_errno(what + "cannot read the header", errno ? errno : EIO);
  if (std::memcmp(h, kSnapshotMagic, 8) != 0) bad("magic: not a faultline snapshot (wrong magic bytes)");
  const uint32_t version = static_cast<uint32_t>(get_le(h + 8, 4));
  if (version != kSnapshotVersion && version != kSnapshotVersion2)
    bad("version = " + std::to_string(version) + ": this build reads versions 1 and 2");
  const uint32_t hbytes = header_bytes_of(version);
  if (hbytes > kSnapshotHeaderBytes) {
    if (file_bytes < hbytes)
      bad("truncated: the file is " + std::to_string(file_bytes) + " bytes, shorter than the " + std::to_string(hbytes) +
          "-byte header of version " + std::to_string(version));
    if (!pread_exact(h + kSnapshotHeaderBytes, hbytes - kSnapshotHeaderBytes, kSnapshotHeaderBytes))
      throw_errno(what + "cannot read the header", errno ? errno : EIO);
  }
  uint32_t stored = static_cast<uint32_t>(get_le(h + hbytes - 4, 4)), computed = crc32c(h, hbytes - 4);
  if (stored != computed)
    bad("header_checksum = " + hex(stored) + " but the header's CRC-32C is " + hex(computed) + " (corrupt header)");
  SnapshotHeader hd = decode_header(h);
  if (hd.header_bytes != hbytes)
    bad("header_bytes = " + std::to_string(hd.header_bytes) + ": must be " + std::to_string(hbytes) + " in version " +
        std::to_string(version));
  if (hd.chunk_size < kMinChunkSize || hd.chunk_size > kMaxChunkSize || !std::has_single_bit(hd.chunk_size))
    bad("chunk_size = " + std::to_string(hd.chunk_size) + ": must be a power of two from " +
        std::to_string(kMinChunkSize) + " to " + std::to_string(kMaxChunkSize));
  const uint32_t known = version == kSnapshotVersion ? kKnownFlags : kKnownFlagsV2;
  if (hd.flags & ~known) bad("flags = " + hex(hd.flags) + ": unknown flag bits for version " + std::to_string(version));
  const bool has_parent = hd.flags & kFlagParent;
  if (version == kSnapshotVersion2) {
    if (!has_parent && (hd.parent_path_length != 0 || hd.parent_id != SnapshotId{}))
      bad("parent_path_length = " + std::to_string(hd.parent_path_length) +
          ": it and parent_id must be 0 without the parent flag");
    if (has_parent && (hd.parent_path_length == 0 || hd.parent_path_length > kMaxParentPath))
      bad("parent_path_length = " + std::to_string(hd.parent_path_length) + ": must be 1.." +
          std::to_string(kMaxParentPath));
    for (int i = 96; i < 124; ++i)
      if (h[i] != 0) bad("header byte " + std::to_string(i) + " is reserved and must be 0");
  }
  const bool has_dict = hd.flags & kFlagDictionary;
  if (!has_dict && (hd.dict_length != 0 || hd.dict_checksum != 0))
    bad("dict_length = " + std::to_string(hd.dict_length) + ", dict_checksum = " + hex(hd.dict_checksum) +
        ": must be 0 without the dictionary flag");
  if (has_dict && (hd.dict_length < 8 || hd.dict_length > kMaxDictionaryBytes))
    bad("dict_length = " + std::to_string(hd.dict_length) + ": must be 8.." + std::to_string(kMaxDictionaryBytes));
  if (hd.size > kMaxSnapshotSize)
    bad("size = " + std::to_string(hd.size) + ": larger than the limit of " + std::to_string(kMaxSnapshotSize) + " bytes");
  uint64_t want_chunks = hd.size / hd.chunk_size + (hd.size % hd.chunk_size != 0);
  if (hd.chunk_count != want_chunks)
    bad("chunk_count = " + std::to_string(hd.chunk_count) + ": size " + std::to_string(hd.size) + " in chunks of " +
        std::to_string(hd.chunk_size) + " makes " + std::to_string(want_chunks));
  // chunk_count <= 2^36 here, so the index length cannot overflow.
  uint64_t index_bytes = hd.chunk_count * kSnapshotEntryBytes;
  // Chunk data lies between the dictionary and the index.
  const uint64_t dict_start = uint64_t{hbytes} + hd.parent_path_length;
  const uint64_t data_start = dict_start + hd.dict_length;
  if (hd.index_offset < data_start || hd.index_offset > file_bytes)
    bad("index_offset = " + std::to_string(hd.index_offset) + ": outside the file (" + std::to_string(file_bytes) +
        " bytes, chunk data from " + std::to_string(data_start) + ")");
  if (file_bytes - hd.index_offset < index_bytes)
    bad("truncated: the index of " + std::to_string(hd.chunk_count) + " chunks at index_offset " +
        std::to_string(hd.index_offset) + " needs " + std::to_string(hd.index_offset + index_bytes) +
        " bytes, the file has " + std::to_string(file_bytes));
  if (file_bytes - hd.index_offset > index_bytes)
    bad("index_offset = " + std::to_string(hd.index_offset) + ": the index should end the file, but " +
        std::to_string(file_bytes - hd.index_offset - index_bytes) + " bytes follow it");

  std::vector<unsigned char> raw(index_bytes);
  if (index_bytes > 0 && !pread_exact(raw.data(), raw.size(), hd.index_offset))
    throw_errno(what + "cannot read the index", errno ? errno : EIO);
  computed = crc32c(raw.data(), raw.size());
  if (computed != hd.index_checksum)
    bad("index_checksum = " + hex(hd.index_checksum) + " but the index's CRC-32C is " + hex(computed) + " (corrupt index)");

  SnapshotIndex index;
  std::vector<unsigned char> parent(hd.parent_path_length);
  if (has_parent) {
    if (!pread_exact(parent.data(), parent.size(), hbytes))
      throw_errno(what + "cannot read the parent path", errno ? errno : EIO);
    index.has_parent = true;
    index.parent_path.assign(parent.begin(), parent.end());
    index.parent_id = hd.parent_id;
    if (index.parent_path.find('\0') != std::string::npos) bad("parent path: contains a NUL byte");
  }
  // What a child names this file by: everything but the chunk data, which
  // the index's checksums vouch for.
  index.id = sha256({{h, hbytes}, {parent.data(), parent.size()}, {raw.data(), raw.size()}});
  if (has_dict) {
    std::vector<unsigned char> dict(hd.dict_length);
    if (!pread_exact(dict.data(), dict.size(), dict_start))
      throw_errno(what + "cannot read the dictionary", errno ? errno : EIO);
    computed = crc32c(dict.data(), dict.size());
    if (computed != hd.dict_checksum)
      bad("dict_checksum = " + hex(hd.dict_checksum) + " but the dictionary's CRC-32C is " + hex(computed) +
          " (corrupt dictionary)");
    ZSTD_DDict* d = ZSTD_createDDict(dict.data(), dict.size());
    if (!d) bad("dictionary: zstd cannot load it");
    index.dictionary = std::shared_ptr<const ZSTD_DDict>(d, DDictDeleter());
    index.info.dictionary_bytes = hd.dict_length;
  }
  index.info.version = hd.version;
  index.info.chunk_size = hd.chunk_size;
  index.info.flags = hd.flags;
  index.info.size = hd.size;
  index.info.chunk_count = hd.chunk_count;
  index.info.file_bytes = file_bytes;
  index.info.id = to_hex(index.id);
  if (has_parent) {
    index.info.parent = index.parent_path;
    index.info.parent_id = to_hex(index.parent_id);
  }
  index.entries.resize(hd.chunk_count);
  const uint64_t bound = ZSTD_compressBound(hd.chunk_size);
  std::vector<uint64_t> stored_chunks;
  for (uint64_t i = 0; i < hd.chunk_count; ++i) {
    ChunkEntry e = decode_entry(raw.data() + i * kSnapshotEntryBytes);
    std::string field = "chunks[" + std::to_string(i) + "]";
    if (e.inherited()) {
      if (!has_parent)
        bad(field + ": inherited from a parent (offset " + hex(e.offset) + "), but the file has no parent");
      if (e.checksum != 0) bad(field + ": an inherited chunk must have checksum 0, has " + hex(e.checksum));
      index.info.inherited_chunks++;
    } else if (e.zero()) {
      if (e.offset != 0 || e.checksum != 0)
        bad(field + ": a zero chunk (length 0) must have offset 0 and checksum 0, has offset " +
            std::to_string(e.offset) + " checksum " + hex(e.checksum));
      index.info.zero_chunks++;
    } else {
      if (e.length > bound)
        bad(field + ".length = " + std::to_string(e.length) + ": more than zstd's bound of " + std::to_string(bound) +
            " bytes for a " + std::to_string(hd.chunk_size) + "-byte chunk");
      // offset + length is never computed before offset is known to be small.
      if (e.offset < data_start || e.offset > hd.index_offset || e.length > hd.index_offset - e.offset)
        bad(field + ".offset = " + std::to_string(e.offset) + ", length " + std::to_string(e.length) +
            ": outside the chunk data [" + std::to_string(data_start) + ", " +
            std::to_string(hd.index_offset) + ")");
      index.info.compressed_bytes += e.length;
      stored_chunks.push_back(i);
    }
    index.entries[i] = e;
  }
  // The writer stores chunks in order; check overlaps whatever the order.
  auto& entries = index.entries;
  if (!std::is_sorted(stored_chunks.begin(), stored_chunks.end(),
                      [&](uint64_t a, uint64_t b) { return entries[a].offset < entries[b].offset; }))
    std::sort(stored_chunks.begin(), stored_chunks.end(),
              [&](uint64_t a, uint64_t b) { return entries[a].offset < entries[b].offset; });
  for (size_t k = 1; k < stored_chunks.size(); ++k) {
    const ChunkEntry& a = entries[stored_chunks[k - 1]];
    const ChunkEntry& b = entries[stored_chunks[k]];
    if (a.offset + a.length > b.offset)
      bad("chunks[" + std::to_string(stored_chunks[k - 1]) + "] (bytes " + std::to_string(a.offset) + ".." +
          std::to_string(a.offset + a.length) + ") and chunks[" + std::to_string(stored_chunks[k]) + "] (bytes " +
          std::to_string(b.offset) + ".." + std::to_string(b.offset + b.length) + ") overlap");
  }
  return index;
}

ChunkCheck decode_chunk(ZSTD_DCtx* dctx, const ZSTD_DDict* dictionary, std::span<const std::byte> frame,
                        std::byte* dst, uint64_t length, const ChunkEntry& entry) {
  ChunkCheck c;
  unsigned long long content = ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (content == ZSTD_CONTENTSIZE_ERROR) {
    c.status = ChunkCheck::kBadFrame;
    c.zstd_error = "not a zstd frame";
    return c;
  }
  if (content != ZSTD_CONTENTSIZE_UNKNOWN && content != length) {
    c.status = ChunkCheck::kWrongSize;
    c.produced = content;
    return c;
  }
  size_t r = dictionary ? ZSTD_decompress_usingDDict(dctx, dst, length, frame.data(), frame.size(), dictionary)
                        : ZSTD_decompressDCtx(dctx, dst, length, frame.data(), frame.size());
  if (ZSTD_isError(r)) {
    if (ZSTD_getErrorCode(r) == ZSTD_error_dstSize_tooSmall) {
      c.status = ChunkCheck::kWrongSize;  // more than `length`: how much more is unknown
      return c;
    }
    c.status = ChunkCheck::kBadFrame;
    c.zstd_error = ZSTD_getErrorName(r);
    return c;
  }
  if (r != length) {
    c.status = ChunkCheck::kWrongSize;
    c.produced = r;
    return c;
  }
  c.checksum = crc32c(dst, length);
  if (c.checksum != entry.checksum) c.status = ChunkCheck::kBadChecksum;
  return c;
}

std::string describe(const ChunkCheck& c, uint64_t length, const ChunkEntry& entry) {
  switch (c.status) {
    case ChunkCheck::kOk:
      return "ok";
    case ChunkCheck::kBadFrame:
      return std::string("corrupt zstd frame (") + (c.zstd_error ? c.zstd_error : "?") + ")";
    case ChunkCheck::kWrongSize:
      return "decompressed size mismatch: " +
             (c.produced ? std::to_string(c.produced) + " bytes" : std::string("more bytes")) + ", expected " +
             std::to_string(length);
    case ChunkCheck::kBadChecksum:
      return "checksum mismatch: CRC-32C of the data is " + hex(c.checksum) + ", the index says " + hex(entry.checksum);
  }
  return "?";
}

}  // namespace detail

// ---- Writer ------------------------------------------------------------------

namespace {

using detail::ChunkEntry;
using detail::UniqueFd;

struct ZstdCCtxDeleter {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct ZstdDCtxDeleter {
  void operator()(ZSTD_DCtx* c) const { ZSTD_freeDCtx(c); }
};
struct ZstdCDictDeleter {
  void operator()(ZSTD_CDict* d) const { ZSTD_freeCDict(d); }
};

bool all_zero(const std::byte* p, size_t n) {
  return n == 0 || (p[0] == std::byte{0} && std::memcmp(p, p + 1, n - 1) == 0);
}

const char* file_type(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "of an unknown type";
}

// Opens `path` for reading into fd and returns its fstat: a regular file, or
// (if block_ok) a block device; anything else is refused naming the file
// (what + path) and its type. Opening does not block on a FIFO (O_NONBLOCK,
// then the type of the opened descriptor is checked, so the file cannot be
// swapped in between), and reads are blocking again afterwards.
struct stat open_file(UniqueFd& fd, const std::string& path, const std::string& what, bool block_ok) {
  fd = UniqueFd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (!fd) throw_errno("cannot open " + what + path, errno);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) throw_errno("cannot stat " + what + path, errno);
  if (!S_ISREG(st.st_mode) && !(block_ok && S_ISBLK(st.st_mode)))
    throw Error(what + path + " is " + file_type(st.st_mode) + ", not a regular file" +
                (block_ok ? " or block device" : ""));
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK) != 0) throw_errno("cannot use " + what + path, errno);
  return st;
}

// A file being snapshotted, and how it looked when the read began: a file
// that changes while it is read gives an image whose first chunks are old and
// last chunks new, and every checksum would vouch for it. So the writer
// compares the file before and after, and writes nothing if it changed.
struct InputFile {
  UniqueFd fd;
  std::string path;
  struct stat before {};
  uint64_t size = 0;
};

bool same_time(const timespec& a, const timespec& b) { return a.tv_sec == b.tv_sec && a.tv_nsec == b.tv_nsec; }

// Timestamps come from a clock that ticks every few milliseconds (or once a
// second, or two, on some filesystems): a change in the same tick as our
// first look would leave mtime and ctime as they were. So the first look
// counts only once the clock has moved past the file's ctime. A file that
// keeps changing is not waited for longer than ~100 ms (2 s for whole-second
// timestamps): the check after the read sees those changes anyway.
struct stat settled_stat(const InputFile& in) {
  struct stat st;
  for (int waited_ms = 0;; ++waited_ms) {
    if (::fstat(in.fd.get(), &st) != 0) throw_errno("cannot stat snapshot input " + in.path, errno);
    timespec now;
    ::clock_gettime(CLOCK_REALTIME_COARSE, &now);
    // A zero nanosecond field says the filesystem keeps whole seconds (FAT:
    // even ones): the next change could still get this ctime until two
    // seconds have passed.
    const timespec& c = st.st_ctim;
    const bool settled = c.tv_nsec == 0 ? now.tv_sec >= c.tv_sec + 2
                                        : now.tv_sec > c.tv_sec || (now.tv_sec == c.tv_sec && now.tv_nsec > c.tv_nsec);
    if (settled || waited_ms >= (c.tv_nsec == 0 ? 2100 : 100)) return st;
    ::usleep(1000);
  }
}

// What changed in the input since `before` ("" if nothing we can see).
std::string what_changed(const InputFile& in) {
  struct stat now;
  if (::fstat(in.fd.get(), &now) != 0) throw_errno("cannot stat snapshot input " + in.path, errno);
  std::string why;
  auto add = [&](const std::string& s) { why += (why.empty() ? "" : ", ") + s; };
  if (now.st_size != in.before.st_size)
    add("size " + std::to_string(in.before.st_size) + " -> " + std::to_string(now.st_size) + " bytes");
  // Bytes past the size we read: the file grew (fstat may not say so yet
  // for a block device, or has said so above).
  unsigned char byte;
  if (why.empty() && ::pread(in.fd.get(), &byte, 1, static_cast<off_t>(in.size)) == 1)
    add("it has bytes past the " + std::to_string(in.size) + " read");
  if (!same_time(now.st_mtim, in.before.st_mtim)) add("mtime changed");
  else if (!same_time(now.st_ctim, in.before.st_ctim)) add("ctime changed");
  return why;
}

Error input_changed(const InputFile& in, const std::string& why, const std::string& output) {
  return Error("snapshot input " + in.path + " changed while it was being read (" + why + "); nothing written to " +
               output + ". Snapshot a copy, or stop the writer first.");
}

// Where the uncompressed bytes come from: memory, or a file read with pread.
struct Source {
  std::span<const std::byte> memory;
  const InputFile* file = nullptr;
  int fd = -1;
  const SnapshotReader* chain = nullptr;  // flatten_snapshot(): the image of a chain
  std::string name;
  uint64_t size = 0;
  mode_t mode = 0666;  // of the snapshot, before the umask
};

// One compressed chunk on its way from a compression thread to the file.
struct Slot {
  std::vector<std::byte> out;
  ChunkEntry entry;  // length and checksum (offset is set when written)
  bool ready = false;
  std::string error;
};

// Trains a dictionary on a sample of the chunks (every other sampled chunk)
// and keeps it only if, on the other half, it saves clearly more than it
// costs over the whole image. Returns it, or nothing.
std::vector<unsigned char> train_dictionary(const Source& src, const SnapshotWriteOptions& o, uint64_t chunks) {
  constexpr uint64_t kSampleBudget = 8 << 20;  // bytes read for training and judging
  const uint64_t piece = std::min<uint64_t>(o.chunk_size, 64 * 1024);
  const uint64_t wanted = std::min<uint64_t>(chunks, kSampleBudget / piece);
  if (o.dictionary_bytes == 0 || wanted < 32) return {};
  std::vector<unsigned char> train, judge;
  std::vector<size_t> train_sizes, judge_sizes;
  std::vector<unsigned char> buf(src.chain ? o.chunk_size : piece);
  uint64_t seen = 0, stored = 0;
  for (uint64_t k = 0; k < wanted; ++k) {
    uint64_t chunk = k * chunks / wanted;
    uint64_t off = chunk * o.chunk_size;
    size_t n = static_cast<size_t>(std::min<uint64_t>(piece, src.size - off));
    const unsigned char* p;
    if (src.fd >= 0) {
      if (!detail::pread_exact(src.fd, buf.data(), n, off)) return {};  // the main pass reports it
      p = buf.data();
    } else if (src.chain) {
      try {
        src.chain->read_chunk(chunk, {reinterpret_cast<std::byte*>(buf.data()), src.chain->chunk_length(chunk)});
      } catch (const Error&) {
        return {};  // the main pass reports it
      }
      p = buf.data();
    } else {
      p = reinterpret_cast<const unsigned char*>(src.memory.data() + off);
    }
    ++seen;
    if (all_zero(reinterpret_cast<const std::byte*>(p), n)) continue;
    ++stored;
    auto& to = stored % 2 ? train : judge;
    to.insert(to.end(), p, p + n);
    (stored % 2 ? train_sizes : judge_sizes).push_back(n);
  }
  if (judge_sizes.size() < 8) return {};
  std::vector<unsigned char> dict(o.dictionary_bytes);
  size_t len = ZDICT_trainFromBuffer(dict.data(), dict.size(), train.data(), train_sizes.data(),
                                     static_cast<unsigned>(train_sizes.size()));
  if (ZDICT_isError(len)) return {};  // too little or too uniform data to learn from
  dict.resize(len);
  std::unique_ptr<ZSTD_CDict, ZstdCDictDeleter> cdict(ZSTD_createCDict(dict.data(), dict.size(), o.level));
  std::unique_ptr<ZSTD_CCtx, ZstdCCtxDeleter> cctx(ZSTD_createCCtx());
  if (!cdict || !cctx) return {};
  std::vector<unsigned char> out(ZSTD_compressBound(piece));
  uint64_t plain = 0, with = 0;
  size_t at = 0;
  for (size_t n : judge_sizes) {
    size_t a = ZSTD_compressCCtx(cctx.get(), out.data(), out.size(), judge.data() + at, n, o.level);
    size_t b = ZSTD_compress_usingCDict(cctx.get(), out.data(), out.size(), judge.data() + at, n, cdict.get());
    if (ZSTD_isError(a) || ZSTD_isError(b)) return {};
    plain += a;
    with += b;
    at += n;
  }
  if (with >= plain) return {};
  // Projected over the stored chunks of the whole image: keep the
  // dictionary if it pays for itself twice over.
  double per_byte = double(plain - with) / double(judge.size());
  double projected = per_byte * double(src.size) * double(stored) / double(seen);
  if (projected < 2.0 * double(dict.size())) return {};
  return dict;
}

void write_snapshot_impl(const Source& src, const std::string& path, const SnapshotWriteOptions& o) {
  const std::string what = "snapshot " + path;
  if (o.chunk_size < detail::kMinChunkSize || o.chunk_size > detail::kMaxChunkSize || !std::has_single_bit(o.chunk_size))
    throw Error(what + ": chunk_size = " + std::to_string(o.chunk_size) + ": must be a power of two from 4096 to 4194304");
  if (o.level < ZSTD_minCLevel() || o.level > ZSTD_maxCLevel())
    throw Error(what + ": level = " + std::to_string(o.level) + ": zstd levels run from " +
                std::to_string(ZSTD_minCLevel()) + " to " + std::to_string(ZSTD_maxCLevel()));
  if (o.threads > 1024) throw Error(what + ": threads = " + std::to_string(o.threads) + ": at most 1024");
  if (o.dictionary_bytes > detail::kMaxDictionaryBytes)
    throw Error(what + ": dictionary_bytes = " + std::to_string(o.dictionary_bytes) + ": at most " +
                std::to_string(detail::kMaxDictionaryBytes));
  if (src.size > detail::kMaxSnapshotSize)
    throw Error(what + ": " + src.name + " is " + std::to_string(src.size) + " bytes, more than the format's limit of " +
                std::to_string(detail::kMaxSnapshotSize));

  const uint64_t chunk_size = o.chunk_size;
  const uint64_t chunks = src.size / chunk_size + (src.size % chunk_size != 0);
  unsigned threads = o.threads ? o.threads : std::max(1u, std::thread::hardware_concurrency());
  threads = static_cast<unsigned>(std::max<uint64_t>(1, std::min<uint64_t>(threads, chunks)));

  // Removed again by any failure from here on.
  detail::AtomicFile file(path, what, src.mode);
  unsigned char header[detail::kSnapshotHeaderBytes] = {};
  file.append(header, sizeof header);  // the real one goes in last
  const std::vector<unsigned char> dict = train_dictionary(src, o, chunks);
  std::unique_ptr<ZSTD_CDict, ZstdCDictDeleter> cdict;
  if (!dict.empty()) {
    cdict.reset(ZSTD_createCDict(dict.data(), dict.size(), o.level));
    if (!cdict) throw Error("cannot write " + what + ": zstd cannot digest the dictionary it trained");
    file.append(dict.data(), dict.size());
  }

  const size_t bound = ZSTD_compressBound(chunk_size);
  const size_t window = size_t{threads} * 4;  // chunks compressed ahead of the writer
  std::vector<Slot> slots(window);
  std::mutex mu;
  std::condition_variable ready_cv, room_cv;
  uint64_t next = 0, written = 0;  // guarded by mu
  bool stop = false;               // guarded by mu

  auto compress_loop = [&] {
    std::unique_ptr<ZSTD_CCtx, ZstdCCtxDeleter> cctx(ZSTD_createCCtx());
    std::vector<std::byte> in(src.fd >= 0 || src.chain ? chunk_size : 0);
    std::string setup_error;
    if (!cctx) setup_error = "cannot create a zstd compression context";
    else if (ZSTD_isError(ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, o.level)))
      setup_error = "zstd rejects level " + std::to_string(o.level);
    else if (cdict && (ZSTD_isError(ZSTD_CCtx_refCDict(cctx.get(), cdict.get())) ||
                       ZSTD_isError(ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_dictIDFlag, 0))))
      setup_error = "zstd rejects the dictionary";
    for (;;) {
      uint64_t i;
      {
        std::unique_lock<std::mutex> lock(mu);
        room_cv.wait(lock, [&] { return stop || next >= chunks || next < written + window; });
        if (stop || next >= chunks) return;
        i = next++;
      }
      Slot& slot = slots[i % window];  // ours alone until marked ready
      slot.error = setup_error;
      uint64_t off = i * chunk_size;
      size_t n = static_cast<size_t>(std::min(chunk_size, src.size - off));
      const std::byte* data = nullptr;
      if (slot.error.empty()) {
        if (src.fd >= 0) {
          if (detail::pread_exact(src.fd, in.data(), n, off))
            data = in.data();
          else
            slot.error = errno ? "cannot read " + src.name + " at offset " + std::to_string(off) + ": " + std::strerror(errno)
                               : src.name + " shrank while being read (end of file at offset " + std::to_string(off) +
                                     ", expected " + std::to_string(src.size) + " bytes)";
        } else if (src.chain) {
          try {
            src.chain->read_chunk(i, {in.data(), n});
            data = in.data();
          } catch (const std::exception& e) {
            slot.error = e.what();
          }
        } else {
          data = src.memory.data() + off;
        }
      }
      if (data) {
        slot.entry = ChunkEntry{};
        if (!all_zero(data, n)) {
          slot.out.resize(bound);
          size_t r = ZSTD_compress2(cctx.get(), slot.out.data(), bound, data, n);
          if (ZSTD_isError(r)) {
            slot.error = std::string("zstd compression failed: ") + ZSTD_getErrorName(r);
          } else {
            slot.entry.length = static_cast<uint32_t>(r);
            slot.entry.checksum = detail::crc32c(data, n);
          }
        }
      }
      std::lock_guard<std::mutex> lock(mu);
      slot.ready = true;
      ready_cv.notify_all();
    }
  };

  std::vector<std::thread> workers;
  auto stop_workers = [&] {
    {
      std::lock_guard<std::mutex> lock(mu);
      stop = true;
    }
    room_cv.notify_all();
    for (auto& t : workers) t.join();
    workers.clear();
  };
  std::vector<ChunkEntry> index(chunks);
  uint64_t pos = detail::kSnapshotHeaderBytes + dict.size();
  try {
    for (unsigned t = 0; t < threads && chunks > 0; ++t) workers.emplace_back(compress_loop);
    for (uint64_t i = 0; i < chunks; ++i) {
      Slot& slot = slots[i % window];
      {
        std::unique_lock<std::mutex> lock(mu);
        ready_cv.wait(lock, [&] { return slot.ready; });
      }
      if (!slot.error.empty()) {
        // A read that ends early is the input shrinking: say so.
        if (src.file)
          if (std::string why = what_changed(*src.file); !why.empty()) throw input_changed(*src.file, why, path);
        throw Error("cannot write " + what + ": " + slot.error);
      }
      ChunkEntry e = slot.entry;
      if (!e.zero()) {
        file.append(slot.out.data(), e.length);
        e.offset = pos;
        pos += e.length;
      }
      index[i] = e;
      {
        std::lock_guard<std::mutex> lock(mu);
        slot.ready = false;
        written = i + 1;
      }
      room_cv.notify_all();
      if (o.progress && (i % 64 == 63 || i + 1 == chunks))
        o.progress(std::min(src.size, (i + 1) * chunk_size), src.size);
    }
  } catch (...) {
    stop_workers();
    throw;
  }
  stop_workers();
  // Every byte has been read: had the input changed meanwhile, the image
  // would be torn.
  if (src.file)
    if (std::string why = what_changed(*src.file); !why.empty()) throw input_changed(*src.file, why, path);
  if (chunks == 0 && o.progress) o.progress(0, 0);

  std::vector<unsigned char> raw(chunks * detail::kSnapshotEntryBytes);
  for (uint64_t i = 0; i < chunks; ++i) detail::encode_entry(index[i], raw.data() + i * detail::kSnapshotEntryBytes);
  file.append(raw.data(), raw.size());
  detail::SnapshotHeader h;
  h.chunk_size = o.chunk_size;
  h.size = src.size;
  h.chunk_count = chunks;
  h.index_offset = pos;
  h.index_checksum = detail::crc32c(raw.data(), raw.size());
  if (!dict.empty()) {
    h.flags = detail::kFlagDictionary;
    h.dict_length = static_cast<uint32_t>(dict.size());
    h.dict_checksum = detail::crc32c(dict.data(), dict.size());
  }
  detail::encode_header(h, header);
  file.write_at(0, header, sizeof header);
  file.commit();
}

}  // namespace

void write_snapshot(std::span<const std::byte> data, const std::string& path, const SnapshotWriteOptions& options) {
  Source src;
  src.memory = data;
  src.name = "the input memory";
  src.size = data.size();
  write_snapshot_impl(src, path, options);
}

void write_snapshot_from_file(const std::string& input_path, const std::string& path,
                              const SnapshotWriteOptions& options) {
  InputFile in;
  in.path = input_path;
  const struct stat st = open_file(in.fd, input_path, "snapshot input ", true);
  in.before = settled_stat(in);
  if (S_ISREG(st.st_mode)) {
    in.size = static_cast<uint64_t>(in.before.st_size);
  } else {
    // A block device (a VM's disk, an LVM snapshot): its whole size, as
    // BLKGETSIZE64 reports it. Writes to its contents change no timestamp:
    // only a resize during the read is seen.
    off_t end = ::lseek(in.fd.get(), 0, SEEK_END);
    if (end < 0) throw_errno("cannot find the size of snapshot input " + input_path, errno);
    in.size = static_cast<uint64_t>(end);
  }
  Source src;
  src.file = &in;
  src.fd = in.fd.get();
  src.name = "input " + input_path;
  src.size = in.size;
  // Never readable by more people than the input.
  src.mode = in.before.st_mode & 0666;
  write_snapshot_impl(src, path, options);
}

void flatten_snapshot(const std::string& chain_path, const std::string& path, const SnapshotWriteOptions& options) {
  const SnapshotReader chain = SnapshotReader::open(chain_path);
  SnapshotWriteOptions o = options;
  // Chunks are read whole from the chain: the output keeps its geometry.
  o.chunk_size = chain.info().chunk_size;
  Source src;
  src.chain = &chain;
  src.name = "chain " + chain_path;
  src.size = chain.info().size;
  write_snapshot_impl(src, path, o);
}

// ---- Reader ------------------------------------------------------------------

namespace detail {
UniqueFd open_regular_file(const std::string& path, const std::string& what, uint64_t* bytes) {
  UniqueFd fd;
  const struct stat st = open_file(fd, path, what, false);
  *bytes = static_cast<uint64_t>(st.st_size);
  return fd;
}
}  // namespace detail

class SnapshotReader::Impl {
 public:
  std::string path;
  // The chain (one layer for open_layer() and a URL), with one read
  // function per layer: over its fd, or the caller's.
  detail::SnapshotChain chain;
  std::vector<detail::ReadAt> read_at;
  std::vector<SnapshotLayer> layers;
  const detail::SnapshotIndex& index() const { return chain.merged; }

  // Throws Error naming the file if chunk `i` does not exist.
  void check_index(uint64_t i) const;
  void describe_layers() {
    for (const auto& l : chain.layers) layers.push_back(SnapshotLayer{l.path, l.index.info});
  }
  void read_at_fds() {
    for (const auto& l : chain.layers) {
      int fd = l.fd->get();
      read_at.push_back([fd](void* buf, size_t n, uint64_t offset) { return detail::pread_exact(fd, buf, n, offset); });
    }
  }

  // Decompression contexts, reused across read_chunk() calls (creating one
  // costs more than decompressing a small chunk); one per concurrent caller.
  using DCtx = std::unique_ptr<ZSTD_DCtx, ZstdDCtxDeleter>;
  DCtx take_dctx() const {
    {
      std::lock_guard lock(mu);
      if (!spare.empty()) {
        DCtx d = std::move(spare.back());
        spare.pop_back();
        return d;
      }
    }
    return DCtx(ZSTD_createDCtx());
  }
  void give_back(DCtx d) const {
    std::lock_guard lock(mu);
    spare.push_back(std::move(d));
  }
  mutable std::mutex mu;
  mutable std::vector<DCtx> spare;  // guarded by mu
};

namespace {
// A chain of one layer, its index used as it is (inherited entries stay).
detail::SnapshotChain single_layer(const std::string& path, std::shared_ptr<const UniqueFd> fd,
                                   detail::SnapshotIndex index) {
  detail::SnapshotChain chain;
  chain.merged = index;
  chain.layer_of.assign(index.info.chunk_count, 0);
  chain.layers.push_back(detail::ChainLayer{path, std::move(fd), std::move(index)});
  return chain;
}
}  // namespace

SnapshotReader SnapshotReader::open(const std::string& path) {
  auto impl = std::make_shared<Impl>();
  impl->path = path;
  impl->chain = detail::open_snapshot_chain(path);
  impl->read_at_fds();
  impl->describe_layers();
  return SnapshotReader(std::move(impl));
}

SnapshotReader SnapshotReader::open_layer(const std::string& path) {
  auto impl = std::make_shared<Impl>();
  impl->path = path;
  uint64_t bytes = 0;
  UniqueFd fd = detail::open_regular_file(path, "snapshot ", &bytes);
  detail::SnapshotIndex index = detail::read_snapshot_index(fd.get(), path, bytes);
  impl->chain = single_layer(path, std::make_shared<const UniqueFd>(std::move(fd)), std::move(index));
  impl->read_at_fds();
  impl->describe_layers();
  return SnapshotReader(std::move(impl));
}

SnapshotReader SnapshotReader::open(const std::string& name, uint64_t file_bytes, ReadAt read_at) {
  auto impl = std::make_shared<Impl>();
  impl->path = name;
  detail::SnapshotIndex index = detail::read_snapshot_index(read_at, name, file_bytes);
  impl->chain = single_layer(name, std::make_shared<const UniqueFd>(), std::move(index));
  impl->read_at.push_back(std::move(read_at));
  impl->describe_layers();
  return SnapshotReader(std::move(impl));
}

const std::string& SnapshotReader::path() const { return impl_->path; }
const SnapshotInfo& SnapshotReader::info() const { return impl_->index().info; }
const std::vector<SnapshotLayer>& SnapshotReader::layers() const { return impl_->layers; }

void SnapshotReader::Impl::check_index(uint64_t i) const {
  if (i >= index().info.chunk_count)
    throw Error("snapshot " + path + ": chunk " + std::to_string(i) + " does not exist (" +
                std::to_string(index().info.chunk_count) + " chunks)");
}

uint64_t SnapshotReader::chunk_length(uint64_t index) const {
  impl_->check_index(index);
  return impl_->index().chunk_length(index);
}

bool SnapshotReader::chunk_is_zero(uint64_t index) const {
  impl_->check_index(index);
  return impl_->index().entries[index].zero();
}

bool SnapshotReader::chunk_is_inherited(uint64_t index) const {
  impl_->check_index(index);
  return impl_->index().entries[index].inherited();
}

void SnapshotReader::read_chunk(uint64_t index, std::span<std::byte> out) const {
  impl_->check_index(index);
  const detail::ChunkEntry& e = impl_->index().entries[index];
  const uint32_t layer = impl_->chain.layer_of[index];
  const std::string& file = impl_->chain.layers[layer].path;
  uint64_t length = impl_->index().chunk_length(index);
  std::string where = "snapshot " + file + ": chunk " + std::to_string(index) + " at offset " +
                      std::to_string(e.offset) + ": ";
  if (e.inherited())
    throw Error("snapshot " + file + ": chunk " + std::to_string(index) + " is held by its parent " +
                impl_->index().parent_path + ", not by this layer");
  if (out.size() < length)
    throw Error(where + "output buffer of " + std::to_string(out.size()) + " bytes is too small for " +
                std::to_string(length));
  if (e.zero()) {
    std::memset(out.data(), 0, length);
    return;
  }
  auto frame = std::make_unique_for_overwrite<std::byte[]>(e.length);
  errno = 0;
  if (!impl_->read_at[layer](frame.get(), e.length, e.offset)) {
    if (errno) throw_errno(where + "cannot read " + std::to_string(e.length) + " bytes", errno);
    throw Error(where + "truncated: the file ends before the chunk's " + std::to_string(e.length) + " bytes");
  }
  Impl::DCtx dctx = impl_->take_dctx();
  if (!dctx) throw Error(where + "cannot create a zstd decompression context");
  detail::ChunkCheck c = detail::decode_chunk(dctx.get(), impl_->chain.dictionary_of(index), {frame.get(), e.length},
                                              out.data(), length, e);
  impl_->give_back(std::move(dctx));
  if (c.status != detail::ChunkCheck::kOk) throw Error(where + detail::describe(c, length, e));
}

}  // namespace faultline

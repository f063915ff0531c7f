// SPDX-License-Identifier: Apache-2.0
// Snapshot files: CRC-32C, writer and reader round trips, zero chunks,
// crash-safe writing, and every kind of corruption the reader must catch
// (at open for the header and index, at read time for a chunk).
#include <signal.h>
#include <sys/resource.h>
#include <zstd.h>

#include <catch2/catch.hpp>
#include <random>

#include "crc32c.h"
#include "faultline/error.h"
#include "faultline/snapshot.h"
#include "snapshot_format.h"
#include "snapshot_test_util.h"
#include "test_util.h"

using namespace faultline;
using namespace faultline::test;
using Catch::Contains;

namespace {

constexpr size_t kKiB = 1024, kMiB = 1024 * 1024;

// Image-like data: runs of random bytes, text-like compressible bytes and
// zeros, in chunk-sized pieces so some chunks are all zero.
std::vector<std::byte> mixed_data(size_t n, uint32_t piece, uint32_t seed) {
  std::vector<std::byte> v(n);
  std::mt19937 rng(seed);
  for (size_t at = 0; at < n; at += piece) {
    size_t len = std::min<size_t>(piece, n - at);
    switch (rng() % 3) {
      case 0:
        break;  // zeros
      case 1:
        for (size_t i = 0; i < len; ++i) v[at + i] = pattern_byte(at + i, seed);
        break;
      default:
        for (size_t i = 0; i < len; ++i) v[at + i] = std::byte(static_cast<uint8_t>('a' + (i / 7 + at / 4096) % 23));
    }
  }
  return v;
}

void check_round_trip(const std::vector<std::byte>& data, const SnapshotReader& r) {
  const SnapshotInfo& info = r.info();
  REQUIRE(info.size == data.size());
  std::vector<std::byte> out(info.chunk_size);
  uint64_t zero = 0;
  for (uint64_t i = 0; i < info.chunk_count; ++i) {
    uint64_t len = r.chunk_length(i);
    uint64_t at = i * info.chunk_size;
    REQUIRE(len == std::min<uint64_t>(info.chunk_size, data.size() - at));
    std::fill(out.begin(), out.end(), std::byte{0x5a});
    r.read_chunk(i, out);
    REQUIRE(std::memcmp(out.data(), data.data() + at, len) == 0);
    bool is_zero = std::all_of(data.begin() + at, data.begin() + at + len, [](std::byte b) { return b == std::byte{0}; });
    REQUIRE(r.chunk_is_zero(i) == is_zero);
    zero += is_zero;
  }
  REQUIRE(info.zero_chunks == zero);
}

}  // namespace

TEST_CASE("CRC-32C matches the standard check values, hardware and table alike", "[snapshot]") {
  const char* check = "123456789";
  REQUIRE(detail::crc32c(check, 9) == 0xE3069283u);
  REQUIRE(detail::crc32c_portable(check, 9) == 0xE3069283u);
  std::vector<unsigned char> zeros(32, 0), ones(32, 0xff);
  REQUIRE(detail::crc32c(zeros.data(), 32) == 0x8A9136AAu);  // RFC 3720 B.4
  REQUIRE(detail::crc32c(ones.data(), 32) == 0x62A8AB43u);
  REQUIRE(detail::crc32c(nullptr, 0) == 0);
  auto data = pattern(3 * 65536 + 77, 3);
  for (size_t start : {0, 1, 3, 7}) {
    // (3 KiB and more run the three-stream hardware loop)
    for (size_t len : {0, 1, 7, 8, 9, 63, 64, 1000, 3071, 3072, 3073, 4096, 6144 + 5, 65536, 3 * 65536}) {
      const auto* p = reinterpret_cast<const unsigned char*>(data.data()) + start;
      uint32_t whole = detail::crc32c(p, len);
      REQUIRE(whole == detail::crc32c_portable(p, len));
      size_t half = len / 3;
      REQUIRE(detail::crc32c(p + half, len - half, detail::crc32c(p, half)) == whole);
    }
  }
}

TEST_CASE("snapshots round-trip for every chunk size and odd total sizes", "[snapshot]") {
  TempDir dir;
  for (uint32_t chunk = 4 * kKiB; chunk <= 4 * kMiB; chunk *= 2) {
    for (size_t size : {size_t{1}, size_t{chunk} - 1, size_t{chunk}, size_t{chunk} * 3 + 4097}) {
      INFO("chunk_size " << chunk << " size " << size);
      auto data = mixed_data(size, chunk, static_cast<uint32_t>(chunk + size));
      SnapshotWriteOptions o;
      o.chunk_size = chunk;
      o.level = chunk >= kMiB ? 1 : 3;  // keeps the 4 MiB cases quick
      o.threads = 2;
      std::string path = dir.file("snap");
      write_snapshot(data, path, o);
      SnapshotReader r = SnapshotReader::open(path);
      REQUIRE(r.info().version == 1);
      REQUIRE(r.info().chunk_size == chunk);
      REQUIRE(r.info().flags == 0);
      REQUIRE(r.info().chunk_count == (size + chunk - 1) / chunk);
      REQUIRE(r.info().file_bytes == std::filesystem::file_size(path));
      REQUIRE(r.info().file_bytes == 64 + r.info().compressed_bytes + 16 * r.info().chunk_count);
      check_round_trip(data, r);
    }
  }
}

TEST_CASE("all-zero chunks are stored as a flag, without data", "[snapshot]") {
  TempDir dir;
  std::string path = dir.file("snap");
  const uint32_t chunk = 16 * kKiB;
  // chunks: 0 zero, 1 data, 2 zero, 3 data with a single non-zero byte, 4 short and zero
  std::vector<std::byte> data(4 * chunk + 1000);
  for (size_t i = 0; i < chunk; ++i) data[chunk + i] = pattern_byte(i);
  data[3 * chunk + chunk - 1] = std::byte{1};
  SnapshotWriteOptions o;
  o.chunk_size = chunk;
  write_snapshot(data, path, o);
  SnapshotReader r = SnapshotReader::open(path);
  REQUIRE(r.info().zero_chunks == 3);
  REQUIRE(r.chunk_is_zero(0));
  REQUIRE_FALSE(r.chunk_is_zero(1));
  REQUIRE(r.chunk_is_zero(2));
  REQUIRE_FALSE(r.chunk_is_zero(3));
  REQUIRE(r.chunk_is_zero(4));
  REQUIRE(r.chunk_length(4) == 1000);
  auto f = read_bytes(path);
  REQUIRE(entry_of(f, 0).length == 0);
  REQUIRE(entry_of(f, 2).offset == 0);
  check_round_trip(data, r);

  SECTION("an image of zeros is a header and an index") {
    std::vector<std::byte> zeros(10 * chunk + 5);
    write_snapshot(zeros, path, o);
    SnapshotReader z = SnapshotReader::open(path);
    REQUIRE(z.info().zero_chunks == 11);
    REQUIRE(z.info().compressed_bytes == 0);
    REQUIRE(z.info().file_bytes == 64 + 11 * 16);
    check_round_trip(zeros, z);
  }
  SECTION("an empty image") {
    write_snapshot({}, path, o);
    SnapshotReader e = SnapshotReader::open(path);
    REQUIRE(e.info().size == 0);
    REQUIRE(e.info().chunk_count == 0);
    REQUIRE_THROWS_WITH(e.chunk_length(0), Contains("chunk 0 does not exist"));
  }
}

TEST_CASE("snapshots are deterministic: from memory or a file, with any number of threads", "[snapshot]") {
  TempDir dir;
  auto data = mixed_data(3 * kMiB + 12345, 64 * kKiB, 7);
  TempFile input(data);
  SnapshotWriteOptions one;
  one.threads = 1;
  SnapshotWriteOptions many;
  many.threads = 5;
  std::vector<std::pair<uint64_t, uint64_t>> calls;
  many.progress = [&](uint64_t done, uint64_t total) { calls.emplace_back(done, total); };
  write_snapshot(data, dir.file("a"), one);
  write_snapshot_from_file(input.path(), dir.file("b"), many);
  REQUIRE(read_bytes(dir.file("a")) == read_bytes(dir.file("b")));
  check_round_trip(data, SnapshotReader::open(dir.file("b")));
  REQUIRE_FALSE(calls.empty());
  for (size_t i = 1; i < calls.size(); ++i) REQUIRE(calls[i].first >= calls[i - 1].first);
  REQUIRE(calls.back() == std::make_pair(uint64_t{data.size()}, uint64_t{data.size()}));
  REQUIRE(dir.entries() == 2);  // no temporary files left
}

TEST_CASE("bad write options and inputs are rejected naming the problem", "[snapshot][errors]") {
  TempDir dir;
  std::vector<std::byte> data(100000, std::byte{7});
  std::string path = dir.file("snap");
  SnapshotWriteOptions o;
  o.chunk_size = 3 * 4096;
  REQUIRE_THROWS_WITH(write_snapshot(data, path, o), Contains("chunk_size = 12288"));
  o.chunk_size = 2048;
  REQUIRE_THROWS_WITH(write_snapshot(data, path, o), Contains("chunk_size"));
  o.chunk_size = 8 * kMiB;
  REQUIRE_THROWS_WITH(write_snapshot(data, path, o), Contains("chunk_size"));
  o = {};
  o.level = 1000;
  REQUIRE_THROWS_WITH(write_snapshot(data, path, o), Contains("level = 1000"));
  REQUIRE_THROWS_WITH(write_snapshot_from_file(dir.file("missing"), path), Contains(dir.file("missing")));
  REQUIRE_THROWS_WITH(write_snapshot_from_file(dir.path, path), Contains("not a regular file"));
  REQUIRE_THROWS_WITH(write_snapshot(data, dir.file("no/such/dir/snap")), Contains(dir.file("no/such/dir")));
  REQUIRE(dir.entries() == 0);
  REQUIRE_THROWS_WITH(SnapshotReader::open(dir.file("missing")), Contains(dir.file("missing")));
  REQUIRE_THROWS_WITH(SnapshotReader::open(dir.path), Contains("not a regular file"));
}

TEST_CASE("a snapshot write that fails leaves nothing under the final name", "[snapshot][errors][fork]") {
  TempDir dir;
  std::string path = dir.file("snap");
  auto old = pattern(200 * kKiB, 1);
  write_snapshot(old, path);
  auto before = read_bytes(path);
  auto data = pattern(4 * kMiB, 2);  // does not compress: about 4 MiB to write
  // A file-size limit makes the write fail half-way (EFBIG), as a full disk would.
  int status = run_in_child([&] {
    signal(SIGXFSZ, SIG_IGN);
    rlimit lim{1 * kMiB, 1 * kMiB};
    if (setrlimit(RLIMIT_FSIZE, &lim) != 0) _exit(4);
    try {
      write_snapshot(data, path);
    } catch (const Error& e) {
      if (std::string(e.what()).find(path) != std::string::npos && e.sys_errno() == EFBIG) _exit(0);
      std::fprintf(stderr, "unexpected error: %s\n", e.what());
    }
    _exit(5);
  });
  REQUIRE(status == 0);
  REQUIRE(read_bytes(path) == before);  // the old snapshot is untouched
  REQUIRE(dir.entries() == 1);          // and no temporary file is left
  check_round_trip(old, SnapshotReader::open(path));
}

// ---- Corruption found at open: each names the field -------------------------

namespace {

// A valid 4-chunk snapshot (64 KiB chunks, chunk 2 all zero) as bytes.
std::vector<unsigned char> valid_snapshot(const TempDir& dir, std::vector<std::byte>* data_out = nullptr) {
  auto data = mixed_data(4 * 64 * kKiB - 100, 64 * kKiB, 11);
  for (size_t i = 0; i < 64 * kKiB; ++i) {
    data[i] = pattern_byte(i, 3);
    data[64 * kKiB + i] = std::byte(static_cast<uint8_t>(i % 251));
    data[2 * 64 * kKiB + i] = std::byte{0};
  }
  write_snapshot(data, dir.file("valid"));
  if (data_out) *data_out = data;
  return read_bytes(dir.file("valid"));
}

void require_open_fails(const TempDir& dir, const std::vector<unsigned char>& bytes, const std::string& text) {
  std::string path = dir.file("bad");
  write_bytes(path, bytes);
  REQUIRE_THROWS_WITH(SnapshotReader::open(path), Contains(text) && Contains(path));
}

}  // namespace

TEST_CASE("snapshot corruption: bad magic fails at open", "[snapshot][corrupt]") {
  TempDir dir;
  auto f = valid_snapshot(dir);
  f[0] = 'X';
  require_open_fails(dir, f, "magic");
  require_open_fails(dir, std::vector<unsigned char>(100, 0), "magic");
}

TEST_CASE("snapshot corruption: an unknown version fails at open", "[snapshot][corrupt]") {
  TempDir dir;
  auto f = valid_snapshot(dir);
  patch_header(f, [](auto& h) { h.version = 3; });
  require_open_fails(dir, f, "version = 3");
}

TEST_CASE("snapshot corruption: a damaged header fails its checksum at open", "[snapshot][corrupt]") {
  TempDir dir;
  auto f = valid_snapshot(dir);
  f[25] ^= 0x10;  // a bit of size
  require_open_fails(dir, f, "header_checksum");
}

TEST_CASE("snapshot corruption: bad header fields fail at open naming the field", "[snapshot][corrupt]") {
  TempDir dir;
  auto f = valid_snapshot(dir);
  auto g = f;
  patch_header(g, [](auto& h) { h.chunk_size = 65535; });
  require_open_fails(dir, g, "chunk_size = 65535");
  g = f;
  patch_header(g, [](auto& h) { h.chunk_size = 8 << 20; });
  require_open_fails(dir, g, "chunk_size");
  g = f;
  patch_header(g, [](auto& h) { h.flags = 4; });
  require_open_fails(dir, g, "flags = 0x4");
  g = f;
  patch_header(g, [](auto& h) { h.header_bytes = 128; });
  require_open_fails(dir, g, "header_bytes = 128");
  g = f;
  patch_header(g, [](auto& h) { h.chunk_count = 5; });
  require_open_fails(dir, g, "chunk_count = 5");
  g = f;
  patch_header(g, [](auto& h) { h.size += 64 * kKiB; });
  require_open_fails(dir, g, "chunk_count = 4");
}

TEST_CASE("snapshot corruption: a truncated file fails at open", "[snapshot][corrupt]") {
  TempDir dir;
  auto f = valid_snapshot(dir);
  for (size_t keep : {size_t{0}, size_t{10}, size_t{63}}) {
    require_open_fails(dir, std::vector<unsigned char>(f.begin(), f.begin() + keep), "truncated");
  }
  // Cut inside the index, and inside the chunk data (the index is gone).
  require_open_fails(dir, std::vector<unsigned char>(f.begin(), f.end() - 5), "truncated");
  auto index_offset = decode_header_for_test(f.data()).index_offset;
  require_open_fails(dir, std::vector<unsigned char>(f.begin(), f.begin() + index_offset - 1), "index_offset");
  // Bytes appended after the index are refused too.
  auto g = f;
  g.push_back(0);
  require_open_fails(dir, g, "index_offset");
}

TEST_CASE("snapshot corruption: a damaged index fails its checksum at open", "[snapshot][corrupt]") {
  TempDir dir;
  auto f = valid_snapshot(dir);
  f[f.size() - 20] ^= 1;
  require_open_fails(dir, f, "index_checksum");
}

TEST_CASE("snapshot corruption: index entries out of bounds fail at open", "[snapshot][corrupt]") {
  TempDir dir;
  auto f = valid_snapshot(dir);
  auto index_offset = decode_header_for_test(f.data()).index_offset;
  auto g = f;
  patch_entry(g, 1, [&](auto& e) { e.offset = index_offset - e.length + 1; });  // runs into the index
  require_open_fails(dir, g, "chunks[1].offset");
  g = f;
  patch_entry(g, 3, [&](auto& e) { e.offset = 10; });  // inside the header
  require_open_fails(dir, g, "chunks[3].offset = 10");
  g = f;
  patch_entry(g, 0, [&](auto& e) { e.offset = index_offset + 100; });  // past the data
  require_open_fails(dir, g, "chunks[0].offset");
  g = f;
  patch_entry(g, 2, [&](auto& e) { e.offset = 64; });  // a zero chunk must not point at data
  require_open_fails(dir, g, "chunks[2]: a zero chunk");
}

TEST_CASE("snapshot corruption: overlapping index entries fail at open", "[snapshot][corrupt]") {
  TempDir dir;
  auto f = valid_snapshot(dir);
  auto one = entry_of(f, 1);
  auto g = f;
  patch_entry(g, 3, [&](auto& e) {
    e.offset = one.offset + one.length - 1;  // shares one byte with chunk 1
  });
  require_open_fails(dir, g, "overlap");
  require_open_fails(dir, g, "chunks[1]");
  g = f;
  auto zero = entry_of(f, 0);
  patch_entry(g, 1, [&](auto& e) { e.offset = zero.offset + 1; });  // inside chunk 0, before chunk 3
  require_open_fails(dir, g, "chunks[0]");
  require_open_fails(dir, g, "overlap");
}

TEST_CASE("snapshot corruption: lengths that overflow fail at open", "[snapshot][corrupt]") {
  TempDir dir;
  auto f = valid_snapshot(dir);
  auto g = f;
  // offset + length wraps around 2^64 to a small number.
  patch_entry(g, 1, [](auto& e) {
    e.offset = UINT64_MAX - 10;
    e.length = 1000;
  });
  require_open_fails(dir, g, "chunks[1].offset");
  g = f;
  patch_entry(g, 1, [](auto& e) { e.length = UINT32_MAX; });
  require_open_fails(dir, g, "chunks[1].length");
  g = f;
  patch_header(g, [](auto& h) {
    h.size = UINT64_MAX;  // chunk_count * 16 would overflow
    h.chunk_count = UINT64_MAX / 65536 + 1;
  });
  require_open_fails(dir, g, "size = 18446744073709551615");
  g = f;
  patch_header(g, [](auto& h) { h.index_offset = UINT64_MAX - 8; });
  require_open_fails(dir, g, "index_offset");
}

// ---- Corruption found when a chunk is read ----------------------------------

TEST_CASE("snapshot corruption: a checksum mismatch fails that chunk's read only", "[snapshot][corrupt]") {
  TempDir dir;
  std::vector<std::byte> data;
  auto f = valid_snapshot(dir, &data);
  patch_entry(f, 1, [](auto& e) { e.checksum ^= 0x100; });
  write_bytes(dir.file("bad"), f);
  SnapshotReader r = SnapshotReader::open(dir.file("bad"));
  std::vector<std::byte> out(64 * kKiB);
  std::string where = "chunk 1 at offset " + std::to_string(entry_of(f, 1).offset);
  REQUIRE_THROWS_WITH(r.read_chunk(1, out), Contains("checksum mismatch") && Contains(where));
  r.read_chunk(0, out);
  REQUIRE(std::memcmp(out.data(), data.data(), out.size()) == 0);
  r.read_chunk(3, out);
  REQUIRE(std::memcmp(out.data(), data.data() + 3 * 64 * kKiB, r.chunk_length(3)) == 0);
}

TEST_CASE("snapshot corruption: a decompressed size mismatch fails that chunk's read", "[snapshot][corrupt]") {
  TempDir dir;
  auto f = valid_snapshot(dir);
  auto one = entry_of(f, 1);
  std::vector<unsigned char> small(1000, 'x');
  SECTION("a frame that says it holds fewer bytes") {
    std::vector<unsigned char> frame(ZSTD_compressBound(small.size()));
    frame.resize(ZSTD_compress(frame.data(), frame.size(), small.data(), small.size(), 3));
    REQUIRE(frame.size() <= one.length);
    std::copy(frame.begin(), frame.end(), f.begin() + one.offset);
    patch_entry(f, 1, [&](auto& e) {
      e.length = static_cast<uint32_t>(frame.size());
      e.checksum = detail::crc32c(small.data(), small.size());
    });
    write_bytes(dir.file("bad"), f);
    std::vector<std::byte> out(64 * kKiB);
    REQUIRE_THROWS_WITH(SnapshotReader::open(dir.file("bad")).read_chunk(1, out),
                        Contains("decompressed size mismatch: 1000 bytes, expected 65536") && Contains("chunk 1"));
  }
  SECTION("a frame without a content size that holds more bytes") {
    std::vector<unsigned char> big(64 * kKiB + 1, 'y');
    ZSTD_CCtx* cctx = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_contentSizeFlag, 0);
    std::vector<unsigned char> frame(ZSTD_compressBound(big.size()));
    frame.resize(ZSTD_compress2(cctx, frame.data(), frame.size(), big.data(), big.size()));
    ZSTD_freeCCtx(cctx);
    REQUIRE(frame.size() <= one.length);
    std::copy(frame.begin(), frame.end(), f.begin() + one.offset);
    patch_entry(f, 1, [&](auto& e) { e.length = static_cast<uint32_t>(frame.size()); });
    write_bytes(dir.file("bad"), f);
    std::vector<std::byte> out(128 * kKiB);
    REQUIRE_THROWS_WITH(SnapshotReader::open(dir.file("bad")).read_chunk(1, out),
                        Contains("decompressed size mismatch") && Contains("expected 65536"));
  }
}

TEST_CASE("snapshot corruption: damaged compressed bytes fail that chunk's read", "[snapshot][corrupt]") {
  TempDir dir;
  auto f = valid_snapshot(dir);
  auto one = entry_of(f, 1);
  for (uint32_t at : {0u, 4u, one.length / 2, one.length - 1}) {
    auto g = f;
    g[one.offset + at] ^= 0x5a;
    write_bytes(dir.file("bad"), g);
    std::vector<std::byte> out(64 * kKiB);
    INFO("byte " << at);
    REQUIRE_THROWS_WITH(SnapshotReader::open(dir.file("bad")).read_chunk(1, out), Contains("chunk 1 at offset"));
  }
}

// ---- Dictionaries ------------------------------------------------------------

namespace {

// Memory-like words: pointers from a small set and small integers, which
// every chunk must otherwise learn from scratch.
std::vector<std::byte> wordy_data(size_t n, uint32_t seed) {
  std::vector<std::byte> v(n);
  std::mt19937_64 rng(seed);
  std::vector<uint64_t> vocab(64);
  for (auto& w : vocab) w = rng() & 0x00007ffffffffff8ull;
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t r = rng();
    uint64_t w = r % 4 ? vocab[(r >> 8) % 64] : (r >> 16) % 4096;
    std::memcpy(&v[i], &w, 8);
  }
  return v;
}

}  // namespace

TEST_CASE("a dictionary is trained, stored and used where it pays", "[snapshot]") {
  TempDir dir;
  auto data = wordy_data(8 * kMiB + 4321, 5);
  SnapshotWriteOptions small;  // a small dictionary pays for itself on a small image
  small.dictionary_bytes = 16 * kKiB;
  write_snapshot(data, dir.file("dict"), small);
  SnapshotWriteOptions none;
  none.dictionary_bytes = 0;
  write_snapshot(data, dir.file("plain"), none);
  SnapshotReader with = SnapshotReader::open(dir.file("dict"));
  SnapshotReader without = SnapshotReader::open(dir.file("plain"));
  REQUIRE(with.info().flags == detail::kFlagDictionary);
  REQUIRE(with.info().dictionary_bytes > 0);
  REQUIRE(with.info().dictionary_bytes <= 16 * kKiB);
  REQUIRE(without.info().flags == 0);
  REQUIRE(without.info().dictionary_bytes == 0);
  // It pays for itself: smaller file, dictionary included.
  CHECK(with.info().file_bytes < without.info().file_bytes);
  CHECK(with.info().file_bytes == 64 + with.info().dictionary_bytes + with.info().compressed_bytes + 16 * with.info().chunk_count);
  check_round_trip(data, with);
  check_round_trip(data, without);

  // Incompressible data gains nothing from one: none is stored.
  auto noise = pattern(8 * kMiB, 9);
  write_snapshot(noise, dir.file("noise"));
  CHECK(SnapshotReader::open(dir.file("noise")).info().dictionary_bytes == 0);

  SnapshotWriteOptions huge;
  huge.dictionary_bytes = 2 * kMiB;
  REQUIRE_THROWS_WITH(write_snapshot(data, dir.file("x"), huge), Contains("dictionary_bytes = 2097152"));
}

TEST_CASE("snapshot corruption: a damaged or misdescribed dictionary fails at open", "[snapshot][corrupt]") {
  TempDir dir;
  auto data = wordy_data(8 * kMiB, 6);
  SnapshotWriteOptions small;
  small.dictionary_bytes = 16 * kKiB;
  write_snapshot(data, dir.file("valid"), small);
  auto f = read_bytes(dir.file("valid"));
  auto h = decode_header_for_test(f.data());
  REQUIRE(h.flags == detail::kFlagDictionary);
  uint32_t dict_length = static_cast<uint32_t>(get_le(f.data() + 52, 4));
  REQUIRE(dict_length > 0);
  auto g = f;
  g[64 + dict_length / 2] ^= 0x40;  // inside the dictionary
  require_open_fails(dir, g, "dict_checksum");
  // The header fields, with a valid header checksum.
  auto with_header_bytes = [&](size_t at, uint32_t value) {
    auto b = f;
    for (int i = 0; i < 4; ++i) b[at + i] = static_cast<unsigned char>(value >> (8 * i));
    for (int i = 0; i < 4; ++i) b[60 + i] = static_cast<unsigned char>(detail::crc32c(b.data(), 60) >> (8 * i));
    return b;
  };
  require_open_fails(dir, with_header_bytes(52, 2 << 20), "dict_length = 2097152");
  require_open_fails(dir, with_header_bytes(52, 4), "dict_length = 4");
  require_open_fails(dir, with_header_bytes(20, 0), "must be 0 without the dictionary flag");
  // A chunk pointing into the dictionary is outside the chunk data.
  g = f;
  patch_entry(g, 0, [](auto& e) { e.offset = 64; });
  require_open_fails(dir, g, "chunks[0].offset = 64");
}

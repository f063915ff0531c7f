// SPDX-License-Identifier: Apache-2.0
// ZstdSnapshotBackend: served directly (requests of any shape) and through a
// Region (every fill size against several chunk sizes, zero chunks, corrupt
// chunks giving SIGBUS, concurrent faults, prefetch and demand at once,
// working-set record and replay).
#include <poll.h>
#include <setjmp.h>
#include <signal.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <functional>
#include <random>
#include <thread>
#include <unordered_map>

#include "faultline/faultline.h"
#include "faultline/snapshot.h"
#include "faultline/zstd_snapshot_backend.h"
#include "snapshot_test_util.h"
#include "test_util.h"

using namespace faultline;
using namespace faultline::test;
using Catch::Contains;

namespace {

constexpr size_t kKiB = 1024, kMiB = 1024 * 1024;

// Image-like bytes: every third chunk-sized piece zero, the others random
// or text-like (compressible), so zero, stored and compressed chunks mix.
std::vector<std::byte> image(size_t n, uint32_t piece, uint32_t seed) {
  std::vector<std::byte> v(n);
  std::mt19937 rng(seed);
  for (size_t at = 0, k = 0; at < n; at += piece, ++k) {
    size_t len = std::min<size_t>(piece, n - at);
    uint32_t kind = k % 3 == 1 ? 0 : 1 + rng() % 2;
    for (size_t i = 0; kind && i < len; ++i)
      v[at + i] = kind == 1 ? pattern_byte(at + i, seed) : std::byte(static_cast<uint8_t>('A' + (at + i) / 5 % 26));
  }
  return v;
}

std::string snapshot_of(const TempDir& dir, const std::vector<std::byte>& data, uint32_t chunk,
                        const std::string& name = "snap") {
  SnapshotWriteOptions o;
  o.chunk_size = chunk;
  o.threads = 2;
  write_snapshot(data, dir.file(name), o);
  return dir.file(name);
}


// Drives a backend the way the fault loop does: submit, then reap whenever
// the completion fd signals, until every request has completed.
// `after_submit` runs between the submit and the first reap.
std::unordered_map<uint64_t, ReadCompletion> serve(Backend& b, const std::vector<ReadRequest>& reqs,
                                                   std::vector<uint64_t>* order = nullptr,
                                                   const std::function<void()>& after_submit = {}) {
  std::unordered_map<uint64_t, ReadCompletion> done;
  b.submit(reqs);
  if (after_submit) after_submit();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (done.size() < reqs.size()) {
    ReadCompletion out[4];  // small, so the "reap until short" re-arm path runs
    size_t n;
    while ((n = b.reap(out)) > 0) {
      for (size_t i = 0; i < n; ++i) {
        REQUIRE(done.count(out[i].tag) == 0);  // exactly one completion each
        done[out[i].tag] = out[i];
        if (order) order->push_back(out[i].tag);
      }
      if (n < std::size(out)) break;
    }
    if (done.size() == reqs.size()) break;
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    pollfd p{b.completion_fd(), POLLIN, 0};
    poll(&p, 1, 10);
    uint64_t v;
    if (read(b.completion_fd(), &v, sizeof v) < 0) {
    }  // level-triggered here: clear it
  }
  return done;
}

ZstdSnapshotCounters counters_of(const std::shared_ptr<Backend>& b) {
  return static_cast<ZstdSnapshotBackend&>(*b).counters();
}

}  // namespace

TEST_CASE("zstd snapshot backend serves requests of any shape", "[snapshot][backend]") {
  TempDir dir;
  const uint32_t chunk = 16 * kKiB;
  auto data = image(40 * chunk + 333, chunk, 4);  // chunks 1, 4, 7, ... are zero
  ZstdSnapshotBackend b(snapshot_of(dir, data, chunk));
  REQUIRE(b.size() == data.size());
  REQUIRE(b.chunk_size() == chunk);
  REQUIRE_THAT(b.name(), Contains(dir.file("snap")));

  struct Want {
    uint64_t offset;
    uint32_t length;
  };
  std::vector<Want> wants = {
      {0, chunk},                           // one whole chunk
      {chunk, chunk},                       // a zero chunk
      {chunk, 1},                           // part of a zero chunk
      {3 * chunk, 4 * chunk},               // several chunks, zero ones among them
      {5 * chunk + 100, 5000},              // inside one chunk
      {6 * chunk - 10, 20},                 // straddling two
      {2 * chunk + 4096, 3 * chunk},        // unaligned, several
      {39 * chunk, 4 * chunk},              // runs past the end: short
      {40 * chunk + 300, 1000},             // the last, short chunk
      {10 * chunk, 8 * chunk},              // large, merged reads
      {10 * chunk + 8 * kKiB, 8 * kKiB},    // overlaps the one before (same batch)
      {4 * chunk, chunk},                   // zero chunk
  };
  std::vector<std::vector<std::byte>> bufs;
  std::vector<ReadRequest> reqs;
  for (size_t i = 0; i < wants.size(); ++i) {
    bufs.emplace_back(wants[i].length, std::byte{0xee});
    reqs.push_back(ReadRequest{wants[i].offset, wants[i].length, bufs.back().data(), 1000 + i, i % 2 == 0});
  }
  auto done = serve(b, reqs);
  for (size_t i = 0; i < wants.size(); ++i) {
    INFO("request " << i);
    const ReadCompletion& c = done.at(1000 + i);
    uint64_t avail = std::min<uint64_t>(wants[i].length, data.size() - wants[i].offset);
    REQUIRE(c.result == static_cast<int64_t>(avail));
    REQUIRE(c.data == nullptr);
    if (c.zero) {
      for (uint64_t k = 0; k < avail; ++k) REQUIRE(data[wants[i].offset + k] == std::byte{0});
      REQUIRE(bufs[i][0] == std::byte{0xee});  // not written
    } else {
      REQUIRE(std::memcmp(bufs[i].data(), data.data() + wants[i].offset, avail) == 0);
    }
  }
  CHECK(done.at(1001).zero);
  CHECK(done.at(1002).zero);
  CHECK(done.at(1011).zero);
  CHECK_FALSE(done.at(1003).zero);
  auto c = b.counters();
  CHECK(c.corrupt_chunks == 0);
  CHECK(c.io_reads < c.chunks_decompressed);  // neighbours were merged
  CHECK(c.zero_chunks >= 4);

  SECTION("partial reads of a chunk read before come from the cache") {
    std::vector<std::byte> part(100);
    auto again = serve(b, {ReadRequest{5 * chunk + 7, 100, part.data(), 1, true}});
    REQUIRE(again.at(1).result == 100);
    REQUIRE(std::memcmp(part.data(), data.data() + 5 * chunk + 7, 100) == 0);
    CHECK(b.counters().cache_hits >= 1);
    CHECK(b.counters().chunks_decompressed == c.chunks_decompressed);
  }
}

TEST_CASE("regions over a zstd snapshot get every byte, for every fill size and chunk size", "[snapshot][backend]") {
  TempDir dir;
  Runtime rt;
  for (uint32_t chunk : {4 * 1024u, 64 * 1024u, 1024 * 1024u}) {
    auto data = image(48 * chunk / 4 + 12345, chunk, chunk);
    std::string path = snapshot_of(dir, data, chunk);
    for (uint32_t fill : {4 * 1024u, 16 * 1024u, 64 * 1024u, 256 * 1024u, 2048 * 1024u}) {
      for (uint64_t offset : {uint64_t{0}, uint64_t{3 * 4096 + 5}}) {
        INFO("chunk " << chunk << " fill " << fill << " offset " << offset);
        auto backend = open_zstd_snapshot(path);
        RegionOptions o;
        o.fill_size = fill;
        o.offset = offset;
        Region r = rt.map(backend, o);
        REQUIRE(r.size() == data.size() - offset);
        REQUIRE(first_mismatch(r.data(), data.data() + offset, r.size()) == -1);
        auto s = r.stats();
        CHECK(s.errors == 0);
        if (offset == 0 && fill <= chunk) CHECK(s.zero_pages > 0);  // else every fill holds some data
        auto c = counters_of(backend);
        CHECK(c.corrupt_chunks == 0);
        // Fills inside one chunk share its read and decompression (same
        // batch) or find it in the cache; a chunk may be decompressed again
        // only if a request comes while it is being decompressed.
        uint64_t chunks = (data.size() + chunk - 1) / chunk;
        CHECK(c.chunks_decompressed <= chunks + chunks / 4);
      }
    }
  }
}

TEST_CASE("zero chunks of a snapshot are placed as zero pages without reading", "[snapshot][backend]") {
  TempDir dir;
  std::vector<std::byte> data(32 * 64 * kKiB);
  for (size_t i = 5 * 64 * kKiB; i < 6 * 64 * kKiB; ++i) data[i] = pattern_byte(i);
  auto backend = open_zstd_snapshot(snapshot_of(dir, data, 64 * kKiB));
  Runtime rt;
  RegionOptions o;
  o.readahead = false;
  Region r = rt.map(backend, o);
  REQUIRE(first_mismatch(r.data(), data.data(), data.size()) == -1);
  // (a fault's pages are counted just after its thread is woken)
  CHECK(wait_until([&] { return r.stats().zero_pages == 31 * 16; }));
  CHECK(r.stats().bytes_read == 64 * kKiB);
  CHECK(counters_of(backend).chunks_decompressed == 1);
  CHECK(counters_of(backend).zero_chunks == 31);
}

TEST_CASE("open_zstd_snapshot refuses bad snapshots and options naming the problem", "[snapshot][backend][errors]") {
  TempDir dir;
  auto data = image(10 * 64 * kKiB, 64 * kKiB, 1);
  std::string path = snapshot_of(dir, data, 64 * kKiB);
  auto f = read_bytes(path);
  patch_header(f, [](auto& h) { h.version = 9; });
  write_bytes(dir.file("bad"), f);
  REQUIRE_THROWS_WITH(open_zstd_snapshot(dir.file("bad")), Contains("version = 9") && Contains(dir.file("bad")));
  f = read_bytes(path);
  patch_entry(f, 3, [](auto& e) { e.offset = 1; });
  write_bytes(dir.file("bad"), f);
  REQUIRE_THROWS_WITH(open_zstd_snapshot(dir.file("bad")), Contains("chunks[3].offset = 1"));
  REQUIRE_THROWS_WITH(open_zstd_snapshot(dir.file("missing")), Contains(dir.file("missing")));
  write_snapshot({}, dir.file("empty"));
  REQUIRE_THROWS_WITH(open_zstd_snapshot(dir.file("empty")), Contains("empty"));
  ZstdSnapshotOptions o;
  o.queue_depth = 0;
  REQUIRE_THROWS_WITH(open_zstd_snapshot(path, o), Contains("queue_depth = 0"));
  o = {};
  o.workers = 0;
  REQUIRE_THROWS_WITH(open_zstd_snapshot(path, o), Contains("workers = 0"));
}

TEST_CASE("a corrupt snapshot chunk gives SIGBUS for its pages only; the rest is served", "[snapshot][backend][corrupt][fork]") {
  TempDir dir;
  const uint32_t chunk = 64 * kKiB;
  auto data = image(16 * chunk, chunk, 8);  // chunk 3 holds data (k % 3 != 1)
  std::string path = snapshot_of(dir, data, chunk);
  auto f = read_bytes(path);
  auto three = entry_of(f, 3);
  REQUIRE_FALSE(three.zero());
  std::string kind = GENERATE(std::string("checksum"), std::string("size"), std::string("frame"));
  if (kind == "checksum") {
    patch_entry(f, 3, [](auto& e) { e.checksum ^= 1; });
  } else if (kind == "size") {
    std::vector<unsigned char> small(chunk / 2, 'q');
    std::vector<unsigned char> frame(ZSTD_compressBound(small.size()));
    frame.resize(ZSTD_compress(frame.data(), frame.size(), small.data(), small.size(), 3));
    REQUIRE(frame.size() <= three.length);
    std::copy(frame.begin(), frame.end(), f.begin() + three.offset);
    patch_entry(f, 3, [&](auto& e) {
      e.length = static_cast<uint32_t>(frame.size());
      e.checksum = detail::crc32c(small.data(), small.size());
    });
  } else {
    for (uint32_t i = 0; i < three.length; i += 97) f[three.offset + i] ^= 0xa5;
  }
  write_bytes(path, f);
  INFO("corruption: " << kind);
  REQUIRE(run_in_child([&] {
            catch_fault_signals();
            auto backend = open_zstd_snapshot(path);
            Runtime rt;
            RegionOptions o;
            o.readahead = false;
            Region r = rt.map(backend, o);
            std::byte v{};
            check(read_signal(r.data() + 3 * chunk + 5) == SIGBUS, "no SIGBUS in the corrupt chunk");
            check(read_signal(r.data() + 4 * chunk - 1) == SIGBUS, "no SIGBUS at the corrupt chunk's end");
            check(read_signal(r.data() + 4 * chunk, &v) == 0 && v == data[4 * chunk], "next chunk");
            check(read_signal(r.data() + 3 * chunk - 1, &v) == 0 && v == data[3 * chunk - 1], "previous chunk");
            for (uint64_t c = 0; c < 16; ++c)
              if (c != 3)
                check(first_mismatch(r.data() + c * chunk, data.data() + c * chunk, chunk) == -1, "other chunks");
            check(r.stats().errors == 1, "error counted once in the region");
            check(counters_of(backend).corrupt_chunks == 1, "corrupt chunk counted once by the backend");
            check(read_signal(r.data() + 3 * chunk) == SIGBUS, "SIGBUS again");
            // A second region over the same backend is served too (and fails the same chunk).
            Region again = rt.map(backend, o);
            check(read_signal(again.data() + 3 * chunk + 4096) == SIGBUS, "second region, corrupt chunk");
            check(first_mismatch(again.data() + 8 * chunk, data.data() + 8 * chunk, chunk) == -1, "second region");
          }) == 0);
}

TEST_CASE("concurrent faults on one snapshot chunk read and decompress it once", "[snapshot][backend][threads]") {
  TempDir dir;
  const uint32_t chunk = 256 * kKiB;
  auto data = image(8 * chunk, chunk, 12);
  std::string path = snapshot_of(dir, data, chunk);
  Runtime rt;
  for (uint32_t fill : {chunk, 4 * 1024u}) {
    INFO("fill " << fill);
    auto backend = open_zstd_snapshot(path);
    RegionOptions o;
    o.fill_size = fill;
    o.readahead = false;
    Region r = rt.map(backend, o);
    std::atomic<int> go{0}, bad{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
      threads.emplace_back([&, t] {
        go++;
        while (go < 8) {
        }
        // All in chunk 2 (a data chunk): the same page, and different pages.
        for (uint64_t at : {uint64_t{2 * chunk + 100}, uint64_t{2 * chunk} + t * 4096 * 7 + 3})
          if (r.data()[at] != data[at]) bad++;
      });
    }
    for (auto& th : threads) th.join();
    REQUIRE(bad == 0);
    REQUIRE(first_mismatch(r.data() + 2 * chunk, data.data() + 2 * chunk, chunk) == -1);
    auto c = counters_of(backend);
    // Whole-chunk fills: one read. 4 KiB fills: one decompression serves
    // the pieces of the chunk asked for at once; later ones hit the cache.
    if (fill == chunk) CHECK(c.chunks_decompressed == 1);
    CHECK(c.chunks_decompressed <= 8);
    CHECK(r.stats().errors == 0);
  }
}

TEST_CASE("prefetch, drain and demand faults at once over a snapshot", "[snapshot][backend][threads]") {
  TempDir dir;
  const uint32_t chunk = 64 * kKiB;
  auto data = image(24 * kMiB, chunk, 21);
  ZstdSnapshotOptions so;
  so.workers = 2;
  auto backend = open_zstd_snapshot(snapshot_of(dir, data, chunk), so);
  Runtime rt;
  RegionOptions o;
  o.readahead = false;
  Region r = rt.map(backend, o);
  std::vector<uint64_t> hot;
  for (uint64_t c = 0; c < data.size() / chunk; c += 7) hot.push_back(c * chunk);
  r.prefetch_chunks(hot);
  r.drain();
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      for (int i = 0; i < 500; ++i) {
        uint64_t at = rng() % data.size();
        if (r.data()[at] != data[at]) wrong++;
      }
    });
  }
  for (auto& th : threads) th.join();
  REQUIRE(wait_until([&] { return r.stats().pages_installed == data.size() / 4096; }));
  CHECK(wrong == 0);
  uint64_t faults = r.stats().faults;
  REQUIRE(first_mismatch(r.data(), data.data(), data.size()) == -1);
  CHECK(r.stats().faults == faults);
  CHECK(r.stats().errors == 0);
  // Every data chunk decompressed once (zero chunks never are).
  auto c = counters_of(backend);
  auto info = SnapshotReader::open(dir.file("snap")).info();
  CHECK(c.chunks_decompressed == info.chunk_count - info.zero_chunks);
}

TEST_CASE("working-set record and replay over a snapshot: same bytes, fewer faults", "[snapshot][backend][workingset]") {
  TempDir dir;
  const uint32_t chunk = 64 * kKiB;
  auto data = image(32 * kMiB, chunk, 33);
  std::string path = snapshot_of(dir, data, chunk);
  // The workload: a fixed pseudo-random tenth of the chunks, in a fixed order.
  std::vector<uint64_t> chunks(data.size() / chunk);
  std::iota(chunks.begin(), chunks.end(), 0);
  std::shuffle(chunks.begin(), chunks.end(), std::mt19937_64(5));
  chunks.resize(chunks.size() / 10);
  auto run = [&](const Region& r) {
    long bad = 0;
    for (uint64_t c : chunks) bad += first_mismatch(r.data() + c * chunk, data.data() + c * chunk, chunk) != -1;
    return bad;
  };
  Runtime rt;
  uint64_t recorded_faults;
  {
    RegionOptions rec;
    rec.record_touches = true;
    Region r = rt.map(open_zstd_snapshot(path), rec);
    REQUIRE(run(r) == 0);
    recorded_faults = r.stats().faults;
    REQUIRE(recorded_faults >= chunks.size());
    save_working_set(dir.file("ws"), WorkingSet{rec.fill_size, r.size(), r.touched_chunks()});
  }
  WorkingSet ws = load_working_set(dir.file("ws"));
  REQUIRE(ws.offsets.size() == chunks.size());
  RegionOptions o;
  o.readahead = false;
  SECTION("prefetched before the workload: no faults") {
    auto backend = open_zstd_snapshot(path);
    Region r = rt.map(backend, o);
    r.prefetch_chunks(ws.offsets);
    REQUIRE(wait_until([&] { return r.stats().prefetch_chunks == chunks.size() &&
                                    r.stats().pages_installed == chunks.size() * chunk / 4096; }));
    REQUIRE(run(r) == 0);
    CHECK(r.stats().faults == 0);
  }
  SECTION("racing the prefetch: fewer faults than recorded") {
    Region r = rt.map(open_zstd_snapshot(path), o);
    r.prefetch_chunks(ws.offsets);
    REQUIRE(run(r) == 0);
    CHECK(r.stats().faults < recorded_faults);
    CHECK(r.stats().errors == 0);
  }
}

TEST_CASE("demand reads are decompressed ahead of prefetch reads", "[snapshot][backend]") {
  TempDir dir;
  const uint32_t chunk = 64 * kKiB;
  // Compressible chunks: all sixteen frames fit in one merged read, so their
  // jobs reach the (single) worker together and only priority orders them.
  std::vector<std::byte> data(16 * chunk);
  for (size_t i = 0; i < data.size(); ++i) data[i] = std::byte(static_cast<uint8_t>('a' + i / 9 % 26 + i / chunk));
  ZstdSnapshotBackend b(snapshot_of(dir, data, chunk));
  std::vector<std::vector<std::byte>> bufs(16, std::vector<std::byte>(chunk));
  std::vector<ReadRequest> reqs;
  for (uint64_t c = 0; c < 16; ++c) reqs.push_back(ReadRequest{c * chunk, chunk, bufs[c].data(), c, c == 13});
  std::vector<uint64_t> order;
  auto done = serve(b, reqs, &order);
  REQUIRE(b.counters().io_reads == 1);
  REQUIRE(order.size() == 16);
  CHECK(order.front() == 13);
  for (uint64_t c = 0; c < 16; ++c) {
    REQUIRE(done.at(c).result == chunk);
    REQUIRE(std::memcmp(bufs[c].data(), data.data() + c * chunk, chunk) == 0);
  }
}

TEST_CASE("a background read raised by make_urgent is decompressed first", "[snapshot][backend][urgent]") {
  TempDir dir;
  const uint32_t chunk = 64 * kKiB;
  std::vector<std::byte> data(16 * chunk);
  for (size_t i = 0; i < data.size(); ++i) data[i] = std::byte(static_cast<uint8_t>('a' + i / 7 % 26 + i / chunk));
  ZstdSnapshotOptions so;
  so.workers = 1;
  ZstdSnapshotBackend b(snapshot_of(dir, data, chunk), so);
  std::vector<std::vector<std::byte>> bufs(16, std::vector<std::byte>(chunk));
  std::vector<ReadRequest> reqs;  // all read-ahead: in order, without the raise, 11 would come twelfth
  for (uint64_t c = 0; c < 16; ++c) reqs.push_back(ReadRequest{c * chunk, chunk, bufs[c].data(), c, false});
  std::vector<uint64_t> order;
  auto done = serve(b, reqs, &order, [&] { b.make_urgent(11); });
  REQUIRE(b.counters().io_reads == 1);  // one merged read: the jobs reach the worker together
  REQUIRE(order.size() == 16);
  CHECK(order.front() == 11);
  for (uint64_t c = 0; c < 16; ++c) {
    REQUIRE(done.at(c).result == chunk);
    REQUIRE(std::memcmp(bufs[c].data(), data.data() + c * chunk, chunk) == 0);
  }
}

TEST_CASE("a snapshot truncated after open gives SIGBUS for the chunks it lost", "[snapshot][backend][corrupt][fork]") {
  TempDir dir;
  const uint32_t chunk = 64 * kKiB;
  auto data = image(16 * chunk, chunk, 8);
  std::string path = snapshot_of(dir, data, chunk);
  auto f = read_bytes(path);
  auto five = entry_of(f, 5);
  REQUIRE_FALSE(five.zero());
  REQUIRE(run_in_child([&] {
            catch_fault_signals();
            auto backend = open_zstd_snapshot(path);
            check(truncate(path.c_str(), static_cast<off_t>(five.offset + five.length / 2)) == 0, "truncate");
            Runtime rt;
            RegionOptions o;
            o.readahead = false;
            Region r = rt.map(backend, o);
            std::byte v{};
            check(read_signal(r.data() + 5 * chunk + 77) == SIGBUS, "no SIGBUS in the cut chunk");
            check(read_signal(r.data() + 15 * chunk) == SIGBUS, "no SIGBUS in a chunk past the end");
            check(read_signal(r.data() + 4 * chunk + 9, &v) == 0 && v == data[4 * chunk + 9], "chunk before the cut");
            check(read_signal(r.data() + 7 * chunk, &v) == 0 && v == data[7 * chunk], "zero chunk needs no read");
            check(first_mismatch(r.data(), data.data(), 5 * chunk) == -1, "chunks before the cut");
            check(r.stats().errors == 2, "two errors");
            check(counters_of(backend).corrupt_chunks == 2, "two unreadable chunks counted");
          }) == 0);
}

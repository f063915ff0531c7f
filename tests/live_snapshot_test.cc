// SPDX-License-Identifier: Apache-2.0
// LiveSnapshotter (faultline/live_snapshot.h): point-in-time snapshots of
// memory that writer threads keep writing, incremental chains of them, and
// what restores them (SnapshotReader, a Region over ZstdSnapshotBackend,
// flatten_snapshot). Writers tag every write with its thread and sequence
// number; each image must be, for every page, exactly the state after one
// prefix of each writer's writes, a prefix that lies between the writes done
// before the snapshot began and those begun before its instant.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <random>
#include <thread>
#include <vector>

#include "faultline/faultline.h"
#include "faultline/live_snapshot.h"
#include "faultline/memory_backend.h"
#include "faultline/snapshot.h"
#include "faultline/zstd_snapshot_backend.h"
#include "run_cli.h"
#include "snapshot_test_util.h"
#include "test_util.h"

using namespace faultline;
using namespace faultline::test;
using Catch::Matchers::Contains;

namespace {

constexpr size_t kPage = 4096;

// Private anonymous memory the test owns (not a faultline Region).
struct AnonMemory {
  std::byte* p = nullptr;
  size_t len = 0;
  explicit AnonMemory(size_t n) : len(n) {
    void* m = ::mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw std::runtime_error("mmap failed");
    p = static_cast<std::byte*>(m);
  }
  ~AnonMemory() { ::munmap(p, len); }
};

// Writer threads. Thread t owns the pages p with p % threads == t among the
// first `hot_pages`, and writes (t + 1) << 40 | (k + 1) into the first word of
// a random one of them as its k-th write, logging which page.
class Writers {
 public:
  Writers(std::byte* base, size_t pages, unsigned threads, size_t hot_pages)
      : base_(base), pages_(pages), hot_(hot_pages), logs_(threads), started_(threads), done_(threads) {
    for (unsigned t = 0; t < threads; ++t) {
      logs_[t].reserve(1 << 20);
      threads_.emplace_back([this, t, threads] { run(t, threads); });
    }
  }
  ~Writers() { stop(); }
  void stop() {
    stop_.store(true);
    for (auto& th : threads_) th.join();
    threads_.clear();
  }
  // Per thread: writes finished / begun so far.
  std::vector<uint64_t> done() const {
    std::vector<uint64_t> v;
    for (auto& d : done_) v.push_back(d.value.load());
    return v;
  }
  std::vector<uint64_t> started() const {
    std::vector<uint64_t> v;
    for (auto& s : started_) v.push_back(s.value.load());
    return v;
  }
  const std::vector<uint32_t>& log(unsigned t) const { return logs_[t]; }
  unsigned threads() const { return static_cast<unsigned>(logs_.size()); }
  size_t pages() const { return pages_; }
  uint64_t writes() const {
    uint64_t n = 0;
    for (auto& d : done_) n += d.value.load();
    return n;
  }

 private:
  struct alignas(64) Counter {
    std::atomic<uint64_t> value{0};
  };
  void run(unsigned t, unsigned threads) {
    std::mt19937_64 rng(t * 7919 + 1);
    const size_t owned = (hot_ - t + threads - 1) / threads;
    // Until stopped, never done early: a test waiting for more writes would
    // wait forever. Paced (a short sleep every 256 writes) so the log stays
    // small however long a snapshot takes on a loaded machine.
    for (uint64_t k = 0; !stop_.load(std::memory_order_relaxed); ++k) {
      const uint32_t page = static_cast<uint32_t>((rng() % owned) * threads + t);
      logs_[t].push_back(page);
      started_[t].value.store(k + 1);
      auto* word = reinterpret_cast<uint64_t*>(base_ + size_t{page} * kPage);
      std::atomic_ref<uint64_t>(*word).store((uint64_t{t + 1} << 40) | (k + 1), std::memory_order_relaxed);
      done_[t].value.store(k + 1);
      if (k % 256 == 255) std::this_thread::sleep_for(std::chrono::microseconds(20));
    }
  }
  std::byte* base_;
  size_t pages_, hot_;
  std::vector<std::vector<uint32_t>> logs_;
  std::vector<Counter> started_, done_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

// The writes an instant may include: at least lo[t], at most hi[t] of thread t's.
struct Cut {
  std::vector<uint64_t> lo, hi;
};

// "" if `image` is, for every page, the state after one prefix k[t] of each
// writer's writes with lo[t] <= k[t] <= hi[t], over the initial contents
// `initial` (whose first word of each page is 0); else what is wrong.
std::string check_image(const std::byte* image, const std::vector<std::byte>& initial, const Writers& w, const Cut& cut) {
  const size_t pages = w.pages();
  for (size_t p = 0; p < pages; ++p)
    if (std::memcmp(image + p * kPage + 8, initial.data() + p * kPage + 8, kPage - 8) != 0)
      return "page " + std::to_string(p) + ": bytes 8..4095 are not the initial contents";
  for (unsigned t = 0; t < w.threads(); ++t) {
    const auto& log = w.log(t);
    // The write indices of each page, in order.
    std::vector<std::vector<uint64_t>> writes_of(pages);
    for (uint64_t k = 0; k < log.size(); ++k) writes_of[log[k]].push_back(k);
    uint64_t k_lo = cut.lo[t], k_hi = cut.hi[t];
    for (size_t p = t; p < pages; p += w.threads()) {
      uint64_t v;
      std::memcpy(&v, image + p * kPage, 8);
      const auto& ws = writes_of[p];
      if (v == 0) {  // no write yet: the cut is before the page's first write
        if (!ws.empty()) k_hi = std::min<uint64_t>(k_hi, ws[0]);
        continue;
      }
      if ((v >> 40) != t + 1) return "page " + std::to_string(p) + " holds a value of thread " + std::to_string((v >> 40) - 1);
      const uint64_t i = (v & ((uint64_t{1} << 40) - 1)) - 1;
      if (i >= log.size() || log[i] != p)
        return "page " + std::to_string(p) + " holds write " + std::to_string(i) + " of thread " + std::to_string(t) +
               ", which went elsewhere";
      k_lo = std::max(k_lo, i + 1);
      auto next = std::upper_bound(ws.begin(), ws.end(), i);
      if (next != ws.end()) k_hi = std::min(k_hi, *next);
    }
    if (k_lo > k_hi)
      return "thread " + std::to_string(t) + ": no single instant fits every page (the pages need at least " +
             std::to_string(k_lo) + " of its writes and at most " + std::to_string(k_hi) + "; done before the snapshot " +
             std::to_string(cut.lo[t]) + ", begun before its instant " + std::to_string(cut.hi[t]) + ")";
  }
  return "";
}

std::vector<std::byte> read_image(const std::string& path) {
  SnapshotReader r = SnapshotReader::open(path);
  std::vector<std::byte> out(r.info().size);
  for (uint64_t c = 0; c < r.info().chunk_count; ++c)
    r.read_chunk(c, {out.data() + c * r.info().chunk_size, r.chunk_length(c)});
  return out;
}

std::vector<std::byte> initial_contents(size_t len) {
  std::vector<std::byte> v = faultline::test::pattern(len, 5);
  for (size_t p = 0; p < len / kPage; ++p) std::memset(v.data() + p * kPage, 0, 8);
  return v;
}

// A snapshot*() call whose cut is recorded: lo before it, hi at its instant.
template <class Take>
Cut take_with_cut(Writers& w, Cut& at_instant, Take take) {
  Cut cut;
  cut.lo = w.done();
  take();
  cut.hi = at_instant.hi;
  return cut;
}

}  // namespace

TEST_CASE("a live snapshot holds every page as it was at the instant while writers keep writing", "[live]") {
  TempDir dir;
  const size_t len = 8 << 20;
  AnonMemory mem(len);
  const std::vector<std::byte> initial = initial_contents(len);
  std::memcpy(mem.p, initial.data(), len);
  for (bool track : {true, false}) {
    INFO("track_writes " << track);
    Writers w(mem.p, len / kPage, 3, len / kPage);
    Cut instant;
    LiveSnapshotOptions o;
    o.threads = 2;
    o.track_writes = track;
    o.at_instant = [&] { instant.hi = w.started(); };
    LiveSnapshotter snap(mem.p, len, o);
    while (w.writes() < 20000) std::this_thread::yield();
    const std::string path = dir.file(track ? "tracked.flsnap" : "untracked.flsnap");
    LiveSnapshotStats st;
    Cut cut = take_with_cut(w, instant, [&] { st = snap.snapshot(path); });
    w.stop();
    const uint64_t total_writes = w.writes();
    REQUIRE(st.stored_chunks == len / o.chunk_size);
    CHECK(st.inherited_chunks == 0);
    CHECK(st.held_writes > 0);
    CHECK(st.file_bytes == std::filesystem::file_size(path));
    // Writes went on during and after the snapshot.
    CHECK(total_writes > cut.hi[0] + cut.hi[1] + cut.hi[2]);

    const std::vector<std::byte> image = read_image(path);
    REQUIRE(image.size() == len);
    CHECK(check_image(image.data(), initial, w, cut) == "");
    // The same image, restored lazily through a Region.
    Runtime rt;
    Region r = rt.map(open_zstd_snapshot(path));
    REQUIRE(r.size() == len);
    CHECK(first_mismatch(r.data(), image.data(), len) == -1);
    // The live memory itself is whole: the last write of every page.
    CHECK(check_image(mem.p, initial, w, Cut{w.done(), w.done()}) == "");
    std::memcpy(mem.p, initial.data(), len);
  }
}

TEST_CASE("incremental live snapshots: each layer holds only written chunks, restores its instant lazily and flattened",
          "[live]") {
  TempDir dir;
  const size_t len = 16 << 20;  // 256 chunks of 64 KiB
  AnonMemory mem(len);
  const std::vector<std::byte> initial = initial_contents(len);
  std::memcpy(mem.p, initial.data(), len);
  const size_t hot_pages = len / kPage / 8;  // the writers touch the first eighth
  Writers w(mem.p, len / kPage, 3, hot_pages);
  Cut instant;
  LiveSnapshotOptions o;
  o.threads = 2;
  o.at_instant = [&] { instant.hi = w.started(); };
  LiveSnapshotter snap(mem.p, len, o);
  REQUIRE_THROWS_WITH(snap.snapshot_child(dir.file("orphan")), Contains("no parent"));

  std::vector<std::string> paths;
  std::vector<Cut> cuts;
  std::vector<LiveSnapshotStats> stats;
  for (int layer = 0; layer < 4; ++layer) {
    const uint64_t before = w.writes();
    while (w.writes() < before + 5000) std::this_thread::yield();
    paths.push_back(dir.file("layer" + std::to_string(layer) + ".flsnap"));
    LiveSnapshotStats st;
    cuts.push_back(take_with_cut(w, instant, [&] {
      st = layer == 0 ? snap.snapshot(paths.back()) : snap.snapshot_child(paths.back());
    }));
    stats.push_back(st);
    CHECK(snap.last_snapshot() == paths.back());
  }
  w.stop();

  const uint64_t chunks = len / o.chunk_size;
  const uint64_t hot_chunks = hot_pages * kPage / o.chunk_size;
  CHECK(stats[0].stored_chunks == chunks);
  for (int layer = 1; layer < 4; ++layer) {
    INFO("layer " << layer);
    CHECK(stats[layer].stored_chunks >= 1);
    CHECK(stats[layer].stored_chunks <= hot_chunks);
    CHECK(stats[layer].inherited_chunks == chunks - stats[layer].stored_chunks);
    CHECK(stats[layer].file_bytes < stats[0].file_bytes / 4);
  }
  Runtime rt;
  for (int layer = 0; layer < 4; ++layer) {
    INFO("layer " << layer);
    SnapshotReader reader = SnapshotReader::open(paths[layer]);
    CHECK(reader.layers().size() == static_cast<size_t>(layer + 1));
    CHECK(reader.info().layers == static_cast<uint32_t>(layer + 1));
    if (layer > 0) {
      CHECK(reader.layers()[0].info.parent == "layer" + std::to_string(layer - 1) + ".flsnap");
      CHECK(reader.layers()[0].info.parent_id == reader.layers()[1].info.id);
    }
    const std::vector<std::byte> image = read_image(paths[layer]);
    CHECK(check_image(image.data(), initial, w, cuts[layer]) == "");
    // Lazily, through a Region over the chain.
    auto backend = open_zstd_snapshot(paths[layer]);
    Region r = rt.map(backend);
    REQUIRE(r.size() == len);
    CHECK(first_mismatch(r.data(), image.data(), len) == -1);
  }
  // Working-set prefetch and drain over the chain: every page arrives
  // without a demand fault, from the right layer.
  {
    const std::vector<std::byte> want = read_image(paths[3]);
    RegionOptions ro;
    ro.readahead = false;
    Region r = rt.map(open_zstd_snapshot(paths[3]), ro);
    std::vector<uint64_t> hot;
    for (uint64_t c = 0; c < hot_chunks; ++c) hot.push_back(c * o.chunk_size);
    r.prefetch_chunks(hot);
    r.drain();
    REQUIRE(wait_until([&] { return r.stats().pages_installed == len / kPage; }));
    CHECK(r.stats().faults == 0);
    CHECK(first_mismatch(r.data(), want.data(), len) == -1);
  }
  // Flattened: one self-contained file with the newest image.
  const std::string flat = dir.file("flat.flsnap");
  flatten_snapshot(paths[3], flat);
  SnapshotReader f = SnapshotReader::open(flat);
  CHECK(f.info().version == 1);
  CHECK(f.info().parent.empty());
  CHECK(f.layers().size() == 1);
  const std::vector<std::byte> flat_image = read_image(flat);
  CHECK(check_image(flat_image.data(), initial, w, cuts[3]) == "");
  CHECK(flat_image == read_image(paths[3]));
}

TEST_CASE("a missing, replaced or corrupt parent is reported by open, restore and verify", "[live]") {
  TempDir dir;
  const size_t len = 2 << 20;
  AnonMemory mem(len);
  std::vector<std::byte> initial = initial_contents(len);
  std::memcpy(mem.p, initial.data(), len);
  LiveSnapshotter snap(mem.p, len);
  const std::string base = dir.file("base.flsnap"), child = dir.file("child.flsnap");
  snap.snapshot(base);
  mem.p[5 * 65536 + 100] = std::byte{42};
  LiveSnapshotStats st = snap.snapshot_child(child);
  CHECK(st.stored_chunks == 1);
  CHECK(SnapshotReader::open(child).layers().size() == 2);
  const auto base_bytes = faultline::test::read_bytes(base);

  SECTION("missing") {
    std::filesystem::remove(base);
    REQUIRE_THROWS_WITH(SnapshotReader::open(child),
                        Contains("snapshot " + child + ": its parent " + base + " is missing") && Contains("No such file"));
    REQUIRE_THROWS_WITH(open_zstd_snapshot(child), Contains("its parent " + base + " is missing"));
    // The layer alone still opens (verify checks each layer so).
    CHECK(SnapshotReader::open_layer(child).info().inherited_chunks == 31);
  }
  SECTION("replaced by another valid snapshot") {
    std::vector<std::byte> other(len, std::byte{1});
    write_snapshot(other, base);
    REQUIRE_THROWS_WITH(SnapshotReader::open(child), Contains("its parent " + base + " is the wrong file"));
    REQUIRE_THROWS_WITH(open_zstd_snapshot(child), Contains("is the wrong file"));
  }
  SECTION("a corrupt chunk in the parent: the restore gets SIGBUS there, not wrong bytes") {
    auto bytes = base_bytes;
    auto e = faultline::test::entry_of(bytes, 0);
    bytes[e.offset + e.length / 2] ^= 0xff;
    faultline::test::write_bytes(base, bytes);
    SnapshotReader r = SnapshotReader::open(child);  // the index is intact
    std::vector<std::byte> buf(65536);
    REQUIRE_THROWS_WITH(r.read_chunk(0, buf), Contains(base) && Contains("chunk 0"));
    r.read_chunk(5, buf);  // the child's own chunk
    CHECK(buf[100] == std::byte{42});
  }
  SECTION("format version 2 fields are checked") {
    auto c = faultline::test::read_bytes(child);
    auto bad = c;
    patch_header(bad, [](auto& h) { h.parent_path_length = 0; });
    faultline::test::write_bytes(child, bad);
    REQUIRE_THROWS_WITH(SnapshotReader::open(child), Contains("parent_path_length = 0: must be 1..4096"));
    bad = c;
    patch_header(bad, [](auto& h) { h.flags = 0; });
    faultline::test::write_bytes(child, bad);
    REQUIRE_THROWS_WITH(SnapshotReader::open(child), Contains("must be 0 without the parent flag"));
    bad = base_bytes;  // version 1: nothing may be inherited
    patch_entry(bad, 3, [](auto& e) { e = detail::ChunkEntry{detail::kInheritedOffset, 0, 0}; });
    faultline::test::write_bytes(base, bad);
    REQUIRE_THROWS_WITH(SnapshotReader::open(base), Contains("chunks[3]: inherited from a parent") &&
                                                        Contains("the file has no parent"));
  }
  SECTION("a corrupt parent header") {
    auto bytes = base_bytes;
    bytes[30] ^= 1;
    faultline::test::write_bytes(base, bytes);
    REQUIRE_THROWS_WITH(SnapshotReader::open(child), Contains("its parent " + base) && Contains("header_checksum"));
  }
}

TEST_CASE("a faultline Region cannot be live-snapshotted: a clear error", "[live]") {
  Runtime rt;
  Region r = rt.map(std::make_shared<MemoryBackend>(std::vector<std::byte>(1 << 20, std::byte{3})));
  REQUIRE_THROWS_WITH(LiveSnapshotter(r.data(), r.size()), Contains("already registered with another userfaultfd"));
  AnonMemory mem(1 << 20);
  REQUIRE_THROWS_WITH(LiveSnapshotter(mem.p + 1, 4096), Contains("page-aligned"));
  LiveSnapshotOptions o;
  o.chunk_size = 3000;
  REQUIRE_THROWS_WITH(LiveSnapshotter(mem.p, mem.len, o), Contains("chunk_size = 3000"));
  o = LiveSnapshotOptions{};
  o.compress_nice = 20;
  REQUIRE_THROWS_WITH(LiveSnapshotter(mem.p, mem.len, o), Contains("compress_nice = 20: must be 0 .. 19"));
  o = LiveSnapshotOptions{};
  o.track_writes = false;
  TempDir dir;
  {
    LiveSnapshotter s(mem.p, mem.len, o);
    s.snapshot(dir.file("a"));
    REQUIRE_THROWS_WITH(s.snapshot_child(dir.file("b")), Contains("track_writes"));
    // One snapshotter per range.
    REQUIRE_THROWS_WITH(LiveSnapshotter(mem.p, mem.len), Contains("another live snapshotter"));
  }
  // A failed snapshot leaves nothing, and the next child has no parent.
  LiveSnapshotter t(mem.p, mem.len);
  t.snapshot(dir.file("c"));
  REQUIRE_THROWS_WITH(t.snapshot(dir.file("missing/d")), Contains(dir.file("missing/d")));
  REQUIRE_THROWS_WITH(t.snapshot_child(dir.file("e")), Contains("no parent"));
  mem.p[0] = std::byte{7};  // (a write after a failure is let through)
  t.snapshot(dir.file("f"));
  mem.p[70000] = std::byte{8};
  CHECK(t.snapshot_child(dir.file("g")).stored_chunks == 1);
  CHECK(read_image(dir.file("g")) == std::vector<std::byte>(mem.p, mem.p + mem.len));
}

TEST_CASE("a live snapshot killed at any point leaves no valid file and never damages its parent", "[live][fork]") {
  TempDir dir;
  const std::string base = dir.file("base.flsnap"), out = dir.file("out.flsnap");
  const size_t len = 32 << 20;
  // Each round: a child process takes a full snapshot (the parent layer),
  // then writes children of it to `out` (incompressible data: slow enough to
  // be killed in the middle) until it is killed, at a different moment each
  // round.
  int complete = 0, killed_before = 0, leftovers = 0, whole_leftovers = 0;
  for (int round = 0; round < 12; ++round) {
    std::filesystem::remove(out);
    std::filesystem::remove(base);
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      try {
        AnonMemory mem(len);
        std::mt19937_64 rng(round);
        auto* words = reinterpret_cast<uint64_t*>(mem.p);
        for (size_t i = 0; i < len / 8; ++i) words[i] = rng();
        LiveSnapshotOptions o;
        o.threads = 1;
        o.level = 1;
        LiveSnapshotter snap(mem.p, len, o);
        snap.snapshot(base);
        for (bool first = true;; first = false) {
          // One page in 8 (every chunk) written: each child holds them all.
          for (size_t i = 0; i < len / 8; i += 4096) words[i] = rng();
          if (first) ::close(::creat(dir.file("go").c_str(), 0644));  // tell the parent
          snap.snapshot_child(out);
          std::filesystem::remove(out);
        }
      } catch (...) {
        _exit(3);
      }
    }
    // Wait for the parent layer, then kill at a varying moment of a child write.
    bool started = wait_until([&] { return std::filesystem::exists(dir.file("go")); }, 60000);
    if (started) std::this_thread::sleep_for(std::chrono::microseconds(300 + 4700 * round));
    ::kill(pid, SIGKILL);
    int status = 0;
    ::waitpid(pid, &status, 0);
    std::filesystem::remove(dir.file("go"));
    REQUIRE(started);
    REQUIRE(WIFSIGNALED(status));
    // The parent is whole.
    {
      SnapshotReader b = SnapshotReader::open(base);
      std::vector<std::byte> buf(b.info().chunk_size);
      for (uint64_t c = 0; c < b.info().chunk_count; ++c) b.read_chunk(c, buf);
    }
    // `out` exists only if it was complete, and then it verifies.
    if (std::filesystem::exists(out)) {
      ++complete;
      SnapshotReader r = SnapshotReader::open(out);
      std::vector<std::byte> buf(r.info().chunk_size);
      for (uint64_t c = 0; c < r.info().chunk_count; ++c) r.read_chunk(c, buf);
    } else {
      ++killed_before;
    }
    // A leftover temporary file is refused, unless it was killed between
    // its header (written last) and the rename: then it is whole. Never a
    // part of one that passes.
    for (auto& e : std::filesystem::directory_iterator(dir.path)) {
      const std::string name = e.path().string();
      if (name == base || name == out) continue;
      INFO(name);
      ++leftovers;
      std::string problem;
      try {
        SnapshotReader r = SnapshotReader::open(name);
        std::vector<std::byte> buf(r.info().chunk_size);
        for (uint64_t c = 0; c < r.info().chunk_count; ++c) r.read_chunk(c, buf);
        ++whole_leftovers;
      } catch (const Error& err) {
        problem = err.what();
      }
      // A partial file fails at its header (still zeros) before anything else.
      if (!problem.empty()) CHECK_THAT(problem, Contains("magic") || Contains("truncated"));
      std::filesystem::remove(name);
    }
  }
  // Most rounds were killed in the middle of a child write.
  CHECK(killed_before > 0);
  CHECK(leftovers > whole_leftovers);
  WARN("rounds: " << complete << " with a complete child, " << killed_before << " killed before; " << leftovers
                  << " temporary files left, " << whole_leftovers << " of them whole");
}

#ifdef FAULTLINE_CLI_PATH
TEST_CASE("faultline snapshot inspect, verify and flatten on a chain of live snapshots", "[live][cli]") {
  TempDir dir;
  const size_t len = 4 << 20;  // 64 chunks
  AnonMemory mem(len);
  const std::vector<std::byte> initial = initial_contents(len);
  std::memcpy(mem.p, initial.data(), len);
  LiveSnapshotter snap(mem.p, len);
  const std::string a = dir.file("a.flsnap"), b = dir.file("b.flsnap"), c = dir.file("c.flsnap");
  snap.snapshot(a);
  mem.p[3 * 65536] = std::byte{1};
  snap.snapshot_child(b);
  mem.p[7 * 65536] = std::byte{2};
  mem.p[8 * 65536] = std::byte{3};
  snap.snapshot_child(c);
  const std::string ids[3] = {SnapshotReader::open_layer(c).info().id, SnapshotReader::open_layer(b).info().id,
                              SnapshotReader::open_layer(a).info().id};

  auto [rc, out] = run_cli("snapshot inspect " + c);
  CHECK(rc == 0);
  CHECK_THAT(out, Contains("format version:    2") && Contains("layers:            3 (newest first)"));
  CHECK_THAT(out, Contains("layer 0: " + c + "  id " + ids[0].substr(0, 16)) &&
                      Contains("2 chunks stored, 62 from its parent") && Contains("parent b.flsnap"));
  CHECK_THAT(out, Contains("layer 1: " + b) && Contains("1 chunks stored, 63 from its parent") &&
                      Contains("parent a.flsnap"));
  CHECK_THAT(out, Contains("layer 2: " + a) && Contains("64 chunks stored, 0 from its parent"));

  std::tie(rc, out) = run_cli("snapshot verify " + c);
  CHECK(rc == 0);
  CHECK_THAT(out, Contains(c + ": ok: 2 chunks") && Contains("62 more from its parent b.flsnap") &&
                      Contains(a + ": ok: 64 chunks") && Contains("a chain of 3 layers"));

  const std::string flat = dir.file("flat.flsnap");
  std::tie(rc, out) = run_cli("snapshot flatten " + c + " " + flat + " --threads 2");
  CHECK(rc == 0);
  CHECK_THAT(out, Contains(flat) && Contains("self-contained"));
  std::vector<std::byte> want(mem.p, mem.p + len);
  CHECK(read_image(flat) == want);
  std::tie(rc, out) = run_cli("snapshot inspect " + flat);
  CHECK_THAT(out, Contains("format version:    1") && !Contains("layers:"));

  std::tie(rc, out) = run_cli("snapshot flatten --help");
  CHECK(rc == 0);
  CHECK_THAT(out, Contains("self-contained") && Contains("CHAIN") && Contains("OUTPUT"));
  std::tie(rc, out) = run_cli("snapshot --help");
  CHECK_THAT(out, Contains("flatten"));

  // A corrupt chunk in the middle layer fails verify naming that layer.
  auto bytes = read_bytes(b);
  auto e = entry_of(bytes, 3);
  bytes[e.offset + 1] ^= 0x55;
  write_bytes(b, bytes);
  std::tie(rc, out) = run_cli("snapshot verify " + c);
  CHECK(rc == 1);
  CHECK_THAT(out, Contains(b) && Contains("chunk 3") && Contains("FAILED: 1 of 64 chunks bad"));
  std::tie(rc, out) = run_cli("snapshot flatten " + c + " " + dir.file("x"));
  CHECK(rc == 1);
  CHECK_THAT(out, Contains(b) && Contains("chunk 3"));
  CHECK(!std::filesystem::exists(dir.file("x")));

  // A missing parent: verify, inspect and flatten name it.
  std::filesystem::remove(a);
  for (const char* cmd : {"verify", "inspect"}) {
    std::tie(rc, out) = run_cli(std::string("snapshot ") + cmd + " " + c);
    INFO(cmd);
    CHECK(rc == 1);
    CHECK_THAT(out, Contains("snapshot " + b + ": its parent " + a + " is missing"));
  }
  // A wrong parent: another valid snapshot under its name.
  write_snapshot(std::vector<std::byte>(len, std::byte{9}), a);
  std::tie(rc, out) = run_cli("snapshot verify " + c);
  CHECK(rc == 1);
  CHECK_THAT(out, Contains("its parent " + a + " is the wrong file") && Contains(ids[2]));
}
#endif  // FAULTLINE_CLI_PATH

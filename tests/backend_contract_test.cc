// SPDX-License-Identifier: Apache-2.0
// The Backend contract (runtime/include/faultline/backend.h), checked on
// every backend of the library. Each is driven directly through the Backend
// interface, the way the fault loop drives it, without a runtime: staging
// memory attached first, an edge-triggered epoll set on completion_fd() that
// is never read, batches within queue_depth(), reap() right after every
// submit() and after every edge, in slices, until a reap returns fewer than
// it asked for.
//
// Adding a backend: write a kind below (a struct whose static open() returns
// the backend over the given bytes, with whatever it needs kept alive) and
// add it to CONTRACT_BACKENDS. If it can be made to fail reads for real, add
// a failing kind to FAILING_BACKENDS too. See docs/writing-a-backend.md.
#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "backend_test_util.h"
#include "faultline/backend.h"
#include "faultline/file_backend.h"
#include "faultline/http_backend.h"
#include "faultline/memory_backend.h"
#include "faultline/page_server.h"
#include "faultline/remote_backend.h"
#include "faultline/snapshot.h"
#include "faultline/zstd_snapshot_backend.h"
#include "nginx_fixture.h"
#include "snapshot_test_util.h"
#include "test_util.h"

using namespace faultline;
using faultline::test::Poller;
using faultline::test::Staging;
namespace t = faultline::test;

namespace {

using Bytes = std::vector<std::byte>;
using Engine = FileBackendOptions::Engine;

constexpr uint32_t kPiece = 16 * 1024;  // the image's pieces; the snapshot's chunk size
// Not a multiple of 4096: with O_DIRECT the last block is partial.
constexpr size_t kImageSize = (2u << 20) + 3 * 4096 + 1234;
constexpr uint32_t kMaxRead = 2u << 20;  // the runtime's longest read (the largest fill_size)
constexpr uint32_t kQueueDepth = 16;
// Generous: sanitizers and a loaded machine. No timing is asserted; these
// only turn a lost completion into a failure instead of a hang.
constexpr int kEdgeWaitMs = 20000;
constexpr auto kRunDeadline = std::chrono::seconds(120);
constexpr std::byte kCanary{0xEE};
constexpr uint64_t kTagBase = 1000;

// Bytes in kPiece pieces, in turn random, zero and text-like (compressible),
// so a snapshot mixes stored, compressed and zero chunks.
const Bytes& image() {
  static const Bytes bytes = [] {
    Bytes v(kImageSize);
    for (size_t at = 0, k = 0; at < v.size(); at += kPiece, ++k) {
      size_t end = std::min<size_t>(at + kPiece, v.size());
      for (size_t i = at; i < end; ++i) {
        if (k % 3 == 0) v[i] = t::pattern_byte(i, 5);
        if (k % 3 == 2) v[i] = std::byte(static_cast<uint8_t>('a' + (i / 7) % 26));
      }
    }
    return v;
  }();
  return bytes;
}

// A backend under test, after what it needs alive (its file, its server),
// so that it goes first.
struct Subject {
  std::shared_ptr<void> keep;
  std::shared_ptr<Backend> backend;
};

// ---- The kinds of backend -------------------------------------------------------

struct Memory {
  static Subject open(const Bytes& bytes) { return {nullptr, std::make_shared<MemoryBackend>(bytes)}; }
};

template <Engine kEngine, bool kDirect, bool kWritable = false>
struct File {
  static Subject open(const Bytes& bytes) {
    auto file = std::make_shared<t::TempFile>(bytes);
    FileBackendOptions o;
    o.engine = kEngine;
    o.direct = kDirect;
    o.writable = kWritable;
    o.queue_depth = kQueueDepth;
    o.pread_threads = 3;
    return {file, std::make_shared<FileBackend>(file->path(), o)};
  }
};
using FileIoUring = File<Engine::kIoUring, false>;
using FilePread = File<Engine::kPread, false>;
using FileDirectIoUring = File<Engine::kIoUring, true>;
using FileDirectPread = File<Engine::kPread, true>;
using FileReadWrite = File<Engine::kIoUring, false, true>;

std::string write_test_snapshot(const t::TempDir& dir, const Bytes& bytes) {
  SnapshotWriteOptions w;
  w.chunk_size = kPiece;
  w.threads = 1;
  write_snapshot(bytes, dir.file("snap"), w);
  return dir.file("snap");
}

ZstdSnapshotOptions zstd_options() {
  ZstdSnapshotOptions o;
  o.queue_depth = kQueueDepth;
  o.workers = 2;
  return o;
}

struct Zstd {
  static Subject open(const Bytes& bytes) {
    auto dir = std::make_shared<t::TempDir>();
    return {dir, open_zstd_snapshot(write_test_snapshot(*dir, bytes), zstd_options())};
  }
};

// What a remote backend needs alive: a PageServer and what its source needs.
struct RemoteKeep {
  std::shared_ptr<void> source;
  std::shared_ptr<PageServer> server;  // stopped before its source goes
};

// A PageServer serving `source` on loopback, and the client backend.
Subject remote_over(std::shared_ptr<Backend> source, std::shared_ptr<void> keep_source,
                    std::chrono::milliseconds deadline = std::chrono::milliseconds(10000)) {
  PageServerOptions so;
  so.listen = {"127.0.0.1:0"};
  auto server = std::make_shared<PageServer>(std::move(source), so);
  RemoteOptions ro;
  ro.address = server->endpoints().at(0);
  ro.queue_depth = kQueueDepth;
  ro.deadline = deadline;
  auto backend = connect_remote(ro);
  return {std::make_shared<RemoteKeep>(RemoteKeep{std::move(keep_source), std::move(server)}), std::move(backend)};
}

struct Remote {
  static Subject open(const Bytes& bytes) { return remote_over(std::make_shared<MemoryBackend>(bytes), nullptr); }
};

struct RemoteSmall {
  static Subject open(const Bytes& bytes) {
    PageServerOptions so;
    so.listen = {"127.0.0.1:0"};
    so.max_request_bytes = 64 * 1024;
    auto server = std::make_shared<PageServer>(std::make_shared<MemoryBackend>(bytes), so);
    RemoteOptions ro;
    ro.address = server->endpoints().at(0);
    ro.queue_depth = kQueueDepth;
    return {std::make_shared<RemoteKeep>(RemoteKeep{nullptr, server}), connect_remote(ro)};
  }
};

// An HttpBackend over a real nginx on loopback serving the bytes as a file
// (tests/nginx_fixture.h), over http or https; small ranges and few
// connections, so reads are merged, pipelined and queued.
template <bool kTls>
struct Http {
  static Subject open(const Bytes& bytes, std::chrono::milliseconds deadline = std::chrono::milliseconds(10000)) {
    auto server = std::make_shared<t::Nginx>(kTls);
    std::ofstream(server->root() + "/image", std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    HttpOptions o;
    o.url = server->url("image");
    o.ca_file = server->ca_file();
    o.queue_depth = kQueueDepth;
    o.connections = 2;
    o.requests_per_connection = 3;
    o.max_request_bytes = 256 * 1024;
    o.deadline = deadline;
    o.log = [](LogLevel, std::string_view) {};
    return {server, std::make_shared<HttpBackend>(o)};
  }
};
using HttpPlain = Http<false>;
using HttpTls = Http<true>;

// A zstd snapshot read through an HttpBackend (its index and chunks).
struct ZstdOverHttp {
  static Subject open(const Bytes& bytes) {
    auto dir = std::make_shared<t::TempDir>();
    auto snap = t::read_bytes(write_test_snapshot(*dir, bytes));
    Bytes file(snap.size());
    std::memcpy(file.data(), snap.data(), snap.size());
    Subject http = HttpPlain::open(file);
    return {http.keep, open_zstd_snapshot(http.backend, zstd_options())};
  }
};

#define CONTRACT_BACKENDS                                                                                       \
  Memory, FileIoUring, FilePread, FileDirectIoUring, FileDirectPread, FileReadWrite, Zstd, Remote, RemoteSmall, \
      HttpPlain, HttpTls, ZstdOverHttp

// A backend set up so that reads overlapping [offset, offset + length)
// fail, with -err, and the rest succeed.
struct Failing {
  Subject subject;
  uint64_t offset = 0;
  uint64_t length = 0;
  int err = 0;
};

constexpr uint64_t kBadChunk = 5;  // holds text-like data (5 % 3 == 2), so it is stored

// A snapshot whose chunk kBadChunk fails its checksum.
std::string corrupt_snapshot(const t::TempDir& dir, const Bytes& bytes) {
  std::string path = write_test_snapshot(dir, bytes);
  auto f = t::read_bytes(path);
  t::patch_entry(f, kBadChunk, [](detail::ChunkEntry& e) { e.checksum ^= 1; });
  t::write_bytes(path, f);
  return path;
}

struct ZstdCorruptChunk {
  static Failing open(const Bytes& bytes) {
    auto dir = std::make_shared<t::TempDir>();
    return {{dir, open_zstd_snapshot(corrupt_snapshot(*dir, bytes), zstd_options())},
            kBadChunk * kPiece,
            kPiece,
            EBADMSG};
  }
};

// The server's own source fails (a corrupt snapshot chunk): the client gets -EIO.
struct RemoteSourceError {
  static Failing open(const Bytes& bytes) {
    auto dir = std::make_shared<t::TempDir>();
    auto source = open_zstd_snapshot(corrupt_snapshot(*dir, bytes), zstd_options());
    return {remote_over(source, dir), kBadChunk * kPiece, kPiece, EIO};
  }
};

// The server is gone: every read fails with -ETIMEDOUT once its deadline passes.
struct RemoteServerGone {
  static Failing open(const Bytes& bytes) {
    Subject s = remote_over(std::make_shared<MemoryBackend>(bytes), nullptr, std::chrono::milliseconds(1000));
    // Stopped (and kept, stopped): the client sees its connection close and
    // its attempts to reconnect refused.
    static_cast<RemoteKeep*>(s.keep.get())->server->stop();
    return {std::move(s), 0, bytes.size(), ETIMEDOUT};
  }
};

// nginx is killed: every read fails with -ETIMEDOUT once its deadline passes.
struct HttpServerGone {
  static Failing open(const Bytes& bytes) {
    Subject s = HttpPlain::open(bytes, std::chrono::milliseconds(1000));
    static_cast<t::Nginx*>(s.keep.get())->kill();
    return {std::move(s), 0, bytes.size(), ETIMEDOUT};
  }
};

#define FAILING_BACKENDS ZstdCorruptChunk, RemoteSourceError, RemoteServerGone, HttpServerGone

// ---- Driving a backend ----------------------------------------------------------

struct Read {
  uint64_t offset = 0;
  uint32_t length = 0;
  bool urgent = false;
  uint32_t skew = 0;  // dest lies this far past the start of its slot
};

// Staging memory of one slot per read in flight: each slot holds the longest
// read plus room for a skewed dest, and starts at a multiple of alignment().
class Slots {
 public:
  Slots(uint32_t count, uint32_t alignment)
      : align_(std::max<uint32_t>(alignment, 4096)),
        slot_(round_up(kMaxRead + align_, align_)),
        memory_(size_t{count} * slot_ + align_) {
    auto base = reinterpret_cast<uintptr_t>(memory_.data());
    base_ = memory_.data() + (round_up(base, align_) - base);
    for (uint32_t i = count; i > 0; --i) free_.push_back(i - 1);
  }
  std::span<std::byte> span() const { return memory_.span(); }
  uint32_t take() {
    uint32_t s = free_.back();
    free_.pop_back();
    return s;
  }
  void give(uint32_t slot) { free_.push_back(slot); }
  std::byte* at(uint32_t slot) const { return base_ + size_t{slot} * slot_; }

  static uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

 private:
  uint32_t align_;
  size_t slot_;
  Staging memory_;
  std::byte* base_ = nullptr;
  std::vector<uint32_t> free_;
};

struct RunOptions {
  size_t slice = 64;      // completions per reap()
  size_t max_batch = 8;   // reads per submit()
  // Wait until every read of a batch is back before the next submit(), so
  // the backend goes idle between batches and every completion after the
  // first short reap needs a new edge.
  bool drain_each_batch = false;
};

// Called once per completion, as it is reaped (ReadCompletion::data is
// valid only until the next reap()), with the read and where its dest was.
using Check = std::function<void(const Read&, const ReadCompletion&, const std::byte* dest)>;

// Runs `reads` through `b` as the fault loop does and checks the contract's
// delivery promises: every submitted tag comes back exactly once, no unknown
// tag, never more than queue_depth() in flight, submit() does not throw, a
// backend without completion_fd() completes everything inside submit(), and
// after a short reap an edge comes for whatever is still outstanding.
void run(Backend& b, Slots& slots, const std::vector<Read>& reads, const RunOptions& o, const Check& check) {
  Poller poller(b.completion_fd());
  const uint32_t depth = b.queue_depth();
  std::vector<int> seen(reads.size(), 0);
  std::vector<uint32_t> slot_of(reads.size());
  std::vector<ReadCompletion> out(o.slice);
  size_t next = 0, done = 0, in_flight = 0;
  auto dest_of = [&](size_t i) { return slots.at(slot_of[i]) + reads[i].skew; };
  auto reap_until_short = [&] {
    for (;;) {
      size_t n = b.reap(out);
      REQUIRE(n <= out.size());
      for (size_t k = 0; k < n; ++k) {
        const ReadCompletion& c = out[k];
        INFO("tag " << c.tag << " after " << next << " reads submitted");
        REQUIRE(c.tag >= kTagBase);
        REQUIRE(c.tag - kTagBase < next);  // a tag that was submitted
        size_t i = c.tag - kTagBase;
        REQUIRE(seen[i] == 0);  // exactly once
        seen[i] = 1;
        check(reads[i], c, dest_of(i));
        slots.give(slot_of[i]);
        --in_flight;
        ++done;
      }
      if (n < out.size()) return;
    }
  };
  const auto deadline = std::chrono::steady_clock::now() + kRunDeadline;
  std::vector<ReadRequest> batch;
  while (done < reads.size()) {
    batch.clear();
    size_t room = o.drain_each_batch && in_flight > 0 ? 0 : depth - in_flight;
    while (next < reads.size() && batch.size() < std::min(room, o.max_batch)) {
      const Read& r = reads[next];
      slot_of[next] = slots.take();
      std::byte* dest = dest_of(next);
      std::memset(dest, static_cast<int>(kCanary), r.length);
      batch.push_back(ReadRequest{r.offset, r.length, dest, kTagBase + next, r.urgent});
      ++next;
    }
    if (!batch.empty()) {
      in_flight += batch.size();
      REQUIRE(in_flight <= depth);
      REQUIRE_NOTHROW(b.submit(batch));
      reap_until_short();  // the runtime reaps right after submit()
      if (b.completion_fd() < 0) {
        INFO("completion_fd() is -1, so every read must complete inside submit()");
        REQUIRE(in_flight == 0);
      }
      continue;
    }
    INFO(in_flight << " reads outstanding after a short reap; no edge within " << kEdgeWaitMs << " ms");
    REQUIRE(poller.wait(kEdgeWaitMs));
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    reap_until_short();
  }
  ReadCompletion extra[4];
  REQUIRE(b.reap(extra) == 0);  // nothing more comes back
}

bool untouched(const std::byte* p, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (p[i] != kCanary) return false;
  return true;
}

// The read got min(length, size - offset) bytes, equal to the object's:
// in dest, or at `data` (dest untouched), or known zero (dest untouched).
void check_bytes(const Bytes& object, const Read& r, const ReadCompletion& c, const std::byte* dest) {
  INFO("read at " << r.offset << " of " << r.length << " bytes: result " << c.result << (c.zero ? ", zero" : "")
                  << (c.data ? ", data" : ""));
  const uint64_t want = std::min<uint64_t>(r.length, object.size() - r.offset);
  REQUIRE(c.result == static_cast<int64_t>(want));
  const std::byte* expect = object.data() + r.offset;
  if (c.zero) {
    REQUIRE(std::all_of(expect, expect + want, [](std::byte x) { return x == std::byte{0}; }));
    REQUIRE(untouched(dest, r.length));
  } else if (c.data) {
    REQUIRE(t::first_mismatch(c.data, expect, want) == -1);
    REQUIRE(untouched(dest, r.length));
  } else {
    REQUIRE(t::first_mismatch(dest, expect, want) == -1);
  }
}

// A backend opened for a test: staging attached before the first submit(),
// as the runtime does.
template <typename Kind>
struct Open {
  Subject subject = Kind::open(image());
  Backend& b = *subject.backend;
  Slots slots{b.queue_depth(), b.alignment()};
  Open() { b.attach_staging(slots.span()); }
};

// Random reads of every shape the contract allows: offsets and lengths
// multiples of alignment() (any byte when it is 1, dest skewed too), some
// as long as the runtime's longest, some running past the end, some exactly
// one zero piece.
std::vector<Read> random_reads(uint64_t size, uint32_t a, size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const uint64_t blocks = (size + a - 1) / a;
  std::vector<Read> reads;
  for (size_t i = 0; i < n; ++i) {
    Read r;
    uint32_t longest = i % 10 == 0 ? kMaxRead : 256 * 1024;
    r.offset = (rng() % blocks) * a;
    r.length = a * static_cast<uint32_t>(1 + rng() % (longest / a));
    if (i % 7 == 3) {  // one zero piece
      uint64_t piece = (rng() % (size / kPiece / 3)) * 3 + 1;
      r.offset = piece * kPiece;
      r.length = kPiece;
    }
    if (i % 11 == 5) {  // near the end, past it
      r.offset = (blocks - 1 - rng() % 3) * a;
      r.length = a * static_cast<uint32_t>(1 + rng() % 8);
    }
    r.urgent = rng() % 3 == 0;
    r.skew = a == 1 ? static_cast<uint32_t>(rng() % 64) : 0;
    reads.push_back(r);
  }
  return reads;
}

// Calls the const methods the contract lets any thread call, on a thread
// of its own, while the test drives reads; counts changed answers.
class Watcher {
 public:
  explicit Watcher(const Backend& b)
      : b_(b), size_(b.size()), name_(b.name()), alignment_(b.alignment()), depth_(b.queue_depth()),
        thread_([this] { watch(); }) {}
  ~Watcher() { stop(); }
  // Stops the thread; how many answers differed from the first.
  int stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    return changed_;
  }

 private:
  void watch() {
    while (!stop_) {
      if (b_.size() != size_ || b_.name() != name_ || b_.alignment() != alignment_ || b_.queue_depth() != depth_)
        ++changed_;
      std::this_thread::yield();
    }
  }
  const Backend& b_;
  const uint64_t size_;
  const std::string name_;
  const uint32_t alignment_, depth_;
  std::atomic<bool> stop_{false};
  std::atomic<int> changed_{0};
  std::thread thread_;
};

}  // namespace

TEMPLATE_TEST_CASE("Backend contract: size, name, queue depth and alignment", "[contract]", CONTRACT_BACKENDS) {
  Open<TestType> o;
  CHECK(o.b.size() == image().size());
  CHECK_FALSE(o.b.name().empty());
  CHECK(o.b.queue_depth() >= 1);
  const uint32_t a = o.b.alignment();
  CHECK(a >= 1);
  CHECK((a & (a - 1)) == 0);  // a power of two
  CHECK(o.b.completion_fd() == o.b.completion_fd());
}

TEMPLATE_TEST_CASE("Backend contract: every read completes exactly once with the object's bytes", "[contract]",
                   CONTRACT_BACKENDS) {
  const size_t slice = GENERATE(1, 3, 64);
  INFO("reaping " << slice << " at a time");
  Open<TestType> o;
  Watcher watcher(o.b);
  auto reads = random_reads(o.b.size(), o.b.alignment(), 240, 11 + slice);
  RunOptions ro;
  ro.slice = slice;
  ro.max_batch = 7;
  run(o.b, o.slots, reads, ro, [&](const Read& r, const ReadCompletion& c, const std::byte* dest) {
    check_bytes(image(), r, c, dest);
  });
  REQUIRE(watcher.stop() == 0);  // size(), name(), ... never changed, from another thread
}

TEMPLATE_TEST_CASE("Backend contract: a read past the end is short, up to the last byte", "[contract]",
                   CONTRACT_BACKENDS) {
  Open<TestType> o;
  const uint64_t size = o.b.size();
  const uint32_t a = o.b.alignment();
  const uint64_t last = (size - 1) / a * a;  // the last offset a read may start at with this alignment
  std::vector<Read> reads = {
      {last, a},                    // the last block (or byte)
      {last, kMaxRead},             // from there, far past the end
      {last - 4 * a, 8 * a},        // from four blocks before it
      {(size - 5000) / a * a, kMaxRead},
      {size / a * a - 8 * a, 8 * a},  // ends at or just before the end: not short
  };
  std::vector<int64_t> got(reads.size());
  run(o.b, o.slots, reads, {}, [&](const Read& r, const ReadCompletion& c, const std::byte* dest) {
    check_bytes(image(), r, c, dest);
    got[static_cast<size_t>(&r - reads.data())] = c.result;
  });
  CHECK(got[0] == static_cast<int64_t>(size - last));
  CHECK(got[1] == static_cast<int64_t>(size - last));
  CHECK(got[2] == static_cast<int64_t>(size - last + 4 * a));
  CHECK(got[4] == 8 * a);
}

TEMPLATE_TEST_CASE("Backend contract: requests of any multiple of alignment() are served", "[contract]",
                   CONTRACT_BACKENDS) {
  Open<TestType> o;
  const uint32_t a = o.b.alignment();
  std::vector<Read> reads;
  if (a == 1) {
    // Any byte: odd offsets, odd lengths, odd destinations.
    reads = {{1, 1, false, 1}, {4097, 3, true, 3}, {12345, 4095, false, 5}, {o.b.size() / 2 + 3, 65537, false, 7},
             {kPiece - 1, 2, false, 63}, {3 * kPiece + 1, kPiece, true, 9}};
  } else {
    // Odd multiples of the alignment, at odd multiples of it.
    reads = {{a, a}, {3 * uint64_t{a}, 3 * a}, {5 * uint64_t{a}, 5 * a, true}, {kPiece + uint64_t{a}, 7 * a}};
  }
  run(o.b, o.slots, reads, {}, [&](const Read& r, const ReadCompletion& c, const std::byte* dest) {
    if (a > 1) REQUIRE(reinterpret_cast<uintptr_t>(dest) % a == 0);
    check_bytes(image(), r, c, dest);
  });
}

TEMPLATE_TEST_CASE("Backend contract: after a short reap every later completion raises an edge", "[contract]",
                   CONTRACT_BACKENDS) {
  // One or two reads at a time, each batch back before the next: the
  // backend goes idle, the reap right after submit() comes back short, and
  // every read completing later must be announced by a new edge.
  Open<TestType> o;
  auto reads = random_reads(o.b.size(), o.b.alignment(), 60, 3);
  RunOptions ro;
  ro.slice = 1;
  ro.max_batch = 2;
  ro.drain_each_batch = true;
  run(o.b, o.slots, reads, ro, [&](const Read& r, const ReadCompletion& c, const std::byte* dest) {
    check_bytes(image(), r, c, dest);
  });
}

TEMPLATE_TEST_CASE("Backend contract: the write path, or its read-only defaults", "[contract]", CONTRACT_BACKENDS) {
  Open<TestType> o;
  Backend& b = o.b;
  if (!b.writable()) {
    std::byte src[8] = {};
    WriteRequest w{4096, 8, src};
    WriteResult r = b.write_data({&w, 1});
    CHECK(r.error == -EROFS);
    CHECK(r.offset == 4096);
    CHECK(b.write_data({}).error == -EROFS);
    CHECK(b.sync_data() == -EROFS);
    std::byte buf[16];
    CHECK(b.read_data(0, buf) == -EROFS);
    return;
  }
  // Writable: writes from another thread while this one (the "fault loop")
  // reads elsewhere; then the new bytes are what read_data() and reads see.
  const uint64_t at = 1u << 20, len = 256 * 1024;
  Bytes object = image();
  const Bytes fresh = t::pattern(len, 99);
  std::copy(fresh.begin(), fresh.end(), object.begin() + static_cast<ptrdiff_t>(at));
  WriteResult wrote{};
  int synced = 1;
  int64_t read_back = 0;
  Bytes back(len);
  std::thread writer([&] {
    // Out of order, in pieces of different sizes.
    std::vector<WriteRequest> writes;
    for (uint64_t off = 0; off < len;) {
      uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(len - off, 4096 * (1 + off / 4096 % 5)));
      writes.push_back({at + off, n, fresh.data() + off});
      off += n;
    }
    std::reverse(writes.begin(), writes.end());
    wrote = b.write_data(writes);
    synced = b.sync_data();
    read_back = b.read_data(at, back);
  });
  std::vector<Read> elsewhere;
  for (uint64_t off = 0; off + 64 * 1024 <= at; off += 64 * 1024) elsewhere.push_back({off, 64 * 1024});
  run(b, o.slots, elsewhere, {}, [&](const Read& r, const ReadCompletion& c, const std::byte* dest) {
    check_bytes(image(), r, c, dest);
  });
  writer.join();
  REQUIRE(wrote.error == 0);
  REQUIRE(synced == 0);
  REQUIRE(read_back == static_cast<int64_t>(len));
  REQUIRE(t::first_mismatch(back.data(), fresh.data(), len) == -1);
  std::vector<Read> again = {{at - 4096, 8192}, {at, static_cast<uint32_t>(len)}, {at + len - 100, 200}};
  run(b, o.slots, again, {}, [&](const Read& r, const ReadCompletion& c, const std::byte* dest) {
    check_bytes(object, r, c, dest);
  });
}

TEMPLATE_TEST_CASE("Backend contract: a failed read completes once, with a negative errno", "[contract]",
                   FAILING_BACKENDS) {
  Failing f = TestType::open(image());
  Backend& b = *f.subject.backend;
  Slots slots(b.queue_depth(), b.alignment());
  b.attach_staging(slots.span());
  INFO(b.name() << ": reads over [" << f.offset << ", " << f.offset + f.length << ") fail with errno " << f.err);
  const uint64_t size = image().size(), bad_end = f.offset + f.length;
  // First, in one batch and in offset order (as the loop submits a run of
  // chunks): reads over the bad range that reach its edges, each run with
  // good neighbours right before and after it of the same urgency, so that a
  // backend that merges adjacent reads (the remote one, into one request)
  // has to fail only the reads over the bad range. Then pieces elsewhere.
  const bool before = f.offset >= kPiece, after = bad_end + kPiece <= size;
  std::vector<Read> reads;
  if (before) reads.push_back({f.offset - kPiece, kPiece, true});
  reads.push_back({f.offset, static_cast<uint32_t>(std::min<uint64_t>(f.length, kMaxRead)), true});
  if (after) reads.push_back({bad_end, kPiece, true});
  if (before) reads.push_back({f.offset - 4096, 4096});
  reads.push_back({f.offset, 100});
  reads.push_back({f.offset + 100, 1000});
  reads.push_back({bad_end - 1000, 1000});
  if (after) reads.push_back({bad_end, 4096});
  for (uint64_t piece : {0, 2, 8, 11, 20, 41, 77, 100})
    if ((piece + 1) * kPiece <= size) reads.push_back({piece * kPiece, kPiece - 1, piece % 2 == 0});
  auto is_bad = [&](const Read& r) { return r.offset < bad_end && f.offset < r.offset + r.length; };
  const size_t want_failed = static_cast<size_t>(std::count_if(reads.begin(), reads.end(), is_bad));
  size_t failed = 0, served = 0;
  RunOptions ro;
  ro.max_batch = 8;  // the bad reads and their neighbours go in the first submit()
  run(b, slots, reads, ro, [&](const Read& r, const ReadCompletion& c, const std::byte* dest) {
    if (!is_bad(r)) {
      check_bytes(image(), r, c, dest);  // a neighbour of a failed read still gets its bytes
      ++served;
      return;
    }
    INFO("read at " << r.offset << " of " << r.length);
    REQUIRE(c.result == -f.err);
    ++failed;
  });
  CHECK(want_failed >= 4);
  CHECK(failed == want_failed);  // exactly the reads over the bad range failed
  CHECK(served == reads.size() - want_failed);
}

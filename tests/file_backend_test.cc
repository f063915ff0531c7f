// SPDX-License-Identifier: Apache-2.0
// FileBackend, driven directly the way the fault loop drives it: submit
// batches within queue_depth(), reap right after submit and after every edge
// of completion_fd() in an edge-triggered epoll set, until every tag is back.
#include <dirent.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#if defined(__x86_64__)
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/syscall.h>
#define FAULTLINE_TEST_SECCOMP 1
#endif

#include "faultline/error.h"
#include "backend_test_util.h"
#include "faultline/file_backend.h"
#include "test_util.h"

using faultline::Error;
using faultline::FileBackend;
using faultline::FileBackendOptions;
using faultline::ReadCompletion;
using faultline::ReadRequest;
using Engine = faultline::FileBackendOptions::Engine;
using faultline::test::Poller;
using faultline::test::Staging;
namespace t = faultline::test;

namespace {

const char* engine_name(Engine e) {
  switch (e) {
    case Engine::kIoUring: return "io_uring";
    case Engine::kPread: return "pread";
    default: return "auto";
  }
}

struct Read {
  uint64_t offset;
  uint32_t length;
  std::byte* dest;
};

struct Outcome {
  std::map<uint64_t, ReadCompletion> done;  // by tag
  size_t duplicates = 0;
  size_t unknown = 0;
  bool timed_out = false;
  size_t max_in_flight = 0;
};

// Runs `reads` (tag = index + 1000) through the backend like the runtime does:
// at most queue_depth() in flight, batches of up to max_batch, reap into a
// buffer of out_size right after submit and after every edge.
Outcome drive(FileBackend& b, const std::vector<Read>& reads, size_t max_batch, size_t out_size = 64) {
  Poller poller(b.completion_fd());
  Outcome o;
  std::vector<ReadCompletion> out(out_size);
  size_t next = 0, in_flight = 0;
  auto reap_all = [&] {
    for (;;) {
      size_t n = b.reap(out);
      REQUIRE(n <= out.size());
      for (size_t i = 0; i < n; ++i) {
        uint64_t tag = out[i].tag;
        if (tag < 1000 || tag >= 1000 + reads.size()) {
          ++o.unknown;
        } else if (!o.done.emplace(tag, out[i]).second) {
          ++o.duplicates;
        } else {
          --in_flight;
        }
      }
      if (n < out.size()) return;
    }
  };
  while (o.done.size() < reads.size()) {
    std::vector<ReadRequest> batch;
    while (next < reads.size() && in_flight + batch.size() < b.queue_depth() && batch.size() < max_batch) {
      const Read& r = reads[next];
      batch.push_back(ReadRequest{r.offset, r.length, r.dest, 1000 + next, (next % 3) == 0});
      ++next;
    }
    if (!batch.empty()) {
      b.submit(batch);
      in_flight += batch.size();
      o.max_in_flight = std::max(o.max_in_flight, in_flight);
      reap_all();
      continue;  // submit more if there is room
    }
    if (o.done.size() == reads.size()) break;
    if (!poller.wait(3000)) {
      o.timed_out = true;
      break;
    }
    reap_all();
  }
  return o;
}

// Every read came back once, with min(length, size - offset) bytes equal to the file.
void check_outcome(const Outcome& o, const std::vector<Read>& reads, const std::vector<std::byte>& file) {
  REQUIRE_FALSE(o.timed_out);
  REQUIRE(o.duplicates == 0);
  REQUIRE(o.unknown == 0);
  REQUIRE(o.done.size() == reads.size());
  for (size_t i = 0; i < reads.size(); ++i) {
    const Read& r = reads[i];
    const ReadCompletion& c = o.done.at(1000 + i);
    INFO("read " << i << " offset " << r.offset << " length " << r.length << " result " << c.result);
    int64_t want = static_cast<int64_t>(std::min<uint64_t>(r.length, file.size() - r.offset));
    REQUIRE(c.result == want);
    REQUIRE_FALSE(c.zero);
    REQUIRE(std::memcmp(r.dest, file.data() + r.offset, static_cast<size_t>(want)) == 0);
  }
}

FileBackendOptions opts(Engine e, uint32_t qd = 64, bool direct = false, uint32_t threads = 4) {
  FileBackendOptions o;
  o.engine = e;
  o.queue_depth = qd;
  o.direct = direct;
  o.pread_threads = threads;
  return o;
}

// Threads of this process, not counting io_uring's io-wq workers (iou-wrk-*,
// iou-sqp-*): the kernel keeps those per task and retires them when idle.
// The pread engine's workers (named by the backend). Counting by name keeps
// the check exact whatever else runs in the process (a sanitizer's threads,
// io_uring's kernel workers).
size_t own_thread_count() { return t::threads_named("faultline-pread"); }

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

TEST_CASE("FileBackend reads random batches correctly", "[file_backend]") {
  const Engine engine = GENERATE(Engine::kIoUring, Engine::kPread);
  const uint32_t qd = GENERATE(1u, 32u);
  INFO("engine " << engine_name(engine) << " queue_depth " << qd);
  const size_t size = (1u << 20) + 1234;  // not a multiple of 4096
  t::TempFile file(size, 7);
  const auto data = t::pattern(size, 7);

  FileBackend b(file.path(), opts(engine, qd));
  REQUIRE(b.size() == size);
  REQUIRE(b.queue_depth() == qd);
  REQUIRE(b.alignment() == 1);
  REQUIRE(b.engine() == engine_name(engine));
  REQUIRE(b.name() == "file " + file.path() + " (" + engine_name(engine) + ")");
  REQUIRE(b.completion_fd() >= 0);

  constexpr size_t kReads = 100, kSlot = 64 << 10;
  std::vector<std::byte> staging(kReads * kSlot, std::byte{0xEE});
  std::mt19937_64 rng(42);
  std::vector<Read> reads;
  for (size_t i = 0; i < kReads; ++i) {
    uint64_t offset = rng() % size;
    uint32_t length = 1 + static_cast<uint32_t>(rng() % kSlot);
    if (i % 10 == 0) offset = size - 1 - (rng() % 5000);  // some run past EOF
    if (i % 10 == 1) offset = (rng() % (size / 4096)) * 4096, length = 4096;
    reads.push_back(Read{offset, length, staging.data() + i * kSlot});
  }
  Outcome o = drive(b, reads, /*max_batch=*/17);
  check_outcome(o, reads, data);
  REQUIRE(o.max_in_flight <= qd);
  // Nothing more comes back.
  ReadCompletion extra[4];
  REQUIRE(b.reap(extra) == 0);
}

TEST_CASE("FileBackend reads short at the end of the file", "[file_backend]") {
  const Engine engine = GENERATE(Engine::kIoUring, Engine::kPread);
  INFO("engine " << engine_name(engine));
  const size_t size = 3 * 4096 + 100;
  t::TempFile file(size, 3);
  const auto data = t::pattern(size, 3);
  FileBackend b(file.path(), opts(engine, 8));
  std::vector<std::byte> buf(4 * 16384);
  std::vector<Read> reads = {
      {3 * 4096, 4096, buf.data()},              // 100 bytes
      {2 * 4096, 8192, buf.data() + 16384},      // 4196 bytes
      {size - 1, 4096, buf.data() + 2 * 16384},  // 1 byte
      {0, 16384, buf.data() + 3 * 16384},        // the whole file, 12388 bytes
  };
  Outcome o = drive(b, reads, 4);
  check_outcome(o, reads, data);
  REQUIRE(o.done.at(1000).result == 100);
  REQUIRE(o.done.at(1001).result == 4196);
  REQUIRE(o.done.at(1002).result == 1);
  REQUIRE(o.done.at(1003).result == static_cast<int64_t>(size));
  // The bytes after a short read are left alone.
  REQUIRE(buf[100] == std::byte{0});
}

TEST_CASE("FileBackend serves large reads", "[file_backend]") {
  // 64 KiB and up take io_uring's io-wq path (IOSQE_ASYNC) when buffered.
  const Engine engine = GENERATE(Engine::kIoUring, Engine::kPread);
  const bool direct = GENERATE(false, true);
  INFO("engine " << engine_name(engine) << " direct " << direct);
  const size_t size = (3u << 20) + 8192 + 5;
  t::TempFile file(size, 13);
  const auto data = t::pattern(size, 13);
  FileBackend b(file.path(), opts(engine, 8, direct));
  Staging staging(8u << 20);
  b.attach_staging(staging.span());
  std::byte* p = staging.data();
  std::vector<Read> reads = {
      {0, 64 << 10, p},
      {1u << 20, 1u << 20, p + (1u << 20)},
      {256 << 10, 256 << 10, p + (2u << 20)},
      {3u << 20, 1u << 20, p + (3u << 20)},  // short: 8197 bytes
      {(2u << 20) - 65536, 2u << 20, p + (4u << 20)},
      {8192, (1u << 20) - 8192, p + (6u << 20)},
  };
  check_outcome(drive(b, reads, 6), reads, data);
}

TEST_CASE("FileBackend with O_DIRECT reads aligned requests", "[file_backend]") {
  const Engine engine = GENERATE(Engine::kIoUring, Engine::kPread);
  INFO("engine " << engine_name(engine));
  const size_t size = 64 * 4096 + 3000;  // last block is partial
  t::TempFile file(size, 11);
  const auto data = t::pattern(size, 11);
  FileBackend b(file.path(), opts(engine, 16, /*direct=*/true));
  const uint32_t a = b.alignment();
  REQUIRE(a >= 4096);
  REQUIRE((a & (a - 1)) == 0);
  REQUIRE(b.name() == "file " + file.path() + " (" + engine_name(engine) + ", O_DIRECT)");

  constexpr size_t kSlot = 32 << 10;
  Staging staging(41 * kSlot);
  b.attach_staging(staging.span());
  std::mt19937_64 rng(5);
  std::vector<Read> reads;
  const uint64_t blocks = (size + a - 1) / a;
  for (size_t i = 0; i < 40; ++i) {
    uint64_t offset = (rng() % blocks) * a;
    uint32_t length = a * static_cast<uint32_t>(1 + rng() % (kSlot / a));
    reads.push_back(Read{offset, length, staging.data() + i * kSlot});
  }
  reads.push_back(Read{(blocks - 1) * a, a, staging.data() + 40 * kSlot});  // short, at EOF
  // One destination outside the registered staging memory: a plain read.
  Staging other(kSlot);
  reads.push_back(Read{0, static_cast<uint32_t>(kSlot), other.data()});
  Outcome o = drive(b, reads, 8);
  check_outcome(o, reads, data);
  REQUIRE(o.done.at(1000 + 40).result == static_cast<int64_t>(size - (blocks - 1) * a));

  SECTION("attaching new staging memory replaces the old") {
    Staging second(4 * kSlot);
    b.attach_staging(second.span());
    std::vector<Read> more = {{0, static_cast<uint32_t>(kSlot), second.data()},
                              {a, static_cast<uint32_t>(kSlot), second.data() + kSlot},
                              {(blocks - 1) * a, a, second.data() + 2 * kSlot}};
    check_outcome(drive(b, more, 3), more, data);
  }
}

TEST_CASE("FileBackend O_DIRECT reads with unaligned requests fail, not hang", "[file_backend]") {
  const Engine engine = GENERATE(Engine::kIoUring, Engine::kPread);
  INFO("engine " << engine_name(engine));
  t::TempFile file(8 * 4096, 2);
  FileBackend b(file.path(), opts(engine, 4, /*direct=*/true));
  Staging staging(8 * 4096);
  b.attach_staging(staging.span());
  // Outside the contract (offset not a multiple of alignment()): the kernel
  // refuses it, and the request still completes exactly once.
  std::vector<Read> reads = {{100, 4096, staging.data()}, {4096, 4096, staging.data() + 4096}};
  Outcome o = drive(b, reads, 2);
  REQUIRE_FALSE(o.timed_out);
  REQUIRE(o.done.size() == 2);
  REQUIRE(o.done.at(1000).result == -EINVAL);
  REQUIRE(o.done.at(1001).result == 4096);
}

TEST_CASE("FileBackend keeps reaping after a partial reap", "[file_backend]") {
  // reap() into a one-entry buffer once per edge: if completions are left
  // over, the backend must raise another edge, or this times out.
  const Engine engine = GENERATE(Engine::kIoUring, Engine::kPread);
  INFO("engine " << engine_name(engine));
  const size_t size = 256 << 10;
  t::TempFile file(size, 4);
  const auto data = t::pattern(size, 4);
  FileBackend b(file.path(), opts(engine, 32));
  std::vector<std::byte> buf(32 * 4096);
  std::vector<ReadRequest> batch;
  for (uint64_t i = 0; i < 32; ++i) batch.push_back(ReadRequest{i * 4096, 4096, buf.data() + i * 4096, i, false});
  Poller poller(b.completion_fd());
  b.submit(batch);
  std::vector<bool> seen(32, false);
  size_t got = 0;
  while (got < 32) {
    REQUIRE(poller.wait(2000));  // fails if an edge went missing
    ReadCompletion c;
    REQUIRE(b.reap({&c, 1}) == 1);
    REQUIRE(c.tag < 32);
    REQUIRE_FALSE(seen[c.tag]);
    seen[c.tag] = true;
    REQUIRE(c.result == 4096);
    REQUIRE(std::memcmp(buf.data() + c.tag * 4096, data.data() + c.tag * 4096, 4096) == 0);
    ++got;
  }
}

TEST_CASE("FileBackend completes every request when over-submitted", "[file_backend]") {
  // Outside the contract: more than queue_depth() in one submit(). Every
  // request still completes exactly once, with data or a retryable error.
  const Engine engine = GENERATE(Engine::kIoUring, Engine::kPread);
  INFO("engine " << engine_name(engine));
  const size_t size = 128 << 10;
  t::TempFile file(size, 9);
  const auto data = t::pattern(size, 9);
  FileBackend b(file.path(), opts(engine, 4));
  std::vector<std::byte> buf(40 * 4096);
  std::vector<ReadRequest> batch;
  for (uint64_t i = 0; i < 40; ++i)
    batch.push_back(ReadRequest{(i % 32) * 4096, 4096, buf.data() + i * 4096, i, false});
  Poller poller(b.completion_fd());
  b.submit(batch);
  std::vector<int> count(40, 0);
  size_t got = 0, ok = 0;
  std::vector<ReadCompletion> out(64);
  while (got < 40) {
    size_t n = b.reap(out);
    for (size_t i = 0; i < n; ++i) {
      REQUIRE(out[i].tag < 40);
      ++count[out[i].tag];
      if (out[i].result == 4096) {
        ++ok;
        uint64_t off = (out[i].tag % 32) * 4096;
        REQUIRE(std::memcmp(buf.data() + out[i].tag * 4096, data.data() + off, 4096) == 0);
      } else {
        REQUIRE((out[i].result == -EAGAIN || out[i].result == -EBUSY));
      }
    }
    got += n;
    if (n < out.size() && got < 40) REQUIRE(poller.wait(2000));
  }
  for (int c : count) REQUIRE(c == 1);
  REQUIRE(ok >= 4);
  if (engine == Engine::kPread) REQUIRE(ok == 40);
}

TEST_CASE("FileBackend pread engine serves urgent reads first", "[file_backend]") {
  t::TempFile file(64 * 4096, 1);
  FileBackend b(file.path(), opts(Engine::kPread, 64, false, /*threads=*/1));
  std::vector<std::byte> buf(64 * 4096);
  std::vector<ReadRequest> batch;
  for (uint64_t i = 0; i < 40; ++i) batch.push_back(ReadRequest{i * 4096, 4096, buf.data() + i * 4096, i, false});
  batch.push_back(ReadRequest{40 * 4096, 4096, buf.data() + 40 * 4096, 40, true});
  Poller poller(b.completion_fd());
  b.submit(batch);  // one lock for the whole batch: the worker sees it all at once
  std::vector<uint64_t> order;
  std::vector<ReadCompletion> out(64);
  while (order.size() < batch.size()) {
    size_t n = b.reap(out);
    for (size_t i = 0; i < n; ++i) order.push_back(out[i].tag);
    if (n < out.size() && order.size() < batch.size()) REQUIRE(poller.wait(2000));
  }
  REQUIRE(order.front() == 40);
}

TEST_CASE("FileBackend io_uring engine: a raised background read overtakes the queue", "[file_backend][urgent]") {
  t::TempFile file(64 * 4096, 2);  // just written: cached, so reads complete inside io_uring_submit
  FileBackendOptions o = opts(Engine::kIoUring, 64);
  o.background_reads = 4;
  o.keep_cache = true;
  FileBackend b(file.path(), o);
  std::vector<std::byte> buf(64 * 4096);
  std::vector<ReadRequest> batch;
  for (uint64_t i = 0; i < 40; ++i) batch.push_back(ReadRequest{i * 4096, 4096, buf.data() + i * 4096, i, false});
  Poller poller(b.completion_fd());
  b.submit(batch);  // 4 go into the ring, 36 wait in the backend
  b.make_urgent(39);
  std::vector<uint64_t> order;
  std::vector<ReadCompletion> out(64);
  while (order.size() < batch.size()) {
    size_t n = b.reap(out);
    for (size_t i = 0; i < n; ++i) {
      REQUIRE(out[i].result == 4096);
      order.push_back(out[i].tag);
    }
    if (n < out.size() && order.size() < batch.size()) REQUIRE(poller.wait(2000));
  }
  auto at = std::find(order.begin(), order.end(), 39) - order.begin();
  CHECK(at < 5);  // behind at most the 4 in the ring before it
  std::sort(order.begin(), order.end());
  CHECK(std::adjacent_find(order.begin(), order.end()) == order.end());  // each once
  auto data = t::pattern(64 * 4096, 2);
  CHECK(std::memcmp(buf.data(), data.data(), 40 * 4096) == 0);
}

TEST_CASE("FileBackend destructor does not hang with reads outstanding", "[file_backend]") {
  const Engine engine = GENERATE(Engine::kIoUring, Engine::kPread);
  INFO("engine " << engine_name(engine));
  const size_t size = 4 << 20;
  t::TempFile file(size, 6);
  std::vector<std::byte> buf(size);  // outlives the backend
  auto start = std::chrono::steady_clock::now();
  {
    FileBackend b(file.path(), opts(engine, 4096, false, 1));
    std::vector<ReadRequest> batch;
    for (uint64_t i = 0; i < 1024; ++i)
      batch.push_back(ReadRequest{i * 4096, 4096, buf.data() + i * 4096, i, false});
    b.submit(batch);
  }
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
  REQUIRE(ms < 1000);
}

TEST_CASE("FileBackend constructor errors name the path or option", "[file_backend]") {
  t::TempFile file(4096, 1);
  const std::string dir = file.path().substr(0, file.path().rfind('/'));
  auto message_of = [](auto&& make) -> std::pair<std::string, int> {
    try {
      make();
    } catch (const Error& e) {
      return {e.what(), e.sys_errno()};
    }
    return {"<no exception>", -1};
  };

  SECTION("missing file") {
    const std::string missing = dir + "/no-such-file";
    auto [msg, err] = message_of([&] { FileBackend b(missing); });
    CHECK_THAT(msg, Catch::Contains(missing));
    CHECK_THAT(msg, Catch::Contains("No such file"));
    CHECK(err == ENOENT);
  }
  SECTION("a directory") {
    auto [msg, err] = message_of([&] { FileBackend b(dir); });
    CHECK_THAT(msg, Catch::Contains(dir));
    CHECK_THAT(msg, Catch::Contains("directory"));
  }
  SECTION("a FIFO is refused without blocking") {
    const std::string fifo = dir + "/fifo";
    REQUIRE(mkfifo(fifo.c_str(), 0600) == 0);
    auto [msg, err] = message_of([&] { FileBackend b(fifo); });
    unlink(fifo.c_str());
    CHECK_THAT(msg, Catch::Contains(fifo));
    CHECK_THAT(msg, Catch::Contains("not a regular file"));
  }
  SECTION("an empty file") {
    t::TempFile empty(std::vector<std::byte>{});
    auto [msg, err] = message_of([&] { FileBackend b(empty.path()); });
    CHECK_THAT(msg, Catch::Contains(empty.path()));
    CHECK_THAT(msg, Catch::Contains("is empty: nothing to map"));
  }
  SECTION("permission denied") {
    if (t::is_root()) {
      WARN("running as root: permission checks do not apply, skipped");
    } else {
      REQUIRE(chmod(file.path().c_str(), 0) == 0);
      auto [msg, err] = message_of([&] { FileBackend b(file.path()); });
      CHECK_THAT(msg, Catch::Contains(file.path()));
      CHECK(err == EACCES);
    }
  }
  SECTION("invalid options") {
    for (uint32_t qd : {0u, 4097u}) {
      auto [msg, err] = message_of([&] { FileBackend b(file.path(), opts(Engine::kAuto, qd)); });
      CHECK_THAT(msg, Catch::Contains("FileBackendOptions.queue_depth = " + std::to_string(qd)));
      CHECK_THAT(msg, Catch::Contains(file.path()));
    }
    auto [msg, err] = message_of([&] { FileBackend b(file.path(), opts(Engine::kPread, 64, false, 0)); });
    CHECK_THAT(msg, Catch::Contains("FileBackendOptions.pread_threads = 0"));
    // The limits themselves are accepted.
    CHECK(FileBackend(file.path(), opts(Engine::kIoUring, 4096)).queue_depth() == 4096);
    CHECK(FileBackend(file.path(), opts(Engine::kPread, 1)).queue_depth() == 1);
  }
}

TEST_CASE("FileBackend leaks no descriptors or threads", "[file_backend]") {
  t::TempFile file(64 << 10, 1);
  t::TempFile empty(std::vector<std::byte>{});
  const auto data = t::pattern(64 << 10, 1);
  const size_t fds = t::open_fd_count();
  const size_t threads = own_thread_count();
  for (int round = 0; round < 3; ++round) {
    for (Engine e : {Engine::kIoUring, Engine::kPread}) {
      for (bool direct : {false, true}) {
        Staging staging(16 * 4096);
        FileBackend b(file.path(), opts(e, 16, direct, 3));
        REQUIRE(t::open_fd_count() > fds);
        if (e == Engine::kPread) REQUIRE(own_thread_count() == threads + 3);
        b.attach_staging(staging.span());
        std::vector<Read> reads;
        for (uint64_t i = 0; i < 16; ++i) reads.push_back(Read{i * 4096, 4096, staging.data() + i * 4096});
        check_outcome(drive(b, reads, 16), reads, data);
      }
    }
    CHECK_THROWS_AS(FileBackend(empty.path()), Error);              // throws after open()
    CHECK_THROWS_AS(FileBackend(file.path(), opts(Engine::kAuto, 0)), Error);  // before
  }
  REQUIRE(t::open_fd_count() == fds);
  REQUIRE(own_thread_count() == threads);
}

#ifdef FAULTLINE_TEST_SECCOMP
namespace {

// In a child process only: makes `nr` fail with `err`, optionally only when
// its second argument equals arg1.
void deny_syscall(long nr, int err, long arg1 = -1) {
  const uint32_t deny = SECCOMP_RET_ERRNO | (static_cast<uint32_t>(err) & SECCOMP_RET_DATA);
  std::vector<sock_filter> f = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
  };
  if (arg1 < 0) {
    f.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(nr), 0, 1));
  } else {
    f.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(nr), 0, 3));
    f.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, args[1])));  // low half
    f.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(arg1), 0, 1));
  }
  f.push_back(BPF_STMT(BPF_RET | BPF_K, deny));
  f.push_back(BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
  sock_fprog prog{static_cast<unsigned short>(f.size()), f.data()};
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
    throw std::runtime_error("cannot install the seccomp filter");
}

void expect(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "child check failed: %s\n", what);
    throw std::runtime_error(what);
  }
}

}  // namespace

TEST_CASE("FileBackend falls back to pread when io_uring is blocked", "[file_backend]") {
  t::TempFile file(64 << 10, 8);
  t::TempFile log(std::vector<std::byte>{});
  int rc = t::run_in_child([&] {
    int fd = open(log.path().c_str(), O_WRONLY | O_TRUNC);
    expect(fd >= 0 && dup2(fd, 2) == 2, "redirect stderr");
    close(fd);
    deny_syscall(SYS_io_uring_setup, ENOSYS);
    const auto data = t::pattern(64 << 10, 8);
    {
      FileBackend b(file.path());  // kAuto
      expect(b.engine() == "pread", "kAuto falls back to pread");
      expect(b.name() == "file " + file.path() + " (pread)", "name says pread");
      std::vector<std::byte> buf(8192);
      Poller poller(b.completion_fd());
      ReadRequest r[2] = {{0, 4096, buf.data(), 1, true}, {4096, 4096, buf.data() + 4096, 2, false}};
      b.submit(r);
      ReadCompletion c[4];
      size_t got = 0;
      while (got < 2) {
        got += b.reap({c + got, 4 - got});
        if (got < 2) expect(poller.wait(2000), "completion edge");
      }
      expect(c[0].result == 4096 && c[1].result == 4096, "reads complete");
      expect(std::memcmp(buf.data(), data.data(), 8192) == 0, "data matches");
    }
    bool threw = false;
    try {
      FileBackend b(file.path(), opts(Engine::kIoUring));
    } catch (const Error& e) {
      threw = std::string(e.what()).find(file.path()) != std::string::npos &&
              std::string(e.what()).find("io_uring") != std::string::npos;
    }
    expect(threw, "kIoUring throws an Error naming the path");
    { FileBackend b(file.path(), opts(Engine::kPread)); }  // forced pread: says nothing
    std::fflush(stderr);
  });
  INFO(slurp(log.path()));
  REQUIRE(rc == 0);
  REQUIRE(slurp(log.path()) ==
          "faultline: io_uring unavailable for " + file.path() + " (Function not implemented), using pread workers\n");
}

TEST_CASE("FileBackend completes requests whose io_uring_submit failed", "[file_backend]") {
  // io_uring_enter fails with EPERM when asked to submit exactly 7 SQEs and
  // with EAGAIN for exactly 5: those batches must complete with the error,
  // once, and must not be submitted again with the next batch.
  t::TempFile file(64 << 10, 12);
  int rc = t::run_in_child([&] {
    const auto data = t::pattern(64 << 10, 12);
    FileBackendOptions o = opts(Engine::kIoUring, 16);
    o.background_reads = 16;  // every batch goes into the ring whole: one io_uring_enter each
    FileBackend b(file.path(), o);
    deny_syscall(SYS_io_uring_enter, EPERM, 7);
    deny_syscall(SYS_io_uring_enter, EAGAIN, 5);
    std::vector<std::byte> buf(16 * 4096);
    Poller poller(b.completion_fd());
    auto run = [&](uint64_t first_tag, size_t n) {
      std::vector<ReadRequest> batch;
      for (size_t i = 0; i < n; ++i)
        batch.push_back(ReadRequest{i * 4096, 4096, buf.data() + i * 4096, first_tag + i, false});
      b.submit(batch);
      std::vector<ReadCompletion> out(32);
      std::vector<ReadCompletion> all;
      while (all.size() < n) {
        size_t k = b.reap(out);
        all.insert(all.end(), out.begin(), out.begin() + static_cast<long>(k));
        if (k < out.size() && all.size() < n) expect(poller.wait(2000), "completion edge");
      }
      poller.wait(50);
      expect(b.reap(out) == 0, "nothing extra");
      std::sort(all.begin(), all.end(), [](auto& x, auto& y) { return x.tag < y.tag; });
      for (size_t i = 0; i < n; ++i) expect(all[i].tag == first_tag + i, "each tag exactly once");
      return all;
    };
    for (auto& c : run(100, 7)) expect(c.result == -EPERM, "EPERM reported");
    for (auto& c : run(300, 5)) expect(c.result == -EAGAIN, "EAGAIN reported after retries");
    auto good = run(200, 3);  // would be 10 SQEs if the failed 7 were still queued
    for (auto& c : good) expect(c.result == 4096, "later batch succeeds");
    expect(std::memcmp(buf.data(), data.data(), 3 * 4096) == 0, "data matches");
  });
  REQUIRE(rc == 0);
}
#endif

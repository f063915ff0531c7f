// SPDX-License-Identifier: Apache-2.0
// Dirty tracking (Region::take_dirty) and write-back regions (flush, close,
// write-back errors), over real files. Concurrency tests run in process so
// TSan sees them.
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>
#include <random>
#include <set>
#include <thread>

#include "faultline/faultline.h"
#include "faultline/page_server.h"
#include "faultline/remote_backend.h"
#include "faultline/snapshot.h"
#include "faultline/zstd_snapshot_backend.h"
#include "test_util.h"

using namespace faultline;
using namespace faultline::test;

namespace {

constexpr size_t kPage = 4096, kMiB = 1024 * 1024;

std::vector<std::byte> read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  struct stat st {};
  REQUIRE(fstat(fd, &st) == 0);
  std::vector<std::byte> out(static_cast<size_t>(st.st_size));
  size_t done = 0;
  while (done < out.size()) {
    ssize_t n = pread(fd, out.data() + done, out.size() - done, static_cast<off_t>(done));
    REQUIRE(n > 0);
    done += static_cast<size_t>(n);
  }
  close(fd);
  return out;
}

std::set<uint64_t> pages_of(const std::vector<DirtyRange>& ranges) {
  std::set<uint64_t> pages;
  for (const DirtyRange& r : ranges) {
    REQUIRE(r.offset % kPage == 0);
    for (uint64_t p = r.offset / kPage; p * kPage < r.offset + r.length; ++p) pages.insert(p);
  }
  return pages;
}

sigjmp_buf g_jump;
void on_sigbus(int) { siglongjmp(g_jump, 1); }

std::shared_ptr<FileBackend> writable_file(const std::string& path) {
  FileBackendOptions fo;
  fo.writable = true;
  return std::make_shared<FileBackend>(path, fo);
}

RegionOptions write_back_options(uint32_t fill = 64 * 1024) {
  RegionOptions o;
  o.writable = true;
  o.write_back = true;
  o.fill_size = fill;
  return o;
}

// Writes `value` over the whole page: a torn copy of a page is caught.
void stamp(std::byte* page, uint64_t value) {
  auto* w = reinterpret_cast<std::atomic<uint64_t>*>(page);
  for (size_t i = 0; i < kPage / 8; ++i) w[i].store(value + i, std::memory_order_relaxed);
}

}  // namespace

TEST_CASE("take_dirty reports exactly the pages written, not the runtime's own installs", "[dirty]") {
  auto data = pattern(4 * kMiB + 1000, 3);  // a ragged end: the last chunk is partly zero fill
  auto backend = std::make_shared<MemoryBackend>(data);
  Runtime rt;
  REQUIRE(rt.mode().wp_async);
  auto fill = GENERATE(uint32_t{4096}, uint32_t{64 * 1024}, uint32_t{2 * 1024 * 1024});
  RegionOptions o;
  o.writable = true;
  o.track_dirty = true;
  o.fill_size = fill;
  o.length = 6 * kMiB;  // 2 MiB past the backend: zero chunks, also write-protected
  Region r = rt.map(backend, o);
  INFO("fill " << fill);
  // Reading everything installs every page; none of it is a write.
  REQUIRE(first_mismatch(r.data(), data.data(), data.size()) == -1);
  CHECK(r.take_dirty().empty());
  std::mt19937_64 rng(fill);
  std::set<uint64_t> written;
  for (int i = 0; i < 300; ++i) {
    uint64_t p = rng() % (r.size() / kPage);
    r.data()[p * kPage + rng() % kPage] = std::byte{0x5a};
    written.insert(p);
  }
  CHECK(pages_of(r.take_dirty()) == written);
  CHECK(r.take_dirty().empty());  // taken: a new interval starts
  r.data()[kPage * 7] = std::byte{1};
  r.data()[r.size() - 1] = std::byte{2};  // a zero-fill page
  auto last = r.take_dirty();
  CHECK(pages_of(last) == std::set<uint64_t>{7, r.size() / kPage - 1});
  // The app drops a page and reads it again: zeros (not the backend's
  // bytes, nor what was written), and that install is not a write.
  REQUIRE(madvise(r.data() + 7 * kPage, kPage, MADV_DONTNEED) == 0);
  CHECK(r.data()[7 * kPage] == std::byte{0});
  CHECK(r.data()[7 * kPage + 1] == std::byte{0});
  CHECK(r.take_dirty().empty());
}

TEST_CASE("take_dirty misses no write of a concurrent writer", "[dirty]") {
  auto backend = std::make_shared<MemoryBackend>(pattern(8 * kMiB, 5));
  Runtime rt;
  RegionOptions o;
  o.writable = true;
  o.track_dirty = true;
  Region r = rt.map(backend, o);
  const size_t pages = r.size() / kPage;
  // Every page the log reports is copied into a shadow; after the writer
  // stops and a last take, the shadow must equal memory everywhere. A write
  // the log missed leaves the shadow stale.
  std::vector<std::byte> shadow(r.data(), r.data() + r.size());  // also faults everything in
  REQUIRE(r.take_dirty().empty());
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    std::mt19937_64 rng(11);
    uint64_t n = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      uint64_t p = rng() % pages;
      stamp(r.data() + p * kPage, ++n << 20);
    }
  });
  auto copy_reported = [&] {
    size_t got = 0;
    for (const DirtyRange& d : r.take_dirty()) {
      // Racing the writer on purpose (this is what a snapshot does): the
      // word copies are atomic so the race is a defined one.
      for (uint64_t i = d.offset; i < d.offset + d.length; i += 8)
        reinterpret_cast<uint64_t*>(shadow.data() + i)[0] =
            reinterpret_cast<std::atomic<uint64_t>*>(r.data() + i)->load(std::memory_order_relaxed);
      got += d.length / kPage;
    }
    return got;
  };
  size_t rounds = 0, reported = 0;
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(700);
  // At least 20 takes while the writer runs, however slow the machine (TSan).
  while (std::chrono::steady_clock::now() < until || rounds < 20) {
    reported += copy_reported();
    ++rounds;
  }
  stop = true;
  writer.join();
  copy_reported();
  INFO(rounds << " rounds, " << reported << " pages reported");
  CHECK(rounds > 10);
  CHECK(reported > 0);
  CHECK(first_mismatch(shadow.data(), r.data(), r.size()) == -1);
  CHECK(r.take_dirty().empty());
}

TEST_CASE("write-back: write, flush, the file holds it (pread)", "[dirty]") {
  auto original = pattern(3 * kMiB + 777, 7);  // ragged: the last page is partial
  TempFile file(original);
  Runtime rt;
  auto fill = GENERATE(uint32_t{4096}, uint32_t{64 * 1024});
  Region r = rt.map(writable_file(file.path()), write_back_options(fill));
  REQUIRE(r.size() == original.size());
  auto expect = original;
  std::mt19937_64 rng(fill + 1);
  for (int i = 0; i < 500; ++i) {
    size_t at = rng() % r.size(), n = std::min<size_t>(1 + rng() % 9000, r.size() - at);
    for (size_t k = 0; k < n; ++k) expect[at + k] = r.data()[at + k] = std::byte(static_cast<uint8_t>(rng()));
  }
  r.data()[r.size() - 1] = expect[r.size() - 1] = std::byte{0xee};  // the ragged last byte
  r.flush();
  auto on_disk = read_file(file.path());
  REQUIRE(on_disk.size() == original.size());  // never extended past the end
  CHECK(first_mismatch(on_disk.data(), expect.data(), expect.size()) == -1);
  // A second flush with nothing new writes nothing and succeeds.
  r.flush();
  CHECK(first_mismatch(read_file(file.path()).data(), expect.data(), expect.size()) == -1);
}

TEST_CASE("write-back: writes racing with flushes are all kept", "[dirty]") {
  TempFile file(4 * kMiB, 9);
  Runtime rt;
  Region r = rt.map(writable_file(file.path()), write_back_options());
  const size_t pages = r.size() / kPage;
  constexpr int kWriters = 3;
  // Writer w owns the pages p with p % kWriters == w and stamps them with
  // increasing values; whatever the interleaving, the file must end equal to
  // memory after the last flush.
  std::atomic<bool> stop{false};
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w)
    writers.emplace_back([&, w] {
      std::mt19937_64 rng(w + 100);
      uint64_t n = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        uint64_t p = (rng() % (pages / kWriters)) * kWriters + static_cast<uint64_t>(w);
        stamp(r.data() + p * kPage, (static_cast<uint64_t>(w) << 56) | (++n << 16));
      }
    });
  std::thread flusher([&] {
    while (!stop.load(std::memory_order_relaxed)) r.flush();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(800));
  r.flush();  // from a second thread at the same time, too
  stop = true;
  for (auto& t : writers) t.join();
  flusher.join();
  r.flush();
  auto on_disk = read_file(file.path());
  CHECK(first_mismatch(on_disk.data(), r.data(), r.size()) == -1);
}

TEST_CASE("write-back: close and destruction write back", "[dirty]") {
  auto original = pattern(2 * kMiB, 13);
  TempFile file(original);
  auto expect = original;
  Runtime rt;
  {
    Region r = rt.map(writable_file(file.path()), write_back_options());
    for (size_t i = 0; i < r.size(); i += 3 * kPage + 17) expect[i] = r.data()[i] = std::byte{0x42};
    r.close();
    CHECK(r.data() == nullptr);
  }
  CHECK(first_mismatch(read_file(file.path()).data(), expect.data(), expect.size()) == -1);
  {
    Region r = rt.map(writable_file(file.path()), write_back_options());
    CHECK(first_mismatch(r.data(), expect.data(), expect.size()) == -1);  // reads what close wrote
    for (size_t i = 5; i < r.size(); i += 5 * kPage + 3) expect[i] = r.data()[i] = std::byte{0x24};
  }  // the destructor
  CHECK(first_mismatch(read_file(file.path()).data(), expect.data(), expect.size()) == -1);
}

TEST_CASE("private writable regions never write to the file", "[dirty]") {
  auto original = pattern(2 * kMiB, 17);
  TempFile file(original);
  Runtime rt;
  RegionOptions o;
  o.writable = true;
  auto track = GENERATE(false, true);
  o.track_dirty = track;  // tracking alone does not write either
  {
    Region r = rt.map(writable_file(file.path()), o);
    std::memset(r.data(), 0x77, r.size());
    if (track) CHECK(pages_of(r.take_dirty()).size() == r.size() / kPage);
    CHECK_THROWS_WITH(r.flush(), Catch::Contains("without RegionOptions.write_back"));
    r.close();
  }
  CHECK(first_mismatch(read_file(file.path()).data(), original.data(), original.size()) == -1);
}

TEST_CASE("dirty tracking and write-back options are checked", "[dirty]") {
  TempFile file(kMiB, 19);
  Runtime rt;
  auto ro = std::make_shared<FileBackend>(file.path());
  RegionOptions o;
  o.track_dirty = true;
  CHECK_THROWS_WITH(rt.map(ro, o), Catch::Contains("track_dirty = true needs RegionOptions.writable"));
  o = write_back_options();
  CHECK_THROWS_WITH(rt.map(ro, o), Catch::Contains("cannot be written") && Catch::Contains("FileBackendOptions::writable"));
  o.length = 2 * kMiB;
  CHECK_THROWS_WITH(rt.map(writable_file(file.path()), o), Catch::Contains("must lie within"));
  Region plain = rt.map(ro, RegionOptions{});
  CHECK_THROWS_WITH(plain.take_dirty(), Catch::Contains("without RegionOptions.track_dirty"));
  Region wb = rt.map(writable_file(file.path()), write_back_options());
  CHECK_THROWS_WITH(wb.take_dirty(), Catch::Contains("belongs to flush()"));
}

TEST_CASE("a write-back region over a read-only backend names it and only the fix that applies", "[dirty]") {
  auto bytes = pattern(kMiB, 23);
  TempFile file(bytes);
  std::string snap = file.path() + ".snap";
  write_snapshot(bytes, snap);
  struct Remove {
    std::string path;
    ~Remove() { std::remove(path.c_str()); }
  } remove_snap{snap};
  PageServerOptions so;
  so.listen = {"127.0.0.1:0"};
  PageServer server(std::make_shared<MemoryBackend>(bytes), so);
  RemoteOptions remote;
  remote.address = server.endpoints().at(0);
  Runtime rt;
  auto refused = [&](std::shared_ptr<Backend> b) {
    std::string name = b->name();
    try {
      rt.map(std::move(b), write_back_options());
    } catch (const Error& e) {
      return std::pair(name, std::string(e.what()));
    }
    FAIL("map() of a write-back region over " << name << " did not throw");
    return std::pair(name, std::string());
  };
  {
    auto [name, what] = refused(std::make_shared<FileBackend>(file.path()));
    INFO(what);
    CHECK_THAT(what, Catch::Contains("backend " + name + " cannot be written"));
    CHECK_THAT(what, Catch::Contains("open it with FileBackendOptions::writable = true"));
  }
  for (auto b : {open_zstd_snapshot(snap), connect_remote(remote)}) {
    auto [name, what] = refused(b);
    INFO(what);
    CHECK_THAT(what, Catch::StartsWith("RegionOptions.write_back = true: backend " + name +
                                       " cannot be written: this backend is read-only"));
    CHECK_THAT(what, !Catch::Contains("FileBackend") && !Catch::Contains("writable ="));
  }
}

TEST_CASE("write-back into a full file system reports ENOSPC and loses nothing", "[dirty][root]") {
  if (!is_root()) {
    WARN("SKIPPED: mounting a small tmpfs needs root");
    return;
  }
  char dir[] = "/tmp/faultline-enospc-XXXXXX";
  REQUIRE(mkdtemp(dir) != nullptr);
  REQUIRE(mount("tmpfs", dir, "tmpfs", 0, "size=4m") == 0);
  struct Unmount {
    const char* d;
    ~Unmount() {
      umount2(d, MNT_DETACH);
      rmdir(d);
    }
  } unmount{dir};
  const std::string data_path = std::string(dir) + "/data", filler_path = std::string(dir) + "/filler";
  // A sparse 2 MiB file: writing into its holes needs blocks. The filler
  // leaves less than 1 MiB free.
  {
    int fd = ::open(data_path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(ftruncate(fd, 2 * kMiB) == 0);
    close(fd);
    auto filler = pattern(3 * kMiB + 256 * 1024, 1);
    fd = ::open(filler_path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(write(fd, filler.data(), filler.size()) == static_cast<ssize_t>(filler.size()));
    close(fd);
  }
  Runtime rt;
  Region r = rt.map(writable_file(data_path), write_back_options());
  auto expect = pattern(2 * kMiB, 23);
  std::memcpy(r.data(), expect.data(), expect.size());
  try {
    r.flush();
    FAIL("flush into a full tmpfs succeeded");
  } catch (const Error& e) {
    CHECK(e.sys_errno() == ENOSPC);
    CHECK_THAT(e.what(), Catch::Contains(data_path) && Catch::Contains("No space left"));
  }
  CHECK_THROWS_AS(r.close(), Error);  // still full: close refuses, the region stays
  REQUIRE(r.data() != nullptr);
  CHECK(first_mismatch(r.data(), expect.data(), expect.size()) == -1);
  // Writes after the failure are kept too.
  r.data()[12345] = expect[12345] = std::byte{0x99};
  REQUIRE(unlink(filler_path.c_str()) == 0);
  r.flush();
  CHECK(first_mismatch(read_file(data_path).data(), expect.data(), expect.size()) == -1);
  r.close();
}

TEST_CASE("write-back under a memory budget: writes racing with evictions and flushes are all kept", "[dirty][budget]") {
  auto original = pattern(16 * kMiB, 29);
  TempFile file(original);
  Runtime rt;
  REQUIRE(rt.mode().move);
  RegionOptions o = write_back_options();
  o.budget.bytes = 2 * kMiB;  // an eighth of the data
  Region r = rt.map(writable_file(file.path()), o);
  const size_t pages = r.size() / kPage;
  constexpr int kWriters = 3;
  // Each writer owns the pages p % kWriters == w and remembers what it
  // wrote last; evicted chunks come back from the file, so the file and
  // memory must both end equal to this shadow.
  std::vector<std::byte> shadow = original;
  std::atomic<bool> stop{false};
  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w)
    writers.emplace_back([&, w] {
      std::mt19937_64 rng(w + 200);
      uint64_t n = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        uint64_t p = (rng() % (pages / kWriters)) * kWriters + static_cast<uint64_t>(w);
        uint64_t v = (static_cast<uint64_t>(w) << 56) | (++n << 16);
        stamp(r.data() + p * kPage, v);
        stamp(shadow.data() + p * kPage, v);
      }
    });
  std::thread flusher([&] {
    while (!stop.load(std::memory_order_relaxed)) {
      r.flush();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));
  stop = true;
  for (auto& t : writers) t.join();
  flusher.join();
  r.flush();
  INFO(r.stats().to_json());
  CHECK(r.stats().evicted_chunks > 10);
  CHECK(first_mismatch(read_file(file.path()).data(), shadow.data(), shadow.size()) == -1);
  CHECK(first_mismatch(r.data(), shadow.data(), shadow.size()) == -1);
}

TEST_CASE("flush skips chunks poisoned after an I/O error and writes the rest", "[dirty][fork]") {
  auto data = pattern(4 * kMiB, 31);
  TempFile file(data);
  int status = run_in_child([&] {
    Runtime rt;
    RegionOptions o = write_back_options();
    o.readahead = false;
    Region r = rt.map(writable_file(file.path()), o);
    r.data()[100] = std::byte{0x11};
    if (truncate(file.path().c_str(), kMiB) != 0) _exit(10);
    signal(SIGBUS, on_sigbus);
    if (sigsetjmp(g_jump, 1) == 0) {
      (void)*static_cast<volatile std::byte*>(r.data() + 2 * kMiB);  // short read: poisoned
      _exit(11);
    }
    signal(SIGBUS, SIG_DFL);  // a flush that reads the poisoned chunk dies here
    r.data()[200] = std::byte{0x22};
    r.flush();
    auto on_disk = read_file(file.path());
    if (on_disk.size() != kMiB) _exit(12);
    if (on_disk[100] != std::byte{0x11} || on_disk[200] != std::byte{0x22}) _exit(13);
    if (first_mismatch(on_disk.data() + 4096, data.data() + 4096, kMiB - 4096) != -1) _exit(14);
    _exit(0);
  });
  CHECK(status == 0);
}

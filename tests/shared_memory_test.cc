// SPDX-License-Identifier: Apache-2.0
// Shared-memory regions (RegionOptions::shared_memory): a memfd filled
// through an unregistered alias and mapped with UFFDIO_CONTINUE. Every
// byte is checked through the region and through another mapping of the
// memfd (another process's view too); writes are shared; MADV_DONTNEED
// keeps the bytes, MADV_REMOVE reads zeros; a backend error is SIGBUS;
// the options that cannot work with it are refused by name.
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <thread>
#include <vector>

#include "faultline/faultline.h"
#include "test_backends.h"
#include "test_util.h"

using namespace faultline;
using namespace faultline::test;

namespace {

constexpr uint64_t kMiB = 1024 * 1024;

RegionOptions shared_options(uint32_t fill) {
  RegionOptions o;
  o.shared_memory = true;
  o.fill_size = fill;
  return o;
}

// The memfd mapped again, read-only: what another process mapping it sees.
struct SecondView {
  explicit SecondView(const Region& r)
      : len((r.size() + 4095) / 4096 * 4096),
        p(static_cast<std::byte*>(mmap(nullptr, len, PROT_READ, MAP_SHARED, r.shared_memory_fd(), 0))) {
    REQUIRE(p != MAP_FAILED);
  }
  ~SecondView() { munmap(p, len); }
  size_t len;
  std::byte* p;
};

}  // namespace

TEST_CASE("a shared-memory region serves every byte from the memfd it fills", "[runtime][shared]") {
  Runtime rt;
  if (!rt.mode().minor_shmem) {
    WARN("SKIPPED: the kernel does not offer UFFD_FEATURE_MINOR_SHMEM");
    return;
  }
  uint32_t fill = GENERATE(4096u, 65536u, 2097152u);
  bool file = GENERATE(false, true);  // io_uring reads into the alias; or lent bytes copied there
  INFO("fill " << fill << (file ? " file" : " memory"));
  auto data = pattern(3 * kMiB + 1234, fill);
  TempFile tf(data);
  std::shared_ptr<Backend> backend =
      file ? std::shared_ptr<Backend>(std::make_shared<FileBackend>(tf.path())) : MemoryBackend::borrow(data);
  RegionOptions o = shared_options(fill);
  o.length = 5 * kMiB;  // the rest reads zeros (zero pages in the memfd)
  Region r = rt.map(backend, o);
  REQUIRE(r.shared_memory_fd() >= 0);
  std::vector<std::byte> want = data;
  want.resize(r.size());
  std::vector<long> bad(4, -2);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      long b = -1;
      size_t pages = r.size() / 4096;
      for (size_t k = 0; k < pages && b < 0; ++k) {
        size_t at = ((k * 7 + static_cast<size_t>(t) * pages / 4) % pages) * 4096;
        if (std::memcmp(r.data() + at, want.data() + at, 4096) != 0) b = static_cast<long>(at);
      }
      bad[t] = b;
    });
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) CHECK(bad[t] == -1);
  CHECK(wait_until([&] { return r.stats().bytes_installed == r.size(); }));
  CHECK(r.stats().errors == 0);
  SecondView view(r);
  CHECK(first_mismatch(view.p, want.data(), r.size()) == -1);
}

TEST_CASE("a shared-memory region's writes are shared, DONTNEED keeps them, MADV_REMOVE reads zeros",
          "[runtime][shared][events]") {
  Runtime rt;
  if (!rt.mode().minor_shmem) {
    WARN("SKIPPED: the kernel does not offer UFFD_FEATURE_MINOR_SHMEM");
    return;
  }
  auto data = pattern(2 * kMiB, 5);
  RegionOptions o = shared_options(64 * 1024);
  o.writable = true;
  o.readahead = false;
  Region r = rt.map(MemoryBackend::borrow(data), o);
  SecondView view(r);
  REQUIRE(first_mismatch(r.data(), data.data(), kMiB) == -1);  // the first MiB placed
  std::memset(r.data() + 4096, 0xab, 4096);
  CHECK(view.p[4096] == std::byte{0xab});  // the write is in the memfd
  CHECK(data[4096] != std::byte{0xab});    // never in the backend

  // DONTNEED drops this mapping's pages only: they come back as written.
  REQUIRE(madvise(r.data(), kMiB, MADV_DONTNEED) == 0);
  CHECK(r.data()[4096] == std::byte{0xab});
  CHECK(r.data()[4096 * 2 + 1] == data[4096 * 2 + 1]);
  // MADV_REMOVE punches them out of the memfd: zeros, and writable again.
  REQUIRE(madvise(r.data(), 128 * 1024, MADV_REMOVE) == 0);
  for (size_t at = 0; at < 128 * 1024; at += 4096) REQUIRE(r.data()[at + 9] == std::byte{0});
  CHECK(r.data()[128 * 1024 + 3] == data[128 * 1024 + 3]);  // the next chunk is untouched
  r.data()[5] = std::byte{0x11};
  CHECK(view.p[5] == std::byte{0x11});
  // A chunk never loaded that is removed reads zeros too.
  REQUIRE(madvise(r.data() + kMiB, 64 * 1024, MADV_REMOVE) == 0);
  CHECK(r.data()[kMiB + 100] == std::byte{0});
  CHECK(r.data()[kMiB + 64 * 1024 + 100] == data[kMiB + 64 * 1024 + 100]);
  CHECK(r.stats().errors == 0);
}

TEST_CASE("another process maps a shared-memory region's memfd and sees what was placed", "[runtime][shared][fork]") {
  Runtime rt;
  if (!rt.mode().minor_shmem) {
    WARN("SKIPPED: the kernel does not offer UFFD_FEATURE_MINOR_SHMEM");
    return;
  }
  auto data = pattern(kMiB, 8);
  RegionOptions o = shared_options(64 * 1024);
  o.writable = true;
  Region r = rt.map(MemoryBackend::borrow(data), o);
  r.drain();
  REQUIRE(wait_until([&] { return r.stats().bytes_installed == kMiB; }));
  r.data()[77] = std::byte{0x42};
  int fd = r.shared_memory_fd();
  // The child inherits the descriptor (not the mapping: MADV_DONTFORK) and maps it.
  int status = run_in_child([&] {
    auto* p = static_cast<std::byte*>(mmap(nullptr, kMiB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0));
    check(p != MAP_FAILED, "mmap of the memfd in the child");
    std::vector<std::byte> want = data;
    want[77] = std::byte{0x42};
    check(std::memcmp(p, want.data(), kMiB) == 0, "the child sees the placed bytes and the parent's write");
    p[78] = std::byte{0x43};  // and writes back to the parent
  });
  CHECK(status == 0);
  CHECK(r.data()[78] == std::byte{0x43});
}

TEST_CASE("a backend error in a shared-memory region is SIGBUS for the access", "[runtime][shared][errors][fork]") {
  Runtime rt;
  if (!rt.mode().minor_shmem) {
    WARN("SKIPPED: the kernel does not offer UFFD_FEATURE_MINOR_SHMEM");
    return;
  }
  auto data = pattern(kMiB, 3);
  // All in the child: a shared-memory region is not inherited (MADV_DONTFORK).
  int status = run_in_child([&] {
    auto backend = std::make_shared<ScriptedBackend>(data);
    backend->fail_at(256 * 1024, 64 * 1024, EIO);
    RegionOptions o = shared_options(64 * 1024);
    o.readahead = false;
    Runtime child_rt;
    Region r = child_rt.map(backend, o);
    catch_fault_signals();
    std::byte b{};
    check(read_signal(r.data() + 256 * 1024 + 10, &b) == SIGBUS, "SIGBUS on the failed chunk");
    check(read_signal(r.data() + 10, &b) == 0 && b == data[10], "the rest is served");
  });
  CHECK(status == 0);
}

TEST_CASE("shared memory refuses what cannot work with it, naming the option", "[runtime][shared][errors]") {
  auto data = pattern(kMiB);
  auto backend = MemoryBackend::borrow(data);
  Runtime rt;
  auto map_error = [&](const RegionOptions& o) { return error_of([&] { rt.map(backend, o); }); };
  RegionOptions o = shared_options(64 * 1024);
  o.budget.bytes = 16 * 64 * 1024;
  CHECK_THAT(map_error(o), Catch::Contains("a memory budget does not work with RegionOptions.shared_memory"));
  o = shared_options(64 * 1024);
  o.writable = o.track_dirty = true;
  CHECK_THAT(map_error(o), Catch::Contains("RegionOptions.track_dirty does not work with RegionOptions.shared_memory"));
  o = shared_options(64 * 1024);
  o.reload_removed = true;
  CHECK_THAT(map_error(o), Catch::Contains("RegionOptions.reload_removed (the memfd keeps the bytes)"));
  o = shared_options(2 * 1024 * 1024);
  o.page_size = 2 * 1024 * 1024;
  CHECK_THAT(map_error(o), Catch::Contains("RegionOptions.page_size = 2097152 does not work with RegionOptions.shared_memory"));
}

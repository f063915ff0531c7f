// SPDX-License-Identifier: Apache-2.0
// faultline-stress-writeback: writer threads, evictions under a memory
// budget and flushes racing on a write-back region four times larger than
// its budget, for a fixed time; then every byte of the file is compared
// with a shadow copy kept by the writers. Exits 0 only if no byte is lost
// or wrong. Run by scripts/stress_writeback.sh (outside the test suite:
// it runs for a minute by default).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "faultline/faultline.h"

namespace {

constexpr uint64_t kPage = 4096;

uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "faultline-stress-writeback: %s\n", what.c_str());
  std::exit(2);
}

uint64_t arg_u64(const char* s, const char* name) {
  char* end = nullptr;
  unsigned long long v = std::strtoull(s, &end, 10);
  if (!*s || *end) die(std::string(name) + ": not a number: '" + s + "'");
  return v;
}

}  // namespace

int main(int argc, char** argv) {
  std::string path = "/var/tmp/faultline-stress-writeback.dat";
  uint64_t seconds = 60, data_mib = 256, budget_mib = 64, writers = 4, fill_kib = 64;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc) die(a + ": missing value");
      return argv[++i];
    };
    if (a == "--seconds") seconds = arg_u64(value(), "--seconds");
    else if (a == "--data-mib") data_mib = arg_u64(value(), "--data-mib");
    else if (a == "--budget-mib") budget_mib = arg_u64(value(), "--budget-mib");
    else if (a == "--writers") writers = arg_u64(value(), "--writers");
    else if (a == "--fill-kib") fill_kib = arg_u64(value(), "--fill-kib");
    else if (a == "--file") path = value();
    else die("unknown argument '" + a + "' (--seconds N --data-mib N --budget-mib N --writers N --fill-kib N --file PATH)");
  }
  if (writers < 1 || writers > 64 || data_mib < 4 || budget_mib < 1 || budget_mib >= data_mib) die("bad sizes");
  const uint64_t size = data_mib << 20, pages = size / kPage;

  // The file starts with known bytes; the shadow starts equal to it.
  auto* shadow = static_cast<std::byte*>(mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  if (shadow == MAP_FAILED) die("cannot allocate the shadow copy");
  for (uint64_t i = 0; i < size / 8; ++i) reinterpret_cast<uint64_t*>(shadow)[i] = mix(i);
  {
    int fd = open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) die("cannot create " + path + ": " + std::strerror(errno));
    for (uint64_t off = 0; off < size;) {
      ssize_t n = pwrite(fd, shadow + off, std::min<uint64_t>(size - off, 8 << 20), static_cast<off_t>(off));
      if (n <= 0) die("cannot write " + path + ": " + std::strerror(errno));
      off += static_cast<uint64_t>(n);
    }
    fsync(fd);
    close(fd);
  }

  std::atomic<uint64_t> writes{0}, flushes{0}, bytes_written{0};
  faultline::StatsSnapshot stats;
  {
    faultline::Runtime rt;
    faultline::FileBackendOptions fo;
    fo.writable = true;
    faultline::RegionOptions o;
    o.writable = true;
    o.write_back = true;
    o.fill_size = static_cast<uint32_t>(fill_kib << 10);
    o.budget.bytes = budget_mib << 20;
    faultline::Region region = rt.map(std::make_shared<faultline::FileBackend>(path, fo), o);
    std::byte* mem = region.data();
    std::printf("stress: %llu MiB write-back region, budget %llu MiB, %llu writers, fill %llu KiB, %llu s; %s\n",
                (unsigned long long)data_mib, (unsigned long long)budget_mib, (unsigned long long)writers,
                (unsigned long long)fill_kib, (unsigned long long)seconds, rt.mode().describe().c_str());
    std::fflush(stdout);

    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    // Writer w owns the pages p with p % writers == w (so its shadow
    // updates need no lock): runs of 1..512 bytes at random offsets, half
    // of them in a hot eighth of its pages (kept resident, rewritten while
    // flushed), the rest anywhere (evicted, reloaded, written again).
    for (uint64_t w = 0; w < writers; ++w)
      threads.emplace_back([&, w] {
        uint64_t s = mix(w + 1), n = 0, own = pages / writers, bytes = 0;
        std::byte buf[512];
        while (!stop.load(std::memory_order_relaxed)) {
          uint64_t r = mix(s++);
          uint64_t slot = (r & 1) ? (r >> 8) % (own / 8 + 1) : (r >> 8) % own;
          uint64_t page = slot * writers + w;
          if (page >= pages) continue;
          uint64_t r2 = mix(s++);
          uint64_t len = 1 + r2 % 512, at = (r2 >> 16) % (kPage - len + 1);
          for (uint64_t k = 0; k < len; ++k) buf[k] = std::byte(static_cast<uint8_t>(mix(s + k) >> 7));
          s += len;
          std::memcpy(mem + page * kPage + at, buf, len);
          std::memcpy(shadow + page * kPage + at, buf, len);
          ++n;
          bytes += len;
        }
        writes += n;
        bytes_written += bytes;
      });
    threads.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) {
        region.flush();
        ++flushes;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    });
    auto start = std::chrono::steady_clock::now();
    for (uint64_t t = 0; t < seconds; ++t) {
      std::this_thread::sleep_for(std::chrono::seconds(1));
      if (t % 10 == 9) {
        auto s = region.stats();
        std::printf("  %3llu s: %llu flushes, %llu evicted chunks, %llu refaults, resident %.1f MiB\n",
                    (unsigned long long)(t + 1), (unsigned long long)flushes.load(),
                    (unsigned long long)s.evicted_chunks, (unsigned long long)s.refaults,
                    static_cast<double>(s.resident_bytes) / (1 << 20));
        std::fflush(stdout);
      }
    }
    stop = true;
    for (auto& t : threads) t.join();
    double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    stats = region.stats();
    region.close();  // the last write-back
    std::printf("ran %.1f s: %llu writes (%.1f MiB), %llu flushes, %llu faults, %llu evicted chunks (%.0f MiB), "
                "%llu refaults\n",
                elapsed, (unsigned long long)writes.load(), static_cast<double>(bytes_written.load()) / (1 << 20),
                (unsigned long long)flushes.load(), (unsigned long long)stats.faults,
                (unsigned long long)stats.evicted_chunks, static_cast<double>(stats.evicted_bytes) / (1 << 20),
                (unsigned long long)stats.refaults);
  }

  // Every byte of the file against the shadow.
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) die("cannot reopen " + path);
  std::vector<std::byte> buf(8 << 20);
  uint64_t wrong = 0, first_wrong = UINT64_MAX;
  for (uint64_t off = 0; off < size; off += buf.size()) {
    uint64_t n = std::min<uint64_t>(buf.size(), size - off);
    if (pread(fd, buf.data(), n, static_cast<off_t>(off)) != static_cast<ssize_t>(n)) die("cannot read " + path);
    for (uint64_t i = 0; i < n; ++i)
      if (buf[i] != shadow[off + i]) {
        ++wrong;
        first_wrong = std::min(first_wrong, off + i);
      }
  }
  close(fd);
  if (wrong == 0) {
    std::printf("compared %llu bytes with the shadow copy: 0 lost or wrong\n", (unsigned long long)size);
    unlink(path.c_str());
    return 0;
  }
  std::printf("compared %llu bytes with the shadow copy: %llu WRONG (first at offset %llu); file kept: %s\n",
              (unsigned long long)size, (unsigned long long)wrong, (unsigned long long)first_wrong, path.c_str());
  return 1;
}

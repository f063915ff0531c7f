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
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "cli.h"
#include "faultline/faultline.h"

namespace {

constexpr uint64_t kPage = 4096;

uint64_t mix(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// A failure of the stress itself (not of the bytes): exit 1 through cli::run.
[[noreturn]] void die(const std::string& what) { throw faultline::Error(what); }

// The command line; sizes take the suffixes of tools/cli/cli.h.
struct StressArgs {
  std::string path = "/var/tmp/faultline-stress-writeback.dat";
  uint64_t seconds = 60, writers = 4;
  uint64_t data = 256ull << 20, budget = 64ull << 20;
  uint32_t fill = 64 << 10;
};

void add_options(CLI::App& app, StressArgs& a) {
  app.description(
      "Writer threads, evictions under a memory budget and flushes race on one write-back region for S\n"
      "seconds; then every byte of the file is compared with the writers' shadow copy (exit 1 if any is\n"
      "lost or wrong).");
  faultline::cli::add_version(app, "faultline-stress-writeback");
  app.add_option("--seconds", a.seconds, "how long the writers run (default 60)")
      ->type_name("S")
      ->check(CLI::Range(1, 86400));
  faultline::cli::add_size(app, "--data", a.data, "size of the region and its file, 4M to 64G (default 256M)",
                           4ull << 20, 64ull << 30)
      ->check(faultline::cli::multiple_of(kPage));
  faultline::cli::add_size(app, "--budget", a.budget, "the region's memory budget, below --data (default 64M)", kPage)
      ->check(faultline::cli::multiple_of(kPage));
  app.add_option("--writers", a.writers, "writer threads (default 4)")->type_name("N")->check(CLI::Range(1, 64));
  faultline::cli::add_size(app, "--fill", a.fill, "the region's fill size, 4K to 2M (default 64K)", kPage, 2u << 20)
      ->check(faultline::cli::power_of_two());
  app.add_option("--file", a.path, "the file, created or truncated, and removed if no byte is wrong "
                                   "(default /var/tmp/faultline-stress-writeback.dat)")
      ->type_name("PATH");
  app.final_callback([&a] {
    if (a.budget >= a.data)
      throw CLI::ValidationError("--budget", "must be below --data (" + std::to_string(a.data) + " bytes), got " +
                                                 std::to_string(a.budget));
    if (a.budget < 4ull * a.fill)  // the runtime's rule, checked before the file is written
      throw CLI::ValidationError("--budget", "must hold at least 4 fills (4 x --fill " + std::to_string(a.fill) +
                                                 " bytes), got " + std::to_string(a.budget));
  });
}

int stress(const StressArgs& args) {
  const std::string& path = args.path;
  const uint64_t seconds = args.seconds, writers = args.writers;
  const uint64_t size = args.data, pages = size / kPage;

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
    o.fill_size = args.fill;
    o.budget.bytes = args.budget;
    faultline::Region region = rt.map(std::make_shared<faultline::FileBackend>(path, fo), o);
    std::byte* mem = region.data();
    std::printf("stress: %.0f MiB write-back region, budget %.0f MiB, %llu writers, fill %u KiB, %llu s; %s\n",
                static_cast<double>(size) / (1 << 20), static_cast<double>(args.budget) / (1 << 20),
                (unsigned long long)writers, args.fill >> 10, (unsigned long long)seconds,
                rt.mode().describe().c_str());
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

}  // namespace

int main(int argc, char** argv) {
  StressArgs args;
  CLI::App app("", "faultline-stress-writeback");
  add_options(app, args);
  return faultline::cli::run(app, argc, argv, [&args] { return stress(args); });
}

// SPDX-License-Identifier: Apache-2.0
// The lazy_dataset sample's yardstick: what one run of the queries cost
// (wall time, storage reads, page faults, resident bytes, measured the same
// way whatever serves the mapping), the plain-mmap baseline run, and the
// table that puts the runs side by side.
#pragma once

#include <faultline/stats.h>

#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "record_file.h"
#include "sample_util.h"

namespace run_report {

struct FaultCounts {
  uint64_t major = 0, minor = 0;
};

inline FaultCounts rusage_faults() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return {static_cast<uint64_t>(ru.ru_majflt), static_cast<uint64_t>(ru.ru_minflt)};
}

// read_bytes from /proc/self/io: bytes this process caused to be fetched from
// the storage layer (all threads, io_uring workers included).
inline std::optional<uint64_t> proc_read_bytes() {
  std::ifstream in("/proc/self/io");
  std::string k;
  uint64_t v;
  while (in >> k >> v)
    if (k == "read_bytes:") return v;
  return std::nullopt;
}

// Rss of the mapping that starts at `start`, from /proc/self/smaps.
inline std::optional<uint64_t> mapping_rss(const void* start) {
  std::ifstream in("/proc/self/smaps");
  std::string line;
  const auto want = reinterpret_cast<uintptr_t>(start);
  bool in_it = false;
  while (std::getline(in, line)) {
    if (!line.empty() && std::isxdigit(static_cast<unsigned char>(line[0])) && line.find('-') != std::string::npos &&
        line.find(':') > line.find('-')) {
      in_it = std::strtoull(line.c_str(), nullptr, 16) == want;
      continue;
    }
    if (in_it && line.rfind("Rss:", 0) == 0) return std::strtoull(line.c_str() + 4, nullptr, 10) * 1024;
  }
  return std::nullopt;
}

// Ends the process (exit 1) if it is not destroyed within `seconds`: a run
// that hangs (a fault never served) fails instead of blocking forever.
class Watchdog {
 public:
  Watchdog(int seconds, std::string what) : what_(std::move(what)) {
    thread_ = std::thread([this, seconds] {
      std::unique_lock lk(mu_);
      if (!cv_.wait_for(lk, std::chrono::seconds(seconds), [this] { return done_; })) {
        std::fflush(stdout);
        std::fprintf(stderr, "lazy_dataset: FAIL: the %s run did not finish within %d s (a fault that is never served?)\n",
                     what_.c_str(), seconds);
        std::_Exit(1);
      }
    });
  }
  ~Watchdog() {
    {
      std::lock_guard lk(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::string what_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

struct RunReport {
  std::string name;
  record_file::QueryResult q;
  std::optional<uint64_t> read_bytes;  // /proc/self/io delta
  FaultCounts faults;                  // getrusage delta
  std::optional<uint64_t> rss;         // of the mapping, after the queries
  std::optional<faultline::StatsSnapshot> stats;  // faultline runs only
};

// Runs `queries` (returning a QueryResult) over `mapping` under a watchdog
// and measures around it.
template <typename Queries>
RunReport measure(const std::string& name, int timeout_s, const void* mapping, Queries queries) {
  RunReport rep;
  rep.name = name;
  Watchdog wd(timeout_s, name);
  const auto io0 = proc_read_bytes();
  const FaultCounts f0 = rusage_faults();
  rep.q = queries();
  const FaultCounts f1 = rusage_faults();
  const auto io1 = proc_read_bytes();
  if (io0 && io1) rep.read_bytes = *io1 - *io0;
  rep.faults = {f1.major - f0.major, f1.minor - f0.minor};
  rep.rss = mapping_rss(mapping);
  return rep;
}

// The baseline: the same queries over a plain MAP_SHARED mapping of the file.
inline RunReport run_mmap(const std::string& path, uint64_t size, const record_file::Plan& plan, int timeout_s) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) faultline::throw_errno("cannot open " + path, errno);
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  const int err = errno;
  ::close(fd);
  if (p == MAP_FAILED) faultline::throw_errno("mmap of " + path, err);
  const auto* base = static_cast<const std::byte*>(p);
  RunReport rep = measure("mmap", timeout_s, p, [&] { return record_file::run_queries(base, size, plan); });
  ::munmap(p, size);
  return rep;
}

// The kernel's read-ahead window for the file's block device (mmap's
// read-around on a major fault is up to this much), in KiB.
inline std::optional<uint64_t> read_ahead_kb(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  const std::string dev = std::to_string(major(st.st_dev)) + ":" + std::to_string(minor(st.st_dev));
  for (const std::string& f : {"/sys/class/bdi/" + dev + "/read_ahead_kb", "/sys/dev/block/" + dev + "/queue/read_ahead_kb",
                               "/sys/dev/block/" + dev + "/../queue/read_ahead_kb"}) {
    std::ifstream in(f);
    uint64_t kb;
    if (in >> kb) return kb;
  }
  return std::nullopt;
}

// The runs side by side, one column each.
inline void print_table(const std::vector<RunReport>& runs, uint64_t file_size) {
  using sample::human_bytes, sample::human_ns, sample::percent, sample::quantile;
  auto row = [&](const char* label, auto cell) {
    std::printf("  %-34s", label);
    for (const auto& r : runs) std::printf(" %22s", cell(r).c_str());
    std::printf("\n");
  };
  const std::string na = "n/a";
  std::printf("  %-34s", "");
  for (const auto& r : runs) std::printf(" %22s", r.name.c_str());
  std::printf("\n");
  row("wall time (queries)", [](const RunReport& r) { return human_ns(r.q.wall_ns); });
  row("point lookup p50 / p99", [](const RunReport& r) {
    return human_ns(quantile(r.q.lookup_ns, 0.5)) + " / " + human_ns(quantile(r.q.lookup_ns, 0.99));
  });
  row("bytes read by the backend", [&](const RunReport& r) { return r.stats ? human_bytes(r.stats->bytes_read) : na; });
  row("storage reads (/proc/self/io)", [&](const RunReport& r) {
    return r.read_bytes ? human_bytes(*r.read_bytes) : std::string("unavailable");
  });
  row("faults served by faultline", [&](const RunReport& r) { return r.stats ? std::to_string(r.stats->faults) : na; });
  row("fault service p50 / p99", [&](const RunReport& r) {
    return r.stats ? human_ns(r.stats->latency_p50_ns) + " / " + human_ns(r.stats->latency_p99_ns) : na;
  });
  row("page faults major / minor (rusage)", [](const RunReport& r) {
    return std::to_string(r.faults.major) + " / " + std::to_string(r.faults.minor);
  });
  row("loaded into the mapping (Rss)", [&](const RunReport& r) {
    return r.rss ? human_bytes(*r.rss) + " " + percent(*r.rss, file_size) : std::string("unavailable");
  });
  row("installed by faultline", [&](const RunReport& r) {
    return r.stats ? human_bytes(r.stats->bytes_installed) + " " + percent(r.stats->bytes_installed, file_size) : na;
  });
  row("read-ahead chunks / hits", [&](const RunReport& r) {
    return r.stats ? std::to_string(r.stats->readahead_chunks) + " / " + std::to_string(r.stats->readahead_hits) : na;
  });
  row("records verified / bad", [](const RunReport& r) {
    return std::to_string(r.q.records_checked - r.q.bad_records) + " / " + std::to_string(r.q.bad_records);
  });
}

inline void print_notes() {
  std::printf("\nnotes: 'storage reads' is the read_bytes delta of /proc/self/io (all threads of this\n"
              "process, io_uring workers included) over the queries; 'page faults' are getrusage deltas;\n"
              "'Rss' is the mapping's resident size in /proc/self/smaps after the queries.\n");
}

}  // namespace run_report

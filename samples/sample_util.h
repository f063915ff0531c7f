// SPDX-License-Identifier: Apache-2.0
// What the samples share, so each sample's file shows only its use of
// faultline: the clock, percentiles, byte counts for humans, and the one
// convention for cold runs.
//
// Cold runs. A sample's "cold" run starts with its own files out of the page
// cache (posix_fadvise DONTNEED: no privilege needed, nobody else's cache
// touched), so the first read of each page goes to storage. Only with --cold
// does it drop the whole machine's page cache (sync; echo 3 >
// /proc/sys/vm/drop_caches), which needs root and slows every other program
// on the machine for a while; the sample then says so in its output.
#pragma once

#include <faultline/error.h>

#include <CLI/CLI.hpp>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace sample {

inline uint64_t now_ns() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

// The q-quantile (0..1) of `v`, nearest rank; 0 if v is empty.
inline uint64_t quantile(std::vector<uint64_t> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5))];
}

// "512 B", "1.5 MiB".
inline std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  for (; b >= 1024 && u < 4; ++u) b /= 1024;
  char buf[64];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", b, units[u]);
  return buf;
}

// "1.25 us", "12.3 ms".
inline std::string human_ns(uint64_t ns) {
  char buf[64];
  if (ns < 10'000'000)
    std::snprintf(buf, sizeof buf, ns < 10'000 ? "%.2f us" : "%.1f us", static_cast<double>(ns) / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.1f ms", static_cast<double>(ns) / 1e6);
  return buf;
}

// "12.34%" of `whole`.
inline std::string percent(double part, double whole) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f%%", whole > 0 ? 100.0 * part / whole : 0.0);
  return buf;
}

// Evicts `path`'s clean pages from the page cache (after writing back any
// dirty ones): the next read of the file goes to storage.
inline void evict_file_pages(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) faultline::throw_errno("cannot open " + path + " to evict its cached pages", errno);
  fdatasync(fd);
  const int err = posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
  if (err != 0) faultline::throw_errno("posix_fadvise(DONTNEED) of " + path, err);
}

// Reads all of `path` so that its pages are in the page cache (a warm run).
inline void warm_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) faultline::throw_errno("cannot open " + path + " to read it into the page cache", errno);
  std::vector<char> buf(1 << 20);
  ssize_t n;
  while ((n = ::read(fd, buf.data(), buf.size())) > 0 || (n < 0 && errno == EINTR)) {
  }
  const int err = errno;
  ::close(fd);
  if (n < 0) faultline::throw_errno("cannot read " + path, err);
}

// Empties the whole machine's page cache. Needs root.
inline void drop_page_cache() {
  sync();
  const int fd = ::open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
  if (fd < 0) faultline::throw_errno("--cold: cannot open /proc/sys/vm/drop_caches (needs root)", errno);
  const bool ok = ::write(fd, "3\n", 2) == 2;
  const int err = errno;
  ::close(fd);
  if (!ok) faultline::throw_errno("--cold: cannot write /proc/sys/vm/drop_caches", err);
}

// Adds --cold (see the header) into `global`.
inline CLI::Option* add_cold_flag(CLI::App& app, bool& global) {
  return app.add_flag("--cold", global,
                      "cold runs drop the whole machine's page cache\n"
                      "(sync; echo 3 > /proc/sys/vm/drop_caches; needs\n"
                      "root; disturbs every other program) instead of\n"
                      "evicting only this sample's files");
}

// Starts a cold run over `path`: evicts its pages, or with `global` (--cold)
// drops the whole page cache.
inline void start_cold(const std::string& path, bool global) {
  if (global) drop_page_cache();
  else evict_file_pages(path);
}

// One line for the output saying what a cold run started from.
inline std::string cold_note(const std::string& path, bool global) {
  if (global) return "cold runs: the whole machine's page cache dropped first (--cold: sync; echo 3 > /proc/sys/vm/drop_caches)";
  return "cold runs: " + path + "'s pages evicted from the page cache first (posix_fadvise DONTNEED; the rest of the "
         "cache untouched, --cold drops it all)";
}

}  // namespace sample

// SPDX-License-Identifier: Apache-2.0
// Helpers shared by the tests: temporary files, deterministic data, child
// processes that are expected to die of a signal, and leak counters.
#pragma once

#include <chrono>
#include <thread>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "faultline/error.h"

namespace faultline::test {

// Byte i of the deterministic pattern used everywhere: never constant over a
// page, different for every seed, so a page installed at the wrong offset or
// from the wrong source is caught.
inline std::byte pattern_byte(uint64_t i, uint32_t seed = 1) {
  uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull ^ (uint64_t{seed} << 32);
  x ^= x >> 29;
  return std::byte(static_cast<uint8_t>(x ^ (x >> 17)));
}
std::vector<std::byte> pattern(size_t n, uint32_t seed = 1);

// A file in a fresh temporary directory, removed with the object.
class TempFile {
 public:
  explicit TempFile(const std::vector<std::byte>& contents);
  explicit TempFile(size_t size, uint32_t seed = 1);  // pattern(size, seed)
  ~TempFile();
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string dir_;
  std::string path_;
};

// Runs `body` in a forked child. Returns the signal that ended it, or 0 if it
// exited with status 0, or -1 if it exited with another status. The child is
// killed after `timeout_ms` (a hang shows up as SIGKILL).
int run_in_child(const std::function<void()>& body, int timeout_ms = 20000);

// Counts for leak checks.
size_t open_fd_count();
size_t mapping_count();  // lines in /proc/self/maps
size_t thread_count();
size_t threads_named(const std::string& name);  // by /proc/self/task/*/comm
// Whether any part of [addr, addr + len) is still registered with a
// userfaultfd (a leaked region; a plain mapping reusing the range is not).
bool is_uffd_registered(const void* addr, size_t len);

bool is_root();

// The message of the faultline::Error that f() throws, or "(no error)".
template <typename F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// Keeps at least `pages` 2 MiB huge pages free in the machine's pool while
// it lives: as root it raises vm.nr_hugepages as needed and puts it back
// afterwards. One holder at a time across test processes (a lock file), so
// parallel tests do not undo each other's reservations. ok() false: why()
// says what is missing, for a SKIPPED message.
class HugePages {
 public:
  explicit HugePages(size_t pages);
  ~HugePages();
  HugePages(const HugePages&) = delete;
  HugePages& operator=(const HugePages&) = delete;
  bool ok() const { return why_.empty(); }
  const std::string& why() const { return why_; }

 private:
  int lock_fd_ = -1;
  long restore_ = -1;  // vm.nr_hugepages to put back, or -1
  std::string why_;
};
// Bytes of the file at `path` in the page cache (mincore on a fresh mapping).
uint64_t page_cache_bytes(const std::string& path);

// Compares region bytes with the expected ones; the first differing index, or -1.
long first_mismatch(const std::byte* got, const std::byte* want, size_t n);

// For code running in a child process, where Catch cannot report: says what
// failed on stderr and throws, so the child exits non-zero.
void check(bool ok, const char* what);

// SIGBUS/SIGSEGV handling for read_signal(), installed process-wide (call it
// in a forked child). A signal outside read_signal() prints a backtrace and
// kills the process as usual.
void catch_fault_signals();
// Reads *p on the calling thread; returns 0 (and the byte in *out), or the
// signal the read raised. Needs catch_fault_signals().
int read_signal(const std::byte* p, std::byte* out = nullptr);

// Polls pred every millisecond for up to ms milliseconds; whether it held.
// For conditions another thread or process makes true "soon" (statistics
// updated after the bytes arrive, a drain finishing): never a timed assert.
template <typename Pred>
bool wait_until(Pred pred, int ms = 20000) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

}  // namespace faultline::test

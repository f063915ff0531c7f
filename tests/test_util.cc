// SPDX-License-Identifier: Apache-2.0
#include "test_util.h"

#include <dirent.h>
#include <execinfo.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

namespace faultline::test {

std::vector<std::byte> pattern(size_t n, uint32_t seed) {
  std::vector<std::byte> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = pattern_byte(i, seed);
  return v;
}

TempFile::TempFile(const std::vector<std::byte>& contents) {
  char tmpl[] = "/tmp/faultline-test-XXXXXX";
  if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
  dir_ = tmpl;
  path_ = dir_ + "/data";
  std::ofstream out(path_, std::ios::binary);
  out.write(reinterpret_cast<const char*>(contents.data()), static_cast<std::streamsize>(contents.size()));
  if (!out) throw std::runtime_error("cannot write " + path_);
}

TempFile::TempFile(size_t size, uint32_t seed) : TempFile(pattern(size, seed)) {}

TempFile::~TempFile() {
  unlink(path_.c_str());
  rmdir(dir_.c_str());
}

int run_in_child(const std::function<void()>& body, int timeout_ms) {
  pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    // The test framework's own handlers would report the child's expected
    // signals as failures; the child dies of them instead.
    for (int sig : {SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE}) signal(sig, SIG_DFL);
    try {
      body();
    } catch (...) {
      _exit(3);
    }
    _exit(0);
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  int status = 0;
  for (;;) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (WIFSIGNALED(status)) return WTERMSIG(status);
  return WEXITSTATUS(status) == 0 ? 0 : -1;
}

static size_t count_dir(const char* path) {
  size_t n = 0;
  if (DIR* d = opendir(path)) {
    while (dirent* e = readdir(d))
      if (e->d_name[0] != '.') ++n;
    closedir(d);
  }
  return n;
}

size_t open_fd_count() { return count_dir("/proc/self/fd"); }
size_t thread_count() { return count_dir("/proc/self/task"); }

size_t threads_named(const std::string& name) {
  size_t n = 0;
  if (DIR* d = opendir("/proc/self/task")) {
    while (dirent* e = readdir(d)) {
      if (e->d_name[0] == '.') continue;
      std::ifstream comm(std::string("/proc/self/task/") + e->d_name + "/comm");
      std::string line;
      std::getline(comm, line);
      if (line == name) ++n;
    }
    closedir(d);
  }
  return n;
}

size_t mapping_count() {
  std::ifstream maps("/proc/self/maps");
  size_t n = 0;
  std::string line;
  while (std::getline(maps, line)) ++n;
  return n;
}

bool is_uffd_registered(const void* addr, size_t len) {
  // /proc/self/smaps lists each mapping's VmFlags; "um" and "uw" mark ranges
  // registered with a userfaultfd (missing / write-protect tracking). Address
  // reuse cannot fool this, unlike asking whether anything is mapped there:
  // malloc or a thread stack may take the range as soon as it is unmapped.
  uintptr_t lo = reinterpret_cast<uintptr_t>(addr), hi = lo + len;
  std::ifstream smaps("/proc/self/smaps");
  std::string line;
  bool overlaps = false;
  while (std::getline(smaps, line)) {
    size_t dash = line.find('-');
    if (dash != std::string::npos && dash > 0 && line.find_first_not_of("0123456789abcdef") == dash) {
      uintptr_t a = std::stoull(line.substr(0, dash), nullptr, 16);
      uintptr_t b = std::stoull(line.substr(dash + 1), nullptr, 16);
      overlaps = a < hi && lo < b;
    } else if (overlaps && line.rfind("VmFlags:", 0) == 0) {
      std::istringstream flags(line.substr(8));
      std::string flag;
      while (flags >> flag)
        if (flag == "um" || flag == "uw") return true;
    }
  }
  return false;
}

bool is_root() { return geteuid() == 0; }

namespace {

long read_long(const std::string& path, const std::string& key = "") {
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (key.empty()) return std::stol(line);
    if (line.rfind(key, 0) == 0) return std::stol(line.substr(key.size()));
  }
  return -1;
}

long free_huge_pages() { return read_long("/proc/meminfo", "HugePages_Free:"); }

bool write_nr_hugepages(long n) {
  std::ofstream out("/proc/sys/vm/nr_hugepages");
  out << n << "\n";
  out.flush();
  return static_cast<bool>(out);
}

}  // namespace

HugePages::HugePages(size_t pages) {
  lock_fd_ = ::open("/tmp/faultline-test-hugepages.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd_ < 0 || ::flock(lock_fd_, LOCK_EX) != 0) {
    why_ = "cannot lock /tmp/faultline-test-hugepages.lock";
    return;
  }
  long want = static_cast<long>(pages), have = free_huge_pages();
  if (have >= want) return;
  if (!is_root()) {
    why_ = "needs " + std::to_string(want) + " free 2 MiB huge pages, HugePages_Free is " + std::to_string(have) +
           " (as root the test reserves them; or sysctl vm.nr_hugepages)";
    return;
  }
  long nr = read_long("/proc/sys/vm/nr_hugepages");
  restore_ = nr;
  if (!write_nr_hugepages(nr + want - have) || free_huge_pages() < want)
    why_ = "the kernel could not reserve " + std::to_string(want) + " free 2 MiB huge pages (HugePages_Free is " +
           std::to_string(free_huge_pages()) + " after raising vm.nr_hugepages)";
}

HugePages::~HugePages() {
  if (restore_ >= 0) write_nr_hugepages(restore_);
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

uint64_t page_cache_bytes(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("page_cache_bytes: cannot open " + path);
  struct stat st {};
  ::fstat(fd, &st);
  size_t len = static_cast<size_t>(st.st_size);
  uint64_t bytes = 0;
  if (len > 0) {
    void* p = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      ::close(fd);
      throw std::runtime_error("page_cache_bytes: cannot map " + path);
    }
    std::vector<unsigned char> vec((len + 4095) / 4096);
    if (::mincore(p, len, vec.data()) == 0)
      for (unsigned char v : vec) bytes += (v & 1) ? 4096 : 0;
    ::munmap(p, len);
  }
  ::close(fd);
  return bytes;
}

long first_mismatch(const std::byte* got, const std::byte* want, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (got[i] != want[i]) return static_cast<long>(i);
  return -1;
}

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "child check failed: %s\n", what);
    throw std::runtime_error(what);
  }
}

namespace {
thread_local sigjmp_buf* t_jump = nullptr;

void on_fault_signal(int sig) {
  if (t_jump) siglongjmp(*t_jump, sig);
  void* frames[32];
  int n = backtrace(frames, 32);
  backtrace_symbols_fd(frames, n, 2);
  signal(sig, SIG_DFL);
  raise(sig);
}
}  // namespace

void catch_fault_signals() {
  struct sigaction sa {};
  sa.sa_handler = on_fault_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_NODEFER;
  sigaction(SIGBUS, &sa, nullptr);
  sigaction(SIGSEGV, &sa, nullptr);
}

int read_signal(const std::byte* p, std::byte* out) {
  sigjmp_buf jump;
  t_jump = &jump;
  int sig = sigsetjmp(jump, 1);
  if (sig == 0) {
    std::byte v = *static_cast<const volatile std::byte*>(p);
    if (out) *out = v;
  }
  t_jump = nullptr;
  return sig;
}

}  // namespace faultline::test

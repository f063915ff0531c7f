// SPDX-License-Identifier: Apache-2.0
// System helpers: clocks, /proc readers, page cache control, the dataset file.
#include <errno.h>
#include <sched.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "bench.h"

namespace fbench {

namespace {

std::string errstr(int e) { return std::strerror(e); }

[[noreturn]] void fail(const std::string& what, int e) {
  throw std::runtime_error(what + ": " + errstr(e));
}

void fill_chunk(uint64_t* words, size_t nwords, uint64_t first_word) {
  for (size_t i = 0; i < nwords; ++i) words[i] = data_word(first_word + i);
}

bool write_all(int fd, const void* buf, size_t len) {
  const char* p = static_cast<const char*>(buf);
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

bool pread_all(int fd, void* buf, size_t len, uint64_t off) {
  char* p = static_cast<char*>(buf);
  while (len > 0) {
    ssize_t n = pread(fd, p, len, static_cast<off_t>(off));
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (n == 0) {
      errno = EIO;
      return false;
    }
    p += n;
    off += static_cast<uint64_t>(n);
    len -= static_cast<size_t>(n);
  }
  return true;
}

// Checks a few pages of an existing file against the generator.
bool dataset_matches(int fd, uint64_t size) {
  const uint64_t npages = size / kPage;
  std::vector<uint64_t> buf(kWordsPerPage);
  Rng rng(12345);
  for (int i = 0; i < 16; ++i) {
    uint64_t pg = i == 0 ? 0 : i == 1 ? npages - 1 : rng.below(npages);
    if (!pread_all(fd, buf.data(), kPage, pg * kPage)) return false;
    for (size_t w = 0; w < kWordsPerPage; ++w)
      if (buf[w] != data_word(pg * kWordsPerPage + w)) return false;
  }
  return true;
}

}  // namespace

double now_s() { return static_cast<double>(now_ns()) * 1e-9; }

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

MemStatus read_mem_status() {
  MemStatus m;
  FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return m;
  char line[256];
  while (std::fgets(line, sizeof line, f)) {
    unsigned long long v = 0;
    if (std::sscanf(line, "VmRSS: %llu kB", &v) == 1) m.rss_kb = v;
    else if (std::sscanf(line, "VmHWM: %llu kB", &v) == 1) m.hwm_kb = v;
  }
  std::fclose(f);
  return m;
}

bool reset_hwm() {
  int fd = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = write(fd, "5", 1) == 1;
  close(fd);
  return ok;
}

std::string drop_caches() {
  sync();
  int fd = open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
  if (fd < 0) return "open /proc/sys/vm/drop_caches: " + errstr(errno) + (geteuid() != 0 ? " (needs root)" : "");
  bool ok = write(fd, "3", 1) == 1;
  int e = errno;
  close(fd);
  if (!ok) return "write /proc/sys/vm/drop_caches: " + errstr(e);
  return "";
}

namespace {
// Pages of the file in the page cache and pages in all (mincore on a fresh
// shared mapping); false on error.
bool cached_pages(const std::string& path, size_t* in, size_t* npages) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat st;
  if (fstat(fd, &st) != 0 || st.st_size == 0) {
    close(fd);
    return false;
  }
  size_t len = static_cast<size_t>(st.st_size);
  void* p = mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED) return false;
  *npages = (len + kPage - 1) / kPage;
  std::vector<unsigned char> vec(*npages);
  bool ok = mincore(p, len, vec.data()) == 0;
  if (ok) {
    *in = 0;
    for (unsigned char c : vec) *in += c & 1;
  }
  munmap(p, len);
  return ok;
}
}  // namespace

double cached_fraction(const std::string& path) {
  size_t in = 0, npages = 0;
  if (!cached_pages(path, &in, &npages)) return -1;
  return static_cast<double>(in) / static_cast<double>(npages);
}

double cached_mb(const std::string& path) {
  size_t in = 0, npages = 0;
  if (!cached_pages(path, &in, &npages)) return -1;
  return static_cast<double>(in * kPage) / (1024.0 * 1024.0);
}

void warm_file(const std::string& path) {
  if (cached_fraction(path) >= 1.0) return;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("open " + path, errno);
  std::vector<char> buf(8 << 20);
  for (;;) {
    ssize_t n = read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
  }
  close(fd);
}

Faults read_faults() {
  rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return {static_cast<uint64_t>(ru.ru_minflt), static_cast<uint64_t>(ru.ru_majflt)};
}

std::string ensure_dataset(const std::string& path, uint64_t size) {
  {
    int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      struct stat st;
      bool same = fstat(fd, &st) == 0 && static_cast<uint64_t>(st.st_size) == size && dataset_matches(fd, size);
      close(fd);
      if (same) return "reusing dataset " + path;
    }
  }
  const std::string tmp = path + ".tmp";
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) fail("create " + tmp, errno);
  const size_t chunk = 8 << 20;
  std::vector<uint64_t> buf(chunk / sizeof(uint64_t));
  double t0 = now_s();
  for (uint64_t off = 0; off < size; off += chunk) {
    size_t len = static_cast<size_t>(std::min<uint64_t>(chunk, size - off));
    fill_chunk(buf.data(), len / sizeof(uint64_t), off / sizeof(uint64_t));
    if (!write_all(fd, buf.data(), len)) {
      int e = errno;
      close(fd);
      unlink(tmp.c_str());
      fail("write " + tmp, e);
    }
  }
  if (fsync(fd) != 0) fail("fsync " + tmp, errno);
  close(fd);
  if (rename(tmp.c_str(), path.c_str()) != 0) fail("rename " + tmp, errno);
  char msg[128];
  std::snprintf(msg, sizeof msg, " (%.1f s)", now_s() - t0);
  return "created dataset " + path + msg;
}

std::byte* load_dataset(const std::string& path, uint64_t size) {
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) fail("mmap of the in-memory dataset copy", errno);
  madvise(p, size, MADV_HUGEPAGE);
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("open " + path, errno);
  if (!pread_all(fd, p, size, 0)) fail("read " + path, errno);
  close(fd);
  return static_cast<std::byte*>(p);
}

MachineInfo machine_info(const std::string& dir) {
  MachineInfo m;
  {
    struct stat st;
    if (stat(dir.c_str(), &st) == 0) {
      char base[96];
      std::snprintf(base, sizeof base, "/sys/dev/block/%u:%u", major(st.st_dev), minor(st.st_dev));
      char link[512];
      ssize_t n = readlink(base, link, sizeof link - 1);
      if (n > 0) {
        link[n] = '\0';
        const char* slash = std::strrchr(link, '/');
        m.disk = slash ? slash + 1 : link;
      }
      for (const char* rel : {"/queue/read_ahead_kb", "/../queue/read_ahead_kb"}) {
        std::ifstream f(std::string(base) + rel);
        if (f >> m.read_ahead_kb) break;
        m.read_ahead_kb = -1;
      }
    }
  }
  {
    std::ifstream f("/proc/cpuinfo");
    std::string line;
    while (std::getline(f, line)) {
      if (line.rfind("model name", 0) == 0) {
        auto c = line.find(':');
        if (c != std::string::npos) m.cpu_model = line.substr(c + 2);
        break;
      }
    }
  }
  m.cores = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  utsname u;
  if (uname(&u) == 0) {
    m.kernel = std::string(u.sysname) + " " + u.release;
    m.hostname = u.nodename;
  }
  {
    std::ifstream f("/proc/meminfo");
    std::string key;
    uint64_t v;
    while (f >> key >> v) {
      if (key == "MemTotal:") {
        m.mem_total_kb = v;
        break;
      }
      f.ignore(1 << 20, '\n');
    }
  }
  {
    std::ifstream f("/sys/kernel/mm/transparent_hugepage/enabled");
    std::getline(f, m.thp);
  }
  time_t t = time(nullptr);
  tm g;
  gmtime_r(&t, &g);
  char buf[64];
  strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &g);
  m.date = buf;
  return m;
}

double loadavg1() {
  double l = -1;
  FILE* f = std::fopen("/proc/loadavg", "r");
  if (f) {
    if (std::fscanf(f, "%lf", &l) != 1) l = -1;
    std::fclose(f);
  }
  return l;
}

namespace {
Pin g_pin = Pin::kNone;
void set_cpus(std::initializer_list<int> cpus) {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int c : cpus) CPU_SET(c, &set);
  sched_setaffinity(0, sizeof set, &set);  // this thread only
}
}  // namespace

void set_pin_mode(Pin p) { g_pin = p; }

void pin_service() {
  if (g_pin == Pin::kSame) set_cpus({0});
  else if (g_pin == Pin::kSplit) set_cpus({1});
}

void pin_app() {
  if (g_pin != Pin::kNone) set_cpus({0});
}

void pin_reset() {
  if (g_pin == Pin::kNone) return;
  cpu_set_t set;
  CPU_ZERO(&set);
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  for (long c = 0; c < n && c < CPU_SETSIZE; ++c) CPU_SET(static_cast<int>(c), &set);
  sched_setaffinity(0, sizeof set, &set);
}

void capture_after(RunResult& r) {
  MemStatus m = read_mem_status();
  r.rss_after_kb = m.rss_kb;
  r.peak_rss_kb = m.hwm_kb;
}

}  // namespace fbench

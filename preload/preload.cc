// SPDX-License-Identifier: Apache-2.0
// libfaultline-preload.so: serves read-only file mappings of unmodified
// programs through faultline (LD_PRELOAD; docs/preload.md).
//
// mmap() of a regular file, PROT_READ only, MAP_PRIVATE or MAP_SHARED, not
// MAP_FIXED, through a read-only descriptor, whose path matches
// FAULTLINE_PRELOAD and whose length is at least FAULTLINE_PRELOAD_MIN becomes a faultline Region over a FileBackend
// of that file, at an address laid out like the real mapping:
//
//   [start, start + served)        the Region (uffd-registered, DONTFORK)
//   [start + served, start + len)  the real file mapping, past the file's
//                                  last page: SIGBUS on access, as mmap gives
//
// To put the Region there, the shim first maps the file for real (which
// reserves the whole range and gives the tail), then asks the runtime to map
// the region and places the runtime's own reservation over the head of it
// (ThreadState::place_at).
//
// Everything that changes an intercepted range other than a whole munmap
// (a partial munmap, mremap, mprotect with PROT_WRITE, mmap MAP_FIXED over
// it, fork) first turns the Region back into the real file mapping at the
// same address (MAP_FIXED: atomic, no hole another thread could map into),
// then destroys the Region without letting it unmap that range
// (ThreadState::keep_at), so the runtime forgets the range completely; the
// application's call then runs on a plain file mapping.
//
// Any failure to set a mapping up prints one line on stderr and returns the
// real mmap's result.
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "atomic_file.h"
#include "config.h"
#include "faultline/error.h"
#include "faultline/file_backend.h"
#include "faultline/runtime.h"
#include "unique_fd.h"

namespace {

using faultline::preload::Config;

constexpr uint64_t kPage = 4096;

using MmapFn = void* (*)(void*, size_t, int, int, int, off_t);
using MunmapFn = int (*)(void*, size_t);
using MremapFn = void* (*)(void*, size_t, size_t, int, ...);
using MadviseFn = int (*)(void*, size_t, int);
using MprotectFn = int (*)(void*, size_t, int);

// The functions the shim stands in for, as libc defines them.
struct Real {
  MmapFn mmap;
  MmapFn mmap64;
  MunmapFn munmap;
  MremapFn mremap;
  MadviseFn madvise;
  MprotectFn mprotect;
};

const Real& real() {
  static const Real r = [] {
    Real x;
    x.mmap = reinterpret_cast<MmapFn>(dlsym(RTLD_NEXT, "mmap"));
    x.mmap64 = reinterpret_cast<MmapFn>(dlsym(RTLD_NEXT, "mmap64"));
    x.munmap = reinterpret_cast<MunmapFn>(dlsym(RTLD_NEXT, "munmap"));
    x.mremap = reinterpret_cast<MremapFn>(dlsym(RTLD_NEXT, "mremap"));
    x.madvise = reinterpret_cast<MadviseFn>(dlsym(RTLD_NEXT, "madvise"));
    x.mprotect = reinterpret_cast<MprotectFn>(dlsym(RTLD_NEXT, "mprotect"));
    if (!x.mmap64) x.mmap64 = x.mmap;
    return x;
  }();
  return r;
}

// Per thread: set while the shim calls into the runtime on this thread, so
// the runtime's own mmap/munmap go straight to libc (and the two hand-overs
// between the shim and the runtime's calls happen).
struct ThreadState {
  int in_runtime = 0;
  void* place_at = nullptr;  // the runtime's reservation of place_len bytes goes here (MAP_FIXED)
  size_t place_len = 0;
  void* keep_at = nullptr;  // the runtime's munmap of exactly this range is skipped
  size_t keep_len = 0;
};
__attribute__((tls_model("initial-exec"))) thread_local ThreadState t;

class InRuntime {
 public:
  InRuntime() { ++t.in_runtime; }
  ~InRuntime() {
    if (--t.in_runtime == 0) t = ThreadState{};
  }
  InRuntime(const InRuntime&) = delete;
  InRuntime& operator=(const InRuntime&) = delete;
};

// The runtime's own threads (fault loop, evictor, poisoner) are named
// "faultline..." and may mmap over a region (poisoning); they must reach
// libc untouched, and must never wait for the shim's lock, which an
// application thread may hold while it waits for them.
bool on_runtime_thread() {
  char name[17] = {};
  prctl(PR_GET_NAME, name);
  return std::strncmp(name, "faultline", 9) == 0;
}

// One intercepted mapping.
struct Mapped {
  uintptr_t start = 0;
  size_t length = 0;  // what the application asked for, rounded up to pages
  size_t served = 0;  // the Region's part, from start: the file's pages
  int prot = 0;
  int flags = 0;
  off_t offset = 0;
  faultline::detail::UniqueFd fd;  // a dup of the application's: the same open file
  std::string path;
  faultline::Region region;
};

// Statistics of an intercepted mapping, for FAULTLINE_STATS.
struct Record {
  std::string path;
  uint64_t offset = 0;
  uint64_t length = 0;
  bool mapped = true;
  std::string stats_json;
};

// A file mapping the shim looked at and left alone, for FAULTLINE_STATS.
struct Skipped {
  std::string path;
  uint64_t length = 0;
  std::string reason;
};
constexpr size_t kMaxSkipped = 64;

// The shim's state, in one place. It has to be global: an LD_PRELOAD
// library's entry points are libc's functions, called by code that knows
// nothing of faultline, so there is no object to hang it on. It is created
// on first use and never destroyed (the interposed functions run until the
// process is gone, exit handlers included); the Runtime is leaked likewise,
// so mappings stay served while other libraries' destructors run.
struct Shim {
  std::once_flag config_once;
  Config config;
  std::atomic<int> live{0};  // entries in `mapped`: the fast path of munmap & co.

  std::mutex mu;  // everything below
  faultline::Runtime* runtime = nullptr;
  std::map<uintptr_t, Mapped*> mapped;  // by start address
  std::vector<Record> unmapped;
  std::vector<Skipped> skipped;  // the first kMaxSkipped
  uint64_t fallbacks = 0;
  bool atfork_registered = false;
  bool forked_child = false;  // a fork's child writes no statistics (they would be its parent's)
};

Shim& shim() {
  static Shim* s = new Shim;
  return *s;
}

const Config& config() {
  Shim& s = shim();
  std::call_once(s.config_once, [&s] {
    s.config = faultline::preload::read_config();
    if (!s.config.error.empty()) std::fprintf(stderr, "faultline-preload: %s\n", s.config.error.c_str());
  });
  return s.config;
}

void say(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void say(const char* fmt, ...) {
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  std::fprintf(stderr, "faultline-preload: %s\n", line);
}

Record record_of(const Mapped& m, bool mapped) {
  return {m.path, static_cast<uint64_t>(m.offset), m.length, mapped, m.region.stats().to_json()};
}

// Destroys an intercepted mapping's Region without unmapping its range
// (whoever replaces or unmaps the range does that) and erases `it`. The
// caller holds s.mu.
void forget(Shim& s, std::map<uintptr_t, Mapped*>::iterator it) {
  Mapped* m = it->second;
  {
    InRuntime in;
    t.keep_at = reinterpret_cast<void*>(m->start);
    t.keep_len = m->served;
    m->region.reset();
  }
  delete m;
  s.mapped.erase(it);
  s.live.fetch_sub(1);
}

// Maps the file for real over the Region's part (MAP_FIXED: one step, no
// hole), then destroys the Region without unmapping that range. The caller
// holds s.mu; `it` is erased. False (errno set) if the mapping failed; the
// Region is then left as it was.
bool to_file_mapping(Shim& s, std::map<uintptr_t, Mapped*>::iterator it, bool record) {
  Mapped* m = it->second;
  int flags = (m->flags & (MAP_SHARED | MAP_PRIVATE | MAP_NORESERVE)) | MAP_FIXED;
  void* p = real().mmap(reinterpret_cast<void*>(m->start), m->served, m->prot, flags, m->fd.get(), m->offset);
  if (p == MAP_FAILED) return false;
  if (record) s.unmapped.push_back(record_of(*m, false));
  forget(s, it);
  return true;
}

// Turns every intercepted mapping that overlaps [addr, addr + len) into a
// plain file mapping (see the header). False, errno set, if one failed.
bool release_range(void* addr, size_t len) {
  Shim& s = shim();
  std::lock_guard lock(s.mu);
  uintptr_t a = reinterpret_cast<uintptr_t>(addr);
  uintptr_t end = len > UINTPTR_MAX - a ? UINTPTR_MAX : a + len;
  auto it = s.mapped.upper_bound(a);
  if (it != s.mapped.begin()) --it;
  while (it != s.mapped.end() && it->first < end) {
    Mapped* m = it->second;
    auto next = std::next(it);
    if (m->start + m->served > a) {
      if (!to_file_mapping(s, it, true)) {
        int err = errno;
        say("%s: cannot turn the mapping at %p back into a file mapping: %s", m->path.c_str(),
            reinterpret_cast<void*>(m->start), std::strerror(err));
        errno = err;
        return false;
      }
    }
    it = next;
  }
  return true;
}

// Whether [addr, addr + len) reaches an intercepted mapping's Region, for
// the calls the application may make on one.
bool touches_region(void* addr, size_t len) {
  Shim& s = shim();
  if (t.in_runtime || s.live.load(std::memory_order_relaxed) == 0 || on_runtime_thread()) return false;
  std::lock_guard lock(s.mu);
  uintptr_t a = reinterpret_cast<uintptr_t>(addr);
  auto it = s.mapped.upper_bound(a + (len ? len - 1 : 0));
  if (it == s.mapped.begin()) return false;
  --it;
  return it->second->start + it->second->served > a;
}

// The whole munmap of an intercepted mapping: the runtime forgets the
// Region without unmapping it, and the caller's munmap then takes the whole
// range in one call. (Were the Region's part unmapped first, another thread
// could be given that hole before the tail went, and lose it with the tail.)
bool unmap_whole(void* addr, size_t len) {
  Shim& s = shim();
  std::lock_guard lock(s.mu);
  auto it = s.mapped.find(reinterpret_cast<uintptr_t>(addr));
  if (it == s.mapped.end()) return false;
  Mapped* m = it->second;
  if (((len + kPage - 1) & ~(kPage - 1)) != m->length) return false;
  s.unmapped.push_back(record_of(*m, false));
  forget(s, it);
  return true;
}

void atfork_prepare() { shim().mu.lock(); }
void atfork_parent() { shim().mu.unlock(); }
// The child has no fault thread: its copies of the Regions are absent
// (MADV_DONTFORK), and the file is mapped for real in their place, so it
// reads through the page cache. The parent's Runtime and Regions are
// forgotten, not destroyed: their threads exist only in the parent.
void atfork_child() {
  Shim& s = shim();
  for (auto& [start, m] : s.mapped) {
    int flags = (m->flags & (MAP_SHARED | MAP_PRIVATE | MAP_NORESERVE)) | MAP_FIXED;
    if (real().mmap(reinterpret_cast<void*>(m->start), m->served, m->prot, flags, m->fd.get(), m->offset) ==
        MAP_FAILED)
      say("%s: in the child of fork(): cannot map %zu bytes at %p: %s", m->path.c_str(), m->served,
          reinterpret_cast<void*>(m->start), std::strerror(errno));
    m->fd.reset();  // the child's mapping holds the file
  }
  s.mapped.clear();
  s.live.store(0);
  s.runtime = nullptr;
  s.unmapped.clear();
  s.forked_child = true;
  s.mu.unlock();
}

faultline::Runtime& runtime(Shim& s) {
  if (!s.runtime) {
    InRuntime in;
    faultline::RuntimeOptions ro;
    ro.serve_forks = false;  // atfork_child() maps the files for real instead
    s.runtime = new faultline::Runtime(ro);
  }
  if (!s.atfork_registered) {
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
    s.atfork_registered = true;
  }
  return *s.runtime;
}

// Serves the mapping through faultline, or returns MAP_FAILED with a
// message in `why` (the caller falls back).
void* intercept(size_t len, int prot, int flags, int fd, off_t off, uint64_t file_size, const std::string& path,
                std::string& why) {
  Shim& s = shim();
  std::lock_guard lock(s.mu);
  auto m = std::make_unique<Mapped>();
  m->length = (len + kPage - 1) & ~(kPage - 1);
  // To the end of the last page asked for, as the page cache would show it.
  uint64_t served_bytes = std::min<uint64_t>(m->length, file_size - static_cast<uint64_t>(off));
  m->served = (served_bytes + kPage - 1) & ~(kPage - 1);
  m->prot = prot;
  m->flags = flags;
  m->offset = off;
  m->path = path;
  void* start = MAP_FAILED;
  try {
    faultline::Runtime& rt = runtime(s);
    int dup = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (dup < 0) faultline::throw_errno("cannot duplicate descriptor " + std::to_string(fd), errno);
    m->fd = faultline::detail::UniqueFd(dup);
    // The real mapping first: the whole range, and the tail past the file.
    start = real().mmap(nullptr, len, prot, flags & ~MAP_POPULATE, fd, off);
    if (start == MAP_FAILED) faultline::throw_errno("mmap", errno);
    m->start = reinterpret_cast<uintptr_t>(start);
    faultline::RegionOptions o;
    o.offset = static_cast<uint64_t>(off);
    o.length = served_bytes;
    o.reload_removed = true;  // MADV_DONTNEED reloads from the file, as for a file mapping
    InRuntime in;
    auto backend = std::make_shared<faultline::FileBackend>("/proc/self/fd/" + std::to_string(dup));
    t.place_at = start;
    t.place_len = m->served;
    // Should the map fail after placing its reservation, the reservation
    // stays until the munmap below takes the whole range at once (see
    // unmap_whole).
    t.keep_at = start;
    t.keep_len = m->served;
    m->region = rt.map(std::move(backend), o);
    if (m->region.data() != start) {
      m->region.reset();
      throw faultline::Error("the runtime's reservation was not placed over the file mapping");
    }
    if (flags & MAP_POPULATE) m->region.prefetch(0, served_bytes);
  } catch (const std::exception& e) {
    why = e.what();
    if (start != MAP_FAILED) real().munmap(start, len);
    return MAP_FAILED;
  }
  s.mapped.emplace(m->start, m.get());
  m.release();
  s.live.fetch_add(1);
  return start;
}

void* shim_mmap(MmapFn real_mmap, void* addr, size_t len, int prot, int flags, int fd, off_t off) {
  if (t.in_runtime) {
    if (t.place_at && addr == nullptr && len == t.place_len && (flags & MAP_ANONYMOUS)) {
      void* at = std::exchange(t.place_at, nullptr);
      return real_mmap(at, len, prot, flags | MAP_FIXED, fd, off);
    }
    return real_mmap(addr, len, prot, flags, fd, off);
  }
  if (flags & MAP_FIXED) {
    // Over an intercepted mapping: the Region must not outlive its range.
    if (touches_region(addr, len) && !release_range(addr, len)) return MAP_FAILED;
    return real_mmap(addr, len, prot, flags, fd, off);
  }
  int type = flags & MAP_TYPE;
  if (fd < 0 || prot != PROT_READ || (type != MAP_PRIVATE && type != MAP_SHARED) || len == 0 || off < 0 ||
      off % static_cast<off_t>(kPage) != 0 ||
      (flags & (MAP_ANONYMOUS | MAP_FIXED_NOREPLACE | MAP_HUGETLB | MAP_GROWSDOWN | MAP_STACK)))
    return real_mmap(addr, len, prot, flags, fd, off);
  const Config& c = config();
  struct stat st;
  if (c.globs.empty() || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || on_runtime_thread())
    return real_mmap(addr, len, prot, flags, fd, off);
  char link[64];
  char path[PATH_MAX];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, path, sizeof path - 1);
  if (n <= 0) return real_mmap(addr, len, prot, flags, fd, off);
  path[n] = '\0';
  const char* skip = nullptr;
  if (!c.matches(path))
    skip = "does not match FAULTLINE_PRELOAD";
  else if (len < c.min_bytes)
    skip = "shorter than FAULTLINE_PRELOAD_MIN";
  else if (off >= st.st_size)
    skip = "starts past the end of the file";
  else if (int fl = fcntl(fd, F_GETFL); fl < 0 || (fl & O_ACCMODE) != O_RDONLY)
    skip = "the descriptor is open for writing";  // writes through it must show in the mapping
  if (skip) {
    Shim& s = shim();
    std::lock_guard lock(s.mu);
    if (s.skipped.size() < kMaxSkipped) s.skipped.push_back({path, len, skip});
    return real_mmap(addr, len, prot, flags, fd, off);
  }

  std::string why;
  int saved = errno;
  void* p = intercept(len, prot, flags, fd, off, static_cast<uint64_t>(st.st_size), path, why);
  if (p != MAP_FAILED) {
    errno = saved;
    return p;
  }
  {
    std::lock_guard lock(shim().mu);
    shim().fallbacks++;
  }
  say("%s: %s; mapped without faultline", path, why.c_str());
  errno = saved;
  return real_mmap(addr, len, prot, flags, fd, off);
}

// FAULTLINE_STATS with "%p" replaced by the process id.
std::string stats_path(const std::string& pattern) {
  std::string out;
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == '%' && i + 1 < pattern.size() && pattern[i + 1] == 'p') {
      out += std::to_string(getpid());
      ++i;
    } else {
      out += pattern[i];
    }
  }
  return out;
}

// FAULTLINE_STATS at exit (docs/preload.md): {"runtime": the runtime's
// stats JSON, "fallbacks": N, "regions": [{"path", "offset", "length",
// "mapped", "stats"}], "skipped": [{"path", "length", "reason"}]}. Only a
// process that looked at a file mapping writes it, so that a wrapper
// (timeout, env, a shell) does not replace its child's file at its own
// exit; nor does a fork's child. A destructor, not a constructor: it runs
// at exit and only writes.
__attribute__((destructor)) void write_stats() {
  Shim& s = shim();
  const Config& c = config();
  if (c.stats_file.empty()) return;
  std::lock_guard lock(s.mu);
  if (s.forked_child || (!s.runtime && !s.fallbacks && s.skipped.empty() && s.unmapped.empty())) return;
  try {
    nlohmann::json j;
    j["runtime"] = nlohmann::json::parse(s.runtime ? s.runtime->stats().to_json() : faultline::StatsSnapshot{}.to_json());
    j["fallbacks"] = s.fallbacks;
    j["regions"] = nlohmann::json::array();
    std::vector<Record> all = s.unmapped;
    for (auto& [start, m] : s.mapped) all.push_back(record_of(*m, true));
    for (const Record& r : all)
      j["regions"].push_back({{"path", r.path}, {"offset", r.offset}, {"length", r.length}, {"mapped", r.mapped},
                              {"stats", nlohmann::json::parse(r.stats_json)}});
    j["skipped"] = nlohmann::json::array();
    for (const Skipped& k : s.skipped)
      j["skipped"].push_back({{"path", k.path}, {"length", k.length}, {"reason", k.reason}});
    std::string text = j.dump(2) + "\n";
    InRuntime in;
    faultline::detail::AtomicFile f(stats_path(c.stats_file), "FAULTLINE_STATS file");
    f.append(text.data(), text.size());
    f.commit();
  } catch (const std::exception& e) {
    say("FAULTLINE_STATS: %s", e.what());
  }
}

}  // namespace

extern "C" {

__attribute__((visibility("default"))) void* mmap(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
  return shim_mmap(real().mmap, addr, len, prot, flags, fd, off);
}

__attribute__((visibility("default"))) void* mmap64(void* addr, size_t len, int prot, int flags, int fd, off_t off) {
  return shim_mmap(real().mmap64, addr, len, prot, flags, fd, off);
}

__attribute__((visibility("default"))) int munmap(void* addr, size_t len) {
  if (t.in_runtime) {
    if (addr == t.keep_at && len == t.keep_len) {
      t.keep_at = nullptr;
      return 0;
    }
    return real().munmap(addr, len);
  }
  if (touches_region(addr, len) && !unmap_whole(addr, len) && !release_range(addr, len)) return -1;
  return real().munmap(addr, len);
}

__attribute__((visibility("default"))) void* mremap(void* old, size_t old_len, size_t new_len, int flags, ...) {
  void* new_addr = nullptr;
  if (flags & MREMAP_FIXED) {
    va_list ap;
    va_start(ap, flags);
    new_addr = va_arg(ap, void*);
    va_end(ap);
  }
  // The moved range would no longer be served: it becomes a file mapping first.
  if (touches_region(old, old_len ? old_len : 1) && !release_range(old, old_len ? old_len : 1)) return MAP_FAILED;
  if (flags & MREMAP_FIXED && new_addr && touches_region(new_addr, new_len) && !release_range(new_addr, new_len))
    return MAP_FAILED;
  return real().mremap(old, old_len, new_len, flags, new_addr);
}

__attribute__((visibility("default"))) int madvise(void* addr, size_t len, int advice) {
  if (!touches_region(addr, len)) return real().madvise(addr, len, advice);
  if (advice == MADV_FREE) {  // anonymous memory only: a file mapping refuses it
    errno = EINVAL;
    return -1;
  }
  if (advice == MADV_WILLNEED) {
    Shim& s = shim();
    std::lock_guard lock(s.mu);
    uintptr_t a = reinterpret_cast<uintptr_t>(addr);
    for (auto& [start, m] : s.mapped) {
      uintptr_t lo = std::max<uintptr_t>(a, start), hi = std::min<uintptr_t>(a + len, start + m->served);
      try {
        if (lo < hi) m->region.prefetch(lo - start, hi - lo);
      } catch (const faultline::Error&) {
        // Only the zero padding of the file's last page: nothing to read.
      }
    }
  }
  // MADV_DONTNEED drops the pages; the runtime loads them again from the
  // file on the next touch, as the page cache would.
  return real().madvise(addr, len, advice);
}

__attribute__((visibility("default"))) int mprotect(void* addr, size_t len, int prot) {
  // A writable Region would keep writes private even under MAP_SHARED.
  if ((prot & PROT_WRITE) && touches_region(addr, len) && !release_range(addr, len)) return -1;
  return real().mprotect(addr, len, prot);
}

}  // extern "C"

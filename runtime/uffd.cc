// SPDX-License-Identifier: Apache-2.0
#include "uffd.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "faultline/error.h"

// The distro headers are older than the kernels we run on.
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON (1 << 14)
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16)
#endif
#ifndef _UFFDIO_MOVE
#define _UFFDIO_MOVE (0x05)
#define UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES ((__u64)1 << 1)
struct uffdio_move {
  __u64 dst;
  __u64 src;
  __u64 len;
  __u64 mode;
  __s64 move;
};
#define UFFDIO_MOVE _IOWR(UFFDIO, _UFFDIO_MOVE, struct uffdio_move)
#endif
#ifndef _UFFDIO_POISON
#define _UFFDIO_POISON (0x08)
struct uffdio_poison {
  struct uffdio_range range;
  __u64 mode;
  __s64 updated;
};
#define UFFDIO_POISON _IOWR(UFFDIO, _UFFDIO_POISON, struct uffdio_poison)
#endif

namespace faultline {

void throw_errno(const std::string& what, int err) {
  throw Error(what + ": " + strerror(err), err);
}

void detail::Mapping::reset() {
  if (addr_ && owned_) munmap(addr_, len_);
  addr_ = nullptr;
  len_ = 0;
}

std::string UffdMode::describe() const {
  std::ostringstream s;
  s << (via_dev_userfaultfd ? "/dev/userfaultfd" : "userfaultfd(2)")
    << (user_mode_only ? ", user-mode faults only (kernel accesses to unfilled pages fail with EFAULT)"
                       : ", kernel and user faults")
    << (poison ? ", UFFDIO_POISON" : ", no UFFDIO_POISON (SIGBUS by a zero-length file mapping)")
    << (wp_async ? ", WP_ASYNC (dirty tracking)" : ", no WP_ASYNC (no dirty tracking or write-back)")
    << (minor_shmem ? ", MINOR_SHMEM (shared memory)" : ", no MINOR_SHMEM (no shared-memory regions)");
  s << ", events:" << (event_remove ? " remove" : "") << (event_unmap ? " unmap" : "") << (event_remap ? " remap" : "")
    << (event_fork ? " fork" : " (no fork: children do not inherit regions)");
  s << ", features 0x" << std::hex << features << " (enabled 0x" << enabled << ")";
  return s.str();
}

namespace detail {
namespace {

enum class Method { kDevice, kSyscall, kSyscallUserOnly };

int open_with(Method m) {
  int flags = O_CLOEXEC | O_NONBLOCK;
  if (m == Method::kDevice) {
    int dev = ::open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
    if (dev < 0) return -1;
    int fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
    int err = errno;
    ::close(dev);
    errno = err;
    return fd;
  }
  if (m == Method::kSyscallUserOnly) flags |= UFFD_USER_MODE_ONLY;
  return static_cast<int>(syscall(SYS_userfaultfd, flags));
}

// Tries the methods in order of preference; returns the first that works.
UniqueFd open_first(Method* used) {
  int last_err = 0;
  for (Method m : {Method::kDevice, Method::kSyscall, Method::kSyscallUserOnly}) {
    int fd = open_with(m);
    if (fd >= 0) {
      *used = m;
      return UniqueFd(fd);
    }
    last_err = errno;
  }
  if (last_err == ENOSYS)
    throw Error("userfaultfd is not available: the kernel lacks CONFIG_USERFAULTFD, or a seccomp "
                "filter (Docker's default profile, for one) blocks the syscall", ENOSYS);
  throw_errno("cannot open a userfaultfd (tried /dev/userfaultfd, userfaultfd(2) and "
              "UFFD_USER_MODE_ONLY; is vm.unprivileged_userfaultfd 0 and a seccomp filter active?)",
              last_err);
}

// Returns the features enabled, or -errno.
int64_t try_api(int fd, uint64_t features) {
  uffdio_api a{};
  a.api = UFFD_API;
  a.features = features;
  if (ioctl(fd, UFFDIO_API, &a) != 0) return -errno;
  return static_cast<int64_t>(a.features);
}

uint64_t api(int fd, uint64_t features) {
  int64_t got = try_api(fd, features);
  if (got < 0) throw_errno("UFFDIO_API", static_cast<int>(-got));
  return static_cast<uint64_t>(got);
}

}  // namespace

Uffd open_uffd(bool fork_event) {
  Method method;
  uint64_t offered;
  {
    UniqueFd probe = open_first(&method);
    offered = api(probe.get(), 0);
  }
  Uffd u;
  u.fd = UniqueFd(open_with(method));
  if (!u.fd) throw_errno("cannot reopen the userfaultfd", errno);
  // WP_ASYNC (6.7+) only changes ranges registered in WP mode (dirty
  // tracking): there the kernel resolves write-protect faults itself and
  // PAGEMAP_SCAN reads and re-arms the written bits.
  // EVENT_FORK only with the fork handshake of uffd_events.cc (glibc's
  // fork() holds every malloc lock while the kernel waits for the loop to
  // read the FORK message: the loop must be parked, allocation-free, by
  // then). It needs CAP_SYS_PTRACE: EPERM without, and then none.
  uint64_t wanted = UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMAP |
                    UFFD_FEATURE_POISON | UFFD_FEATURE_MINOR_SHMEM;
  if (fork_event) wanted |= UFFD_FEATURE_EVENT_FORK;
  constexpr uint64_t kAsyncWp = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED;
  if ((offered & kAsyncWp) == kAsyncWp) wanted |= kAsyncWp | UFFD_FEATURE_MOVE;  // MOVE: write-back eviction
  // (A successful UFFDIO_API reports every feature the kernel has, not
  // the ones asked for: what is enabled is what was asked.)
  uint64_t enabled = wanted & offered;
  int64_t got = try_api(u.fd.get(), enabled);
  if (got == -EPERM && (enabled & UFFD_FEATURE_EVENT_FORK)) {  // no CAP_SYS_PTRACE: again, without FORK
    enabled &= ~uint64_t{UFFD_FEATURE_EVENT_FORK};
    u.fd = UniqueFd(open_with(method));
    if (!u.fd) throw_errno("cannot reopen the userfaultfd", errno);
    got = try_api(u.fd.get(), enabled);
  }
  if (got < 0) throw_errno("UFFDIO_API", static_cast<int>(-got));
  u.mode.via_dev_userfaultfd = method == Method::kDevice;
  u.mode.user_mode_only = method == Method::kSyscallUserOnly;
  u.mode.poison = (offered & UFFD_FEATURE_POISON) != 0;
  u.mode.wp_async = (enabled & UFFD_FEATURE_WP_ASYNC) != 0;
  u.mode.move = (enabled & UFFD_FEATURE_MOVE) != 0;
  u.mode.minor_shmem = (enabled & UFFD_FEATURE_MINOR_SHMEM) != 0;
  u.mode.event_remove = (enabled & UFFD_FEATURE_EVENT_REMOVE) != 0;
  u.mode.event_unmap = (enabled & UFFD_FEATURE_EVENT_UNMAP) != 0;
  u.mode.event_remap = (enabled & UFFD_FEATURE_EVENT_REMAP) != 0;
  u.mode.event_fork = (enabled & UFFD_FEATURE_EVENT_FORK) != 0;
  u.mode.features = offered;
  u.mode.enabled = enabled;
  return u;
}

UniqueFd open_uffd_features(uint64_t wanted, uint64_t* offered) {
  Method method;
  {
    UniqueFd probe = open_first(&method);
    *offered = api(probe.get(), 0);
  }
  UniqueFd fd(open_with(method));
  if (!fd) throw_errno("cannot reopen the userfaultfd", errno);
  api(fd.get(), wanted & *offered);
  return fd;
}

void uffd_register(int uffd, void* addr, uint64_t len, bool track_writes, bool minor) {
  uffdio_register r{};
  r.range.start = reinterpret_cast<uintptr_t>(addr);
  r.range.len = len;
  r.mode = UFFDIO_REGISTER_MODE_MISSING | (track_writes ? UFFDIO_REGISTER_MODE_WP : 0) |
           (minor ? UFFDIO_REGISTER_MODE_MINOR : 0);
  if (ioctl(uffd, UFFDIO_REGISTER, &r) != 0) throw_errno("UFFDIO_REGISTER", errno);
}

void uffd_unregister(int uffd, void* addr, uint64_t len) {
  uffdio_range r{reinterpret_cast<uintptr_t>(addr), len};
  ioctl(uffd, UFFDIO_UNREGISTER, &r);
}

int uffd_move(int uffd, uintptr_t dst, uintptr_t src, uint64_t len) {
  uint64_t done = 0;
  int eagain_budget = 1000;
  while (done < len) {
    uffdio_move m{};
    m.dst = dst + done;
    m.src = src + done;
    m.len = len - done;
    m.mode = UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES;
    int rc = ioctl(uffd, UFFDIO_MOVE, &m);
    if (rc == 0) return 0;
    int err = errno;
    if (m.move > 0) {
      done += static_cast<uint64_t>(m.move);
      continue;
    }
    // EAGAIN: a page changed under the move, or events are pending.
    if ((err == EAGAIN || err == EINTR) && --eagain_budget > 0) {
      usleep(50);
      continue;
    }
    return m.move < 0 ? static_cast<int>(-m.move) : err;
  }
  return 0;
}

bool uffd_mm_gone(int uffd) {
  uint64_t lowest = 65536;
  if (FILE* f = std::fopen("/proc/sys/vm/mmap_min_addr", "r")) {
    unsigned long long v;
    if (std::fscanf(f, "%llu", &v) == 1) lowest = (v + kPageSize - 1) & ~(kPageSize - 1);
    std::fclose(f);
  }
  if (lowest == 0) lowest = kPageSize;
  uffdio_range r{lowest, kPageSize};
  return ioctl(uffd, UFFDIO_UNREGISTER, &r) != 0 && errno == ENOMEM;
}

void uffd_wake(int uffd, uintptr_t addr, uint64_t len) {
  uffdio_range r{addr, len};
  ioctl(uffd, UFFDIO_WAKE, &r);
}

namespace {

// One ioctl; returns bytes done (>= 0) or -errno, following the kernel's
// convention: the result field holds progress or a negative errno.
int64_t place_once(int uffd, Place how, uintptr_t dst, const void* src, uint64_t len, bool wake, bool wp) {
  int rc;
  int64_t progress;
  switch (how) {
    case Place::kCopy: {
      uffdio_copy c{};
      c.dst = dst;
      c.src = reinterpret_cast<uintptr_t>(src);
      c.len = len;
      c.mode = (wake ? 0 : UFFDIO_COPY_MODE_DONTWAKE) | (wp ? UFFDIO_COPY_MODE_WP : 0);
      rc = ioctl(uffd, UFFDIO_COPY, &c);
      progress = c.copy;
      break;
    }
    case Place::kZero: {
      uffdio_zeropage z{};
      z.range = {dst, len};
      z.mode = wake ? 0 : UFFDIO_ZEROPAGE_MODE_DONTWAKE;
      rc = ioctl(uffd, UFFDIO_ZEROPAGE, &z);
      progress = z.zeropage;
      break;
    }
    case Place::kContinue: {
      uffdio_continue c{};
      c.range = {dst, len};
      c.mode = wake ? 0 : UFFDIO_CONTINUE_MODE_DONTWAKE;
      rc = ioctl(uffd, UFFDIO_CONTINUE, &c);
      progress = c.mapped;
      break;
    }
    default: {
      uffdio_poison p{};
      p.range = {dst, len};
      p.mode = wake ? 0 : 1;  // UFFDIO_POISON_MODE_DONTWAKE
      rc = ioctl(uffd, UFFDIO_POISON, &p);
      progress = p.updated;
      break;
    }
  }
  if (rc == 0) return static_cast<int64_t>(len);
  int err = errno;
  if (progress > 0) return progress;  // partial: the caller retries the rest
  return progress < 0 ? progress : -err;
}

}  // namespace

PlaceResult uffd_place(int uffd, Place how, uintptr_t dst, const void* src, uint64_t len, bool wake,
                       bool write_protect, uint64_t page) {
  PlaceResult r;
  int eintr_budget = 16;
  while (r.done < len) {
    const char* s = how == Place::kCopy ? static_cast<const char*>(src) + r.done : nullptr;
    int64_t got = place_once(uffd, how, dst + r.done, s, len - r.done, wake, write_protect);
    if (got > 0) {
      r.done += static_cast<uint64_t>(got);
      continue;
    }
    int err = got == 0 ? EAGAIN : static_cast<int>(-got);
    if (err == EEXIST) {
      // The first page is present (installed by someone else, or never
      // removed). Skip it; the caller must wake the range.
      r.hit_existing = true;
      r.done += page;
      continue;
    }
    if (err == EINTR && --eintr_budget > 0) continue;
    r.error = err;
    return r;
  }
  r.done = len;
  return r;
}

PlaceResult uffd_poison_any(int uffd, uintptr_t addr, uint64_t len) {
  PlaceResult res = uffd_place(uffd, Place::kPoison, addr, nullptr, len, true);
  if (res.error != EINVAL) return res;
  uintptr_t start = (addr + res.done) & ~(kHugePageSize - 1);
  uintptr_t end = (addr + len + kHugePageSize - 1) & ~(kHugePageSize - 1);
  PlaceResult huge = uffd_place(uffd, Place::kPoison, start, nullptr, end - start, true, false, kHugePageSize);
  huge.hit_existing |= res.hit_existing;
  huge.done = std::min<uint64_t>(len, start - addr + huge.done);
  return huge;
}

}  // namespace detail
}  // namespace faultline

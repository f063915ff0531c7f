// SPDX-License-Identifier: Apache-2.0
// The two userfaultfd floors, written here without the runtime:
//  - uffd-textbook: the man-page handler. One thread poll()s the uffd, read()s
//    one message and UFFDIO_COPYs 4 KiB straight from the in-memory dataset
//    (waking the faulting thread). Nothing else: no batching, no read-ahead,
//    no prefetch. (No staging copy: faultline-memory places lent bytes
//    directly too, so the floor does no work faultline skips.)
//  - uffdio-copy-bulk: UFFDIO_COPY throughput with no fault at all: the whole
//    dataset is copied into a registered region in fixed-size chunks with
//    UFFDIO_COPY_MODE_DONTWAKE.
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <thread>

#include "bench.h"

#ifndef USERFAULTFD_IOC
#define USERFAULTFD_IOC 0xAA
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(USERFAULTFD_IOC, 0x00)
#endif

namespace fbench {

int open_uffd(int flags, bool* via_dev, std::string* err) {
  if (via_dev) *via_dev = false;
  int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
  if (dev >= 0) {
    int fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
    int e = errno;
    close(dev);
    if (fd >= 0) {
      if (via_dev) *via_dev = true;
      return fd;
    }
    if (err) *err = std::string("USERFAULTFD_IOC_NEW: ") + std::strerror(e) + "; ";
  } else if (err) {
    *err = std::string("/dev/userfaultfd: ") + std::strerror(errno) + "; ";
  }
  int fd = static_cast<int>(syscall(SYS_userfaultfd, flags));
  if (fd < 0 && errno == EPERM) {
    // Unprivileged (vm.unprivileged_userfaultfd = 0): only user-mode faults.
    // Enough here: the workloads touch the region from user mode only.
    fd = static_cast<int>(syscall(SYS_userfaultfd, flags | UFFD_USER_MODE_ONLY));
  }
  if (fd < 0 && err) *err += std::string("userfaultfd(2): ") + std::strerror(errno);
  return fd;
}

namespace {

struct Uffd {
  int fd = -1;
  ~Uffd() {
    if (fd >= 0) close(fd);
  }
};

struct Mapping {
  void* p = MAP_FAILED;
  size_t len = 0;
  ~Mapping() {
    if (p != MAP_FAILED) munmap(p, len);
  }
};

// Opens a uffd, maps an anonymous region of `len` bytes and registers it in
// MISSING mode. Returns "" or an error.
std::string setup(Uffd& u, Mapping& m, size_t len) {
  std::string err;
  u.fd = open_uffd(O_CLOEXEC | O_NONBLOCK, nullptr, &err);
  if (u.fd < 0) return "cannot open userfaultfd: " + err;
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = 0;
  if (ioctl(u.fd, UFFDIO_API, &api) != 0) return std::string("UFFDIO_API: ") + std::strerror(errno);
  m.p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m.p == MAP_FAILED) return std::string("mmap: ") + std::strerror(errno);
  m.len = len;
  madvise(m.p, len, MADV_NOHUGEPAGE);
  uffdio_register reg{};
  reg.range.start = reinterpret_cast<uint64_t>(m.p);
  reg.range.len = len;
  reg.mode = UFFDIO_REGISTER_MODE_MISSING;
  if (ioctl(u.fd, UFFDIO_REGISTER, &reg) != 0) return std::string("UFFDIO_REGISTER: ") + std::strerror(errno);
  return "";
}

}  // namespace

RunResult run_uffd_textbook(const Context& ctx, const Plan& plan) {
  RunResult r;
  Uffd u;
  Mapping m;
  if (std::string e = setup(u, m, ctx.size); !e.empty()) {
    r.ok = false;
    r.error = e;
    return r;
  }
  int stopfd = eventfd(0, EFD_CLOEXEC);
  const uint64_t base = reinterpret_cast<uint64_t>(m.p);
  std::atomic<uint64_t> faults{0}, errors{0};
  std::string handler_error;
  // Service time of each fault (message read to COPY-and-wake returned), the
  // same span the runtime's own latency histogram covers.
  std::vector<uint64_t> service(ctx.size / kPage + 64, 0);
  size_t nservice = 0;

  pin_service();
  std::thread handler([&] {
    for (;;) {
      pollfd pfd[2] = {{u.fd, POLLIN, 0}, {stopfd, POLLIN, 0}};
      int n = poll(pfd, 2, -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        handler_error = std::string("poll: ") + std::strerror(errno);
        return;
      }
      if (pfd[1].revents & POLLIN) return;
      if (!(pfd[0].revents & POLLIN)) continue;
      uffd_msg msg;
      ssize_t rd = read(u.fd, &msg, sizeof msg);
      if (rd < 0) {
        if (errno == EAGAIN || errno == EINTR) continue;
        handler_error = std::string("read(uffd): ") + std::strerror(errno);
        return;
      }
      if (rd != sizeof msg || msg.event != UFFD_EVENT_PAGEFAULT) continue;
      const uint64_t t_read = now_ns();
      const uint64_t addr = msg.arg.pagefault.address & ~static_cast<uint64_t>(kPage - 1);
      const uint64_t off = addr - base;
      uffdio_copy c{};
      c.dst = addr;
      c.src = reinterpret_cast<uint64_t>(ctx.mem + off);
      c.len = kPage;
      c.mode = 0;
      for (;;) {
        if (ioctl(u.fd, UFFDIO_COPY, &c) == 0) break;
        if (errno == EAGAIN) continue;
        if (errno == EEXIST) {
          uffdio_range rg{addr, kPage};
          ioctl(u.fd, UFFDIO_WAKE, &rg);
        } else {
          errors.fetch_add(1, std::memory_order_relaxed);
        }
        break;
      }
      if (nservice < service.size()) service[nservice++] = now_ns() - t_read;
      faults.fetch_add(1, std::memory_order_relaxed);
    }
  });

  pin_app();
  WorkOutput out;
  prepare_output(plan, out);
  const uint64_t t0 = now_ns();
  run_workload(static_cast<const std::byte*>(m.p), ctx.size, plan, out);
  const uint64_t t1 = now_ns();
  capture_after(r);

  uint64_t one = 1;
  if (write(stopfd, &one, sizeof one) != sizeof one) {
    r.ok = false;
    r.error = "eventfd write failed";
  }
  handler.join();
  close(stopfd);

  r.seconds = static_cast<double>(t1 - t0) * 1e-9;
  r.faults = faults.load();
  r.installed_bytes = r.faults * kPage;
  r.lat_ns = std::move(out.lat_ns);
  service.resize(nservice);
  std::sort(service.begin(), service.end());
  if (!service.empty()) {
    r.has_service = true;
    r.svc_p50_ns = service[(service.size() - 1) / 2];
    r.svc_p99_ns = service[static_cast<size_t>(0.99 * static_cast<double>(service.size() - 1))];
  }
  if (!handler_error.empty()) {
    r.ok = false;
    r.error = handler_error;
  } else if (errors.load() != 0) {
    r.ok = false;
    r.error = "UFFDIO_COPY failed " + std::to_string(errors.load()) + " times";
  } else if (out.sum != plan.expected_sum) {
    r.ok = false;
    r.error = "checksum mismatch";
  }
  return r;
}

RunResult run_uffdio_copy_bulk(const Context& ctx, const Plan& plan, size_t chunk) {
  RunResult r;
  Uffd u;
  Mapping m;
  if (std::string e = setup(u, m, ctx.size); !e.empty()) {
    r.ok = false;
    r.error = e;
    return r;
  }
  const uint64_t base = reinterpret_cast<uint64_t>(m.p);
  pin_app();
  const uint64_t t0 = now_ns();
  uint64_t off = 0;
  while (off < ctx.size) {
    uffdio_copy c{};
    c.dst = base + off;
    c.src = reinterpret_cast<uint64_t>(ctx.mem + off);
    c.len = std::min<uint64_t>(chunk, ctx.size - off);
    c.mode = UFFDIO_COPY_MODE_DONTWAKE;
    if (ioctl(u.fd, UFFDIO_COPY, &c) == 0) {
      off += c.len;
      continue;
    }
    if (errno == EAGAIN) {
      if (c.copy > 0) off += static_cast<uint64_t>(c.copy);
      continue;
    }
    r.ok = false;
    r.error = std::string("UFFDIO_COPY: ") + std::strerror(errno);
    return r;
  }
  const uint64_t t1 = now_ns();
  capture_after(r);
  r.seconds = static_cast<double>(t1 - t0) * 1e-9;
  r.installed_bytes = ctx.size;
  // Untimed check that the bytes landed where they belong.
  uint64_t sum = touch_seq(static_cast<const std::byte*>(m.p), ctx.size);
  if (sum != plan.expected_sum) {
    r.ok = false;
    r.error = "checksum mismatch";
  }
  return r;
}

}  // namespace fbench

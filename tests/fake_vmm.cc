// SPDX-License-Identifier: Apache-2.0
// faultline-test-vmm: plays a VMM restoring a snapshot with an external
// page-fault handler, as Firecracker's documentation describes it
// (docs/snapshotting/handling-page-faults-on-snapshot-resume.md there; our
// docs/firecracker.md): anonymous guest memory, a userfaultfd created and
// registered on it (UFFD_FEATURE_EVENT_REMOVE requested, as Firecracker
// does), a connection to the handler's socket and one message: the JSON
// mappings with the uffd as SCM_RIGHTS. The socket is then kept open until
// exit, as Firecracker keeps it. Then threads touch the guest memory and
// every byte is checked against RAW (the guest memory file).
//
//   faultline-test-vmm MODE SOCKET RAW REGIONS THREADS SPELLING
//
// MODE: ok (touch and check), two-uffds (a second uffd with the second
// half of the regions, in a second message), bad-json, no-fd, wrong-fd,
// overlap, beyond (malformed handshakes: waits for the handler to hang up),
// overlap-touch, bad-json-touch (an overlapping or malformed handshake,
// then a touch that must get SIGBUS, not hang: the handler found the guest
// memory without the mappings). Events, each after reading every second
// page of the first region: balloon (MADV_DONTNEED of 1 MiB of it: that
// range must then read zeros and take writes), remap (mremap of the first
// region to a new address, UFFD_FEATURE_EVENT_REMAP requested: it must be
// served there), fork (UFFD_FEATURE_EVENT_FORK requested: a child reads
// and checks every page, then the parent does; exit 77 where the kernel
// refuses the feature without CAP_SYS_PTRACE). Huge pages: huge (the
// guest memory is MAP_HUGETLB, 2 MiB pages, page_size 2097152; only the
// image's whole 2 MiB pages are mapped and checked), huge-balloon (the
// same, then the last 2 MiB of the first region is ballooned; it needs 4
// MiB or more). SPELLING: page_size,
// page_size_kib or both. Exit 0 when everything matched; 1 with a message
// otherwise. alarm(60) bounds every run.
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <linux/mman.h>  // MAP_HUGE_2MB
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr size_t kPage = 4096;

[[noreturn]] void die(const std::string& why) {
  std::fprintf(stderr, "faultline-test-vmm: %s\n", why.c_str());
  std::exit(1);
}

struct GuestRegion {
  std::byte* addr;
  size_t size;
  uint64_t offset;  // in RAW
  size_t page_size;
};

int make_uffd(const std::vector<GuestRegion>& regions, uint64_t more_features = 0) {
  int uffd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
  // Without privilege (vm.unprivileged_userfaultfd = 0) only a uffd for
  // user-mode faults may be had, as a VMM without root would do.
  if (uffd < 0 && errno == EPERM)
    uffd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY));
  if (uffd < 0) die(std::string("userfaultfd: ") + std::strerror(errno));
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = UFFD_FEATURE_EVENT_REMOVE | more_features;
  if (ioctl(uffd, UFFDIO_API, &api) != 0) {
    if (errno == EPERM && (more_features & UFFD_FEATURE_EVENT_FORK)) {
      std::printf("SKIPPED: UFFD_FEATURE_EVENT_FORK needs CAP_SYS_PTRACE\n");
      std::exit(77);
    }
    die(std::string("UFFDIO_API: ") + std::strerror(errno));
  }
  for (const GuestRegion& r : regions) {
    uffdio_register reg{};
    reg.range.start = reinterpret_cast<uintptr_t>(r.addr);
    reg.range.len = r.size;
    reg.mode = UFFDIO_REGISTER_MODE_MISSING;
    if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0) die(std::string("UFFDIO_REGISTER: ") + std::strerror(errno));
  }
  return uffd;
}

std::string mappings_json(const std::vector<GuestRegion>& regions, const std::string& spelling) {
  std::string j = "[";
  for (size_t i = 0; i < regions.size(); ++i) {
    const GuestRegion& r = regions[i];
    if (i) j += ",";
    j += "{\"base_host_virt_addr\":" + std::to_string(reinterpret_cast<uintptr_t>(r.addr)) +
         ",\"size\":" + std::to_string(r.size) + ",\"offset\":" + std::to_string(r.offset);
    if (spelling == "page_size" || spelling == "both") j += ",\"page_size\":" + std::to_string(r.page_size);
    if (spelling == "page_size_kib" || spelling == "both") j += ",\"page_size_kib\":" + std::to_string(r.page_size);
    j += "}";
  }
  return j + "]";
}

void send_message(int sock, const std::string& text, int fd) {
  iovec iov{const_cast<char*>(text.data()), text.size()};
  msghdr h{};
  h.msg_iov = &iov;
  h.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  if (fd >= 0) {
    h.msg_control = control;
    h.msg_controllen = sizeof control;
    cmsghdr* c = CMSG_FIRSTHDR(&h);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  if (sendmsg(sock, &h, 0) != static_cast<ssize_t>(text.size())) die(std::string("sendmsg: ") + std::strerror(errno));
}

// The handler may still be starting: retries for 10 s.
int connect_to(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
  for (int attempt = 0; attempt < 1000; ++attempt) {
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return s;
    close(s);
    usleep(10000);
  }
  die("cannot connect to " + path);
}

// Waits (bounded) for the handler to close the connection.
void wait_hangup(int sock) {
  pollfd p{sock, POLLIN, 0};
  if (poll(&p, 1, 30000) <= 0) die("the handler did not hang up within 30 s");
}

// Reads every second page of r (each a fault on its own with 4 KiB fills)
// and compares it with the image.
void read_every_second_page(const GuestRegion& r, const std::vector<std::byte>& image) {
  for (size_t at = 0; at < r.size; at += 2 * kPage)
    if (std::memcmp(r.addr + at, image.data() + r.offset + at, kPage) != 0)
      die("before the event: page at offset " + std::to_string(r.offset + at) + " differs");
}

sigjmp_buf sigbus_jump;
void on_sigbus(int) { siglongjmp(sigbus_jump, 1); }

}  // namespace

int main(int argc, char** argv) {
  if (argc != 7) die("usage: faultline-test-vmm MODE SOCKET RAW REGIONS THREADS SPELLING");
  alarm(60);
  const std::string mode = argv[1], socket_path = argv[2], raw_path = argv[3], spelling = argv[6];
  const int nregions = std::atoi(argv[4]), nthreads = std::atoi(argv[5]);

  // The expected bytes, read the ordinary way.
  int raw = open(raw_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (raw < 0) die("cannot open " + raw_path);
  off_t raw_size = lseek(raw, 0, SEEK_END);
  std::vector<std::byte> image(static_cast<size_t>(raw_size));
  if (pread(raw, image.data(), image.size(), 0) != raw_size) die("cannot read " + raw_path);
  close(raw);

  // Guest memory: separate anonymous mappings, as a VMM makes them. Huge
  // pages come from the reserved pool (the test reserves them).
  const bool huge = mode == "huge" || mode == "huge-balloon";
  const size_t page_size = huge ? size_t{2} << 20 : kPage;
  const size_t guest_bytes = image.size() / page_size * page_size;
  const size_t per = guest_bytes / page_size / nregions * page_size;
  if (per == 0) die("RAW is too small for " + std::to_string(nregions) + " regions of " + std::to_string(page_size) + "-byte pages");
  std::vector<GuestRegion> regions;
  for (int i = 0; i < nregions; ++i) {
    size_t size = i == nregions - 1 ? guest_bytes - per * i : per;
    int flags = MAP_PRIVATE | MAP_ANONYMOUS | (huge ? MAP_HUGETLB | MAP_HUGE_2MB : MAP_NORESERVE);
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, flags, -1, 0);
    if (p == MAP_FAILED) die(std::string("mmap of guest memory: ") + std::strerror(errno));
    regions.push_back({static_cast<std::byte*>(p), size, per * i, page_size});
  }
  std::vector<GuestRegion> first = regions, second;
  if (mode == "two-uffds") {
    first.assign(regions.begin(), regions.begin() + nregions / 2);
    second.assign(regions.begin() + nregions / 2, regions.end());
  }
  uint64_t features = mode == "remap" ? UFFD_FEATURE_EVENT_REMAP : mode == "fork" ? UFFD_FEATURE_EVENT_FORK : 0;
  int uffd = make_uffd(first, features);
  int sock = connect_to(socket_path);

  if (mode == "bad-json" || mode == "bad-json-touch") {
    send_message(sock, "[{\"base_host_virt_addr\": 4096, \"size\": ", uffd);
  } else if (mode == "no-fd") {
    send_message(sock, mappings_json(first, spelling), -1);
  } else if (mode == "wrong-fd") {
    int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    send_message(sock, mappings_json(first, spelling), devnull);
  } else if (mode == "overlap" || mode == "overlap-touch") {
    std::vector<GuestRegion> bad = first;
    bad.push_back(first[0]);
    send_message(sock, mappings_json(bad, spelling), uffd);
  } else if (mode == "beyond") {
    std::vector<GuestRegion> bad = first;
    bad.back().offset += kPage;
    send_message(sock, mappings_json(bad, spelling), uffd);
  } else {
    send_message(sock, mappings_json(first, spelling), uffd);
  }
  if (mode == "bad-json" || mode == "no-fd" || mode == "wrong-fd" || mode == "overlap" || mode == "beyond") {
    wait_hangup(sock);
    return 0;
  }
  if (mode == "overlap-touch" || mode == "bad-json-touch") {
    wait_hangup(sock);  // the handler has given up: the page must fail, not hang
    struct sigaction sa{};
    sa.sa_handler = on_sigbus;
    sigaction(SIGBUS, &sa, nullptr);
    if (sigsetjmp(sigbus_jump, 1) == 0) {
      volatile std::byte b = first[0].addr[0];
      (void)b;
      die("a read of unserved guest memory returned instead of SIGBUS");
    }
    std::printf("SIGBUS as expected\n");
    return 0;
  }
  if (mode == "two-uffds") {
    int uffd2 = make_uffd(second);
    send_message(sock, mappings_json(second, spelling), uffd2);
    close(uffd2);  // (the handler holds its copy; Firecracker's is kept, ours need not be)
  } else if (mode == "balloon" || mode == "remap" || mode == "fork" || mode == "huge-balloon") {
    read_every_second_page(regions[0], image);
  } else if (mode != "ok" && mode != "huge") {
    die("unknown MODE " + mode);
  }
  // The balloon: these bytes of the first region must read zeros from now on.
  size_t balloon_at = 0, balloon_len = 0;
  if (mode == "balloon") {
    balloon_at = std::min<size_t>(kPage * 16, regions[0].size / 4);
    balloon_len = std::min<size_t>(1 << 20, regions[0].size / 2) / kPage * kPage;
  } else if (mode == "huge-balloon") {
    if (regions[0].size < 2 * page_size) die("huge-balloon needs a first region of 4 MiB or more");
    balloon_at = regions[0].size - page_size;
    balloon_len = page_size;
  }
  if (balloon_len) {
    if (madvise(regions[0].addr + balloon_at, balloon_len, MADV_DONTNEED) != 0)
      die(std::string("madvise(MADV_DONTNEED): ") + std::strerror(errno));
  }
  if (mode == "remap") {
    GuestRegion& r = regions[0];
    void* to = mmap(nullptr, r.size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (to == MAP_FAILED) die("mmap");
    void* moved = mremap(r.addr, r.size, r.size, MREMAP_MAYMOVE | MREMAP_FIXED, to);
    if (moved != to) die(std::string("mremap: ") + std::strerror(errno));
    r.addr = static_cast<std::byte*>(moved);
  }

  pid_t child = -1;
  if (mode == "fork") {
    child = fork();
    if (child < 0) die(std::string("fork: ") + std::strerror(errno));
    if (child == 0) alarm(60);  // (the child checks every page first, then the parent)
  }
  if (child > 0) {
    int status = 0;
    if (waitpid(child, &status, 0) != child) die("waitpid");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die("the forked child failed (status " + std::to_string(status) + ")");
  }

  // Every thread reads every page, each starting elsewhere, so faults on
  // one chunk come from several threads at once; every byte is compared.
  std::atomic<uint64_t> bad{0};
  std::atomic<long> first_bad{-1};
  std::vector<std::thread> threads;
  const size_t pages = guest_bytes / kPage;
  for (int t = 0; t < nthreads; ++t)
    threads.emplace_back([&, t] {
      for (size_t k = 0; k < pages; ++k) {
        size_t page = (k * 7 + static_cast<size_t>(t) * pages / nthreads) % pages;
        size_t off = page * kPage;
        for (const GuestRegion& r : regions) {
          if (off < r.offset || off >= r.offset + r.size) continue;
          static const std::byte zeros[kPage] = {};
          bool ballooned = &r == &regions[0] && off - r.offset >= balloon_at && off - r.offset < balloon_at + balloon_len;
          if (std::memcmp(r.addr + (off - r.offset), ballooned ? zeros : image.data() + off, kPage) != 0) {
            bad++;
            long expected = -1;
            first_bad.compare_exchange_strong(expected, static_cast<long>(off));
          }
        }
      }
    });
  for (std::thread& t : threads) t.join();
  if (bad) die(std::to_string(bad.load()) + " pages differ from " + raw_path + ", the first at offset " +
               std::to_string(first_bad.load()));
  if (balloon_len) {  // the guest takes the ballooned pages back: they hold what it writes
    for (size_t at = 0; at < balloon_len; at += kPage) regions[0].addr[balloon_at + at] = std::byte{0x5a};
    for (size_t at = 0; at < balloon_len; at += kPage)
      if (regions[0].addr[balloon_at + at] != std::byte{0x5a} || regions[0].addr[balloon_at + at + 1] != std::byte{0})
        die("a ballooned page written again does not hold the write");
  }
  std::printf("%s%s checked %zu pages in %d thread(s): all match%s\n", child == 0 ? "child: " : "",
              mode.c_str(), pages, nthreads, balloon_len ? " (the balloon reads zeros)" : "");
  return 0;
}

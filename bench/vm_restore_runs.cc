// SPDX-License-Identifier: Apache-2.0
// The vm-restore workload (issue #12): a process playing a VMM restores a
// guest as Firecracker does with an external page-fault handler
// (docs/firecracker.md). It maps anonymous guest memory, creates and
// registers a userfaultfd on it, connects to the handler's Unix socket and
// sends the JSON mappings with the uffd (SCM_RIGHTS), then reads the hot
// working set of the VM-like image (samples/vm_image.h) in the guest's order,
// reports its times on stdout and exits (faultline-bench --vm-restore-vmm:
// the handler follows the VMM's exit, so the VMM is a process of its own).
// The handler is another process, started and listening before the VMM:
//   fc-example      the behaviour of Firecracker's example on-demand handler,
//                   written here (faultline-bench --fc-example-handler): the
//                   raw memory file mapped, one 4 KiB UFFDIO_COPY per fault;
//   handle          `faultline handle RAW` with its defaults;
//   handle-ws       the same with --working-set, recorded by an untimed run;
//   handle-zstd-ws  `faultline handle SNAPSHOT --working-set` (the image's
//                   zstd snapshot);
// and fc-file has no handler: the memory file mapped MAP_PRIVATE, as
// Firecracker's file backend does. `seconds`: from mapping the guest memory
// to the working set read; `first_access_us`: to the first page read.
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "bench.h"
#include "spawn.h"
#include "faultline/error.h"
#include "vm_image.h"

namespace fbench {
namespace {

using faultline::Error;

sockaddr_un unix_address(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path) throw Error("socket path too long: " + path, ENAMETOOLONG);
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  return a;
}

// Connects to the handler's socket (it listens: the bench waited for the
// socket file; a connect between its bind and its listen is retried).
int connect_to_handler(const std::string& path) {
  sockaddr_un a = unix_address(path);
  for (int attempt = 0;; ++attempt) {
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) throw Error("socket", errno);
    if (connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return s;
    close(s);
    if (attempt == 1000) throw Error("cannot connect to " + path, errno);
    usleep(100);
  }
}

void send_with_fd(int sock, const std::string& text, int fd) {
  iovec iov{const_cast<char*>(text.data()), text.size()};
  msghdr h{};
  h.msg_iov = &iov;
  h.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  h.msg_control = control;
  h.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&h);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  if (sendmsg(sock, &h, MSG_NOSIGNAL) != static_cast<ssize_t>(text.size())) throw Error("sendmsg", errno);
}

// The guest's memory and its userfaultfd, as a VMM sets them up.
struct Guest {
  std::byte* base = nullptr;
  size_t size = 0;
  int uffd = -1;
  explicit Guest(size_t n) : size(n) {
    void* p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw Error("mmap of the guest memory", errno);
    base = static_cast<std::byte*>(p);
    bool via_dev = false;
    std::string err;
    uffd = open_uffd(O_CLOEXEC | O_NONBLOCK, &via_dev, &err);
    if (uffd < 0) throw Error("the VMM's userfaultfd: " + err);
    uffdio_api api{};
    api.api = UFFD_API;
    api.features = UFFD_FEATURE_EVENT_REMOVE;  // as Firecracker asks
    if (ioctl(uffd, UFFDIO_API, &api) != 0) throw Error("UFFDIO_API", errno);
    uffdio_register reg{};
    reg.range.start = reinterpret_cast<uintptr_t>(base);
    reg.range.len = n;
    reg.mode = UFFDIO_REGISTER_MODE_MISSING;
    if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0) throw Error("UFFDIO_REGISTER", errno);
  }
  ~Guest() {
    if (uffd >= 0) close(uffd);
    munmap(base, size);
  }
  // One mapping, the whole image, with both spellings of the page size (as
  // Firecracker sends them).
  std::string mappings_json() const {
    return "[{\"base_host_virt_addr\":" + std::to_string(reinterpret_cast<uintptr_t>(base)) +
           ",\"size\":" + std::to_string(size) + ",\"offset\":0,\"page_size\":4096,\"page_size_kib\":4096}]";
  }
};

// Reads the plan's pages: the first alone, then the whole plan. Returns the
// microseconds from t0 to the first page read.
double read_working_set(const std::byte* base, size_t size, const Plan& plan, uint64_t t0, WorkOutput& out) {
  const uint64_t first = plan.pages.at(0);
  volatile uint64_t word = reinterpret_cast<const volatile uint64_t*>(base)[probe_word_index(first)];
  (void)word;
  const double first_us = static_cast<double>(now_ns() - t0) / 1000.0;
  run_workload(base, size, plan, out);
  return first_us;
}

// A file of this run in --dir, removed when it goes out of scope.
// Runs the VMM's process: `how` is "socket" (through the handler listening
// at `target`) or "file" (the memory file `target` mapped MAP_PRIVATE).
// Then waits for the handler, if there is one, to exit 0. Throws on failure.
void run_vmm(const Context& ctx, const std::string& how, const std::string& target, Process* handler,
             const std::string& handler_log, const char* what, RunResult& r) {
  const Scratch out(ctx.dir, "vm-restore.vmm.out"), err(ctx.dir, "vm-restore.vmm.err");
  if (handler) {  // the handler listens before the VMM starts: its start-up is not the restore's
    struct stat st;
    for (int i = 0; stat(target.c_str(), &st) != 0; ++i) {
      if (handler->wait(0) >= 0) throw Error(std::string(what) + " exited before listening: " + read_text(handler_log));
      if (i == 4000) throw Error(std::string(what) + " did not listen on " + target + " within 20 s");
      usleep(5000);
    }
  }
  Process vmm;
  char fraction[32];
  std::snprintf(fraction, sizeof fraction, "%.17g", ctx.vm_fraction);
  spawn(vmm, "/proc/self/exe", {"--vm-restore-vmm", how, target, std::to_string(ctx.size), fraction}, err.path,
        out.path);
  const int status = vmm.wait(300000);
  std::istringstream line(read_text(out.path));
  std::string word;
  line >> word;
  if (status != 0 || word != "ok")
    throw Error("the VMM process failed (status " + std::to_string(status) + "): " + read_text(err.path) +
                read_text(out.path));
  line >> r.seconds >> r.first_access_us;
  if (handler) {
    const int hs = handler->wait(30000);
    if (hs != 0)
      throw Error(std::string(what) +
                  (hs < 0 ? " did not exit within 30 s of the VMM" : " exited with status " + std::to_string(hs)) +
                  ": " + read_text(handler_log));
  }
}

// A restore through a handler started with `program args` (SOCKET in args
// stands for its socket's path).
RunResult run_handler(const Context& ctx, const std::string& program, std::vector<std::string> args,
                      const char* what) {
  return failing_on_error<RunResult>([&](RunResult& r) {
    const Scratch socket(ctx.dir, "vm-restore.sock"), log(ctx.dir, "vm-restore.log");
    for (std::string& a : args)
      if (a == "SOCKET") a = socket.path;
    Process handler;
    spawn(handler, program, args, log.path);
    run_vmm(ctx, "socket", socket.path, &handler, log.path, what, r);
  });
}

// `faultline handle IMAGE ARGS...` for one restore (or a recording one).
RunResult run_handle(const Context& ctx, const std::string& image, const std::vector<std::string>& more) {
  std::vector<std::string> args = {"handle", image, "--socket", "SOCKET", "--accept-timeout", "30"};
  args.insert(args.end(), more.begin(), more.end());
  return run_handler(ctx, ctx.cli_path, args, "faultline handle");
}

// Receives the handshake on a connection: the mappings and the uffd.
int receive_handshake(int conn, nlohmann::json* mappings) {
  std::vector<char> buf(64 * 1024);
  iovec iov{buf.data(), buf.size()};
  msghdr h{};
  h.msg_iov = &iov;
  h.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  h.msg_control = control;
  h.msg_controllen = sizeof control;
  ssize_t n = recvmsg(conn, &h, MSG_CMSG_CLOEXEC);
  if (n <= 0) throw Error("recvmsg of the handshake", n < 0 ? errno : EPIPE);
  cmsghdr* c = CMSG_FIRSTHDR(&h);
  if (!c || c->cmsg_type != SCM_RIGHTS) throw Error("the handshake carries no descriptor");
  int fd;
  std::memcpy(&fd, CMSG_DATA(c), sizeof fd);
  *mappings = nlohmann::json::parse(std::string(buf.data(), static_cast<size_t>(n)));
  return fd;
}

}  // namespace

std::string prepare_vm_restore(Context& ctx) {
  std::string message;
  ctx.vm_raw_path = ctx.dir + "/vm-image-v1-" + std::to_string(ctx.size) + ".raw";
  struct stat st;
  if (stat(ctx.vm_raw_path.c_str(), &st) == 0 && static_cast<uint64_t>(st.st_size) == ctx.size) {
    message += "reusing the raw VM image " + ctx.vm_raw_path + "\n";
  } else {
    // Written as the image's bytes (vm_image::fill), 4 MiB at a time, to a
    // temporary name first: an interrupted run never leaves a short image.
    const double t0 = now_s();
    const std::string tmp = ctx.vm_raw_path + ".tmp";
    int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw Error("cannot create " + tmp, errno);
    std::vector<std::byte> buf(4 << 20);
    for (uint64_t off = 0; off < ctx.size; off += buf.size()) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), ctx.size - off));
      vm_image::fill(off, buf.data(), n);
      if (pwrite(fd, buf.data(), n, static_cast<off_t>(off)) != static_cast<ssize_t>(n)) {
        close(fd);
        throw Error("cannot write " + tmp, errno ? errno : EIO);
      }
    }
    if (fsync(fd) != 0 || close(fd) != 0) throw Error("cannot write " + tmp, errno);
    if (rename(tmp.c_str(), ctx.vm_raw_path.c_str()) != 0) throw Error("cannot rename " + tmp, errno);
    char line[256];
    std::snprintf(line, sizeof line, "raw VM image %s written in %.1f s\n", ctx.vm_raw_path.c_str(), now_s() - t0);
    message += line;
  }
  // The working sets: one untimed restore each, recording.
  ctx.vm_handle_ws_path = ctx.vm_raw_path + ".handle.ws";
  ctx.vm_handle_zstd_ws_path = ctx.vm_snap_path + ".handle.ws";
  for (const auto& [image, ws] : {std::pair{ctx.vm_raw_path, ctx.vm_handle_ws_path},
                                  std::pair{ctx.vm_snap_path, ctx.vm_handle_zstd_ws_path}}) {
    RunResult r = run_handle(ctx, image, {"--working-set-record", ws});
    if (!r.ok) throw Error("recording the working set of faultline handle on " + image + ": " + r.error);
  }
  message += "faultline handle (" + ctx.cli_path + "): working sets recorded in " + ctx.vm_handle_ws_path + " and " +
             ctx.vm_handle_zstd_ws_path + "\n";
  return message;
}

RunResult run_vm_restore(const Context& ctx, VmConfig cfg) {
  switch (cfg) {
    case VmConfig::kFcExample:
      return run_handler(ctx, "/proc/self/exe", {"--fc-example-handler", "SOCKET", ctx.vm_raw_path},
                         "the fc-example handler");
    case VmConfig::kFcFile:
      return failing_on_error<RunResult>([&](RunResult& r) { run_vmm(ctx, "file", ctx.vm_raw_path, nullptr, "", "", r); });
    case VmConfig::kHandle: return run_handle(ctx, ctx.vm_raw_path, {});
    case VmConfig::kHandleWs: return run_handle(ctx, ctx.vm_raw_path, {"--working-set", ctx.vm_handle_ws_path});
    case VmConfig::kHandleZstdWs:
      return run_handle(ctx, ctx.vm_snap_path, {"--working-set", ctx.vm_handle_zstd_ws_path});
  }
  return {};
}

int vm_restore_vmm_main(const std::string& how, const std::string& target, uint64_t size, double fraction) {
  try {
    const Plan plan = make_restore_plan(size / kPage, fraction);
    WorkOutput out;
    prepare_output(plan, out);
    double first_us = 0, seconds = 0;
    const uint64_t t0 = now_ns();
    if (how == "file") {
      int fd = open(target.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) throw Error("cannot open " + target, errno);
      void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
      close(fd);
      if (p == MAP_FAILED) throw Error("mmap of the memory file " + target, errno);
      first_us = read_working_set(static_cast<const std::byte*>(p), size, plan, t0, out);
      seconds = static_cast<double>(now_ns() - t0) * 1e-9;
    } else {
      Guest guest(size);
      int sock = connect_to_handler(target);
      send_with_fd(sock, guest.mappings_json(), guest.uffd);
      first_us = read_working_set(guest.base, guest.size, plan, t0, out);
      seconds = static_cast<double>(now_ns() - t0) * 1e-9;
    }
    if (out.sum != plan.expected_sum) throw Error("checksum mismatch: the guest memory held wrong bytes");
    std::printf("ok %.9f %.3f\n", seconds, first_us);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vm-restore VMM: %s\n", e.what());
    return 1;
  }
}

// Firecracker's example on-demand handler, as its behaviour is documented:
// the memory file mapped, each fault answered with one 4 KiB UFFDIO_COPY
// from it, a REMOVE'd page served as zeros afterwards. One thread, poll(2).
int fc_example_handler_main(const std::string& socket_path, const std::string& raw_path) {
  try {
    int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a = unix_address(socket_path);
    if (listener < 0 || bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(listener, 1) != 0)
      throw Error("cannot listen on " + socket_path, errno);
    pollfd lp{listener, POLLIN, 0};
    if (poll(&lp, 1, 30000) != 1) throw Error("no VMM connected within 30 s");
    int conn = accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (conn < 0) throw Error("accept", errno);
    nlohmann::json mappings;
    const int uffd = receive_handshake(conn, &mappings);
    int fd = open(raw_path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw Error("cannot open " + raw_path, errno);
    struct stat st;
    fstat(fd, &st);
    void* file = mmap(nullptr, static_cast<size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
    if (file == MAP_FAILED) throw Error("mmap of " + raw_path, errno);
    struct Mapping {
      uint64_t base, size, offset;
    };
    std::vector<Mapping> ms;
    for (const auto& m : mappings)
      ms.push_back({m.at("base_host_virt_addr").get<uint64_t>(), m.at("size").get<uint64_t>(),
                    m.at("offset").get<uint64_t>()});
    static const std::byte zeros[kPage] = {};
    std::vector<std::pair<uint64_t, uint64_t>> removed;  // [start, end) the balloon took
    for (;;) {
      pollfd p[2] = {{uffd, POLLIN, 0}, {conn, POLLIN, 0}};
      if (poll(p, 2, -1) < 0 && errno != EINTR) throw Error("poll", errno);
      if (p[1].revents & (POLLIN | POLLHUP)) return 0;  // the VMM has gone (it says nothing else)
      if (!(p[0].revents & POLLIN)) continue;
      uffd_msg msg;
      if (read(uffd, &msg, sizeof msg) != sizeof msg) continue;  // (EAGAIN: another woke it)
      if (msg.event == UFFD_EVENT_REMOVE) {
        removed.emplace_back(uint64_t{msg.arg.remove.start}, uint64_t{msg.arg.remove.end});
        continue;
      }
      if (msg.event != UFFD_EVENT_PAGEFAULT) continue;
      const uint64_t addr = msg.arg.pagefault.address & ~(kPage - 1);
      const std::byte* src = zeros;
      bool is_removed = false;
      for (const auto& [s, e] : removed) is_removed |= addr >= s && addr < e;
      for (const Mapping& m : ms)
        if (!is_removed && addr >= m.base && addr < m.base + m.size)
          src = static_cast<const std::byte*>(file) + m.offset + (addr - m.base);
      uffdio_copy copy{};
      copy.dst = addr;
      copy.src = reinterpret_cast<uintptr_t>(src);
      copy.len = kPage;
      while (ioctl(uffd, UFFDIO_COPY, &copy) != 0 && errno == EAGAIN) copy.copy = 0;  // (EEXIST: another thread's fault)
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fc-example handler: %s\n", e.what());
    return 1;
  }
}

}  // namespace fbench

// SPDX-License-Identifier: Apache-2.0
// `faultline handle`: a page-fault handler for a VMM restoring a snapshot,
// speaking Firecracker's protocol (docs/firecracker.md): it listens on a
// Unix socket, the VMM connects and sends, in one message, a JSON array of
// its guest memory mappings with its userfaultfd as SCM_RIGHTS ancillary
// data; the handler adopts the uffd (Runtime::adopt, faultline/foreign.h)
// and serves each mapping from IMAGE (or --remote) with map_foreign().
//
// One VMM per run. Further messages on the connection (more uffds) are
// served the same way. The handler exits 0 once the VMM has gone (its
// socket closed and its process exited), 1 on an error of its own, after
// poisoning what the guest has not been served (ForeignSpace::fail): the
// guest fails with SIGBUS rather than hang.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli.h"
#include "commands.h"
#include "faultline/error.h"
#include "faultline/file_backend.h"
#include "faultline/remote_backend.h"
#include "faultline/runtime.h"
#include "faultline/working_set.h"
#include "faultline/zstd_snapshot_backend.h"
#include "unique_fd.h"
#include "unix_socket_path.h"

namespace faultline::tools {
namespace {

constexpr const char* kAbout =
    "Serves the guest memory of a VMM restoring a snapshot, as Firecracker's\n"
    "page-fault handler (mem_backend {backend_type: \"Uffd\", backend_path:\n"
    "SOCKET} in PUT /snapshot/load; docs/firecracker.md). IMAGE is the guest\n"
    "memory file Firecracker wrote, or a faultline snapshot of it (`faultline\n"
    "snapshot create`), told apart by its first bytes; or --remote serves it\n"
    "from a faultline page server (`faultline serve`).";

constexpr const char* kFooter =
    "Protocol: listens on SOCKET and accepts one connection. The VMM sends one\n"
    "message: a JSON array of mappings, each {\"base_host_virt_addr\": ADDR,\n"
    "\"size\": BYTES, \"offset\": BYTES into IMAGE, \"page_size\": BYTES} (the\n"
    "older \"page_size_kib\", which also holds bytes, is accepted), with its\n"
    "userfaultfd as SCM_RIGHTS. Each mapping is served with fill-size chunks,\n"
    "read-ahead and the working set given. page_size 2097152 (hugetlbfs guest\n"
    "memory) is served in whole 2 MiB pages, whatever --fill-size says. Later\n"
    "messages on the connection (more uffds) are served too.\n"
    "\n"
    "Refused, with a message naming the problem: malformed JSON, a missing\n"
    "field, no descriptor or one that is not a userfaultfd, overlapping\n"
    "mappings, a mapping beyond IMAGE, a page size other than 4096 and\n"
    "2097152, a mapping not aligned to its page size. Then, and\n"
    "on any other error of its own, and on SIGINT or SIGTERM, what the guest\n"
    "has not been served yet is poisoned (its access gets SIGBUS) before the\n"
    "handler exits: the guest fails rather than hangs.\n"
    "\n"
    "Exit status: 0 the VMM went away (its socket closed and its process\n"
    "exited); 1 an error (IMAGE, SOCKET, no VMM within --accept-timeout, a\n"
    "bad message); 2 bad arguments.";

struct HandleArgs {
  std::string image;
  std::string socket;
  std::string remote;
  std::string record;
  std::string working_set;
  bool drain = false;
  unsigned accept_timeout_s = 60;
  uint32_t fill_size = 64 * 1024;
};

void add_handle_options(CLI::App& app, HandleArgs& a) {
  auto not_empty = CLI::Validator(
      [](std::string& v) { return v.empty() ? std::string("empty value") : std::string(); }, "");
  app.add_option("IMAGE", a.image, "guest memory file or faultline snapshot (or\n--remote)")->type_name("");
  app.add_option("--socket", a.socket,
                 "Unix socket to listen on (required). A socket left\n"
                 "by a handler that is gone is replaced; one a live\n"
                 "process listens on, or a file that is not a\n"
                 "socket, is refused (PATH.lock beside it\n"
                 "serialises handlers starting there). Removed\n"
                 "once the VMM has connected.")
      ->type_name("PATH")
      ->required()
      ->check(not_empty);
  app.add_option("--remote", a.remote,
                 "serve from this page server instead of IMAGE:\n"
                 "HOST:PORT or unix:/PATH")
      ->type_name("ADDRESS")
      ->check(not_empty);
  app.add_option("--working-set-record", a.record,
                 "record the chunks the guest touches, in order, and\n"
                 "write them to FILE when the VMM has gone (for\n"
                 "--working-set on the next restore). Turns\n"
                 "read-ahead off (it would hide touches).")
      ->type_name("FILE")
      ->check(not_empty);
  app.add_option("--working-set", a.working_set,
                 "prefetch the chunks recorded in FILE, in their\n"
                 "order, right after the mappings arrive (demand\n"
                 "faults first)")
      ->type_name("FILE")
      ->check(not_empty);
  app.add_flag("--drain", a.drain,
               "then load the rest of the guest memory in the\n"
               "background (the guest's faults first)");
  app.add_option("--accept-timeout", a.accept_timeout_s,
                 "give up (exit 1) if no VMM connects and sends its\n"
                 "mappings within SEC seconds, 1 to 86400\n"
                 "(default 60)")
      ->check(CLI::Range(1, 86400).description(""))
      ->type_name("SEC");
  cli::add_size(app, "--fill-size", a.fill_size, "bytes placed per fault, a power of two from 4K\nto 2M (default 64K)",
                4096, 2 * 1024 * 1024)
      ->check(cli::power_of_two());
  app.callback([&a] {
    if (a.image.empty() && a.remote.empty()) throw CLI::ValidationError("missing IMAGE (or --remote ADDRESS)");
    if (!a.image.empty() && !a.remote.empty())
      throw CLI::ValidationError("both IMAGE '" + a.image + "' and --remote '" + a.remote + "': give one");
    if (!a.record.empty() && a.record == a.working_set)
      throw CLI::ValidationError("--working-set-record and --working-set name the same file");
  });
}

void log(const char* fmt, const std::string& what) { std::fprintf(stderr, fmt, what.c_str()); }

// IMAGE as a backend: a faultline snapshot (by its magic), else the raw file.
std::shared_ptr<Backend> open_image(const HandleArgs& a) {
  if (!a.remote.empty()) {
    RemoteOptions ro;
    ro.address = a.remote;
    return connect_remote(ro);
  }
  char magic[8] = {};
  {
    detail::UniqueFd fd(::open(a.image.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw_errno("IMAGE " + a.image, errno);
    ssize_t n = ::pread(fd.get(), magic, sizeof magic, 0);
    if (n < 0) throw_errno("IMAGE " + a.image + ": read", errno);
  }
  static constexpr char kSnapshotMagic[8] = {'F', 'L', 'Z', 'S', 'N', 'A', 'P', 0};  // docs/snapshot-format.md
  if (std::memcmp(magic, kSnapshotMagic, sizeof magic) == 0) return open_zstd_snapshot(a.image);
  return std::make_shared<FileBackend>(a.image);
}

struct Mapping {
  uint64_t base = 0, size = 0, offset = 0, page_size = 0;
};

uint64_t field_u64(const nlohmann::json& m, size_t i, const char* name) {
  auto it = m.find(name);
  if (it == m.end()) throw Error("mapping " + std::to_string(i) + ": no \"" + name + "\" field");
  if (!it->is_number_unsigned())
    throw Error("mapping " + std::to_string(i) + ": \"" + name + "\" must be a non-negative integer, got " + it->dump());
  return it->get<uint64_t>();
}

// The ranges of process `pid` registered with a userfaultfd for missing
// faults ("um" among the VmFlags of /proc/PID/smaps): where the guest memory
// is when the VMM's mappings cannot be read. Taking them all is safe: the
// kernel refuses to poison, through our uffd, a range registered with another.
std::vector<ForeignRange> registered_ranges(pid_t pid) {
  std::vector<ForeignRange> out;
  std::ifstream smaps("/proc/" + std::to_string(pid) + "/smaps");
  std::string line;
  uintptr_t start = 0, end = 0;
  while (std::getline(smaps, line)) {
    if (line.rfind("VmFlags:", 0) == 0) {
      if ((" " + line.substr(8) + " ").find(" um ") != std::string::npos && end > start)
        out.push_back({start, end - start});
      continue;
    }
    // A mapping's first line: "START-END PERMS ..." (a field line has no '-' before its ':').
    size_t dash = line.find('-'), space = line.find(' ');
    if (dash == std::string::npos || space == std::string::npos || dash > space) continue;
    char* rest = nullptr;
    uintptr_t s = std::strtoull(line.c_str(), &rest, 16);
    if (rest != line.c_str() + dash) continue;
    uintptr_t e = std::strtoull(line.c_str() + dash + 1, &rest, 16);
    if (rest != line.c_str() + space) continue;
    start = s, end = e;
  }
  return out;
}

// The VMM's JSON: an array of mappings, each with its fields.
std::vector<Mapping> parse_mappings(const std::string& text) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(std::string("the VMM's message is not valid JSON (") + e.what() + ")");
  }
  if (!j.is_array() || j.empty()) throw Error("the VMM's message must be a non-empty JSON array of mappings, got " +
                                              j.dump().substr(0, 200));
  std::vector<Mapping> out;
  for (size_t i = 0; i < j.size(); ++i) {
    const nlohmann::json& m = j[i];
    if (!m.is_object()) throw Error("mapping " + std::to_string(i) + " is not a JSON object");
    Mapping p;
    p.base = field_u64(m, i, "base_host_virt_addr");
    p.size = field_u64(m, i, "size");
    p.offset = field_u64(m, i, "offset");
    // Firecracker sends both; "page_size_kib" (older, and also bytes despite its name) alone is accepted.
    p.page_size = m.contains("page_size") ? field_u64(m, i, "page_size") : field_u64(m, i, "page_size_kib");
    out.push_back(p);
  }
  return out;
}

// Checks the mappings against each other and against the image.
void check_mappings(const std::vector<Mapping>& maps, uint64_t image_size) {
  for (size_t i = 0; i < maps.size(); ++i) {
    const Mapping& p = maps[i];
    std::string where = "mapping " + std::to_string(i);
    if (p.page_size != 4096 && p.page_size != 2 * 1024 * 1024)
      throw Error(where + ": page_size " + std::to_string(p.page_size) +
                  " is not supported (4096, or 2097152 for hugetlbfs memory)");
    if (p.size == 0 || p.size % p.page_size || p.base % p.page_size || p.base + p.size < p.base)
      throw Error(where + ": base_host_virt_addr and size must be non-zero multiples of its page_size (" +
                  std::to_string(p.page_size) + ")");
    if (p.offset > image_size || p.size > image_size - p.offset)
      throw Error(where + ": [" + std::to_string(p.offset) + ", " + std::to_string(p.offset + p.size) +
                  ") of the image is beyond its end (" + std::to_string(image_size) + " bytes)");
  }
  std::vector<Mapping> sorted = maps;
  std::sort(sorted.begin(), sorted.end(), [](const Mapping& a, const Mapping& b) { return a.base < b.base; });
  for (size_t i = 1; i < sorted.size(); ++i)
    if (sorted[i].base < sorted[i - 1].base + sorted[i - 1].size) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "mappings overlap: [0x%llx, +%llu) and [0x%llx, +%llu)",
                    static_cast<unsigned long long>(sorted[i - 1].base),
                    static_cast<unsigned long long>(sorted[i - 1].size),
                    static_cast<unsigned long long>(sorted[i].base), static_cast<unsigned long long>(sorted[i].size));
      throw Error(buf);
    }
}

// One message from the VMM: its bytes and the descriptors that came with it.
struct Message {
  std::string text;
  std::vector<detail::UniqueFd> fds;
  bool truncated = false;
  bool eof = false;
};

Message receive(int conn) {
  Message m;
  std::vector<char> buf(256 * 1024);
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)];
  iovec iov{buf.data(), buf.size()};
  msghdr h{};
  h.msg_iov = &iov;
  h.msg_iovlen = 1;
  h.msg_control = control;
  h.msg_controllen = sizeof control;
  ssize_t n;
  do n = ::recvmsg(conn, &h, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) throw_errno("receiving from the VMM", errno);
  for (cmsghdr* c = CMSG_FIRSTHDR(&h); c; c = CMSG_NXTHDR(&h, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      m.fds.emplace_back(fd);
    }
  }
  m.truncated = (h.msg_flags & (MSG_CTRUNC | MSG_TRUNC)) != 0;
  m.eof = n == 0 && m.fds.empty();
  m.text.assign(buf.data(), static_cast<size_t>(n));
  return m;
}

class Handler {
 public:
  Handler(const HandleArgs& a, std::shared_ptr<Backend> backend) : args_(a), backend_(std::move(backend)) {
    if (!a.working_set.empty()) ws_ = load_working_set(a.working_set);
  }
  // What the guest has not been served yet fails (SIGBUS) instead of hanging.
  ~Handler() {
    if (done_) return;
    try {
      for (size_t i = 0; i < spaces_.size(); ++i) spaces_[i].fail(named_[i]);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "faultline handle: cannot fail the guest's pending faults: %s\n", e.what());
    }
  }

  // Adopts the uffd of one message and serves its mappings.
  void serve(Message m, pid_t pid) {
    if (m.truncated) throw Error("the VMM's message was truncated (more than 256 KiB, or more than 8 descriptors)");
    if (m.fds.empty())
      throw Error("the VMM's message carries no file descriptor (its userfaultfd must come as SCM_RIGHTS); got " +
                  std::to_string(m.text.size()) + " bytes: " + m.text.substr(0, 200));
    if (m.fds.size() > 1)
      throw Error("the VMM's message carries " + std::to_string(m.fds.size()) + " descriptors; expected one userfaultfd");
    // Adopted before the JSON is checked: if that fails, fail() poisons
    // (faults meanwhile wait, held) rather than leave the guest hanging.
    spaces_.push_back(rt_.adopt(m.fds[0].release(), pid));
    named_.emplace_back();
    std::vector<Mapping> maps;
    try {
      maps = parse_mappings(m.text);
    } catch (const Error&) {
      // No mappings to say where the guest is: the process's own maps do.
      named_.back() = registered_ranges(pid);
      throw;
    }
    // Where the guest memory is, even if the mappings are inconsistent: a
    // failure poisons it (page-aligned parts only: others are not ours).
    for (const Mapping& p : maps) {
      uint64_t start = (p.base + 4095) & ~uint64_t{4095}, end = (p.base + p.size) & ~uint64_t{4095};
      if (p.base + p.size >= p.base && end > start) named_.back().push_back({start, end - start});
    }
    check_mappings(maps, backend_->size());
    for (const Mapping& p : maps) {
      RegionOptions o;
      o.offset = p.offset;
      o.page_size = static_cast<uint32_t>(p.page_size);
      o.fill_size = std::max<uint32_t>(args_.fill_size, o.page_size);  // (huge pages are placed whole)
      o.record_touches = !args_.record.empty();
      regions_.push_back({p, rt_.map_foreign(spaces_.back(), p.base, p.size, backend_, o)});
    }
    if (!ws_.offsets.empty()) prefetch_working_set(maps.size());
    if (args_.drain)
      for (size_t i = regions_.size() - maps.size(); i < regions_.size(); ++i) regions_[i].region.drain();
    log("faultline handle: serving %s\n", describe(maps, pid));
  }

  // After the VMM closed its socket: waits for its process to exit (it
  // may close the socket and go on running; a signal still stops us).
  void wait_exit(int sigfd);

  // The VMM has gone: writes the record, reports, and no fail() is needed.
  void finish() {
    done_ = true;
    if (!args_.record.empty()) {
      WorkingSet ws;
      ws.fill_size = args_.fill_size;
      ws.region_length = backend_->size();
      // Image offsets, in fill-size chunks of the image (a mapping need not
      // start at a multiple of the fill size).
      std::unordered_set<uint64_t> seen;  // (two mappings may share an image chunk)
      for (const Served& s : regions_)
        for (uint64_t off : s.region.touched_chunks()) {
          uint64_t chunk = (s.map.offset + off) & ~(uint64_t{args_.fill_size} - 1);
          if (seen.insert(chunk).second) ws.offsets.push_back(chunk);
        }
      save_working_set(args_.record, ws);
    }
    StatsSnapshot st = rt_.stats();
    std::fprintf(stderr,
                 "faultline handle: the VMM has gone; %llu faults served, %llu bytes placed (%llu prefetched "
                 "chunks), %llu errors\n",
                 static_cast<unsigned long long>(st.faults), static_cast<unsigned long long>(st.bytes_installed),
                 static_cast<unsigned long long>(st.prefetch_chunks), static_cast<unsigned long long>(st.errors));
  }

 private:
  struct Served {
    Mapping map;
    Region region;
  };

  // Working-set offsets are image chunks: each goes to the mappings it
  // overlaps (none, for a stale hint: skipped).
  void prefetch_working_set(size_t count) {
    for (size_t i = regions_.size() - count; i < regions_.size(); ++i) {
      const Mapping& p = regions_[i].map;
      std::vector<uint64_t> mine;
      for (uint64_t off : ws_.offsets)
        if (off < p.offset + p.size && off + ws_.fill_size > p.offset) mine.push_back(std::max(off, p.offset) - p.offset);
      regions_[i].region.prefetch_chunks(mine);
    }
  }

  static std::string describe(const std::vector<Mapping>& maps, pid_t pid) {
    uint64_t bytes = 0;
    for (const Mapping& p : maps) bytes += p.size;
    return std::to_string(maps.size()) + " mapping(s), " + std::to_string(bytes) + " bytes, of process " +
           std::to_string(pid);
  }

  const HandleArgs& args_;
  std::shared_ptr<Backend> backend_;
  WorkingSet ws_;
  Runtime rt_;
  std::vector<ForeignSpace> spaces_;
  std::vector<std::vector<ForeignRange>> named_;  // by space: the ranges its JSON named
  std::vector<Served> regions_;
  bool done_ = false;
};

bool wait_readable(int fd, int sigfd, int timeout_ms);

void Handler::wait_exit(int sigfd) {
  for (ForeignSpace& s : spaces_)
    while (!s.wait_exit(std::chrono::milliseconds(200))) wait_readable(sigfd, sigfd, 0);
}

// Waits for `fd` to be readable, or a signal on `sigfd`; -1 ms: no limit.
// Returns false on timeout; throws Error on a signal.
bool wait_readable(int fd, int sigfd, int timeout_ms) {
  pollfd p[2] = {{fd, POLLIN, 0}, {sigfd, POLLIN, 0}};
  for (;;) {
    int n = ::poll(p, 2, timeout_ms);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("poll", errno);
    if (n == 0) return false;
    if (p[1].revents) {
      signalfd_siginfo si{};
      (void)!::read(sigfd, &si, sizeof si);
      throw Error(std::string("stopped by ") + strsignal(static_cast<int>(si.ssi_signo)));
    }
    return true;
  }
}

int handle(const HandleArgs& a) {
  std::shared_ptr<Backend> backend = open_image(a);
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  // Blocked before the runtime's thread exists, so only the signalfd sees them.
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  detail::UniqueFd sigfd(::signalfd(-1, &stop, SFD_CLOEXEC));
  if (!sigfd) throw_errno("signalfd", errno);
  Handler handler(a, backend);

  const std::string where = "cannot listen on " + a.socket + ": ";
  detail::BoundSocket bound;
  detail::UniqueFd listener = detail::listen_unix(a.socket, where, 4, &bound);
  struct RemoveSocket {  // (before the listener closes: the inode cannot be reused meanwhile)
    const detail::BoundSocket* s;
    ~RemoveSocket() {
      if (s) detail::remove_if_ours(*s);
    }
  } remove_socket{&bound};
  log("faultline handle: listening on %s\n", a.socket);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(a.accept_timeout_s);
  auto left_ms = [&] {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    return static_cast<int>(std::max<int64_t>(0, left.count()));
  };
  // The first connection that sends something is the VMM's; one that
  // closes without a word (another handler probing whether the socket is
  // live, say) is not.
  detail::UniqueFd conn;
  Message m;
  for (;;) {
    if (!wait_readable(listener.get(), sigfd.get(), left_ms()))
      throw Error("no VMM connected to " + a.socket + " within " + std::to_string(a.accept_timeout_s) +
                  " s (--accept-timeout)");
    conn = detail::UniqueFd(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!conn) {
      if (errno == EAGAIN || errno == ECONNABORTED || errno == EINTR) continue;
      throw_errno("accept on " + a.socket, errno);
    }
    if (!wait_readable(conn.get(), sigfd.get(), left_ms()))
      throw Error("a VMM connected to " + a.socket + " but sent no mappings within " +
                  std::to_string(a.accept_timeout_s) + " s (--accept-timeout)");
    m = receive(conn.get());
    if (!m.eof) break;
    log("faultline handle: a connection to %s closed without a message; waiting for the VMM\n", a.socket);
  }
  detail::remove_if_ours(bound);  // one VMM per handler: nobody else may connect
  remove_socket.s = nullptr;
  listener.reset();
  ucred peer{};
  socklen_t len = sizeof peer;
  if (::getsockopt(conn.get(), SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0) throw_errno("SO_PEERCRED", errno);
  if (peer.pid <= 0)
    throw Error("the VMM's process id is not visible here (another pid namespace?): cannot follow its exit");

  for (;;) {
    handler.serve(std::move(m), peer.pid);
    wait_readable(conn.get(), sigfd.get(), -1);
    m = receive(conn.get());
    if (m.eof) break;  // the VMM closed its socket: it has exited, or soon will
  }
  handler.wait_exit(sigfd.get());
  handler.finish();
  return 0;
}

}  // namespace

int handle_command(int argc, char** argv) {
  CLI::App app(kAbout, "faultline handle");
  app.footer(kFooter);
  HandleArgs args;
  add_handle_options(app, args);
  return cli::run(app, argc, argv, [&] {
    try {
      return handle(args);
    } catch (const Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Error(e.what());
    }
  });
}

}  // namespace faultline::tools

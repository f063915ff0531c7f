// SPDX-License-Identifier: Apache-2.0
// faultline-soak-remote: one `faultline serve` process, many client processes
// faulting at random over loopback for a fixed time, every byte checked.
//
// Not part of the test suite (it runs for a minute by default); run it with
// scripts/soak_remote.sh. The dataset is the bench's (word i is data_word(i),
// bench.h), so every page a client reads can be checked in full.
//
// Each client process loops until the time is up: connect a RemoteBackend,
// map the dataset with one of several region configurations (4 KiB fills
// without read-ahead, 64 KiB fills with and without read-ahead, 256 KiB
// fills), touch random pages and check all 4096 bytes of each, scan a random
// range now and then (read-ahead streams), drop random ranges with
// MADV_DONTNEED so they fault again, then unmap and start over. A SIGBUS (a
// page the runtime could not serve) is caught, counted, and ends that round.
//
// Exit status: 0 no error and no wrong byte; 1 otherwise; 2 bad arguments.
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "bench.h"
#include "cli.h"
#include "faultline/faultline.h"
#include "faultline/remote_backend.h"

namespace fbench {
namespace {

struct SoakArgs {
  std::string serve_binary;  // path of the `faultline` tool
  std::string dir = "/var/tmp/faultline-bench";
  uint64_t size = 256ull << 20;
  int clients = 16;
  int seconds = 60;
  bool local = false;  // clients read the file with FileBackend: no server, no network
  bool drop = true;    // clients drop random ranges with MADV_DONTNEED
};

// What one client reports (one line on its pipe).
struct ClientResult {
  uint64_t rounds = 0, pages_checked = 0, bytes_checked = 0, wrong_bytes = 0, sigbus = 0, poisoned = 0;
  uint64_t faults = 0, connect_errors = 0, bytes_read = 0;
  uint64_t touch_p50_ns = 0, touch_p99_ns = 0, service_p99_ns = 0;
  std::string first_error;
};

// Where each client is, in memory shared with the driver: what a client
// that hangs was doing when it was killed.
struct Progress {
  volatile uint64_t round = 0;
  volatile uint64_t fill = 0;
  volatile uint64_t readahead = 0;
  volatile uint64_t phase = 0;  // 1 connect + map, 2 random work, 3 unmap
};
const char* phase_name(uint64_t p) {
  return p == 1 ? "connecting and mapping" : p == 2 ? "faulting" : p == 3 ? "unmapping" : "starting";
}

// ---------------------------------------------------------------------------
// Client side.
sigjmp_buf* g_round_jump = nullptr;  // per process: set only in a client child

void on_sigbus(int) {
  if (g_round_jump) siglongjmp(*g_round_jump, 1);
  _exit(4);
}

// Checks one page against the generator; returns the number of wrong bytes.
uint64_t check_page(const std::byte* base, uint64_t page) {
  const auto* words = reinterpret_cast<const volatile uint64_t*>(base + page * kPage);
  uint64_t wrong = 0;
  for (size_t w = 0; w < kWordsPerPage; ++w) {
    const uint64_t diff = words[w] ^ data_word(page * kWordsPerPage + w);
    if (diff)
      for (int b = 0; b < 8; ++b) wrong += ((diff >> (8 * b)) & 0xff) != 0;
  }
  return wrong;
}

struct RegionConfig {
  uint32_t fill;
  bool readahead;
};
const RegionConfig kConfigs[] = {{4096, false}, {64 * 1024, true}, {64 * 1024, false}, {256 * 1024, true}};

// A client's running state. It lives on the heap: a SIGBUS jumps out of
// work_round() with siglongjmp, and automatic objects of the function that
// called sigsetjmp would be indeterminate afterwards if changed in between.
struct ClientState {
  explicit ClientState(int index) : rng(0xC11E47ull * static_cast<uint64_t>(index + 1)) {}
  ClientResult r;
  Rng rng;
  std::vector<uint64_t> touch_ns;
  uint64_t service_p99 = 0;
  void note(const std::string& e) {
    if (r.first_error.empty()) r.first_error = e;
  }
};

void count_wrong(ClientState& c, uint64_t page, uint64_t wrong) {
  if (wrong) c.note("page " + std::to_string(page) + ": " + std::to_string(wrong) + " wrong bytes");
  c.r.wrong_bytes += wrong;
  ++c.r.pages_checked;
  c.r.bytes_checked += kPage;
}

// About two seconds of random work on one mapping. Nothing here has a
// destructor that a siglongjmp out of a page access would skip.
void work_round(ClientState& c, const std::byte* base, uint64_t npages, double round_end, bool drop) {
  for (uint64_t steps = 0; (steps & 63) != 0 || now_s() < round_end; ++steps) {
    const uint64_t what = c.rng.below(100);
    if (what < 90) {  // one random page: first access timed, then all 4096 bytes checked
      const uint64_t page = c.rng.below(npages);
      const uint64_t t0 = now_ns();
      (void)*reinterpret_cast<const volatile uint64_t*>(base + page * kPage);
      const uint64_t t1 = now_ns();
      if (c.touch_ns.size() < c.touch_ns.capacity()) c.touch_ns.push_back(t1 - t0);
      count_wrong(c, page, check_page(base, page));
    } else if (what < 93) {  // a scan of up to 4 MiB (read-ahead)
      const uint64_t len = std::min(npages, 1 + c.rng.below(1024));
      const uint64_t first = c.rng.below(npages - len + 1);
      for (uint64_t p = first; p < first + len; ++p) count_wrong(c, p, check_page(base, p));
    } else if (drop) {  // drop up to 1 MiB so it faults again
      const uint64_t len = std::min(npages, 1 + c.rng.below(256));
      const uint64_t first = c.rng.below(npages - len + 1);
      madvise(const_cast<std::byte*>(base) + first * kPage, len * kPage, MADV_DONTNEED);
    }
  }
}

// work_round() with SIGBUS caught: returns false if one ended the round.
// sigsetjmp lives here, in a frame whose variables never change after it.
bool guarded_round(ClientState& c, const std::byte* base, uint64_t npages, double round_end, bool drop) {
  sigjmp_buf jump;
  if (sigsetjmp(jump, 1) != 0) {
    g_round_jump = nullptr;
    return false;
  }
  g_round_jump = &jump;
  work_round(c, base, npages, round_end, drop);
  g_round_jump = nullptr;
  return true;
}

ClientResult run_client(const std::string& address, uint64_t size, int index, double deadline, bool drop,
                        Progress& progress) {
  const auto state = std::make_unique<ClientState>(index);
  ClientState& c = *state;
  c.touch_ns.reserve(4 << 20);
  const uint64_t npages = size / kPage;
  faultline::Runtime runtime;

  struct sigaction sa {};
  sa.sa_handler = on_sigbus;
  sa.sa_flags = SA_NODEFER;
  sigaction(SIGBUS, &sa, nullptr);

  while (now_s() < deadline) {
    const RegionConfig cfg = kConfigs[c.r.rounds % (sizeof kConfigs / sizeof kConfigs[0])];
    ++c.r.rounds;
    progress.round = c.r.rounds;
    progress.fill = cfg.fill;
    progress.readahead = cfg.readahead;
    progress.phase = 1;
    std::shared_ptr<faultline::Backend> remote;
    faultline::Region region;
    try {
      if (address.rfind("file:", 0) == 0) {  // --local: the control experiment, no server
        remote = std::make_shared<faultline::FileBackend>(address.substr(5));
      } else {
        faultline::RemoteOptions ro;
        ro.address = address;
        remote = faultline::connect_remote(ro);
      }
      faultline::RegionOptions options;
      options.fill_size = cfg.fill;
      options.readahead = cfg.readahead;
      options.reload_removed = true;  // dropped pages fault the dataset's bytes in again (checked)
      region = runtime.map(remote, options);
    } catch (const std::exception& e) {
      ++c.r.connect_errors;
      c.note(std::string("connect/map: ") + e.what());
      usleep(100000);
      continue;
    }
    progress.phase = 2;
    if (!guarded_round(c, region.data(), npages, std::min(deadline, now_s() + 2.0), drop)) {
      ++c.r.sigbus;
      c.note("SIGBUS in round " + std::to_string(c.r.rounds) + " (fill " + std::to_string(cfg.fill) + ")");
    }
    progress.phase = 3;
    const faultline::StatsSnapshot st = region.stats();
    c.r.faults += st.faults;
    c.r.poisoned += st.errors;
    c.r.bytes_read += st.bytes_read;
    c.service_p99 = std::max(c.service_p99, st.latency_p99_ns);
    if (st.errors) c.note(std::to_string(st.errors) + " chunks poisoned in round " + std::to_string(c.r.rounds));
    region.reset();
  }
  std::sort(c.touch_ns.begin(), c.touch_ns.end());
  if (!c.touch_ns.empty()) {
    c.r.touch_p50_ns = c.touch_ns[(c.touch_ns.size() - 1) / 2];
    c.r.touch_p99_ns = c.touch_ns[static_cast<size_t>(0.99 * static_cast<double>(c.touch_ns.size() - 1))];
  }
  c.r.service_p99_ns = c.service_p99;
  return c.r;
}

std::string encode(const ClientResult& r) {
  char buf[512];
  std::snprintf(buf, sizeof buf, "%llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu ",
                static_cast<unsigned long long>(r.rounds), static_cast<unsigned long long>(r.pages_checked),
                static_cast<unsigned long long>(r.bytes_checked), static_cast<unsigned long long>(r.wrong_bytes),
                static_cast<unsigned long long>(r.sigbus), static_cast<unsigned long long>(r.poisoned),
                static_cast<unsigned long long>(r.faults), static_cast<unsigned long long>(r.connect_errors),
                static_cast<unsigned long long>(r.bytes_read), static_cast<unsigned long long>(r.touch_p50_ns),
                static_cast<unsigned long long>(r.touch_p99_ns), static_cast<unsigned long long>(r.service_p99_ns));
  std::string e = r.first_error;
  std::replace(e.begin(), e.end(), '\n', ' ');
  return buf + e + "\n";
}

bool decode(const std::string& s, ClientResult& r) {
  unsigned long long v[12];
  int consumed = 0;
  if (std::sscanf(s.c_str(), "%llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu %n", &v[0], &v[1], &v[2],
                  &v[3], &v[4], &v[5], &v[6], &v[7], &v[8], &v[9], &v[10], &v[11], &consumed) != 12)
    return false;
  r = {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], s.substr(static_cast<size_t>(consumed))};
  return true;
}

// ---------------------------------------------------------------------------
// Driver side.
// Runs the clients against `address` (or "file:PATH" with --local) until the
// deadline, then stops the server (if any) and prints the verdict.
int run_clients(const SoakArgs& a, const std::string& address, pid_t server, int server_out,
                const std::string& log_path) {
  // The clients, forked from this single-threaded process.
  const double start = now_s();
  const double deadline = start + a.seconds;
  struct Client {
    pid_t pid;
    int fd;
  };
  std::vector<Client> clients;
  void* shared = mmap(nullptr, sizeof(Progress) * static_cast<size_t>(a.clients), PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shared == MAP_FAILED) return 1;
  Progress* progress = new (shared) Progress[static_cast<size_t>(a.clients)];
  for (int i = 0; i < a.clients; ++i) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return 1;
    const pid_t pid = fork();
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      ::close(p[0]);
      ClientResult r;
      try {
        r = run_client(address, a.size, i, deadline, a.drop, progress[i]);
      } catch (const std::exception& e) {
        r.first_error = std::string("client failed: ") + e.what();
        r.connect_errors = 1;
      }
      const std::string line = encode(r);
      if (::write(p[1], line.data(), line.size()) < 0) _exit(1);
      _exit(0);
    }
    ::close(p[1]);
    clients.push_back({pid, p[0]});
  }

  // Collect every client's report. A client still running 30 s after the
  // deadline is hung (a fault never served, or never turned into SIGBUS by
  // the remote deadline): it is killed and reported with what it was doing.
  ClientResult total;
  uint64_t hung = 0, crashed = 0, max_touch_p99 = 0, max_service_p99 = 0;
  std::vector<uint64_t> touch_p50s;
  std::vector<std::string> errors;
  std::vector<std::string> lines(clients.size());
  std::vector<bool> open(clients.size(), true);
  for (size_t left = clients.size(); left > 0;) {
    std::vector<pollfd> fds;
    std::vector<size_t> which;
    for (size_t i = 0; i < clients.size(); ++i)
      if (open[i]) {
        fds.push_back({clients[i].fd, POLLIN, 0});
        which.push_back(i);
      }
    const double wait_s = deadline + 30 - now_s();
    if (wait_s <= 0) break;
    if (poll(fds.data(), fds.size(), static_cast<int>(std::min(wait_s, 1.0) * 1000) + 1) < 0 && errno != EINTR) break;
    for (size_t k = 0; k < fds.size(); ++k) {
      if (!(fds[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[4096];
      const ssize_t n = ::read(fds[k].fd, buf, sizeof buf);
      if (n > 0) {
        lines[which[k]].append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        open[which[k]] = false;
        --left;
      }
    }
  }
  for (size_t i = 0; i < clients.size(); ++i) {
    ::close(clients[i].fd);
    int status = 0;
    if (open[i]) {
      kill(clients[i].pid, SIGKILL);
      waitpid(clients[i].pid, &status, 0);
      ++hung;
      errors.push_back("client " + std::to_string(i) + ": HUNG, killed 30 s after the deadline while " +
                       phase_name(progress[i].phase) + " in round " + std::to_string(progress[i].round) + " (fill " +
                       std::to_string(progress[i].fill) + ", readahead " + (progress[i].readahead ? "on" : "off") +
                       ")");
      continue;
    }
    while (waitpid(clients[i].pid, &status, 0) < 0 && errno == EINTR) {
    }
    const std::string& line = lines[i];
    ClientResult r;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !decode(line, r)) {
      ++crashed;
      errors.push_back("client " + std::to_string(i) + ": ended with status " + std::to_string(status) +
                       (WIFSIGNALED(status) ? std::string(" (signal ") + strsignal(WTERMSIG(status)) + ")" : ""));
      continue;
    }
    total.rounds += r.rounds;
    total.pages_checked += r.pages_checked;
    total.bytes_checked += r.bytes_checked;
    total.wrong_bytes += r.wrong_bytes;
    total.sigbus += r.sigbus;
    total.poisoned += r.poisoned;
    total.faults += r.faults;
    total.connect_errors += r.connect_errors;
    total.bytes_read += r.bytes_read;
    touch_p50s.push_back(r.touch_p50_ns);
    max_touch_p99 = std::max(max_touch_p99, r.touch_p99_ns);
    max_service_p99 = std::max(max_service_p99, r.service_p99_ns);
    if (!r.first_error.empty()) errors.push_back("client " + std::to_string(i) + ": " + r.first_error);
  }
  const double elapsed = now_s() - start;

  // Stop the server the way an operator would, and insist on a clean exit.
  int server_status = 0;
  if (server > 0) {
    kill(server, SIGTERM);
    waitpid(server, &server_status, 0);
    ::close(server_out);
  }
  const bool server_clean = WIFEXITED(server_status) && WEXITSTATUS(server_status) == 0;

  std::sort(touch_p50s.begin(), touch_p50s.end());
  const uint64_t errors_total = total.sigbus + total.poisoned + total.connect_errors + hung + crashed;
  std::printf("\n%d clients, %.1f s: %llu rounds (connect, map, work, unmap), %llu faults, %.1f MiB received\n",
              a.clients, elapsed, static_cast<unsigned long long>(total.rounds),
              static_cast<unsigned long long>(total.faults), static_cast<double>(total.bytes_read) / (1 << 20));
  std::printf("checked: %llu pages, %llu bytes; wrong bytes: %llu\n",
              static_cast<unsigned long long>(total.pages_checked), static_cast<unsigned long long>(total.bytes_checked),
              static_cast<unsigned long long>(total.wrong_bytes));
  std::printf("errors: %llu (SIGBUS %llu, poisoned chunks %llu, connect/map failures %llu, hung clients %llu, "
              "crashed clients %llu)\n",
              static_cast<unsigned long long>(errors_total), static_cast<unsigned long long>(total.sigbus),
              static_cast<unsigned long long>(total.poisoned), static_cast<unsigned long long>(total.connect_errors),
              static_cast<unsigned long long>(hung), static_cast<unsigned long long>(crashed));
  if (!touch_p50s.empty())
    std::printf("random touch latency (first access of a page, includes hits): median of client p50s %.1f us, "
                "worst client p99 %.1f us; worst fault service p99 %.1f us\n",
                static_cast<double>(touch_p50s[touch_p50s.size() / 2]) / 1000.0,
                static_cast<double>(max_touch_p99) / 1000.0, static_cast<double>(max_service_p99) / 1000.0);
  if (server > 0)
    std::printf("server: %s (exit status %d); log in %s\n", server_clean ? "stopped cleanly on SIGTERM" : "NOT CLEAN",
                server_status, log_path.c_str());
  else
    std::printf("--local: no server; the clients read the file with FileBackend\n");
  for (size_t i = 0; i < errors.size() && i < 20; ++i) std::printf("  %s\n", errors[i].c_str());
  const bool ok = errors_total == 0 && total.wrong_bytes == 0 && server_clean && total.pages_checked > 0;
  std::printf("%s\n", ok ? "SOAK PASSED: 0 errors, 0 wrong bytes" : "SOAK FAILED");
  return ok ? 0 : 1;
}

// The command line, into a (checked in app's final callback).
void add_options(CLI::App& app, SoakArgs& a) {
  app.description(
      "Starts `PATH serve DATASET --listen 127.0.0.1:0`, then N client processes that fault at random over\n"
      "loopback for S seconds, checking every byte they read.");
  faultline::cli::add_version(app, "faultline-soak-remote");
  app.add_option("--serve-binary", a.serve_binary, "the faultline tool (required unless --local)")->type_name("PATH");
  app.add_option("--clients", a.clients, "client processes (default 16)")->type_name("N")->check(CLI::Range(1, 256));
  app.add_option("--seconds", a.seconds, "how long the clients run (default 60)")
      ->type_name("S")
      ->check(CLI::Range(1, 3600));
  faultline::cli::add_size(app, "--size", a.size, "dataset size, whole MiB, 1M to 64G (default 256M)", 1ull << 20,
                           64ull << 30)
      ->check(faultline::cli::multiple_of(1ull << 20));
  app.add_option("--dir", a.dir, "holds the dataset and the server's log (default /var/tmp/faultline-bench)")
      ->type_name("DIR");
  app.add_flag("--local", a.local,
               "no server: clients map the dataset with FileBackend (a control run that separates runtime "
               "problems from page-server ones)")
      ->disable_flag_override();
  app.add_flag("--no-drop{false}", a.drop,
               "clients never MADV_DONTNEED (pages fault again only in the next round)")
      ->disable_flag_override();
  app.final_callback([&a] {
    if (a.serve_binary.empty() && !a.local) throw CLI::RequiredError("--serve-binary (or --local)");
    if (!a.local && access(a.serve_binary.c_str(), X_OK) != 0)
      throw CLI::ValidationError("--serve-binary", a.serve_binary + ": not executable");
  });
}

int soak_main(const SoakArgs& a) {
  signal(SIGPIPE, SIG_IGN);

  if (mkdir(a.dir.c_str(), 0755) != 0 && errno != EEXIST) {
    std::fprintf(stderr, "faultline-soak-remote: cannot create %s: %s\n", a.dir.c_str(), std::strerror(errno));
    return 1;
  }
  const std::string path = a.dir + "/faultline-bench-" + std::to_string(a.size) + ".dat";
  const std::string log_path = a.dir + "/soak-remote-server.log";
  try {
    std::printf("%s\n", ensure_dataset(path, a.size).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "faultline-soak-remote: dataset: %s\n", e.what());
    return 1;
  }

  // The server: `faultline serve`, its endpoint read from its stdout, its log to a file.
  if (a.local) return run_clients(a, "file:" + path, -1, -1, "");
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return 1;
  const pid_t server = fork();
  if (server < 0) return 1;
  if (server == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (log_fd < 0 || dup2(out[1], 1) < 0 || dup2(log_fd, 2) < 0) _exit(127);
    execl(a.serve_binary.c_str(), a.serve_binary.c_str(), "serve", path.c_str(), "--listen", "127.0.0.1:0",
          static_cast<char*>(nullptr));
    _exit(127);
  }
  ::close(out[1]);
  std::string address;
  {
    char c;
    while (::read(out[0], &c, 1) == 1 && c != '\n') address.push_back(c);
  }
  if (address.empty()) {
    std::fprintf(stderr, "faultline-soak-remote: %s serve printed no endpoint (see %s)\n", a.serve_binary.c_str(),
                 log_path.c_str());
    kill(server, SIGKILL);
    waitpid(server, nullptr, 0);
    return 1;
  }
  std::printf("server: pid %d on %s (log: %s); %d clients for %d s over %llu MiB\n", static_cast<int>(server),
              address.c_str(), log_path.c_str(), a.clients, a.seconds,
              static_cast<unsigned long long>(a.size >> 20));
  std::fflush(stdout);

  return run_clients(a, address, server, out[0], log_path);
}

}  // namespace
}  // namespace fbench

int main(int argc, char** argv) {
  CLI::App app("", "faultline-soak-remote");
  fbench::SoakArgs a;
  fbench::add_options(app, a);
  return faultline::cli::run(app, argc, argv, [&a] { return fbench::soak_main(a); });
}

// SPDX-License-Identifier: Apache-2.0
// Memory-budget runs: the dataset is four times the budget.
//
// faultline-file-budget(-fifo): a FileBackend with O_DIRECT (the page cache
// would be memory outside the budget: the kernel keeps a file read through
// it cached), 4 KiB fills (the access is scattered: a larger fill would fill
// the budget with neighbours never read), no read-ahead, a region budget of
// dataset / 4, and 4 MiB of staging instead of 16 (O_DIRECT pins it, and it
// is memory outside the budget).
//
// mmap-cgroup: mmap with MADV_RANDOM in a child process placed in a fresh memory cgroup
// (a child of the bench's own) limited to the same bytes, so the kernel's
// page cache for the file (what mmap reads through) is what the budget
// bounds. cgroup v2 memory.max where the memory controller is there, v1
// memory.limit_in_bytes otherwise. The caches are dropped before each run,
// so every page the child touches is charged to its cgroup. MADV_RANDOM is
// the mmap twin of faultline's "no read-ahead": with MADV_NORMAL every major
// fault reads around it (read_ahead_kb, 8 MiB on the development machine's
// disk), which thrashes a small cgroup (measured: 60 faults/s in 32 MiB).
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <thread>

#include "bench.h"
#include "faultline/faultline.h"

namespace fbench {

namespace {

std::string errstr(int err) { return std::strerror(err); }

RunResult run_faultline_budget(const Context& ctx, BudgetConfig cfg, const Plan& plan) {
  RunResult r;
  r.budget_bytes = budget_for(ctx.budget_data);
  try {
    faultline::FileBackendOptions fo;
    fo.direct = true;
    const uint64_t rss0 = read_mem_status().rss_kb;
    auto backend = std::make_shared<faultline::FileBackend>(ctx.path, fo);
    pin_service();
    // 4 KiB fills one at a time need little staging; O_DIRECT pins all of it.
    faultline::RuntimeOptions ro;
    ro.staging_bytes = kStagingBytes;
    faultline::Runtime rt(ro);
    pin_app();
    faultline::RegionOptions o;
    o.fill_size = 4096;
    o.readahead = false;
    o.budget.bytes = r.budget_bytes;
    o.length = ctx.budget_data;
    o.eviction = cfg == BudgetConfig::kFifo ? faultline::EvictionPolicy::kFifo : faultline::EvictionPolicy::kAdaptive;
    WorkOutput out;
    prepare_output(plan, out);
    faultline::Region region = rt.map(backend, o);
    out.sum = touch_pages(region.data(), ctx.budget_data, plan.pages.data(), plan.warmup, nullptr);
    const faultline::StatsSnapshot warm = region.stats();
    const uint64_t t0 = now_ns();
    out.sum += touch_pages(region.data(), ctx.budget_data, plan.pages.data() + plan.warmup,
                           plan.pages.size() - plan.warmup, nullptr);
    const uint64_t t1 = now_ns();
    capture_after(r);
    faultline::StatsSnapshot s = region.stats();
    region.reset();
    // Counts of the timed part; resident_bytes stays as it was at the end.
    s.faults -= warm.faults;
    s.pages_installed -= warm.pages_installed;
    s.bytes_installed -= warm.bytes_installed;
    s.bytes_read -= warm.bytes_read;
    s.evicted_chunks -= warm.evicted_chunks;
    s.evicted_bytes -= warm.evicted_bytes;
    s.refaults -= warm.refaults;
    r.memory_peak_kb = r.peak_rss_kb > rss0 ? r.peak_rss_kb - rss0 : 0;
    r.seconds = static_cast<double>(t1 - t0) * 1e-9;
    r.has_rt = true;
    r.faults = r.rt_faults = s.faults;
    r.rt_pages_installed = s.pages_installed;
    r.rt_bytes_installed = s.bytes_installed;
    // Installed minus dropped: what the RSS check of the other runs compares against.
    r.installed_bytes = s.resident_bytes;
    r.rt_bytes_read = s.bytes_read;
    r.rt_lat_p50_ns = s.latency_p50_ns;
    r.rt_lat_p99_ns = s.latency_p99_ns;
    r.rt_lat_max_ns = s.latency_max_ns;
    r.has_service = s.latency_count > 0;
    r.svc_p50_ns = s.latency_p50_ns;
    r.svc_p99_ns = s.latency_p99_ns;
    r.rt_evicted_chunks = s.evicted_chunks;
    r.rt_refaults = s.refaults;
    r.rt_json = s.to_json();
    if (out.sum != plan.expected_sum) {
      r.ok = false;
      r.error = "checksum mismatch (runtime returned wrong bytes)";
    }
  } catch (const std::exception& e) {
    r.ok = false;
    r.error = e.what();
  }
  return r;
}

// The memory cgroup the bench runs in, as a directory: v2 if the unified
// hierarchy has the memory controller, else v1's memory hierarchy.
struct CgroupRoot {
  std::string dir;
  bool v2 = false;
  std::string error;
};

CgroupRoot find_cgroup() {
  CgroupRoot root;
  std::ifstream f("/proc/self/cgroup");
  std::string line, v1_path, v2_path;
  bool have_v2 = false;
  while (std::getline(f, line)) {
    // hierarchy-id:controllers:path
    auto a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    std::string controllers = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    if (line.compare(0, a, "0") == 0 && controllers.empty()) {
      v2_path = path;
      have_v2 = true;
    }
    std::stringstream ss(controllers);
    std::string c;
    while (std::getline(ss, c, ','))
      if (c == "memory") v1_path = path;
  }
  for (const char* mount : {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"}) {
    std::ifstream ctl(std::string(mount) + "/cgroup.controllers");
    std::string word;
    while (have_v2 && ctl >> word)
      if (word == "memory") {
        root.dir = std::string(mount) + v2_path;
        root.v2 = true;
        return root;
      }
  }
  if (!v1_path.empty()) {
    root.dir = "/sys/fs/cgroup/memory" + v1_path;
    return root;
  }
  root.error = "no memory cgroup controller (neither v2 memory.max nor v1 memory.limit_in_bytes)";
  return root;
}

bool write_file(const std::string& path, const std::string& value, std::string* err) {
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    *err = "open " + path + ": " + errstr(errno);
    return false;
  }
  bool ok = write(fd, value.data(), value.size()) == static_cast<ssize_t>(value.size());
  if (!ok) *err = "write '" + value + "' to " + path + ": " + errstr(errno);
  close(fd);
  return ok;
}

uint64_t read_u64(const std::string& path) {
  std::ifstream f(path);
  uint64_t v = 0;
  f >> v;
  return v;
}

// What the child sends back through the pipe.
struct ChildReport {
  int ok;
  double seconds;
  uint64_t minflt, majflt, peak_rss_kb, rss_after_kb;
  char error[240];
};

// The child's run: warm-up untimed, then the timed accesses.
void mmap_child(const Context& ctx, const Plan& plan, ChildReport& rep) {
  int fd = open(ctx.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    std::snprintf(rep.error, sizeof rep.error, "open %s: %s", ctx.path.c_str(), std::strerror(errno));
    return;
  }
  pin_app();
  void* p = mmap(nullptr, ctx.budget_data, PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (p == MAP_FAILED || madvise(p, ctx.budget_data, MADV_RANDOM) != 0) {
    std::snprintf(rep.error, sizeof rep.error, "mmap/madvise: %s", std::strerror(errno));
    return;
  }
  const auto* base = static_cast<const std::byte*>(p);
  uint64_t sum = touch_pages(base, ctx.budget_data, plan.pages.data(), plan.warmup, nullptr);
  const Faults f0 = read_faults();
  const uint64_t t0 = now_ns();
  sum += touch_pages(base, ctx.budget_data, plan.pages.data() + plan.warmup, plan.pages.size() - plan.warmup, nullptr);
  const uint64_t t1 = now_ns();
  const Faults f1 = read_faults();
  RunResult c;
  capture_after(c);
  munmap(p, ctx.budget_data);
  rep.seconds = static_cast<double>(t1 - t0) * 1e-9;
  rep.minflt = f1.minflt - f0.minflt;
  rep.majflt = f1.majflt - f0.majflt;
  rep.peak_rss_kb = c.peak_rss_kb;
  rep.rss_after_kb = c.rss_after_kb;
  rep.ok = sum == plan.expected_sum;
  if (!rep.ok) std::snprintf(rep.error, sizeof rep.error, "checksum mismatch");
}

RunResult run_mmap_cgroup(const Context& ctx, const Plan& plan) {
  RunResult r;
  r.budget_bytes = budget_for(ctx.budget_data);
  CgroupRoot root = find_cgroup();
  if (!root.error.empty()) {
    r.ok = false;
    r.error = root.error;
    return r;
  }
  static int serial = 0;
  const std::string dir = root.dir + "/faultline-bench-" + std::to_string(getpid()) + "-" + std::to_string(serial++);
  if (mkdir(dir.c_str(), 0755) != 0) {
    r.ok = false;
    r.error = "mkdir " + dir + ": " + errstr(errno) + (geteuid() != 0 ? " (needs root)" : "");
    return r;
  }
  std::string err;
  const std::string limit = std::to_string(r.budget_bytes);
  bool ok = root.v2 ? write_file(dir + "/memory.max", limit, &err) && write_file(dir + "/memory.swap.max", "0", &err)
                    : write_file(dir + "/memory.limit_in_bytes", limit, &err);
  int fds[2] = {-1, -1};
  if (ok && pipe2(fds, O_CLOEXEC) != 0) {
    err = "pipe: " + errstr(errno);
    ok = false;
  }
  pid_t pid = -1;
  if (ok) {
    pid = fork();
    if (pid < 0) {
      err = "fork: " + errstr(errno);
      ok = false;
    }
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);  // the bench's watchdog exits: do not run on alone
    close(fds[0]);
    ChildReport rep{};
    std::string cerr;
    if (!write_file(dir + "/cgroup.procs", std::to_string(getpid()), &cerr)) {
      std::snprintf(rep.error, sizeof rep.error, "%s", cerr.c_str());
    } else {
      reset_hwm();
      mmap_child(ctx, plan, rep);
    }
    ssize_t n = write(fds[1], &rep, sizeof rep);
    _exit(n == sizeof rep ? 0 : 1);
  }
  if (ok) {
    close(fds[1]);
    ChildReport rep{};
    ssize_t n = read(fds[0], &rep, sizeof rep);
    close(fds[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    if (n != sizeof rep) {
      ok = false;
      err = WIFSIGNALED(status) ? "the child died of signal " + std::to_string(WTERMSIG(status)) +
                                      (WTERMSIG(status) == SIGKILL ? " (OOM-killed in its cgroup?)" : "")
                                : "the child sent no result";
    } else if (!rep.ok || rep.error[0]) {
      ok = false;
      err = rep.error[0] ? rep.error : "child run failed";
    } else {
      r.seconds = rep.seconds;
      r.minflt = rep.minflt;
      r.majflt = rep.majflt;
      r.faults = rep.minflt + rep.majflt;
      r.peak_rss_kb = rep.peak_rss_kb;
      r.rss_after_kb = rep.rss_after_kb;
      r.memory_peak_kb = read_u64(dir + (root.v2 ? "/memory.peak" : "/memory.max_usage_in_bytes")) / 1024;
    }
  }
  // The page cache charged to it moves to the parent; rmdir may need a moment.
  for (int i = 0; i < 100 && rmdir(dir.c_str()) != 0 && errno == EBUSY; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  if (!ok) {
    r.ok = false;
    r.error = err;
  }
  return r;
}

}  // namespace

RunResult run_budget(const Context& ctx, BudgetConfig cfg, const Plan& plan) {
  if (cfg == BudgetConfig::kMmapCgroup) return run_mmap_cgroup(ctx, plan);
  return run_faultline_budget(ctx, cfg, plan);
}

}  // namespace fbench

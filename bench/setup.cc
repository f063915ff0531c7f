// SPDX-License-Identifier: Apache-2.0
// Setting a bench up (setup.h).
#include "setup.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <thread>

#include "faultline/error.h"

namespace fbench {

Prepared::~Prepared() {
  if (mem) munmap(mem, mem_size);
  if (any_remote && remote_server.pid > 0) stop_remote(*this);
}

std::string stop_remote(Prepared& p) {
  if (!p.any_remote || p.remote_server.pid <= 0) return "";
  std::string stats = stop_remote_server(p.remote_server);
  p.remote_server.pid = -1;
  return stats;
}

namespace {

bool is_http_case(const Case& k) { return k.c->kind == Kind::kFaultline && is_http(k.c->fl); }

// nginx for the faultline-http cases, serving symlinks to the dataset file
// and the VM image's snapshot from its own directory.
void start_nginx(Bench& b, Prepared& p, bool restore) {
  try {
    p.nginx = std::make_unique<faultline::tools::NginxServer>();
    const std::string root = p.nginx->root();
    if (symlink(b.ctx.path.c_str(), (root + "/dataset.dat").c_str()) != 0)
      faultline::throw_errno("symlink to " + b.ctx.path + " in nginx's root", errno);
    b.ctx.http_dataset_url = p.nginx->url("dataset.dat");
    if (restore) {
      if (symlink(b.ctx.vm_snap_path.c_str(), (root + "/vm.flsnap").c_str()) != 0)
        faultline::throw_errno("symlink to " + b.ctx.vm_snap_path + " in nginx's root", errno);
      b.ctx.http_vm_snap_url = p.nginx->url("vm.flsnap");
    }
    warm_file(b.ctx.path);
    if (restore) warm_file(b.ctx.vm_snap_path);
  } catch (const std::exception& e) {
    p.nginx.reset();
    b.ctx.http_dataset_url.clear();
    b.ctx.http_vm_snap_url.clear();
    p.http_error = e.what();
  }
}

// The program `name` installed beside faultline-bench, or else the build's
// (`build_path`, may be empty); "" if neither is there.
std::string find_program(const std::string& name, const std::string& build_path) {
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    std::string dir(self, static_cast<size_t>(n));
    dir.erase(dir.rfind('/') + 1);
    if (access((dir + name).c_str(), X_OK) == 0) return dir + name;
  }
  if (!build_path.empty() && access(build_path.c_str(), X_OK) == 0) return build_path;
  return "";
}

#ifndef FAULTLINE_CLI_BUILD_PATH
#define FAULTLINE_CLI_BUILD_PATH ""
#endif
#ifndef FAULTLINE_LIVE_MIGRATION_BUILD_PATH
#define FAULTLINE_LIVE_MIGRATION_BUILD_PATH ""
#endif

// Drops the cases `pred` picks, saying `why` once per configuration.
template <class Pred>
void skip_cases(Bench& b, std::vector<Case>& cases, Pred pred, const std::string& why) {
  for (const auto& k : cases)
    if (pred(k) && std::none_of(b.skipped.begin(), b.skipped.end(),
                                [&](const Bench::Skipped& s) { return s.config == k.c->name; }))
      b.skipped.push_back({k.c->name, why});
  cases.erase(std::remove_if(cases.begin(), cases.end(), pred), cases.end());
}

}  // namespace

void prepare(Bench& b, std::vector<Case>& cases, Prepared& p) {
  const Options& o = b.o;
  try {
    b.uffd_mode = faultline_mode();
  } catch (const std::exception& e) {
    b.uffd_mode = std::string("unavailable: ") + e.what();
  }
  b.ctx.dir = o.dir;
  b.ctx.custom = o.custom;
  set_pin_mode(o.pin);
  b.ctx.size = o.size;
  b.ctx.path = o.dir + "/faultline-bench-" + std::to_string(o.size) + ".dat";
  try {
    b.dataset_msg = ensure_dataset(b.ctx.path, o.size);
  } catch (const std::exception& e) {
    throw faultline::Error(std::string("dataset: ") + e.what());
  }
  b.mi = machine_info(o.dir);
  // faultline-remote*: the page server process, forked while this process
  // still has one thread (remote_runs.cc).
  for (const auto& k : cases) p.any_remote = p.any_remote || (k.c->kind == Kind::kFaultline && is_remote(k.c->fl));
  if (p.any_remote) {
    p.remote_error = start_remote_server(b.ctx, p.remote_server);
    if (p.remote_error.empty() && p.remote_server.endpoints.size() == 2) {
      b.ctx.remote_tcp = p.remote_server.endpoints[0];
      b.ctx.remote_unix = p.remote_server.endpoints[1];
    } else if (p.remote_error.empty()) {
      p.remote_error =
          "page server process reported " + std::to_string(p.remote_server.endpoints.size()) + " endpoints";
    }
  }
  // zstd snapshots: after the page server's fork (prepare_zstd starts threads).
  b.ctx.zstd_workers = o.zstd_workers ? o.zstd_workers : std::max(1u, std::thread::hardware_concurrency());
  // faultline-http*: without nginx, those cases are skipped (and said so).
  if (std::any_of(cases.begin(), cases.end(), is_http_case) && !faultline::tools::NginxServer::available())
    skip_cases(b, cases, is_http_case, faultline::tools::NginxServer::why_unavailable());
  bool any_http = false, http_restore = false;
  for (const auto& k : cases)
    if (is_http_case(k)) {
      any_http = true;
      http_restore = http_restore || k.w == Workload::kRestore;
    }
  // vm-restore: faultline handle must be there (the fc-* cases need only the bench).
  auto needs_cli = [](const Case& k) {
    return k.c->kind == Kind::kVm && k.c->vm != VmConfig::kFcExample && k.c->vm != VmConfig::kFcFile;
  };
  if (std::any_of(cases.begin(), cases.end(), needs_cli)) {
    b.ctx.cli_path = find_program("faultline", FAULTLINE_CLI_BUILD_PATH);
    if (b.ctx.cli_path.empty())
      skip_cases(b, cases, needs_cli,
                 "the faultline program was found neither beside faultline-bench nor in the build (it runs "
                 "`faultline handle`)");
  }
  // migrate: samples/live_migration must be there.
  auto is_migrate = [](const Case& k) { return k.c->kind == Kind::kMigrate; };
  if (std::any_of(cases.begin(), cases.end(), is_migrate)) {
    b.ctx.migration_path = find_program("live_migration", FAULTLINE_LIVE_MIGRATION_BUILD_PATH);
    if (b.ctx.migration_path.empty())
      skip_cases(b, cases, is_migrate,
                 "samples/live_migration was found neither beside faultline-bench nor in the build");
  }
  const bool any_vm = std::any_of(cases.begin(), cases.end(), [](const Case& k) { return k.c->kind == Kind::kVm; });
  // faultline-http's restore and vm-restore read the VM image's snapshot.
  bool zstd_dataset = false, zstd_vm = http_restore || any_vm, zstd_chain = false;
  for (const auto& k : cases)
    if (k.c->kind == Kind::kZstd) {
      (k.c->zc == ZstdConfig::kFaultline ? zstd_dataset : zstd_vm) = true;
      zstd_chain = zstd_chain || k.c->zc == ZstdConfig::kChainLazy || k.c->zc == ZstdConfig::kFlatLazy;
    }
  if (zstd_dataset || zstd_vm) {
    try {
      const Plan restore_plan = make_restore_plan(o.size / kPage, o.fraction);
      b.zstd = prepare_zstd(b.ctx, zstd_dataset, zstd_vm, &restore_plan, zstd_chain);
    } catch (const std::exception& e) {
      throw faultline::Error(std::string("zstd snapshots: ") + e.what());
    }
  }
  if (any_vm) {
    b.ctx.vm_fraction = o.fraction;
    try {
      b.zstd.message += prepare_vm_restore(b.ctx);
    } catch (const std::exception& e) {
      throw faultline::Error(std::string("vm-restore: ") + e.what());
    }
  }
  if (any_http) start_nginx(b, p, http_restore);
  bool need_mem = false;
  for (const auto& k : cases)
    need_mem = need_mem || (k.c->kind != Kind::kMmap && !k.c->file_cache && !is_http_case(k));
  if (need_mem) {
    p.mem = load_dataset(b.ctx.path, o.size);
    p.mem_size = o.size;
    b.ctx.mem = p.mem;
  }
  for (const auto& k : cases) p.any_cold = p.any_cold || k.cold;
  if (p.any_cold) b.drop_error = drop_caches();
}

void print_header(const Bench& b, const Prepared& p, size_t ncases) {
  const Options& o = b.o;
  std::printf("faultline-bench: %s, %d cores, %s, %.1f GiB RAM\n", b.mi.cpu_model.c_str(), b.mi.cores,
              b.mi.kernel.c_str(), static_cast<double>(b.mi.mem_total_kb) / (1024.0 * 1024.0));
  std::printf("uffd: %s\n", b.uffd_mode.c_str());
  std::printf("dataset disk %s, read_ahead_kb %ld; thread placement: %s\n", b.mi.disk.c_str(), b.mi.read_ahead_kb,
              o.pin == Pin::kNone ? "unpinned" : o.pin == Pin::kSame ? "all on CPU 0 (--pin same)"
                                                                     : "app CPU 0, service thread CPU 1 (--pin split)");
  std::printf("%s (%.0f MiB, %zu pages); %d repeats, %zu cases per repeat%s\n", b.dataset_msg.c_str(),
              static_cast<double>(o.size) / static_cast<double>(kMiB), static_cast<size_t>(o.size / kPage), o.repeat,
              ncases, o.quick ? " (quick)" : "");
  if (!b.zstd.message.empty()) std::printf("%s", b.zstd.message.c_str());
  if (b.load_start > 0.5)
    std::printf("note: load average %.2f at start: other work on this machine makes the numbers noisy.\n",
                b.load_start);
  if (p.any_cold && !b.drop_error.empty())
    std::printf("WARNING: cannot drop the page cache (%s): the runs labelled 'cold' are NOT cold.\n",
                b.drop_error.c_str());
  if (p.any_remote)
    std::printf("page server process: %s\n",
                p.remote_error.empty() ? (b.ctx.remote_tcp + " and " + b.ctx.remote_unix).c_str()
                                       : ("FAILED: " + p.remote_error + " (the faultline-remote runs fail)").c_str());
  if (p.nginx)
    std::printf("nginx: %s (pid %d), serving the dataset%s\n", p.nginx->url("").c_str(), static_cast<int>(p.nginx->pid()),
                b.ctx.http_vm_snap_url.empty() ? "" : " and the VM image's snapshot");
  else if (!p.http_error.empty())
    std::printf("nginx: FAILED: %s (the faultline-http runs fail)\n", p.http_error.c_str());
  for (const auto& s : b.skipped) std::printf("SKIPPED %s: %s\n", s.config.c_str(), s.reason.c_str());
  std::fflush(stdout);
}

}  // namespace fbench

// SPDX-License-Identifier: Apache-2.0
// The cases and their schedule (schedule.h).
#include "schedule.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>

namespace fbench {
namespace {

RunResult execute(Bench& b, const Case& k, const Plan& plan) {
  const ConfigDef& c = *k.c;
  bool dropped = false;
  // The file whose page cache matters: the dataset, or the snapshot read.
  const std::string& cache_file = c.kind == Kind::kVm   ? (c.vm == VmConfig::kHandleZstdWs ? b.ctx.vm_snap_path
                                                                                              : b.ctx.vm_raw_path)
                                  : c.kind != Kind::kZstd              ? b.ctx.path
                                  : c.zc == ZstdConfig::kFaultline ? b.ctx.snap_path
                                  : c.zc == ZstdConfig::kChainLazy ? b.ctx.vm_chain_path
                                  : c.zc == ZstdConfig::kFlatLazy  ? b.ctx.vm_flat_path
                                                                     : b.ctx.vm_snap_path;
  if (c.file_cache) {
    if (k.cold) {
      dropped = drop_caches().empty();
    } else if (c.kind == Kind::kZstd && c.zc == ZstdConfig::kChainLazy) {
      for (const std::string& layer : b.ctx.vm_chain_layers) warm_file(layer);  // (the chain is all of them)
    } else {
      warm_file(cache_file);
    }
  }
  // faultline-http: nginx serves from the page cache; a file evicted by an
  // earlier cold run is read back in first, untimed (faultline-remote's
  // server serves from memory).
  if (c.kind == Kind::kFaultline && is_http(c.fl))
    warm_file(plan.workload == Workload::kRestore ? b.ctx.vm_snap_path : b.ctx.path);
  double cached = c.file_cache ? cached_fraction(cache_file) : -1;
  reset_hwm();
  const uint64_t rss0 = read_mem_status().rss_kb;
  const Faults f0 = read_faults();
  RunResult r;
  if (plan.workload == Workload::kWriteFlush) {
    r = run_write_flush(b.ctx, c.kind == Kind::kFaultline, plan, b.o.seed * 131 + b.aggs.size() + ++b.write_runs);
  } else switch (c.kind) {
    case Kind::kMmap: r = run_mmap(b.ctx, c.mm, plan); break;
    case Kind::kFaultline:
      // faultline-http's restore: zstd-lazy-ws's, the snapshot read over HTTP.
      r = plan.workload == Workload::kRestore ? run_zstd(b.ctx, ZstdConfig::kLazyWs, plan, true)
                                              : run_faultline(b.ctx, c.fl, plan);
      break;
    case Kind::kTextbook: r = run_uffd_textbook(b.ctx, plan); break;
    case Kind::kBulk: r = run_uffdio_copy_bulk(b.ctx, plan, c.chunk); break;
    case Kind::kBudget: r = run_budget(b.ctx, c.budget, plan); break;
    case Kind::kZstd: r = run_zstd(b.ctx, c.zc, plan); break;
    case Kind::kVm: r = run_vm_restore(b.ctx, c.vm); break;  // (the VMM process makes the same plan)
    case Kind::kMigrate: r = run_migrate(b.ctx, c.mig); break;
    case Kind::kLiveSnap: r = run_live_snapshot(b.ctx, c.snap); break;
  }
  pin_reset();
  // After the run's mapping or region is gone: what it left in the cache.
  if (c.file_cache) r.cache_after_mb = cached_mb(cache_file);
  if (c.kind != Kind::kMmap && !runs_in_other_process(c)) {
    const Faults f1 = read_faults();
    r.minflt = f1.minflt - f0.minflt;
    r.majflt = f1.majflt - f0.majflt;
  }
  r.rss_before_kb = runs_in_other_process(c) ? 0 : rss0;
  r.cache_dropped = dropped;
  r.cached_before = cached;
  r.accesses = plan.accesses();
  r.bytes = plan.workload == Workload::kSeq || plan.workload == Workload::kCopy ? b.ctx.size : r.accesses * kPage;
  if (c.kind == Kind::kZstd && c.zc == ZstdConfig::kFull) {  // reads every page of the image
    r.accesses = plan.npages;
    r.bytes = b.ctx.size;
  }
  return r;
}

}  // namespace

std::vector<Case> make_cases(const Options& o) {
  std::vector<Case> cases;
  for (Workload w : o.workloads) {
    if (w == Workload::kReserve) continue;
    for (const ConfigDef* c : o.configs) {
      if (!supports(*c, w)) continue;
      // --quick keeps its time budget: faultline-zstd runs seq and rand only
      // (zipf and mt-rand add little over faultline-file's).
      if (o.quick && c->kind == Kind::kZstd && c->zc == ZstdConfig::kFaultline && w != Workload::kSeq &&
          w != Workload::kRand)
        continue;
      if (c->file_cache && w != Workload::kWriteFlush) {  // write-flush runs warm only (its own scratch file)
        if (o.cold) cases.push_back({w, c, true});
        if (o.warm && !c->cold_only) cases.push_back({w, c, false});
      } else if (o.warm) {
        cases.push_back({w, c, false});
      }
    }
  }
  return cases;
}

bool wants_reserve(const Options& o) {
  if (std::find(o.workloads.begin(), o.workloads.end(), Workload::kReserve) == o.workloads.end()) return false;
  for (const ConfigDef* c : o.configs)
    if (supports(*c, Workload::kReserve)) return true;
  return false;
}

void run_repeats(Bench& b, Watchdog& wd) {
  const Options& o = b.o;
  PlanParams pp;
  pp.npages = o.size / kPage;
  pp.fraction = o.fraction;
  pp.zipf_s = o.zipf_s;
  pp.threads = o.threads;
  // --quick: the budget workloads use the first quarter of the dataset.
  b.ctx.budget_data = o.quick ? o.size / 4 : o.size;
  pp.budget_npages = b.ctx.budget_data / kPage;
  for (int r = 0; r < o.repeat; ++r) {
    const double tr = now_s();
    pp.seed = o.seed + static_cast<uint64_t>(r);
    std::map<Workload, Plan> plans;
    for (const Agg& a : b.aggs)
      if (!plans.count(a.k.w)) plans.emplace(a.k.w, make_plan(a.k.w, pp));
    // Interleave: every case once per repeat, in a shuffled order.
    std::vector<size_t> order(b.aggs.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    Rng rng(o.seed * 7919 + static_cast<uint64_t>(r));
    for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.below(i)]);
    for (size_t idx : order) {
      const Case& k = b.aggs[idx].k;
      // --quick: the budget cases (seconds each, not milliseconds) run once.
      if (o.quick && r > 0 && k.c->kind == Kind::kBudget) continue;
      const std::string label = k.label();
      set_sigbus_label(k.c->name);
      wd.arm(label);
      RunResult res = execute(b, k, plans.at(k.w));
      wd.disarm();
      if (o.verbose)
        std::fprintf(stderr, "  [%d/%d] %-36s %8.4f s  faults %-8llu %s%s\n", r + 1, o.repeat, label.c_str(), res.seconds,
                     static_cast<unsigned long long>(res.faults), res.ok ? "" : "ERROR: ", res.error.c_str());
      b.aggs[idx].runs.push_back(std::move(res));
    }
    std::fprintf(stderr, "repeat %d/%d: %zu runs in %.1f s\n", r + 1, o.repeat, b.aggs.size(), now_s() - tr);
  }
}

void run_reserve(Bench& b, Watchdog& wd) {
  const bool want = std::find(b.o.workloads.begin(), b.o.workloads.end(), Workload::kReserve) != b.o.workloads.end();
  if (!want) return;
  std::vector<const ConfigDef*> cfgs;
  for (const ConfigDef* c : b.o.configs)
    if (supports(*c, Workload::kReserve)) cfgs.push_back(c);
  if (cfgs.empty()) return;
  const std::string sparse = b.o.dir + "/faultline-bench-sparse-1tib.dat";
  std::string sparse_err;
  {
    int fd = open(sparse.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) sparse_err = "create " + sparse + ": " + std::strerror(errno);
    else {
      if (ftruncate(fd, static_cast<off_t>(kTiB)) != 0) sparse_err = "ftruncate " + sparse + " to 1 TiB: " + std::strerror(errno);
      close(fd);
    }
  }
  for (const ConfigDef* c : cfgs) {
    ReserveSummary res;
    res.config = c->name;
    for (int r = 0; r < b.o.repeat; ++r) {
      std::string label = std::string("reserve/") + c->name;
      set_sigbus_label(c->name);
      wd.arm(label);
      ReserveResult rr;
      const bool needs_file = c->kind == Kind::kMmap || c->fl == FlConfig::kFile;
      if (needs_file && !sparse_err.empty()) {
        rr.ok = false;
        rr.error = sparse_err;
      } else if (c->kind == Kind::kMmap) {
        rr = reserve_mmap(sparse, kTiB);
      } else {
        rr = reserve_faultline(c->fl, kTiB, sparse);
      }
      wd.disarm();
      if (b.o.verbose)
        std::fprintf(stderr, "  reserve %-20s map %.3f ms, rss +%.1f MiB%s%s\n", c->name, rr.map_ms, rr.rss_total_mb,
                     rr.ok ? "" : " ERROR: ", rr.error.c_str());
      res.runs.push_back(rr);
    }
    aggregate(res);
    b.reserves.push_back(res);
  }
  unlink(sparse.c_str());
}

}  // namespace fbench

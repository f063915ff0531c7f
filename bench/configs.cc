// SPDX-License-Identifier: Apache-2.0
// The configuration table (configs.h).
#include "configs.h"

#include <algorithm>

namespace fbench {

namespace {

const std::vector<Workload> kAccessWorkloads = {Workload::kSeq, Workload::kRand, Workload::kZipf, Workload::kMtRand};

}  // namespace

const std::vector<ConfigDef>& all_configs() {
  static const std::vector<ConfigDef> defs = [] {
    std::vector<ConfigDef> d;
    auto w_res = kAccessWorkloads;
    w_res.push_back(Workload::kReserve);
    d.push_back({"mmap", Kind::kMmap, MmapConfig::kNormal, {}, 0, true, w_res, "mmap(PROT_READ, MAP_SHARED), MADV_NORMAL"});
    d.push_back({"mmap-seq", Kind::kMmap, MmapConfig::kSeq, {}, 0, true, kAccessWorkloads, "mmap + MADV_SEQUENTIAL"});
    d.push_back({"mmap-rand", Kind::kMmap, MmapConfig::kRand, {}, 0, true, kAccessWorkloads, "mmap + MADV_RANDOM"});
    d.push_back({"mmap-willneed", Kind::kMmap, MmapConfig::kWillneed, {}, 0, true, kAccessWorkloads,
                 "mmap + MADV_WILLNEED on the whole file (timed)"});
    d.push_back({"mmap-populate", Kind::kMmap, MmapConfig::kPopulate, {}, 0, true, kAccessWorkloads,
                 "mmap with MAP_POPULATE (timed)"});
    auto w_file = w_res;
    w_file.push_back(Workload::kWriteFlush);  // as a write-back region (writeback_runs.cc)
    d.push_back({"faultline-file", Kind::kFaultline, {}, FlConfig::kFile, 0, true, w_file,
                 "FileBackend (io_uring, buffered), default RegionOptions"});
    d.push_back({"faultline-memory", Kind::kFaultline, {}, FlConfig::kMemory, 0, false, w_res,
                 "MemoryBackend over an in-memory copy, default RegionOptions"});
    d.push_back({"faultline-memory-4k", Kind::kFaultline, {}, FlConfig::kMemory4k, 0, false, kAccessWorkloads,
                 "MemoryBackend, fill_size 4096, readahead off (bare fault path)"});
    // UFFDIO_CONTINUE beside UFFDIO_COPY (RegionOptions::shared_memory).
    d.push_back({"faultline-file-shared", Kind::kFaultline, {}, FlConfig::kFileShared, 0, true, kAccessWorkloads,
                 "same as faultline-file, shared_memory: a memfd filled through its alias, UFFDIO_CONTINUE"});
    d.push_back({"faultline-memory-shared", Kind::kFaultline, {}, FlConfig::kMemoryShared, 0, false, kAccessWorkloads,
                 "same as faultline-memory, shared_memory: a memfd filled through its alias, UFFDIO_CONTINUE"});
    d.push_back({"faultline-file-custom", Kind::kFaultline, {}, FlConfig::kFileCustom, 0, true, kAccessWorkloads,
                 "FileBackend with the --custom options (extra)", true});
    d.push_back({"faultline-memory-custom", Kind::kFaultline, {}, FlConfig::kMemoryCustom, 0, false, kAccessWorkloads,
                 "MemoryBackend with the --custom options (extra)", true});
    d.push_back({"faultline-remote", Kind::kFaultline, {}, FlConfig::kRemote, 0, false, kAccessWorkloads,
                 "RemoteBackend over loopback TCP to a page server process (memory-served), default RegionOptions"});
    // Random workloads only: a sequential scan in 4 KiB round trips takes
    // seconds and says nothing the rand latency does not.
    d.push_back({"faultline-remote-4k", Kind::kFaultline, {}, FlConfig::kRemote4k, 0, false,
                 {Workload::kRand, Workload::kMtRand},
                 "same, fill_size 4096, readahead off (one 4 KiB request per fault; rand, mt-rand only)"});
    // HTTP (issue #16): nginx on loopback serving the dataset file from the
    // page cache, as the page server serves it from memory. restore is
    // zstd-lazy-ws's restore with the snapshot read over HTTP.
    auto w_http = kAccessWorkloads;
    w_http.push_back(Workload::kRestore);
    d.push_back({"faultline-http", Kind::kFaultline, {}, FlConfig::kHttp, 0, false, w_http,
                 "HttpBackend (default HttpOptions) over loopback to a private nginx serving the dataset file, "
                 "default RegionOptions; restore: zstd-lazy-ws with the snapshot read over HTTP"});
    d.push_back({"faultline-http-4k", Kind::kFaultline, {}, FlConfig::kHttp4k, 0, false,
                 {Workload::kRand, Workload::kMtRand},
                 "same, fill_size 4096, readahead off (one 4 KiB range request per fault; rand, mt-rand only)"});
    d.push_back({"faultline-remote-unix", Kind::kFaultline, {}, FlConfig::kRemoteUnix, 0, false, kAccessWorkloads,
                 "RemoteBackend over a Unix socket to the same server process (extra)", true});
    d.push_back({"mmap-msync", Kind::kMmap, MmapConfig::kNormal, {}, 0, false, {Workload::kWriteFlush},
                 "mmap(PROT_READ|PROT_WRITE, MAP_SHARED) + msync(MS_SYNC) (write-flush only)"});
    d.push_back({"uffd-textbook", Kind::kTextbook, {}, {}, 0, false, kAccessWorkloads,
                 "bench's own 1-thread poll/read/COPY 4 KiB handler"});
    d.push_back({"uffdio-copy-bulk", Kind::kBulk, {}, {}, 2 * kMiB, false, {Workload::kCopy},
                 "UFFDIO_COPY of the whole dataset, 2 MiB chunks, DONTWAKE, no faults"});
    d.push_back({"uffdio-copy-bulk-64k", Kind::kBulk, {}, {}, 64 * 1024, false, {Workload::kCopy},
                 "same, 64 KiB chunks"});
    // Memory budgets (budget_runs.cc): cold only. Warm, the mmap child would
    // find the file cached and charged to another cgroup; faultline reads
    // with O_DIRECT and sees no difference.
    const std::vector<Workload> w_budget = {Workload::kBudgetZipf, Workload::kBudgetRand};
    d.push_back({"faultline-file-budget", Kind::kBudget, {}, {}, 0, true, w_budget,
                 "FileBackend O_DIRECT, 4 KiB fills, budget dataset/4, adaptive eviction", false,
                 BudgetConfig::kAdaptive, true});
    d.push_back({"faultline-file-budget-fifo", Kind::kBudget, {}, {}, 0, true, w_budget,
                 "same, FIFO eviction (UMap's policy)", false, BudgetConfig::kFifo, true});
    d.push_back({"mmap-cgroup", Kind::kBudget, {}, {}, 0, true, w_budget,
                 "mmap + MADV_RANDOM in a child process in a memory cgroup limited to dataset/4", false,
                 BudgetConfig::kMmapCgroup, true});
    // zstd snapshots (zstd_runs.cc).
    d.push_back({"faultline-zstd", Kind::kZstd, {}, {}, 0, true, kAccessWorkloads,
                 "ZstdSnapshotBackend over a snapshot of the dataset, default RegionOptions", false, BudgetConfig::kAdaptive, false, ZstdConfig::kFaultline});
    d.push_back({"zstd-eager", Kind::kZstd, {}, {}, 0, true, {Workload::kRestore},
                 "restore: decompress the whole snapshot into memory (a thread per CPU), then run", false, BudgetConfig::kAdaptive, false, ZstdConfig::kEager});
    d.push_back({"zstd-lazy", Kind::kZstd, {}, {}, 0, true, {Workload::kRestore},
                 "restore: map the snapshot and run; demand faults only", false, BudgetConfig::kAdaptive, false, ZstdConfig::kLazy});
    d.push_back({"zstd-lazy-ws", Kind::kZstd, {}, {}, 0, true, {Workload::kRestore},
                 "restore: map, prefetch_chunks(recorded working set), run", false, BudgetConfig::kAdaptive, false, ZstdConfig::kLazyWs});
    d.push_back({"zstd-full", Kind::kZstd, {}, {}, 0, true, {Workload::kRestore},
                 "restore: map, prefetch everything, read every page (full sequential restore)", false, BudgetConfig::kAdaptive, false, ZstdConfig::kFull});
    // A chain of live snapshots (issue #14) against the same chain flattened.
    d.push_back({"zstd-chain-lazy", Kind::kZstd, {}, {}, 0, true, {Workload::kRestore},
                 "restore: zstd-lazy over a 10-layer chain of live snapshots of the image (the newest layer opened)",
                 false, BudgetConfig::kAdaptive, false, ZstdConfig::kChainLazy});
    d.push_back({"zstd-flat-lazy", Kind::kZstd, {}, {}, 0, true, {Workload::kRestore},
                 "restore: zstd-lazy over that chain flattened into one file (faultline::flatten_snapshot)", false,
                 BudgetConfig::kAdaptive, false, ZstdConfig::kFlatLazy});
    // vm-restore (vm_restore_runs.cc): a VMM process, Firecracker's handshake.
    auto vm = [&](const char* name, VmConfig c, const char* desc) {
      ConfigDef def{name, Kind::kVm, {}, {}, 0, true, {Workload::kVmRestore}, desc};
      def.vm = c;
      d.push_back(def);
    };
    vm("fc-example", VmConfig::kFcExample,
       "vm-restore: Firecracker's example handler's behaviour: the memory file mapped, one 4 KiB UFFDIO_COPY a fault");
    vm("fc-file", VmConfig::kFcFile, "vm-restore: no handler, the memory file mapped MAP_PRIVATE (Firecracker's file backend)");
    vm("handle", VmConfig::kHandle, "vm-restore: faultline handle on the raw memory file, defaults");
    vm("handle-ws", VmConfig::kHandleWs, "vm-restore: faultline handle --working-set (recorded by an untimed restore)");
    vm("handle-zstd-ws", VmConfig::kHandleZstdWs,
       "vm-restore: faultline handle on the image's zstd snapshot, --working-set");
    // Live migration (issue #13, migrate_runs.cc): samples/live_migration.
    auto mig = [&](const char* name, MigrateConfig c, const char* desc) {
      ConfigDef def{name, Kind::kMigrate, {}, {}, 0, false, {Workload::kMigrate}, desc};
      def.mig = c;
      d.push_back(def);
    };
    mig("migrate-precopy", MigrateConfig::kPrecopy,
        "migrate: pre-copy rounds until the rest fits the 20 ms downtime limit, then stop and switch over");
    mig("migrate-postcopy", MigrateConfig::kPostcopy,
        "migrate: switch over at once; faults fetch on the urgent lane while the rest is pushed");
    mig("migrate-hybrid", MigrateConfig::kHybrid, "migrate: two pre-copy rounds, then post-copy");
    // Live and incremental snapshots (issue #14, live_snapshot_runs.cc).
    auto snap = [&](const char* name, LiveSnapConfig c, const char* desc) {
      ConfigDef def{name, Kind::kLiveSnap, {}, {}, 0, false, {Workload::kLiveSnapshot}, desc};
      def.snap = c;
      d.push_back(def);
    };
    snap("snapshot-stop", LiveSnapConfig::kStop, "live-snapshot: writers parked, snapshot written, writers let go");
    snap("snapshot-live", LiveSnapConfig::kLive, "live-snapshot: LiveSnapshotter::snapshot() while the writers run");
    snap("snapshot-incremental", LiveSnapConfig::kIncremental,
         "live-snapshot: snapshot_child() after a full snapshot and one second of writes");
    snap("snapshot-live-nice0", LiveSnapConfig::kLiveNice0,
         "live-snapshot: snapshot-live with compress_nice 0 (compressors at the writers' priority; extra)");
    d.back().extra = true;
    return d;
  }();
  return defs;
}

const ConfigDef* find_config(const std::string& name) {
  for (const auto& c : all_configs())
    if (name == c.name) return &c;
  return nullptr;
}

const std::vector<Workload>& all_workloads() {
  static const std::vector<Workload> all = {Workload::kSeq,        Workload::kRand,       Workload::kZipf,
                                            Workload::kMtRand,     Workload::kCopy,       Workload::kReserve,
                                            Workload::kRestore,    Workload::kBudgetZipf, Workload::kBudgetRand,
                                            Workload::kWriteFlush, Workload::kVmRestore, Workload::kMigrate,
                                            Workload::kLiveSnapshot};
  return all;
}

bool is_cgroup_child(const ConfigDef& c) { return c.kind == Kind::kBudget && c.budget == BudgetConfig::kMmapCgroup; }

bool runs_in_other_process(const ConfigDef& c) {
  return c.kind == Kind::kVm || c.kind == Kind::kMigrate || c.kind == Kind::kLiveSnap || is_cgroup_child(c);
}

bool faultline_kind(Kind k) { return k == Kind::kFaultline || k == Kind::kZstd; }

bool supports(const ConfigDef& c, Workload w) {
  return std::find(c.workloads.begin(), c.workloads.end(), w) != c.workloads.end();
}

}  // namespace fbench

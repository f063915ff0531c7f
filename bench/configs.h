// SPDX-License-Identifier: Apache-2.0
// The configurations faultline-bench compares (mmap variants, faultline's
// backends, the userfaultfd floors, budgets, zstd restores) and the
// workloads each one supports. docs/benchmarks.md describes every one.
#pragma once

#include <string>
#include <vector>

#include "bench.h"

namespace fbench {

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kTiB = 1ull << 40;

enum class Kind { kMmap, kFaultline, kTextbook, kBulk, kBudget, kZstd, kVm, kMigrate, kLiveSnap };

// One configuration: which runner serves it and with what settings.
struct ConfigDef {
  const char* name;
  Kind kind;
  MmapConfig mm = MmapConfig::kNormal;
  FlConfig fl = FlConfig::kFile;
  size_t chunk = 0;
  bool file_cache = false;  // uses the page cache: runs cold and warm
  std::vector<Workload> workloads;
  const char* desc;
  bool extra = false;  // run only when named in --configs
  BudgetConfig budget = BudgetConfig::kAdaptive;
  bool cold_only = false;  // warm would not be a distinct case (or not a fair one)
  ZstdConfig zc = ZstdConfig::kFaultline;  // Kind::kZstd
  VmConfig vm = VmConfig::kFcExample;      // Kind::kVm
  MigrateConfig mig = MigrateConfig::kPrecopy;  // Kind::kMigrate
  LiveSnapConfig snap = LiveSnapConfig::kStop;   // Kind::kLiveSnap
};

// Every configuration, in the order of the report.
const std::vector<ConfigDef>& all_configs();
// The configuration called `name`, or nullptr.
const ConfigDef* find_config(const std::string& name);
// Every workload, in the order of the report.
const std::vector<Workload>& all_workloads();

bool supports(const ConfigDef& c, Workload w);
// Runs through the page cache of another process: no runtime, no RSS check.
bool is_cgroup_child(const ConfigDef& c);
// Its memory is another process's (a VMM, a migration's two sides, the
// cgroup child), or no runtime's (a live snapshot): this process's RSS and
// faults say nothing of a runtime's.
bool runs_in_other_process(const ConfigDef& c);
// faultline itself serves these runs (the RSS check and the runtime's
// statistics apply); zstd-eager is counted in: its "installed" bytes are the
// memory it decompresses into.
bool faultline_kind(Kind k);

}  // namespace fbench

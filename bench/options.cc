// SPDX-License-Identifier: Apache-2.0
// faultline-bench's options (options.h) on CLI11 through tools/cli/cli.h.
#include "options.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "cli.h"
#include "schedule.h"

namespace fbench {
namespace {

const char* kDescription = R"(Benchmarks faultline against mmap and against two userfaultfd floors written
here (uffd-textbook, uffdio-copy-bulk). Needs userfaultfd; cold runs need root
(to write /proc/sys/vm/drop_caches).)";

const char* kWorkloadHelp = R"(
workloads (each reads one 8-byte word per touched 4 KiB page and sums it; the
sum is checked against the generator):
  seq      every page in order
  rand     10% of the pages, uniform without repetition, random order;
           per-access latency timed (fault p50/p99)
  zipf     10%-of-pages accesses, zipf(s) over pages (hot set scattered)
  mt-rand  like rand, split over --threads threads (disjoint page sets)
  copy     uffdio-copy-bulk only: UFFDIO_COPY of the whole dataset
  reserve  map a 1 TiB region, touch nothing: map time and RSS increase
  restore  zstd-* only: restore a VM-like image (samples/vm_image.h: zero runs,
           compressible and incompressible data) of --size bytes from its
           zstd snapshot and read one word of every page of its hot working
           set (10%, clusters of 64 KiB extents, a fixed order); zstd-full
           reads every page instead. The snapshot (64 KiB chunks, level 3) and
           the working set (recorded by one untimed lazy run) live in --dir.
  budget-zipf  memory budget of a quarter of the data; zipf(s) over pages:
           2 x pages accesses untimed (warm-up), then 2 x pages timed
           (faultline-file-budget*, mmap-cgroup; cold only)
  budget-rand  same budget; uniform with repetition, pages / 4 untimed,
           then pages / 2 timed
  write-flush  faultline-file (a write-back region, Region::flush) and
           mmap-msync (MAP_SHARED, msync MS_SYNC): 4 KiB written to each of
           10% of the pages of a scratch copy of the dataset, uniform, random
           order, then made durable; warm page cache; every page checked)
  vm-restore  fc-example, fc-file, handle*: restore's image and pages, in a
           process playing a VMM (anonymous memory, a userfaultfd, the JSON
           mappings and the uffd sent to a handler's Unix socket, exactly as
           Firecracker does); seconds from mapping the guest memory to the
           working set read, and first_access_us. The raw image and faultline
           handle's working sets (one untimed restore each) live in --dir.
  migrate  migrate-*: samples/live_migration (beside faultline-bench, or the
           build's): 2 writer threads on a 5% hot set of a --size region at
           1.27 M page writes/s, migrated over loopback TCP to a process it
           forks, which carries on and checks every word; seconds = total_s,
           and downtime_ms, blocked_ms, request_p50_us / p99, bytes_sent,
           rounds, lost_writes (the most in any repeat)
  live-snapshot  snapshot-*: a --size region of the VM-like image written by 2
           threads on a 5% hot set (1.27 M page writes/s), snapshotted with
           LiveSnapshotter into --dir: stop (writers parked), live, or
           incremental (a child after a full snapshot and 1 s of writes);
           seconds, bytes, max_stall_ms, writer_rate_ratio, dirty_bytes)";

// The items of a comma-separated list, empty items dropped.
std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t comma = s.find(',', start);
    if (comma == std::string::npos) comma = s.size();
    if (comma > start) out.push_back(s.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

// Adds --NAME taking one value, handed to `parse` (which throws
// CLI::ValidationError naming the option for a bad one).
CLI::Option* add_parsed(CLI::App& app, const std::string& name, const std::string& type,
                        std::function<void(const std::string&)> parse, const std::string& description) {
  CLI::callback_t cb = [parse](const CLI::results_t& r) {
    parse(r.at(0));
    return true;
  };
  return app.add_option(name, cb, description)->type_name(type)->type_size(1)->expected(1);
}

void parse_workloads(const std::string& text, Options& o) {
  o.workloads.clear();
  std::vector<std::string> names;
  for (Workload w : all_workloads()) names.push_back(workload_name(w));
  for (const auto& n : split_list(text)) {
    auto it = std::find(names.begin(), names.end(), n);
    if (it == names.end())
      throw CLI::ValidationError("--workloads", "unknown workload '" + n + "' (" + join_names(names) + ")");
    Workload w = all_workloads()[static_cast<size_t>(it - names.begin())];
    if (std::find(o.workloads.begin(), o.workloads.end(), w) == o.workloads.end()) o.workloads.push_back(w);
  }
  if (o.workloads.empty()) throw CLI::ValidationError("--workloads", "empty list");
}

void parse_configs(const std::string& text, Options& o) {
  o.configs.clear();
  for (const auto& n : split_list(text)) {
    const ConfigDef* c = find_config(n);
    if (!c) throw CLI::ValidationError("--configs", "unknown configuration '" + n + "' (see --help)");
    if (std::find(o.configs.begin(), o.configs.end(), c) == o.configs.end()) o.configs.push_back(c);
  }
  if (o.configs.empty()) throw CLI::ValidationError("--configs", "empty list");
}

void parse_caches(const std::string& text, Options& o) {
  auto list = split_list(text);
  if (list.empty()) throw CLI::ValidationError("--caches", "empty list");
  o.cold = o.warm = false;
  for (const auto& n : list) {
    if (n == "cold") o.cold = true;
    else if (n == "warm") o.warm = true;
    else throw CLI::ValidationError("--caches", "expected cold and/or warm, got '" + n + "'");
  }
}

// --custom key=value,...: the options of the *-custom configurations.
void parse_custom(const std::string& text, CustomOptions& c) {
  c = CustomOptions{};
  c.spec = text;
  auto bad = [](const std::string& msg) { return CLI::ValidationError("--custom", msg); };
  for (const auto& kv : split_list(text)) {
    auto eq = kv.find('=');
    if (eq == std::string::npos) throw bad("expected key=value, got '" + kv + "'");
    const std::string k = kv.substr(0, eq), v = kv.substr(eq + 1);
    auto boolean = [&] {
      if (v != "0" && v != "1") throw bad(k + " must be 0 or 1, got '" + v + "'");
      return v == "1";
    };
    auto size = [&](uint64_t hi) {
      uint64_t n = 0;
      if (!faultline::cli::parse_size(v, n))
        throw bad(k + ": expected a size such as 4096, 64K, 2M or 1G, got '" + v + "'");
      if (n > hi) throw bad(k + ": at most " + std::to_string(hi) + " bytes, got '" + v + "'");
      return n;
    };
    if (k == "fill") c.fill_size = static_cast<uint32_t>(size(UINT32_MAX));
    else if (k == "readahead") c.readahead = boolean();
    else if (k == "readahead_max") c.readahead_max = size(UINT64_MAX);
    else if (k == "direct") c.direct = boolean();
    else if (k == "staging") c.staging_bytes = size(UINT64_MAX);
    else if (k == "qd") {
      uint64_t n = 0;
      if (v.find_first_not_of("0123456789") != std::string::npos || !faultline::cli::parse_size(v, n) || n < 1 ||
          n > 4096)
        throw bad("qd must be 1..4096, got '" + v + "'");
      c.queue_depth = static_cast<uint32_t>(n);
    } else if (k == "background" || k == "keep_cache") {
      uint64_t n = 0;
      if (k == "keep_cache") {
        c.keep_cache = boolean();
      } else if (v.find_first_not_of("0123456789") != std::string::npos || !faultline::cli::parse_size(v, n) ||
                 n > 4096) {
        throw bad("background must be 0..4096 (0: the default), got '" + v + "'");
      } else {
        c.background_reads = static_cast<uint32_t>(n);
      }
    } else {
      throw bad("unknown key '" + k +
                "' (fill, readahead, readahead_max, direct, qd, background, keep_cache, staging)");
    }
  }
}

// A number strictly between lo and hi.
CLI::Validator open_range(double lo, double hi) {
  return CLI::Validator(
      [lo, hi](std::string& text) {
        double v = 0;
        if (!CLI::detail::lexical_cast(text, v) || !(v > lo && v < hi))
          return "expected a number in (" + CLI::detail::to_string(lo) + ", " + CLI::detail::to_string(hi) +
                 "), got '" + text + "'";
        return std::string();
      },
      "");
}

// A decimal number that fits in 64 bits, into v.
bool parse_u64(const std::string& text, uint64_t& v) {
  if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos) return false;
  errno = 0;
  v = std::strtoull(text.c_str(), nullptr, 10);
  return errno == 0;
}

}  // namespace

const char* pin_name(Pin p) { return p == Pin::kNone ? "none" : p == Pin::kSame ? "same" : "split"; }

void add_options(CLI::App& app, Options& o) {
  app.description(kDescription);
  app.footer(kWorkloadHelp);
  faultline::cli::add_version(app, "faultline-bench");
  o.workloads = all_workloads();

  CLI::Option* size = faultline::cli::add_size(app, "--size", o.size,
                                               "dataset size (default 1G; --quick: 128M); a multiple of 4096, "
                                               "4M to 1T",
                                               4 * kMiB, kTiB)
                          ->check(faultline::cli::multiple_of(kPage));
  app.add_option("--dir", o.dir,
                 "where the dataset file lives (default /var/tmp/faultline-bench); created if missing, reused if "
                 "present with the right size")
      ->type_name("DIR")
      ->check(CLI::Validator([](std::string& s) { return s.empty() ? std::string("empty") : std::string(); }, ""));
  CLI::Option* repeat = app.add_option("--repeat", o.repeat, "repetitions, interleaved round-robin (default 5; --quick: 3)")
                            ->type_name("N")
                            ->check(CLI::Range(1, 1000));
  app.add_flag("--quick", o.quick,
               "small and fast: 128M, 3 repeats (under a minute); the budget cases run in the first repeat only, "
               "over the first quarter of the dataset; faultline-zstd runs seq and rand only")
      ->disable_flag_override();
  // (From the tables, so the lists cannot fall behind them.)
  std::string workload_names;
  for (Workload w : all_workloads()) workload_names += (workload_names.empty() ? "" : ",") + std::string(workload_name(w));
  add_parsed(app, "--workloads", "LIST", [&o](const std::string& v) { parse_workloads(v, o); },
             "comma-separated subset of: " + workload_names);
  std::string config_names, extra_names;
  for (const ConfigDef& c : all_configs()) {
    std::string& list = c.extra ? extra_names : config_names;
    list += (list.empty() ? "" : ",") + std::string(c.name);
  }
  CLI::Option* configs = add_parsed(
      app, "--configs", "LIST", [&o](const std::string& v) { parse_configs(v, o); },
      "comma-separated subset of: " + config_names + "; extras, run only when named: " + extra_names);
  add_parsed(app, "--caches", "LIST", [&o](const std::string& v) { parse_caches(v, o); },
             "cold,warm (default both); memory-backed configs and the floors run under warm only");
  add_parsed(app, "--custom", "SPEC", [&o](const std::string& v) { parse_custom(v, o.custom); },
             "options of the *-custom configs, comma-separated key=value: fill=SIZE readahead=0|1 "
             "readahead_max=SIZE direct=0|1 qd=N background=N keep_cache=0|1 staging=SIZE (defaults: the library's defaults)");
  add_parsed(
      app, "--pin", "MODE",
      [&o](const std::string& v) {
        if (v == "none") o.pin = Pin::kNone;
        else if (v == "same") o.pin = Pin::kSame;
        else if (v == "split") o.pin = Pin::kSplit;
        else throw CLI::ValidationError("--pin", "expected none, same or split, got '" + v + "'");
      },
      "thread placement: none (default: the scheduler decides), same (application and fault-service thread on "
      "CPU 0), split (application on CPU 0, service thread on CPU 1)");
  app.add_option("--json", o.json, "also write the results as JSON")
      ->type_name("FILE")
      ->check(CLI::Validator([](std::string& s) { return s.empty() ? std::string("empty file name") : std::string(); },
                             ""));
  app.add_option("--threads", o.threads, "threads of mt-rand (default 4)")->type_name("N")->check(CLI::Range(1, 256));
  app.add_option("--zstd-workers", o.zstd_workers,
                 "decompression threads of the zstd snapshot backend (default 0: one per CPU, like zstd-eager's "
                 "threads)")
      ->type_name("N")
      ->check(CLI::Range(0, 256));
  app.add_option("--zipf-s", o.zipf_s, "zipf exponent (default 1.0)")->type_name("S")->check(open_range(0, 10));
  add_parsed(
      app, "--seed", "N",
      [&o](const std::string& v) {
        // (CLI11's own conversion would wrap "-1" and overflows around.)
        if (!parse_u64(v, o.seed)) throw CLI::ValidationError("--seed", "not a 64-bit unsigned integer: '" + v + "'");
      },
      "seed of the page choices (default 1; repeat r uses seed+r)");
  app.add_option("--timeout", o.timeout, "abort if one run takes longer (default 300)")
      ->type_name("SEC")
      ->check(CLI::Range(1, 86400));
  app.add_flag("-v,--verbose", o.verbose, "one line per run on stderr")->disable_flag_override();

  app.final_callback([&o, size, repeat, configs] {
    if (configs->count() == 0)
      for (const auto& c : all_configs())
        if (!c.extra) o.configs.push_back(&c);
    if (o.quick) {
      if (size->count() == 0) o.size = 128 * kMiB;
      if (repeat->count() == 0) o.repeat = 3;
    }
    if (o.pin == Pin::kSplit && sysconf(_SC_NPROCESSORS_ONLN) < 2)
      throw CLI::ValidationError("--pin", "split needs 2 CPUs");
    if (o.size / kPage < static_cast<uint64_t>(o.threads) * 10)
      throw CLI::ValidationError("--size", "too small for " + std::to_string(o.threads) + " threads");
    if (make_cases(o).empty() && !wants_reserve(o))
      throw CLI::ValidationError("nothing to run: no selected configuration supports the selected workloads/caches");
  });
}

}  // namespace fbench

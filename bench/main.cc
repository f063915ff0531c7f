// SPDX-License-Identifier: Apache-2.0
// faultline-bench: faultline against mmap and against the userfaultfd floors.
//
// See docs/benchmarks.md for what every workload and configuration does and
// how to read the output. Run with --help for the options.
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "cli.h"
#include "options.h"
#include "report_json.h"
#include "report_text.h"
#include "schedule.h"
#include "setup.h"
#include "targets.h"
#include "watchdog.h"

namespace fbench {
namespace {

int bench_main(Bench& b) {
  const Options& o = b.o;
  const double t_start = now_s();
  std::vector<Case> cases = make_cases(o);
  install_sigbus_report();
  if (mkdir(o.dir.c_str(), 0755) != 0 && errno != EEXIST) {
    std::fprintf(stderr, "faultline-bench: cannot create --dir %s: %s\n", o.dir.c_str(), std::strerror(errno));
    return 2;
  }
  Prepared p;
  prepare(b, cases, p);
  b.load_start = loadavg1();
  print_header(b, p, cases.size());

  Watchdog wd(o.timeout);
  b.aggs.resize(cases.size());
  for (size_t i = 0; i < cases.size(); ++i) b.aggs[i].k = cases[i];
  run_repeats(b, wd);
  run_reserve(b, wd);
  const std::string remote_stats = stop_remote(p);
  for (auto& a : b.aggs) aggregate(a);
  b.total_s = now_s() - t_start;
  b.load_end = loadavg1();

  print_table(b, stdout);
  if (p.any_remote) std::printf("\npage server process: %s\n", remote_stats.c_str());
  for (const auto& s : b.skipped) std::printf("\nSKIPPED %s: %s\n", s.config.c_str(), s.reason.c_str());
  print_budget(b, stdout);
  const std::vector<Target> targets = compute_targets(b);
  print_targets(targets, stdout);
  std::printf("\ntotal %.1f s; load average %.2f at start, %.2f at end\n", b.total_s, b.load_start, b.load_end);
  if (!o.json.empty()) {
    write_json(b, targets, o.json);
    std::printf("wrote %s\n", o.json.c_str());
  }
  bool all_ok = true;
  for (const auto& a : b.aggs) all_ok = all_ok && a.all_ok;
  for (const auto& r : b.reserves) all_ok = all_ok && r.ok;
  return all_ok ? 0 : 1;
}

}  // namespace
}  // namespace fbench

int main(int argc, char** argv) {
  // The processes of the vm-restore runs (vm_restore_runs.cc), not for users.
  if (argc == 4 && std::string(argv[1]) == "--fc-example-handler")
    return fbench::fc_example_handler_main(argv[2], argv[3]);
  if (argc == 6 && std::string(argv[1]) == "--vm-restore-vmm")
    return fbench::vm_restore_vmm_main(argv[2], argv[3], std::stoull(argv[4]), std::stod(argv[5]));
  CLI::App app("", "faultline-bench");
  fbench::Bench b;
  fbench::add_options(app, b.o);
  return faultline::cli::run(app, argc, argv, [&b] { return fbench::bench_main(b); });
}

// SPDX-License-Identifier: Apache-2.0
// faultline-bench's command line: what to run and how (see --help and
// docs/benchmarks.md).
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "bench.h"
#include "configs.h"

namespace fbench {

// The parsed command line. Defaults are those of a full run; --quick
// changes the size and repeats the caller did not set.
struct Options {
  uint64_t size = 1ull << 30;
  std::string dir = "/var/tmp/faultline-bench";
  int repeat = 5;
  bool quick = false;
  std::vector<Workload> workloads;
  std::vector<const ConfigDef*> configs;
  bool cold = true, warm = true;
  std::string json;
  uint64_t seed = 1;
  int threads = 4;
  unsigned zstd_workers = 0;  // 0: one per CPU
  double zipf_s = 1.0;
  double fraction = 0.10;
  int timeout = 300;
  bool verbose = false;
  CustomOptions custom;
  Pin pin = Pin::kNone;
};

// Adds every option to `app`, parsed into `o`, with the checks that need
// the whole command line (defaults of --quick, --pin split on one CPU,
// --size against --threads) in app's final callback: a bad command line is
// a CLI11 ParseError naming the option. `o` must outlive app's parse.
void add_options(CLI::App& app, Options& o);

const char* pin_name(Pin p);

}  // namespace fbench

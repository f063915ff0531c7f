// SPDX-License-Identifier: Apache-2.0
// What libfaultline-preload.so intercepts, read from the environment once
// (docs/preload.md):
//
//   FAULTLINE_PRELOAD      colon-separated fnmatch(3) globs of file paths;
//                          unset or empty: nothing is intercepted
//   FAULTLINE_PRELOAD_MIN  smallest mapping served, a size as the CLI takes
//                          it ("1M", "64KiB", "4096"); default 1 MiB
//   FAULTLINE_STATS        file the JSON statistics are written to at exit
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace faultline::preload {

struct Config {
  std::vector<std::string> globs;
  uint64_t min_bytes = 1024 * 1024;
  std::string stats_file;
  // Set when a variable could not be read; the shim then intercepts nothing
  // and prints this once.
  std::string error;

  bool matches(const std::string& path) const;
};

// Reads the variables. Never throws: a bad value ends up in Config::error.
Config read_config();

}  // namespace faultline::preload

// SPDX-License-Identifier: Apache-2.0
#include "config.h"

#include <fnmatch.h>

#include <cstdlib>

#include "cli.h"

namespace faultline::preload {

bool Config::matches(const std::string& path) const {
  for (const std::string& g : globs)
    if (fnmatch(g.c_str(), path.c_str(), 0) == 0) return true;
  return false;
}

Config read_config() {
  Config c;
  if (const char* p = std::getenv("FAULTLINE_PRELOAD")) {
    std::string all = p;
    size_t start = 0;
    while (start <= all.size()) {
      size_t end = all.find(':', start);
      if (end == std::string::npos) end = all.size();
      if (end > start) c.globs.push_back(all.substr(start, end - start));
      start = end + 1;
    }
  }
  if (const char* m = std::getenv("FAULTLINE_PRELOAD_MIN"); m && *m) {
    if (!cli::parse_size(m, c.min_bytes)) {
      c.error = std::string("FAULTLINE_PRELOAD_MIN = '") + m +
                "': expected a size such as 4096, 64K, 2M or 1G; intercepting nothing";
      c.globs.clear();
    }
  }
  if (const char* s = std::getenv("FAULTLINE_STATS")) c.stats_file = s;
  return c;
}

}  // namespace faultline::preload

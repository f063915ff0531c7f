// SPDX-License-Identifier: Apache-2.0
#include "log.h"

#include <unistd.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <string>

namespace faultline {

void log_to_stderr(LogLevel level, std::string_view message) {
  if (level == LogLevel::kInfo) return;  // (routine: only for a sink that asks)
  // One write, so lines from several threads do not interleave.
  std::string line = "faultline: ";
  line.append(message);
  line.push_back('\n');
  (void)!::write(STDERR_FILENO, line.data(), line.size());
}

namespace detail {

void logf(const LogSink& sink, LogLevel level, const char* format, ...) {
  char buffer[1024];
  va_list args;
  va_start(args, format);
  int n = std::vsnprintf(buffer, sizeof buffer, format, args);
  va_end(args);
  std::string_view message(buffer, n < 0 ? 0 : std::min<size_t>(static_cast<size_t>(n), sizeof buffer - 1));
  if (sink)
    sink(level, message);
  else
    log_to_stderr(level, message);
}

}  // namespace detail
}  // namespace faultline

// SPDX-License-Identifier: Apache-2.0
// Where the library's warnings go.
//
// The runtime and the backends report the problems they handle themselves
// (a chunk that failed its checksum and gets SIGBUS, io_uring unavailable
// and pread used instead, a write-back that failed while evicting) as one
// line each, through a LogSink. Errors the caller must act on are
// exceptions instead (faultline/error.h).
//
// A sink runs on the library's threads (the fault thread, the evictor, a
// backend's workers), possibly on several at once: it must be thread-safe,
// quick (the fault thread waits for it) and must not call into the runtime.
#pragma once

#include <functional>
#include <string_view>

namespace faultline {

enum class LogLevel {
  kInfo,     // routine events an operator may follow (a page server's connections)
  kWarning,  // handled; worth knowing (a fallback, a retry)
  kError,    // data could not be served or written; pages get SIGBUS or stay in memory
};

// `message` has no "faultline: " prefix and no newline.
using LogSink = std::function<void(LogLevel level, std::string_view message)>;

// The default sink (an empty LogSink means this): "faultline: MESSAGE\n" on
// stderr, one write per line, for warnings and errors; kInfo is left out.
void log_to_stderr(LogLevel level, std::string_view message);

}  // namespace faultline

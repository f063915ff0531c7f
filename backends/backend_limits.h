// SPDX-License-Identifier: Apache-2.0
// Limits the backends share, each with its reason, and the check of an
// option against its range, so every backend words it the same way. (Not
// limits.h: backends/ is on the include path, and <limits.h> must stay the
// C library's.)
#pragma once

#include <cstdint>
#include <string>

#include "faultline/error.h"

namespace faultline::detail {

// The largest queue_depth of any backend (FileBackendOptions,
// ZstdSnapshotOptions, RemoteOptions): reads in flight per backend. A deeper
// queue could not be filled: the default staging arena (16 MiB) holds 4096
// reads of the smallest fill (4 KiB). And the io_uring rings stay small: 4096
// SQEs are 256 KiB, their CQ 128 KiB. One range for every backend lets a tool
// pass the same --queue-depth to any.
inline constexpr uint32_t kMaxQueueDepth = 4096;

// Throws Error("<field> = <value> for <path>: must be <lo>..<hi>") unless
// lo <= value <= hi; `field` names the option, e.g.
// "FileBackendOptions.queue_depth".
inline void check_option_range(const char* field, uint64_t value, uint64_t lo, uint64_t hi, const std::string& path) {
  if (value < lo || value > hi)
    throw Error(std::string(field) + " = " + std::to_string(value) + " for " + path + ": must be " +
                std::to_string(lo) + ".." + std::to_string(hi));
}

}  // namespace faultline::detail

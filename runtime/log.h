// SPDX-License-Identifier: Apache-2.0
// The library's one way to emit a warning: printf-style into a LogSink
// (faultline/log.h), stderr when the sink is empty.
#pragma once

#include "faultline/log.h"

namespace faultline::detail {

[[gnu::format(printf, 3, 4)]] void logf(const LogSink& sink, LogLevel level, const char* format, ...);

}  // namespace faultline::detail

// SPDX-License-Identifier: Apache-2.0
// The completion eventfd of an asynchronous backend (Backend::completion_fd()).
// The runtime polls it edge-triggered and never reads it, and neither does a
// backend: every write is a new edge, and the count only grows (it would be
// full after 2^64-2 writes, which never happens).
#pragma once

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>

#include "unique_fd.h"

namespace faultline::detail {

// A non-blocking, close-on-exec eventfd; invalid on failure (errno says why).
inline UniqueFd make_eventfd() { return UniqueFd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)); }

// Raises one edge on `efd`.
inline void signal_eventfd(int efd) {
  uint64_t one = 1;
  ssize_t r = ::write(efd, &one, sizeof one);  // EAGAIN only after 2^64-2 writes
  (void)r;
}

}  // namespace faultline::detail

// SPDX-License-Identifier: Apache-2.0
// read_all(): a Backend's reads submitted at once and reaped to the end,
// for the backend tests that check completions by tag.
#pragma once

#include <poll.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <functional>
#include <map>
#include <vector>

#include "faultline/backend.h"

namespace faultline::test {

// Submits `reads` at once and reaps until each has completed (or 60 s
// passed): the completions by tag, each seen exactly once. `after_submit`
// runs between the submit and the first reap; `order` gets the tags in the
// order they completed.
inline std::map<uint64_t, ReadCompletion> read_all(Backend& b, const std::vector<ReadRequest>& reads,
                                                   const std::function<void()>& after_submit = {},
                                                   std::vector<uint64_t>* order = nullptr) {
  b.submit(reads);
  if (after_submit) after_submit();
  std::map<uint64_t, ReadCompletion> done;
  auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  ReadCompletion out[8];
  while (done.size() < reads.size() && std::chrono::steady_clock::now() < until) {
    size_t n = b.reap(out);
    for (size_t k = 0; k < n; ++k) {
      REQUIRE(done.emplace(out[k].tag, out[k]).second);
      if (order) order->push_back(out[k].tag);
    }
    if (n == 0) {
      pollfd p{b.completion_fd(), POLLIN, 0};
      ::poll(&p, 1, 10);
    }
  }
  REQUIRE(done.size() == reads.size());
  return done;
}

}  // namespace faultline::test

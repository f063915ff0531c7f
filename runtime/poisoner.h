// SPDX-License-Identifier: Apache-2.0
// The thread that poisons ranges where the kernel lacks UFFDIO_POISON
// (faultline-poisn in ps -L), started with the first such range.
//
// It maps an empty file over each range, so an access gets SIGBUS as on a
// truncated file mapping, then wakes the range's waiters. The fault loop
// cannot do this itself: mapping over a registered range raises an UNMAP
// event that the kernel waits for the loop to read. `done` runs on this
// thread after each range; the caller keeps the range's region alive until
// then (it counts the range as work in flight).
#pragma once

#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

#include "thread_checks.h"
#include "unique_fd.h"

namespace faultline::detail {

struct RegionState;

struct PoisonJob {
  RegionState* region = nullptr;
  int uffd = -1;  // whose waiters to wake
  uintptr_t addr = 0;
  uint64_t length = 0;
  int prot = 0;  // the region's protection
};

class Poisoner {
 public:
  // `log` reports a range that could not be mapped over (its waiters are
  // woken anyway and fault again).
  Poisoner(std::function<void(const PoisonJob&)> done, std::function<void(const PoisonJob&, int err)> log);
  ~Poisoner();  // finishes what is queued, then stops
  Poisoner(const Poisoner&) = delete;
  Poisoner& operator=(const Poisoner&) = delete;

  void submit(const PoisonJob& job);

 private:
  void run();

  std::function<void(const PoisonJob&)> done_;
  std::function<void(const PoisonJob&, int)> log_;
  UniqueFd empty_file_;  // memfd of size 0
  Mutex mu_;
  CondVar cv_;
  std::vector<PoisonJob> queue_ GUARDED_BY(mu_);
  bool stop_ GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace faultline::detail

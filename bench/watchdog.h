// SPDX-License-Identifier: Apache-2.0
// Watchdog: a run that hangs (an unserved fault) aborts the bench with the
// run's name instead of hanging forever. SIGBUS (a poisoned page) is
// reported the same way.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

namespace fbench {

// A thread that exits the process (status 3, naming the run) when a run
// armed with arm() is not disarmed within the timeout.
class Watchdog {
 public:
  explicit Watchdog(int timeout_s);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  void arm(const std::string& label);
  void disarm();

 private:
  void loop();

  const uint64_t timeout_ns_;
  std::mutex m_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::string label_;
  uint64_t deadline_ = 0;
  std::thread th_;
};

// Installs the SIGBUS handler: it prints the name last given to
// set_sigbus_label() and exits with status 3.
void install_sigbus_report();
// `name` must live until the process ends (a configuration's name): the
// signal handler reads it.
void set_sigbus_label(const char* name);

}  // namespace fbench

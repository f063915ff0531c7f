// SPDX-License-Identifier: Apache-2.0
// The run watchdog and the SIGBUS report (watchdog.h).
#include "watchdog.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>

#include "bench.h"

namespace fbench {
namespace {

// The one process-wide value here: a signal handler has no other way to
// learn which run it interrupted.
std::atomic<const char*> g_sigbus_label{"(setup)"};

void on_sigbus(int) {
  const char* label = g_sigbus_label.load();
  const char* pre = "faultline-bench: SIGBUS during run ";
  ssize_t n1 = write(2, pre, std::strlen(pre));
  ssize_t n2 = write(2, label, std::strlen(label));
  ssize_t n3 = write(2, "\n", 1);
  (void)n1, (void)n2, (void)n3;
  _exit(3);
}

}  // namespace

void install_sigbus_report() {
  struct sigaction sa {};
  sa.sa_handler = on_sigbus;
  sigaction(SIGBUS, &sa, nullptr);
}

void set_sigbus_label(const char* name) { g_sigbus_label.store(name); }

Watchdog::Watchdog(int timeout_s) : timeout_ns_(static_cast<uint64_t>(timeout_s) * 1000000000ull) {
  th_ = std::thread([this] { loop(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> g(m_);
    stop_ = true;
  }
  cv_.notify_all();
  th_.join();
}

void Watchdog::arm(const std::string& label) {
  std::lock_guard<std::mutex> g(m_);
  label_ = label;
  deadline_ = now_ns() + timeout_ns_;
}

void Watchdog::disarm() {
  std::lock_guard<std::mutex> g(m_);
  deadline_ = 0;
}

void Watchdog::loop() {
  std::unique_lock<std::mutex> lk(m_);
  while (!stop_) {
    cv_.wait_for(lk, std::chrono::milliseconds(500));
    if (deadline_ != 0 && now_ns() > deadline_) {
      std::fprintf(stderr, "faultline-bench: run '%s' did not finish within %llu s (a fault left unserved?); aborting\n",
                   label_.c_str(), static_cast<unsigned long long>(timeout_ns_ / 1000000000ull));
      std::fflush(stderr);
      _exit(3);
    }
  }
}

}  // namespace fbench

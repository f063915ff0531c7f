// SPDX-License-Identifier: Apache-2.0
// For tests that drive a Backend directly, the way the fault loop does: an
// edge-triggered epoll set on completion_fd(), and staging memory like the
// runtime's (page-aligned anonymous memory).
#pragma once

#include <sys/epoll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <span>
#include <stdexcept>

namespace faultline::test {

// Edge-triggered epoll on a backend's completion_fd(), like the fault loop.
// Never reads the fd (neither does the runtime).
class Poller {
 public:
  explicit Poller(int fd) : ep_(epoll_create1(EPOLL_CLOEXEC)), fd_(fd) {
    if (ep_ < 0) throw std::runtime_error("epoll_create1 failed");
    if (fd_ >= 0) {
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLET;
      ev.data.fd = fd_;
      if (epoll_ctl(ep_, EPOLL_CTL_ADD, fd_, &ev) != 0) throw std::runtime_error("epoll_ctl failed");
    }
  }
  ~Poller() { close(ep_); }
  Poller(const Poller&) = delete;
  Poller& operator=(const Poller&) = delete;
  // True on an edge, false on timeout (or if there is no fd to poll).
  bool wait(int timeout_ms) {
    if (fd_ < 0) return false;
    epoll_event ev{};
    for (;;) {
      int n = epoll_wait(ep_, &ev, 1, timeout_ms);
      if (n < 0 && errno == EINTR) continue;
      return n > 0;
    }
  }

 private:
  int ep_;
  int fd_;
};

// Page-aligned anonymous memory filled with 0xEE, as the runtime's staging
// area is (but for the fill).
class Staging {
 public:
  explicit Staging(size_t len) : len_(len) {
    void* p = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap failed");
    p_ = static_cast<std::byte*>(p);
    std::memset(p_, 0xEE, len_);
  }
  ~Staging() { munmap(p_, len_); }
  Staging(const Staging&) = delete;
  Staging& operator=(const Staging&) = delete;
  std::byte* data() const { return p_; }
  size_t size() const { return len_; }
  std::span<std::byte> span() const { return {p_, len_}; }

 private:
  std::byte* p_;
  size_t len_;
};

}  // namespace faultline::test

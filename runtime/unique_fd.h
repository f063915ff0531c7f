// SPDX-License-Identifier: Apache-2.0
// Owns a file descriptor; closes it once.
#pragma once

#include <unistd.h>

#include <utility>

namespace faultline::detail {

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ~UniqueFd() { reset(); }
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  // Hands the descriptor over (to a callee that takes ownership).
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_ = -1;
};

// Owns an anonymous mapping; unmaps it once. A borrowed one names a range
// it must never unmap: another process's memory (a foreign region), whose
// addresses mean nothing in this one.
class Mapping {
 public:
  Mapping() = default;
  Mapping(void* addr, size_t len) : addr_(addr), len_(len) {}
  static Mapping borrowed(void* addr, size_t len) {
    Mapping m(addr, len);
    m.owned_ = false;
    return m;
  }
  Mapping(Mapping&& o) noexcept
      : addr_(std::exchange(o.addr_, nullptr)), len_(std::exchange(o.len_, 0)), owned_(o.owned_) {}
  Mapping& operator=(Mapping&& o) noexcept {
    if (this != &o) {
      reset();
      addr_ = std::exchange(o.addr_, nullptr);
      len_ = std::exchange(o.len_, 0);
      owned_ = o.owned_;
    }
    return *this;
  }
  ~Mapping() { reset(); }
  std::byte* data() const { return static_cast<std::byte*>(addr_); }
  size_t size() const { return len_; }
  explicit operator bool() const { return addr_ != nullptr; }
  void reset();
  // The range was moved (mremap) to `addr`: it is unmapped there.
  void moved_to(void* addr) { addr_ = addr; }
  // Gives the range up without unmapping it (it stays mapped for good).
  void* release() {
    len_ = 0;
    return std::exchange(addr_, nullptr);
  }

 private:
  void* addr_ = nullptr;
  size_t len_ = 0;
  bool owned_ = true;
};

}  // namespace faultline::detail

// SPDX-License-Identifier: Apache-2.0
// faultline reports every failure of an API call by throwing faultline::Error.
// The message names what was wrong (the file, option or field, and the value).
// Asynchronous read results inside the fault path are not API calls: a backend
// reports them as a negative errno in its ReadCompletion (see backend.h), and a
// read that cannot be served reaches the application as SIGBUS.
#pragma once

#include <stdexcept>
#include <string>

namespace faultline {

class Error : public std::runtime_error {
 public:
  // `sys_errno` is the errno behind the failure, or 0 if there was none.
  explicit Error(const std::string& message, int sys_errno = 0)
      : std::runtime_error(message), sys_errno_(sys_errno) {}
  int sys_errno() const { return sys_errno_; }

 private:
  int sys_errno_;
};

// Builds "what: strerror(err)" and throws it as an Error carrying err.
[[noreturn]] void throw_errno(const std::string& what, int err);

}  // namespace faultline

// SPDX-License-Identifier: Apache-2.0
// Runs the real `faultline` binary from a Catch2 test (only where the tool is
// built: FAULTLINE_CLI_PATH).
#pragma once

#ifdef FAULTLINE_CLI_PATH
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <string>
#include <utility>

namespace faultline::test {

// Runs `faultline ARGS` through the shell; its exit status and output (stdout and stderr).
inline std::pair<int, std::string> run_cli(const std::string& args) {
  std::string cmd = std::string(FAULTLINE_CLI_PATH) + " " + args + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int status = ::pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

}  // namespace faultline::test
#endif  // FAULTLINE_CLI_PATH

// SPDX-License-Identifier: Apache-2.0
// The subcommands of the `faultline` tool. Each lives in its own
// tools/<name>_command.cc and is listed once in main.cc.
//
// A command gets argv starting at its own name (argv[0] == "snapshot"),
// prints its errors to stderr naming the file and the problem, and returns
// the process exit status: 0 success, 1 failure, 2 usage error.
#pragma once

namespace faultline::tools {

struct Command {
  const char* name;
  const char* summary;  // one line, for `faultline --help`
  int (*run)(int argc, char** argv);
};

}  // namespace faultline::tools

// SPDX-License-Identifier: Apache-2.0
// faultline: the command-line tool. `faultline COMMAND --help` for each command.
#include <cstdio>
#include <cstring>
#include <iterator>

#include "commands.h"

namespace faultline::tools {

// Command entry points, one per tools/<name>_command.cc (declared outside the
// unnamed namespace, or they would not link), each with an entry in kCommands.
int serve_command(int argc, char** argv);     // tools/serve_command.cc
int snapshot_command(int argc, char** argv);  // tools/snapshot_command.cc

namespace {

const Command kCommands[] = {
    {"serve", "serve a file read-only to faultline clients over TCP or Unix sockets", serve_command},
    {"snapshot", "create, inspect and verify compressed snapshots", snapshot_command},
    {"help", "print this list", nullptr},
};

void print_usage(FILE* out) {
  std::fprintf(out, "usage: faultline COMMAND [ARGS...]\n\ncommands:\n");
  for (const Command& c : kCommands) std::fprintf(out, "  %-10s %s\n", c.name, c.summary);
  std::fprintf(out, "\n`faultline COMMAND --help` describes a command.\n");
}

}  // namespace
}  // namespace faultline::tools

int main(int argc, char** argv) {
  using namespace faultline::tools;
  if (argc < 2) {
    print_usage(stderr);
    return 2;
  }
  const char* name = argv[1];
  if (!std::strcmp(name, "help") || !std::strcmp(name, "--help") || !std::strcmp(name, "-h")) {
    print_usage(stdout);
    return 0;
  }
  for (const Command& c : kCommands)
    if (c.run && !std::strcmp(c.name, name)) return c.run(argc - 1, argv + 1);
  std::fprintf(stderr, "faultline: unknown command '%s'\n\n", name);
  print_usage(stderr);
  return 2;
}

// SPDX-License-Identifier: Apache-2.0
// faultline: the command-line tool. `faultline COMMAND --help` for each command.
#include <cstring>
#include <string>

#include "cli.h"
#include "commands.h"

namespace faultline::tools {

// Command entry points, one per tools/<name>_command.cc (declared outside the
// unnamed namespace, or they would not link), each with an entry in kCommands.
int handle_command(int argc, char** argv);    // tools/handle_command.cc
int serve_command(int argc, char** argv);     // tools/serve_command.cc
int snapshot_command(int argc, char** argv);  // tools/snapshot_command.cc

namespace {

const Command kCommands[] = {
    {"handle", "serve a VMM's guest memory as Firecracker's page-fault handler (userfaultfd)", handle_command},
    {"serve", "serve a file read-only to faultline clients over TCP or Unix sockets", serve_command},
    {"snapshot", "create, inspect and verify compressed snapshots", snapshot_command},
};

const Command* find_command(const std::string& name) {
  for (const Command& c : kCommands)
    if (name == c.name) return &c;
  return nullptr;
}

}  // namespace
}  // namespace faultline::tools

int main(int argc, char** argv) {
  using namespace faultline::tools;
  // A command parses its own arguments (its own CLI::App) and gets them as
  // given: CLI11's prefix_command() would drop a leading "--" and reorder.
  if (argc >= 2)
    if (const Command* c = find_command(argv[1])) return c->run(argc - 1, argv + 1);

  CLI::App app("faultline: user-space paging of memory regions from files, compressed snapshots and\n"
               "remote page servers.",
               "faultline");
  faultline::cli::add_version(app, "faultline");
  app.footer("`faultline COMMAND --help` (or `faultline help COMMAND`) describes a command.");
  app.get_formatter()->label("SUBCOMMAND", "COMMAND");
  for (const Command& c : kCommands) app.add_subcommand(c.name, c.summary)->group("Commands");  // run above
  std::string topic;
  CLI::App* help = app.add_subcommand("help", "print this list, or a command's --help")->group("Commands");
  help->add_option("COMMAND", topic, "the command to describe")->type_name("");
  faultline::cli::require_subcommand(app, "command");
  return faultline::cli::run(app, argc, argv, [&] {
    if (topic.empty()) {
      // app.help() would describe the selected subcommand, `help` itself.
      std::fputs(app.get_formatter()->make_help(&app, app.get_name(), CLI::AppFormatMode::Normal).c_str(), stdout);
      return 0;
    }
    const Command* c = find_command(topic);
    if (!c) {
      std::fprintf(stderr, "faultline help: unknown command '%s'\nRun 'faultline --help' for the commands.\n",
                   topic.c_str());
      return 2;
    }
    std::string name = c->name, flag = "--help";
    char* args[] = {name.data(), flag.data(), nullptr};
    return c->run(2, args);
  });
}

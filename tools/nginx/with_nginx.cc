// SPDX-License-Identifier: Apache-2.0
// with_nginx: runs a command while a private nginx (nginx_server.h) serves a
// directory on loopback, for the shell tests. Every "{url}" in the
// command's arguments becomes the server's base URL (http://127.0.0.1:PORT,
// https://localhost:PORT with --tls; {ca} becomes the certificate's file).
// The server is stopped and its files removed when the command ends.
//
// Exit status: the command's; 77 when nginx is not installed (a test then
// skips); 125 when the server cannot start; 126 when the command cannot run.
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cli.h"
#include "nginx_server.h"

namespace {

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = 0; (at = s.find(from, at)) != std::string::npos; at += to.size()) s.replace(at, from.size(), to);
  return s;
}

int run(const std::string& dir, bool tls, const std::vector<std::string>& command) {
  using faultline::tools::NginxServer;
  if (!NginxServer::available()) {
    std::fprintf(stderr, "with_nginx: %s\n", NginxServer::why_unavailable().c_str());
    return 77;
  }
  faultline::tools::NginxOptions o;
  o.tls = tls;
  o.root = dir;
  std::unique_ptr<NginxServer> server;
  try {
    server = std::make_unique<NginxServer>(o);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "with_nginx: %s\n", e.what());
    return 125;
  }
  std::string base = server->url("");
  base.pop_back();  // no trailing slash: "{url}/file"
  std::vector<std::string> args;
  for (const std::string& a : command) args.push_back(replace_all(replace_all(a, "{url}", base), "{ca}", server->ca_file()));
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::fflush(stdout);
  const pid_t pid = fork();
  if (pid < 0) return 126;
  if (pid == 0) {
    execvp(argv[0], argv.data());
    std::fprintf(stderr, "with_nginx: cannot run %s: %s\n", argv[0], std::strerror(errno));
    _exit(126);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app(
      "Runs COMMAND while a private nginx serves DIR on 127.0.0.1 (a free port);\n"
      "every {url} in COMMAND's arguments becomes its base URL, every {ca} its\n"
      "certificate (with --tls). For the shell tests.",
      "with_nginx");
  app.footer("Exit status: COMMAND's; 77 nginx is not installed; 125 nginx did not start;\n126 COMMAND cannot run; 2 bad arguments.");
  std::string dir;
  bool tls = false;
  std::vector<std::string> command;
  faultline::cli::add_version(app, "with_nginx");
  app.add_flag("--tls", tls, "serve https with a certificate made for localhost");
  app.add_option("dir", dir, "the directory to serve")->required()->check(CLI::ExistingDirectory)->type_name("DIR");
  app.add_option("command", command, "the command and its arguments (after --)")->required()->type_name("COMMAND");
  return faultline::cli::run(app, argc, argv, [&] { return run(dir, tls, command); });
}

// SPDX-License-Identifier: Apache-2.0
// ChildProcess: runs a program of the build for a test, with bounded waits.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace faultline::test {

// A child process (a program of the build: the `faultline` tool, the test
// VMM) with its stdout on a pipe and its stderr in a file; killed if still
// running when destroyed, so no test leaves one behind.
class ChildProcess {
 public:
  // `env`: extra NAME=VALUE entries for the child's environment.
  // `stdout_path`: stdout goes to that file instead (read_line() sees EOF).
  ChildProcess(const std::string& program, std::vector<std::string> args, std::vector<std::string> env = {},
               const std::string& stdout_path = "")
      : err_path_(make_err_path()) {
    int out[2];
    REQUIRE(pipe2(out, O_CLOEXEC) == 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (stdout_path.empty())
      posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    else
      posix_spawn_file_actions_addopen(&fa, 1, stdout_path.c_str(), O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, err_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    args.insert(args.begin(), program);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<char*> envp;
    for (auto& e : env) envp.push_back(e.data());
    for (char** e = environ; *e; ++e) envp.push_back(*e);
    envp.push_back(nullptr);
    const int rc = posix_spawn(&pid_, program.c_str(), &fa, nullptr, argv.data(), envp.data());
    posix_spawn_file_actions_destroy(&fa);
    ::close(out[1]);
    out_ = out[0];
    REQUIRE(rc == 0);
  }
  ~ChildProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (out_ >= 0) ::close(out_);
    ::unlink(err_path_.c_str());
  }

  // The next line on stdout, or "" after timeout_ms or at EOF.
  std::string read_line(int timeout_ms = 10000) {
    std::string line;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return "";
      pollfd p{out_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char c;
      const ssize_t n = ::read(out_, &c, 1);
      if (n <= 0) return "";
      if (c == '\n') return line;
      line.push_back(c);
    }
  }

  // Waits for the exit; returns the exit status, 128+signal, or -1 after timeout_ms.
  int wait(int timeout_ms = 10000) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    int status = 0;
    while (waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) return -1;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  void signal(int sig) { REQUIRE(kill(pid_, sig) == 0); }
  pid_t pid() const { return pid_; }

  std::string stderr_text() const {
    std::ifstream in(err_path_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

 private:
  static std::string make_err_path() {
    static int n = 0;
    return "/tmp/faultline-test-child-" + std::to_string(getpid()) + "-" + std::to_string(n++) + ".err";
  }
  std::string err_path_;
  pid_t pid_ = -1;
  int out_ = -1;
};

}  // namespace faultline::test

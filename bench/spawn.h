// SPDX-License-Identifier: Apache-2.0
// Child programs of the bench (vm-restore's VMM and handlers, migrate's
// live_migration): started with posix_spawn, stdout and stderr to files,
// waited for with a timeout, killed and reaped if still running when the
// Process goes.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "faultline/error.h"

extern char** environ;

namespace fbench {

struct Process {
  pid_t pid = -1;
  Process() = default;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process() {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }
  // Exit status, 128 + signal, or -1 if still running after timeout_ms.
  int wait(int timeout_ms) {
    for (int waited = 0;; waited += 5) {
      int status = 0;
      pid_t got = waitpid(pid, &status, WNOHANG);
      if (got == pid) {
        pid = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      if (waited >= timeout_ms) return -1;
      usleep(5000);
    }
  }
};

// Starts `program args`, stderr to `log` (and stdout to `out`, or /dev/null).
// Throws faultline::Error.
inline void spawn(Process& p, const std::string& program, std::vector<std::string> args, const std::string& log,
                  const std::string& out = "/dev/null") {
  args.insert(args.begin(), program);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  int rc = posix_spawn(&p.pid, program.c_str(), &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) throw faultline::Error("cannot start " + program + ": " + std::strerror(rc), rc);
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A scratch file's path in `dir` (NAME.PID), removed with the object.
struct Scratch {
  std::string path;
  Scratch(const std::string& dir, const std::string& name) : path(dir + "/" + name + "." + std::to_string(getpid())) {}
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() { unlink(path.c_str()); }
};

// r after run(r); an exception fails the run with its message.
template <class Result, class Run>
Result failing_on_error(Run run) {
  Result r;
  try {
    run(r);
  } catch (const std::exception& e) {
    r.ok = false;
    r.error = e.what();
  }
  return r;
}

}  // namespace fbench

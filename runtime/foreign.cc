// SPDX-License-Identifier: Apache-2.0
// Runtime::adopt() and the ForeignSpace handle (faultline/foreign.h);
// Runtime::map_foreign() is beside map() in runtime.cc, the loop's side in
// engine_foreign.cc.
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "engine.h"
#include "faultline/error.h"
#include "faultline/runtime.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

namespace faultline {

namespace {

// Whether `fd` is a userfaultfd: its anon inode is named so (the kernel's
// name, also in /proc/self/fdinfo). Returns what it is otherwise.
bool is_userfaultfd(int fd, std::string* what) {
  char link[64], target[256];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(link, target, sizeof target - 1);
  if (n < 0) {
    *what = std::string("cannot read ") + link + ": " + std::strerror(errno);
    return false;
  }
  target[n] = '\0';
  *what = target;
  return *what == "anon_inode:[userfaultfd]";
}

}  // namespace

ForeignSpace Runtime::adopt(int uffd, pid_t pid) {
  detail::UniqueFd fd(uffd);
  if (!fd) throw Error("Runtime::adopt: no descriptor (" + std::to_string(uffd) + ")");
  std::string what;
  if (!is_userfaultfd(fd.get(), &what))
    throw Error("Runtime::adopt: descriptor " + std::to_string(uffd) + " is not a userfaultfd (it is " + what + ")");
  if (pid <= 0) throw Error("Runtime::adopt: pid " + std::to_string(pid) + " is not a process id");
  // The owner's exit is seen through a pidfd: an orphaned userfaultfd
  // reports nothing by itself (poll stays quiet; ioctls answer ESRCH).
  detail::UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd)
    throw_errno("Runtime::adopt: pidfd_open(" + std::to_string(pid) + ") (the process must be alive, Linux 5.3+)",
                errno);
  // The loop reads until EAGAIN; O_NONBLOCK is on the open file, shared with
  // the owner's descriptor (Firecracker creates it so anyway).
  int flags = fcntl(fd.get(), F_GETFL);
  if (flags < 0 || fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) != 0)
    throw_errno("Runtime::adopt: cannot make the userfaultfd non-blocking", errno);
  fcntl(fd.get(), F_SETFD, FD_CLOEXEC);
  detail::Uffd u;
  u.fd = std::move(fd);
  // Its creator called UFFDIO_API; a second call fails, so the features are
  // unknown. UFFDIO_POISON is tried when needed (the kernel offers it on
  // every registered range from 6.6 on, whatever was asked); a failure is
  // logged (docs/firecracker.md).
  u.mode.poison = true;
  auto link = std::make_shared<detail::ForeignLink>(std::make_unique<detail::UffdSpace>(std::move(u), pid),
                                                    std::move(pidfd));
  engine_->adopt(link);
  return ForeignSpace(engine_, std::move(link));
}

ForeignSpace::ForeignSpace(std::shared_ptr<detail::Engine> engine, std::shared_ptr<detail::ForeignLink> link)
    : engine_(std::move(engine)), link_(std::move(link)) {}

pid_t ForeignSpace::pid() const { return link_ ? link_->pid : 0; }

bool ForeignSpace::exited() const {
  if (!link_) return false;
  std::lock_guard<std::mutex> lock(link_->mu);
  return link_->exited;
}

bool ForeignSpace::wait_exit(std::chrono::milliseconds timeout) const {
  if (!link_) throw Error("ForeignSpace::wait_exit on an empty ForeignSpace");
  std::unique_lock<std::mutex> lock(link_->mu);
  return link_->exited_cv.wait_for(lock, timeout, [&] { return link_->exited; });
}

void ForeignSpace::fail(const std::vector<ForeignRange>& also) {
  if (!link_) throw Error("ForeignSpace::fail on an empty ForeignSpace");
  for (const ForeignRange& r : also)
    if (r.address % 4096 || r.length % 4096)
      throw Error("ForeignSpace::fail: range at " + std::to_string(r.address) + " of " + std::to_string(r.length) +
                  " bytes is not a multiple of 4096");
  engine_->fail_space(link_, also);
}

}  // namespace faultline

// SPDX-License-Identifier: Apache-2.0
#include "unix_socket_path.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "faultline/error.h"

namespace faultline::detail {

namespace {

sockaddr_un unix_address(const std::string& path, const std::string& where, socklen_t* length) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof a.sun_path)
    throw Error(where + "a Unix socket path must have 1 to " + std::to_string(sizeof a.sun_path - 1) + " bytes");
  std::memcpy(a.sun_path, path.data(), path.size());
  *length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
  return a;
}

}  // namespace

void clear_stale_socket(const std::string& path, const std::string& where) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return;  // (nothing there; else bind() names the problem)
  if (!S_ISSOCK(st.st_mode)) throw Error(where + path + " exists and is not a socket; not replacing it");
  socklen_t length;
  sockaddr_un a = unix_address(path, where, &length);
  UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!probe) throw_errno(where + "socket", errno);
  // Non-blocking: a live server with a full backlog answers EAGAIN at once.
  int rc = ::connect(probe.get(), reinterpret_cast<const sockaddr*>(&a), length);
  int err = rc == 0 ? 0 : errno;
  if (err == 0 || err == EAGAIN || err == EINPROGRESS) throw Error(where + path + " is in use by a running server");
  if (err != ECONNREFUSED)
    throw Error(where + "cannot tell whether " + path + " is in use: connect: " + std::strerror(err));
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) throw_errno(where + "removing the stale socket " + path, errno);
}

StartLock::StartLock(const std::string& socket_path, const std::string& where) : path_(socket_path + ".lock") {
  using Clock = std::chrono::steady_clock;
  // Others hold it for a few system calls; 10 s means something is wrong.
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  for (;;) {
    fd_ = UniqueFd(::open(path_.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd_) throw_errno(where + "cannot open the lock file " + path_, errno);
    if (::flock(fd_.get(), LOCK_EX | LOCK_NB) != 0) {
      if (errno != EWOULDBLOCK && errno != EINTR) throw_errno(where + "cannot lock " + path_, errno);
      if (Clock::now() > deadline)
        throw Error(where + path_ + " has been locked for 10 s by another process starting a server on " +
                    socket_path);
      fd_ = {};
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      continue;
    }
    struct stat held, named;
    if (::fstat(fd_.get(), &held) != 0) throw_errno(where + "fstat of " + path_, errno);
    if (::lstat(path_.c_str(), &named) == 0 && named.st_dev == held.st_dev && named.st_ino == held.st_ino) return;
    fd_ = {};  // (its holder removed it after we opened it)
  }
}

StartLock::~StartLock() { ::unlink(path_.c_str()); }

UniqueFd listen_unix(const std::string& path, const std::string& where, int backlog, BoundSocket* bound) {
  socklen_t length;
  sockaddr_un a = unix_address(path, where, &length);
  StartLock lock(path, where);
  clear_stale_socket(path, where);
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd) throw_errno(where + "socket", errno);
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&a), length) != 0) throw_errno(where + "bind", errno);
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) throw_errno(where + "stat of the socket just bound", errno);
  *bound = BoundSocket{path, st.st_dev, st.st_ino};
  if (::listen(fd.get(), backlog) != 0) {
    int err = errno;
    remove_if_ours(*bound);
    throw_errno(where + "listen", err);
  }
  return fd;
}

void remove_if_ours(const BoundSocket& s) {
  struct stat st;
  if (::lstat(s.path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == s.dev && st.st_ino == s.ino)
    ::unlink(s.path.c_str());
}

}  // namespace faultline::detail

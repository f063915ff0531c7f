// SPDX-License-Identifier: Apache-2.0
// Taking a Unix socket path to listen on, for the page server and
// `faultline handle`: a stale socket file (its server died) is replaced, a
// live one or a file that is not a socket is refused, and two servers
// starting at once on one path are serialised by PATH.lock. Error messages
// start with the caller's `where` ("page server: cannot listen on ...: ").
#pragma once

#include <sys/types.h>

#include <string>

#include "unique_fd.h"

namespace faultline::detail {

// A Unix socket a server bound, as it was right after bind().
struct BoundSocket {
  std::string path;
  dev_t dev = 0;
  ino_t ino = 0;
};

// Makes `path` free for bind(). A socket file nobody accepts on (its server
// died without removing it) is removed; a socket a server listens on, or
// anything that is not a socket, is refused with an Error naming the path.
void clear_stale_socket(const std::string& path, const std::string& where);

// Serialises servers starting on one Unix socket path, so that two never
// both find a stale socket there and both take the path (the later bind
// would replace the earlier server's socket). It is an flock on PATH.lock
// beside the socket, created 0600, held from the probe to listen(). Its
// holder removes the file before it unlocks, so none is left behind; a
// taker therefore checks that the file it locked is still the one at that
// path, and starts over if not.
class StartLock {
 public:
  StartLock(const std::string& socket_path, const std::string& where);
  ~StartLock();  // removes the file (still ours: nobody else removes it while we hold it)
  StartLock(const StartLock&) = delete;
  StartLock& operator=(const StartLock&) = delete;

 private:
  std::string path_;
  UniqueFd fd_;  // closed (unlocked) after the destructor has removed the file
};

// Under a StartLock: clears a stale socket, binds, listens (backlog
// `backlog`) and records the socket in `bound`. The descriptor is
// non-blocking and close-on-exec. Throws Error starting with `where`.
UniqueFd listen_unix(const std::string& path, const std::string& where, int backlog, BoundSocket* bound);

// Removes the socket file of `s` if the path still names it: a successor
// may have replaced it, and its socket is not ours to remove. Call it while
// the listener is open, so the inode cannot have been reused.
void remove_if_ours(const BoundSocket& s);

}  // namespace faultline::detail

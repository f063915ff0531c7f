// SPDX-License-Identifier: Apache-2.0
// A file replaced crash-safely: written under a temporary name in the same
// directory, then synced, renamed over the final name, and the directory
// synced. A reader, or a crash at any point, sees the old file or the
// complete new one under the final name, never part of one.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "unique_fd.h"

namespace faultline::detail {

// Owns the temporary file PATH.tmp.XXXXXX until commit(). Destroyed without
// commit() (an error, an exception) it removes the temporary file; the file
// under PATH is only ever replaced by commit(). Errors are faultline::Error
// naming `what` ("snapshot /srv/vm.flsnap"), the file and the errno.
class AtomicFile {
 public:
  // Creates the temporary file with `mode` restricted by the umask (or the
  // directory's default ACL), as open(2) restricts it: never wider.
  AtomicFile(const std::string& path, const std::string& what, mode_t mode = 0666);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  const std::string& temp_path() const { return temp_; }
  // Writes all n bytes at the end of the file / at `offset`.
  void append(const void* data, size_t n);
  void write_at(uint64_t offset, const void* data, size_t n);
  // fsync, close, rename over PATH, fsync of the directory. If only the
  // last step fails, the new file is in place and the Error says so.
  void commit();

 private:
  [[noreturn]] void fail(const std::string& problem, int err) const;

  std::string path_;
  std::string what_;
  std::string temp_;
  UniqueFd fd_;
  bool committed_ = false;
};

}  // namespace faultline::detail

// SPDX-License-Identifier: Apache-2.0
#include "atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "faultline/error.h"

namespace faultline::detail {

namespace {

std::string dir_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
}

// Six random letters and digits, as mkstemp(3) would choose.
std::string random_suffix() {
  static constexpr char kChars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  uint64_t v = 0;
  if (::getrandom(&v, sizeof v, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof v)) {
    // Entropy not ready yet (early boot): names only need to differ.
    timespec t{};
    ::clock_gettime(CLOCK_MONOTONIC, &t);
    v = (static_cast<uint64_t>(t.tv_nsec) ^ static_cast<uint64_t>(t.tv_sec) << 30) * 0x9E3779B97F4A7C15ull ^
        static_cast<uint64_t>(::getpid());
  }
  std::string s;
  for (int i = 0; i < 6; ++i, v /= sizeof kChars - 1) s += kChars[v % (sizeof kChars - 1)];
  return s;
}

}  // namespace

AtomicFile::AtomicFile(const std::string& path, const std::string& what, mode_t mode) : path_(path), what_(what) {
  // mkstemp(3) creates with mode 0600 whatever is asked; open(2) with
  // O_EXCL creates with the mode asked for, narrowed by the umask, and never
  // follows a symbolic link planted under the name.
  for (int attempt = 0; attempt < 100; ++attempt) {
    temp_ = path + ".tmp." + random_suffix();
    fd_ = UniqueFd(::open(temp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
    if (fd_) return;
    if (errno != EEXIST) break;
  }
  const int err = errno;
  temp_.clear();
  throw_errno("cannot create a temporary file for " + what_ + " in " + dir_of(path_), err);
}

AtomicFile::~AtomicFile() {
  if (!committed_ && !temp_.empty()) ::unlink(temp_.c_str());
}

void AtomicFile::fail(const std::string& problem, int err) const {
  throw_errno("cannot write " + what_ + ": " + problem, err);
}

void AtomicFile::append(const void* data, size_t n) {
  auto* p = static_cast<const unsigned char*>(data);
  while (n > 0) {
    ssize_t r = ::write(fd_.get(), p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) fail("write to " + temp_, r < 0 ? errno : EIO);
    p += r;
    n -= static_cast<size_t>(r);
  }
}

void AtomicFile::write_at(uint64_t offset, const void* data, size_t n) {
  auto* p = static_cast<const unsigned char*>(data);
  while (n > 0) {
    ssize_t r = ::pwrite(fd_.get(), p, n, static_cast<off_t>(offset));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) fail("write to " + temp_ + " at offset " + std::to_string(offset), r < 0 ? errno : EIO);
    p += r;
    n -= static_cast<size_t>(r);
    offset += static_cast<uint64_t>(r);
  }
}

void AtomicFile::commit() {
  if (::fsync(fd_.get()) != 0) fail("fsync " + temp_, errno);
  fd_.reset();
  if (::rename(temp_.c_str(), path_.c_str()) != 0) fail("rename " + temp_ + " to " + path_, errno);
  committed_ = true;
  // The rename is durable once the directory is synced.
  const std::string dir = dir_of(path_);
  UniqueFd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!d || ::fsync(d.get()) != 0)
    throw_errno(what_ + " was written, but syncing its directory " + dir + " failed", errno);
}

}  // namespace faultline::detail

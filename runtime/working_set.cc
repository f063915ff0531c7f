// SPDX-License-Identifier: Apache-2.0
#include "faultline/working_set.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bit>
#include <cstring>

#include "atomic_file.h"
#include "faultline/error.h"
#include "little_endian.h"
#include "unique_fd.h"

namespace faultline {

namespace {

using detail::get_le;
using detail::put_le;

constexpr char kMagic[8] = {'F', 'L', 'W', 'S', 'E', 'T', 0, 0};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 8 + 4 + 4 + 8 + 8;
constexpr uint64_t kMaxFileBytes = uint64_t{1} << 30;  // 128 Mi chunks: far beyond any real working set

// FNV-1a, 64-bit: the file is a hint read once, so a simple checksum that
// catches truncation and stray bytes is enough.
uint64_t fnv1a(const unsigned char* p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

void put(std::vector<unsigned char>& out, uint64_t v, int bytes) {
  out.resize(out.size() + static_cast<size_t>(bytes));
  put_le(out.data() + out.size() - static_cast<size_t>(bytes), v, bytes);
}

// The checks a working set must pass, whether about to be saved or just read.
void check(const std::string& what, const WorkingSet& ws) {
  if (ws.fill_size < 4096 || ws.fill_size > 2 * 1024 * 1024 || !std::has_single_bit(ws.fill_size))
    throw Error(what + ": fill_size = " + std::to_string(ws.fill_size) + ": must be a power of two from 4096 to 2097152");
  for (size_t i = 0; i < ws.offsets.size(); ++i) {
    uint64_t off = ws.offsets[i];
    if (off % ws.fill_size != 0 || off >= ws.region_length)
      throw Error(what + ": offsets[" + std::to_string(i) + "] = " + std::to_string(off) +
                  ": must be a multiple of fill_size (" + std::to_string(ws.fill_size) +
                  ") below region_length (" + std::to_string(ws.region_length) + ")");
  }
}

}  // namespace

void save_working_set(const std::string& path, const WorkingSet& ws) {
  check("working set for " + path, ws);
  std::vector<unsigned char> bytes(kMagic, kMagic + 8);
  put(bytes, kVersion, 4);
  put(bytes, ws.fill_size, 4);
  put(bytes, ws.region_length, 8);
  put(bytes, ws.offsets.size(), 8);
  for (uint64_t off : ws.offsets) put(bytes, off, 8);
  put(bytes, fnv1a(bytes.data(), bytes.size()), 8);

  detail::AtomicFile file(path, "working set " + path);
  file.append(bytes.data(), bytes.size());
  file.commit();
}

WorkingSet load_working_set(const std::string& path) {
  std::string what = "working set " + path;
  detail::UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_errno("cannot open " + what, errno);
  struct stat st;
  if (fstat(fd.get(), &st) != 0) throw_errno("cannot stat " + what, errno);
  uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size < kHeaderBytes + 8)
    throw Error(what + ": truncated: " + std::to_string(size) + " bytes, the header alone takes " +
                std::to_string(kHeaderBytes + 8));
  if (size > kMaxFileBytes) throw Error(what + ": " + std::to_string(size) + " bytes: too large for a working set");
  std::vector<unsigned char> bytes(size);
  for (size_t done = 0; done < size;) {
    ssize_t n = pread(fd.get(), bytes.data() + done, size - done, static_cast<off_t>(done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("cannot read " + what, errno);
    if (n == 0) throw Error(what + ": the file shrank while being read");
    done += static_cast<size_t>(n);
  }
  const unsigned char* p = bytes.data();
  if (std::memcmp(p, kMagic, 8) != 0) throw Error(what + ": magic: not a faultline working-set file");
  uint32_t version = static_cast<uint32_t>(get_le(p + 8, 4));
  if (version != kVersion)
    throw Error(what + ": version = " + std::to_string(version) + ": this build reads version " +
                std::to_string(kVersion));
  WorkingSet ws;
  ws.fill_size = static_cast<uint32_t>(get_le(p + 12, 4));
  ws.region_length = get_le(p + 16, 8);
  uint64_t count = get_le(p + 24, 8);
  if (count != (size - kHeaderBytes - 8) / 8 || (size - kHeaderBytes - 8) % 8 != 0)
    throw Error(what + ": count = " + std::to_string(count) + " does not match the file size (" +
                std::to_string(size) + " bytes)");
  uint64_t stored = get_le(p + size - 8, 8);
  if (stored != fnv1a(p, size - 8)) throw Error(what + ": checksum mismatch: the file is corrupt");
  ws.offsets.resize(count);
  for (uint64_t i = 0; i < count; ++i) ws.offsets[i] = get_le(p + kHeaderBytes + 8 * i, 8);
  check(what, ws);
  return ws;
}

}  // namespace faultline

// SPDX-License-Identifier: Apache-2.0
// The lazy_dataset sample's data: a file of fixed-size records, how to make
// one, and a query mix over it that checks every record it reads.
//
// Record 0 is a header; records 1..count-1 hold data. All 256 bytes, little
// endian, each ending with a checksum over its first 248 bytes. Every record
// is a pure function of its id, so a reader can check any record it reads
// without keeping a copy of the file.
#pragma once

#include <faultline/error.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <csetjmp>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "sample_util.h"

namespace record_file {

constexpr uint64_t kRecordSize = 256;
constexpr uint64_t kMagic = 0x3130534454544c46ull;  // "FLTTDS01"
constexpr uint64_t kVersion = 1;
constexpr uint64_t kGeneratorSeed = 0x5eed0f11a7a5e7ull;

struct Record {
  uint64_t id;
  uint64_t key;
  uint8_t value[232];
  uint64_t checksum;
};
static_assert(sizeof(Record) == kRecordSize);

struct Header {
  uint64_t magic;
  uint64_t version;
  uint64_t record_size;
  uint64_t record_count;  // including this header
  uint8_t reserved[216];
  uint64_t checksum;
};
static_assert(sizeof(Header) == kRecordSize);

inline uint64_t mix64(uint64_t x) {  // splitmix64 finaliser: a bijection
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

// Checksum over the first 248 bytes of a 256-byte record.
inline uint64_t checksum_of(const void* rec) {
  const auto* p = static_cast<const unsigned char*>(rec);
  uint64_t h = 0x6a09e667f3bcc909ull;
  for (size_t i = 0; i < (kRecordSize - 8) / 8; ++i) {
    uint64_t w;
    std::memcpy(&w, p + 8 * i, 8);
    h = mix64(h ^ w);
  }
  return h;
}

inline void make_record(uint64_t id, Record* r) {
  const uint64_t s = id * 0x9E3779B97F4A7C15ull + kGeneratorSeed;
  r->id = id;
  r->key = mix64(s ^ 0x4b4559ull);
  for (size_t w = 0; w < sizeof(r->value) / 8; ++w) {
    const uint64_t v = mix64(s + w + 1);
    std::memcpy(r->value + 8 * w, &v, 8);
  }
  r->checksum = checksum_of(r);
}

inline Header make_header(uint64_t record_count) {
  Header h{};
  h.magic = kMagic;
  h.version = kVersion;
  h.record_size = kRecordSize;
  h.record_count = record_count;
  h.checksum = checksum_of(&h);
  return h;
}

// ---------------------------------------------------------------------------
// Checking and making a file

// The record count of the file at `path`, or 0 with *why saying what is
// wrong with it (*missing: it does not exist).
inline uint64_t check_file(const std::string& path, std::string* why, bool* missing = nullptr) {
  if (missing) *missing = false;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (missing) *missing = errno == ENOENT;
    *why = std::string("cannot open: ") + std::strerror(errno);
    return 0;
  }
  struct stat st {};
  uint64_t count = 0;
  Header h{};
  if (fstat(fd, &st) != 0) {
    *why = std::string("cannot stat: ") + std::strerror(errno);
  } else if (!S_ISREG(st.st_mode)) {
    *why = "not a regular file";
  } else if (st.st_size < static_cast<off_t>(2 * kRecordSize) || st.st_size % kRecordSize) {
    *why = "size " + std::to_string(st.st_size) + " is not a whole number (>= 2) of 256-byte records";
  } else if (ssize_t n = ::pread(fd, &h, sizeof h, 0); n != static_cast<ssize_t>(sizeof h)) {
    *why = std::string("cannot read the header: ") + (n < 0 ? std::strerror(errno) : "short read");
  } else if (h.magic != kMagic || h.checksum != checksum_of(&h)) {
    *why = "not a lazy_dataset file (bad magic or header checksum)";
  } else if (h.version != kVersion || h.record_size != kRecordSize) {
    *why = "unsupported format version or record size";
  } else if (h.record_count * kRecordSize != static_cast<uint64_t>(st.st_size)) {
    *why = "header says " + std::to_string(h.record_count) + " records but the file holds " +
           std::to_string(st.st_size / kRecordSize) + " (truncated?)";
  } else {
    count = h.record_count;
  }
  ::close(fd);
  return count;
}

// Writes a file of size / 256 records to `path` (through a temporary file,
// renamed into place when complete).
inline void generate(const std::string& path, uint64_t size) {
  const uint64_t count = size / kRecordSize;
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  const std::string dir = std::filesystem::path(path).parent_path().string();
  if (struct statvfs vfs {}; statvfs(dir.c_str(), &vfs) == 0) {
    const uint64_t avail = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
    if (avail < size + (64ull << 20))
      throw faultline::Error("not enough space in " + dir + " to generate " + sample::human_bytes(size) + " (" +
                             sample::human_bytes(avail) + " free); use --dir or --size");
  }
  std::printf("generating %s (%s, %llu records)...\n", path.c_str(), sample::human_bytes(size).c_str(),
              static_cast<unsigned long long>(count));
  std::fflush(stdout);
  const uint64_t t0 = sample::now_ns();

  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) faultline::throw_errno("cannot create " + tmp, errno);
  auto fail = [&](const std::string& what, int err) {
    ::close(fd);
    ::unlink(tmp.c_str());
    faultline::throw_errno(what, err);
  };
  constexpr uint64_t kBatch = 16384;  // records per write: 4 MiB
  std::vector<Record> buf(kBatch);
  for (uint64_t first = 0; first < count; first += kBatch) {
    const uint64_t n = std::min(kBatch, count - first);
    for (uint64_t i = 0; i < n; ++i) {
      if (first + i == 0) {
        const Header h = make_header(count);
        std::memcpy(&buf[0], &h, sizeof h);
      } else {
        make_record(first + i, &buf[i]);
      }
    }
    const char* p = reinterpret_cast<const char*>(buf.data());
    for (size_t left = n * kRecordSize; left > 0;) {
      const ssize_t w = ::write(fd, p, left);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) fail("cannot write " + tmp, w < 0 ? errno : ENOSPC);
      p += w;
      left -= static_cast<size_t>(w);
    }
  }
  if (fdatasync(fd) != 0) fail("cannot write " + tmp, errno);
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    faultline::throw_errno("cannot write " + tmp, err);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    faultline::throw_errno("cannot rename " + tmp + " to " + path, err);
  }
  std::printf("generated in %.1f s\n", static_cast<double>(sample::now_ns() - t0) / 1e9);
}

// The data set of `size` bytes in `dir` (made there on the first run, reused
// afterwards); returns its path and sets *record_count.
inline std::string open_or_generate(const std::string& dir, uint64_t size, uint64_t* record_count) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw faultline::Error("cannot create directory " + dir + ": " + ec.message());
  const std::string path = dir + "/records-" + std::to_string(size) + ".dat";
  std::string why;
  bool missing = false;
  *record_count = check_file(path, &why, &missing);
  if (*record_count * kRecordSize == size) {
    std::printf("data set: %s (reused)", path.c_str());
    return path;
  }
  if (!missing) std::printf("existing %s is unusable (%s): regenerating\n", path.c_str(), why.c_str());
  generate(path, size);
  *record_count = check_file(path, &why);
  if (*record_count == 0) throw faultline::Error(path + ": generated file does not check: " + why);
  std::printf("data set: %s", path.c_str());
  return path;
}

// ---------------------------------------------------------------------------
// The queries: one function over a plain byte range, whatever backs it.

struct Plan {
  std::vector<uint64_t> lookups;                     // record ids
  std::vector<std::pair<uint64_t, uint64_t>> scans;  // first id, count
  uint64_t records = 0;                              // records read in all
  uint64_t expected_digest = 0;                      // sum of their keys
};

// `lookups` random records and `scans` runs of `scan_records`, from `seed`.
inline Plan make_plan(uint64_t record_count, uint64_t lookups, uint64_t scans, uint64_t scan_records, uint64_t seed) {
  Plan p;
  uint64_t state = mix64(seed ^ 0x9e3779b97f4a7c15ull);
  auto next = [&] { return mix64(state += 0x9e3779b97f4a7c15ull); };
  const uint64_t data = record_count - 1;  // ids 1..record_count-1
  for (uint64_t i = 0; i < lookups; ++i) p.lookups.push_back(1 + next() % data);
  const uint64_t len = std::min(scan_records, data);
  for (uint64_t i = 0; i < scans; ++i) p.scans.emplace_back(1 + next() % (data - len + 1), len);
  p.records = lookups + scans * len;
  // The digest the queries must arrive at, computed without the file.
  Record rec;
  auto add = [&](uint64_t id) {
    make_record(id, &rec);
    p.expected_digest += rec.key;
  };
  for (uint64_t id : p.lookups) add(id);
  for (auto [first, n] : p.scans)
    for (uint64_t id = first; id < first + n; ++id) add(id);
  return p;
}

// SIGBUS (a page faultline could not serve, or a truncated mmap'd file) is
// turned into a failed record instead of killing the process.
inline thread_local sigjmp_buf* t_sigbus_jmp = nullptr;

inline void on_sigbus(int sig, siginfo_t*, void*) {
  if (sigjmp_buf* jb = t_sigbus_jmp) {
    t_sigbus_jmp = nullptr;
    siglongjmp(*jb, 1);
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

inline void install_sigbus_handler() {
  struct sigaction sa {};
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;  // NODEFER: we leave by siglongjmp
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, nullptr);
}

// Copies one record out of the mapping; false if the access raised SIGBUS.
__attribute__((noinline)) inline bool load_record(const std::byte* src, Record* out) {
  sigjmp_buf jb;
  if (sigsetjmp(jb, 0) != 0) return false;
  t_sigbus_jmp = &jb;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  std::memcpy(out, src, sizeof(Record));
  std::atomic_signal_fence(std::memory_order_seq_cst);
  t_sigbus_jmp = nullptr;
  return true;
}

struct QueryResult {
  uint64_t records_checked = 0;
  uint64_t bad_records = 0;
  std::string first_error;
  uint64_t digest = 0;  // sum of keys: must equal the plan's expected_digest
  std::vector<uint64_t> lookup_ns;
  uint64_t wall_ns = 0;

  // "" if every record checked and the digest is right, else what failed.
  std::string failure(const Plan& plan) const {
    char buf[256];
    if (bad_records)
      std::snprintf(buf, sizeof buf, "%llu of %llu records failed verification; first: %s",
                    static_cast<unsigned long long>(bad_records), static_cast<unsigned long long>(records_checked),
                    first_error.c_str());
    else if (digest != plan.expected_digest)
      std::snprintf(buf, sizeof buf, "records verified but the key digest %016llx differs from the expected %016llx",
                    static_cast<unsigned long long>(digest), static_cast<unsigned long long>(plan.expected_digest));
    else
      return "";
    return buf;
  }
};

// Runs `plan` over the records at base[0, size), checking each record's id
// and checksum. Needs install_sigbus_handler().
inline QueryResult run_queries(const std::byte* base, size_t size, const Plan& plan) {
  QueryResult r;
  r.lookup_ns.reserve(plan.lookups.size());
  auto check = [&](uint64_t id) {
    ++r.records_checked;
    char err[160] = "";
    const auto off = static_cast<unsigned long long>(id * kRecordSize);
    Record rec;
    if ((id + 1) * kRecordSize > size) {
      std::snprintf(err, sizeof err, "record %llu is past the end of the mapping (%zu bytes)",
                    static_cast<unsigned long long>(id), size);
    } else if (!load_record(base + id * kRecordSize, &rec)) {
      std::snprintf(err, sizeof err, "record %llu (offset %llu): SIGBUS on access", static_cast<unsigned long long>(id),
                    off);
    } else if (rec.id != id) {
      std::snprintf(err, sizeof err, "record %llu (offset %llu): holds id %llu", static_cast<unsigned long long>(id),
                    off, static_cast<unsigned long long>(rec.id));
    } else if (rec.checksum != checksum_of(&rec)) {
      std::snprintf(err, sizeof err, "record %llu (offset %llu): checksum mismatch",
                    static_cast<unsigned long long>(id), off);
    } else {
      r.digest += rec.key;
      return;
    }
    if (r.bad_records++ == 0) r.first_error = err;
  };
  const uint64_t t0 = sample::now_ns();
  for (uint64_t id : plan.lookups) {
    const uint64_t s = sample::now_ns();
    check(id);
    r.lookup_ns.push_back(sample::now_ns() - s);
  }
  for (auto [first, n] : plan.scans)
    for (uint64_t id = first; id < first + n; ++id) check(id);
  r.wall_ns = sample::now_ns() - t0;
  return r;
}

}  // namespace record_file

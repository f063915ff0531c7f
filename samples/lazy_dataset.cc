// SPDX-License-Identifier: Apache-2.0
// lazy_dataset: point lookups and short range scans over a large file of
// fixed-size records, served (a) by a faultline Region on a FileBackend and
// (b) by a plain mmap of the same file. The same query function runs over
// both and every record it reads is checked (its id and checksum), so wrong
// bytes are caught, not just timed.
//
// Without a FILE argument the sample generates (or reuses) a deterministic
// data set of --size bytes (default 1 GiB) in --dir (default
// $TMPDIR/faultline-lazy-dataset). Run with --help for the options.
//
// Exit status: 0 success, 1 a record failed verification (or the run failed
// or timed out), 2 bad arguments or an unusable file.

#include <faultline/faultline.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csetjmp>
#include <csignal>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

// ---------------------------------------------------------------------------
// File format
//
// Record 0 is a header; records 1..count-1 hold data. All 256 bytes, little
// endian, each ending with a checksum over its first 248 bytes.

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

uint64_t mix64(uint64_t x) {  // splitmix64 finaliser: a bijection
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

// Checksum over the first 248 bytes of a 256-byte record.
uint64_t checksum_of(const void* rec) {
  const auto* p = static_cast<const unsigned char*>(rec);
  uint64_t h = 0x6a09e667f3bcc909ull;
  for (size_t i = 0; i < (kRecordSize - 8) / 8; ++i) {
    uint64_t w;
    std::memcpy(&w, p + 8 * i, 8);
    h = mix64(h ^ w);
  }
  return h;
}

void make_record(uint64_t id, Record* r) {
  const uint64_t s = id * 0x9E3779B97F4A7C15ull + kGeneratorSeed;
  r->id = id;
  r->key = mix64(s ^ 0x4b4559ull);
  for (size_t w = 0; w < sizeof(r->value) / 8; ++w) {
    const uint64_t v = mix64(s + w + 1);
    std::memcpy(r->value + 8 * w, &v, 8);
  }
  r->checksum = checksum_of(r);
}

Header make_header(uint64_t record_count) {
  Header h{};
  h.magic = kMagic;
  h.version = kVersion;
  h.record_size = kRecordSize;
  h.record_count = record_count;
  h.checksum = checksum_of(&h);
  return h;
}

// ---------------------------------------------------------------------------
// Small helpers

// "lazy_dataset: MESSAGE" on stderr, then `tail`, then exit(code).
[[noreturn]] void vexit(int code, const char* tail, const char* fmt, va_list ap) {
  std::fflush(stdout);
  std::fputs("lazy_dataset: ", stderr);
  std::vfprintf(stderr, fmt, ap);
  std::fputs(tail, stderr);
  std::exit(code);
}

[[noreturn]] void die(int code, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
void die(int code, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vexit(code, "\n", fmt, ap);
}

// A bad command line: the message, a hint, exit status 2.
[[noreturn]] void usage_error(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void usage_error(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vexit(2, "\nTry 'lazy_dataset --help'.\n", fmt, ap);
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (b >= 1024 && u < 4) {
    b /= 1024;
    ++u;
  }
  char buf[64];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%.0f B", b);
  else
    std::snprintf(buf, sizeof buf, "%.1f %s", b, units[u]);
  return buf;
}

std::string human_ns(uint64_t ns) {
  char buf[64];
  if (ns < 10'000)
    std::snprintf(buf, sizeof buf, "%.2f us", ns / 1e3);
  else if (ns < 10'000'000)
    std::snprintf(buf, sizeof buf, "%.1f us", ns / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.1f ms", ns / 1e6);
  return buf;
}

std::string percent(double part, double whole) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f%%", whole > 0 ? 100.0 * part / whole : 0.0);
  return buf;
}

// "1G", "512M", "65536", "4KiB" -> bytes. Binary suffixes.
std::optional<uint64_t> parse_size(const std::string& s) {
  if (s.empty() || s[0] < '0' || s[0] > '9') return std::nullopt;
  size_t pos = 0;
  unsigned long long v;
  try {
    v = std::stoull(s, &pos, 10);
  } catch (...) {
    return std::nullopt;
  }
  std::string suf = s.substr(pos);
  for (auto& c : suf) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (suf.size() > 1 && (suf.ends_with("IB"))) suf.resize(suf.size() - 2);
  else if (suf.size() > 1 && suf.back() == 'B') suf.pop_back();
  int shift = 0;
  if (suf.empty() || suf == "B") shift = 0;
  else if (suf == "K") shift = 10;
  else if (suf == "M") shift = 20;
  else if (suf == "G") shift = 30;
  else if (suf == "T") shift = 40;
  else return std::nullopt;
  if (shift && v > (~0ull >> shift)) return std::nullopt;
  return static_cast<uint64_t>(v) << shift;
}

std::optional<uint64_t> parse_uint(const std::string& s) {
  if (s.empty() || s[0] < '0' || s[0] > '9') return std::nullopt;
  size_t pos = 0;
  try {
    unsigned long long v = std::stoull(s, &pos, 0);
    if (pos != s.size()) return std::nullopt;
    return v;
  } catch (...) {
    return std::nullopt;
  }
}

uint64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// read_bytes from /proc/self/io: bytes this process caused to be fetched from
// the storage layer (all threads, io_uring workers included). 0 on failure.
std::optional<uint64_t> proc_read_bytes() {
  std::ifstream in("/proc/self/io");
  std::string k;
  uint64_t v;
  while (in >> k >> v)
    if (k == "read_bytes:") return v;
  return std::nullopt;
}

struct FaultCounts {
  uint64_t major = 0, minor = 0;
};
FaultCounts rusage_faults() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return {static_cast<uint64_t>(ru.ru_majflt), static_cast<uint64_t>(ru.ru_minflt)};
}

// Rss of the mapping that starts at `start`, from /proc/self/smaps.
std::optional<uint64_t> mapping_rss(const void* start) {
  std::ifstream in("/proc/self/smaps");
  std::string line;
  const auto want = reinterpret_cast<uintptr_t>(start);
  bool in_it = false;
  while (std::getline(in, line)) {
    if (!line.empty() && std::isxdigit(static_cast<unsigned char>(line[0])) &&
        line.find('-') != std::string::npos && line.find(':') > line.find('-')) {
      in_it = std::strtoull(line.c_str(), nullptr, 16) == want;
      continue;
    }
    if (in_it && line.rfind("Rss:", 0) == 0) return std::strtoull(line.c_str() + 4, nullptr, 10) * 1024;
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------
// Options

struct Options {
  std::string file;  // empty: generate
  std::string dir;
  uint64_t size = 1ull << 30;
  bool size_given = false;
  uint64_t lookups = 2000;
  uint64_t scans = 4;
  uint64_t scan_records = 1024;
  uint64_t seed = 1;
  uint32_t fill_size = 64 * 1024;
  bool direct = false;
  bool drop_caches = true;
  int repeat = 1;
  bool run_faultline = true;
  bool run_mmap = true;
  int timeout_s = 60;
  bool verbose = false;
};

void usage(FILE* out) {
  std::fputs(
      "Usage: lazy_dataset [OPTIONS] [FILE]\n"
      "\n"
      "Answers point lookups and short range scans over a file of 256-byte records\n"
      "(id, key, value, checksum), first through a faultline region on a FileBackend,\n"
      "then through plain mmap, and compares wall time, storage reads, faults and\n"
      "how much of the file each one loaded. Every record read is verified.\n"
      "\n"
      "Without FILE, a deterministic data set is generated in --dir (reused if it is\n"
      "already there). FILE must be one this program generated.\n"
      "\n"
      "Options:\n"
      "  --dir DIR           where to generate/reuse the data set\n"
      "                      (default: $TMPDIR/faultline-lazy-dataset or /tmp/...)\n"
      "  --size BYTES        size of the generated file; suffixes K, M, G, T (binary)\n"
      "                      (default 1G; at least 64K; rounded down to 256 bytes)\n"
      "  --lookups N         random point lookups (default 2000)\n"
      "  --scans N           short range scans (default 4)\n"
      "  --scan-records N    records per range scan (default 1024 = 256 KiB)\n"
      "  --seed N            seed of the query mix (default 1)\n"
      "  --fill-size BYTES   faultline RegionOptions.fill_size (default 64K)\n"
      "  --direct            FileBackend with O_DIRECT\n"
      "  --only faultline|mmap   run one of the two\n"
      "  --repeat N          alternate the two runs N times (default 1)\n"
      "  --no-drop-caches    do not drop the page cache before each run\n"
      "  --timeout SECONDS   give up on a run after this long (default 60)\n"
      "  -v, --verbose       also print the faultline stats as JSON\n"
      "  -h, --help          this text\n"
      "\n"
      "Exit status: 0 all records verified; 1 a record failed verification, or a run\n"
      "failed or timed out; 2 bad arguments or an unusable file.\n",
      out);
}

Options parse_args(int argc, char** argv) {
  Options o;
  if (const char* t = std::getenv("TMPDIR"); t && *t)
    o.dir = std::string(t) + "/faultline-lazy-dataset";
  else
    o.dir = "/tmp/faultline-lazy-dataset";
  bool dir_given = false;

  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      usage(stdout);
      std::exit(0);
    }
    if (a == "-v" || a == "--verbose") {
      o.verbose = true;
      continue;
    }
    if (a == "--direct") {
      o.direct = true;
      continue;
    }
    if (a == "--no-drop-caches") {
      o.drop_caches = false;
      continue;
    }
    if (a.size() > 1 && a[0] == '-' && a != "--") {
      std::string name = a, val;
      bool has_val = false;
      if (auto eq = a.find('='); eq != std::string::npos) {
        name = a.substr(0, eq);
        val = a.substr(eq + 1);
        has_val = true;
      }
      static const char* with_value[] = {"--dir",  "--size",      "--lookups", "--scans",
                                         "--scan-records", "--seed", "--fill-size",
                                         "--only", "--repeat",    "--timeout"};
      bool known = false;
      for (const char* w : with_value) known |= name == w;
      if (!known) usage_error("unknown option '%s'", a.c_str());
      if (!has_val) {
        if (i + 1 >= argc) usage_error("option '%s' needs a value", name.c_str());
        val = argv[++i];
      }
      auto need_uint = [&](uint64_t lo, uint64_t hi) {
        auto v = parse_uint(val);
        if (!v || *v < lo || *v > hi)
          usage_error("%s: '%s' is not a number from %llu to %llu", name.c_str(), val.c_str(),
              static_cast<unsigned long long>(lo), static_cast<unsigned long long>(hi));
        return *v;
      };
      if (name == "--dir") {
        if (val.empty()) usage_error("--dir: empty path");
        o.dir = val;
        dir_given = true;
      } else if (name == "--size") {
        auto v = parse_size(val);
        if (!v) usage_error("--size: '%s' is not a size (examples: 1G, 256M, 1048576)", val.c_str());
        if (*v < 64 * 1024) usage_error("--size: %s is too small (at least 64K)", val.c_str());
        o.size = *v / kRecordSize * kRecordSize;
        o.size_given = true;
      } else if (name == "--lookups") {
        o.lookups = need_uint(0, 100'000'000);
      } else if (name == "--scans") {
        o.scans = need_uint(0, 1'000'000);
      } else if (name == "--scan-records") {
        o.scan_records = need_uint(1, 1ull << 32);
      } else if (name == "--seed") {
        o.seed = need_uint(0, ~0ull);
      } else if (name == "--fill-size") {
        auto v = parse_size(val);
        if (!v || *v < 4096 || *v > 2 * 1024 * 1024 || (*v & (*v - 1)))
          usage_error("--fill-size: '%s' must be a power of two from 4K to 2M", val.c_str());
        o.fill_size = static_cast<uint32_t>(*v);
      } else if (name == "--only") {
        if (val == "faultline") o.run_mmap = false;
        else if (val == "mmap") o.run_faultline = false;
        else usage_error("--only: '%s' is neither 'faultline' nor 'mmap'", val.c_str());
      } else if (name == "--repeat") {
        o.repeat = static_cast<int>(need_uint(1, 100));
      } else if (name == "--timeout") {
        o.timeout_s = static_cast<int>(need_uint(1, 86400));
      }
      continue;
    }
    if (a == "--") {
      if (i + 1 < argc) a = argv[++i];
      else usage_error("'--' must be followed by FILE");
    }
    if (!o.file.empty()) usage_error("more than one FILE given ('%s' and '%s')", o.file.c_str(), a.c_str());
    if (a.empty()) usage_error("FILE is an empty path");
    o.file = a;
  }
  if (!o.file.empty() && (o.size_given || dir_given))
    usage_error("--size and --dir only apply to a generated data set, not to FILE '%s'", o.file.c_str());
  if (o.lookups == 0 && o.scans == 0) usage_error("nothing to do: --lookups 0 and --scans 0");
  return o;
}

// ---------------------------------------------------------------------------
// The data set

enum class Check { kOk, kMissing, kBad };

// Validates FILE's header and size. On kBad, *why says what is wrong.
Check check_file(const std::string& path, uint64_t* record_count, std::string* why, int* err) {
  *err = 0;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *err = errno;
    *why = std::string("cannot open: ") + std::strerror(errno);
    return errno == ENOENT ? Check::kMissing : Check::kBad;
  }
  struct stat st {};
  Check result = Check::kBad;
  Header h{};
  if (fstat(fd, &st) != 0) {
    *err = errno;
    *why = std::string("cannot stat: ") + std::strerror(errno);
  } else if (!S_ISREG(st.st_mode)) {
    *why = "not a regular file";
  } else if (st.st_size < static_cast<off_t>(2 * kRecordSize) || st.st_size % kRecordSize) {
    *why = "size " + std::to_string(st.st_size) + " is not a whole number (>= 2) of 256-byte records";
  } else if (ssize_t n = ::pread(fd, &h, sizeof h, 0); n != static_cast<ssize_t>(sizeof h)) {
    *err = n < 0 ? errno : 0;
    *why = std::string("cannot read the header: ") + (n < 0 ? std::strerror(errno) : "short read");
  } else if (h.magic != kMagic || h.checksum != checksum_of(&h)) {
    *why = "not a lazy_dataset file (bad magic or header checksum)";
  } else if (h.version != kVersion || h.record_size != kRecordSize) {
    *why = "unsupported format version or record size";
  } else if (h.record_count * kRecordSize != static_cast<uint64_t>(st.st_size)) {
    *why = "header says " + std::to_string(h.record_count) + " records but the file holds " +
           std::to_string(st.st_size / kRecordSize) + " (truncated?)";
  } else {
    *record_count = h.record_count;
    result = Check::kOk;
  }
  // Keep the header read from warming the cache for the runs.
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
  return result;
}

void generate(const std::string& path, uint64_t size) {
  namespace fs = std::filesystem;
  const uint64_t count = size / kRecordSize;
  const std::string tmp = path + ".tmp." + std::to_string(getpid());

  struct statvfs vfs {};
  const std::string dir = fs::path(path).parent_path().string();
  if (statvfs(dir.c_str(), &vfs) == 0) {
    const uint64_t avail = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
    if (avail < size + (64ull << 20))
      die(2, "not enough space in %s to generate %s (%s free); use --dir or --size", dir.c_str(),
          human_bytes(size).c_str(), human_bytes(avail).c_str());
  }
  std::printf("generating %s (%s, %llu records)...\n", path.c_str(), human_bytes(size).c_str(),
              static_cast<unsigned long long>(count));
  std::fflush(stdout);
  const uint64_t t0 = now_ns();

  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) die(2, "cannot create %s: %s", tmp.c_str(), std::strerror(errno));
  constexpr uint64_t kBatch = 16384;  // records per write: 4 MiB
  std::vector<Record> buf(kBatch);
  for (uint64_t first = 0; first < count; first += kBatch) {
    const uint64_t n = std::min(kBatch, count - first);
    for (uint64_t i = 0; i < n; ++i) {
      if (first + i == 0) {
        Header h = make_header(count);
        std::memcpy(&buf[0], &h, sizeof h);
      } else {
        make_record(first + i, &buf[i]);
      }
    }
    const char* p = reinterpret_cast<const char*>(buf.data());
    size_t left = n * kRecordSize;
    while (left > 0) {
      ssize_t w = ::write(fd, p, left);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        int e = errno;
        ::close(fd);
        ::unlink(tmp.c_str());
        die(2, "cannot write %s: %s", tmp.c_str(), w < 0 ? std::strerror(e) : "no progress");
      }
      p += w;
      left -= static_cast<size_t>(w);
    }
  }
  if (fdatasync(fd) != 0 || ::close(fd) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    die(2, "cannot write %s: %s", tmp.c_str(), std::strerror(e));
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    die(2, "cannot rename %s to %s: %s", tmp.c_str(), path.c_str(), std::strerror(e));
  }
  std::printf("generated in %.1f s\n", (now_ns() - t0) / 1e9);
}

// ---------------------------------------------------------------------------
// The queries: one function over a plain byte range, whatever backs it.

struct Plan {
  std::vector<uint64_t> lookups;                      // record ids
  std::vector<std::pair<uint64_t, uint64_t>> scans;   // first id, count
  uint64_t records = 0;                               // records read in all
};

Plan make_plan(uint64_t record_count, const Options& o) {
  Plan p;
  uint64_t state = mix64(o.seed ^ 0x9e3779b97f4a7c15ull);
  auto next = [&] { return mix64(state += 0x9e3779b97f4a7c15ull); };
  const uint64_t data = record_count - 1;  // ids 1..record_count-1
  for (uint64_t i = 0; i < o.lookups; ++i) p.lookups.push_back(1 + next() % data);
  const uint64_t len = std::min(o.scan_records, data);
  for (uint64_t i = 0; i < o.scans; ++i) p.scans.emplace_back(1 + next() % (data - len + 1), len);
  p.records = o.lookups + o.scans * len;
  return p;
}

// SIGBUS (a page faultline could not serve, or a truncated mmap'd file) is
// turned into a failed record instead of killing the process.
thread_local sigjmp_buf* t_sigbus_jmp = nullptr;

void on_sigbus(int sig, siginfo_t*, void*) {
  if (sigjmp_buf* jb = t_sigbus_jmp) {
    t_sigbus_jmp = nullptr;
    siglongjmp(*jb, 1);
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

void install_sigbus_handler() {
  struct sigaction sa {};
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;  // NODEFER: we leave by siglongjmp
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, nullptr);
}

// Copies one record out of the mapping; false if the access raised SIGBUS.
__attribute__((noinline)) bool load_record(const std::byte* src, Record* out) {
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
  uint64_t digest = 0;  // sum of keys: both runs must agree
  std::vector<uint64_t> lookup_ns;
  uint64_t wall_ns = 0;
};

QueryResult run_queries(const std::byte* base, size_t size, const Plan& plan) {
  QueryResult r;
  r.lookup_ns.reserve(plan.lookups.size());
  auto check = [&](uint64_t id) {
    ++r.records_checked;
    char err[160] = "";
    Record rec;
    if ((id + 1) * kRecordSize > size) {
      std::snprintf(err, sizeof err, "record %llu is past the end of the mapping (%zu bytes)",
                    static_cast<unsigned long long>(id), size);
    } else if (!load_record(base + id * kRecordSize, &rec)) {
      std::snprintf(err, sizeof err, "record %llu (offset %llu): SIGBUS on access",
                    static_cast<unsigned long long>(id), static_cast<unsigned long long>(id * kRecordSize));
    } else if (rec.id != id) {
      std::snprintf(err, sizeof err, "record %llu (offset %llu): holds id %llu",
                    static_cast<unsigned long long>(id), static_cast<unsigned long long>(id * kRecordSize),
                    static_cast<unsigned long long>(rec.id));
    } else if (rec.checksum != checksum_of(&rec)) {
      std::snprintf(err, sizeof err, "record %llu (offset %llu): checksum mismatch",
                    static_cast<unsigned long long>(id), static_cast<unsigned long long>(id * kRecordSize));
    } else {
      r.digest += rec.key;
      return;
    }
    if (r.bad_records++ == 0) r.first_error = err;
  };

  const uint64_t t0 = now_ns();
  for (uint64_t id : plan.lookups) {
    const uint64_t s = now_ns();
    check(id);
    r.lookup_ns.push_back(now_ns() - s);
  }
  for (auto [first, n] : plan.scans)
    for (uint64_t id = first; id < first + n; ++id) check(id);
  r.wall_ns = now_ns() - t0;
  return r;
}

// The expected digest, computed without touching the file.
uint64_t expected_digest(const Plan& plan) {
  uint64_t d = 0;
  Record rec;
  for (uint64_t id : plan.lookups) {
    make_record(id, &rec);
    d += rec.key;
  }
  for (auto [first, n] : plan.scans)
    for (uint64_t id = first; id < first + n; ++id) {
      make_record(id, &rec);
      d += rec.key;
    }
  return d;
}

// ---------------------------------------------------------------------------
// Runs

struct RunReport {
  std::string name;
  QueryResult q;
  std::optional<uint64_t> read_bytes;  // /proc/self/io delta
  FaultCounts faults;                  // getrusage delta
  std::optional<uint64_t> rss;         // of the mapping, after the queries
  std::optional<faultline::StatsSnapshot> stats;
  std::string backend;
};

std::string g_cache_note;

bool drop_caches(const std::string& path, bool enabled) {
  // Always drop this file's clean pages (works without privilege), then,
  // as root, the whole page cache.
  if (int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC); fd >= 0) {
    fdatasync(fd);
    posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    ::close(fd);
  }
  if (!enabled) return false;
  if (geteuid() != 0) return false;
  sync();
  int fd = ::open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    g_cache_note = std::string("could not open /proc/sys/vm/drop_caches: ") + std::strerror(errno);
    return false;
  }
  bool ok = ::write(fd, "3\n", 2) == 2;
  if (!ok) g_cache_note = std::string("could not write /proc/sys/vm/drop_caches: ") + std::strerror(errno);
  ::close(fd);
  return ok;
}

// Gives up on the process if a run hangs (a fault that is never served).
class Watchdog {
 public:
  Watchdog(int seconds, std::string what) : what_(std::move(what)) {
    thread_ = std::thread([this, seconds] {
      std::unique_lock lk(mu_);
      if (!cv_.wait_for(lk, std::chrono::seconds(seconds), [this] { return done_; })) {
        std::fflush(stdout);
        std::fprintf(stderr,
                     "lazy_dataset: FAIL: the %s run did not finish within %d s "
                     "(a fault that is never served?)\n",
                     what_.c_str(), seconds);
        std::_Exit(1);
      }
    });
  }
  ~Watchdog() {
    {
      std::lock_guard lk(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 private:
  std::string what_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

RunReport run_faultline(const std::string& path, const Plan& plan, const Options& o,
                        faultline::Runtime& rt) {
  faultline::FileBackendOptions bo;
  bo.direct = o.direct;
  auto backend = std::make_shared<faultline::FileBackend>(path, bo);
  faultline::RegionOptions ro;
  ro.fill_size = o.fill_size;
  faultline::Region region = rt.map(backend, ro);

  RunReport rep;
  rep.name = "faultline";
  rep.backend = backend->name();
  Watchdog wd(o.timeout_s, "faultline");
  const auto io0 = proc_read_bytes();
  const FaultCounts f0 = rusage_faults();
  rep.q = run_queries(region.data(), region.size(), plan);
  const FaultCounts f1 = rusage_faults();
  const auto io1 = proc_read_bytes();
  rep.stats = region.stats();
  if (io0 && io1) rep.read_bytes = *io1 - *io0;
  rep.faults = {f1.major - f0.major, f1.minor - f0.minor};
  rep.rss = mapping_rss(region.data());
  region.reset();
  return rep;
}

RunReport run_mmap(const std::string& path, uint64_t size, const Plan& plan, const Options& o) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) die(2, "cannot open %s: %s", path.c_str(), std::strerror(errno));
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) die(1, "mmap of %s failed: %s", path.c_str(), std::strerror(errno));
  ::close(fd);

  RunReport rep;
  rep.name = "mmap";
  Watchdog wd(o.timeout_s, "mmap");
  const auto io0 = proc_read_bytes();
  const FaultCounts f0 = rusage_faults();
  rep.q = run_queries(static_cast<const std::byte*>(p), size, plan);
  const FaultCounts f1 = rusage_faults();
  const auto io1 = proc_read_bytes();
  if (io0 && io1) rep.read_bytes = *io1 - *io0;
  rep.faults = {f1.major - f0.major, f1.minor - f0.minor};
  rep.rss = mapping_rss(p);
  ::munmap(p, size);
  return rep;
}

// The kernel's read-ahead window for the file's block device (mmap's
// read-around on a major fault is up to this much), in KiB.
std::optional<uint64_t> read_ahead_kb(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return std::nullopt;
  const std::string dev = std::to_string(major(st.st_dev)) + ":" + std::to_string(minor(st.st_dev));
  for (const std::string& f : {"/sys/class/bdi/" + dev + "/read_ahead_kb",
                               "/sys/dev/block/" + dev + "/queue/read_ahead_kb",
                               "/sys/dev/block/" + dev + "/../queue/read_ahead_kb"}) {
    std::ifstream in(f);
    uint64_t kb;
    if (in >> kb) return kb;
  }
  return std::nullopt;
}

uint64_t quantile(std::vector<uint64_t> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(q * (v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

void print_table(const std::vector<RunReport>& runs, uint64_t file_size) {
  auto row = [&](const char* label, auto cell) {
    std::printf("  %-34s", label);
    for (const auto& r : runs) std::printf(" %22s", cell(r).c_str());
    std::printf("\n");
  };
  const std::string na = "n/a";
  std::printf("  %-34s", "");
  for (const auto& r : runs) std::printf(" %22s", r.name.c_str());
  std::printf("\n");
  row("wall time (queries)", [](const RunReport& r) { return human_ns(r.q.wall_ns); });
  row("point lookup p50 / p99", [](const RunReport& r) {
    return human_ns(quantile(r.q.lookup_ns, 0.5)) + " / " + human_ns(quantile(r.q.lookup_ns, 0.99));
  });
  row("bytes read by the backend", [&](const RunReport& r) {
    return r.stats ? human_bytes(r.stats->bytes_read) : na;
  });
  row("storage reads (/proc/self/io)", [&](const RunReport& r) {
    return r.read_bytes ? human_bytes(*r.read_bytes) : std::string("unavailable");
  });
  row("faults served by faultline", [&](const RunReport& r) {
    return r.stats ? std::to_string(r.stats->faults) : na;
  });
  row("fault service p50 / p99", [&](const RunReport& r) {
    return r.stats ? human_ns(r.stats->latency_p50_ns) + " / " + human_ns(r.stats->latency_p99_ns) : na;
  });
  row("page faults major / minor (rusage)", [](const RunReport& r) {
    return std::to_string(r.faults.major) + " / " + std::to_string(r.faults.minor);
  });
  row("loaded into the mapping (Rss)", [&](const RunReport& r) {
    return r.rss ? human_bytes(*r.rss) + " " + percent(*r.rss, file_size) : std::string("unavailable");
  });
  row("installed by faultline", [&](const RunReport& r) {
    return r.stats ? human_bytes(r.stats->bytes_installed) + " " + percent(r.stats->bytes_installed, file_size)
                   : na;
  });
  row("read-ahead chunks / hits", [&](const RunReport& r) {
    return r.stats ? std::to_string(r.stats->readahead_chunks) + " / " + std::to_string(r.stats->readahead_hits)
                   : na;
  });
  row("records verified / bad", [](const RunReport& r) {
    return std::to_string(r.q.records_checked - r.q.bad_records) + " / " + std::to_string(r.q.bad_records);
  });
}

}  // namespace

int main(int argc, char** argv) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const Options o = parse_args(argc, argv);

  // The data set.
  std::string path = o.file;
  uint64_t record_count = 0;
  std::string why;
  int err = 0;
  if (!o.file.empty()) {
    if (check_file(path, &record_count, &why, &err) != Check::kOk) die(2, "%s: %s", path.c_str(), why.c_str());
    std::printf("data set: %s", path.c_str());
  } else {
    std::error_code ec;
    std::filesystem::create_directories(o.dir, ec);
    if (ec) die(2, "cannot create directory %s: %s", o.dir.c_str(), ec.message().c_str());
    path = o.dir + "/records-" + std::to_string(o.size) + ".dat";
    Check c = check_file(path, &record_count, &why, &err);
    if (c == Check::kOk && record_count * kRecordSize == o.size) {
      std::printf("data set: %s (reused)", path.c_str());
    } else {
      if (c == Check::kBad) std::printf("existing %s is unusable (%s): regenerating\n", path.c_str(), why.c_str());
      generate(path, o.size);
      if (check_file(path, &record_count, &why, &err) != Check::kOk)
        die(1, "%s: generated file does not check: %s", path.c_str(), why.c_str());
      std::printf("data set: %s", path.c_str());
    }
  }
  const uint64_t file_size = record_count * kRecordSize;
  std::printf(", %s, %llu records of %llu bytes\n", human_bytes(file_size).c_str(),
              static_cast<unsigned long long>(record_count), static_cast<unsigned long long>(kRecordSize));

  const Plan plan = make_plan(record_count, o);
  const uint64_t want_digest = expected_digest(plan);
  std::printf("queries: %zu point lookups + %zu range scans of %llu records (seed %llu): %s of records, %s of the file\n",
              plan.lookups.size(), plan.scans.size(),
              static_cast<unsigned long long>(plan.scans.empty() ? 0 : plan.scans[0].second),
              static_cast<unsigned long long>(o.seed), human_bytes(plan.records * kRecordSize).c_str(),
              percent(plan.records * kRecordSize, file_size).c_str());

  if (o.run_mmap) {
    if (auto kb = read_ahead_kb(path))
      std::printf("mmap: MAP_SHARED, default advice; the device's read_ahead_kb is %llu (mmap reads up to "
                  "that much around each major fault)\n",
                  static_cast<unsigned long long>(*kb));
    else
      std::printf("mmap: MAP_SHARED, default advice (read_ahead_kb of the device: unknown)\n");
  }

  install_sigbus_handler();

  std::unique_ptr<faultline::Runtime> rt;
  if (o.run_faultline) {
    try {
      rt = std::make_unique<faultline::Runtime>();
    } catch (const faultline::Error& e) {
      die(1, "cannot start the faultline runtime: %s", e.what());
    }
    std::printf("faultline: userfaultfd %s; fill_size %s%s\n", rt->mode().describe().c_str(),
                human_bytes(o.fill_size).c_str(), o.direct ? ", O_DIRECT" : "");
  }

  int failures = 0;
  std::vector<uint64_t> wall_fl, wall_mm;
  for (int round = 0; round < o.repeat; ++round) {
    std::vector<RunReport> runs;
    bool dropped_all = true;
    auto prepare = [&] { dropped_all &= drop_caches(path, o.drop_caches); };
    if (o.run_faultline) {
      prepare();
      try {
        runs.push_back(run_faultline(path, plan, o, *rt));
      } catch (const faultline::Error& e) {
        die(1, "faultline run failed: %s", e.what());
      }
    }
    if (o.run_mmap) {
      prepare();
      runs.push_back(run_mmap(path, file_size, plan, o));
    }

    std::printf("\n");
    if (o.repeat > 1) std::printf("round %d of %d\n", round + 1, o.repeat);
    if (!o.drop_caches)
      std::printf("page cache: not dropped (--no-drop-caches): storage reads may be ~0\n");
    else if (dropped_all)
      std::printf("page cache: dropped before each run (sync; echo 3 > /proc/sys/vm/drop_caches)\n");
    else if (geteuid() != 0)
      std::printf("page cache: NOT dropped globally (not root); only this file's pages were evicted "
                  "with posix_fadvise(DONTNEED) before each run\n");
    else
      std::printf("page cache: NOT dropped globally (%s); this file's pages were evicted with "
                  "posix_fadvise(DONTNEED)\n", g_cache_note.c_str());
    if (!runs.empty() && runs[0].stats) std::printf("backend: %s\n", runs[0].backend.c_str());
    print_table(runs, file_size);

    for (const auto& r : runs) {
      (r.name == "mmap" ? wall_mm : wall_fl).push_back(r.q.wall_ns);
      if (r.q.bad_records) {
        ++failures;
        std::printf("FAIL (%s): %llu of %llu records failed verification; first: %s\n", r.name.c_str(),
                    static_cast<unsigned long long>(r.q.bad_records),
                    static_cast<unsigned long long>(r.q.records_checked), r.q.first_error.c_str());
      } else if (r.q.digest != want_digest) {
        ++failures;
        std::printf("FAIL (%s): records verified but the key digest %016llx differs from the expected %016llx\n",
                    r.name.c_str(), static_cast<unsigned long long>(r.q.digest),
                    static_cast<unsigned long long>(want_digest));
      }
      if (r.stats && r.stats->errors)
        std::printf("note (%s): faultline poisoned %llu chunks it could not read\n", r.name.c_str(),
                    static_cast<unsigned long long>(r.stats->errors));
      if (o.verbose && r.stats) std::printf("%s stats: %s\n", r.name.c_str(), r.stats->to_json().c_str());
    }
  }
  if (o.repeat > 1) {
    std::printf("\nmedian wall time over %d rounds:", o.repeat);
    if (!wall_fl.empty()) std::printf(" faultline %s", human_ns(quantile(wall_fl, 0.5)).c_str());
    if (!wall_mm.empty()) std::printf(" mmap %s", human_ns(quantile(wall_mm, 0.5)).c_str());
    std::printf("\n");
  }
  std::printf("\nnotes: 'storage reads' is the read_bytes delta of /proc/self/io (all threads of this\n"
              "process, io_uring workers included) over the queries; 'page faults' are getrusage deltas;\n"
              "'Rss' is the mapping's resident size in /proc/self/smaps after the queries.\n");
  if (failures) {
    std::printf("\nresult: FAIL\n");
    return 1;
  }
  std::printf("\nresult: OK, every record verified in every run\n");
  return 0;
}

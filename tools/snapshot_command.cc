// SPDX-License-Identifier: Apache-2.0
// `faultline snapshot`: create, inspect and verify compressed snapshots
// (docs/snapshot-format.md).
//
//   faultline snapshot create INPUT OUTPUT [--chunk-size SIZE] [--level N] [--threads N]
//   faultline snapshot inspect FILE
//   faultline snapshot verify FILE [--threads N]
//
// Long work (create, verify) draws a progress bar on stderr, only when stderr
// is a terminal: logs and pipes get the final summary alone.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "commands.h"
#include "faultline/error.h"
#include "faultline/snapshot.h"

namespace faultline::tools {
namespace {

constexpr const char* kSnapshotUsage =
    "usage: faultline snapshot SUBCOMMAND [ARGS...]\n"
    "\n"
    "Compressed memory snapshots: chunks compressed with zstd one by one, an\n"
    "index to read any chunk alone, all-zero chunks stored as a flag.\n"
    "\n"
    "subcommands:\n"
    "  create INPUT OUTPUT   snapshot a file\n"
    "  inspect FILE          print the header, chunk counts and compression ratio\n"
    "  verify FILE           decompress and check every chunk\n"
    "\n"
    "`faultline snapshot SUBCOMMAND --help` describes each one.\n";

constexpr const char* kCreateUsage =
    "usage: faultline snapshot create INPUT OUTPUT [--chunk-size SIZE] [--level N] [--threads N]\n"
    "                                 [--dictionary SIZE]\n"
    "\n"
    "Writes a snapshot of the file INPUT to OUTPUT. OUTPUT appears only when it\n"
    "is complete (it is written to a temporary file, synced, then renamed), so\n"
    "an interrupted run never leaves a half-written snapshot under that name.\n"
    "INPUT is a regular file or a block device (snapshotted whole); anything\n"
    "else (a FIFO, a directory) is refused.\n"
    "If INPUT changes while it is read (its size, mtime or ctime), nothing is\n"
    "written and the exit status is 1: stop its writer, or snapshot a copy.\n"
    "Writes to a block device's contents cannot be seen: stop its writer.\n"
    "\n"
    "options:\n"
    "  --chunk-size SIZE  bytes per chunk: a power of two from 4K to 4M\n"
    "                     (default 64K; suffixes K and M). A restore reads and\n"
    "                     decompresses whole chunks.\n"
    "  --level N          zstd compression level, 1 to 22 (default 3; above 19\n"
    "                     is slow and needs much memory)\n"
    "  --threads N        compression threads (default 0: one per CPU)\n"
    "  --dictionary SIZE  largest zstd dictionary to train on a sample of the\n"
    "                     chunks and store in the snapshot, up to 1M (default\n"
    "                     64K; 0: none). Kept only where a held-out sample says\n"
    "                     it saves more than it costs.\n"
    "  -h, --help         this text\n"
    "\n"
    "exit status: 0 written, 1 failed (the message names the file), 2 bad arguments\n";

constexpr const char* kInspectUsage =
    "usage: faultline snapshot inspect FILE\n"
    "\n"
    "Checks the header and index of the snapshot FILE and prints them: format\n"
    "version, chunk size, flags, uncompressed size, chunk count, zero chunks,\n"
    "compressed bytes and the compression ratio. Chunk data is not read: use\n"
    "`faultline snapshot verify` for that.\n"
    "\n"
    "exit status: 0 a valid header and index, 1 not (the message says which\n"
    "field), 2 bad arguments\n";

constexpr const char* kVerifyUsage =
    "usage: faultline snapshot verify FILE [--threads N]\n"
    "\n"
    "Reads and decompresses every chunk of the snapshot FILE and checks its\n"
    "length and checksum. Prints each bad chunk (index, file offset, problem)\n"
    "and a summary.\n"
    "\n"
    "options:\n"
    "  --threads N   checking threads (default 0: one per CPU)\n"
    "  -h, --help    this text\n"
    "\n"
    "exit status: 0 every chunk is good, 1 a chunk, the header or the index is\n"
    "bad (or the file cannot be read), 2 bad arguments\n";

int usage_error(const char* sub, const std::string& message, const char* usage_hint) {
  std::fprintf(stderr, "faultline snapshot%s%s: %s\nTry 'faultline snapshot%s%s --help'.\n", sub[0] ? " " : "", sub,
               message.c_str(), usage_hint[0] ? " " : "", usage_hint);
  return 2;
}

bool is_help(const char* a) { return !std::strcmp(a, "-h") || !std::strcmp(a, "--help"); }

// Failure messages name the file: the library's messages usually do; where
// one does not, the file is put in front.
int fail(const char* sub, const std::string& path, const std::string& what) {
  if (what.find(path) == std::string::npos)
    std::fprintf(stderr, "faultline snapshot %s: %s: %s\n", sub, path.c_str(), what.c_str());
  else
    std::fprintf(stderr, "faultline snapshot %s: %s\n", sub, what.c_str());
  return 1;
}

bool parse_uint(const std::string& s, uint64_t& out) {
  if (s.empty() || s[0] == '-' || s[0] == '+') return false;
  char* end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (errno != 0 || end == s.c_str()) return false;
  uint64_t mult = 1;
  std::string suffix(end);
  for (char& c : suffix) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (suffix == "K" || suffix == "KB" || suffix == "KIB") mult = 1ull << 10;
  else if (suffix == "M" || suffix == "MB" || suffix == "MIB") mult = 1ull << 20;
  else if (!suffix.empty()) return false;
  if (v > UINT64_MAX / mult) return false;
  out = v * mult;
  return true;
}

std::string human_bytes(uint64_t n) {
  char b[64];
  const double d = static_cast<double>(n);
  if (n >= (1ull << 30)) std::snprintf(b, sizeof b, "%.2f GiB", d / (1ull << 30));
  else if (n >= (1ull << 20)) std::snprintf(b, sizeof b, "%.1f MiB", d / (1ull << 20));
  else if (n >= (1ull << 10)) std::snprintf(b, sizeof b, "%.1f KiB", d / (1ull << 10));
  else std::snprintf(b, sizeof b, "%" PRIu64 " B", n);
  return b;
}

// Parses "--name VALUE" or "--name=VALUE" at argv[i]. Returns false if
// argv[i] is not this option; sets `missing` when the value is absent.
bool option_value(int argc, char** argv, int& i, const char* name, std::string& value, bool& missing) {
  const size_t n = std::strlen(name);
  if (std::strncmp(argv[i], name, n) != 0) return false;
  if (argv[i][n] == '=') {
    value = argv[i] + n + 1;
    return true;
  }
  if (argv[i][n] != '\0') return false;
  if (i + 1 >= argc) {
    missing = true;
    return true;
  }
  value = argv[++i];
  return true;
}

// A one-line progress bar on stderr, redrawn at most ten times a second, and
// only if stderr is a terminal. update() may be called from several threads.
class ProgressBar {
 public:
  explicit ProgressBar(const char* label) : label_(label), enabled_(isatty(STDERR_FILENO) == 1) {}
  ~ProgressBar() { finish(); }

  void update(uint64_t done, uint64_t total) {
    if (!enabled_) return;
    std::lock_guard<std::mutex> lock(mu_);
    const auto now = std::chrono::steady_clock::now();
    if (drawn_ && done < total && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    drawn_ = true;
    const double frac = total ? std::min(1.0, static_cast<double>(done) / static_cast<double>(total)) : 1.0;
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(frac * kWidth);
    char bar[kWidth + 1];
    for (int i = 0; i < kWidth; ++i) bar[i] = i < filled ? '#' : '.';
    bar[kWidth] = '\0';
    const double secs = std::chrono::duration<double>(now - start_).count();
    const double mbps = secs > 0 ? static_cast<double>(done) / secs / 1e6 : 0;
    std::fprintf(stderr, "\r%s [%s] %3d%%  %s / %s  %.0f MB/s ", label_, bar, static_cast<int>(frac * 100),
                 human_bytes(done).c_str(), human_bytes(total).c_str(), mbps);
    std::fflush(stderr);
  }
  // Ends the bar's line (once), so later output starts on a fresh line.
  void finish() {
    std::lock_guard<std::mutex> lock(mu_);
    if (drawn_) std::fputc('\n', stderr);
    drawn_ = false;
  }

 private:
  const char* label_;
  const bool enabled_;
  std::mutex mu_;
  bool drawn_ = false;
  const std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point last_{};
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// ---------------------------------------------------------------------------
int create(int argc, char** argv) {
  std::vector<std::string> positional;
  SnapshotWriteOptions options;
  for (int i = 1; i < argc; ++i) {
    if (is_help(argv[i])) {
      std::fputs(kCreateUsage, stdout);
      return 0;
    }
    std::string value;
    bool missing = false;
    uint64_t n = 0;
    if (option_value(argc, argv, i, "--chunk-size", value, missing)) {
      if (missing) return usage_error("create", "--chunk-size needs a value", "create");
      if (!parse_uint(value, n) || n < 4096 || n > (4u << 20) || (n & (n - 1)) != 0)
        return usage_error("create", "--chunk-size: '" + value + "' is not a power of two from 4K to 4M", "create");
      options.chunk_size = static_cast<uint32_t>(n);
    } else if (option_value(argc, argv, i, "--level", value, missing)) {
      if (missing) return usage_error("create", "--level needs a value", "create");
      if (!parse_uint(value, n) || n < 1 || n > 22)
        return usage_error("create", "--level: '" + value + "' is not a level from 1 to 22", "create");
      options.level = static_cast<int>(n);
    } else if (option_value(argc, argv, i, "--threads", value, missing)) {
      if (missing) return usage_error("create", "--threads needs a value", "create");
      if (!parse_uint(value, n) || n > 1024)
        return usage_error("create", "--threads: '" + value + "' is not a number from 0 to 1024", "create");
      options.threads = static_cast<unsigned>(n);
    } else if (option_value(argc, argv, i, "--dictionary", value, missing)) {
      if (missing) return usage_error("create", "--dictionary needs a value", "create");
      if (!parse_uint(value, n) || n > (1u << 20))
        return usage_error("create", "--dictionary: '" + value + "' is not a size from 0 to 1M", "create");
      options.dictionary_bytes = static_cast<uint32_t>(n);
    } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
      return usage_error("create", std::string("unknown option '") + argv[i] + "'", "create");
    } else {
      positional.push_back(argv[i]);
    }
  }
  if (positional.size() != 2)
    return usage_error("create", positional.size() < 2 ? "needs INPUT and OUTPUT" : "too many arguments", "create");
  const std::string& input = positional[0];
  const std::string& output = positional[1];
  std::error_code ec;
  if (std::filesystem::equivalent(input, output, ec))
    return usage_error("create", "INPUT and OUTPUT are the same file: '" + output + "'", "create");

  ProgressBar bar("create");
  options.progress = [&bar](uint64_t done, uint64_t total) { bar.update(done, total); };
  const auto t0 = std::chrono::steady_clock::now();
  try {
    write_snapshot_from_file(input, output, options);
  } catch (const std::exception& e) {
    bar.finish();
    const std::string what = e.what();
    // The message names the input or the output; if neither, name both.
    if (what.find(input) != std::string::npos || what.find(output) != std::string::npos) {
      std::fprintf(stderr, "faultline snapshot create: %s\n", what.c_str());
      return 1;
    }
    return fail("create", input + " -> " + output, what);
  }
  bar.finish();
  const double secs = seconds_since(t0);
  try {
    const SnapshotReader reader = SnapshotReader::open(output);
    const SnapshotInfo& info = reader.info();
    std::printf("%s: %s in %" PRIu64 " chunks of %s (%" PRIu64 " zero), %s on disk, ratio %.2f, %.2f s (%.0f MB/s)\n",
                output.c_str(), human_bytes(info.size).c_str(), info.chunk_count, human_bytes(info.chunk_size).c_str(),
                info.zero_chunks, human_bytes(info.file_bytes).c_str(),
                info.file_bytes ? static_cast<double>(info.size) / static_cast<double>(info.file_bytes) : 0.0, secs,
                secs > 0 ? static_cast<double>(info.size) / secs / 1e6 : 0.0);
  } catch (const std::exception& e) {
    return fail("create", output, std::string("written, but cannot be read back: ") + e.what());
  }
  return 0;
}

// ---------------------------------------------------------------------------
int inspect(int argc, char** argv) {
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    if (is_help(argv[i])) {
      std::fputs(kInspectUsage, stdout);
      return 0;
    }
    if (argv[i][0] == '-' && argv[i][1] != '\0')
      return usage_error("inspect", std::string("unknown option '") + argv[i] + "'", "inspect");
    positional.push_back(argv[i]);
  }
  if (positional.size() != 1)
    return usage_error("inspect", positional.empty() ? "needs FILE" : "too many arguments", "inspect");
  const std::string& path = positional[0];
  try {
    const SnapshotReader reader = SnapshotReader::open(path);
    const SnapshotInfo& i = reader.info();
    const uint64_t stored = i.chunk_count - i.zero_chunks;
    std::printf("file:              %s\n", path.c_str());
    std::printf("format version:    %" PRIu32 "\n", i.version);
    std::printf("chunk size:        %" PRIu32 " (%s)\n", i.chunk_size, human_bytes(i.chunk_size).c_str());
    std::printf("flags:             0x%" PRIx32 "%s\n", i.flags, (i.flags & 1) ? " (dictionary)" : "");
    std::printf("dictionary bytes:  %" PRIu32 "\n", i.dictionary_bytes);
    std::printf("uncompressed size: %" PRIu64 " (%s)\n", i.size, human_bytes(i.size).c_str());
    std::printf("chunks:            %" PRIu64 "\n", i.chunk_count);
    std::printf("zero chunks:       %" PRIu64 " (%.1f%%)\n", i.zero_chunks,
                i.chunk_count ? 100.0 * static_cast<double>(i.zero_chunks) / static_cast<double>(i.chunk_count) : 0.0);
    std::printf("stored chunks:     %" PRIu64 "\n", stored);
    std::printf("compressed bytes:  %" PRIu64 " (%s)\n", i.compressed_bytes, human_bytes(i.compressed_bytes).c_str());
    std::printf("file bytes:        %" PRIu64 " (%s)\n", i.file_bytes, human_bytes(i.file_bytes).c_str());
    std::printf("compression ratio: %.3f (uncompressed size / file bytes)\n",
                i.file_bytes ? static_cast<double>(i.size) / static_cast<double>(i.file_bytes) : 0.0);
  } catch (const std::exception& e) {
    return fail("inspect", path, e.what());
  }
  return 0;
}

// ---------------------------------------------------------------------------
int verify(int argc, char** argv) {
  std::vector<std::string> positional;
  unsigned threads = 0;
  for (int i = 1; i < argc; ++i) {
    if (is_help(argv[i])) {
      std::fputs(kVerifyUsage, stdout);
      return 0;
    }
    std::string value;
    bool missing = false;
    uint64_t n = 0;
    if (option_value(argc, argv, i, "--threads", value, missing)) {
      if (missing) return usage_error("verify", "--threads needs a value", "verify");
      if (!parse_uint(value, n) || n > 1024)
        return usage_error("verify", "--threads: '" + value + "' is not a number from 0 to 1024", "verify");
      threads = static_cast<unsigned>(n);
    } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
      return usage_error("verify", std::string("unknown option '") + argv[i] + "'", "verify");
    } else {
      positional.push_back(argv[i]);
    }
  }
  if (positional.size() != 1)
    return usage_error("verify", positional.empty() ? "needs FILE" : "too many arguments", "verify");
  const std::string& path = positional[0];

  std::vector<SnapshotReader> readers;
  try {
    readers.push_back(SnapshotReader::open(path));
  } catch (const std::exception& e) {
    return fail("verify", path, e.what());
  }
  const SnapshotInfo info = readers[0].info();
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  threads = static_cast<unsigned>(std::min<uint64_t>(threads, std::max<uint64_t>(1, info.chunk_count)));
  try {
    // One reader per thread: each has its own descriptor and buffers.
    while (readers.size() < threads) readers.push_back(SnapshotReader::open(path));
  } catch (const std::exception& e) {
    return fail("verify", path, e.what());
  }

  // Chunks are handed out in batches from a shared counter, so the threads
  // read the file roughly front to back together.
  constexpr uint64_t kBatch = 16;
  std::atomic<uint64_t> next{0};
  std::atomic<uint64_t> done_bytes{0};
  std::mutex report_mu;
  std::vector<std::pair<uint64_t, std::string>> bad;
  ProgressBar bar("verify");
  const auto t0 = std::chrono::steady_clock::now();
  auto work = [&](const SnapshotReader& reader) {
    std::vector<std::byte> buffer(info.chunk_size);
    for (;;) {
      const uint64_t first = next.fetch_add(kBatch);
      if (first >= info.chunk_count) return;
      const uint64_t last = std::min(info.chunk_count, first + kBatch);
      for (uint64_t c = first; c < last; ++c) {
        uint64_t chunk_bytes = 0;
        try {
          chunk_bytes = reader.chunk_length(c);
          reader.read_chunk(c, std::span<std::byte>(buffer.data(), chunk_bytes));
        } catch (const std::exception& e) {
          std::lock_guard<std::mutex> lock(report_mu);
          bad.emplace_back(c, e.what());
        }
        bar.update(done_bytes.fetch_add(chunk_bytes) + chunk_bytes, info.size);
      }
    }
  };
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads; ++t) pool.emplace_back(work, std::cref(readers[t]));
  work(readers[0]);
  for (auto& t : pool) t.join();
  bar.finish();
  const double secs = seconds_since(t0);

  std::sort(bad.begin(), bad.end());
  constexpr size_t kShown = 20;
  for (size_t k = 0; k < bad.size() && k < kShown; ++k) {
    if (bad[k].second.find(path) != std::string::npos)  // the reader's message names the file and chunk
      std::fprintf(stderr, "faultline snapshot verify: %s\n", bad[k].second.c_str());
    else
      std::fprintf(stderr, "faultline snapshot verify: %s: chunk %" PRIu64 ": %s\n", path.c_str(), bad[k].first,
                   bad[k].second.c_str());
  }
  if (bad.size() > kShown) std::fprintf(stderr, "faultline snapshot verify: %s: ... and %zu more bad chunks\n", path.c_str(), bad.size() - kShown);
  if (!bad.empty()) {
    std::fprintf(stderr, "faultline snapshot verify: %s: FAILED: %zu of %" PRIu64 " chunks bad\n", path.c_str(), bad.size(),
                 info.chunk_count);
    return 1;
  }
  std::printf("%s: ok: %" PRIu64 " chunks (%" PRIu64 " zero), %s checked in %.2f s (%.0f MB/s)\n", path.c_str(),
              info.chunk_count, info.zero_chunks, human_bytes(info.size).c_str(), secs,
              secs > 0 ? static_cast<double>(info.size) / secs / 1e6 : 0.0);
  return 0;
}

}  // namespace

int snapshot_command(int argc, char** argv) {
  if (argc < 2) {
    std::fputs(kSnapshotUsage, stderr);
    return 2;
  }
  const char* sub = argv[1];
  if (is_help(sub) || !std::strcmp(sub, "help")) {
    std::fputs(kSnapshotUsage, stdout);
    return 0;
  }
  if (!std::strcmp(sub, "create")) return create(argc - 1, argv + 1);
  if (!std::strcmp(sub, "inspect")) return inspect(argc - 1, argv + 1);
  if (!std::strcmp(sub, "verify")) return verify(argc - 1, argv + 1);
  return usage_error("", std::string("unknown subcommand '") + sub + "' (create, inspect, verify)", "");
}

}  // namespace faultline::tools

// SPDX-License-Identifier: Apache-2.0
// `faultline snapshot`: create, inspect, verify and flatten compressed snapshots
// (docs/snapshot-format.md). Arguments through CLI11 (tools/cli/cli.h):
//
//   faultline snapshot create INPUT OUTPUT [--chunk-size SIZE] [--level N] [--threads N] [--dictionary SIZE]
//   faultline snapshot inspect FILE|URL [--ca-file PEM] [--insecure] [--auth-file FILE]
//   faultline snapshot verify FILE|URL [--threads N] [--ca-file PEM] [--insecure] [--auth-file FILE]
//   faultline snapshot flatten CHAIN OUTPUT [--level N] [--threads N] [--dictionary SIZE]
//
// A URL (http:// or https://) is read with range requests (HttpBackend).
//
// Long work (create, verify) draws a progress bar on stderr, only when stderr
// is a terminal: logs and pipes get the final summary alone.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cli.h"
#include "commands.h"
#include "faultline/error.h"
#include "faultline/http_backend.h"
#include "url_source.h"
#include "faultline/snapshot.h"

namespace faultline::tools {
namespace {

constexpr const char* kAbout =
    "Compressed memory snapshots: chunks compressed with zstd one by one, an\n"
    "index to read any chunk alone, all-zero chunks stored as a flag.";

constexpr const char* kCreateFooter =
    "Writes a snapshot of INPUT to OUTPUT. OUTPUT appears only when it is\n"
    "complete (it is written to a temporary file, synced, then renamed), so an\n"
    "interrupted run never leaves a half-written snapshot under that name. Its\n"
    "mode is INPUT's read and write bits, narrowed by the umask.\n"
    "\n"
    "INPUT is a regular file or a block device (snapshotted whole); anything\n"
    "else (a FIFO, a directory) is refused. If INPUT changes while it is read\n"
    "(its size, mtime or ctime), nothing is written and the exit status is 1:\n"
    "stop its writer, or snapshot a copy. Writes to a block device's contents,\n"
    "or through a shared mapping, cannot be seen: stop the writer first.\n"
    "\n"
    "SIZE is a number of bytes with an optional suffix K, M, G or T (powers\n"
    "of 1024; KiB and KB mean K too).\n"
    "\n"
    "Exit status: 0 written, 1 failed (the message names the file), 2 bad\n"
    "arguments.";

constexpr const char* kInspectFooter =
    "Checks the header and index of the snapshot FILE and prints them: format\n"
    "version, chunk size, flags, uncompressed size, chunk count, zero chunks,\n"
    "compressed bytes and the compression ratio. Chunk data is not read: use\n"
    "`faultline snapshot verify` for that.\n"
    "\n"
    "An incremental snapshot (format version 2, written by LiveSnapshotter::\n"
    "snapshot_child) names its parent: inspect opens the whole chain, checks\n"
    "every link (the parent exists and has the content id the child names)\n"
    "and prints the image's totals, then one line per layer, newest first:\n"
    "its path, content id, chunks it stores and chunks it leaves to its parent.\n"
    "\n"
    "FILE may be an http:// or https:// URL (read with range requests; see\n"
    "docs/http.md): --ca-file, --insecure and --auth-file apply to it.\n"
    "\n"
    "Exit status: 0 a valid header and index, 1 not (the message says which\n"
    "field) or the output cannot be written, 2 bad arguments.";

constexpr const char* kVerifyFooter =
    "Reads and decompresses every chunk of the snapshot FILE and checks its\n"
    "length and checksum. Prints each bad chunk (index, file offset, problem)\n"
    "on stderr and a summary. FILE may be an http:// or https:// URL, as for\n"
    "`faultline snapshot inspect`.\n"
    "\n"
    "For an incremental snapshot, every layer of the chain is checked: each\n"
    "link first (a missing parent, or one whose content id is not the one the\n"
    "child names, fails naming both files), then every chunk each layer\n"
    "stores, including chunks a newer layer hides.\n"
    "\n"
    "Exit status: 0 every chunk is good, 1 a chunk, the header or the index is\n"
    "bad (or the file cannot be read), 2 bad arguments.";

constexpr const char* kFlattenFooter =
    "Writes the image of CHAIN (an incremental snapshot and its parents, or\n"
    "any snapshot) to OUTPUT as one self-contained snapshot (format version\n"
    "1), with CHAIN's chunk size: each chunk from the newest layer that holds\n"
    "it. Every link is checked first, and every chunk as it is read. OUTPUT\n"
    "appears only when complete (temporary file, fsync, rename).\n"
    "\n"
    "Exit status: 0 written, 1 failed (the message names the layer or file),\n"
    "2 bad arguments.";

std::string human_bytes(uint64_t n) {
  char b[64];
  const double d = static_cast<double>(n);
  if (n >= (1ull << 30)) std::snprintf(b, sizeof b, "%.2f GiB", d / (1ull << 30));
  else if (n >= (1ull << 20)) std::snprintf(b, sizeof b, "%.1f MiB", d / (1ull << 20));
  else if (n >= (1ull << 10)) std::snprintf(b, sizeof b, "%.1f KiB", d / (1ull << 10));
  else std::snprintf(b, sizeof b, "%" PRIu64 " B", n);
  return b;
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

// An Error whose message names `path`: the library's messages usually do;
// where one does not, the path is put in front.
// (A URL's messages name it without its query, which may be a credential:
// they are passed on as they are.)
Error naming(const std::string& path, const std::exception& e) {
  const std::string what = e.what();
  if (is_http_url(path)) return Error(what);
  return Error(what.find(path) != std::string::npos ? what : path + ": " + what);
}

struct CreateArgs {
  std::string input;
  std::string output;
  SnapshotWriteOptions options;
};

int create(CreateArgs& a) {
  ProgressBar bar("create");
  a.options.progress = [&bar](uint64_t done, uint64_t total) { bar.update(done, total); };
  const auto t0 = std::chrono::steady_clock::now();
  try {
    write_snapshot_from_file(a.input, a.output, a.options);
  } catch (const std::exception& e) {
    bar.finish();
    // The message names the input or the output; if neither, name both.
    const std::string what = e.what();
    if (what.find(a.input) != std::string::npos || what.find(a.output) != std::string::npos) throw Error(what);
    throw Error(a.input + " -> " + a.output + ": " + what);
  }
  bar.finish();
  const double secs = seconds_since(t0);
  SnapshotInfo info;
  try {
    info = SnapshotReader::open(a.output).info();
  } catch (const std::exception& e) {
    throw Error(a.output + ": written, but cannot be read back: " + e.what());
  }
  std::printf("%s: %s in %" PRIu64 " chunks of %s (%" PRIu64 " zero), %s on disk, ratio %.2f, %.2f s (%.0f MB/s)\n",
              a.output.c_str(), human_bytes(info.size).c_str(), info.chunk_count, human_bytes(info.chunk_size).c_str(),
              info.zero_chunks, human_bytes(info.file_bytes).c_str(),
              info.file_bytes ? static_cast<double>(info.size) / static_cast<double>(info.file_bytes) : 0.0, secs,
              secs > 0 ? static_cast<double>(info.size) / secs / 1e6 : 0.0);
  return 0;
}

// A reader of the snapshot at `path`, a file or a URL. Readers of a URL
// share one HttpBackend, whose read_range() any thread may call.
SnapshotReader open_reader(const std::string& path, const UrlArgs& u) {
  if (!is_http_url(path)) return SnapshotReader::open(path);
  auto http = u.open(path);
  return SnapshotReader::open(http->name(), http->size(), [http](void* buf, size_t n, uint64_t offset) {
    int64_t got = http->read_range(offset, {static_cast<std::byte*>(buf), n});
    errno = got < 0 ? static_cast<int>(-got) : 0;
    return got == static_cast<int64_t>(n);
  });
}

int inspect(const std::string& path, const UrlArgs& u) {
  try {
    const SnapshotReader reader = open_reader(path, u);
    const SnapshotInfo& i = reader.info();
    const uint64_t stored = i.chunk_count - i.zero_chunks;
    std::printf("file:              %s\n", reader.path().c_str());
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
    std::printf("content id:        %s\n", reader.layers()[0].info.id.c_str());
    if (!i.parent.empty() || reader.layers().size() > 1) {
      std::printf("layers:            %zu (newest first)\n", reader.layers().size());
      for (size_t k = 0; k < reader.layers().size(); ++k) {
        const SnapshotLayer& l = reader.layers()[k];
        const uint64_t held = l.info.chunk_count - l.info.inherited_chunks;
        std::printf("  layer %zu: %s  id %.16s  version %" PRIu32 "  %" PRIu64 " chunks stored, %" PRIu64
                    " from its parent, %s%s%s\n",
                    k, l.path.c_str(), l.info.id.c_str(), l.info.version, held, l.info.inherited_chunks,
                    human_bytes(l.info.file_bytes).c_str(), l.info.parent.empty() ? "" : ", parent ",
                    l.info.parent.c_str());
      }
    }
  } catch (const std::exception& e) {
    throw naming(path, e);
  }
  return 0;
}

// Checks every chunk one file holds (not those it leaves to its parent).
int verify_layer(const std::string& path, unsigned threads, const UrlArgs& u) {
  std::vector<SnapshotReader> readers;
  try {
    readers.push_back(is_http_url(path) ? open_reader(path, u) : SnapshotReader::open_layer(path));
    const uint64_t chunks = readers[0].info().chunk_count;
    if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
    threads = static_cast<unsigned>(std::min<uint64_t>(threads, std::max<uint64_t>(1, chunks)));
    // One reader per thread: each has its own descriptor and buffers.
    while (readers.size() < threads) readers.push_back(is_http_url(path) ? readers[0] : SnapshotReader::open_layer(path));
  } catch (const std::exception& e) {
    throw naming(path, e);
  }
  const SnapshotInfo info = readers[0].info();
  const std::string shown = readers[0].path();  // (a URL without its query)

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
        if (reader.chunk_is_inherited(c)) continue;
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
    if (bad[k].second.find(shown) != std::string::npos)  // the reader's message names the file and chunk
      std::fprintf(stderr, "faultline snapshot verify: %s\n", bad[k].second.c_str());
    else
      std::fprintf(stderr, "faultline snapshot verify: %s: chunk %" PRIu64 ": %s\n", shown.c_str(), bad[k].first,
                   bad[k].second.c_str());
  }
  if (bad.size() > kShown) std::fprintf(stderr, "faultline snapshot verify: %s: ... and %zu more bad chunks\n", shown.c_str(), bad.size() - kShown);
  if (!bad.empty()) {
    std::fprintf(stderr, "faultline snapshot verify: %s: FAILED: %zu of %" PRIu64 " chunks bad\n", shown.c_str(), bad.size(),
                 info.chunk_count);
    return 1;
  }
  std::printf("%s: ok: %" PRIu64 " chunks (%" PRIu64 " zero", shown.c_str(), info.chunk_count - info.inherited_chunks,
              info.zero_chunks);
  if (info.inherited_chunks) std::printf(", %" PRIu64 " more from its parent %s", info.inherited_chunks, info.parent.c_str());
  std::printf("), %s checked in %.2f s (%.0f MB/s)\n", human_bytes(info.size).c_str(), secs,
              secs > 0 ? static_cast<double>(info.size) / secs / 1e6 : 0.0);
  return 0;
}

// A local file: its chain's links first (opening the chain checks them),
// then each layer's chunks. A URL: that one object.
int verify(const std::string& path, unsigned threads, const UrlArgs& u) {
  if (is_http_url(path)) return verify_layer(path, threads, u);
  std::vector<SnapshotLayer> layers;
  try {
    layers = SnapshotReader::open(path).layers();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "faultline snapshot verify: %s: FAILED: %s\n", path.c_str(), naming(path, e).what());
    return 1;
  }
  int rc = 0;
  for (const SnapshotLayer& l : layers) rc |= verify_layer(l.path, threads, u);
  if (rc == 0 && layers.size() > 1)
    std::printf("%s: ok: a chain of %zu layers, every link and every stored chunk checked\n", path.c_str(),
                layers.size());
  return rc;
}

struct FlattenArgs {
  std::string chain;
  std::string output;
  SnapshotWriteOptions options;
};

int flatten(FlattenArgs& a) {
  ProgressBar bar("flatten");
  a.options.progress = [&bar](uint64_t done, uint64_t total) { bar.update(done, total); };
  const auto t0 = std::chrono::steady_clock::now();
  try {
    flatten_snapshot(a.chain, a.output, a.options);
  } catch (const std::exception& e) {
    bar.finish();
    const std::string what = e.what();
    if (what.find(a.chain) != std::string::npos || what.find(a.output) != std::string::npos) throw Error(what);
    throw Error(a.chain + " -> " + a.output + ": " + what);
  }
  bar.finish();
  const SnapshotInfo info = SnapshotReader::open(a.output).info();
  std::printf("%s: %s in %" PRIu64 " chunks (%" PRIu64 " zero), %s on disk, self-contained, %.2f s\n",
              a.output.c_str(), human_bytes(info.size).c_str(), info.chunk_count, info.zero_chunks,
              human_bytes(info.file_bytes).c_str(), seconds_since(t0));
  return 0;
}

}  // namespace

int snapshot_command(int argc, char** argv) {
  CLI::App app(kAbout, "faultline snapshot");
  app.footer("`faultline snapshot SUBCOMMAND --help` describes each one.");

  CreateArgs c;
  CLI::App* create_cmd = app.add_subcommand("create", "snapshot a file or block device");
  create_cmd->footer(kCreateFooter);
  create_cmd->add_option("INPUT", c.input, "the file or block device to snapshot")->required()->type_name("");
  create_cmd->add_option("OUTPUT", c.output, "the snapshot file to write")->required()->type_name("");
  cli::add_size(*create_cmd, "--chunk-size", c.options.chunk_size,
                "bytes per chunk: a power of two from 4K to 4M\n"
                "(default 64K). A restore reads and decompresses\n"
                "whole chunks.",
                4096, 4u << 20)
      ->check(cli::power_of_two());
  create_cmd->add_option("--level", c.options.level,
                         "zstd compression level, 1 to 22 (default 3;\n"
                         "above 19 is slow and needs much memory)")
      ->check(CLI::Range(1, 22).description(""))
      ->type_name("N");
  create_cmd->add_option("--threads", c.options.threads,
                         "compression threads, up to 1024 (default 0:\n"
                         "one per CPU)")
      ->check(CLI::Range(0, 1024).description(""))
      ->type_name("N");
  cli::add_size(*create_cmd, "--dictionary", c.options.dictionary_bytes,
                "largest zstd dictionary to train on a sample of\n"
                "the chunks and store in the snapshot, up to 1M\n"
                "(default 64K; 0: none). Kept only where a held-out\n"
                "sample says it saves more than it costs.",
                0, 1u << 20);
  create_cmd->callback([&c] {
    std::error_code ec;
    if (std::filesystem::equivalent(c.input, c.output, ec))
      throw CLI::ValidationError("INPUT and OUTPUT are the same file: '" + c.output + "'");
  });

  std::string inspect_path;
  CLI::App* inspect_cmd = app.add_subcommand("inspect", "print the header, chunk counts and compression ratio");
  inspect_cmd->footer(kInspectFooter);
  inspect_cmd->add_option("FILE", inspect_path, "the snapshot (a file or an http(s) URL)")->required()->type_name("");
  UrlArgs inspect_url;
  inspect_url.add_to(*inspect_cmd);

  std::string verify_path;
  unsigned verify_threads = 0;
  CLI::App* verify_cmd = app.add_subcommand("verify", "decompress and check every chunk");
  verify_cmd->footer(kVerifyFooter);
  verify_cmd->add_option("FILE", verify_path, "the snapshot (a file or an http(s) URL)")->required()->type_name("");
  UrlArgs verify_url;
  verify_url.add_to(*verify_cmd);
  verify_cmd->add_option("--threads", verify_threads,
                         "checking threads, up to 1024 (default 0: one\n"
                         "per CPU)")
      ->check(CLI::Range(0, 1024).description(""))
      ->type_name("N");

  FlattenArgs f;
  CLI::App* flatten_cmd = app.add_subcommand("flatten", "write a chain of incremental snapshots as one file");
  flatten_cmd->footer(kFlattenFooter);
  flatten_cmd->add_option("CHAIN", f.chain, "the newest snapshot of the chain")->required()->type_name("");
  flatten_cmd->add_option("OUTPUT", f.output, "the self-contained snapshot to write")->required()->type_name("");
  flatten_cmd->add_option("--level", f.options.level, "zstd compression level, 1 to 22 (default 3)")
      ->check(CLI::Range(1, 22).description(""))
      ->type_name("N");
  flatten_cmd->add_option("--threads", f.options.threads, "compression threads, up to 1024 (default 0: one per CPU)")
      ->check(CLI::Range(0, 1024).description(""))
      ->type_name("N");
  cli::add_size(*flatten_cmd, "--dictionary", f.options.dictionary_bytes,
                "largest zstd dictionary to train and store, up\n"
                "to 1M (default 64K; 0: none)",
                0, 1u << 20);

  cli::require_subcommand(app, "subcommand");

  return cli::run(app, argc, argv, [&] {
    if (create_cmd->parsed()) return create(c);
    if (inspect_cmd->parsed()) return inspect(inspect_path, inspect_url);
    if (flatten_cmd->parsed()) return flatten(f);
    return verify(verify_path, verify_threads, verify_url);
  });
}

}  // namespace faultline::tools

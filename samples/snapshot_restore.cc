// SPDX-License-Identifier: Apache-2.0
// snapshot_restore: restore a VM-like memory image from a compressed
// snapshot three ways and run the same guest workload over each.
//
//   eager    decompress the whole snapshot into memory, then run;
//   lazy     map the snapshot with faultline and run at once: every chunk the
//            workload needs is read and decompressed on its first fault
//            (demand faults only, no read-ahead). This run records the
//            chunks it touched, in order, and saves them next to the
//            snapshot as IMAGE.ws;
//   lazy-ws  map, hand the recorded working set to prefetch_chunks() and run
//            at once: the runtime loads the working set in recorded order
//            while the workload runs, so it hardly faults (REAP, ASPLOS'21).
//            --drain also loads the rest of the image in the background.
//
// The image (samples/vm_image.h) has zero runs, compressible and
// incompressible data and a hot working set of about 10%; the workload reads
// every byte of the hot set in a fixed order. For each restore the sample
// prints the time to the first access, the time to finish the workload,
// faults, and bytes read; it checks every page the workload read against the
// generator. A cold restore starts with the snapshot file's pages evicted
// from the page cache (--cold: the whole cache dropped; sample_util.h).
// --snapshot restores a snapshot made earlier instead, from a file or from
// an http(s) URL (a web server or an object store: open_snapshot() below is
// all it takes). Run with --help for the options.
//
// Exit status: 0 success, 1 wrong contents or a failed restore, 2 bad
// arguments.
#include <faultline/faultline.h>
#include <faultline/http_backend.h>
#include <faultline/snapshot.h>
#include <faultline/zstd_snapshot_backend.h>

#include <cli.h>

#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "sample_util.h"
#include "vm_image.h"

namespace {

using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

struct Options {
  uint64_t size = 2ull << 30;
  std::string dir = "/var/tmp/faultline-snapshot-restore";
  uint32_t chunk_size = 64 * 1024;
  int level = 3;
  double fraction = 0.10;
  std::string cache = "both";  // cold, warm or both
  bool cold_global = false;    // --cold: cold runs drop the whole page cache
  unsigned workers = std::max(1u, std::thread::hardware_concurrency());
  bool drain = false;
  bool fresh = false;
  std::string snapshot;  // --snapshot FILE|URL: restore this one instead of making one
};

// A snapshot is a file or an http(s) URL; over HTTP, the reader's reads and
// the backend's chunk reads are range requests (HttpBackend).
faultline::SnapshotReader open_reader(const std::string& snap) {
  if (!faultline::is_http_url(snap)) return faultline::SnapshotReader::open(snap);
  faultline::HttpOptions ho;  // the defaults; ca_file, auth_header... for a real store
  ho.url = snap;
  auto http = std::make_shared<faultline::HttpBackend>(ho);
  return faultline::SnapshotReader::open(http->name(), http->size(), [http](void* buf, size_t n, uint64_t offset) {
    const int64_t got = http->read_range(offset, {static_cast<std::byte*>(buf), n});
    errno = got < 0 ? static_cast<int>(-got) : 0;
    return got == static_cast<int64_t>(n);
  });
}

std::shared_ptr<faultline::ZstdSnapshotBackend> open_snapshot(const std::string& snap,
                                                              const faultline::ZstdSnapshotOptions& zo) {
  if (!faultline::is_http_url(snap)) return std::make_shared<faultline::ZstdSnapshotBackend>(snap, zo);
  faultline::HttpOptions ho;
  ho.url = snap;
  return std::make_shared<faultline::ZstdSnapshotBackend>(faultline::open_http(ho), zo);
}

uint64_t process_faults() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<uint64_t>(ru.ru_minflt + ru.ru_majflt);
}

// CPU time of the whole process (every thread: the application, the fault
// thread, the decompression workers), in milliseconds. On a shared machine
// it says what a restore costs better than the wall clock does.
double process_cpu_ms() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto ms = [](const timeval& tv) { return static_cast<double>(tv.tv_sec) * 1e3 + static_cast<double>(tv.tv_usec) / 1e3; };
  return ms(ru.ru_utime) + ms(ru.ru_stime);
}

// The guest workload: reads every word of the hot extents, in the working
// set's order, into a position-sensitive checksum. `first` is set when the
// first word has been read (the time to first access).
uint64_t run_workload(const std::byte* base, uint64_t size, const std::vector<uint64_t>& hot, Clock::time_point* first) {
  uint64_t acc = 0;
  bool first_done = false;
  for (uint64_t extent : hot) {
    const uint64_t end = std::min(size, extent + vm_image::kExtent);
    for (uint64_t off = extent; off < end; off += 8) {
      const uint64_t w = *reinterpret_cast<const volatile uint64_t*>(base + off);
      acc += w ^ (off * 0x9E3779B97F4A7C15ull);
      if (!first_done) {
        *first = Clock::now();
        first_done = true;
      }
    }
  }
  return acc;
}

uint64_t expected_checksum(uint64_t size, const std::vector<uint64_t>& hot) {
  uint64_t acc = 0;
  for (uint64_t extent : hot) {
    const uint64_t end = std::min(size, extent + vm_image::kExtent);
    for (uint64_t off = extent; off < end; off += 8) acc += vm_image::word_at(off / 8) ^ (off * 0x9E3779B97F4A7C15ull);
  }
  return acc;
}

// Compares every page the workload read with the generator; returns the
// number of wrong pages (and prints the first few).
uint64_t check_pages(const std::byte* base, uint64_t size, const std::vector<uint64_t>& hot, const char* mode) {
  uint64_t wrong = 0;
  for (uint64_t extent : hot)
    for (uint64_t off = extent; off < std::min(size, extent + vm_image::kExtent); off += vm_image::kPage)
      if (!vm_image::page_matches(off, base + off) && ++wrong <= 5)
        std::fprintf(stderr, "snapshot_restore: %s: WRONG CONTENT in the page at offset %llu\n", mode,
                     static_cast<unsigned long long>(off));
  return wrong;
}

struct Result {
  const char* mode = "";
  bool cold = false;
  double first_ms = 0, finish_ms = 0;
  double cpu_ms = 0;              // process CPU time over the restore and workload
  uint64_t runtime_faults = 0, process_faults = 0;
  uint64_t bytes_installed = 0;   // uncompressed bytes placed in memory
  uint64_t compressed_read = 0;   // bytes read from the snapshot file
  uint64_t prefetch_hits = 0;
  uint64_t wrong_pages = 0;
  bool sum_ok = true;
};

Result restore_eager(const std::string& snap, uint64_t size, const std::vector<uint64_t>& hot, uint64_t want) {
  Result r;
  r.mode = "eager";
  const uint64_t f0 = process_faults();
  const double c0 = process_cpu_ms();
  const auto t0 = Clock::now();
  faultline::SnapshotReader first_reader = open_reader(snap);
  const faultline::SnapshotInfo info = first_reader.info();
  void* mem = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) throw faultline::Error("eager: cannot allocate " + std::to_string(size) + " bytes", errno);
  auto* base = static_cast<std::byte*>(mem);
  // Every chunk, decompressed by one thread per CPU, each with its own
  // reader. Zero chunks are skipped: fresh anonymous memory is zero.
  const unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  std::atomic<uint64_t> next{0};
  std::atomic<bool> failed{false};
  std::string error;
  auto work = [&](const faultline::SnapshotReader& reader) {
    try {
      for (uint64_t c; (c = next.fetch_add(1)) < info.chunk_count && !failed.load();) {
        if (reader.chunk_is_zero(c)) continue;
        const uint64_t off = c * info.chunk_size;
        reader.read_chunk(c, std::span<std::byte>(base + off, std::min<uint64_t>(info.chunk_size, size - off)));
      }
    } catch (const std::exception& e) {
      if (!failed.exchange(true)) error = e.what();
    }
  };
  std::vector<faultline::SnapshotReader> readers;
  for (unsigned t = 1; t < threads; ++t) readers.push_back(open_reader(snap));
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads; ++t) pool.emplace_back(work, std::cref(readers[t - 1]));
  work(first_reader);
  for (auto& t : pool) t.join();
  if (failed) {
    munmap(mem, size);
    throw faultline::Error("eager restore of " + snap + ": " + error);
  }
  Clock::time_point first;
  const uint64_t sum = run_workload(base, size, hot, &first);
  const auto t1 = Clock::now();
  r.first_ms = ms_between(t0, first);
  r.finish_ms = ms_between(t0, t1);
  r.cpu_ms = process_cpu_ms() - c0;
  r.process_faults = process_faults() - f0;
  r.bytes_installed = size;
  r.compressed_read = info.compressed_bytes;
  r.sum_ok = sum == want;
  r.wrong_pages = check_pages(base, size, hot, "eager");
  munmap(mem, size);
  return r;
}

// lazy (ws == nullptr: demand faults only, records the working set to
// ws_path) or lazy-ws (prefetches *ws first).
Result restore_lazy(const std::string& snap, uint64_t size, const std::vector<uint64_t>& hot, uint64_t want,
                    const Options& o, const faultline::WorkingSet* ws, const std::string& ws_path) {
  Result r;
  r.mode = ws ? "lazy-ws" : "lazy";
  const uint64_t f0 = process_faults();
  const double c0 = process_cpu_ms();
  const auto t0 = Clock::now();
  faultline::ZstdSnapshotOptions zo;
  zo.workers = o.workers;
  auto backend = open_snapshot(snap, zo);
  faultline::Runtime runtime;
  faultline::RegionOptions ro;
  ro.fill_size = std::min<uint32_t>(o.chunk_size, 2u << 20);
  ro.readahead = false;        // lazy: demand faults only
  ro.record_touches = true;    // lazy: the working set to save; lazy-ws: what it still faulted on
  faultline::Region region = runtime.map(backend, ro);
  if (ws) {
    region.prefetch_chunks(ws->offsets);
    if (o.drain) region.drain();
  }
  Clock::time_point first;
  const uint64_t sum = run_workload(region.data(), size, hot, &first);
  const auto t1 = Clock::now();
  r.first_ms = ms_between(t0, first);
  r.finish_ms = ms_between(t0, t1);
  r.cpu_ms = process_cpu_ms() - c0;
  const faultline::StatsSnapshot s = region.stats();
  r.runtime_faults = s.faults;
  r.process_faults = process_faults() - f0;
  r.bytes_installed = s.bytes_installed;
  r.prefetch_hits = s.prefetch_hits;
  r.sum_ok = sum == want;
  r.wrong_pages = check_pages(region.data(), size, hot, r.mode);

  r.compressed_read = backend->counters().compressed_bytes_read;
  if (!ws) {
    // What this run touched, in first-touch order: the next restore's working set.
    faultline::WorkingSet record;
    record.fill_size = ro.fill_size;
    record.region_length = region.size();
    record.offsets = region.touched_chunks();
    faultline::save_working_set(ws_path, record);
  }
  return r;
}

void print_row(const Result& r) {
  std::printf("%-8s %-5s %10.2f %10.2f %9.1f %10llu %10llu %12.1f %12.1f %8llu  %s\n", r.mode, r.cold ? "cold" : "warm",
              r.first_ms, r.finish_ms, r.cpu_ms, static_cast<unsigned long long>(r.runtime_faults),
              static_cast<unsigned long long>(r.process_faults), static_cast<double>(r.bytes_installed) / (1 << 20),
              static_cast<double>(r.compressed_read) / (1 << 20), static_cast<unsigned long long>(r.prefetch_hits),
              r.sum_ok && r.wrong_pages == 0 ? "ok" : "WRONG CONTENT");
  std::fflush(stdout);
}

void on_sigbus(int) {
  const char msg[] = "snapshot_restore: SIGBUS: the runtime could not serve a page (corrupt or unreadable snapshot?)\n";
  ssize_t n = write(STDERR_FILENO, msg, sizeof msg - 1);
  (void)n;
  _exit(1);
}

// Makes the image in memory (never on disk) and snapshots it.
void make_snapshot(const Options& o, const std::string& snap) {
  std::printf("making a %.2f GiB VM-like image and snapshotting it to %s ...\n",
              static_cast<double>(o.size) / (1ull << 30), snap.c_str());
  std::fflush(stdout);
  void* mem = mmap(nullptr, o.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) throw faultline::Error("cannot allocate the image (" + std::to_string(o.size) + " bytes)", errno);
  auto* base = static_cast<std::byte*>(mem);
  const auto t0 = Clock::now();
  const unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::thread> pool;
  const uint64_t pages = o.size / vm_image::kPage;
  for (unsigned t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      const uint64_t lo = pages * t / threads, hi = pages * (t + 1) / threads;
      for (uint64_t p = lo; p < hi; ++p)
        if (vm_image::kind_at(p * vm_image::kPage) != vm_image::Kind::kZero)  // fresh memory is zero already
          vm_image::fill_page(p * vm_image::kPage, base + p * vm_image::kPage);
    });
  for (auto& t : pool) t.join();
  const auto t1 = Clock::now();
  faultline::SnapshotWriteOptions wo;
  wo.chunk_size = o.chunk_size;
  wo.level = o.level;
  try {
    faultline::write_snapshot(std::span<const std::byte>(base, o.size), snap, wo);
  } catch (...) {
    munmap(mem, o.size);
    throw;
  }
  const auto t2 = Clock::now();
  munmap(mem, o.size);
  std::printf("  image generated in %.2f s, snapshot written in %.2f s\n", ms_between(t0, t1) / 1e3,
              ms_between(t1, t2) / 1e3);
}

int run(Options o) {
  struct sigaction sa {};
  sa.sa_handler = on_sigbus;
  sigaction(SIGBUS, &sa, nullptr);

  if (mkdir(o.dir.c_str(), 0755) != 0 && errno != EEXIST) faultline::throw_errno("cannot create --dir " + o.dir, errno);
  const bool url = faultline::is_http_url(o.snapshot);
  const std::string snap = !o.snapshot.empty() ? o.snapshot
                                               : o.dir + "/vm-image-v1-" + std::to_string(o.size) + "-" +
                                                     std::to_string(o.chunk_size) + "-l" + std::to_string(o.level) +
                                                     ".flsnap";
  // A URL's working set is kept in --dir, named after the URL's last segment.
  const std::string no_query = snap.substr(0, snap.find('?'));
  const std::string ws_path = url ? o.dir + "/" + no_query.substr(no_query.rfind('/') + 1) + ".ws" : snap + ".ws";
  {
    bool reuse = !o.snapshot.empty();
    if (!reuse && !o.fresh && access(snap.c_str(), F_OK) == 0) {
      try {
        const faultline::SnapshotInfo info = faultline::SnapshotReader::open(snap).info();
        reuse = info.size == o.size && info.chunk_size == o.chunk_size;
      } catch (const std::exception& e) {
        std::printf("existing %s is unusable (%s): making it again\n", snap.c_str(), e.what());
      }
    }
    if (!reuse) make_snapshot(o, snap);
    else if (o.snapshot.empty()) std::printf("reusing %s (--fresh makes it again)\n", snap.c_str());
    const faultline::SnapshotInfo info = open_reader(snap).info();
    o.size = info.size;  // (--snapshot: the image's size and chunk size are the snapshot's)
    o.chunk_size = info.chunk_size;
    std::printf("snapshot: %.2f GiB image, %llu chunks of %u KiB (%llu zero), %.1f MiB on disk (ratio %.2f)\n",
                static_cast<double>(info.size) / (1ull << 30), static_cast<unsigned long long>(info.chunk_count),
                info.chunk_size / 1024, static_cast<unsigned long long>(info.zero_chunks),
                static_cast<double>(info.file_bytes) / (1 << 20),
                static_cast<double>(info.size) / static_cast<double>(info.file_bytes));

    const std::vector<uint64_t> hot = vm_image::hot_extents(o.size, o.fraction);
    const uint64_t want = expected_checksum(o.size, hot);
    std::printf("workload: reads every byte of %zu hot 64 KiB extents (%.1f MiB, %.1f%% of the image)\n", hot.size(),
                static_cast<double>(hot.size() * vm_image::kExtent) / (1 << 20),
                100.0 * static_cast<double>(hot.size() * vm_image::kExtent) / static_cast<double>(o.size));
    if (url) std::printf("over HTTP: the server's cache is its own, the restores run warm only\n");
    else if (o.cache != "warm") std::printf("%s\n", sample::cold_note(snap, o.cold_global).c_str());
    std::printf("\n%-8s %-5s %10s %10s %9s %10s %10s %12s %12s %8s  %s\n", "restore", "cache", "first ms", "finish ms",
                "cpu ms", "rt faults", "pg faults", "installedMiB", "snap readMiB", "pf hits", "check");
    bool all_ok = true;
    for (bool cold : {true, false}) {
      if ((o.cache != "both" && o.cache != (cold ? "cold" : "warm")) || (cold && url)) continue;
      auto prepare = [&] {
        if (url) return;
        if (cold) sample::start_cold(snap, o.cold_global);
        else sample::warm_file(snap);
      };
      std::vector<Result> rows;
      prepare();
      rows.push_back(restore_eager(snap, o.size, hot, want));
      prepare();
      rows.push_back(restore_lazy(snap, o.size, hot, want, o, nullptr, ws_path));
      const faultline::WorkingSet ws = faultline::load_working_set(ws_path);
      prepare();
      rows.push_back(restore_lazy(snap, o.size, hot, want, o, &ws, ws_path));
      for (Result& r : rows) {
        r.cold = cold;
        print_row(r);
        all_ok = all_ok && r.sum_ok && r.wrong_pages == 0;
      }
      const double lazy = rows[1].finish_ms, ws_ms = rows[2].finish_ms, eager = rows[0].finish_ms;
      std::printf("  %s: lazy-ws finishes %.2fx faster than lazy, %.2fx faster than eager\n", cold ? "cold" : "warm",
                  lazy / ws_ms, eager / ws_ms);
    }
    std::printf(
        "\nfirst ms: restore start to the first word read; finish ms: to the end of the workload;\n"
        "cpu ms: CPU time of the process (all its threads) over the same span.\n"
        "rt faults: faults the runtime served; pg faults: the process's page faults (eager: first touches of\n"
        "the memory it decompresses into). installedMiB: uncompressed bytes placed; snap readMiB: snapshot\n"
        "file bytes read (the backend's count; with --drain it includes the drain's reads so far).\n"
        "working set: %s\n",
        ws_path.c_str());
    if (!all_ok) throw faultline::Error("some restores returned wrong contents");
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  namespace cli = faultline::cli;
  Options o;
  CLI::App app(
      "Makes a VM-like memory image, snapshots it with faultline's zstd snapshot\n"
      "writer (reused on later runs), then restores it three ways and runs the same\n"
      "workload over each: eager (decompress everything, then run), lazy (demand\n"
      "faults only; records the working set to IMAGE.ws) and lazy-ws (prefetch the\n"
      "recorded working set while the workload runs). Every page read is checked.",
      "snapshot_restore");
  app.footer("Exit status: 0 every page right; 1 wrong contents or a failed restore; 2 bad arguments.");
  cli::add_version(app, "snapshot_restore");
  cli::add_size(app, "--size", o.size, "image size, a multiple of 1M (default 2G)", 1u << 20)
      ->check(cli::multiple_of(1u << 20));
  app.add_option("--dir", o.dir, "where the snapshot and working set live\n(default /var/tmp/faultline-snapshot-restore)")
      ->type_name("DIR");
  cli::add_size(app, "--chunk-size", o.chunk_size, "snapshot chunk size, a power of two from 4K\nto 4M (default 64K)",
                4096, 4u << 20)
      ->check(cli::power_of_two());
  app.add_option("--level", o.level, "zstd level, 1 to 19 (default 3)")
      ->check(CLI::Range(1, 19).description(""))
      ->type_name("N");
  app.add_option("--fraction", o.fraction, "hot working set, a fraction of the image in\n(0, 1] (default 0.10)")
      ->check(CLI::Validator(
          [](std::string& text) {
            char* end = nullptr;
            const double f = std::strtod(text.c_str(), &end);
            return !text.empty() && *end == 0 && f > 0 && f <= 1 ? std::string() : "expected a number in (0, 1], got '" + text + "'";
          },
          ""))
      ->type_name("F");
  app.add_option("--cache", o.cache,
                 "cold (the snapshot file's pages evicted before\n"
                 "each restore), warm (the file read into the page\n"
                 "cache first) or both (default)")
      ->check(CLI::IsMember({"cold", "warm", "both"}).description(""))
      ->type_name("MODE");
  CLI::Option* cold = sample::add_cold_flag(app, o.cold_global);
  app.add_option("--workers", o.workers,
                 "decompression threads of the lazy restores, 1 to\n"
                 "64 (default: one per CPU, as many as the eager\nrestore uses)")
      ->check(CLI::Range(1, 64).description(""))
      ->type_name("N");
  app.add_flag("--drain", o.drain, "lazy-ws also loads the rest of the image in the\nbackground");
  app.add_flag("--fresh", o.fresh, "make a new image and snapshot even if one is there");
  app.add_option("--snapshot", o.snapshot,
                 "restore this snapshot (made by an earlier run) instead:\n"
                 "a file, or an http:// or https:// URL of one (a web\n"
                 "server, an object store); its size and chunk size\n"
                 "replace --size and --chunk-size; over HTTP, warm only")
      ->type_name("FILE|URL");
  app.callback([&o, cold] {
    if (cold->count() && o.cache == "warm") throw CLI::ValidationError("--cold", "needs cold runs (--cache cold or both)");
    if (faultline::is_http_url(o.snapshot) && o.cache == "cold")
      throw CLI::ValidationError("--cache", "cold does not apply to a URL (the server's cache is its own)");
  });
  return cli::run(app, argc, argv, [&] { return run(o); });
}

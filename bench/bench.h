// SPDX-License-Identifier: Apache-2.0
// faultline-bench: shared declarations.
//
// The workload functions (workloads.cc) take a plain (base, size) view of the
// data and are used unchanged for every configuration: mmap variants, the
// faultline runtime and the bench's own userfaultfd floors.
#pragma once

#include <cstddef>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace faultline {
class Backend;
struct StatsSnapshot;
}

namespace fbench {

constexpr size_t kPage = 4096;
constexpr size_t kWordsPerPage = kPage / sizeof(uint64_t);

// ---------------------------------------------------------------------------
// Dataset content: word i of the file is data_word(i). Deterministic,
// pseudo-random, every byte non-zero (so no page is ever all zero).
inline uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
inline uint64_t data_word(uint64_t word_index) {
  return mix64(word_index ^ 0x66617565746C696Eull) | 0x0101010101010101ull;
}
// The one word the workloads read from page p: word (p mod 512) of the page,
// so a page installed at the wrong address gives a wrong sum.
inline uint64_t probe_word_index(uint64_t page) {
  return page * kWordsPerPage + (page % kWordsPerPage);
}

// Small deterministic generator (splitmix64 stream).
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed) {}
  uint64_t next() { return mix64(s++ * 0xD1B54A32D192ED03ull); }
  // uniform in [0, n)
  uint64_t below(uint64_t n) { return static_cast<uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64); }
  double unit() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
};

// ---------------------------------------------------------------------------
// Workloads.
// kRestore runs over the VM-like image of samples/vm_image.h (zstd
// snapshot configurations only): every page of its hot working set, in the
// guest's order.
// kVmRestore reads the same pages of the same image, in a process playing a
// VMM, through an external page-fault handler (vm_restore_runs.cc).
// kMigrate migrates a --size region written by threads on a 5% hot set to
// another process (migrate_runs.cc); kLiveSnapshot snapshots a --size
// region while threads write it (live_snapshot_runs.cc). Their plans are empty.
enum class Workload { kSeq, kRand, kZipf, kMtRand, kCopy, kReserve, kRestore, kBudgetZipf, kBudgetRand,
                      kWriteFlush, kVmRestore, kMigrate, kLiveSnapshot };
const char* workload_name(Workload w);

struct Plan {
  Workload workload = Workload::kSeq;
  size_t npages = 0;              // pages in the dataset
  std::vector<uint32_t> pages;    // access order (rand, zipf, mt-rand)
  int threads = 1;                // mt-rand: pages are split in `threads` contiguous slices
  bool time_each = false;         // per-access latency (rand, mt-rand)
  uint64_t expected_sum = 0;
  size_t warmup = 0;              // budget workloads: the first `warmup` pages are touched untimed
  size_t accesses() const {
    return workload == Workload::kSeq || workload == Workload::kCopy ? npages : pages.size() - warmup;
  }
};

struct PlanParams {
  size_t npages = 0;
  double fraction = 0.10;  // rand/zipf/mt-rand: pages (accesses) = fraction * npages
  double zipf_s = 1.0;
  int threads = 4;
  uint64_t seed = 1;
  size_t budget_npages = 0;  // budget workloads: pages of the dataset they use (0: all)
};
Plan make_plan(Workload w, const PlanParams& p);

// Output of one workload execution. lat_ns is filled (one entry per access)
// when plan.time_each; it must be sized by the caller (prepare_output) so
// that no allocation or first-touch happens inside the timed window.
struct WorkOutput {
  uint64_t sum = 0;
  std::vector<uint64_t> lat_ns;
};
void prepare_output(const Plan& plan, WorkOutput& out);

// The shared workload code. Reads one 8-byte word per touched page and sums.
uint64_t touch_seq(const std::byte* base, size_t size);
uint64_t touch_pages(const std::byte* base, size_t size, const uint32_t* pages, size_t n, uint64_t* lat_ns);
// Dispatches on plan.workload (seq, rand, zipf, mt-rand).
void run_workload(const std::byte* base, size_t size, const Plan& plan, WorkOutput& out);

// ---------------------------------------------------------------------------
// System helpers (sysutil.cc).
double now_s();
uint64_t now_ns();
struct MemStatus {
  uint64_t rss_kb = 0;
  uint64_t hwm_kb = 0;
};
MemStatus read_mem_status();
bool reset_hwm();  // echo 5 > /proc/self/clear_refs
// sync; echo 3 > /proc/sys/vm/drop_caches. Returns "" or the error.
std::string drop_caches();
// Fraction (0..1) of the file's pages in the page cache (mincore); -1 on error.
double cached_fraction(const std::string& path);
// MiB of the file in the page cache (mincore on a fresh mapping); -1 on error.
double cached_mb(const std::string& path);
// Reads the whole file through the page cache (if not fully cached already).
void warm_file(const std::string& path);
struct Faults {
  uint64_t minflt = 0, majflt = 0;
};
Faults read_faults();

// Dataset file: creates or reuses `path` of `size` bytes. Returns the message
// describing what was done.
std::string ensure_dataset(const std::string& path, uint64_t size);
// Reads the file into fresh anonymous memory (caller munmaps with size).
std::byte* load_dataset(const std::string& path, uint64_t size);

struct MachineInfo {
  std::string cpu_model, kernel, date, hostname;
  int cores = 0;
  uint64_t mem_total_kb = 0;
  std::string thp;
  std::string disk;        // block device holding the dataset directory
  long read_ahead_kb = -1; // its read-ahead setting (drives mmap's cold behaviour)
};
MachineInfo machine_info(const std::string& dir);
// The 1-minute load average (other work on the machine makes numbers noisy).
double loadavg1();

// What a migrate run reports beside its total time (the migration's
// metrics, faultline/migration.h, and the destination's check); NAN or 0
// where the mode has none (pre-copy: no requests).
struct MigrateFigures {
  bool measured = false;
  double downtime_ms = NAN, blocked_ms = NAN, request_p50_us = NAN, request_p99_us = NAN;
  double bytes_sent = NAN, rounds = NAN;
  uint64_t lost_writes = 0, wrong_words = 0;
  double dest_peak_mb = NAN;  // the destination process's VmHWM
};

// What a live-snapshot run reports beside its seconds (live_snapshot_runs.cc).
struct LiveSnapFigures {
  bool measured = false;
  double file_bytes = NAN, max_stall_ms = NAN, writer_rate_ratio = NAN, protect_ms = NAN, held_writes = NAN;
  double dirty_bytes = NAN;  // snapshot-incremental: the written chunks, each compressed alone
  // snapshot-live: the least the instant can take on this machine (write-
  // protecting just the chunks the writers keep writable), and its two ways.
  double floor_chunks_ms = NAN, floor_range_ms = NAN;
};

// ---------------------------------------------------------------------------
// One measured run.
struct RunResult {
  bool ok = true;                 // sum matched, no error
  std::string error;
  double seconds = 0;             // timed window (map/advise + workload)
  double first_access_us = -1;    // vm-restore: from the start of the restore to the first page read
  MigrateFigures migrate;         // migrate: seconds is its total_s
  LiveSnapFigures live_snapshot;  // live-snapshot: seconds is the snapshot's
  uint64_t bytes = 0;             // accesses * 4 KiB (seq/copy: dataset size)
  uint64_t accesses = 0;
  uint64_t faults = 0;            // runtime/handler faults, or minflt+majflt for mmap
  uint64_t minflt = 0, majflt = 0;
  std::vector<uint64_t> lat_ns;   // per-access latency (rand, mt-rand)
  uint64_t rss_before_kb = 0;     // before the mapping / runtime is created
  uint64_t rss_after_kb = 0;      // after the workload, before teardown
  uint64_t peak_rss_kb = 0;       // VmHWM after the run (reset before it)
  bool cache_dropped = false;     // cold: drop_caches succeeded
  double cached_before = -1;      // page-cache residency of the file before the run
  double cache_after_mb = -1;     // MiB of the file in the page cache after the run (file-backed cases)
  // faultline only
  bool has_rt = false;
  uint64_t rt_faults = 0, rt_pages_installed = 0, rt_bytes_installed = 0, rt_bytes_read = 0;
  uint64_t rt_readahead_chunks = 0, rt_readahead_hits = 0, rt_zero_pages = 0, rt_errors = 0;
  uint64_t rt_lat_p50_ns = 0, rt_lat_p99_ns = 0, rt_lat_max_ns = 0;
  std::string rt_json;
  // fault service time (message read to wake): the runtime's histogram, or
  // the textbook handler's own measurement
  bool has_service = false;
  uint64_t svc_p50_ns = 0, svc_p99_ns = 0;
  // uffd floors
  uint64_t installed_bytes = 0;   // bytes placed by UFFDIO_COPY (floors, faultline)
  // budget workloads (budget_runs.cc)
  uint64_t budget_bytes = 0;      // the memory budget of the run
  uint64_t memory_peak_kb = 0;    // memory the run used at its peak: faultline VmHWM - RSS before the
                                  // runtime; mmap-cgroup the cgroup's peak usage (page cache included)
  uint64_t rt_evicted_chunks = 0, rt_refaults = 0;
};

// Options of the extra configurations faultline-file-custom and
// faultline-memory-custom (--custom), for tuning experiments.
struct CustomOptions {
  uint32_t fill_size = 64 * 1024;
  bool readahead = true;
  uint64_t readahead_max = 4 * 1024 * 1024;
  bool direct = false;        // FileBackend O_DIRECT
  uint32_t queue_depth = 64;  // FileBackend queue depth
  uint32_t background_reads = 0;  // FileBackend background reads in the ring (0: its default)
  bool keep_cache = false;        // FileBackend keeps the page cache
  uint64_t staging_bytes = 16 * 1024 * 1024;
  std::string spec;           // as given
};

// Context shared by all runners.
struct Context {
  CustomOptions custom;
  std::string path;                 // dataset file
  uint64_t size = 0;                // dataset size
  const std::byte* mem = nullptr;   // in-memory copy (memory configs, floors)
  std::string dir;                  // for scratch files (sparse 1 TiB file)
  // faultline-remote*: the page server process's endpoints (remote_runs.cc)
  std::string remote_tcp, remote_unix;
  // faultline-http*: URLs of the dataset file and of the VM image's snapshot
  // (restore) on the bench's nginx (http_runs.cc)
  std::string http_dataset_url, http_vm_snap_url;
  uint64_t budget_data = 0;         // budget workloads: bytes of the dataset they use (its start)
  // zstd snapshots (zstd_runs.cc, prepare_zstd()).
  std::string snap_path;            // snapshot of the dataset file (faultline-zstd)
  std::string vm_snap_path;         // snapshot of the VM-like image (restore workload)
  std::string vm_ws_path;           // its recorded working set
  std::string vm_chain_path;        // the newest layer of the image's 10-layer chain (kChainLazy)
  std::vector<std::string> vm_chain_layers;  // every layer, oldest first
  std::string vm_flat_path;         // that chain flattened (kFlatLazy)
  uint64_t vm_seq_sum = 0;          // sum of every page's probe word of the image (zstd-full)
  unsigned zstd_workers = 1;        // ZstdSnapshotOptions::workers of every zstd run (--zstd-workers)
  // vm-restore (vm_restore_runs.cc)
  double vm_fraction = 0.10;        // the hot working set's share of the image (--fraction)
  std::string vm_raw_path;          // the VM-like image as a raw guest memory file
  std::string vm_handle_ws_path;    // faultline handle's working sets, on the raw image and on its snapshot
  std::string vm_handle_zstd_ws_path;
  std::string cli_path;             // the faultline program (faultline handle)
  std::string migration_path;       // samples/live_migration (migrate)
};

// Thread placement (--pin). Runners call pin_service() right before they
// create the thread that serves faults (the Runtime, the textbook handler):
// a new thread inherits the creating thread's CPU affinity. They call
// pin_app() right after, before the workload (whose threads inherit it).
// none: nothing is pinned; same: everything on CPU 0; split: the service
// thread on CPU 1, the application on CPU 0.
enum class Pin { kNone, kSame, kSplit };
void set_pin_mode(Pin p);
void pin_service();
void pin_app();
void pin_reset();

// Called by runners after the workload, before teardown: records RSS/HWM.
void capture_after(RunResult& r);

// ---------------------------------------------------------------------------
// Userfaultfd floors (uffd_floor.cc).
int open_uffd(int flags, bool* via_dev, std::string* err);
RunResult run_uffd_textbook(const Context& ctx, const Plan& plan);
RunResult run_uffdio_copy_bulk(const Context& ctx, const Plan& plan, size_t chunk);

// ---------------------------------------------------------------------------
// mmap runs (mmap_runs.cc). A fresh mapping of the dataset file per run.
enum class MmapConfig { kNormal, kSeq, kRand, kWillneed, kPopulate };
RunResult run_mmap(const Context& ctx, MmapConfig cfg, const Plan& plan);

// ---------------------------------------------------------------------------
// Memory-budget runs (budget_runs.cc): the dataset is 4x the budget.
enum class BudgetConfig { kAdaptive, kFifo, kMmapCgroup };
inline uint64_t budget_for(uint64_t data_bytes) { return data_bytes / 4; }
constexpr uint64_t kStagingBytes = 4 << 20;  // RuntimeOptions.staging_bytes of the faultline budget runs
RunResult run_budget(const Context& ctx, BudgetConfig cfg, const Plan& plan);

// ---------------------------------------------------------------------------
// faultline runs (faultline_runs.cc).
enum class FlConfig { kFile, kMemory, kMemory4k, kFileCustom, kMemoryCustom, kRemote, kRemote4k, kRemoteUnix, kHttp,
                      kHttp4k, kFileShared, kMemoryShared };
// Describes the runtime's uffd mode, or throws faultline::Error.
std::string faultline_mode();
RunResult run_faultline(const Context& ctx, FlConfig cfg, const Plan& plan);
// Copies a region's statistics into r (faults, bytes, read-ahead, service
// latency, the runtime's JSON); installed_bytes = bytes installed.
void record_runtime_stats(RunResult& r, const faultline::StatsSnapshot& s);

// ---------------------------------------------------------------------------
// faultline-remote runs (remote_runs.cc): a PageServer in a child process
// serving an in-memory copy of the dataset over loopback TCP and a Unix socket.
struct RemoteServerProcess {
  int pid = -1;
  int control_fd = -1;  // closing it tells the child to stop
  int report_fd = -1;   // the child's endpoints, then its statistics
  std::vector<std::string> endpoints;
};
// Forks the server process. Must be called while this process has one thread
// (before the runtime or the watchdog starts one). Returns "" or an error.
std::string start_remote_server(const Context& ctx, RemoteServerProcess& server);
// Stops it and returns its statistics line (or what went wrong).
std::string stop_remote_server(RemoteServerProcess& server);
bool is_remote(FlConfig cfg);
// A RemoteBackend connected to the server process (ctx.remote_tcp or ctx.remote_unix).
std::shared_ptr<faultline::Backend> make_remote_backend(const Context& ctx, FlConfig cfg);

// ---------------------------------------------------------------------------
// faultline-http runs (http_runs.cc): an HttpBackend with its default
// options reading the dataset file (or, restore, the VM image's snapshot)
// from a private nginx on loopback that setup.cc starts.
bool is_http(FlConfig cfg);
std::shared_ptr<faultline::Backend> make_http_backend(const std::string& url);

// ---------------------------------------------------------------------------
// zstd snapshot runs (zstd_runs.cc).
//   kFaultline: the dataset's snapshot served to a Region (the access workloads);
//   restore workload over the VM-like image's snapshot:
//   kEager: decompress every chunk into memory (a thread per CPU), then run;
//   kLazy: map and run, demand faults only;
//   kLazyWs: map, prefetch_chunks(the recorded working set), run;
//   kFull: map, prefetch everything, read every page (sequential restore);
//   kChainLazy, kFlatLazy: kLazy over a chain of 10 live snapshots of the
//   image (a full one and 9 children, each re-storing a ninth of the
//   chunks) and over that chain flattened into one file (issue #14).
enum class ZstdConfig { kFaultline, kEager, kLazy, kLazyWs, kFull, kChainLazy, kFlatLazy };

struct ZstdSetup {
  std::string message;               // what was made or reused, for the header lines
  bool have_vm = false;
  uint64_t vm_snapshot_bytes = 0;    // file size of the VM image's snapshot
  uint64_t vm_zstd3_bytes = 0;       // `zstd -3` of the whole image (0: not measured)
  std::string zstd3_error;           // why not
  uint64_t ws_chunks = 0;            // chunks in the recorded working set
};
// Makes (or reuses, in ctx.dir) what the selected zstd runs need: the
// dataset's snapshot, the VM image's snapshot, its working set (recorded by
// one untimed lazy run of the restore plan) and the `zstd -3` size of the
// image; with `chain`, the image's 10-layer chain and its flattening too.
// Throws on failure.
ZstdSetup prepare_zstd(Context& ctx, bool dataset_snapshot, bool vm_image, const Plan* restore_plan,
                       bool chain = false);
// The plan of the restore workload: every page of the hot working set
// (fraction of the image, vm_image::hot_extents) in the guest's order. The
// same for every repeat: a working set is only worth recording if the next
// restore touches the same memory.
Plan make_restore_plan(size_t npages, double fraction);
// over_http: the snapshot is read from ctx.http_vm_snap_url (faultline-http's
// restore) instead of the local file.
RunResult run_zstd(const Context& ctx, ZstdConfig cfg, const Plan& plan, bool over_http = false);

// ---------------------------------------------------------------------------
// vm-restore runs (vm_restore_runs.cc): a VMM process restores the VM-like
// image through a page-fault handler process, Firecracker's way.
//   kFcExample: the behaviour of Firecracker's example on-demand handler
//               (one 4 KiB UFFDIO_COPY per fault from the mapped file);
//   kFcFile: no handler, the memory file mapped MAP_PRIVATE;
//   kHandle / kHandleWs / kHandleZstdWs: faultline handle on the raw image,
//               the same with a recorded working set, and on the snapshot.
enum class VmConfig { kFcExample, kFcFile, kHandle, kHandleWs, kHandleZstdWs };
// Writes (or reuses) ctx.vm_raw_path and records faultline handle's working
// sets (one untimed restore each); needs ctx.vm_snap_path. Returns what it did.
std::string prepare_vm_restore(Context& ctx);
RunResult run_vm_restore(const Context& ctx, VmConfig cfg);
// The processes the runs start (faultline-bench --fc-example-handler SOCKET
// RAW, --vm-restore-vmm socket|file TARGET SIZE FRACTION); exit statuses.
int fc_example_handler_main(const std::string& socket_path, const std::string& raw_path);
int vm_restore_vmm_main(const std::string& how, const std::string& target, uint64_t size, double fraction);

// ---------------------------------------------------------------------------
// migrate runs (migrate_runs.cc): samples/live_migration, the real
// workload, run as a child: writers on a 5% hot set of a ctx.size region at
// kMigrateWriteRate page writes per second, migrated over loopback TCP to
// the process it forks, which carries on and checks every word.
enum class MigrateConfig { kPrecopy, kPostcopy, kHybrid };
constexpr uint64_t kMigrateWriteRate = 1270000;  // QEMU's reference run (issue #13)
RunResult run_migrate(const Context& ctx, MigrateConfig cfg);

// ---------------------------------------------------------------------------
// live-snapshot runs (live_snapshot_runs.cc): LiveSnapshotter over a --size
// region of the VM-like image, two writers on a 5% hot set.
enum class LiveSnapConfig { kStop, kLive, kIncremental, kLiveNice0 };
RunResult run_live_snapshot(const Context& ctx, LiveSnapConfig cfg);

struct ReserveResult {
  bool ok = true;
  std::string error;
  double runtime_ms = 0;      // Runtime construction (faultline only)
  double map_ms = 0;          // mmap / Runtime::map of 1 TiB
  double unmap_ms = 0;        // teardown
  double rss_map_mb = 0;      // RSS increase across the map call
  double rss_total_mb = 0;    // RSS increase across runtime construction + map
  bool zeros_ok = true;       // a page past the backend's end reads as zero
};
ReserveResult reserve_faultline(FlConfig cfg, uint64_t length, const std::string& sparse_path);

// ---------------------------------------------------------------------------
// write-flush runs (writeback_runs.cc): random 4 KiB writes to plan.pages of
// a scratch copy of the dataset, then faultline's Region::flush() (a
// write-back region) or msync(MS_SYNC) of a MAP_SHARED mapping; every page
// written is checked with pread afterwards. `seed` varies the bytes per run.
// faultline's region uses 4 KiB fills and no read-ahead (sparse writes).
RunResult run_write_flush(const Context& ctx, bool faultline_config, const Plan& plan, uint64_t seed);
ReserveResult reserve_mmap(const std::string& sparse_path, uint64_t length);

}  // namespace fbench

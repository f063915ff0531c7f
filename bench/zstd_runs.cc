// SPDX-License-Identifier: Apache-2.0
// Runs over zstd snapshots: faultline-zstd (the access workloads over a
// snapshot of the dataset) and the restore workload (zstd-eager, zstd-lazy,
// zstd-lazy-ws, zstd-full) over a snapshot of a VM-like image.
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bench.h"
#include "faultline/faultline.h"
#include "faultline/live_snapshot.h"
#include "faultline/snapshot.h"
#include "faultline/zstd_snapshot_backend.h"
#include "vm_image.h"

namespace fbench {

namespace {

constexpr uint32_t kChunkSize = 64 * 1024;
constexpr int kLevel = 3;

// A snapshot at `path` of `size` bytes and kChunkSize chunks that is newer
// than `source_mtime` (0: any), or false.
bool usable_snapshot(const std::string& path, uint64_t size, time_t source_mtime) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0 || st.st_mtime < source_mtime) return false;
  try {
    const faultline::SnapshotInfo info = faultline::SnapshotReader::open(path).info();
    return info.size == size && info.chunk_size == kChunkSize;
  } catch (const std::exception&) {
    return false;
  }
}

uint64_t file_size(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

// Anonymous memory, unmapped on scope exit.
struct AnonMemory {
  std::byte* base = nullptr;
  size_t size = 0;
  explicit AnonMemory(size_t n) : size(n) {
    void* p = mmap(nullptr, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw faultline::Error("cannot allocate " + std::to_string(n) + " bytes", errno);
    base = static_cast<std::byte*>(p);
  }
  ~AnonMemory() { munmap(base, size); }
  AnonMemory(const AnonMemory&) = delete;
  AnonMemory& operator=(const AnonMemory&) = delete;
};

// The VM image of `size` bytes, generated with a thread per CPU.
void generate_image(std::byte* base, uint64_t size) {
  const unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  const uint64_t pages = size / vm_image::kPage;
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t)
    pool.emplace_back([=] {
      for (uint64_t p = pages * t / threads; p < pages * (t + 1) / threads; ++p)
        if (vm_image::kind_at(p * vm_image::kPage) != vm_image::Kind::kZero)  // fresh memory is zero already
          vm_image::fill_page(p * vm_image::kPage, base + p * vm_image::kPage);
    });
  for (auto& th : pool) th.join();
}

// `zstd -3` over the whole image (the reference the snapshot is held to),
// fed through a pipe; returns its output's size or 0 and sets err.
uint64_t zstd3_size(const std::byte* data, uint64_t size, const std::string& scratch, std::string& err) {
  const std::string cmd = "zstd -3 -q -c > '" + scratch + "'";
  FILE* p = popen(cmd.c_str(), "w");
  if (!p) {
    err = std::string("popen(zstd): ") + std::strerror(errno);
    return 0;
  }
  const size_t written = std::fwrite(data, 1, size, p);
  const int status = pclose(p);
  uint64_t n = file_size(scratch);
  unlink(scratch.c_str());
  if (written != size || status != 0 || n == 0) {
    err = "`" + cmd + "` failed (exit status " + std::to_string(status) + "; is the zstd package installed?)";
    return 0;
  }
  return n;
}

// The snapshot at `path`, or (over_http) at ctx.http_vm_snap_url.
std::shared_ptr<faultline::ZstdSnapshotBackend> open_backend(const Context& ctx, const std::string& path,
                                                             bool over_http = false) {
  faultline::ZstdSnapshotOptions zo;
  zo.workers = ctx.zstd_workers;
  if (over_http) return std::make_shared<faultline::ZstdSnapshotBackend>(make_http_backend(ctx.http_vm_snap_url), zo);
  return std::make_shared<faultline::ZstdSnapshotBackend>(path, zo);
}

// Eager restore: every stored chunk decompressed into fresh memory by a
// thread per CPU (zero chunks are skipped: the memory is zero already),
// then the workload.
void eager_restore(const Context& ctx, const Plan& plan, RunResult& r) {
  const uint64_t t0 = now_ns();
  const faultline::SnapshotReader reader = faultline::SnapshotReader::open(ctx.vm_snap_path);
  const faultline::SnapshotInfo& info = reader.info();
  AnonMemory mem(ctx.size);
  const unsigned threads = std::max(1u, std::thread::hardware_concurrency());
  std::atomic<uint64_t> next{0};
  std::atomic<bool> failed{false};
  std::string error;
  auto work = [&] {
    try {
      for (uint64_t c; !failed.load(std::memory_order_relaxed) && (c = next.fetch_add(1)) < info.chunk_count;) {
        if (reader.chunk_is_zero(c)) continue;
        reader.read_chunk(c, std::span<std::byte>(mem.base + c * info.chunk_size, reader.chunk_length(c)));
      }
    } catch (const std::exception& e) {
      if (!failed.exchange(true)) error = e.what();
    }
  };
  // With --pin, the helper threads start under the service placement and
  // this thread works under the application's: split uses both CPUs, as
  // unpinned does; same keeps everything on CPU 0, as for the lazy configs.
  std::vector<std::thread> pool;
  pin_service();
  for (unsigned t = 1; t < threads; ++t) pool.emplace_back(work);
  pin_app();
  work();
  for (auto& th : pool) th.join();
  if (failed) throw faultline::Error(error);
  WorkOutput out;
  prepare_output(plan, out);
  run_workload(mem.base, ctx.size, plan, out);
  const uint64_t t1 = now_ns();
  capture_after(r);
  r.seconds = static_cast<double>(t1 - t0) * 1e-9;
  r.installed_bytes = ctx.size;
  r.faults = 0;
  if (out.sum != plan.expected_sum) {
    r.ok = false;
    r.error = "checksum mismatch (eager restore returned wrong bytes)";
  }
}

}  // namespace

Plan make_restore_plan(size_t npages, double fraction) {
  Plan plan;
  plan.workload = Workload::kRestore;
  plan.npages = npages;
  const uint64_t size = static_cast<uint64_t>(npages) * kPage;
  for (uint64_t extent : vm_image::hot_extents(size, fraction))
    for (uint64_t off = extent; off < extent + vm_image::kExtent && off < size; off += kPage)
      plan.pages.push_back(static_cast<uint32_t>(off / kPage));
  uint64_t sum = 0;
  for (uint32_t pg : plan.pages) sum += vm_image::word_at(probe_word_index(pg));
  plan.expected_sum = sum;
  return plan;
}

// The image's chain: a full live snapshot, then 9 children, child k
// re-storing the chunks c with c % 9 == k - 1 (one word of each rewritten
// with its own value: the bytes stay the image's, so the restore's sums
// hold), and the chain flattened. Layers are named STEM-layerK.flsnap.
std::string make_chain(Context& ctx, const std::string& stem) {
  ctx.vm_chain_path = stem + "-layer9.flsnap";
  ctx.vm_flat_path = stem + "-flat.flsnap";
  ctx.vm_chain_layers.clear();
  for (int k = 0; k <= 9; ++k) ctx.vm_chain_layers.push_back(stem + "-layer" + std::to_string(k) + ".flsnap");
  if (usable_snapshot(ctx.vm_flat_path, ctx.size, 0) && file_size(ctx.vm_chain_path) > 0) {
    try {
      faultline::open_zstd_snapshot(ctx.vm_chain_path);  // (every link checked)
      return "reusing the 10-layer chain " + ctx.vm_chain_path + "\n";
    } catch (const std::exception&) {
    }
  }
  const double t0 = now_s();
  AnonMemory image(ctx.size);
  generate_image(image.base, ctx.size);
  faultline::LiveSnapshotOptions o;
  o.chunk_size = kChunkSize;
  o.level = kLevel;
  faultline::LiveSnapshotter snap(image.base, ctx.size, o);
  snap.snapshot(ctx.vm_chain_layers[0]);
  const uint64_t chunks = ctx.size / kChunkSize;
  for (int k = 1; k <= 9; ++k) {
    for (uint64_t c = static_cast<uint64_t>(k - 1); c < chunks; c += 9) {
      auto* w = reinterpret_cast<volatile uint64_t*>(image.base + c * kChunkSize);
      *w = *w;
    }
    snap.snapshot_child(ctx.vm_chain_layers[static_cast<size_t>(k)]);
  }
  faultline::flatten_snapshot(ctx.vm_chain_path, ctx.vm_flat_path);
  char line[256];
  std::snprintf(line, sizeof line, "VM image chain: 10 layers and their flattening in %.1f s (%s)\n", now_s() - t0,
                ctx.vm_chain_path.c_str());
  return line;
}

ZstdSetup prepare_zstd(Context& ctx, bool dataset_snapshot, bool vm, const Plan* restore_plan, bool chain) {
  ZstdSetup setup;
  faultline::SnapshotWriteOptions wo;
  wo.chunk_size = kChunkSize;
  wo.level = kLevel;
  char line[512];
  if (dataset_snapshot) {
    ctx.snap_path = ctx.path + ".flsnap";
    struct stat st;
    const time_t dataset_mtime = stat(ctx.path.c_str(), &st) == 0 ? st.st_mtime : 0;
    if (usable_snapshot(ctx.snap_path, ctx.size, dataset_mtime)) {
      setup.message += "reusing dataset snapshot " + ctx.snap_path + "\n";
    } else {
      const double t0 = now_s();
      faultline::write_snapshot_from_file(ctx.path, ctx.snap_path, wo);
      std::snprintf(line, sizeof line, "created dataset snapshot %s (%.1f s)\n", ctx.snap_path.c_str(), now_s() - t0);
      setup.message += line;
    }
  }
  if (vm) {
    setup.have_vm = true;
    // "dict": made by a writer that may store a dictionary (flags bit 0);
    // snapshots from before that are not reused, the size target needs a
    // current one.
    const std::string stem = ctx.dir + "/vm-image-v1-" + std::to_string(ctx.size) + "-dict";
    ctx.vm_snap_path = stem + ".flsnap";
    ctx.vm_ws_path = ctx.vm_snap_path + ".ws";
    const std::string zstd3_path = stem + ".zstd3-size";
    const bool reuse = usable_snapshot(ctx.vm_snap_path, ctx.size, 0);
    if (reuse) {
      std::ifstream f(zstd3_path);
      f >> setup.vm_zstd3_bytes;
      if (!f) setup.vm_zstd3_bytes = 0;
    }
    if (!reuse || setup.vm_zstd3_bytes == 0) {
      AnonMemory image(ctx.size);
      const double t0 = now_s();
      generate_image(image.base, ctx.size);
      const double t1 = now_s();
      if (!reuse) faultline::write_snapshot(std::span<const std::byte>(image.base, ctx.size), ctx.vm_snap_path, wo);
      const double t2 = now_s();
      setup.vm_zstd3_bytes = zstd3_size(image.base, ctx.size, stem + ".zst.tmp", setup.zstd3_error);
      const double t3 = now_s();
      if (setup.vm_zstd3_bytes) std::ofstream(zstd3_path) << setup.vm_zstd3_bytes << "\n";
      std::snprintf(line, sizeof line, "VM image: generated in %.1f s, %s %s in %.1f s, zstd -3 in %.1f s\n", t1 - t0,
                    reuse ? "reused" : "snapshot written to", ctx.vm_snap_path.c_str(), t2 - t1, t3 - t2);
      setup.message += line;
    } else {
      setup.message += "reusing VM image snapshot " + ctx.vm_snap_path + "\n";
    }
    setup.vm_snapshot_bytes = file_size(ctx.vm_snap_path);
    const faultline::SnapshotInfo info = faultline::SnapshotReader::open(ctx.vm_snap_path).info();
    ctx.vm_seq_sum = 0;
    for (uint64_t pg = 0; pg < ctx.size / kPage; ++pg) ctx.vm_seq_sum += vm_image::word_at(probe_word_index(pg));

    // The working set: one untimed lazy restore of the restore plan, with
    // the runtime recording first touches.
    {
      auto backend = open_backend(ctx, ctx.vm_snap_path);
      faultline::Runtime rt;
      faultline::RegionOptions ro;
      ro.fill_size = kChunkSize;
      ro.record_touches = true;
      faultline::Region region = rt.map(backend, ro);
      WorkOutput out;
      prepare_output(*restore_plan, out);
      run_workload(region.data(), ctx.size, *restore_plan, out);
      if (out.sum != restore_plan->expected_sum)
        throw faultline::Error("recording the working set: the lazy restore returned wrong bytes");
      faultline::WorkingSet ws;
      ws.fill_size = ro.fill_size;
      ws.region_length = region.size();
      ws.offsets = region.touched_chunks();
      faultline::save_working_set(ctx.vm_ws_path, ws);
      setup.ws_chunks = ws.offsets.size();
    }
    std::snprintf(line, sizeof line,
                  "VM image snapshot: %llu chunks (%llu zero), %.1f MiB (ratio %.2f; zstd -3: %.1f MiB); "
                  "working set %llu chunks (%.1f%%) in %s\n",
                  static_cast<unsigned long long>(info.chunk_count), static_cast<unsigned long long>(info.zero_chunks),
                  static_cast<double>(setup.vm_snapshot_bytes) / (1 << 20),
                  static_cast<double>(ctx.size) / static_cast<double>(setup.vm_snapshot_bytes),
                  static_cast<double>(setup.vm_zstd3_bytes) / (1 << 20), static_cast<unsigned long long>(setup.ws_chunks),
                  100.0 * static_cast<double>(setup.ws_chunks) / static_cast<double>(info.chunk_count),
                  ctx.vm_ws_path.c_str());
    setup.message += line;
    if (chain) setup.message += make_chain(ctx, stem);
  }
  return setup;
}

RunResult run_zstd(const Context& ctx, ZstdConfig cfg, const Plan& plan, bool over_http) {
  RunResult r;
  try {
    if (cfg == ZstdConfig::kEager) {
      eager_restore(ctx, plan, r);
      return r;
    }
    const bool restore = cfg != ZstdConfig::kFaultline;
    const std::string& path = !restore                         ? ctx.snap_path
                              : cfg == ZstdConfig::kChainLazy ? ctx.vm_chain_path
                              : cfg == ZstdConfig::kFlatLazy  ? ctx.vm_flat_path
                                                              : ctx.vm_snap_path;
    faultline::RegionOptions ro;  // defaults: 64 KiB fill, read-ahead on
    if (cfg != ZstdConfig::kFaultline && cfg != ZstdConfig::kFull)
      ro.readahead = false;  // demand faults (+ the working set)
    Plan seq_plan;
    const Plan* run_plan = &plan;
    if (cfg == ZstdConfig::kFull) {
      seq_plan.workload = Workload::kSeq;
      seq_plan.npages = ctx.size / kPage;
      seq_plan.expected_sum = ctx.vm_seq_sum;
      run_plan = &seq_plan;
    }
    WorkOutput out;
    prepare_output(*run_plan, out);
    // The decompression workers serve faults like the runtime's thread:
    // they start while the service placement (--pin) is in force.
    // Restores time the opening of the snapshot (reading and checking the
    // index, starting the workers): part of any restore. faultline-zstd
    // does not, as faultline-file does not time opening its file.
    std::shared_ptr<faultline::ZstdSnapshotBackend> backend;
    pin_service();
    faultline::Runtime rt;
    if (!restore) backend = open_backend(ctx, path);
    const uint64_t t0 = now_ns();
    if (restore) backend = open_backend(ctx, path, over_http);
    pin_app();
    faultline::Region region = rt.map(backend, ro);
    if (cfg == ZstdConfig::kLazyWs) {
      const faultline::WorkingSet ws = faultline::load_working_set(ctx.vm_ws_path);
      region.prefetch_chunks(ws.offsets);
    } else if (cfg == ZstdConfig::kFull) {
      region.prefetch(0, ctx.size);
    }
    run_workload(region.data(), ctx.size, *run_plan, out);
    const uint64_t t1 = now_ns();
    capture_after(r);
    const faultline::StatsSnapshot s = region.stats();
    const faultline::ZstdSnapshotCounters zc = backend->counters();
    region.reset();
    r.seconds = static_cast<double>(t1 - t0) * 1e-9;
    r.lat_ns = std::move(out.lat_ns);
    record_runtime_stats(r, s);
    if (zc.corrupt_chunks) {
      r.ok = false;
      r.error = std::to_string(zc.corrupt_chunks) + " corrupt chunks in " + (over_http ? ctx.http_vm_snap_url : path);
    } else if (out.sum != run_plan->expected_sum) {
      r.ok = false;
      r.error = "checksum mismatch (runtime returned wrong bytes)";
    }
  } catch (const std::exception& e) {
    r.ok = false;
    r.error = e.what();
  }
  return r;
}

}  // namespace fbench

// SPDX-License-Identifier: Apache-2.0
// The live-snapshot workload (issue #14): a --size region of private
// anonymous memory holding the VM-like image (samples/vm_image.h), two
// writer threads on a 5% hot set (5% of the 64 KiB chunks, every page of
// them) at kMigrateWriteRate page writes per second in all (as the migrate
// workload), and a LiveSnapshotter over it.
//   snapshot-stop         the baseline: the writers are parked, the snapshot
//                         written, the writers let go;
//   snapshot-live         snapshot() while the writers run;
//   snapshot-incremental  a full snapshot (untimed), one second of writes,
//                         then snapshot_child() while the writers run.
// Each writer times every batch of 16 writes; a write held by the write
// protection shows as a long batch. Fields: seconds (the snapshot's),
// bytes (its file), max_stall_ms (the longest batch during it; for
// snapshot-stop, the whole pause), writer_rate_ratio (writes per second
// during the snapshot over the second before it), and for the child
// dirty_bytes: the chunks it stored compressed one by one with zstd at the
// snapshot's level, after the run (the least those chunks can take).
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <optional>
#include <thread>
#include <tuple>
#include <vector>

#include "bench.h"
#include "faultline/live_snapshot.h"
#include "spawn.h"
#include "vm_image.h"

namespace fbench {
namespace {

constexpr uint64_t kChunk = 64 * 1024;  // LiveSnapshotOptions' default chunk
constexpr int kWriters = 2;
constexpr int kBatch = 16;  // writes timed together

// Writers on the hot set, each on its own share of it, paced to a total
// rate, counting writes and the longest batch since the last window(). The
// hot set is every page of 5% of the chunks (those c with mix64(c) % 20 ==
// 0): a hot set scattered page by page would dirty most chunks.
class Writers {
 public:
  Writers(std::byte* base, uint64_t size) : base_(base) {
    for (uint64_t p = 0; p < size / kPage; ++p)
      if (mix64((p * kPage / kChunk) ^ 0x484f54) % 20 == 0) hot_.push_back(p);
    if (hot_.empty()) hot_.push_back(0);
    for (int t = 0; t < kWriters; ++t) threads_.emplace_back([this, t] { run(t); });
  }
  ~Writers() {
    quit_.store(true);
    for (auto& t : threads_) t.join();
  }
  // Parks every writer (returns once they all are) or lets them go.
  void park(bool on) {
    park_.store(on);
    if (on)
      while (parked_.load() != kWriters) std::this_thread::yield();
  }
  // Starts a window: clears the longest batch; returns the writes so far.
  uint64_t window() {
    max_batch_ns_.store(0);
    return writes_.load();
  }
  uint64_t writes() const { return writes_.load(); }
  double max_stall_ms() const { return static_cast<double>(max_batch_ns_.load()) / 1e6; }
  // Chunks (kChunk) the writers write.
  std::vector<uint64_t> hot_chunks() const {
    std::vector<uint64_t> c;
    for (uint64_t p : hot_) c.push_back(p * kPage / kChunk);
    c.erase(std::unique(c.begin(), c.end()), c.end());
    return c;
  }

 private:
  void run(int t) {
    const double per_ns = static_cast<double>(kMigrateWriteRate) / kWriters / 1e9;
    uint64_t i = static_cast<uint64_t>(t), seq = 0;
    uint64_t start = now_ns(), done = 0;
    while (!quit_.load(std::memory_order_relaxed)) {
      if (park_.load(std::memory_order_relaxed)) {
        parked_.fetch_add(1);
        while (park_.load() && !quit_.load()) std::this_thread::sleep_for(std::chrono::microseconds(100));
        parked_.fetch_sub(1);
        start = now_ns(), done = 0;  // (the pause is not made up afterwards)
        continue;
      }
      const uint64_t t0 = now_ns();
      for (int k = 0; k < kBatch; ++k) {
        uint64_t page = hot_[i % hot_.size()];
        i += kWriters;
        reinterpret_cast<volatile uint64_t*>(base_ + page * kPage)[t] = ++seq;
      }
      const uint64_t t1 = now_ns();
      done += kBatch;
      writes_.fetch_add(kBatch, std::memory_order_relaxed);
      uint64_t cur = max_batch_ns_.load(std::memory_order_relaxed);
      while (t1 - t0 > cur && !max_batch_ns_.compare_exchange_weak(cur, t1 - t0)) {
      }
      // Pacing: ahead of the rate, sleep until due.
      const double due = static_cast<double>(start) + static_cast<double>(done) / per_ns;
      if (static_cast<double>(t1) + 50000 < due)
        std::this_thread::sleep_for(std::chrono::nanoseconds(static_cast<uint64_t>(due) - t1));
    }
  }

  std::byte* base_;
  std::vector<uint64_t> hot_;
  std::vector<std::thread> threads_;
  std::atomic<bool> quit_{false}, park_{false};
  std::atomic<int> parked_{0};
  std::atomic<uint64_t> writes_{0}, max_batch_ns_{0};
};

// The least the chunks can take: each compressed alone at `level`.
uint64_t compressed_bytes(const std::byte* base, const std::vector<uint64_t>& chunks, int level) {
  std::vector<char> out(ZSTD_compressBound(kChunk));
  uint64_t total = 0;
  for (uint64_t c : chunks) {
    size_t n = ZSTD_compress(out.data(), out.size(), base + c * kChunk, kChunk, level);
    if (!ZSTD_isError(n)) total += n;
  }
  return total;
}

// The floor of the protect step on this machine: with every other page
// write-protected already, protect again only `hot` (the chunks the writers
// keep writable), as one UFFDIO_WRITEPROTECT per chunk (a TLB flush each)
// and as one over the whole range (a page-table walk over every page).
// On a userfaultfd of its own, with the writers parked (nothing faults).
// Returns {per chunk, whole range} in ms; NAN where it cannot measure.
std::pair<double, double> protect_floor_ms(std::byte* base, uint64_t size, const std::vector<uint64_t>& hot) {
  std::pair<double, double> none{NAN, NAN};
  struct Fd {
    int v;
    ~Fd() {
      if (v >= 0) ::close(v);
    }
    int get() const { return v; }
  } fd{static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK))};
  if (fd.get() < 0) return none;
  uffdio_api api{UFFD_API, 1ull << 13 /* UFFD_FEATURE_WP_UNPOPULATED */, 0};
  if (::ioctl(fd.get(), UFFDIO_API, &api) != 0) return none;
  uffdio_register reg{};
  reg.range = {reinterpret_cast<uintptr_t>(base), size};
  reg.mode = UFFDIO_REGISTER_MODE_WP;
  if (::ioctl(fd.get(), UFFDIO_REGISTER, &reg) != 0) return none;
  auto wp = [&](uint64_t at, uint64_t len, bool on) {
    uffdio_writeprotect w{};
    w.range = {reinterpret_cast<uintptr_t>(base) + at, len};
    w.mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : 0;
    while (::ioctl(fd.get(), UFFDIO_WRITEPROTECT, &w) != 0 && (errno == EAGAIN || errno == EINTR)) {
    }
  };
  auto hot_off = [&] {
    for (uint64_t c : hot) wp(c * kChunk, kChunk, false);
  };
  wp(0, size, true);
  hot_off();
  uint64_t t0 = now_ns();
  for (uint64_t c : hot) wp(c * kChunk, kChunk, true);
  const double chunks = static_cast<double>(now_ns() - t0) / 1e6;
  hot_off();
  t0 = now_ns();
  wp(0, size, true);
  const double range = static_cast<double>(now_ns() - t0) / 1e6;
  wp(0, size, false);
  uffdio_range r{reinterpret_cast<uintptr_t>(base), size};
  ::ioctl(fd.get(), UFFDIO_UNREGISTER, &r);
  return {chunks, range};
}

}  // namespace

RunResult run_live_snapshot(const Context& ctx, LiveSnapConfig cfg) {
  return failing_on_error<RunResult>([&](RunResult& r) {
    const uint64_t size = ctx.size / kChunk * kChunk;
    void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) throw faultline::Error("live-snapshot: cannot map " + std::to_string(size) + " bytes", errno);
    struct Unmap {
      void* p;
      uint64_t n;
      ~Unmap() { munmap(p, n); }
    } unmap{p, size};
    auto* base = static_cast<std::byte*>(p);
    vm_image::fill(0, base, size);
    const Scratch full(ctx.dir, "live-snapshot.full"), child(ctx.dir, "live-snapshot.child");
    faultline::LiveSnapshotOptions o;
    o.chunk_size = kChunk;
    o.track_writes = cfg == LiveSnapConfig::kIncremental;
    if (cfg == LiveSnapConfig::kLiveNice0) o.compress_nice = 0;
    std::optional<faultline::LiveSnapshotter> snap_holder(std::in_place, p, size, o);
    faultline::LiveSnapshotter& snap = *snap_holder;
    Writers w(base, size);
    if (cfg == LiveSnapConfig::kIncremental) {
      snap.snapshot(full.path);  // the parent (untimed), then a second of writes
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    // The writers' rate without a snapshot, over the second before it.
    uint64_t w0 = w.writes();
    const uint64_t b0 = now_ns();
    std::this_thread::sleep_for(std::chrono::seconds(1));
    const double rate_before = static_cast<double>(w.writes() - w0) / (static_cast<double>(now_ns() - b0) * 1e-9);

    faultline::LiveSnapshotStats st;
    const uint64_t t0 = now_ns();
    w0 = w.window();
    if (cfg == LiveSnapConfig::kStop) {
      w.park(true);
      st = snap.snapshot(full.path);
      w.park(false);
    } else {
      st = cfg == LiveSnapConfig::kIncremental ? snap.snapshot_child(child.path) : snap.snapshot(full.path);
    }
    const uint64_t t1 = now_ns();
    const double rate_during = static_cast<double>(w.writes() - w0) / (static_cast<double>(t1 - t0) * 1e-9);
    LiveSnapFigures& f = r.live_snapshot;
    f.measured = true;
    r.seconds = st.seconds;
    f.file_bytes = static_cast<double>(st.file_bytes);
    f.max_stall_ms = cfg == LiveSnapConfig::kStop ? static_cast<double>(t1 - t0) / 1e6 : w.max_stall_ms();
    f.writer_rate_ratio = rate_during / rate_before;
    f.protect_ms = st.protect_seconds * 1e3;
    f.held_writes = static_cast<double>(st.held_writes);
    if (cfg == LiveSnapConfig::kIncremental) {
      w.park(true);  // (so the chunks hold still while they are measured)
      f.dirty_bytes = static_cast<double>(compressed_bytes(base, w.hot_chunks(), o.level));
      w.park(false);
    }
    if (cfg == LiveSnapConfig::kLive) {
      w.park(true);
      snap_holder.reset();  // (its userfaultfd lets go of the range)
      std::tie(f.floor_chunks_ms, f.floor_range_ms) = protect_floor_ms(base, size, w.hot_chunks());
      w.park(false);
    }
  });
}

}  // namespace fbench

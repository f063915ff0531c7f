// SPDX-License-Identifier: Apache-2.0
// The mmap baselines: a fresh read-only shared mapping of the dataset file
// per run, with the madvise() of the configuration.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "bench.h"

namespace fbench {

RunResult run_mmap(const Context& ctx, MmapConfig cfg, const Plan& plan) {
  RunResult r;
  int fd = open(ctx.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    r.ok = false;
    r.error = "open " + ctx.path + ": " + std::strerror(errno);
    return r;
  }
  pin_app();
  WorkOutput out;
  prepare_output(plan, out);
  const int flags = MAP_SHARED | (cfg == MmapConfig::kPopulate ? MAP_POPULATE : 0);
  int advice = -1;
  switch (cfg) {
    case MmapConfig::kSeq: advice = MADV_SEQUENTIAL; break;
    case MmapConfig::kRand: advice = MADV_RANDOM; break;
    case MmapConfig::kWillneed: advice = MADV_WILLNEED; break;
    case MmapConfig::kNormal:
    case MmapConfig::kPopulate: break;
  }
  const Faults f0 = read_faults();
  // Timed: mmap (with MAP_POPULATE: the whole read), madvise (WILLNEED:
  // starts read-ahead of the whole file), the workload. munmap is not timed.
  const uint64_t t0 = now_ns();
  void* p = mmap(nullptr, ctx.size, PROT_READ, flags, fd, 0);
  if (p == MAP_FAILED) {
    r.ok = false;
    r.error = std::string("mmap: ") + std::strerror(errno);
    close(fd);
    return r;
  }
  if (advice >= 0 && madvise(p, ctx.size, advice) != 0) {
    r.ok = false;
    r.error = std::string("madvise: ") + std::strerror(errno);
  }
  run_workload(static_cast<const std::byte*>(p), ctx.size, plan, out);
  const uint64_t t1 = now_ns();
  const Faults f1 = read_faults();
  capture_after(r);
  munmap(p, ctx.size);
  close(fd);
  r.seconds = static_cast<double>(t1 - t0) * 1e-9;
  r.minflt = f1.minflt - f0.minflt;
  r.majflt = f1.majflt - f0.majflt;
  r.faults = r.minflt + r.majflt;
  r.lat_ns = std::move(out.lat_ns);
  if (r.ok && out.sum != plan.expected_sum) {
    r.ok = false;
    r.error = "checksum mismatch";
  }
  return r;
}

ReserveResult reserve_mmap(const std::string& sparse_path, uint64_t length) {
  ReserveResult rr;
  int fd = open(sparse_path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    rr.ok = false;
    rr.error = "open " + sparse_path + ": " + std::strerror(errno);
    return rr;
  }
  const MemStatus m0 = read_mem_status();
  const uint64_t t0 = now_ns();
  void* p = mmap(nullptr, length, PROT_READ, MAP_SHARED, fd, 0);
  const uint64_t t1 = now_ns();
  close(fd);
  if (p == MAP_FAILED) {
    rr.ok = false;
    rr.error = std::string("mmap: ") + std::strerror(errno);
    return rr;
  }
  const MemStatus m1 = read_mem_status();
  rr.map_ms = static_cast<double>(t1 - t0) * 1e-6;
  rr.rss_map_mb = rr.rss_total_mb = (static_cast<double>(m1.rss_kb) - static_cast<double>(m0.rss_kb)) / 1024.0;
  rr.zeros_ok = *reinterpret_cast<const volatile uint64_t*>(static_cast<const std::byte*>(p) + length - kPage) == 0;
  const uint64_t t2 = now_ns();
  munmap(p, length);
  const uint64_t t3 = now_ns();
  rr.unmap_ms = static_cast<double>(t3 - t2) * 1e-6;
  return rr;
}

}  // namespace fbench

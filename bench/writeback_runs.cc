// SPDX-License-Identifier: Apache-2.0
// write-flush: random 4 KiB writes to a fraction of a writable mapping of a
// file, then make them durable. faultline-file: a write-back region and
// Region::flush(); mmap-msync: MAP_SHARED and msync(MS_SYNC). Both write
// the same pages of a scratch copy of the dataset (the dataset itself stays
// as the read workloads expect it), warm in the page cache, and every
// written page is read back with pread and checked after the timed window.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "bench.h"
#include "faultline/faultline.h"

namespace fbench {

namespace {

// Word i of page p after a write-flush run with this seed.
inline uint64_t written_word(uint64_t page, uint64_t i, uint64_t seed) { return mix64(page * 4099 + i + (seed << 40)); }

void write_pages(std::byte* base, const Plan& plan, uint64_t seed) {
  for (uint32_t p : plan.pages) {
    auto* w = reinterpret_cast<uint64_t*>(base + uint64_t{p} * kPage);
    for (uint64_t i = 0; i < kWordsPerPage; ++i) w[i] = written_word(p, i, seed);
  }
}

std::string verify(const std::string& path, const Plan& plan, uint64_t seed) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "open " + path + ": " + std::strerror(errno);
  std::vector<uint64_t> buf(kWordsPerPage);
  std::string err;
  for (uint32_t p : plan.pages) {
    if (pread(fd, buf.data(), kPage, static_cast<off_t>(uint64_t{p} * kPage)) != static_cast<ssize_t>(kPage)) {
      err = "pread of page " + std::to_string(p) + " failed";
      break;
    }
    for (uint64_t i = 0; i < kWordsPerPage; ++i)
      if (buf[i] != written_word(p, i, seed)) {
        err = "page " + std::to_string(p) + " word " + std::to_string(i) + " not written back";
        break;
      }
    if (!err.empty()) break;
  }
  close(fd);
  return err;
}

}  // namespace

std::string writeback_scratch(const Context& ctx) { return ctx.dir + "/faultline-bench-write-" + std::to_string(ctx.size) + ".dat"; }

std::string prepare_writeback_scratch(const Context& ctx) {
  const std::string path = writeback_scratch(ctx);
  struct stat st {};
  if (stat(path.c_str(), &st) != 0 || static_cast<uint64_t>(st.st_size) != ctx.size) {
    std::string msg = ensure_dataset(path, ctx.size);  // the same content as the dataset
    (void)msg;
  }
  warm_file(path);
  return path;
}

RunResult run_write_flush(const Context& ctx, bool faultline_config, const Plan& plan, uint64_t seed) {
  RunResult r;
  std::string path;
  try {
    path = prepare_writeback_scratch(ctx);
  } catch (const std::exception& e) {
    r.ok = false;
    r.error = e.what();
    return r;
  }
  if (faultline_config) {
    try {
      faultline::FileBackendOptions fo;
      fo.writable = true;
      auto backend = std::make_shared<faultline::FileBackend>(path, fo);
      pin_service();
      faultline::Runtime rt;
      pin_app();
      faultline::RegionOptions o;
      o.writable = true;
      o.write_back = true;
      // Sparse random writes: a fault loads only its own page (the tuning
      // rule for sparse random access; with 64 KiB fills and read-around
      // the run loads the whole file and measured 3x slower).
      o.fill_size = 4096;
      o.readahead = false;
      const uint64_t t0 = now_ns();
      faultline::Region region = rt.map(backend, o);
      write_pages(region.data(), plan, seed);
      region.flush();
      const uint64_t t1 = now_ns();
      capture_after(r);
      const faultline::StatsSnapshot s = region.stats();
      region.close();
      r.seconds = static_cast<double>(t1 - t0) * 1e-9;
      r.has_rt = true;
      r.faults = r.rt_faults = s.faults;
      r.rt_pages_installed = s.pages_installed;
      r.rt_bytes_installed = r.installed_bytes = s.bytes_installed;
      r.rt_bytes_read = s.bytes_read;
      r.rt_readahead_chunks = s.readahead_chunks;
      r.rt_readahead_hits = s.readahead_hits;
      r.rt_lat_p50_ns = s.latency_p50_ns;
      r.rt_lat_p99_ns = s.latency_p99_ns;
      r.rt_lat_max_ns = s.latency_max_ns;
      r.rt_json = s.to_json();
    } catch (const std::exception& e) {
      r.ok = false;
      r.error = e.what();
      return r;
    }
  } else {
    int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) {
      r.ok = false;
      r.error = "open " + path + ": " + std::strerror(errno);
      return r;
    }
    pin_app();
    const Faults f0 = read_faults();
    const uint64_t t0 = now_ns();
    void* p = mmap(nullptr, ctx.size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
      r.ok = false;
      r.error = std::string("mmap: ") + std::strerror(errno);
      close(fd);
      return r;
    }
    write_pages(static_cast<std::byte*>(p), plan, seed);
    if (msync(p, ctx.size, MS_SYNC) != 0) {
      r.ok = false;
      r.error = std::string("msync: ") + std::strerror(errno);
    }
    const uint64_t t1 = now_ns();
    const Faults f1 = read_faults();
    capture_after(r);
    munmap(p, ctx.size);
    close(fd);
    r.seconds = static_cast<double>(t1 - t0) * 1e-9;
    r.minflt = f1.minflt - f0.minflt;
    r.majflt = f1.majflt - f0.majflt;
    r.faults = r.minflt + r.majflt;
  }
  if (r.ok) {
    std::string err = verify(path, plan, seed);
    if (!err.empty()) {
      r.ok = false;
      r.error = "write-flush: " + err;
    }
  }
  return r;
}

}  // namespace fbench

// SPDX-License-Identifier: Apache-2.0
// Runs through the faultline runtime: a fresh Runtime and Region per run.
#include <memory>

#include "bench.h"
#include "faultline/faultline.h"

namespace fbench {

namespace {

std::shared_ptr<faultline::Backend> make_backend(const Context& ctx, FlConfig cfg) {
  if (is_remote(cfg)) return make_remote_backend(ctx, cfg);
  if (is_http(cfg)) return make_http_backend(ctx.http_dataset_url);
  if (cfg == FlConfig::kFile || cfg == FlConfig::kFileShared) return std::make_shared<faultline::FileBackend>(ctx.path);
  if (cfg == FlConfig::kFileCustom) {
    faultline::FileBackendOptions fo;
    fo.direct = ctx.custom.direct;
    fo.queue_depth = ctx.custom.queue_depth;
    fo.background_reads = ctx.custom.background_reads;
    fo.keep_cache = ctx.custom.keep_cache;
    return std::make_shared<faultline::FileBackend>(ctx.path, fo);
  }
  return faultline::MemoryBackend::borrow(std::span<const std::byte>(ctx.mem, ctx.size));
}

faultline::RegionOptions region_options(const Context& ctx, FlConfig cfg) {
  faultline::RegionOptions o;  // defaults: 64 KiB fill, read-ahead on
  if (cfg == FlConfig::kMemory4k || cfg == FlConfig::kRemote4k || cfg == FlConfig::kHttp4k) {
    o.fill_size = 4096;
    o.readahead = false;
  } else if (cfg == FlConfig::kFileCustom || cfg == FlConfig::kMemoryCustom) {
    o.fill_size = ctx.custom.fill_size;
    o.readahead = ctx.custom.readahead;
    o.readahead_max = ctx.custom.readahead_max;
  }
  // A memfd filled through its alias, placed with UFFDIO_CONTINUE.
  o.shared_memory = cfg == FlConfig::kFileShared || cfg == FlConfig::kMemoryShared;
  return o;
}

faultline::RuntimeOptions runtime_options(const Context& ctx, FlConfig cfg) {
  faultline::RuntimeOptions o;
  if (cfg == FlConfig::kFileCustom || cfg == FlConfig::kMemoryCustom) o.staging_bytes = ctx.custom.staging_bytes;
  return o;
}

double mb(uint64_t kb_after, uint64_t kb_before) {
  return (static_cast<double>(kb_after) - static_cast<double>(kb_before)) / 1024.0;
}

}  // namespace

std::string faultline_mode() {
  faultline::Runtime rt;
  return rt.mode().describe();
}

void record_runtime_stats(RunResult& r, const faultline::StatsSnapshot& s) {
  r.has_rt = true;
  r.faults = r.rt_faults = s.faults;
  r.rt_pages_installed = s.pages_installed;
  r.rt_bytes_installed = r.installed_bytes = s.bytes_installed;
  r.rt_bytes_read = s.bytes_read;
  r.rt_readahead_chunks = s.readahead_chunks;
  r.rt_readahead_hits = s.readahead_hits;
  r.rt_zero_pages = s.zero_pages;
  r.rt_errors = s.errors;
  r.rt_lat_p50_ns = s.latency_p50_ns;
  r.rt_lat_p99_ns = s.latency_p99_ns;
  r.rt_lat_max_ns = s.latency_max_ns;
  r.has_service = s.latency_count > 0;
  r.svc_p50_ns = s.latency_p50_ns;
  r.svc_p99_ns = s.latency_p99_ns;
  r.rt_json = s.to_json();
}

RunResult run_faultline(const Context& ctx, FlConfig cfg, const Plan& plan) {
  RunResult r;
  try {
    auto backend = make_backend(ctx, cfg);
    pin_service();
    faultline::Runtime rt(runtime_options(ctx, cfg));
    pin_app();
    WorkOutput out;
    prepare_output(plan, out);
    const uint64_t t0 = now_ns();
    faultline::Region region = rt.map(backend, region_options(ctx, cfg));
    run_workload(region.data(), ctx.size, plan, out);
    const uint64_t t1 = now_ns();
    capture_after(r);
    const faultline::StatsSnapshot s = region.stats();
    region.reset();

    r.seconds = static_cast<double>(t1 - t0) * 1e-9;
    r.lat_ns = std::move(out.lat_ns);
    record_runtime_stats(r, s);
    if (out.sum != plan.expected_sum) {
      r.ok = false;
      r.error = "checksum mismatch (runtime returned wrong bytes)";
    }
  } catch (const std::exception& e) {
    r.ok = false;
    r.error = e.what();
  }
  return r;
}

ReserveResult reserve_faultline(FlConfig cfg, uint64_t length, const std::string& sparse_path) {
  ReserveResult rr;
  try {
    std::shared_ptr<faultline::Backend> backend;
    faultline::RegionOptions o;
    if (cfg == FlConfig::kFile) {
      backend = std::make_shared<faultline::FileBackend>(sparse_path);
    } else {
      // 1 MiB of dataset content; everything past it reads as zeros.
      std::vector<std::byte> small(1 << 20);
      auto* w = reinterpret_cast<uint64_t*>(small.data());
      for (size_t i = 0; i < small.size() / 8; ++i) w[i] = data_word(i);
      backend = std::make_shared<faultline::MemoryBackend>(std::move(small));
      o.length = length;
    }
    const MemStatus m0 = read_mem_status();
    const uint64_t t0 = now_ns();
    faultline::Runtime rt;
    const uint64_t t1 = now_ns();
    const MemStatus m1 = read_mem_status();
    const uint64_t t2 = now_ns();
    faultline::Region region = rt.map(backend, o);
    const uint64_t t3 = now_ns();
    const MemStatus m2 = read_mem_status();
    rr.runtime_ms = static_cast<double>(t1 - t0) * 1e-6;
    rr.map_ms = static_cast<double>(t3 - t2) * 1e-6;
    rr.rss_map_mb = mb(m2.rss_kb, m1.rss_kb);
    rr.rss_total_mb = mb(m2.rss_kb, m0.rss_kb);
    // Untimed sanity: the last page of the terabyte reads as zero; for the
    // memory backend the first word is the dataset's.
    const std::byte* base = region.data();
    const uint64_t last = *reinterpret_cast<const volatile uint64_t*>(base + region.size() - kPage);
    rr.zeros_ok = last == 0;
    if (cfg != FlConfig::kFile) {
      const uint64_t first = *reinterpret_cast<const volatile uint64_t*>(base);
      rr.zeros_ok = rr.zeros_ok && first == data_word(0);
    }
    const uint64_t t4 = now_ns();
    region.reset();
    const uint64_t t5 = now_ns();
    rr.unmap_ms = static_cast<double>(t5 - t4) * 1e-6;
  } catch (const std::exception& e) {
    rr.ok = false;
    rr.error = e.what();
  }
  return rr;
}

}  // namespace fbench

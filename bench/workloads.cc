// SPDX-License-Identifier: Apache-2.0
// The workloads. One implementation, used for every configuration.
#include <time.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <thread>

#include "bench.h"

namespace fbench {

const char* workload_name(Workload w) {
  switch (w) {
    case Workload::kSeq: return "seq";
    case Workload::kRand: return "rand";
    case Workload::kZipf: return "zipf";
    case Workload::kMtRand: return "mt-rand";
    case Workload::kCopy: return "copy";
    case Workload::kReserve: return "reserve";
    case Workload::kRestore: return "restore";
    case Workload::kVmRestore: return "vm-restore";
    case Workload::kMigrate: return "migrate";
    case Workload::kLiveSnapshot: return "live-snapshot";
    case Workload::kBudgetZipf: return "budget-zipf";
    case Workload::kBudgetRand: return "budget-rand";
    case Workload::kWriteFlush: return "write-flush";
  }
  return "?";
}

namespace {

inline uint64_t clock_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

inline uint64_t load_probe(const std::byte* base, uint64_t page) {
  const std::byte* p = base + page * kPage + (page % kWordsPerPage) * sizeof(uint64_t);
  return *reinterpret_cast<const volatile uint64_t*>(p);
}

std::vector<uint32_t> shuffled_prefix(size_t npages, size_t n, Rng& rng) {
  std::vector<uint32_t> all(npages);
  std::iota(all.begin(), all.end(), 0u);
  for (size_t i = 0; i < n && i + 1 < npages; ++i) {
    size_t j = i + rng.below(npages - i);
    std::swap(all[i], all[j]);
  }
  all.resize(n);
  return all;
}

}  // namespace

Plan make_plan(Workload w, const PlanParams& p) {
  Plan plan;
  plan.workload = w;
  plan.npages = p.npages;
  size_t n = std::max<size_t>(1, static_cast<size_t>(std::llround(p.fraction * static_cast<double>(p.npages))));
  n = std::min(n, p.npages);
  Rng rng(p.seed * 16 + static_cast<uint64_t>(w));
  switch (w) {
    case Workload::kSeq:
    case Workload::kCopy:
      break;
    case Workload::kRand:
      plan.pages = shuffled_prefix(p.npages, n, rng);
      plan.time_each = true;
      break;
    case Workload::kWriteFlush:  // fraction of the pages, each written once, in random order
      plan.pages = shuffled_prefix(p.npages, n, rng);
      break;
    case Workload::kMtRand:
      // n distinct pages, uniformly over the file, in random order; thread t
      // gets the t-th contiguous slice of that list: the threads' page sets
      // are disjoint, their addresses interleaved over the whole file.
      plan.pages = shuffled_prefix(p.npages, n, rng);
      plan.threads = p.threads;
      plan.time_each = true;
      break;
    case Workload::kZipf: {
      // Rank r (1-based) has weight 1/r^s; ranks are mapped to pages through
      // a random permutation so the hot set is scattered over the file.
      std::vector<uint32_t> perm = shuffled_prefix(p.npages, p.npages, rng);
      std::vector<double> cdf(p.npages);
      double acc = 0;
      for (size_t r = 0; r < p.npages; ++r) {
        acc += 1.0 / std::pow(static_cast<double>(r + 1), p.zipf_s);
        cdf[r] = acc;
      }
      plan.pages.resize(n);
      for (size_t i = 0; i < n; ++i) {
        double u = rng.unit() * acc;
        size_t r = static_cast<size_t>(std::lower_bound(cdf.begin(), cdf.end(), u) - cdf.begin());
        if (r >= p.npages) r = p.npages - 1;
        plan.pages[i] = perm[r];
      }
      break;
    }
    case Workload::kBudgetZipf:
    case Workload::kBudgetRand: {
      // Over a dataset 4x the budget, in the steady state: an untimed
      // warm-up first (its misses are mostly first touches, the same for
      // every policy), then the timed accesses. zipf: 2 x pages of warm-up
      // (the pages touched, ~36% of the dataset at s = 1, outgrow the
      // budget), 2 x pages timed. rand: uniform with repetition, pages / 4
      // of warm-up, pages / 2 timed (nothing to learn; at most a quarter
      // can hit).
      const bool zipf = w == Workload::kBudgetZipf;
      const size_t npages = p.budget_npages ? p.budget_npages : p.npages;
      plan.npages = npages;
      plan.warmup = zipf ? 2 * npages : std::max<size_t>(1, npages / 4);
      const size_t count = plan.warmup + (zipf ? 2 * npages : std::max<size_t>(1, npages / 2));
      plan.pages.resize(count);
      if (!zipf) {
        for (auto& pg : plan.pages) pg = static_cast<uint32_t>(rng.below(npages));
        break;
      }
      std::vector<uint32_t> perm = shuffled_prefix(npages, npages, rng);
      std::vector<double> cdf(npages);
      double acc = 0;
      for (size_t r = 0; r < npages; ++r) {
        acc += 1.0 / std::pow(static_cast<double>(r + 1), p.zipf_s);
        cdf[r] = acc;
      }
      for (auto& pg : plan.pages) {
        double u = rng.unit() * acc;
        size_t r = std::min<size_t>(static_cast<size_t>(std::lower_bound(cdf.begin(), cdf.end(), u) - cdf.begin()),
                                    npages - 1);
        pg = perm[r];
      }
      break;
    }
    case Workload::kReserve:
      throw std::logic_error("no plan for reserve");
    case Workload::kRestore:
      return make_restore_plan(p.npages, p.fraction);
    case Workload::kMigrate:  // (the live_migration process writes its own pages)
    case Workload::kLiveSnapshot: {  // (its writers write their own pages)
      Plan plan;
      plan.workload = w;
      return plan;
    }
    case Workload::kVmRestore: {  // (run by the VMM process, which makes the same plan)
      Plan plan = make_restore_plan(p.npages, p.fraction);
      plan.workload = Workload::kVmRestore;
      return plan;
    }
  }
  uint64_t sum = 0;
  if (w == Workload::kSeq || w == Workload::kCopy) {
    for (size_t pg = 0; pg < p.npages; ++pg) sum += data_word(probe_word_index(pg));
  } else {
    for (uint32_t pg : plan.pages) sum += data_word(probe_word_index(pg));
  }
  plan.expected_sum = sum;
  return plan;
}

void prepare_output(const Plan& plan, WorkOutput& out) {
  out.sum = 0;
  if (plan.time_each) {
    out.lat_ns.assign(plan.pages.size(), 0);  // zero-filled: touched now, not in the timed window
  } else {
    out.lat_ns.clear();
  }
}

uint64_t touch_seq(const std::byte* base, size_t size) {
  const size_t npages = size / kPage;
  uint64_t sum = 0;
  for (size_t pg = 0; pg < npages; ++pg) sum += load_probe(base, pg);
  return sum;
}

uint64_t touch_pages(const std::byte* base, size_t size, const uint32_t* pages, size_t n, uint64_t* lat_ns) {
  (void)size;
  uint64_t sum = 0;
  if (lat_ns) {
    for (size_t i = 0; i < n; ++i) {
      uint64_t t0 = clock_ns();
      uint64_t v = load_probe(base, pages[i]);
      uint64_t t1 = clock_ns();
      lat_ns[i] = t1 - t0;
      sum += v;
    }
  } else {
    for (size_t i = 0; i < n; ++i) sum += load_probe(base, pages[i]);
  }
  return sum;
}

void run_workload(const std::byte* base, size_t size, const Plan& plan, WorkOutput& out) {
  uint64_t* lat = plan.time_each ? out.lat_ns.data() : nullptr;
  switch (plan.workload) {
    case Workload::kSeq:
    case Workload::kCopy:
      out.sum = touch_seq(base, size);
      return;
    case Workload::kRand:
    case Workload::kZipf:
    case Workload::kBudgetZipf:
    case Workload::kBudgetRand:
      out.sum = touch_pages(base, size, plan.pages.data(), plan.pages.size(), lat);
      return;
    case Workload::kMtRand: {
      const int t = std::max(1, plan.threads);
      const size_t n = plan.pages.size();
      std::vector<uint64_t> sums(static_cast<size_t>(t), 0);
      std::vector<std::thread> threads;
      threads.reserve(static_cast<size_t>(t));
      for (int i = 0; i < t; ++i) {
        size_t lo = n * static_cast<size_t>(i) / static_cast<size_t>(t);
        size_t hi = n * static_cast<size_t>(i + 1) / static_cast<size_t>(t);
        threads.emplace_back([&, i, lo, hi] {
          sums[static_cast<size_t>(i)] = touch_pages(base, size, plan.pages.data() + lo, hi - lo, lat ? lat + lo : nullptr);
        });
      }
      for (auto& th : threads) th.join();
      out.sum = std::accumulate(sums.begin(), sums.end(), uint64_t{0});
      return;
    }
    case Workload::kRestore:
    case Workload::kVmRestore:
      out.sum = touch_pages(base, size, plan.pages.data(), plan.pages.size(), nullptr);
      return;
    case Workload::kReserve:
    case Workload::kWriteFlush:  // writes: see writeback_runs.cc
    case Workload::kMigrate:     // another process: see migrate_runs.cc
    case Workload::kLiveSnapshot:  // its own writers: see live_snapshot_runs.cc
      break;
  }
  throw std::logic_error("run_workload: unsupported workload");
}

}  // namespace fbench

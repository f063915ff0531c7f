// SPDX-License-Identifier: Apache-2.0
#include "faultline/runtime.h"

#include <errno.h>
#include <linux/mman.h>  // MAP_HUGE_2MB
#include <sys/mman.h>
#include <unistd.h>

#include <bit>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <string>

#include "engine.h"
#include "faultline/error.h"
#include "stats_writer.h"
#include "test_options.h"

namespace faultline {

namespace {

constexpr uint64_t kMaxRegionBytes = uint64_t{1} << 46;  // 64 TiB: beyond any sane reservation

std::string field(const char* name, uint64_t value) {
  return std::string("RegionOptions.") + name + " = " + std::to_string(value);
}

}  // namespace

namespace detail {
// Shared with the Engine (RuntimeOptions.budget).
void validate_budget(const std::string& name, const MemoryBudget& b) {
  auto bad = [&](const char* field, double v, const char* rule) {
    throw Error(name + "." + field + " = " + std::to_string(v) + ": " + rule);
  };
  if (!std::isfinite(b.high) || b.high <= 0 || b.high > 1) bad("high", b.high, "must be in (0, 1]");
  if (!std::isfinite(b.low) || b.low <= 0 || b.low > b.high)
    bad("low", b.low, ("must be in (0, high] (high = " + std::to_string(b.high) + ")").c_str());
}
}  // namespace detail

namespace {

void validate(const Backend& backend, const RegionOptions& o, const RuntimeOptions& ro) {
  if (o.fill_size < 4096 || o.fill_size > 2 * 1024 * 1024 || !std::has_single_bit(o.fill_size))
    throw Error(field("fill_size", o.fill_size) + ": must be a power of two from 4096 to 2097152");
  if (o.page_size != detail::kPageSize && o.page_size != detail::kHugePageSize)
    throw Error(field("page_size", o.page_size) + ": must be 4096 or 2097152 (2 MiB huge pages)");
  if (o.page_size == detail::kHugePageSize) {
    auto refuse = [](const std::string& what) {
      throw Error(what + " does not work with 2 MiB pages (RegionOptions.page_size = 2097152)");
    };
    if (o.fill_size != o.page_size)
      refuse(field("fill_size", o.fill_size) + " (huge pages are placed whole: it must be 2097152)");
    if (o.budget.bytes || ro.budget.bytes) refuse("a memory budget");
    if (o.track_dirty) refuse("RegionOptions.track_dirty");
    if (o.write_back) refuse("RegionOptions.write_back");
  }
  if (o.shared_memory) {
    auto refuse = [](const std::string& what) {
      throw Error(what + " does not work with RegionOptions.shared_memory");
    };
    if (o.page_size != detail::kPageSize) refuse(field("page_size", o.page_size));
    if (o.budget.bytes || ro.budget.bytes) refuse("a memory budget");
    if (o.track_dirty) refuse("RegionOptions.track_dirty");
    if (o.write_back) refuse("RegionOptions.write_back");
    if (o.reload_removed) refuse("RegionOptions.reload_removed (the memfd keeps the bytes)");
  }
  if (o.readahead && (o.readahead_max < o.fill_size || o.readahead_max > (uint64_t{1} << 30)))
    throw Error(field("readahead_max", o.readahead_max) + ": must be at least fill_size (" +
                std::to_string(o.fill_size) + ") and at most 1 GiB");
  if (!detail::is_policy(o.eviction))
    throw Error(field("eviction", static_cast<uint64_t>(o.eviction)) + ": not an EvictionPolicy");
  if (o.budget.bytes) {
    detail::validate_budget("RegionOptions.budget", o.budget);
    if (o.budget.bytes < 4 * uint64_t{o.fill_size})
      throw Error(field("budget.bytes", o.budget.bytes) + ": must be 0 (no budget) or at least 4 fills (4 x fill_size " +
                  std::to_string(o.fill_size) + " = " + std::to_string(4 * uint64_t{o.fill_size}) + ")");
  }
  if (ro.budget.bytes && ro.budget.bytes < 4 * uint64_t{o.fill_size})
    throw Error("RuntimeOptions.budget.bytes = " + std::to_string(ro.budget.bytes) +
                " holds fewer than 4 fills of this region (" + field("fill_size", o.fill_size) + ")");
  uint64_t size = backend.size();
  if (size == 0) throw Error("backend " + backend.name() + " is empty: nothing to map");
  if (o.offset >= size)
    throw Error(field("offset", o.offset) + " is past the end of " + backend.name() + " (" + std::to_string(size) +
                " bytes)");
  if (uint32_t a = backend.alignment(); a > 1 && o.offset % a != 0)
    throw Error(field("offset", o.offset) + ": " + backend.name() + " needs offsets aligned to " + std::to_string(a) +
                " bytes");
  if (o.length > kMaxRegionBytes)
    throw Error(field("length", o.length) + ": larger than the 64 TiB a region may reserve");
  if ((o.track_dirty || o.write_back) && !o.writable)
    throw Error(std::string("RegionOptions.") + (o.write_back ? "write_back" : "track_dirty") +
                " = true needs RegionOptions.writable = true");
  if (o.write_back) {
    if (!backend.writable())
      throw Error("RegionOptions.write_back = true: backend " + backend.name() + " cannot be written: " +
                  backend.read_only_reason());
    if (o.length > size - o.offset)
      throw Error(field("length", o.length) + " with RegionOptions.write_back: the region must lie within " +
                  backend.name() + " (" + std::to_string(size - o.offset) + " bytes from offset " +
                  std::to_string(o.offset) + "); bytes past its end could not be written back");
  }
}

// A private mapping of 2 MiB pages from the reserved pool. mmap takes them
// from the pool at once, so too few fails here, with the figures, rather
// than with SIGBUS on a later fault.
void* map_huge_pages(uint64_t len, int prot) {
  void* p = mmap(nullptr, len, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_HUGE_2MB, -1, 0);
  if (p != MAP_FAILED) return p;
  int err = errno;
  if (err != ENOMEM) throw_errno("cannot map " + std::to_string(len) + " bytes of 2 MiB huge pages", err);
  std::string free_pages = "unknown";
  std::ifstream meminfo("/proc/meminfo");
  for (std::string line; std::getline(meminfo, line);)
    if (line.rfind("HugePages_Free:", 0) == 0) free_pages = line.substr(line.find_first_not_of(" ", 15));
  throw Error("cannot map " + std::to_string(len) + " bytes of 2 MiB huge pages: " +
              std::to_string(len / detail::kHugePageSize) + " are needed and " + free_pages +
              " are free (HugePages_Free in /proc/meminfo); reserve more with sysctl vm.nr_hugepages=N");
}

// A shared-memory region: a memfd of `len` bytes (l->shared_fd), mapped
// shared for the application (returned; registered by the caller). The
// runtime fills it with pwrite, never through a mapping of its own.
void* map_shared_memory(uint64_t len, int prot, detail::RegionLayout* l) {
  l->shared_fd = detail::UniqueFd(memfd_create("faultline-region", MFD_CLOEXEC));
  if (!l->shared_fd) throw_errno("RegionOptions.shared_memory: memfd_create", errno);
  if (ftruncate(l->shared_fd.get(), static_cast<off_t>(len)) != 0)
    throw_errno("RegionOptions.shared_memory: cannot size the memfd to " + std::to_string(len) + " bytes", errno);
  return mmap(nullptr, len, prot, MAP_SHARED | MAP_NORESERVE, l->shared_fd.get(), 0);
}

}  // namespace

Runtime::Runtime(const RuntimeOptions& options) : Runtime(options, detail::EngineTestOptions{}) {}

Runtime detail::make_runtime(const RuntimeOptions& options, const EngineTestOptions& test) {
  return Runtime(options, test);
}

Runtime::Runtime(const RuntimeOptions& options, const detail::EngineTestOptions& test) {
  if (!options.stats_file.empty() &&
      (options.stats_interval < std::chrono::milliseconds(10) || options.stats_interval > std::chrono::hours(24)))
    throw Error("RuntimeOptions.stats_interval = " + std::to_string(options.stats_interval.count()) +
                " ms: must be from 10 ms to 1 day");
  engine_ = std::make_shared<detail::Engine>(options, test);
  if (!options.stats_file.empty())
    stats_writer_ = std::make_unique<detail::StatsWriter>(
        options.stats_file, options.stats_interval, [engine = engine_] { return engine->stats().to_json(); },
        options.log);
}

Runtime::~Runtime() = default;

const UffdMode& Runtime::mode() const { return engine_->mode(); }

StatsSnapshot Runtime::stats() const { return engine_->stats(); }

namespace {

// The layout of a region over `backend` as map() and map_foreign() share
// it (validated options, with the runtime's adjustments); `budget` is the
// tightest budget over it, 0 if none. The address range is the caller's.
detail::RegionLayout plan_region(std::shared_ptr<Backend> backend, const RegionOptions& options,
                                 const RuntimeOptions& ro, uint64_t length, uint64_t* budget_out) {
  detail::RegionLayout l;
  l.options = options;
  if (options.record_touches) l.options.readahead = false;  // see RegionOptions.record_touches
  if (options.write_back) l.options.track_dirty = true;
  // The tightest budget over this region caps read-ahead (and read-around)
  // at an eighth of it: a stream must not evict what it is about to read.
  uint64_t budget = options.budget.bytes;
  if (uint64_t rb = ro.budget.bytes; rb && (!budget || rb < budget)) budget = rb;
  if (budget)
    l.options.readahead_max =
        std::max<uint64_t>(options.fill_size, std::min(options.readahead_max, budget / 8) / options.fill_size * options.fill_size);
  l.length = length;
  l.data_end = std::min(l.length, backend->size() - options.offset);
  l.fill_shift = static_cast<uint32_t>(std::countr_zero(options.fill_size));
  uint64_t map_len = (l.length + detail::kPageSize - 1) & ~(detail::kPageSize - 1);
  l.chunks = (map_len + options.fill_size - 1) >> l.fill_shift;
  l.backend = std::move(backend);
  *budget_out = budget;
  return l;
}

// The loop's state of a new region: page map, read-ahead, budget, record.
std::shared_ptr<detail::RegionState> new_region_state(detail::RegionLayout l, uint64_t budget) {
  const RegionOptions options = l.options;
  auto r = std::make_shared<detail::RegionState>(std::move(l));
  r->loop.present = detail::ChunkBitmap(r->chunks, "page map");
  // Read-around hides read latency: only for backends whose reads take time.
  r->loop.readahead = detail::ReadaheadDetector(r->chunks, r->fill_shift, r->options.readahead_max,
                                           r->backend->completion_fd() >= 0);
  r->loop.resident_bits = detail::ChunkBitmap(r->chunks, "resident map");
  if (budget) {
    r->loop.budget.limit = options.budget;
    r->loop.dropping_bits = detail::ChunkBitmap(r->chunks, "eviction map");
    r->loop.policy = detail::make_policy(options.eviction, r->chunks, std::max<uint64_t>(4, budget >> r->fill_shift));
  }
  if (options.record_touches) r->loop.touched_bits = detail::ChunkBitmap(r->chunks, "touch record");
  return r;
}

}  // namespace

Region Runtime::map(std::shared_ptr<Backend> backend, const RegionOptions& options) {
  if (!backend) throw Error("Runtime::map: the backend is null");
  validate(*backend, options, engine_->options());
  if (options.shared_memory && !engine_->mode().minor_shmem)
    throw Error("RegionOptions.shared_memory: the kernel does not offer UFFD_FEATURE_MINOR_SHMEM (Linux 5.13+)");
  if ((options.track_dirty || options.write_back) && !engine_->mode().wp_async)
    throw Error(std::string("RegionOptions.") + (options.write_back ? "write_back" : "track_dirty") +
                ": the kernel does not offer UFFD_FEATURE_WP_ASYNC (Linux 6.7+ needed for dirty tracking)");
  uint64_t budget = 0;
  uint64_t length = options.length ? options.length : backend->size() - options.offset;
  detail::RegionLayout l = plan_region(std::move(backend), options, engine_->options(), length, &budget);
  l.space = engine_->own_space();
  const uint64_t page = options.page_size;
  uint64_t map_len = (l.length + page - 1) & ~(page - 1);

  int prot = options.writable ? PROT_READ | PROT_WRITE : PROT_READ;
  void* p;
  if (options.shared_memory)
    p = map_shared_memory(map_len, prot, &l);
  else if (page == detail::kPageSize)
    p = mmap(nullptr, map_len, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  else
    p = map_huge_pages(map_len, prot);
  if (p == MAP_FAILED) throw_errno("cannot reserve " + std::to_string(map_len) + " bytes for a region", errno);
  l.memory = detail::Mapping(p, map_len);
  // 4 KiB precision (UFFDIO_COPY of 4 KiB pages never makes transparent
  // huge pages anyway). A forked child gets a copy served on its own
  // userfaultfd (UFFD_EVENT_FORK); without that event, it must not
  // inherit a range nobody serves for it.
  if (page == detail::kPageSize) madvise(p, map_len, MADV_NOHUGEPAGE);
  if (!engine_->mode().event_fork || !engine_->options().serve_forks || options.shared_memory)
    madvise(p, map_len, MADV_DONTFORK);  // (shared memory: see RegionOptions::shared_memory)
  auto r = new_region_state(std::move(l), budget);

  if (r->options.track_dirty) {
    r->dirty = std::make_unique<detail::DirtyLog>(reinterpret_cast<uintptr_t>(p), map_len);
    if (options.write_back)
      r->writeback = std::make_unique<detail::WriteBack>(
          engine_->uffd(), detail::WriteBackTarget{r->backend.get(), r->options.offset, r->memory.data(), r->length,
                                                   r->dirty.get(), engine_->options().log});
  }

  detail::uffd_register(engine_->uffd(), p, map_len, r->options.track_dirty, r->shared());
  try {
    engine_->add_region(r);
  } catch (...) {
    detail::uffd_unregister(engine_->uffd(), p, map_len);
    throw;
  }
  return Region(engine_, std::move(r));
}

Region Runtime::map_foreign(const ForeignSpace& space, uintptr_t address, uint64_t length,
                            std::shared_ptr<Backend> backend, const RegionOptions& options) {
  if (!space.link_) throw Error("Runtime::map_foreign: the ForeignSpace is empty");
  if (space.engine_ != engine_) throw Error("Runtime::map_foreign: the ForeignSpace was adopted by another Runtime");
  if (!backend) throw Error("Runtime::map_foreign: the backend is null");
  auto refuse = [](const std::string& what) {
    throw Error("Runtime::map_foreign: " + what + " does not apply to another process's memory (docs/firecracker.md)");
  };
  // Each of these would touch the memory from this process: drop pages
  // (budget), write-protect and read them (dirty tracking, write-back).
  if (options.budget.bytes) refuse("RegionOptions.budget.bytes = " + std::to_string(options.budget.bytes));
  if (engine_->options().budget.bytes)
    refuse("RuntimeOptions.budget.bytes = " + std::to_string(engine_->options().budget.bytes) +
           " (use a Runtime without a budget)");
  if (options.track_dirty) refuse("RegionOptions.track_dirty");
  if (options.write_back) refuse("RegionOptions.write_back");
  if (options.writable) refuse("RegionOptions.writable (its owner sets the protection)");
  if (options.length && options.length != length)
    throw Error("Runtime::map_foreign: " + field("length", options.length) + " differs from the length argument (" +
                std::to_string(length) + "); leave it 0");
  if (length == 0 || length % options.page_size || address % options.page_size || address + length < address)
    throw Error("Runtime::map_foreign: address " + std::to_string(address) + " and length " + std::to_string(length) +
                " must be non-zero multiples of the page size (" + std::to_string(options.page_size) +
                ") within the address space");
  validate(*backend, options, engine_->options());
  uint64_t budget = 0;
  detail::RegionLayout l = plan_region(std::move(backend), options, engine_->options(), length, &budget);
  l.space = space.link_->space;
  l.foreign = space.link_;
  l.memory = detail::Mapping::borrowed(reinterpret_cast<void*>(address), length);
  auto r = new_region_state(std::move(l), 0);
  engine_->add_region(r);  // (refused if the process has exited, or on overlap)
  return Region(engine_, std::move(r));
}

}  // namespace faultline

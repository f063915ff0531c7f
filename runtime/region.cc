// SPDX-License-Identifier: Apache-2.0
#include "faultline/region.h"

#include <sys/mman.h>

#include <algorithm>
#include <cstdio>

#include "engine.h"
#include "faultline/error.h"
#include "log.h"

namespace faultline {

Region::Region(std::shared_ptr<detail::Engine> engine, std::shared_ptr<detail::RegionState> state)
    : engine_(std::move(engine)), state_(std::move(state)) {}

Region::Region(Region&& other) noexcept = default;

Region& Region::operator=(Region&& other) noexcept {
  if (this != &other) {
    reset();
    engine_ = std::move(other.engine_);
    state_ = std::move(other.state_);
  }
  return *this;
}

Region::~Region() { reset(); }

void Region::reset() {
  if (!state_) return;
  if (state_->writeback) {
    try {
      state_->writeback->flush();
    } catch (const Error& e) {
      detail::logf(state_->writeback->log(), LogLevel::kError,
                   "closing a write-back region over %s: %s; %llu bytes written since the last "
                   "successful flush are LOST (use Region::close() to handle this)",
                   state_->backend->name().c_str(), e.what(),
                   static_cast<unsigned long long>(state_->writeback->pending_bytes()));
    }
  }
  // First the loop forgets the region and its reads finish; then the
  // unregister wakes any thread still waiting on it; then the unmap.
  engine_->remove_region(state_.get());
  // A foreign range stays registered: its owner registered it, and faults
  // there must wait rather than read zeros (faultline/foreign.h).
  if (!state_->foreign) {
    // Where it is now (an mremap moves it), and only what the application
    // left mapped: a range it unmapped may hold another mapping by now.
    uintptr_t base = state_->base();
    state_->loop.unmapped.for_each_outside(0, state_->memory.size(), [&](uint64_t s, uint64_t e) {
      detail::uffd_unregister(engine_->uffd(), reinterpret_cast<void*>(base + s), e - s);
      if (!state_->loop.unmapped.empty()) munmap(reinterpret_cast<void*>(base + s), e - s);
    });
    if (!state_->loop.unmapped.empty()) state_->memory.release();
  }
  state_.reset();
  engine_.reset();
}

std::byte* Region::data() const {
  return state_ && !state_->foreign ? reinterpret_cast<std::byte*>(state_->base()) : nullptr;
}

int Region::shared_memory_fd() const { return state_ && state_->shared() ? state_->shared_fd.get() : -1; }

uintptr_t Region::address() const { return state_ ? state_->base() : 0; }

size_t Region::size() const { return state_ ? state_->length : 0; }

const RegionOptions& Region::options() const {
  static const RegionOptions kNone{};
  return state_ ? state_->options : kNone;
}

void Region::prefetch(uint64_t offset, uint64_t length) {
  if (!state_) throw Error("Region::prefetch on an empty region");
  if (offset >= state_->length)
    throw Error("Region::prefetch: offset " + std::to_string(offset) + " is past the end of the region (" +
                std::to_string(state_->length) + " bytes)");
  engine_->prefetch(state_.get(), offset, length);
}

std::vector<uint64_t> Region::touched_chunks() const {
  if (!state_) throw Error("Region::touched_chunks on an empty region");
  if (!state_->options.record_touches)
    throw Error("Region::touched_chunks: the region was mapped without RegionOptions.record_touches");
  std::vector<uint64_t> offsets;
  {
    detail::MutexLock lock(state_->touched_mu);
    offsets = state_->touched;
  }
  for (uint64_t& chunk : offsets) chunk <<= state_->fill_shift;
  return offsets;
}

void Region::prefetch_chunks(std::span<const uint64_t> offsets) {
  if (!state_) throw Error("Region::prefetch_chunks on an empty region");
  // Runs of consecutive chunks become one span each.
  std::vector<detail::RegionState::Span> spans;
  for (size_t i = 0; i < offsets.size(); ++i) {
    if (offsets[i] >= state_->length)
      throw Error("Region::prefetch_chunks: offsets[" + std::to_string(i) + "] = " + std::to_string(offsets[i]) +
                  " is past the end of the region (" + std::to_string(state_->length) + " bytes)");
    uint64_t chunk = offsets[i] >> state_->fill_shift;
    if (!spans.empty() && spans.back().last == chunk)
      spans.back().last++;
    else
      spans.push_back({chunk, chunk + 1, detail::ReadOp::Kind::kPrefetch});
  }
  engine_->prefetch_spans(state_.get(), std::move(spans));
}

void Region::drain() {
  if (!state_) throw Error("Region::drain on an empty region");
  engine_->drain(state_.get());
}

std::vector<DirtyRange> Region::take_dirty() {
  if (!state_) throw Error("Region::take_dirty on an empty region");
  if (!state_->dirty)
    throw Error("Region::take_dirty: the region was mapped without RegionOptions.track_dirty");
  if (state_->writeback)
    throw Error("Region::take_dirty: the region is a write-back region; its dirty log belongs to flush()");
  std::vector<DirtyRange> out;
  for (const detail::PageRun& run : state_->dirty->take()) {
    uint64_t offset = run.first * detail::kPageSize;
    out.push_back({offset, std::min(run.count * detail::kPageSize, state_->length - offset)});
  }
  return out;
}

void Region::flush() {
  if (!state_) throw Error("Region::flush on an empty region");
  if (!state_->writeback) throw Error("Region::flush: the region was mapped without RegionOptions.write_back");
  state_->writeback->flush();
}

void Region::close() {
  if (state_ && state_->writeback) state_->writeback->flush();
  reset();
}

StatsSnapshot Region::stats() const { return state_ ? state_->stats.snapshot() : StatsSnapshot{}; }

}  // namespace faultline

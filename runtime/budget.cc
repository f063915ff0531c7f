// SPDX-License-Identifier: Apache-2.0
// Memory budgets, the fault loop's side: what is resident, when to evict,
// which chunks go (the regions' policies, eviction.cc), and placements that
// wait for drops. The drops themselves run on the evictor thread
// (evictor.cc) and come back as kDropped commands.
//
// Resident bytes count whole chunks, from their placement to the report
// that their drop finished (or to the REMOVE/UNMAP event of the
// application's own madvise or munmap). A placement that would take a
// budget past its bytes waits while drops are in flight, so resident
// memory stays within the budget; only the reads in flight (in staging)
// come on top.
#include <algorithm>
#include <queue>

#include "engine.h"

namespace faultline::detail {

namespace {

uint64_t fraction(uint64_t bytes, double f) { return static_cast<uint64_t>(static_cast<double>(bytes) * f); }

}  // namespace

bool Engine::can_drop(RegionState& r, uint64_t chunk) {
  (void)chunk;
  // Write-back regions: the evictor writes the chunk's changed pages back
  // as it drops it (WriteBack::drop_chunk), which needs UFFDIO_MOVE.
  if (r.writeback) return uffd_.mode.move;
  // Private writable regions: a written chunk exists only here. Without
  // write tracking every chunk may have been written, so none is dropped.
  return !r.options.writable;
}

void Engine::note_resident(RegionState* r, uint64_t chunk) {
  if (RegionState::bit(r->resident_bits, chunk)) return;
  RegionState::set_bit(r->resident_bits, chunk, true);
  uint64_t len = r->chunk_length(chunk);
  r->resident += len;
  resident_ += len;
  count(r, &Stats::resident_bytes, len);
  if (!r->policy) return;
  r->policy->placed(chunk, ++placement_tick_);
  maybe_evict(r);
}

// The application dropped or unmapped a resident chunk.
void Engine::note_gone(RegionState* r, uint64_t chunk) {
  RegionState::set_bit(r->resident_bits, chunk, false);
  uint64_t len = r->chunk_length(chunk);
  r->resident -= len;
  resident_ -= len;
  count(r, &Stats::resident_bytes, 0 - len);
  if (r->policy) r->policy->forget(chunk);
}

bool Engine::hold_for_budget(ReadOp* op) {
  RegionState* r = op->region;
  if (RegionState::bit(r->dropping_bits, op->chunk)) return true;
  if (RegionState::bit(r->resident_bits, op->chunk)) return false;
  uint64_t len = op->length;
  bool region_full = r->budget.bytes && r->resident + r->reserved + len > r->budget.bytes;
  bool runtime_full = options_.budget.bytes && resident_ + reserved_ + len > options_.budget.bytes;
  // Counted from now on: a placement deferred by EAGAIN must not let
  // others past the budget before it completes.
  auto reserve = [&] {
    op->reserved = static_cast<uint32_t>(len);
    r->reserved += len;
    reserved_ += len;
    return false;
  };
  if (!region_full && !runtime_full) return reserve();
  maybe_evict(r);
  // Below the high watermark but full (fills large against the budget):
  // make room for this one chunk at least.
  // (A pass that found nothing droppable is not repeated for every
  // placement: see evict_retry_at.)
  if (region_full && r->dropping == 0 && r->resident >= r->evict_retry_at) {
    uint64_t want = r->resident + r->reserved + len - fraction(r->budget.bytes, r->budget.low);
    if (evict(r, want) == 0) r->evict_retry_at = r->resident + std::max<uint64_t>(1, r->budget.bytes / 16);
  }
  if (runtime_full && dropping_ == 0 && resident_ >= evict_retry_at_) {
    uint64_t want = resident_ + reserved_ + len - fraction(options_.budget.bytes, options_.budget.low);
    if (evict(nullptr, want) == 0) evict_retry_at_ = resident_ + std::max<uint64_t>(1, options_.budget.bytes / 16);
  }
  // Wait for the drops under way; with none (nothing may be dropped), go
  // over the budget rather than stall the application for good.
  if ((region_full && r->dropping > 0) || (runtime_full && dropping_ > 0)) return true;
  return reserve();
}

void Engine::unreserve(ReadOp* op) {
  if (!op->reserved) return;
  op->region->reserved -= op->reserved;
  reserved_ -= op->reserved;
  op->reserved = 0;
}

void Engine::maybe_evict(RegionState* r) {
  if (const MemoryBudget& b = r->budget; b.bytes) {
    uint64_t kept = r->resident + r->reserved - r->dropping;
    if (kept > fraction(b.bytes, b.high) && r->resident >= r->evict_retry_at) {
      uint64_t want = kept - fraction(b.bytes, b.low);
      if (evict(r, want) < want) r->evict_retry_at = r->resident + std::max<uint64_t>(1, b.bytes / 16);
    }
  }
  if (const MemoryBudget& b = options_.budget; b.bytes) {
    uint64_t kept = resident_ + reserved_ - dropping_;
    if (kept > fraction(b.bytes, b.high) && resident_ >= evict_retry_at_) {
      uint64_t want = kept - fraction(b.bytes, b.low);
      if (evict(nullptr, want) < want) evict_retry_at_ = resident_ + std::max<uint64_t>(1, b.bytes / 16);
    }
  }
}

// Picks victims worth `bytes` from one region, or from every region (the
// runtime's budget): there, the region whose next victim was placed longest
// ago gives it, so regions compete by age as in one list. Hands them to the
// evictor and returns the bytes chosen.
uint64_t Engine::evict(RegionState* only, uint64_t bytes) {
  using Candidate = std::pair<uint64_t, RegionState*>;  // (tick, region)
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> next;
  auto offer = [&](RegionState* r) {
    uint64_t chunk, tick;
    if (r->policy && !r->dead && r->policy->peek_victim(&chunk, &tick)) next.emplace(tick, r);
  };
  uint64_t tries = 0;
  if (only) {
    offer(only);
    tries = only->policy->resident();
  } else {
    for (auto& [base, r] : regions_) {
      offer(r);
      if (r->policy) tries += r->policy->resident();
    }
  }
  std::vector<Drop> drops;
  uint64_t chosen = 0;
  while (chosen < bytes && !next.empty() && tries-- > 0) {
    RegionState* r = next.top().second;
    next.pop();
    uint64_t chunk, tick;
    r->policy->peek_victim(&chunk, &tick);
    if (!can_drop(*r, chunk)) {
      r->policy->keep(chunk, ++placement_tick_);
    } else {
      r->policy->evict(chunk);
      RegionState::set_bit(r->dropping_bits, chunk, true);
      uint64_t len = r->chunk_length(chunk);
      r->dropping += len;
      dropping_ += len;
      r->in_flight++;  // the region stays mapped until the drop is reported
      drops.push_back({r, chunk, r->base() + (chunk << r->fill_shift), len});
      chosen += len;
    }
    offer(r);
  }
  if (!drops.empty()) {
    if (!evictor_)
      evictor_ = std::make_unique<Evictor>(
          [this](std::vector<Drop> done) {
            Command c{Command::Type::kDropped};
            c.drops = std::move(done);
            send(std::move(c));
          },
          uffd(), uffd_.mode.move && options_.evict_with_move);
    evictor_->submit(std::move(drops));
  }
  return chosen;
}

void Engine::on_dropped(const std::vector<Drop>& drops) {
  for (const Drop& d : drops) {
    RegionState* r = d.region;
    RegionState::set_bit(r->dropping_bits, d.chunk, false);
    r->dropping -= d.length;
    dropping_ -= d.length;
    // Moved out, no REMOVE event: the chunk is absent from now on. (After
    // an madvise the REMOVE said so already.)
    r->set_present(d.chunk, false);
    if (d.kept) {  // a write-back chunk that could not be written: resident again
      if (!r->dead && RegionState::bit(r->resident_bits, d.chunk)) r->policy->placed(d.chunk, ++placement_tick_);
      r->in_flight--;
      if (r->dead && r->in_flight == 0 && r->ops.empty()) finish_removal(r);
      continue;
    }
    if (RegionState::bit(r->resident_bits, d.chunk)) {
      RegionState::set_bit(r->resident_bits, d.chunk, false);
      r->resident -= d.length;
      resident_ -= d.length;
      count(r, &Stats::resident_bytes, 0 - d.length);
    }
    count(r, &Stats::evicted_chunks, 1);
    count(r, &Stats::evicted_bytes, d.length);
    r->in_flight--;
    if (r->dead && r->in_flight == 0 && r->ops.empty()) finish_removal(r);
  }
  // Held placements try again now (one may be held again).
  std::vector<ReadOp*> held;
  held.swap(held_);
  for (ReadOp* op : held) install(op, false);
  flush_wakes();
}

}  // namespace faultline::detail

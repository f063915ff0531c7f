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

bool Engine::can_drop(RegionState& r, uint64_t chunk) {
  FAULTLINE_ASSERT_LOOP(loop_);
  (void)chunk;
  // Write-back regions: the evictor writes the chunk's changed pages back
  // as it drops it (WriteBack::drop_chunk), which needs UFFDIO_MOVE.
  if (r.writeback) return r.space->uffd.mode.move;
  // Private writable regions: a written chunk exists only here. Without
  // write tracking every chunk may have been written, so none is dropped.
  return !r.options.writable;
}

void Engine::note_resident(RegionState* r, uint64_t chunk) {
  FAULTLINE_ASSERT_LOOP(loop_);
  if (r->forked) return;  // a child's memory: no budget applies
  if (r->loop.resident_bits.test_and_set(chunk)) return;
  uint64_t len = r->chunk_length(chunk);
  r->loop.budget.resident += len;
  budget_.resident += len;
  count(r, &Stats::resident_bytes, len);
  if (!r->loop.policy) return;
  r->loop.policy->placed(chunk, ++placement_tick_);
  maybe_evict(r);
}

// The application dropped or unmapped a resident chunk.
void Engine::note_gone(RegionState* r, uint64_t chunk) {
  FAULTLINE_ASSERT_LOOP(loop_);
  if (r->forked) return;
  r->loop.resident_bits.clear(chunk);
  uint64_t len = r->chunk_length(chunk);
  r->loop.budget.resident -= len;
  budget_.resident -= len;
  count(r, &Stats::resident_bytes, 0 - len);
  if (r->loop.policy) r->loop.policy->forget(chunk);
}

bool Engine::hold_for_budget(ReadOp* op) {
  FAULTLINE_ASSERT_LOOP(loop_);
  RegionState* r = op->region;
  if (r->loop.dropping_bits.test(op->chunk)) return true;
  if (r->loop.resident_bits.test(op->chunk)) return false;
  uint64_t len = op->length;
  bool region_full = r->loop.budget.full_with(len);
  bool runtime_full = budget_.full_with(len);
  if (region_full || runtime_full) {
    maybe_evict(r);
    if (region_full) make_room(r->loop.budget, r, len);
    if (runtime_full) make_room(budget_, nullptr, len);
    // Wait for the drops under way; with none (nothing may be dropped), go
    // over the budget rather than stall the application for good.
    if ((region_full && r->loop.budget.dropping > 0) || (runtime_full && budget_.dropping > 0)) return true;
  }
  // Counted from now on: a placement deferred by EAGAIN must not let
  // others past the budget before it completes.
  op->reserved = static_cast<uint32_t>(len);
  r->loop.budget.reserved += len;
  budget_.reserved += len;
  return false;
}

// Below the high watermark but full (fills large against the budget):
// make room for this one chunk at least.
void Engine::make_room(BudgetAccount& account, RegionState* only, uint64_t bytes) {
  FAULTLINE_ASSERT_LOOP(loop_);
  if (account.dropping > 0 || !account.may_evict()) return;
  uint64_t want = account.resident + account.reserved + bytes - account.low_bytes();
  if (evict(only, want) == 0) account.found_too_little();
}

void Engine::unreserve(ReadOp* op) {
  FAULTLINE_ASSERT_LOOP(loop_);
  if (!op->reserved) return;
  op->region->loop.budget.reserved -= op->reserved;
  budget_.reserved -= op->reserved;
  op->reserved = 0;
}

void Engine::maybe_evict(RegionState* r) {
  FAULTLINE_ASSERT_LOOP(loop_);
  evict_above_high(r->loop.budget, r);
  evict_above_high(budget_, nullptr);
}

// Above the high watermark: evict down to the low one.
void Engine::evict_above_high(BudgetAccount& account, RegionState* only) {
  FAULTLINE_ASSERT_LOOP(loop_);
  if (!account.limited()) return;
  uint64_t kept = account.kept();
  if (kept <= account.high_bytes() || !account.may_evict()) return;
  uint64_t want = kept - account.low_bytes();
  if (evict(only, want) < want) account.found_too_little();
}

// Picks victims worth `bytes` from one region, or from every region (the
// runtime's budget): there, the region whose next victim was placed longest
// ago gives it, so regions compete by age as in one list. Hands them to the
// evictor and returns the bytes chosen.
uint64_t Engine::evict(RegionState* only, uint64_t bytes) {
  FAULTLINE_ASSERT_LOOP(loop_);
  using Candidate = std::pair<uint64_t, RegionState*>;  // (tick, region)
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> next;
  auto offer = [&](RegionState* r) {
    uint64_t chunk, tick;
    if (r->loop.policy && !r->loop.dead && r->loop.policy->peek_victim(&chunk, &tick)) next.emplace(tick, r);
  };
  uint64_t tries = 0;
  if (only) {
    offer(only);
    tries = only->loop.policy->resident();
  } else {
    for (auto& space : spaces_)
      for (auto& [base, r] : space->regions) {
        offer(r);
        if (r->loop.policy) tries += r->loop.policy->resident();
      }
  }
  std::vector<Drop> drops;
  uint64_t chosen = 0;
  while (chosen < bytes && !next.empty() && tries-- > 0) {
    RegionState* r = next.top().second;
    next.pop();
    uint64_t chunk, tick;
    r->loop.policy->peek_victim(&chunk, &tick);
    if (!can_drop(*r, chunk)) {
      r->loop.policy->keep(chunk, ++placement_tick_);
    } else {
      r->loop.policy->evict(chunk);
      r->loop.dropping_bits.set(chunk);
      uint64_t len = r->chunk_length(chunk);
      r->loop.budget.dropping += len;
      budget_.dropping += len;
      r->loop.in_flight++;  // the region stays mapped until the drop is reported
      drops.push_back({r, r->writeback.get(), chunk, r->base() + (chunk << r->fill_shift), len});
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
          uffd(), mode().move && test_.evict_with_move, options_.log);
    evictor_->submit(std::move(drops));
  }
  return chosen;
}

void Engine::on_dropped(const std::vector<Drop>& drops) {
  FAULTLINE_ASSERT_LOOP(loop_);
  for (const Drop& d : drops) {
    RegionState* r = d.region;
    r->loop.dropping_bits.clear(d.chunk);
    r->loop.budget.dropping -= d.length;
    budget_.dropping -= d.length;
    // Moved out, no REMOVE event: the chunk is absent from now on. (After
    // an madvise the REMOVE said so already.)
    r->loop.present.clear(d.chunk);
    if (d.kept) {  // a write-back chunk that could not be written: resident again
      if (!r->loop.dead && r->loop.resident_bits.test(d.chunk)) r->loop.policy->placed(d.chunk, ++placement_tick_);
      r->loop.in_flight--;
      if (r->loop.dead && r->loop.in_flight == 0 && r->loop.ops.empty()) finish_removal(r);
      continue;
    }
    if (r->loop.resident_bits.test(d.chunk)) {
      r->loop.resident_bits.clear(d.chunk);
      r->loop.budget.resident -= d.length;
      budget_.resident -= d.length;
      count(r, &Stats::resident_bytes, 0 - d.length);
    }
    count(r, &Stats::evicted_chunks, 1);
    count(r, &Stats::evicted_bytes, d.length);
    r->loop.in_flight--;
    if (r->loop.dead && r->loop.in_flight == 0 && r->loop.ops.empty()) finish_removal(r);
  }
  // Held placements try again now (one may be held again).
  std::vector<ReadOp*> held;
  held.swap(held_);
  for (ReadOp* op : held) {
    op->expect(ReadOp::Stage::kHeld);
    install(op, false);
  }
  flush_wakes();
}

}  // namespace faultline::detail

// SPDX-License-Identifier: Apache-2.0
// The fault path, start to finish:
//
//   read_messages   drain the userfaultfd; a fault either joins the read of
//                   its chunk already under way or queues a demand read
//   dispatch_*      start queued reads: demand first, then read-ahead and
//                   prefetch, within each backend's queue depth and the
//                   staging memory; one submit() per backend per batch
//   reap/complete   collect completions; retry short or failed reads, then
//                   poison what cannot be served
//   install         place the chunk (UFFDIO_COPY, or ZEROPAGE for zeros),
//                   DONTWAKE in batches, then one UFFDIO_WAKE per run of
//                   chunks that threads wait on. A placement may first wait
//                   for drops in flight (memory budgets, write-back), and
//                   one the kernel refuses for now (EAGAIN) is deferred
//
// Each read moves through the stages of ReadOp::Stage (read_op.h) as it
// goes; docs/design.md draws them. Everything here runs on the engine's
// single loop thread.
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "engine.h"

namespace faultline::detail {

namespace {

bool all_zero(const std::byte* p, size_t n) {
  // Most chunks hold data: the first word usually decides. (memcpy: lent
  // bytes need not be aligned.)
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    if (w != 0) return false;
  }
  for (size_t i = n & ~size_t{7}; i < n; ++i)
    if (p[i] != std::byte{0}) return false;
  return true;
}

uint64_t round_up(uint64_t v, uint64_t to) { return (v + to - 1) / to * to; }

// Whether the page at addr is mapped in this process (mincore on anonymous
// memory reports the page table entry). Only asked on the rare path of a
// fault on a chunk the runtime believes present.
bool page_mapped(uintptr_t addr) {
  unsigned char vec = 0;
  return mincore(reinterpret_cast<void*>(addr), kPageSize, &vec) != 0 || (vec & 1);
}

constexpr uint64_t kGiveUpPlacingNs = 30ull * 1000 * 1000 * 1000;

bool transient(int err) { return err == EAGAIN || err == EINTR || err == EBUSY; }

// The bytes past the backend's data are zeros; a chunk of zeros only is
// placed with ZEROPAGE.
void complete_bytes(ReadOp* op) {
  if (op->valid < op->length) {
    keep_in_staging(op);
    std::memset(op->staging + op->valid, 0, op->length - op->valid);
  }
  op->zero = all_zero(op->source ? op->source : op->staging, op->valid);
}

// Shared memory: `len` bytes into the memfd's page cache at `offset` of
// the region (pwrite: no mapping of the memfd in this process is touched).
// Returns 0 or an errno (ENOSPC, ENOMEM: the memfd cannot grow).
int shared_write(RegionState* r, uint64_t offset, const std::byte* src, uint64_t len) {
  for (uint64_t done = 0; done < len;) {
    ssize_t n = pwrite(r->shared_fd.get(), src + done, len - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? errno : EIO;
    done += static_cast<uint64_t>(n);
  }
  return 0;
}

// Shared memory: zero pages in the memfd's holes over [offset, offset +
// len) of the region (pages there are kept), so CONTINUE can map them.
int zero_fill_shared(RegionState* r, uint64_t offset, uint64_t len) {
  if (fallocate(r->shared_fd.get(), 0, static_cast<off_t>(offset), static_cast<off_t>(len)) == 0) return 0;
  return errno;
}

}  // namespace

void keep_in_staging(ReadOp* op) {
  if (!op->source) return;
  std::memcpy(op->staging, op->source, op->valid);
  op->source = nullptr;
}

// ---- Messages from the kernel -------------------------------------------

void Engine::read_messages(UffdSpace& space) {
  FAULTLINE_ASSERT_LOOP(loop_);
  uffd_msg msgs[64];
  for (;;) {
    ssize_t n = read(space.fd(), msgs, sizeof msgs);
    if (n < 0) {
      if (errno == EINTR) continue;
      break;  // EAGAIN: another reader was first, or nothing left
    }
    uint64_t now = now_ns();
    size_t count = static_cast<size_t>(n) / sizeof(uffd_msg);
    for (size_t i = 0; i < count; ++i) handle_message(space, msgs[i], now);
    if (count < std::size(msgs)) break;  // drained; level-triggered epoll reports more
  }
  flush_wakes();
}

void Engine::handle_message(UffdSpace& space, const uffd_msg& m, uint64_t now) {
  FAULTLINE_ASSERT_LOOP(loop_);
  switch (m.event) {
    case UFFD_EVENT_PAGEFAULT:
      space.events.faults++;
      on_fault(space, static_cast<uintptr_t>(m.arg.pagefault.address), now);
      break;
    default:  // REMOVE, UNMAP, REMAP, FORK... (uffd_events.cc)
      on_event(space, m);
      break;
  }
}

RegionState* UffdSpace::region_at(uintptr_t addr) const {
  auto it = regions.upper_bound(addr);
  if (it == regions.begin()) return nullptr;
  RegionState* r = std::prev(it)->second;
  return addr < r->base() + r->memory.size() ? r : nullptr;
}

void Engine::on_fault(UffdSpace& space, uintptr_t addr, uint64_t now) {
  FAULTLINE_ASSERT_LOOP(loop_);
  addr &= ~(kPageSize - 1);
  RegionState* r = space.region_at(addr);
  if (!r) {
    if (!space.local()) {  // not mapped yet, or no longer: engine_foreign.cc
      hold_orphan(space, addr);
      return;
    }
    // A message from before a region was removed; its thread has been
    // woken by the unregister. Waking again is harmless.
    uffd_wake(space.fd(), addr, kPageSize);
    return;
  }
  count(r, &Stats::faults, 1);
  uint64_t chunk = (addr - r->base()) >> r->fill_shift;
  if (r->loop.touched_bits) note_touch(r, chunk);
  // A chunk being dropped may already be moved out while still marked
  // present: its fault waits for the drop (the placement is held).
  if (r->loop.present.test(chunk) && !r->loop.dropping_bits.test(chunk)) {
    if (r->shared()) {
      map_shared_again(r, chunk);
      latencies_.emplace_back(r, now);
      return;
    }
    // (Another process's page tables cannot be asked: a foreign chunk is
    // loaded again, and pages still there answer EEXIST and a wake.)
    if (space.local() && page_mapped(addr)) {
      // Placed after this fault was queued: the wake is all it needs.
      space.wakes.emplace_back(addr, kPageSize);
      latencies_.emplace_back(r, now);
      return;
    }
    // Present on paper only. madvise(MADV_DONTNEED) queues REMOVE and zaps
    // the range after this thread has read the event, so a chunk placed in
    // between is gone again; a wake would send the thread into the same
    // fault forever. Load it again (pages still there answer EEXIST).
    r->loop.present.clear(chunk);
    if (r->loop.resident_bits.test(chunk)) note_gone(r, chunk);
  }
  auto it = r->loop.ops.find(chunk);
  if (it != r->loop.ops.end()) {  // one read per chunk, however many threads wait
    ReadOp* op = it->second;
    if (op->waiters.empty() && op->stage == ReadOp::Stage::kReading) make_urgent(op);
    op->waiters.push_back(now);
    if (op->kind == ReadOp::Kind::kReadahead || op->kind == ReadOp::Kind::kReadaround)
      count(r, &Stats::readahead_hits, 1);
    if (op->kind == ReadOp::Kind::kPrefetch || op->kind == ReadOp::Kind::kDrain) count(r, &Stats::prefetch_hits, 1);
  } else {
    if (r->loop.policy && r->loop.policy->was_evicted(chunk)) count(r, &Stats::refaults, 1);
    ReadOp* op = new_op(r, chunk, ReadOp::Kind::kDemand);
    op->waiters.push_back(now);
    demand_.push_back(op);
    drain_batch_ = kDrainBatchMin;  // the application is waiting: keep the drain out of its way
  }
  note_readahead(r, chunk);
}

// ---- Working-set record, read-ahead and prefetch ---------------------------

void Engine::note_touch(RegionState* r, uint64_t chunk) {
  FAULTLINE_ASSERT_LOOP(loop_);
  if (r->loop.touched_bits.test_and_set(chunk)) return;
  MutexLock lock(r->touched_mu);
  r->touched.push_back(chunk);
}

void Engine::note_readahead(RegionState* r, uint64_t chunk) {
  FAULTLINE_ASSERT_LOOP(loop_);
  if (!r->options.readahead) return;
  ReadaheadDetector::Span window;
  ReadaheadDetector::Verdict verdict;
  bool around = r->loop.readahead.on_fault(chunk, &window, &verdict);
  if (verdict.used) count(r, &Stats::readahead_used_bytes, verdict.used << r->fill_shift);
  if (verdict.wasted) count(r, &Stats::readahead_wasted_bytes, verdict.wasted << r->fill_shift);
  if (around) r->loop.spans.push_front({window.first, window.last, ReadOp::Kind::kReadaround});
  if ((around || r->loop.readahead.pending()) && !r->loop.in_background) {
    r->loop.in_background = true;
    background_.push_back(r);
  }
}

bool Engine::next_background(RegionState* r, uint64_t* chunk, ReadOp::Kind* kind) {
  FAULTLINE_ASSERT_LOOP(loop_);
  auto wanted = [&](uint64_t c) { return !r->loop.present.test(c) && !r->loop.ops.count(c); };
  if (r->loop.readahead.next(wanted, chunk)) {
    *kind = ReadOp::Kind::kReadahead;
    return true;
  }
  while (!r->loop.spans.empty()) {
    RegionState::Span& span = r->loop.spans.front();
    while (span.first < span.last && !wanted(span.first)) span.first++;
    if (span.first < span.last) {
      *chunk = span.first;
      *kind = span.kind;
      return true;
    }
    r->loop.spans.pop_front();
  }
  return false;
}

// ---- Dispatch -------------------------------------------------------------

ReadOp* Engine::new_op(RegionState* r, uint64_t chunk, ReadOp::Kind kind) {
  FAULTLINE_ASSERT_LOOP(loop_);
  ReadOp* op;
  if (spare_ops_.empty()) {
    op = new ReadOp;
  } else {
    op = spare_ops_.back();
    spare_ops_.pop_back();
  }
  op->region = r;
  op->chunk = chunk;
  op->kind = kind;
  op->offset = chunk << r->fill_shift;
  op->length = static_cast<uint32_t>(std::min<uint64_t>(uint64_t{1} << r->fill_shift, r->memory.size() - op->offset));
  op->valid = static_cast<uint32_t>(op->offset < r->data_end ? std::min<uint64_t>(op->length, r->data_end - op->offset) : 0);
  op->want = static_cast<uint32_t>(std::min<uint64_t>(op->length, round_up(op->valid, r->backend->alignment())));
  op->zero = op->valid == 0 || r->loop.removed.covers(op->offset, op->offset + op->length);  // removed: zeros
  op->advance(ReadOp::Stage::kQueued);
  r->loop.ops.emplace(chunk, op);
  return op;
}

// Starts the read of `op`, or places it at once if there is nothing to read.
// Returns false if the backend's queue or the staging memory is full.
bool Engine::start(ReadOp* op) {
  FAULTLINE_ASSERT_LOOP(loop_);
  op->expect(ReadOp::Stage::kQueued);
  RegionState* r = op->region;
  if (op->zero) {  // past the end of the backend: nothing to read
    install(op, true);
    return true;
  }
  BackendSlot* slot = r->loop.slot;
  // Background reads leave a quarter of the queue to demand reads, so a
  // fault never waits behind a full queue of speculation.
  uint32_t depth = op->kind == ReadOp::Kind::kDemand ? slot->depth : slot->depth - slot->depth / 4;
  if (slot->in_flight + slot->batch.size() >= depth) return false;
  if (!op->staging) {
    op->staging = staging_.allocate(op->length);
    if (!op->staging) return false;
  }
  if (op->got % r->backend->alignment() != 0) op->got = 0;  // O_DIRECT: restart aligned
  // A write-back chunk being dropped is written back first: bytes read
  // before that finishes may be old ones (see install()).
  op->stale = r->writeback && r->loop.dropping_bits.test(op->chunk);
  ReadRequest req;
  req.offset = r->options.offset + op->offset + op->got;
  req.length = op->want - op->got;
  req.dest = op->staging + op->got;
  req.tag = reinterpret_cast<uint64_t>(op);
  req.urgent = !op->waiters.empty();
  slot->batch.push_back(req);
  op->advance(ReadOp::Stage::kReading);
  r->loop.in_flight++;
  return true;
}

void Engine::submit_batches() {
  FAULTLINE_ASSERT_LOOP(loop_);
  for (auto& [backend, slot] : slots_) {
    if (slot->batch.empty()) continue;
    slot->in_flight += static_cast<uint32_t>(slot->batch.size());
    backend->submit(slot->batch);
    slot->batch.clear();
  }
  // Reads that completed inside submit() (memory, page-cached files) are
  // placed now rather than after another trip through epoll.
  reap_list_.clear();
  for (auto& [backend, slot] : slots_)
    if (slot->in_flight > 0) reap_list_.push_back(slot.get());
  for (BackendSlot* slot : reap_list_) reap(slot);
}

void Engine::dispatch_demand() {
  FAULTLINE_ASSERT_LOOP(loop_);
  bool started = false;
  while (!demand_.empty()) {
    if (!start(demand_.front())) {
      room_ = false;
      break;
    }
    demand_.pop_front();
    started = true;
  }
  if (started) submit_batches();
}

// Read-ahead and prefetch, one bounded batch per loop iteration, so a
// demand fault never waits behind more than one batch of background work.
void Engine::dispatch_background() {
  FAULTLINE_ASSERT_LOOP(loop_);
  if (!demand_.empty()) return;  // demand reads are waiting for room
  size_t budget_bytes = 2 * 1024 * 1024;
  bool started = false;
  while (!background_.empty() && budget_bytes > 0) {
    RegionState* r = background_.front();
    uint64_t chunk;
    ReadOp::Kind kind;
    if (!next_background(r, &chunk, &kind)) {
      r->loop.in_background = false;
      background_.pop_front();
      continue;
    }
    if (kind == ReadOp::Kind::kDrain && drain_in_flight_ >= drain_batch_) {
      room_ = false;  // a drain read completing makes room again
      break;
    }
    ReadOp* op = new_op(r, chunk, kind);
    size_t length = op->length;
    if (kind == ReadOp::Kind::kDrain) {
      op->drain_bytes = op->length;
      drain_in_flight_ += op->length;
    }
    if (!start(op)) {  // (start may place and free a zero chunk at once)
      finish(op);  // no room: try again when a read completes
      room_ = false;
      break;
    }
    bool prefetch = kind == ReadOp::Kind::kPrefetch || kind == ReadOp::Kind::kDrain;
    count(r, prefetch ? &Stats::prefetch_chunks : &Stats::readahead_chunks, 1);
    if (kind == ReadOp::Kind::kReadahead)
      r->loop.readahead.taken(chunk);
    else
      r->loop.spans.front().first = chunk + 1;
    budget_bytes -= std::min<size_t>(budget_bytes, length);
    // Round-robin between regions, a chunk at a time.
    background_.pop_front();
    background_.push_back(r);
    started = true;
  }
  if (started) submit_batches();
}

// A demand fault on a chunk being read ahead or prefetched: the read was
// submitted as background work; from now on a thread waits on it. In a
// batch not yet submitted it simply becomes urgent; otherwise the backend
// moves it ahead of the background reads in its own queue.
void Engine::make_urgent(ReadOp* op) {
  FAULTLINE_ASSERT_LOOP(loop_);
  BackendSlot* slot = op->region->loop.slot;
  uint64_t tag = reinterpret_cast<uint64_t>(op);
  count(op->region, &Stats::raised_reads, 1);
  for (ReadRequest& req : slot->batch)
    if (req.tag == tag) {
      req.urgent = true;
      return;
    }
  slot->backend->make_urgent(tag);
}

// ---- Completions --------------------------------------------------------

void Engine::reap(BackendSlot* slot) {
  FAULTLINE_ASSERT_LOOP(loop_);
  ReadCompletion done[64];
  for (;;) {
    size_t n = slot->backend->reap(done);
    slot->in_flight -= static_cast<uint32_t>(n);
    if (n > 0) room_ = true;
    for (size_t i = 0; i < n; ++i) complete(reinterpret_cast<ReadOp*>(done[i].tag), done[i], n == 1);
    flush_wakes();
    if (n < std::size(done)) break;
  }
}

void Engine::complete(ReadOp* op, const ReadCompletion& c, bool alone) {
  FAULTLINE_ASSERT_LOOP(loop_);
  op->expect(ReadOp::Stage::kReading);
  RegionState* r = op->region;
  r->loop.in_flight--;
  if (r->loop.dead) {
    finish(op);
    return;
  }
  if (c.result < 0) {
    int err = static_cast<int>(-c.result);
    if (transient(err) && op->attempts < options_.read_retries)
      retry(op);
    else
      fail(op, err);
    return;
  }
  uint64_t result = std::min<uint64_t>(static_cast<uint64_t>(c.result), op->want - op->got);
  if (c.zero) {
    std::memset(op->staging + op->got, 0, result);
  } else if (c.data) {
    if (op->got == 0 && result >= op->valid)
      op->source = c.data;  // placed from the backend's memory: no staging copy
    else
      std::memcpy(op->staging + op->got, c.data, result);
  }
  if (op->got == 0 && c.zero && result >= op->valid) op->zero = true;
  op->got += static_cast<uint32_t>(result);
  if (result > 0) op->attempts = 0;  // progress: the retry budget is for reads that get nowhere
  count(r, &Stats::bytes_read, c.zero ? 0 : result);
  if (op->got < op->valid) {  // short: the file shrank, or a transient problem
    if (op->attempts < options_.read_retries)
      retry(op);
    else
      fail(op, EIO);
    return;
  }
  install(op, alone);
}

void Engine::retry(ReadOp* op) {
  FAULTLINE_ASSERT_LOOP(loop_);
  op->attempts++;
  count(op->region, &Stats::retries, 1);
  op->advance(ReadOp::Stage::kQueued);
  demand_.push_front(op);  // it holds staging already: let it finish first
}

// ---- Placing pages --------------------------------------------------------
//
// install() places a chunk whose bytes are in hand, in order: a stale read
// waits or reads again; the bytes are completed (zero tail, all-zero
// chunks go as ZEROPAGE); a budget may hold the placement for drops; the
// pages are placed; a transient failure defers it, any other poisons it;
// success is accounted and the waiters woken. Each step is a function of
// its own below; those returning bool say whether they took the op away.

void Engine::install(ReadOp* op, bool wake_now) {
  FAULTLINE_ASSERT_LOOP(loop_);
  op->advance(ReadOp::Stage::kPlacing);
  if (op->placed == 0) {  // not begun yet: a deferred placement goes on where it stopped
    if (op->stale) {
      hold_or_reread_stale(op);
      return;
    }
    if (!op->zero) complete_bytes(op);
  }
  if (hold_for_drops(op)) return;
  mask_removed(op);
  bool wake = wake_now && !op->waiters.empty();
  PlaceResult res = place_mapped(op, wake);
  if (res.error == 0) {
    note_installed(op);
    queue_wakes(op, wake, res.hit_existing);
    finish(op);
    return;
  }
  if ((res.error == EAGAIN || res.error == ENOMEM) && defer_placement(op)) return;
  if (res.error == ENOENT || res.error == ESRCH) {  // unmapped, or the process is exiting
    // Threads that faulted there are still parked on the uffd: woken, they
    // fault again on the missing mapping (SIGSEGV, as any unmapped address).
    if (!op->waiters.empty()) op->region->space->wakes.emplace_back(op->region->base() + op->offset, op->length);
    finish(op);
    return;
  }
  logf(options_.log, LogLevel::kError, "placing %u bytes at %p failed: %s", op->length - op->placed,
       reinterpret_cast<void*>(op->region->base() + op->offset + op->placed), std::strerror(res.error));
  fail(op, res.error);
}

// Read while its write-back chunk was being dropped: the bytes may be older
// than the ones written back. Waits for the drop to be reported, then reads
// again (the backend has the written-back bytes by then).
void Engine::hold_or_reread_stale(ReadOp* op) {
  FAULTLINE_ASSERT_LOOP(loop_);
  if (op->region->loop.dropping_bits.test(op->chunk)) {
    op->advance(ReadOp::Stage::kHeld);
    held_.push_back(op);
    return;
  }
  op->stale = false;
  op->got = 0;
  op->source = nullptr;
  op->zero = op->valid == 0;
  op->advance(ReadOp::Stage::kQueued);
  demand_.push_front(op);
  room_ = true;  // let the loop try it even if the last dispatch found no room
}

// Under a budget: until the drops in flight finish, this chunk's own
// (placing it now would race with its zap) or the ones that make room for it.
bool Engine::hold_for_drops(ReadOp* op) {
  FAULTLINE_ASSERT_LOOP(loop_);
  if (!op->region->loop.policy || op->reserved || !hold_for_budget(op)) return false;
  keep_in_staging(op);
  op->advance(ReadOp::Stage::kHeld);
  held_.push_back(op);
  return true;
}

// UFFDIO_COPY, or ZEROPAGE for zeros, of what is not placed yet up to
// byte `until` of the chunk; without a wake unless `wake`.
PlaceResult Engine::place_pages(ReadOp* op, bool wake, uint32_t until) {
  FAULTLINE_ASSERT_LOOP(loop_);
  RegionState* r = op->region;
  const std::byte* src = op->zero ? nullptr : (op->source ? op->source : op->staging) + op->placed;
  Place how = op->zero ? Place::kZero : Place::kCopy;
  // Tracked regions get every page write-protected, so the first write
  // shows in the dirty log: ZEROPAGE cannot do that, and cannot place huge
  // pages; a copy of zeros can do both (and is what zeros_as_pages asks).
  if (op->zero && (r->dirty || r->options.page_size != kPageSize || r->options.zeros_as_pages)) {
    how = Place::kCopy;
    src = zeros_.data();
  }
  if (r->shared()) {
    // Into the memfd first (zeros as its own zero pages), then CONTINUE.
    uint64_t at = op->offset + op->placed, len = until - op->placed;
    int err = op->zero ? zero_fill_shared(r, at, len) : shared_write(r, at, src, len);
    if (err) return {0, err, false};
    how = Place::kContinue;
    src = nullptr;
  }
  PlaceResult res = uffd_place(r->space->fd(), how, r->base() + op->offset + op->placed, src,
                               until - op->placed, wake, r->dirty != nullptr, r->options.page_size);
  op->placed += static_cast<uint32_t>(res.done);
  return res;
}

// EAGAIN: events are pending (a REMOVE or UNMAP not read yet: not a
// failure, however long the application keeps making them); ENOMEM: memory
// is short. The loop reads the messages, then tries the rest again. Only a
// placement stuck for kGiveUpPlacingNs is given up (false: poison it), so
// nothing waits forever.
bool Engine::defer_placement(ReadOp* op) {
  FAULTLINE_ASSERT_LOOP(loop_);
  uint64_t now = now_ns();
  if (op->deferred_since == 0) op->deferred_since = now;
  if (now - op->deferred_since >= kGiveUpPlacingNs) return false;
  keep_in_staging(op);
  op->advance(ReadOp::Stage::kDeferred);
  deferred_.push_back(op);
  return true;
}

// The chunk is present: resident for its budgets (which may start an
// eviction), and counted.
void Engine::note_installed(ReadOp* op) {
  FAULTLINE_ASSERT_LOOP(loop_);
  RegionState* r = op->region;
  op->advance(ReadOp::Stage::kInstalled);
  r->loop.present.set(op->chunk);
  unreserve(op);
  note_resident(r, op->chunk);
  if (op->kind == ReadOp::Kind::kDrain) drain_batch_ = std::min(kDrainBatchMax, drain_batch_ * 2);
  uint64_t pages = op->length / kPageSize;
  count(r, &Stats::pages_installed, pages);
  count(r, &Stats::bytes_installed, op->length);
  if (op->zero) count(r, &Stats::zero_pages, pages);
  if (op->kind == ReadOp::Kind::kReadahead || op->kind == ReadOp::Kind::kReadaround)
    count(r, &Stats::readahead_bytes, op->length);
}

// Waiters not woken by the placement itself, and every waiter after
// EEXIST (a page already there wakes nobody), get a UFFDIO_WAKE in the
// next flush_wakes(); their latencies are recorded then.
void Engine::queue_wakes(ReadOp* op, bool woken, bool hit_existing) {
  FAULTLINE_ASSERT_LOOP(loop_);
  RegionState* r = op->region;
  if ((!op->waiters.empty() && !woken) || hit_existing)
    r->space->wakes.emplace_back(r->base() + op->offset, op->length);
  for (uint64_t t : op->waiters) latencies_.emplace_back(r, t);
}

// The backend cannot serve this chunk: the pages get SIGBUS for whoever
// touches them, as an mmap of a file does on an I/O error.
void Engine::fail(ReadOp* op, int err) {
  FAULTLINE_ASSERT_LOOP(loop_);
  op->advance(ReadOp::Stage::kPoisoned);
  RegionState* r = op->region;
  count(r, &Stats::errors, 1);
  logf(options_.log, LogLevel::kError, "%s: cannot read %u bytes at offset %llu (%s); the pages get SIGBUS",
               r->backend->name().c_str(), op->want, static_cast<unsigned long long>(r->options.offset + op->offset),
               std::strerror(err));
  if (r->dirty) r->dirty->mark_poisoned(op->offset + op->placed, op->length - op->placed);
  poison(r, r->base() + op->offset + op->placed, op->length - op->placed);
  r->loop.present.set(op->chunk);
  finish(op);
}

void Engine::poison(RegionState* r, uintptr_t addr, uint64_t len) {
  FAULTLINE_ASSERT_LOOP(loop_);
  if (r->space->uffd.mode.poison && test_.use_uffdio_poison) {
    PlaceResult res = uffd_place(r->space->fd(), Place::kPoison, addr, nullptr, len, true, false, r->options.page_size);
    if (res.error == 0) {
      if (res.hit_existing) uffd_wake(r->space->fd(), addr, len);
      return;
    }
  }
  if (r->foreign) {
    // Another process's memory cannot have a file mapped over it: without
    // UFFDIO_POISON (Linux 6.6+) the threads stay blocked (docs/firecracker.md).
    logf(options_.log, LogLevel::kError, "process %d: cannot poison %llu bytes at %p (UFFDIO_POISON failed); "
         "threads touching them stay blocked", static_cast<int>(r->space->pid),
         static_cast<unsigned long long>(len), reinterpret_cast<void*>(addr));
    return;
  }
  // Without UFFDIO_POISON: the poisoner thread maps an empty file over the
  // range (poisoner.h says why not this thread); the region counts it as a
  // read in flight until it reports back.
  if (!poisoner_)
    poisoner_ = std::make_unique<Poisoner>(
        [this](const PoisonJob& job) { send({Command::Type::kPoisoned, job.region}); },
        [log = options_.log](const PoisonJob& job, int err) {
          logf(log, LogLevel::kError, "cannot poison %llu bytes at %p: %s",
                       static_cast<unsigned long long>(job.length), reinterpret_cast<void*>(job.addr),
                       std::strerror(err));
        });
  r->loop.in_flight++;
  poisoner_->submit({r, r->space->fd(), addr, len, r->options.writable ? PROT_READ | PROT_WRITE : PROT_READ});
}

void Engine::finish(ReadOp* op) {
  FAULTLINE_ASSERT_LOOP(loop_);
  op->advance(ReadOp::Stage::kFree);
  RegionState* r = op->region;
  unreserve(op);
  if (op->staging) staging_.release(op->staging, op->length);
  drain_in_flight_ -= op->drain_bytes;
  r->loop.ops.erase(op->chunk);
  std::vector<uint64_t> waiters = std::move(op->waiters);
  waiters.clear();  // keeps its capacity for the next fault
  *op = ReadOp{};
  op->waiters = std::move(waiters);
  spare_ops_.push_back(op);
  if (r->loop.dead && r->loop.in_flight == 0 && r->loop.ops.empty()) finish_removal(r);
}

// A fault on a shared-memory chunk already placed: the memfd holds its
// bytes and only this mapping lost them (MADV_DONTNEED zaps the page
// table, not the file), or MADV_REMOVE punched them out (a hole: CONTINUE
// says EFAULT; it reads zeros, as a punched file does). Never read again:
// what the application wrote is in the file.
void Engine::map_shared_again(RegionState* r, uint64_t chunk) {
  FAULTLINE_ASSERT_LOOP(loop_);
  uint64_t offset = chunk << r->fill_shift, len = r->chunk_length(chunk);
  uintptr_t at = r->base() + offset;
  PlaceResult res = uffd_place(r->space->fd(), Place::kContinue, at, nullptr, len, false);
  if (res.error == EFAULT) {
    if (int err = zero_fill_shared(r, offset + res.done, len - res.done)) {
      res.error = err;
    } else {
      PlaceResult rest = uffd_place(r->space->fd(), Place::kContinue, at + res.done, nullptr, len - res.done, false);
      res.error = rest.error;
    }
  }
  // EAGAIN (events pending): woken, the thread faults again after they
  // are read. Anything else would fault forever: SIGBUS instead.
  if (res.error != 0 && res.error != EAGAIN) {
    logf(options_.log, LogLevel::kError, "mapping %llu shared bytes at %p again failed: %s; the pages get SIGBUS",
         static_cast<unsigned long long>(len), reinterpret_cast<void*>(at), std::strerror(res.error));
    count(r, &Stats::errors, 1);
    poison(r, at, len);
  }
  r->space->wakes.emplace_back(at, len);
}

void Engine::retry_deferred() {
  FAULTLINE_ASSERT_LOOP(loop_);
  if (deferred_.empty()) return;
  std::vector<ReadOp*> ops;
  ops.swap(deferred_);
  for (ReadOp* op : ops) {
    op->expect(ReadOp::Stage::kDeferred);
    install(op, false);
  }
  flush_wakes();
}

void Engine::flush_wakes() {
  FAULTLINE_ASSERT_LOOP(loop_);
  for (auto& space : spaces_) {
    auto& wakes = space->wakes;
    if (wakes.empty()) continue;
    // One UFFDIO_WAKE per run of overlapping or adjacent ranges.
    std::sort(wakes.begin(), wakes.end());
    uintptr_t start = wakes[0].first, end = start + wakes[0].second;
    for (size_t i = 1; i <= wakes.size(); ++i) {
      if (i < wakes.size() && wakes[i].first <= end) {
        end = std::max<uintptr_t>(end, wakes[i].first + wakes[i].second);
        continue;
      }
      uffd_wake(space->fd(), start, end - start);
      if (i < wakes.size()) start = wakes[i].first, end = start + wakes[i].second;
    }
    wakes.clear();
  }
  if (!latencies_.empty()) {
    uint64_t now = now_ns();
    for (auto [r, t] : latencies_) {
      r->stats.latency.record(now - t);
      totals_.latency.record(now - t);
      count(r, &Stats::wait_ns, now - t);
    }
    latencies_.clear();
  }
}

}  // namespace faultline::detail

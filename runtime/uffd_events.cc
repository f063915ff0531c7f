// SPDX-License-Identifier: Apache-2.0
// userfaultfd events other than faults, for any UffdSpace (the runtime's
// own, a forked child's, a foreign process's): what the application did to
// its memory, and what each region does about it. docs/design.md, "Events",
// says what each one means for the data; this file is their one home.
//
//   REMOVE  MADV_DONTNEED / MADV_REMOVE: the pages are gone and read zeros
//           from then on (region.loop.removed), whatever the backend holds
//   UNMAP   munmap: the range is no longer served (region.loop.unmapped)
//   REMAP   mremap: a whole region is followed to its new address
//   FORK    a child's copy of every region is served on the child's new
//           userfaultfd, until the child exits or execs
//
// The kernel holds back every placing ioctl (EAGAIN) while an event is
// unread, so handlers only change the loop's state; placements that were
// refused are deferred and tried again after the messages (fault_loop.cc).
// Everything here runs on the loop thread.
#include <errno.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <mutex>

#include "engine.h"

namespace faultline::detail {

namespace {

// Children are probed for exit this often (they send no message when they go).
constexpr uint64_t kChildProbeNs = 200ull * 1000 * 1000;

}  // namespace

void Engine::on_event(UffdSpace& space, const uffd_msg& m) {
  FAULTLINE_ASSERT_LOOP(loop_);
  switch (m.event) {
    case UFFD_EVENT_REMOVE:
      space.events.removes++;
      on_remove(space, static_cast<uintptr_t>(m.arg.remove.start), static_cast<uintptr_t>(m.arg.remove.end));
      break;
    case UFFD_EVENT_UNMAP:
      space.events.unmaps++;
      on_unmap(space, static_cast<uintptr_t>(m.arg.remove.start), static_cast<uintptr_t>(m.arg.remove.end));
      break;
    case UFFD_EVENT_REMAP:
      space.events.remaps++;
      on_remap(space, static_cast<uintptr_t>(m.arg.remap.from), static_cast<uintptr_t>(m.arg.remap.to),
               m.arg.remap.len);
      break;
    case UFFD_EVENT_FORK:
      space.events.forks++;
      on_fork(space, static_cast<int>(m.arg.fork.ufd));
      break;
    default:
      on_unhandled(space, m.event);
      break;
  }
}

// An event the loop has no handler for. Counted in the runtime's errors
// and logged, once per kind: never dropped silently.
void Engine::on_unhandled(UffdSpace& space, uint8_t event) {
  FAULTLINE_ASSERT_LOOP(loop_);
  space.events.unhandled++;
  count_total(&Stats::errors, 1);
  uint64_t bit = uint64_t{1} << (event & 63);
  if (unhandled_logged_ & bit) return;
  unhandled_logged_ |= bit;
  logf(options_.log, LogLevel::kWarning, "userfaultfd event 0x%x has no handler; ignored (counted in errors)", event);
}

namespace {

// Calls f(region, first, last) for the part [first, last) of [start, end)
// in each region of the space it overlaps (offsets in the region).
template <typename F>
void for_each_region_part(UffdSpace& space, uintptr_t start, uintptr_t end, F f) {
  for (uintptr_t a = start; a < end;) {
    RegionState* r = space.region_at(a);
    if (!r) {
      auto it = space.regions.upper_bound(a);
      if (it == space.regions.end() || it->first >= end) return;
      a = it->first;
      continue;
    }
    uintptr_t stop = std::min<uintptr_t>(end, r->base() + r->memory.size());
    f(r, a - r->base(), stop - r->base());
    a = stop;
  }
}

}  // namespace

// The pages are gone: the next touch must read zeros, never the backend's
// bytes (unless RegionOptions::reload_removed). The chunks load again (pages still there answer EEXIST) and every
// placement from now on, including reads in flight that complete later,
// zeroes the removed pages first (mask_removed). The kernel zaps the range
// only after this event is read, so a chunk placed in between is gone
// while marked present; on_fault() catches that (mincore).
void Engine::on_remove(UffdSpace& space, uintptr_t start, uintptr_t end) {
  FAULTLINE_ASSERT_LOOP(loop_);
  for_each_region_part(space, start, end, [&](RegionState* r, uint64_t first, uint64_t last) {
    count(r, &Stats::removes, 1);
    for (uint64_t c = first >> r->fill_shift; c <= (last - 1) >> r->fill_shift; ++c) {
      // The evictor's own drops (MADV_DONTNEED without UFFDIO_MOVE) are not
      // the application's: they load from the backend again, and are
      // accounted when it reports them.
      if (r->loop.dropping_bits.test(c)) continue;
      // Shared memory keeps a placed chunk's bytes in the memfd (or reads
      // zeros where MADV_REMOVE punched it): on_fault maps it again.
      if (r->shared() && r->loop.present.test(c)) continue;
      uint64_t lo = std::max(first, c << r->fill_shift), hi = std::min(last, (c + 1) << r->fill_shift);
      // RegionOptions::reload_removed, and write-back regions, load from
      // the backend again (it has what was written back).
      if (!r->writeback && !r->options.reload_removed) r->loop.removed.add(lo, hi);
      r->loop.present.clear(c);
      if (r->loop.resident_bits.test(c)) note_gone(r, c);
    }
  });
}

// Nothing is left to serve there: the chunks wholly inside are marked
// present so read-ahead and prefetch skip them, and reads under way place
// only what is still mapped (place_mapped); those with nothing left are
// dropped there.
void Engine::on_unmap(UffdSpace& space, uintptr_t start, uintptr_t end) {
  FAULTLINE_ASSERT_LOOP(loop_);
  for_each_region_part(space, start, end, [&](RegionState* r, uint64_t first, uint64_t last) {
    count(r, &Stats::unmaps, 1);
    r->loop.unmapped.add(first, last);
    for (uint64_t c = first >> r->fill_shift; c <= (last - 1) >> r->fill_shift; ++c) {
      uint64_t offset = c << r->fill_shift;
      if (!r->loop.unmapped.covers(offset, offset + r->chunk_length(c))) continue;
      r->loop.present.set(c);
      if (r->loop.resident_bits.test(c) && !r->loop.dropping_bits.test(c)) note_gone(r, c);
    }
    logf(options_.log, LogLevel::kInfo, "%llu bytes at offset %llu of a region over %s were unmapped: no longer served",
         static_cast<unsigned long long>(last - first), static_cast<unsigned long long>(first),
         r->backend->name().c_str());
  });
}

// A region moved whole is followed: same chunks, same state, new address
// (faults and placements from now on use it; Region::data() reports it).
// Anything else (part of a region, a dirty-tracked region, whose log and
// write-back know the old address) is not: the old range is unmapped for
// the region, and the moved pages that were not loaded yet are poisoned
// (SIGBUS), never served wrong. The mremap waits until this is read.
void Engine::on_remap(UffdSpace& space, uintptr_t from, uintptr_t to, uint64_t len) {
  FAULTLINE_ASSERT_LOOP(loop_);
  RegionState* r = space.region_at(from);
  if (!r) return;
  count(r, &Stats::remaps, 1);
  bool whole = from == r->base() && len >= r->memory.size() && r->loop.unmapped.empty() && !r->dirty;
  if (whole) {
    space.regions.erase(r->base());
    r->memory.moved_to(reinterpret_cast<void*>(to));
    r->addr.store(to, std::memory_order_relaxed);
    space.regions[to] = r;
    // Threads still parked at the old address (they touched the region
    // while it moved) are woken: they fault again on an unmapped address.
    space.wakes.emplace_back(from, r->memory.size());
    return;
  }
  uint64_t first = from - r->base();
  uint64_t last = std::min<uint64_t>(r->memory.size(), first + len);
  on_unmap(space, from, r->base() + last);
  logf(options_.log, LogLevel::kError,
       "mremap moved %llu bytes of a region over %s from %p to %p: only a whole region without dirty tracking "
       "is followed; pages not loaded there get SIGBUS",
       static_cast<unsigned long long>(len), r->backend->name().c_str(), reinterpret_cast<void*>(from),
       reinterpret_cast<void*>(to));
  if (space.uffd.mode.poison) {
    PlaceResult res = uffd_place(space.fd(), Place::kPoison, to, nullptr, last - first, true, false, r->options.page_size);
    if (res.error == 0) return;
  }
  uffd_unregister(space.fd(), reinterpret_cast<void*>(to), last - first);  // no POISON: plain zero pages
}

// ---- Forked children ------------------------------------------------------
//
// With UFFD_FEATURE_EVENT_FORK the kernel registers the child's copy of
// every region with a new userfaultfd, which arrives in this message (the
// fork waits until it is read). The child is served as a space of its own:
// each region cloned at the same address with the same backend and the
// state the copy has (chunks present here are present there too). The
// child sends no message when it exits or execs; reap_children() probes.

void Engine::on_fork(UffdSpace& space, int child_uffd) {
  FAULTLINE_ASSERT_LOOP(loop_);
  UniqueFd fd(child_uffd);
  UffdSpace* child = nullptr;
  try {
    child = add_space(Uffd{std::move(fd), space.uffd.mode}, UffdSpace::kForkedChild);
    for (auto& [addr, r] : space.regions) {
      if (r->loop.dead || r->shared()) continue;  // (shared memory is MADV_DONTFORK)
      auto copy = clone_for_child(r, child);
      child->regions[addr] = copy.get();
      child->owned.push_back(std::move(copy));
      count(r, &Stats::forks, 1);
    }
  } catch (const Error& e) {
    // Closing the child's userfaultfd unregisters its copy: it would read
    // zero pages. Say so loudly; nothing better is possible.
    logf(options_.log, LogLevel::kError, "cannot serve a forked child's regions (%s): it reads zeros there", e.what());
    if (child) drop_space(child);
    return;
  }
  children_++;
  logf(options_.log, LogLevel::kInfo, "serving a forked child's copy of %zu regions", child->regions.size());
}

std::shared_ptr<RegionState> Engine::clone_for_child(RegionState* r, UffdSpace* child) {
  FAULTLINE_ASSERT_LOOP(loop_);
  RegionLayout l;
  l.options = r->options;
  l.backend = r->backend;
  l.space = child;
  l.memory = Mapping(reinterpret_cast<void*>(r->base()), r->memory.size());
  l.length = r->length;
  l.data_end = r->data_end;
  l.fill_shift = r->fill_shift;
  l.chunks = r->chunks;
  l.forked = true;
  auto c = std::make_shared<RegionState>(std::move(l));
  c->loop.present = ChunkBitmap(c->chunks, "page map");
  // What the copy holds: chunks placed here (not being dropped: those
  // may be half gone), the removed pages, the holes.
  for (uint64_t i = 0; i < c->chunks; ++i)
    if (r->loop.present.test(i) && !r->loop.dropping_bits.test(i)) c->loop.present.set(i);
  c->loop.removed = r->loop.removed;
  c->loop.unmapped = r->loop.unmapped;
  c->loop.readahead = ReadaheadDetector(c->chunks, c->fill_shift, c->options.readahead_max,
                                        c->backend->completion_fd() >= 0);
  c->loop.slot = r->loop.slot;
  c->loop.slot->users++;
  return c;
}

// Probes each child for exit (the userfaultfd of a process whose address
// space is gone answers ENOMEM), detaches the regions of those gone, and
// frees a space once its regions have left the loop.
void Engine::reap_children() {
  FAULTLINE_ASSERT_LOOP(loop_);
  if (children_ == 0) return;
  uint64_t now = now_ns();
  if (now - children_checked_ns_ < kChildProbeNs) return;
  children_checked_ns_ = now;
  std::vector<UffdSpace*> done;
  for (auto& s : spaces_) {
    UffdSpace* space = s.get();
    if (!space->forked_child()) continue;
    if (!space->gone && uffd_mm_gone(space->fd())) {
      space->gone = true;
      while (!space->regions.empty()) detach(space->regions.begin()->second);
    }
    if (!space->gone || !removed_.empty()) continue;  // removed_: acknowledged at the end of this iteration
    bool idle = std::all_of(space->owned.begin(), space->owned.end(),
                            [](const auto& r) { return r->loop.removal_finished; });
    if (idle) done.push_back(space);
  }
  for (UffdSpace* space : done) {
    children_--;
    drop_space(space);
  }
}

void Engine::drop_space(UffdSpace* space) {
  FAULTLINE_ASSERT_LOOP(loop_);
  epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, space->fd(), nullptr);
  for (auto& r : space->owned)
    if (!r->loop.removal_finished && r->loop.slot) r->loop.slot->users--;
  std::erase_if(spaces_, [&](const auto& s) { return s.get() == space; });
}

// The runtime stops while children still use regions (engine destructor,
// loop stopped): their pages not loaded yet are poisoned, SIGBUS rather
// than the zero pages a closed userfaultfd would leave.
void Engine::poison_children_left() {
  for (auto& space : spaces_) {
    if (!space->forked_child() || space->gone || uffd_mm_gone(space->fd())) continue;
    logf(options_.log, LogLevel::kWarning,
         "the runtime stops while a forked child still uses %zu regions: pages it has not loaded get SIGBUS",
         space->regions.size());
    if (!space->uffd.mode.poison) continue;
    for (auto& entry : space->regions) {  // (not a structured binding: clang 14 cannot capture one)
      auto& r = entry.second;
      r->loop.unmapped.for_each_outside(0, r->memory.size(), [&](uint64_t s, uint64_t e) {
        uffd_place(space->fd(), Place::kPoison, r->base() + s, nullptr, e - s, true, false, r->options.page_size);
      });
    }
  }
}

// A fork of this process. glibc's fork() runs the pthread_atfork prepare
// handlers, then takes every malloc lock, and the kernel waits, inside the
// fork, for the loop to read the FORK message: a loop that allocated
// meanwhile would wait for a lock the forking thread holds, forever. So the
// prepare handler parks each loop (Engine::park: it only reads its uffd
// into reserved memory) and the parent handler lets it go. Without the fork
// event (no CAP_SYS_PTRACE) a child gets SIGSEGV on a region, and the
// prepare handler is where to say so as it happens. These handlers are
// process-wide by nature, hence this one registry of the runtimes (a mutex
// and a list, never touched on the fault path). Its lock is held from the
// prepare handler to the parent's (or the child's): no runtime comes or
// goes during a fork.
namespace {

struct ForkWatch {
  Mutex mu;
  std::vector<Engine*> engines GUARDED_BY(mu);
};

ForkWatch& fork_watch() {
  static ForkWatch* w = new ForkWatch;  // never destroyed: forks may come during exit
  return *w;
}

void before_fork() NO_THREAD_SAFETY_ANALYSIS {
  ForkWatch& w = fork_watch();
  w.mu.lock();
  for (Engine* e : w.engines) e->before_fork();
}

void after_fork_in_parent() NO_THREAD_SAFETY_ANALYSIS {
  ForkWatch& w = fork_watch();
  for (Engine* e : w.engines) e->after_fork();
  w.mu.unlock();
}

// The child has no loop thread: nothing to let go, only the lock (its copy,
// held by this very thread).
void after_fork_in_child() NO_THREAD_SAFETY_ANALYSIS { fork_watch().mu.unlock(); }

}  // namespace

void watch_forks(Engine* engine, bool on) {
  static std::once_flag once;
  std::call_once(once, [] { pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child); });
  ForkWatch& w = fork_watch();
  MutexLock lock(w.mu);
  if (on)
    w.engines.push_back(engine);
  else
    std::erase(w.engines, engine);
}

void Engine::before_fork() {
  if (own_->uffd.mode.event_fork) {
    if (live_regions_.load() == 0) return;  // nothing inherited: no FORK message comes
    std::promise<void> parked;
    auto ready = parked.get_future();
    send({Command::Type::kPark, nullptr, 0, 0, &parked});
    ready.get();
    parked_for_fork_ = true;
    return;
  }
  int n = live_regions_.load();
  if (n == 0 || fork_warned_.exchange(true)) return;
  logf(options_.log, LogLevel::kWarning,
       "fork(): the child does not inherit this runtime's %d regions (the kernel refused "
       "UFFD_FEATURE_EVENT_FORK, which needs CAP_SYS_PTRACE); touching one there raises SIGSEGV. "
       "Said once per runtime.",
       n);
}

void Engine::after_fork() {
  if (!parked_for_fork_) return;
  parked_for_fork_ = false;
  uint64_t one = 1;
  while (write(unpark_.get(), &one, sizeof one) < 0 && errno == EINTR) {
  }
}

// Parked for a fork: until after_fork() the loop only reads its own uffd
// (the FORK message, and faults or events of other threads meanwhile) into
// parked_, within its reserved capacity, then handles what it read.
void Engine::park(std::promise<void>* parked) {
  FAULTLINE_ASSERT_LOOP(loop_);
  parked->set_value();
  pollfd fds[2] = {{own_->fd(), POLLIN, 0}, {unpark_.get(), POLLIN, 0}};
  for (;;) {
    const size_t room = parked_.capacity() - parked_.size();
    fds[0].events = room > 0 ? POLLIN : 0;
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[1].revents & POLLIN) {
      uint64_t count;
      (void)!read(unpark_.get(), &count, sizeof count);
      break;
    }
    if (fds[0].revents & POLLIN) {
      uffd_msg msgs[16];
      ssize_t n = read(own_->fd(), msgs, std::min(std::size(msgs), room) * sizeof(uffd_msg));
      for (ssize_t i = 0; i < n / static_cast<ssize_t>(sizeof(uffd_msg)); ++i) parked_.push_back(msgs[i]);
    }
  }
  uint64_t now = now_ns();
  for (const uffd_msg& m : parked_) handle_message(*own_, m, now);
  parked_.clear();
  flush_wakes();
}

// ---- Placing around events ------------------------------------------------

// Pages removed since the read was started read zeros: they are zeroed in
// the op's bytes before they are placed (also when it was read before the
// REMOVE, and on every deferred retry: it is idempotent).
void Engine::mask_removed(ReadOp* op) {
  FAULTLINE_ASSERT_LOOP(loop_);
  RegionState* r = op->region;
  if (op->zero || r->loop.removed.empty()) return;
  uint64_t from = op->offset + op->placed, to = op->offset + op->length;
  if (op->placed == 0 && r->loop.removed.covers(from, to)) {
    op->zero = true;
    return;
  }
  bool kept = false;
  r->loop.removed.for_each_in(from, to, [&](uint64_t s, uint64_t e) {
    if (!kept) keep_in_staging(op);
    kept = true;
    std::memset(op->staging + (s - op->offset), 0, e - s);
  });
}

// place_pages() over the parts of the op still mapped: a placement may not
// span a hole (the kernel refuses the whole ioctl), and nothing is placed
// where the application unmapped. An op with nothing mapped left is done.
PlaceResult Engine::place_mapped(ReadOp* op, bool wake) {
  FAULTLINE_ASSERT_LOOP(loop_);
  const PageRanges& holes = op->region->loop.unmapped;
  if (holes.empty()) return place_pages(op, wake, op->length);
  PlaceResult total;
  if (holes.covers(op->offset + op->placed, op->offset + op->length)) {
    total.error = ENOENT;  // dropped: as a placement into an unmapped range
    return total;
  }
  while (op->placed < op->length) {
    uint64_t at = holes.run_end(op->offset + op->placed);
    if (at >= op->offset + op->length) break;
    op->placed = static_cast<uint32_t>(at - op->offset);
    uint64_t stop = std::min<uint64_t>(holes.next_start(at), op->offset + op->length);
    PlaceResult res = place_pages(op, wake, static_cast<uint32_t>(stop - op->offset));
    total.hit_existing |= res.hit_existing;
    if (res.error) {
      total.error = res.error;
      return total;
    }
  }
  op->placed = op->length;
  return total;
}

}  // namespace faultline::detail

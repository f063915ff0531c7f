// SPDX-License-Identifier: Apache-2.0
// The engine's side of foreign spaces (faultline/foreign.h): taking an
// adopted userfaultfd into the loop, faults no region covers yet, the
// owner's exit, and ForeignSpace::fail(). The fault path itself is the
// same as for local regions (fault_loop.cc).
#include <errno.h>
#include <sys/epoll.h>

#include <algorithm>
#include <cstring>

#include "engine.h"
#include "faultline/error.h"

namespace faultline::detail {

namespace {
constexpr uint64_t kSpaceTag = 1;  // as in engine.cc
constexpr uint64_t kPidfdTag = 4;

std::string process(const ForeignLink& link) { return "process " + std::to_string(link.pid); }
}  // namespace

void Engine::adopt(const std::shared_ptr<ForeignLink>& link) {
  std::promise<void> done;
  auto ready = done.get_future();
  Command c{Command::Type::kAdopt, nullptr, 0, 0, &done};
  c.link = link;
  send(std::move(c));
  ready.get();
}

void Engine::fail_space(const std::shared_ptr<ForeignLink>& link, const std::vector<ForeignRange>& also) {
  std::promise<void> done;
  auto ready = done.get_future();
  Command c{Command::Type::kFailSpace, nullptr, 0, 0, &done};
  c.link = link;
  c.ranges = also;
  send(std::move(c));
  ready.get();
}

void Engine::attach_space(const std::shared_ptr<ForeignLink>& link, std::promise<void>* done) {
  FAULTLINE_ASSERT_LOOP(loop_);
  UffdSpace* space = link->space;
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = reinterpret_cast<uint64_t>(space) | kSpaceTag;
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, space->fd(), &ev) != 0) {
    done->set_exception(std::make_exception_ptr(
        Error("cannot poll the userfaultfd of " + process(*link) + ": " + std::strerror(errno), errno)));
    return;
  }
  ev.data.u64 = reinterpret_cast<uint64_t>(link.get()) | kPidfdTag;
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, link->pidfd.get(), &ev) != 0) {
    int err = errno;
    epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, space->fd(), nullptr);
    done->set_exception(
        std::make_exception_ptr(Error("cannot poll the pidfd of " + process(*link) + ": " + std::strerror(err), err)));
    return;
  }
  spaces_.push_back(std::move(link->held));
  foreign_[space] = link;
  done->set_value();
}

// Why the space cannot take this region: its process has exited, fail()
// was called, or it overlaps another region of the space (addresses are the
// caller's, unchecked so far). Empty: it can.
std::string Engine::check_foreign(RegionState* r) {
  FAULTLINE_ASSERT_LOOP(loop_);
  ForeignLink& link = *r->foreign;
  if (!foreign_.count(r->space)) return process(link) + " has exited: nothing left to serve";
  if (link.failed) return process(link) + ": ForeignSpace::fail() was called; it serves nothing more";
  uintptr_t start = r->base(), end = start + r->memory.size();
  auto it = r->space->regions.lower_bound(start);
  RegionState* after = it == r->space->regions.end() ? nullptr : it->second;
  RegionState* before = it == r->space->regions.begin() ? nullptr : std::prev(it)->second;
  for (RegionState* o : {before, after}) {
    if (!o) continue;
    uintptr_t os = o->base(), oe = os + o->memory.size();
    if (os < end && start < oe) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "[0x%lx, 0x%lx) overlaps the region [0x%lx, 0x%lx) already served in ",
                    static_cast<unsigned long>(start), static_cast<unsigned long>(end), static_cast<unsigned long>(os),
                    static_cast<unsigned long>(oe));
      return "Runtime::map_foreign: " + std::string(buf) + process(link);
    }
  }
  return "";
}

// A fault no region covers: the region may not be mapped yet (a VMM goes on
// touching its memory while the handler is still mapping). The thread
// waits until a region covers it, or fail() poisons it; a wake now would
// only bring the same fault back.
void Engine::hold_orphan(UffdSpace& space, uintptr_t addr) {
  FAULTLINE_ASSERT_LOOP(loop_);
  auto it = foreign_.find(&space);
  if (it == foreign_.end()) return;
  ForeignLink& link = *it->second;
  if (link.failed) {
    PlaceResult res = uffd_poison_any(space.fd(), addr, kPageSize);
    if (res.hit_existing) uffd_wake(space.fd(), addr & ~(kHugePageSize - 1), kHugePageSize);
    return;
  }
  link.orphans.push_back(addr);
}

void Engine::replay_orphans(RegionState* r) {
  FAULTLINE_ASSERT_LOOP(loop_);
  std::vector<uintptr_t>& orphans = r->foreign->orphans;
  if (orphans.empty()) return;
  uint64_t now = now_ns();
  uintptr_t start = r->base(), end = start + r->memory.size();
  std::vector<uintptr_t> mine;
  std::erase_if(orphans, [&](uintptr_t a) {
    if (a < start || a >= end) return false;
    mine.push_back(a);
    return true;
  });
  for (uintptr_t a : mine) on_fault(*r->space, a, now);
}

// The process has exited: its memory is gone, nothing is left to serve.
// The regions are detached now (reads in flight finish into nothing); the
// space leaves the loop, and the link holds it until its last holder goes.
void Engine::on_exit(ForeignLink* link) {
  FAULTLINE_ASSERT_LOOP(loop_);
  UffdSpace* space = link->space;
  auto keep = foreign_.find(space);
  if (keep == foreign_.end()) return;
  std::shared_ptr<ForeignLink> held = keep->second;  // (foreign_ let go of it below)
  std::vector<RegionState*> regions;
  for (auto& [base, r] : space->regions) regions.push_back(r);
  for (RegionState* r : regions) detach(r);
  epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, space->fd(), nullptr);
  epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, link->pidfd.get(), nullptr);
  link->pidfd.reset();
  link->orphans.clear();
  space->wakes.clear();
  auto it = std::find_if(spaces_.begin(), spaces_.end(), [&](const auto& s) { return s.get() == space; });
  link->held = std::move(*it);
  spaces_.erase(it);
  foreign_.erase(keep);
  logf(options_.log, LogLevel::kInfo, "%s exited: its %zu region(s) are no longer served", process(*link).c_str(),
       regions.size());
  {
    std::lock_guard<std::mutex> lock(link->mu);
    link->exited = true;
  }
  link->exited_cv.notify_all();
}

// Every page not placed yet, in every region and in `also`, is poisoned
// and its waiters woken into SIGBUS; so are the held faults outside every
// region, and any later one. The regions are detached first, so no read in
// flight places anything afterwards.
void Engine::fail_foreign(ForeignLink* link, const std::vector<ForeignRange>& also, std::promise<void>* done) {
  FAULTLINE_ASSERT_LOOP(loop_);
  UffdSpace* space = link->space;
  if (foreign_.count(space)) {
    link->failed = true;
    std::vector<ForeignRange> ranges = also;
    std::vector<RegionState*> regions;
    for (auto& [base, r] : space->regions) regions.push_back(r);
    for (RegionState* r : regions) {
      detach(r);
      ranges.push_back({r->base(), r->memory.size()});
    }
    for (const ForeignRange& g : ranges) {
      PlaceResult res = uffd_poison_any(space->fd(), g.address, g.length);
      // Pages already there answer EEXIST: their waiters need the wake.
      uffd_wake(space->fd(), g.address, g.length);
      if (res.error != 0 && res.error != ESRCH)
        logf(options_.log, LogLevel::kError, "%s: cannot poison [%p, +%llu): %s; threads there stay blocked",
             process(*link).c_str(), reinterpret_cast<void*>(g.address + res.done),
             static_cast<unsigned long long>(g.length - res.done), std::strerror(res.error));
    }
    for (uintptr_t a : link->orphans) {
      uffd_poison_any(space->fd(), a, kPageSize);
      uffd_wake(space->fd(), a & ~(kHugePageSize - 1), kHugePageSize);
    }
    link->orphans.clear();
    space->wakes.clear();
  }
  done->set_value();
}

}  // namespace faultline::detail

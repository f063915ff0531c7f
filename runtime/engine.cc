// SPDX-License-Identifier: Apache-2.0
// Engine set-up, the loop's skeleton, control commands and tear-down.
// The fault path proper is in fault_loop.cc.
#include <errno.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "engine.h"
#include "faultline/error.h"

namespace faultline::detail {

namespace {
// epoll data: the control eventfd by this; userfaultfds by their UffdSpace
// with the low bit set; the pidfds of foreign spaces by their ForeignLink
// with bit 2 set; backends by their (aligned) slot.
constexpr uint64_t kControlKey = 2;
constexpr uint64_t kSpaceTag = 1;
constexpr uint64_t kPidfdTag = 4;
}  // namespace

uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

Engine::Engine(const RuntimeOptions& options, const EngineTestOptions& test)
    : options_(options), test_(test), staging_(options.staging_bytes) {
  if (options.read_retries < 0)
    throw Error("RuntimeOptions.read_retries = " + std::to_string(options.read_retries) + ": must be >= 0");
  if (options.budget.bytes) {
    validate_budget("RuntimeOptions.budget", options.budget);
    if (options.budget.bytes < 64 * 1024)
      throw Error("RuntimeOptions.budget.bytes = " + std::to_string(options.budget.bytes) +
                  ": must be 0 (no budget) or at least 65536");
  }
  budget_.limit = options.budget;
  // Never written: reading it maps the shared zero page (address space only).
  void* z = mmap(nullptr, StagingArena::kMaxBlock, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (z == MAP_FAILED) throw_errno("cannot reserve the zero source", errno);
  zeros_ = Mapping(z, StagingArena::kMaxBlock);
  spaces_.push_back(std::make_unique<UffdSpace>(open_uffd(options.serve_forks)));
  own_ = spaces_.front().get();
  epoll_ = UniqueFd(epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_) throw_errno("epoll_create1", errno);
  control_ = UniqueFd(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!control_) throw_errno("eventfd", errno);
  unpark_ = UniqueFd(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!unpark_) throw_errno("eventfd", errno);
  parked_.reserve(4096);  // far more than threads that can fault during one fork
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = reinterpret_cast<uint64_t>(own_) | kSpaceTag;
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, own_->fd(), &ev) != 0) throw_errno("epoll_ctl(uffd)", errno);
  ev.data.u64 = kControlKey;
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, control_.get(), &ev) != 0) throw_errno("epoll_ctl(eventfd)", errno);
  thread_ = std::thread([this] { run(); });
  if (options_.serve_forks) watch_forks(this, true);
}

Engine::~Engine() {
  // Regions hold the engine alive, so none is left: no fault can be pending.
  if (options_.serve_forks) watch_forks(this, false);
  send({Command::Type::kStop});
  thread_.join();
  poison_children_left();
  evictor_.reset();   // idle: every region waited for its drops
  poisoner_.reset();  // idle likewise
  for (ReadOp* op : spare_ops_) delete op;
}

UffdSpace* Engine::add_space(Uffd uffd, pid_t pid) {
  FAULTLINE_ASSERT_LOOP(loop_);
  auto space = std::make_unique<UffdSpace>(std::move(uffd), pid);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = reinterpret_cast<uint64_t>(space.get()) | kSpaceTag;
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, space->fd(), &ev) != 0) throw_errno("epoll_ctl(uffd)", errno);
  spaces_.push_back(std::move(space));
  return spaces_.back().get();
}

void Engine::send(Command command) {
  {
    MutexLock lock(mu_);
    commands_.push_back(std::move(command));
  }
  uint64_t one = 1;
  while (write(control_.get(), &one, sizeof one) < 0 && errno == EINTR) {
  }
}

void Engine::add_region(const std::shared_ptr<RegionState>& region) {
  std::promise<void> done;
  auto ready = done.get_future();
  send({Command::Type::kAdd, region.get(), 0, 0, &done});
  ready.get();
  if (!region->refused.empty()) throw Error(region->refused);
  live_regions_++;
}

void Engine::remove_region(RegionState* region) {
  // Both: a foreign region may have been removed already (its process
  // exited), and the loop must still be done with the command.
  std::promise<void> seen;
  auto taken = seen.get_future();
  auto gone = region->removed.get_future();
  send({Command::Type::kRemove, region, 0, 0, &seen});
  taken.get();
  gone.get();
  live_regions_--;
}

void Engine::prefetch(RegionState* region, uint64_t offset, uint64_t length) {
  if (length == 0 || offset >= region->length) return;
  uint64_t end = std::min(region->length, offset + std::min(length, region->length - offset));
  uint64_t first = offset >> region->fill_shift;
  uint64_t last = (end - 1) >> region->fill_shift;
  prefetch_spans(region, {{first, last + 1, ReadOp::Kind::kPrefetch}});
}

void Engine::prefetch_spans(RegionState* region, std::vector<RegionState::Span> spans) {
  if (spans.empty()) return;
  Command c{Command::Type::kPrefetch, region};
  c.spans = std::move(spans);
  send(std::move(c));
}

void Engine::drain(RegionState* region) { prefetch_spans(region, {{0, region->chunks, ReadOp::Kind::kDrain}}); }

void Engine::run() {
  pthread_setname_np(pthread_self(), "faultline");
  loop_.bind();
  epoll_event events[32];
  while (!stopping_) {
    // Sleep unless something is deferred (an install that hit EAGAIN) or
    // background reads wait for a turn after the faults just served.
    // When reads wait for room, the completion that makes room wakes us.
    bool runnable = room_ && (!background_.empty() || !demand_.empty());
    int timeout = !deferred_.empty() ? 1 : runnable ? 0 : -1;
    if (timeout < 0 && children_) timeout = 200;  // reap_children() probes them
    int n = epoll_wait(epoll_.get(), events, 32, timeout);
    if (n < 0) {
      if (errno == EINTR) continue;
      std::perror("faultline: epoll_wait");
      std::abort();  // cannot happen with a valid epoll fd; never hang silently
    }
    bool control = false;
    UffdSpace* faulted[32];
    ForeignLink* exited[32];
    int spaces = 0, exits = 0;
    for (int i = 0; i < n; ++i) {
      uint64_t key = events[i].data.u64;
      if (key & kSpaceTag)
        faulted[spaces++] = reinterpret_cast<UffdSpace*>(key & ~kSpaceTag);
      else if (key != kControlKey && (key & kPidfdTag))
        exited[exits++] = reinterpret_cast<ForeignLink*>(key & ~kPidfdTag);
      else if (key == kControlKey)
        control = true;
      else
        reap(reinterpret_cast<BackendSlot*>(key));
    }
    for (int i = 0; i < spaces; ++i) read_messages(*faulted[i]);
    for (int i = 0; i < exits; ++i) on_exit(exited[i]);  // (after its last messages)
    retry_deferred();
    dispatch_demand();
    if (control) run_commands();
    dispatch_background();
    flush_wakes();  // zero chunks placed without a backend read
    reap_children();
    if (!removed_.empty()) {
      // Only here, with no reap under way, may backend slots go away.
      for (auto it = slots_.begin(); it != slots_.end();) {
        BackendSlot* slot = it->second.get();
        ++it;
        release_slot(slot);
      }
      for (RegionState* r : removed_) r->removed.set_value();
      removed_.clear();
    }
  }
}

void Engine::run_commands() {
  FAULTLINE_ASSERT_LOOP(loop_);
  uint64_t count;
  (void)!read(control_.get(), &count, sizeof count);
  std::vector<Command> commands;
  {
    MutexLock lock(mu_);
    commands.swap(commands_);
  }
  for (const Command& c : commands) {
    switch (c.type) {
      case Command::Type::kAdd:
        attach(c.region, c.done);
        break;
      case Command::Type::kRemove:
        detach(c.region);
        c.done->set_value();  // (the region may be freed from here on)
        break;
      case Command::Type::kPrefetch:
        if (!c.region->loop.dead) {
          c.region->loop.spans.insert(c.region->loop.spans.end(), c.spans.begin(), c.spans.end());
          if (!c.region->loop.in_background) {
            c.region->loop.in_background = true;
            background_.push_back(c.region);
          }
        }
        break;
      case Command::Type::kPoisoned: {
        c.region->loop.in_flight--;
        if (c.region->loop.dead && c.region->loop.in_flight == 0 && c.region->loop.ops.empty()) finish_removal(c.region);
        break;
      }
      case Command::Type::kDropped:
        on_dropped(c.drops);
        break;
      case Command::Type::kAdopt:
        attach_space(c.link, c.done);
        break;
      case Command::Type::kFailSpace:
        fail_foreign(c.link.get(), c.ranges, c.done);
        break;
      case Command::Type::kPark:
        park(c.done);
        break;
      case Command::Type::kStop:
        stopping_ = true;
        break;
    }
  }
}

void Engine::attach(RegionState* r, std::promise<void>* done) {
  FAULTLINE_ASSERT_LOOP(loop_);
  if (r->foreign) {
    r->refused = check_foreign(r);
    if (!r->refused.empty()) {
      done->set_value();
      return;
    }
  }
  auto& slot = slots_[r->backend.get()];
  if (!slot) {
    slot = std::make_unique<BackendSlot>();
    slot->backend = r->backend.get();
    slot->depth = std::max<uint32_t>(1, r->backend->queue_depth());
    r->backend->attach_staging(staging_.memory());
    if (int fd = r->backend->completion_fd(); fd >= 0) {
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLET;
      ev.data.u64 = reinterpret_cast<uint64_t>(slot.get());
      if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
        int err = errno;
        slots_.erase(r->backend.get());
        done->set_exception(std::make_exception_ptr(
            Error("cannot poll the completion fd of " + r->backend->name() + ": " + strerror(err), err)));
        return;
      }
    }
  }
  slot->users++;
  r->loop.slot = slot.get();
  r->space->regions[r->base()] = r;
  if (r->foreign) replay_orphans(r);
  done->set_value();
}

void Engine::detach(RegionState* r) {
  FAULTLINE_ASSERT_LOOP(loop_);
  if (r->loop.dead) return;  // (a foreign region, detached when its process exited or failed)
  r->loop.dead = true;
  r->space->regions.erase(r->base());
  // Forget everything queued for it; reads in flight finish in finish().
  auto drop_queued = [&](auto& queue) {
    std::erase_if(queue, [&](ReadOp* op) {
      if (op->region != r) return false;
      finish(op);
      return true;
    });
  };
  drop_queued(demand_);
  drop_queued(deferred_);
  drop_queued(held_);
  background_.erase(std::remove(background_.begin(), background_.end(), r), background_.end());
  r->loop.in_background = false;
  r->loop.spans.clear();
  r->loop.readahead.stop();
  if (r->loop.in_flight == 0 && r->loop.ops.empty()) finish_removal(r);
}

void Engine::finish_removal(RegionState* r) {
  FAULTLINE_ASSERT_LOOP(loop_);
  if (r->loop.removal_finished) return;
  r->loop.removal_finished = true;
  // Latencies not yet recorded would name a region about to be freed.
  latencies_.erase(std::remove_if(latencies_.begin(), latencies_.end(),
                                  [&](const auto& l) { return l.first == r; }),
                   latencies_.end());
  r->loop.slot->users--;
  removed_.push_back(r);
}

void Engine::release_slot(BackendSlot* slot) {
  FAULTLINE_ASSERT_LOOP(loop_);
  if (slot->users > 0 || slot->in_flight > 0) return;
  if (int fd = slot->backend->completion_fd(); fd >= 0) epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr);
  slots_.erase(slot->backend);
}

// Only this thread writes the counters: a plain load and store (no locked
// read-modify-write) is enough, and readers still see whole values.
void Engine::count(RegionState* r, std::atomic<uint64_t> Stats::*field, uint64_t n) {
  FAULTLINE_ASSERT_LOOP(loop_);
  for (std::atomic<uint64_t>* a : {&(r->stats.*field), &(totals_.*field)})
    a->store(a->load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

void Engine::count_total(std::atomic<uint64_t> Stats::*field, uint64_t n) {
  FAULTLINE_ASSERT_LOOP(loop_);
  std::atomic<uint64_t>& a = totals_.*field;
  a.store(a.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

}  // namespace faultline::detail

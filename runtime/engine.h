// SPDX-License-Identifier: Apache-2.0
// The runtime's private state: the Engine owns the userfaultfd, the epoll
// loop and its thread; a RegionState is what the loop knows of one region.
// The fault path itself (messages, dispatch, completions, installs) is in
// fault_loop.cc, a read in flight is a ReadOp (read_op.h); engine.cc holds
// set-up, control commands and tear-down.
#pragma once

#include <linux/userfaultfd.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "faultline/backend.h"
#include "faultline/options.h"
#include "faultline/runtime.h"
#include "stats_internal.h"
#include "budget.h"
#include "chunk_bitmap.h"
#include "dirty_log.h"
#include "eviction.h"
#include "evictor.h"
#include "foreign_link.h"
#include "log.h"
#include "page_ranges.h"
#include "poisoner.h"
#include "read_op.h"
#include "readahead.h"
#include "staging.h"
#include "test_options.h"
#include "thread_checks.h"
#include "uffd.h"
#include "uffd_space.h"
#include "unique_fd.h"
#include "writeback.h"

namespace faultline::detail {

struct RegionState;
struct BackendSlot;

// What map() decides about a region; fixed from then on.
struct RegionLayout {
  RegionOptions options;  // as validated, with the runtime's adjustments (read-ahead caps)
  std::shared_ptr<Backend> backend;
  UffdSpace* space = nullptr;  // the userfaultfd it is registered with
  std::shared_ptr<ForeignLink> foreign;  // another process's memory (null: ours)
  Mapping memory;              // the registered range (borrowed if foreign)
  uint64_t length = 0;         // as asked
  uint64_t data_end = 0;       // region bytes the backend holds; zeros after
  uint32_t fill_shift = 16;
  uint64_t chunks = 0;
  // A forked child's copy of a region (uffd_events.cc): the memory is the
  // child's, never unmapped here, and outside every memory budget.
  bool forked = false;
  // Shared memory (RegionOptions::shared_memory): the memfd `memory` maps.
  UniqueFd shared_fd;
};

// One region as the runtime knows it, by owner: the layout (const, read
// by any thread), the loop's state (`loop`, the fault-loop thread only:
// the methods that use it assert so), and the few members other threads
// share (atomics, their own locks, or a promise handed over once).
struct RegionState {
  explicit RegionState(RegionLayout l)
      : options(l.options),
        backend(std::move(l.backend)),
        space(l.space),
        foreign(std::move(l.foreign)),
        memory(std::move(l.memory)),
        length(l.length),
        data_end(l.data_end),
        fill_shift(l.fill_shift),
        chunks(l.chunks),
        forked(l.forked),
        shared_fd(std::move(l.shared_fd)),
        addr(reinterpret_cast<uintptr_t>(memory.data())) {}
  ~RegionState() {
    if (forked) memory.release();  // the child's address space, not ours
  }

  // ---- Fixed after map() ----
  const RegionOptions options;
  const std::shared_ptr<Backend> backend;
  UffdSpace* const space;
  const std::shared_ptr<ForeignLink> foreign;  // keeps `space` alive
  // The registered range as map() reserved it. Its size is fixed; its
  // address follows an mremap (UFFD_EVENT_REMAP: the loop moves it, and
  // `addr`); other threads use it only once the region left the loop.
  Mapping memory;
  const uint64_t length;
  const uint64_t data_end;
  const uint32_t fill_shift;
  const uint64_t chunks;
  const bool forked;
  const UniqueFd shared_fd;  // shared memory: see RegionLayout
  std::atomic<uintptr_t> addr;  // where the region is now (Region::data())

  // ---- Loop thread only ----
  // Chunk ranges to fetch in the background: read-around, then prefetch.
  struct Span {
    uint64_t first, last;
    ReadOp::Kind kind;
  };
  struct Loop {
    BackendSlot* slot = nullptr;
    ChunkBitmap present;  // placed (or poisoned, or unmapped: nothing more to do)
    std::unordered_map<uint64_t, ReadOp*> ops;  // queued or in flight, by chunk
    uint32_t in_flight = 0;  // reads, drops and poisonings under way
    bool dead = false;
    bool removal_finished = false;
    bool in_background = false;
    ReadaheadDetector readahead;
    std::deque<Span> spans;
    ChunkBitmap touched_bits;  // record_touches: chunks already recorded
    // Memory budget. Every region tracks what is resident; a region under
    // a budget (its own or the runtime's) has a policy and drops chunks
    // through the evictor.
    BudgetAccount budget;       // the region's own (limit.bytes 0: none)
    ChunkBitmap resident_bits;  // placed, not yet dropped
    ChunkBitmap dropping_bits;  // handed to the evictor
    std::unique_ptr<ChunkPolicy> policy;
    // Events (uffd_events.cc), as offsets in the region: pages the
    // application removed (they read zeros, whatever the backend holds) and
    // ranges it unmapped (never placed again).
    PageRanges removed;
    PageRanges unmapped;
  } loop;

  // ---- Shared ----
  Stats stats;                 // written by the loop only (relaxed atomics), read by anyone
  std::promise<void> removed;  // set by the loop once, awaited by Region::close()
  // Why the loop refused the region (foreign regions), set before it
  // acknowledges the add; add_region() throws it on the caller's thread
  // (an exception_ptr crossing threads is opaque to TSan).
  std::string refused;
  // record_touches: chunk numbers in first-touch order (read by application threads).
  mutable Mutex touched_mu;
  std::vector<uint64_t> touched GUARDED_BY(touched_mu);
  // Dirty tracking (track_dirty or write_back): pages are installed
  // write-protected and written pages are read from `dirty`. Write-back
  // regions also have `writeback`. Both are created by map(), null
  // otherwise, and lock themselves (used by the loop, the evictor and
  // application threads).
  std::unique_ptr<DirtyLog> dirty;
  std::unique_ptr<WriteBack> writeback;

  uintptr_t base() const { return addr.load(std::memory_order_relaxed); }
  bool shared() const { return static_cast<bool>(shared_fd); }
  uint64_t chunk_length(uint64_t c) const {
    uint64_t offset = c << fill_shift;
    return std::min<uint64_t>(uint64_t{1} << fill_shift, memory.size() - offset);
  }
};

// A backend as the loop sees it: reads in flight and the batch being built.
struct BackendSlot {
  Backend* backend = nullptr;
  uint32_t depth = 0;
  uint32_t in_flight = 0;
  uint32_t users = 0;  // live regions
  std::vector<ReadRequest> batch;
};

class Engine {
 public:
  explicit Engine(const RuntimeOptions& options, const EngineTestOptions& test = {});
  ~Engine();

  const UffdMode& mode() const { return own_->uffd.mode; }
  StatsSnapshot stats() const { return totals_.snapshot(); }
  // The runtime's own userfaultfd: regions mapped in this process.
  UffdSpace* own_space() const { return own_; }
  int uffd() const { return own_->fd(); }
  const RuntimeOptions& options() const { return options_; }

  // Around every fork() of the process, on the forking thread
  // (pthread_atfork; uffd_events.cc). With UFFD_FEATURE_EVENT_FORK,
  // before_fork() parks the loop, allocation-free, until after_fork(); the
  // child's copy of the regions is then served. Without it, regions are not
  // inherited: before_fork() says so once if this runtime has regions.
  void before_fork();
  void after_fork();

  // Called from application threads.
  void add_region(const std::shared_ptr<RegionState>& region);
  void remove_region(RegionState* region);  // returns when no read of it is in flight
  void prefetch(RegionState* region, uint64_t offset, uint64_t length);
  void prefetch_spans(RegionState* region, std::vector<RegionState::Span> spans);
  void drain(RegionState* region);
  // Foreign spaces (engine_foreign.cc): serve the link's space from now on;
  // poison what it has not been served (ForeignSpace::fail). Both return
  // once the loop has done it.
  void adopt(const std::shared_ptr<ForeignLink>& link);
  void fail_space(const std::shared_ptr<ForeignLink>& link, const std::vector<ForeignRange>& also);

 private:
  struct Command {
    enum class Type { kAdd, kRemove, kPrefetch, kPoisoned, kDropped, kAdopt, kFailSpace, kPark, kStop };
    Command(Type t, RegionState* r = nullptr, uint64_t f = 0, uint64_t l = 0, std::promise<void>* d = nullptr)
        : type(t), region(r), first(f), last(l), done(d) {}
    Type type;
    RegionState* region = nullptr;
    uint64_t first = 0, last = 0;
    std::promise<void>* done = nullptr;
    std::vector<RegionState::Span> spans;  // for kPrefetch: queued in order
    std::vector<Drop> drops;               // for kDropped
    std::shared_ptr<ForeignLink> link;     // for kAdopt, kFailSpace
    std::vector<ForeignRange> ranges;      // for kFailSpace
  };

  void send(Command command);
  void run();

  // Control (engine.cc).
  void run_commands();
  void attach(RegionState* r, std::promise<void>* done);
  void detach(RegionState* r);
  void finish_removal(RegionState* r);
  void release_slot(BackendSlot* slot);
  // Foreign spaces (engine_foreign.cc).
  void attach_space(const std::shared_ptr<ForeignLink>& link, std::promise<void>* done);
  std::string check_foreign(RegionState* r);
  void hold_orphan(UffdSpace& space, uintptr_t addr);
  void replay_orphans(RegionState* r);
  void on_exit(ForeignLink* link);
  void fail_foreign(ForeignLink* link, const std::vector<ForeignRange>& also, std::promise<void>* done);

  // The fault path (fault_loop.cc).
  void read_messages(UffdSpace& space);
  void handle_message(UffdSpace& space, const uffd_msg& m, uint64_t now);
  void on_fault(UffdSpace& space, uintptr_t addr, uint64_t now);
  // Events other than faults (uffd_events.cc).
  void on_event(UffdSpace& space, const uffd_msg& m);
  void on_remove(UffdSpace& space, uintptr_t start, uintptr_t end);
  void on_unmap(UffdSpace& space, uintptr_t start, uintptr_t end);
  void on_remap(UffdSpace& space, uintptr_t from, uintptr_t to, uint64_t len);
  void on_fork(UffdSpace& space, int child_uffd);
  void park(std::promise<void>* parked);
  void on_unhandled(UffdSpace& space, uint8_t event);
  std::shared_ptr<RegionState> clone_for_child(RegionState* r, UffdSpace* child);
  void reap_children();
  void drop_space(UffdSpace* space);
  void poison_children_left();
  void mask_removed(ReadOp* op);
  PlaceResult place_mapped(ReadOp* op, bool wake);
  // A userfaultfd of another address space, polled by the loop from now on
  // (engine.cc). Loop thread only.
  UffdSpace* add_space(Uffd uffd, pid_t pid);
  void note_touch(RegionState* r, uint64_t chunk);
  void note_readahead(RegionState* r, uint64_t chunk);
  bool next_background(RegionState* r, uint64_t* chunk, ReadOp::Kind* kind);
  ReadOp* new_op(RegionState* r, uint64_t chunk, ReadOp::Kind kind);
  bool start(ReadOp* op);
  void submit_batches();
  void dispatch_demand();
  void dispatch_background();
  void make_urgent(ReadOp* op);
  void map_shared_again(RegionState* r, uint64_t chunk);
  void reap(BackendSlot* slot);
  void complete(ReadOp* op, const ReadCompletion& c, bool alone);
  void retry(ReadOp* op);
  void install(ReadOp* op, bool wake_now);  // and its steps:
  void hold_or_reread_stale(ReadOp* op);
  bool hold_for_drops(ReadOp* op);
  PlaceResult place_pages(ReadOp* op, bool wake, uint32_t until);
  bool defer_placement(ReadOp* op);
  void note_installed(ReadOp* op);
  void queue_wakes(ReadOp* op, bool woken, bool hit_existing);
  void fail(ReadOp* op, int err);
  void poison(RegionState* r, uintptr_t addr, uint64_t len);
  void finish(ReadOp* op);
  void retry_deferred();
  void flush_wakes();
  void count(RegionState* r, std::atomic<uint64_t> Stats::*field, uint64_t n);
  void count_total(std::atomic<uint64_t> Stats::*field, uint64_t n);

  // Memory budgets (eviction.cc has the policies, evictor.cc the drops).
  // Whether the evictor may drop this resident chunk now. The seam for
  // write-back: a chunk whose data exists only in memory must not be
  // dropped. Today every chunk of a writable region is such a chunk.
  bool can_drop(RegionState& r, uint64_t chunk);
  bool hold_for_budget(ReadOp* op);
  void unreserve(ReadOp* op);
  void note_resident(RegionState* r, uint64_t chunk);
  void note_gone(RegionState* r, uint64_t chunk);
  void maybe_evict(RegionState* r);
  void evict_above_high(BudgetAccount& account, RegionState* only);
  void make_room(BudgetAccount& account, RegionState* only, uint64_t bytes);
  uint64_t evict(RegionState* only, uint64_t bytes);
  void on_dropped(const std::vector<Drop>& drops);

  RuntimeOptions options_;
  EngineTestOptions test_;
  // Every userfaultfd served; the first is the runtime's own (own_).
  std::vector<std::unique_ptr<UffdSpace>> spaces_;
  UffdSpace* own_ = nullptr;
  // Adopted spaces, by space (loop thread).
  std::unordered_map<UffdSpace*, std::shared_ptr<ForeignLink>> foreign_;
  UniqueFd epoll_;
  UniqueFd control_;  // eventfd
  // The fork handshake (uffd_events.cc): after_fork() raises unpark_; the
  // messages read while parked wait in parked_, never grown past its
  // reserved capacity (no allocation while the forking thread holds malloc's locks).
  UniqueFd unpark_;  // eventfd
  std::vector<uffd_msg> parked_;
  bool parked_for_fork_ = false;  // the forking thread's, under the fork registry's lock
  Stats totals_;

  Mutex mu_;
  std::vector<Command> commands_ GUARDED_BY(mu_);
  LoopThread loop_;  // FAULTLINE_ASSERT_LOOP(loop_) in the loop-only methods

  // Loop-thread state.
  StagingArena staging_;
  // A chunk of zeros to place with UFFDIO_COPY where ZEROPAGE cannot:
  // write-protected pages (dirty tracking) and huge pages.
  Mapping zeros_;
  std::unordered_map<Backend*, std::unique_ptr<BackendSlot>> slots_;
  std::deque<ReadOp*> demand_;           // waiting for staging or queue depth
  std::deque<RegionState*> background_;  // regions with read-ahead or prefetch to do
  std::vector<ReadOp*> deferred_;        // installs to retry (EAGAIN)
  std::vector<RegionState*> removed_;    // fully detached; acknowledged at the end of the iteration
  std::vector<std::pair<RegionState*, uint64_t>> latencies_;  // (region, fault read time)
  std::vector<ReadOp*> spare_ops_;       // finished ops, reused (keeps the fault path free of malloc)
  std::vector<BackendSlot*> reap_list_;
  std::unique_ptr<Poisoner> poisoner_;  // started with the first range poisoned without UFFDIO_POISON
  bool stopping_ = false;
  uint64_t unhandled_logged_ = 0;  // a bit per event kind already logged
  uint32_t children_ = 0;          // spaces of forked children being served
  std::atomic<int> live_regions_{0};         // added, not yet removed (any thread)
  std::atomic<bool> fork_warned_{false};
  uint64_t children_checked_ns_ = 0;  // when reap_children() last probed them
  bool room_ = true;  // false: the last dispatch stopped for want of queue depth or staging
  // Drain reads in flight are kept under drain_batch_ bytes, which grows
  // while no demand fault arrives (see Region::drain()).
  static constexpr uint64_t kDrainBatchMin = 64 * 1024, kDrainBatchMax = 4 * 1024 * 1024;
  uint64_t drain_batch_ = kDrainBatchMin;
  uint64_t drain_in_flight_ = 0;
  // Memory budget of the whole runtime (loop thread).
  BudgetAccount budget_;
  uint64_t placement_tick_ = 0;           // orders placements across regions' policies
  std::vector<ReadOp*> held_;             // placements waiting for drops in flight
  std::unique_ptr<Evictor> evictor_;      // started with the first drop

  std::thread thread_;
};

uint64_t now_ns();
// The engines told of every fork (Engine::before_fork, after_fork;
// uffd_events.cc): registered for their lifetime.
void watch_forks(Engine* engine, bool on);
// Moves lent bytes into the op's staging block (they are valid only until
// the next reap) so they can be changed or kept (fault_loop.cc).
void keep_in_staging(ReadOp* op);
// Throws Error naming `name` if the watermarks are out of range (runtime.cc).
void validate_budget(const std::string& name, const MemoryBudget& b);

}  // namespace faultline::detail

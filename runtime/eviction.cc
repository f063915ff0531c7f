// SPDX-License-Identifier: Apache-2.0
#include "eviction.h"

#include <errno.h>
#include <sys/mman.h>

#include <algorithm>
#include <string>

#include "faultline/error.h"

namespace faultline::detail {

namespace {

constexpr uint64_t kNil = UINT64_MAX;

// Doubly-linked lists threaded through one array of per-chunk nodes. Every
// list runs from its oldest entry (head: the next victim) to its newest.
class ChunkLists {
 public:
  static constexpr int kLists = 5;  // indexed by ChunkPlace (kAbsent has no list)

  explicit ChunkLists(uint64_t chunks) {
    size_t bytes = static_cast<size_t>(chunks) * sizeof(Node);
    // Fresh anonymous memory reads as zero: place 0 = kAbsent; links are
    // only read for chunks on a list.
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
      throw_errno("cannot reserve " + std::to_string(bytes) + " bytes for the eviction state of " +
                      std::to_string(chunks) + " chunks",
                  errno);
    nodes_ = static_cast<Node*>(p);
    memory_ = Mapping(p, bytes);
  }

  ChunkPlace where(uint64_t c) const { return nodes_[c].place; }
  uint64_t size(ChunkPlace l) const { return lists_[index(l)].size; }
  uint64_t oldest(ChunkPlace l) const { return lists_[index(l)].head; }
  uint64_t tick(uint64_t c) const { return nodes_[c].tick; }

  // Appends c (on no list) as the newest of l.
  void push(ChunkPlace l, uint64_t c, uint64_t tick) {
    List& list = lists_[index(l)];
    Node& n = nodes_[c];
    n.place = l;
    n.tick = tick;
    n.prev = list.tail;
    n.next = kNil;
    if (list.tail != kNil)
      nodes_[list.tail].next = c;
    else
      list.head = c;
    list.tail = c;
    list.size++;
  }

  // Takes c off its list; its place becomes `now`.
  void unlink(uint64_t c, ChunkPlace now) {
    Node& n = nodes_[c];
    if (n.place != ChunkPlace::kAbsent && n.place != ChunkPlace::kEvicted) {
      List& list = lists_[index(n.place)];
      if (n.prev != kNil)
        nodes_[n.prev].next = n.next;
      else
        list.head = n.next;
      if (n.next != kNil)
        nodes_[n.next].prev = n.prev;
      else
        list.tail = n.prev;
      list.size--;
    }
    n.place = now;
  }

  void move(uint64_t c, ChunkPlace to, uint64_t tick) {
    unlink(c, ChunkPlace::kAbsent);
    push(to, c, tick);
  }

 private:
  struct Node {
    uint64_t prev, next;
    uint64_t tick;
    ChunkPlace place;
  };
  struct List {
    uint64_t head = kNil, tail = kNil, size = 0;
  };
  static int index(ChunkPlace l) { return static_cast<int>(l) - 1; }

  Mapping memory_;
  Node* nodes_ = nullptr;
  List lists_[kLists];
};

class FifoPolicy final : public ChunkPolicy {
 public:
  explicit FifoPolicy(uint64_t chunks) : lists_(chunks) {}

  void placed(uint64_t chunk, uint64_t tick) override {
    lists_.unlink(chunk, ChunkPlace::kAbsent);
    lists_.push(ChunkPlace::kRecent, chunk, tick);
  }
  bool peek_victim(uint64_t* chunk, uint64_t* tick) const override {
    uint64_t c = lists_.oldest(ChunkPlace::kRecent);
    if (c == kNil) return false;
    *chunk = c;
    *tick = lists_.tick(c);
    return true;
  }
  void evict(uint64_t chunk) override { lists_.unlink(chunk, ChunkPlace::kEvicted); }
  void keep(uint64_t chunk, uint64_t tick) override { lists_.move(chunk, ChunkPlace::kRecent, tick); }
  void forget(uint64_t chunk) override { lists_.unlink(chunk, ChunkPlace::kAbsent); }
  ChunkPlace where(uint64_t chunk) const override { return lists_.where(chunk); }
  uint64_t resident() const override { return lists_.size(ChunkPlace::kRecent); }

 private:
  ChunkLists lists_;
};

// ARC (Megiddo and Modha, FAST'03) fed with misses only. Chunks placed for
// the first time go to `recent`; a chunk that faults back while remembered
// in a ghost list has shown reuse and goes to `frequent`. A ghost hit in
// the recent ghosts says the recent side was too small (target_ grows), one
// in the frequent ghosts the opposite. Victims come from the recent side
// while it is above its target, so a scan of chunks used once passes
// through it without pushing out chunks that proved they come back.
class AdaptivePolicy final : public ChunkPolicy {
 public:
  AdaptivePolicy(uint64_t chunks, uint64_t capacity) : lists_(chunks), capacity_(std::max<uint64_t>(1, capacity)) {}

  void placed(uint64_t chunk, uint64_t tick) override {
    uint64_t b1 = lists_.size(ChunkPlace::kGhostRecent), b2 = lists_.size(ChunkPlace::kGhostFrequent);
    switch (lists_.where(chunk)) {
      case ChunkPlace::kGhostRecent:
        target_ = std::min(capacity_, target_ + std::max<uint64_t>(1, b2 / b1));
        lists_.move(chunk, ChunkPlace::kFrequent, tick);
        break;
      case ChunkPlace::kGhostFrequent: {
        uint64_t step = std::max<uint64_t>(1, b1 / b2);
        target_ = target_ > step ? target_ - step : 0;
        lists_.move(chunk, ChunkPlace::kFrequent, tick);
        break;
      }
      case ChunkPlace::kRecent:
      case ChunkPlace::kFrequent:
        lists_.move(chunk, lists_.where(chunk), tick);  // placed again without leaving: not expected
        break;
      case ChunkPlace::kAbsent:
      case ChunkPlace::kEvicted:
        lists_.unlink(chunk, ChunkPlace::kAbsent);
        lists_.push(ChunkPlace::kRecent, chunk, tick);
        break;
    }
    trim_ghosts();
  }

  bool peek_victim(uint64_t* chunk, uint64_t* tick) const override {
    uint64_t c = lists_.oldest(victim_list());
    if (c == kNil) return false;
    *chunk = c;
    *tick = lists_.tick(c);
    return true;
  }

  void evict(uint64_t chunk) override {
    ChunkPlace from = lists_.where(chunk);
    ChunkPlace ghost = from == ChunkPlace::kFrequent ? ChunkPlace::kGhostFrequent : ChunkPlace::kGhostRecent;
    lists_.move(chunk, ghost, 0);
    trim_ghosts();
  }

  void keep(uint64_t chunk, uint64_t tick) override { lists_.move(chunk, lists_.where(chunk), tick); }
  void forget(uint64_t chunk) override { lists_.unlink(chunk, ChunkPlace::kAbsent); }
  ChunkPlace where(uint64_t chunk) const override { return lists_.where(chunk); }
  uint64_t resident() const override {
    return lists_.size(ChunkPlace::kRecent) + lists_.size(ChunkPlace::kFrequent);
  }
  uint64_t target_recent() const { return target_; }

 private:
  ChunkPlace victim_list() const {
    uint64_t t1 = lists_.size(ChunkPlace::kRecent), t2 = lists_.size(ChunkPlace::kFrequent);
    return t1 > 0 && (t1 > target_ || t2 == 0) ? ChunkPlace::kRecent : ChunkPlace::kFrequent;
  }

  // ARC bounds the recent side and its ghosts together by the capacity. Here
  // a refault is the only reuse signal (hits are invisible), and a scan
  // filling the recent side would leave no ghosts at all: each ghost list
  // keeps up to `capacity` chunks of its own instead.
  void trim_ghosts() {
    for (ChunkPlace g : {ChunkPlace::kGhostRecent, ChunkPlace::kGhostFrequent})
      while (lists_.size(g) > capacity_) lists_.unlink(lists_.oldest(g), ChunkPlace::kEvicted);
  }

  ChunkLists lists_;
  uint64_t capacity_;
  uint64_t target_ = 0;  // ARC's p: the size the recent side aims for
};

}  // namespace

// The one place a policy is chosen: a new EvictionPolicy value gets its
// case here and in is_policy() below (-Wswitch names either switch when one
// is missing) and never falls back to another policy silently.
std::unique_ptr<ChunkPolicy> make_policy(EvictionPolicy kind, uint64_t chunks, uint64_t capacity) {
  switch (kind) {
    case EvictionPolicy::kAdaptive:
      return std::make_unique<AdaptivePolicy>(chunks, capacity);
    case EvictionPolicy::kFifo:
      return std::make_unique<FifoPolicy>(chunks);
  }
  throw Error("RegionOptions.eviction = " + std::to_string(static_cast<int>(kind)) + ": not an EvictionPolicy");
}

bool is_policy(EvictionPolicy kind) {
  switch (kind) {  // no default: -Wswitch names a policy missing here
    case EvictionPolicy::kAdaptive:
    case EvictionPolicy::kFifo:
      return true;
  }
  return false;
}

}  // namespace faultline::detail

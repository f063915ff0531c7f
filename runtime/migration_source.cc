// SPDX-License-Identifier: Apache-2.0
// migrate_out(): the source's side (docs/migration.md).
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <optional>
#include <thread>

#include "faultline/error.h"
#include "faultline/migration.h"
#include "faultline/page_server.h"
#include "little_endian.h"
#include "migration_backend.h"
#include "migration_protocol.h"

namespace faultline {

namespace {

using namespace migration;

bool zero_page(const std::byte* p) {
  uint64_t acc = 0;
  const auto* w = reinterpret_cast<const uint64_t*>(p);
  for (size_t i = 0; i < kPage / 8; i += 8)
    acc |= w[i] | w[i + 1] | w[i + 2] | w[i + 3] | w[i + 4] | w[i + 5] | w[i + 6] | w[i + 7];
  return acc == 0;
}

struct Counts {
  uint64_t pages = 0, zero_pages = 0;
};

// The source's state for one call.
class Source {
 public:
  Source(std::span<Region* const> regions, const std::string& destination, const MigrationHooks& hooks,
         const MigrationOptions& options)
      : regions_(regions.begin(), regions.end()), destination_(destination), hooks_(hooks), options_(options) {}

  MigrationMetrics run();

 private:
  void check();
  void handshake();
  void send_region_range(size_t region, uint64_t offset, uint64_t length, Counts* counts);
  void send_object_range(uint64_t offset, uint64_t length, Counts* counts);
  std::vector<std::vector<DirtyRange>> take_all(uint64_t* pages);
  void send_dirty(const std::vector<std::vector<DirtyRange>>& dirty, Counts* counts);
  void round_end(uint32_t id);
  void switch_precopy(std::vector<std::vector<DirtyRange>> carry);
  void switch_postcopy(std::vector<uint8_t> listed, bool all);
  uint64_t send_stale(const std::vector<std::vector<DirtyRange>>& set, std::vector<uint8_t>* listed);
  std::vector<uint8_t> list_stale_before_stop(const std::vector<std::vector<DirtyRange>>& carry);
  void push(std::vector<uint8_t>& todo);
  bool recover(std::vector<uint8_t>* todo);
  void resume_handshake(Channel& ch, std::vector<uint8_t>* todo);
  std::string urgent_address() const;

  std::vector<Region*> regions_;
  std::string destination_;
  const MigrationHooks& hooks_;
  MigrationOptions options_;
  std::vector<uint64_t> sizes_, bases_;
  uint64_t object_size_ = 0;
  std::optional<Channel> ch_;
  uint64_t earlier_bytes_ = 0;  // sent on streams that broke (post-copy recovery)
  std::array<uint8_t, remote::kNonceSize> nonce_{};  // the OFFER's: names this migration to a reconnect
  std::shared_ptr<SourcePages> pages_;
  std::unique_ptr<PageServer> server_;
  std::vector<std::byte> buf_;
  MigrationMetrics m_;
  Clock::time_point start_ = Clock::now(), stop_at_;
  bool stopped_ = false, switched_ = false;
};

void Source::check() {
  if (!hooks_.stop) throw Error("migrate_out: MigrationHooks.stop is required");
  if (regions_.empty()) throw Error("migrate_out: no regions");
  if (regions_.size() > kMaxRegions)
    throw Error("migrate_out: " + std::to_string(regions_.size()) + " regions, at most " + std::to_string(kMaxRegions));
  if (options_.max_rounds < 1 || options_.max_rounds > 1000)
    throw Error("MigrationOptions.max_rounds = " + std::to_string(options_.max_rounds) + ": must be 1..1000");
  if (options_.mode == MigrationMode::kHybrid && (options_.hybrid_rounds < 1 || options_.hybrid_rounds > 1000))
    throw Error("MigrationOptions.hybrid_rounds = " + std::to_string(options_.hybrid_rounds) + ": must be 1..1000");
  for (size_t i = 0; i < regions_.size(); ++i) {
    Region* r = regions_[i];
    std::string name = "migrate_out: regions[" + std::to_string(i) + "]";
    if (!r || r->size() == 0) throw Error(name + " is empty");
    if (!r->options().writable || !r->options().track_dirty || r->options().write_back)
      throw Error(name + " must be writable and mapped with RegionOptions.track_dirty (not write_back)");
    for (size_t j = 0; j < i; ++j)
      if (regions_[j] == r) throw Error(name + " is listed twice");
    sizes_.push_back(r->size());
  }
  bases_ = region_bases(sizes_, &object_size_);
}

std::string Source::urgent_address() const {
  if (!options_.urgent_listen.empty()) return options_.urgent_listen;
  if (destination_.rfind("unix:", 0) == 0) return destination_ + ".urgent";
  remote::SocketAddress local;
  local.length = sizeof local.storage;
  if (::getsockname(ch_->fd(), reinterpret_cast<sockaddr*>(&local.storage), &local.length) != 0)
    throw_errno("migrate_out: getsockname", errno);
  std::string a = remote::format_address(local);
  return a.substr(0, a.rfind(':')) + ":0";
}

void Source::handshake() {
  ch_.emplace(connect_to(destination_, options_.deadline), options_.deadline, destination_);
  Received r = ch_->receive({{Frame::kHello, kHelloSize}});
  Hello hello;
  if (std::string e = decode_hello(r.payload, &hello); !e.empty()) {
    ch_->send_error(remote::ErrorCode::kBadFrame, e);
    throw Error("migrate_out: " + destination_ + " sent " + e, EPROTO);
  }
  if (hello.magic != kMagic || hello.version != kVersion) {
    ch_->send_error(hello.magic != kMagic ? remote::ErrorCode::kBadMagic : remote::ErrorCode::kBadVersion,
                    "expected a faultline migration destination, version 1");
    throw Error("migrate_out: " + destination_ + " is not a faultline migration destination (magic " +
                    std::to_string(hello.magic) + ", version " + std::to_string(hello.version) + ")",
                EPROTO);
  }
  bool auth = !options_.secret.empty();
  if (bool(hello.caps & kCapAuth) != auth) {
    ch_->send_error(remote::ErrorCode::kAuthFailed, auth ? "the source has a secret" : "the source has no secret");
    throw Error("migrate_out: " + destination_ + (auth ? " has no secret but the source has one"
                                                       : " demands a secret (MigrationOptions.secret)"),
                EACCES);
  }
  Offer offer;
  offer.mode = static_cast<uint8_t>(options_.mode);
  offer.caps = auth ? kCapAuth : 0;
  offer.nonce = remote::random_nonce();
  nonce_ = offer.nonce;
  if (auth) offer.proof = remote::handshake_mac(options_.secret, "client", hello.nonce, offer.nonce);
  offer.region_sizes = sizes_;
  if (options_.mode != MigrationMode::kPrecopy) {
    // The urgent lane: the page server's protocol, its own connection and
    // thread, so a fault never queues behind the push on this stream.
    std::vector<Region*> regions = regions_;
    pages_ = std::make_shared<SourcePages>(regions, bases_, object_size_);
    PageServerOptions po;
    po.listen = {urgent_address()};
    po.secret = options_.secret;
    po.max_connections = 4;
    // Silent by design through the pre-copy rounds; the migration's own
    // deadlines guard the peer, and the server stops with the call.
    po.idle_timeout = std::chrono::hours(24);
    server_ = std::make_unique<PageServer>(pages_, po);
    offer.urgent_address = server_->endpoints().at(0);
  }
  ch_->send(Frame::kOffer, 0, 0, encode_offer(offer));
  Received a = ch_->receive({{Frame::kAccept, remote::kMacSize}});
  if (a.payload.size() != remote::kMacSize) throw Error("migrate_out: ACCEPT of the wrong size", EPROTO);
  if (auth) {
    auto want = remote::handshake_mac(options_.secret, "server", offer.nonce, hello.nonce);
    std::array<uint8_t, remote::kMacSize> got;
    std::memcpy(got.data(), a.payload.data(), got.size());
    if (!remote::mac_equal(want, got)) {
      ch_->send_error(remote::ErrorCode::kAuthFailed, "the destination's proof does not match");
      throw Error("migrate_out: " + destination_ + " does not know the secret", EACCES);
    }
  }
}

// Copies before sending: the checksum must cover exactly the bytes sent,
// and the application may write a page while it is on its way (the dirty
// log then has it for the next round).
void Source::send_region_range(size_t region, uint64_t offset, uint64_t length, Counts* counts) {
  Region* r = regions_[region];
  const uint64_t extent = (r->size() + kPage - 1) / kPage * kPage;
  uint64_t end = std::min(extent, offset + length);
  offset = offset / kPage * kPage;
  constexpr uint64_t kBatch = 1u << 20;
  while (offset < end) {
    uint64_t n = std::min(kBatch, (end - offset + kPage - 1) / kPage * kPage);
    uint64_t real = offset < r->size() ? std::min<uint64_t>(n, r->size() - offset) : 0;
    copy_live(buf_.data(), r->data() + offset, real);
    std::memset(buf_.data() + real, 0, n - real);
    for (uint64_t at = 0; at < n;) {
      bool zero = zero_page(buf_.data() + at);
      uint64_t run = at + kPage;
      while (run < n && zero_page(buf_.data() + run) == zero) run += kPage;
      uint64_t id = bases_[region] + offset + at;
      if (zero) {
        std::byte len[8];
        for (int i = 0; i < 8; ++i) len[i] = std::byte((run - at) >> (8 * i));
        ch_->send(Frame::kZero, 0, id, len);
        counts->zero_pages += (run - at) / kPage;
      } else {
        ch_->send(Frame::kPages, 0, id, std::span<const std::byte>(buf_.data() + at, run - at));
      }
      counts->pages += (run - at) / kPage;
      at = run;
    }
    offset += n;
  }
}

void Source::send_object_range(uint64_t offset, uint64_t length, Counts* counts) {
  while (length > 0) {
    size_t i = static_cast<size_t>(std::upper_bound(bases_.begin(), bases_.end(), offset) - bases_.begin()) - 1;
    uint64_t extent_end = i + 1 < bases_.size() ? bases_[i + 1] : object_size_;
    uint64_t n = std::min(length, extent_end - offset);
    send_region_range(i, offset - bases_[i], n, counts);
    offset += n;
    length -= n;
  }
}

std::vector<std::vector<DirtyRange>> Source::take_all(uint64_t* pages) {
  std::vector<std::vector<DirtyRange>> all;
  *pages = 0;
  for (Region* r : regions_) {
    all.push_back(r->take_dirty());
    for (const DirtyRange& d : all.back()) *pages += (d.length + kPage - 1) / kPage;
  }
  return all;
}

// ROUND_END `id`, and the destination's echo once everything before it is
// in place (placed, or for a hybrid STALE dropped).
void Source::round_end(uint32_t id) {
  ch_->send(Frame::kRoundEnd, 0, id, {});
  Received ack = ch_->receive({{Frame::kRoundEnd, 0}});
  if (ack.id != id)
    throw Error("migrate_out: " + destination_ + " acknowledged round " + std::to_string(ack.id) + ", expected " +
                    std::to_string(id),
                EPROTO);
}

void Source::send_dirty(const std::vector<std::vector<DirtyRange>>& dirty, Counts* counts) {
  for (size_t i = 0; i < dirty.size(); ++i)
    for (const DirtyRange& d : dirty[i]) send_region_range(i, d.offset, d.length, counts);
}

void Source::switch_precopy(std::vector<std::vector<DirtyRange>> carry) {
  uint64_t pages = 0;
  auto late = take_all(&pages);  // written between the last take and the stop
  Counts c;
  send_dirty(carry, &c);
  send_dirty(late, &c);
  m_.final_pages = c.pages;
  m_.pages_sent += c.pages;
  std::vector<std::byte> state = hooks_.state ? hooks_.state() : std::vector<std::byte>{};
  ch_->send(Frame::kSwitch, 0, 0, state);
  ch_->receive({{Frame::kResumed, 0}});
  m_.downtime_ns = ns_since(stop_at_);
}

// The pages of `set` not `listed` yet, as STALE runs (the destination
// drops them and fetches them after the switch-over); they are listed now.
// Returns how many pages that added.
uint64_t Source::send_stale(const std::vector<std::vector<DirtyRange>>& set, std::vector<uint8_t>* listed) {
  std::vector<std::byte> stale;
  uint64_t run_at = 0, run_len = 0, added = 0;
  auto end_run = [&] {
    if (run_len) append_range(&stale, run_at, run_len);
    run_len = 0;
    if (stale.size() >= kMaxPagesPayload) {
      ch_->send(Frame::kStale, 0, 0, stale);
      stale.clear();
    }
  };
  for (size_t i = 0; i < set.size(); ++i) {
    for (const DirtyRange& d : set[i]) {
      for (uint64_t at = bases_[i] + d.offset / kPage * kPage; at < bases_[i] + d.offset + d.length; at += kPage) {
        uint8_t& l = (*listed)[at / kPage];
        if (l) continue;
        l = 1;
        added++;
        if (run_len && run_at + run_len != at) end_run();
        if (!run_len) run_at = at;
        run_len += kPage;
      }
    }
  }
  end_run();
  if (!stale.empty()) ch_->send(Frame::kStale, 0, 0, stale);
  return added;
}

// Hybrid, before the stop: the pages written since their last copy are
// listed STALE, and the destination drops them (one madvise and REMOVE
// event per run) outside the downtime; a ROUND_END after them is a barrier
// it answers once it has. The writers go on writing meanwhile, so a few
// passes more list what they wrote since, until one finds few pages not
// listed yet: the STALE after the stop, inside the downtime, is then small.
std::vector<uint8_t> Source::list_stale_before_stop(const std::vector<std::vector<DirtyRange>>& carry) {
  constexpr uint64_t kFewPages = 256;
  constexpr int kMaxPasses = 4;
  std::vector<uint8_t> listed(object_size_ / kPage, 0);
  uint64_t added = send_stale(carry, &listed);
  for (int pass = 0;; ++pass) {
    round_end(static_cast<uint32_t>(m_.rounds.size()));  // a barrier, not a round
    if (pass == kMaxPasses || added <= kFewPages) break;
    uint64_t pages = 0;
    added = send_stale(take_all(&pages), &listed);
  }
  return listed;
}

void Source::switch_postcopy(std::vector<uint8_t> listed, bool all) {
  const uint64_t page_count = object_size_ / kPage;
  std::vector<uint8_t> todo;
  if (all) {
    // Post-copy from the start sends every page anyway: no scan of the
    // dirty log inside the downtime (it would write-protect every page again).
    todo.assign(page_count, 1);
  } else {
    // What was written since the last take before the stop goes now.
    uint64_t pages = 0;
    todo = std::move(listed);
    send_stale(take_all(&pages), &todo);
  }
  for (uint8_t t : todo) m_.final_pages += t;
  std::vector<std::byte> state = hooks_.state ? hooks_.state() : std::vector<std::byte>{};
  ch_->send(Frame::kSwitch, uint8_t(kSwitchPostcopy | (all ? kSwitchAllStale : 0)), 0, state);
  switched_ = true;
  ch_->receive({{Frame::kResumed, 0}});
  m_.downtime_ns = ns_since(stop_at_);
  Clock::time_point resumed = Clock::now();
  Complete c;
  for (;;) {
    try {
      push(todo);
      ch_->send(Frame::kDone, 0, 0, {});
      Received r = ch_->receive({{Frame::kComplete, kCompleteSize}});
      if (std::string e = decode_complete(r.payload, &c); !e.empty()) throw Error("migrate_out: " + e, EPROTO);
      break;
    } catch (const Error& e) {
      // A peer that said what is wrong (EPROTO, EACCES) is not coming back;
      // a lost connection may be.
      if (e.sys_errno() == EPROTO || e.sys_errno() == EACCES || !recover(&todo))
        throw Error(std::string(e.what()) + "; the stream was not recovered within postcopy_deadline (" +
                        std::to_string(options_.postcopy_deadline.count()) + " ms)",
                    e.sys_errno());
    }
  }
  m_.pages_requested = c.pages_requested;
  m_.requests = c.requests;
  m_.request_p50_ns = c.p50_ns;
  m_.request_p99_ns = c.p99_ns;
  m_.request_max_ns = c.max_ns;
  m_.blocked_ns = c.blocked_ns;
  m_.postcopy_ns = c.postcopy_ns ? c.postcopy_ns : ns_since(resumed);
}

// The background push: in order, but after each page the destination asked
// for, on from there (its neighbours are likely next).
void Source::push(std::vector<uint8_t>& todo) {
  const uint64_t page_count = todo.size();
  constexpr uint64_t kRun = 64;  // pages per batch: 256 KiB between looks at the hint
  uint64_t pos = 0, left = 0, seen_hint = UINT64_MAX;
  for (uint8_t t : todo) left += t;
  Counts c;
  while (left > 0) {
    uint64_t hint = pages_->last_request_end();
    if (hint != seen_hint) {
      seen_hint = hint;
      if (hint != UINT64_MAX) pos = std::min(page_count - 1, hint / kPage);
    }
    while (!todo[pos]) pos = pos + 1 == page_count ? 0 : pos + 1;
    uint64_t q = pos;
    while (q < page_count && todo[q] && q - pos < kRun) todo[q++] = 0;
    left -= q - pos;
    send_object_range(pos * kPage, (q - pos) * kPage, &c);
    pos = q == page_count ? 0 : q;
    if (ch_->readable()) ch_->receive({});  // only an ERROR may come now: it throws
  }
  m_.pages_pushed += c.pages;
  m_.pages_sent += c.pages;
}

// Post-copy recovery: the stream broke after the resume. The urgent lane
// keeps serving the destination's faults (and the pull it falls back to)
// while this reconnects to the destination, with backoff, for up to
// postcopy_deadline. On a new stream the destination says which pages it
// still lacks (`todo` becomes exactly those) and the push goes on.
bool Source::recover(std::vector<uint8_t>* todo) {
  const Clock::time_point until = Clock::now() + options_.postcopy_deadline;
  std::chrono::milliseconds backoff(20);
  earlier_bytes_ += ch_->bytes_sent();
  ch_.reset();
  while (Clock::now() < until) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
    try {
      Channel ch(connect_to(destination_, std::min(options_.deadline, left)), options_.deadline, destination_);
      resume_handshake(ch, todo);
      ch_.emplace(std::move(ch));
      m_.recoveries++;
      return true;
    } catch (const Error& e) {
      if (e.sys_errno() == EACCES) throw;  // the wrong destination, or the wrong secret: no use retrying
    }
    std::this_thread::sleep_for(std::min(backoff, std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now())));
    backoff = std::min(backoff * 2, std::chrono::milliseconds(500));
  }
  return false;
}

// HELLO from the destination, RESUME (this migration's nonce and a proof),
// its ACCEPT (its proof), then WANT frames: the pages it still lacks.
void Source::resume_handshake(Channel& ch, std::vector<uint8_t>* todo) {
  Received r = ch.receive({{Frame::kHello, kHelloSize}});
  Hello hello;
  if (std::string e = decode_hello(r.payload, &hello); !e.empty() || hello.magic != kMagic)
    throw Error("migrate_out: " + destination_ + " answered a reconnect with a bad HELLO", EPROTO);
  const bool auth = !options_.secret.empty();
  std::vector<std::byte> resume(kResumeSize);
  std::memcpy(resume.data(), nonce_.data(), nonce_.size());
  if (auth) {
    auto proof = remote::handshake_mac(options_.secret, "resume", hello.nonce, nonce_);
    std::memcpy(resume.data() + nonce_.size(), proof.data(), proof.size());
  }
  ch.send(Frame::kResume, 0, 0, resume);
  Received a = ch.receive({{Frame::kAccept, remote::kMacSize}});
  if (a.payload.size() != remote::kMacSize) throw Error("migrate_out: ACCEPT of the wrong size", EPROTO);
  if (auth) {
    auto want = remote::handshake_mac(options_.secret, "resumed", nonce_, hello.nonce);
    std::array<uint8_t, remote::kMacSize> got;
    std::memcpy(got.data(), a.payload.data(), got.size());
    if (!remote::mac_equal(want, got)) {
      ch.send_error(remote::ErrorCode::kAuthFailed, "the destination's proof does not match");
      throw Error("migrate_out: " + destination_ + " (reconnected) does not know the secret", EACCES);
    }
  }
  std::fill(todo->begin(), todo->end(), 0);
  for (;;) {
    Received w = ch.receive({{Frame::kWant, kMaxPagesPayload}});
    if (w.payload.size() % 16) throw Error("migrate_out: a WANT frame of " + std::to_string(w.payload.size()) + " bytes", EPROTO);
    for (size_t p = 0; p < w.payload.size(); p += 16) {
      uint64_t off = detail::get_le(w.payload.data() + p, 8), len = detail::get_le(w.payload.data() + p + 8, 8);
      if (off % kPage || len % kPage || off > object_size_ || len > object_size_ - off) {
        ch.send_error(remote::ErrorCode::kBadFrame, "WANT outside the object");
        throw Error("migrate_out: " + destination_ + " wants [" + std::to_string(off) + ", +" + std::to_string(len) +
                        "), not whole pages within the " + std::to_string(object_size_) + "-byte object",
                    EPROTO);
      }
      std::fill(todo->begin() + static_cast<ptrdiff_t>(off / kPage), todo->begin() + static_cast<ptrdiff_t>((off + len) / kPage), 1);
    }
    if (!(w.flags & kWantMore)) break;
  }
}

MigrationMetrics Source::run() {
  check();
  m_.mode = options_.mode;
  buf_.resize(1u << 20);
  handshake();
  m_.setup_ns = ns_since(start_);
  try {
    std::vector<std::vector<DirtyRange>> carry(regions_.size());
    uint64_t pending = 0;
    if (options_.mode != MigrationMode::kPostcopy) {
      // Round 0 sends everything; taking the log first arms it, so every
      // write from here on is in a later take.
      take_all(&pending);
      uint64_t limit = options_.mode == MigrationMode::kHybrid ? options_.hybrid_rounds : options_.max_rounds;
      uint64_t wire_bytes = 0, wire_ns = 0;
      for (uint32_t round = 0;; ++round) {
        Clock::time_point t = Clock::now();
        uint64_t before = ch_->bytes_sent();
        Counts c;
        if (round == 0) {
          for (size_t i = 0; i < regions_.size(); ++i) send_region_range(i, 0, regions_[i]->size(), &c);
        } else {
          send_dirty(carry, &c);
        }
        // The destination's answer: everything sent is in place there, so
        // the rate is end to end and nothing is queued when the stop comes.
        round_end(round);
        MigrationRound mr;
        mr.pages = c.pages;
        mr.zero_pages = c.zero_pages;
        mr.bytes = ch_->bytes_sent() - before;
        mr.duration_ns = std::max<uint64_t>(1, ns_since(t));
        carry = take_all(&pending);
        mr.dirty_pages_per_s = static_cast<double>(pending) * 1e9 / static_cast<double>(mr.duration_ns);
        m_.rounds.push_back(mr);
        m_.pages_sent += c.pages;
        wire_bytes += mr.bytes;
        wire_ns += mr.duration_ns;
        m_.bandwidth_bytes_per_s = static_cast<double>(wire_bytes) * 1e9 / static_cast<double>(wire_ns);
        double expected_ns = static_cast<double>(pending * (kPage + remote::kHeaderSize)) * 1e9 /
                             std::max(1.0, m_.bandwidth_bytes_per_s);
        bool fits = expected_ns <= static_cast<double>(std::chrono::nanoseconds(options_.downtime_limit).count());
        if (round + 1 >= limit || fits) break;
      }
    }
    std::vector<uint8_t> listed;  // hybrid: pages the destination has dropped
    if (options_.mode == MigrationMode::kHybrid) listed = list_stale_before_stop(carry);
    stop_at_ = Clock::now();
    hooks_.stop();
    stopped_ = true;
    if (options_.mode == MigrationMode::kPrecopy) switch_precopy(std::move(carry));
    else switch_postcopy(std::move(listed), options_.mode == MigrationMode::kPostcopy);
  } catch (const Error& e) {
    if (ch_) ch_->send_error(remote::ErrorCode::kShuttingDown, e.what());
    if (stopped_ && !switched_ && options_.mode == MigrationMode::kPrecopy && hooks_.resume) hooks_.resume();
    if (switched_)
      throw Error(std::string(e.what()) + " (after the switch-over: the destination may be running with pages "
                                          "it can no longer fetch)",
                  e.sys_errno());
    throw;
  }
  m_.bytes_sent = earlier_bytes_ + ch_->bytes_sent() + (server_ ? server_->stats().bytes_sent : 0);
  m_.total_ns = ns_since(start_);
  return m_;
}

}  // namespace

const char* migration_mode_name(MigrationMode mode) {
  switch (mode) {
    case MigrationMode::kPrecopy: return "precopy";
    case MigrationMode::kPostcopy: return "postcopy";
    case MigrationMode::kHybrid: return "hybrid";
  }
  return "unknown";
}

MigrationMetrics migrate_out(std::span<Region* const> regions, const std::string& destination,
                             const MigrationHooks& hooks, const MigrationOptions& options) {
  return Source(regions, destination, hooks, options).run();
}

}  // namespace faultline

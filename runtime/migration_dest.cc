// SPDX-License-Identifier: Apache-2.0
// MigrationListener and IncomingMigration: the destination's side
// (docs/migration.md).
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <thread>

#include "faultline/error.h"
#include "faultline/migration.h"
#include "faultline/remote_backend.h"
#include "faultline/runtime.h"
#include "little_endian.h"
#include "migration_backend.h"
#include "migration_protocol.h"

namespace faultline {

namespace {

using namespace migration;

uint64_t quantile(std::vector<uint64_t>& v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size() - 1) + 0.5))];
}

// A bound, listening socket; shared by the listener and the post-copy
// migrations it accepted, which take the source's reconnect on it.
struct ListenSocket {
  detail::UniqueFd fd;
  std::string endpoint;
  std::string unix_path;  // removed again when the last owner is gone
  ~ListenSocket() {
    if (!unix_path.empty()) ::unlink(unix_path.c_str());
  }
};

}  // namespace

class IncomingMigration::Impl {
 public:
  Impl(Channel ch, const MigrationOptions& options, std::shared_ptr<ListenSocket> listener)
      : ch_(std::move(ch)), options_(options), listener_(std::move(listener)) {}
  ~Impl() { stop(); }

  void run_until_resume(Runtime& runtime);
  MigrationMetrics wait();
  void stop();

  std::vector<Region> regions;
  std::vector<std::byte> state;

 private:
  void handshake(Runtime& runtime);
  // The region and region offset of object range [offset, offset + length),
  // which must lie within one region's page-rounded extent.
  size_t locate(uint64_t offset, uint64_t length, const char* what);
  void receive_push();
  void receive_until_done();
  bool await_recovery();
  void resume_handshake(Channel& ch);
  void prefetch_ready(uint64_t offset, uint64_t length);
  void place_frame(const Received& f);
  void place_zero(uint64_t offset, uint64_t length);
  void await_first_round();
  void finish_pull();
  // The regions' fault waits so far, summed over threads (Stats::wait_ns).
  uint64_t regions_wait_ns() {
    uint64_t sum = 0;
    for (Region& r : regions) sum += r.stats().wait_ns;
    return sum;
  }
  [[noreturn]] void protocol_error(const std::string& what);

  Channel ch_;  // replaced by a recovery under mu_
  MigrationOptions options_;
  std::shared_ptr<ListenSocket> listener_;  // where a source reconnects; dropped when the migration ends
  std::array<uint8_t, remote::kNonceSize> source_nonce_{};  // the OFFER's: names this migration
  Clock::time_point start_ = Clock::now(), resumed_;
  uint64_t wait_at_resume_ns_ = 0;
  std::vector<uint64_t> sizes_, bases_;
  uint64_t object_size_ = 0;
  std::shared_ptr<DestPages> pages_;
  MigrationMetrics m_;
  uint64_t fill_ = 64 * 1024;
  std::vector<uint64_t> ready_;  // prefetch_ready()'s chunks
  std::thread receiver_;
  std::mutex mu_;
  bool finished_ = false, stopping_ = false;
  std::string error_;
  int error_errno_ = 0;
};

void IncomingMigration::Impl::protocol_error(const std::string& what) {
  ch_.send_error(remote::ErrorCode::kBadFrame, what);
  throw Error("migration: " + ch_.peer() + " sent " + what, EPROTO);
}

size_t IncomingMigration::Impl::locate(uint64_t offset, uint64_t length, const char* what) {
  if (offset % kPage || length == 0 || length % kPage || offset >= object_size_ || length > object_size_ - offset)
    protocol_error(std::string(what) + " at object offset " + std::to_string(offset) + ", length " +
                   std::to_string(length) + ": not whole pages within the " + std::to_string(object_size_) +
                   "-byte object");
  size_t i = static_cast<size_t>(std::upper_bound(bases_.begin(), bases_.end(), offset) - bases_.begin()) - 1;
  uint64_t end = i + 1 < bases_.size() ? bases_[i + 1] : object_size_;
  if (offset + length > end)
    protocol_error(std::string(what) + " at object offset " + std::to_string(offset) + " crosses into region " +
                   std::to_string(i + 1));
  return i;
}

void IncomingMigration::Impl::handshake(Runtime& runtime) {
  Hello hello;
  bool auth = !options_.secret.empty();
  hello.caps = auth ? kCapAuth : 0;
  hello.nonce = remote::random_nonce();
  ch_.send(Frame::kHello, 0, 0, encode_hello(hello));
  Received r = ch_.receive({{Frame::kOffer, 64 + kMaxRegions * 8 + 4096}});
  Offer offer;
  if (std::string e = decode_offer(r.payload, &offer); !e.empty()) protocol_error(e);
  if (offer.magic != kMagic) {
    ch_.send_error(remote::ErrorCode::kBadMagic, "not a faultline migration source");
    throw Error("migration: " + ch_.peer() + " is not a faultline migration source (bad magic)", EPROTO);
  }
  if (offer.version != kVersion) {
    ch_.send_error(remote::ErrorCode::kBadVersion, "version 1 only");
    throw Error("migration: " + ch_.peer() + " speaks version " + std::to_string(offer.version), EPROTO);
  }
  if (auth) {
    auto want = remote::handshake_mac(options_.secret, "client", hello.nonce, offer.nonce);
    if (!(offer.caps & kCapAuth) || !remote::mac_equal(want, offer.proof)) {
      ch_.send_error(remote::ErrorCode::kAuthFailed, "authentication failed");
      throw Error("migration: " + ch_.peer() + " failed authentication (wrong or no secret)", EACCES);
    }
  } else if (offer.caps & kCapAuth) {
    ch_.send_error(remote::ErrorCode::kAuthFailed, "the destination has no secret");
    throw Error("migration: " + ch_.peer() + " has a secret, this destination none", EACCES);
  }
  m_.mode = static_cast<MigrationMode>(offer.mode);
  source_nonce_ = offer.nonce;
  sizes_ = offer.region_sizes;
  bases_ = region_bases(sizes_, &object_size_);
  if (object_size_ > options_.max_bytes) {
    ch_.send_error(remote::ErrorCode::kTooLarge, "regions over the destination's MigrationOptions.max_bytes");
    throw Error("migration: " + ch_.peer() + " offers " + std::to_string(object_size_) +
                    " bytes of regions, over MigrationOptions.max_bytes = " + std::to_string(options_.max_bytes),
                EFBIG);
  }
  std::shared_ptr<Backend> urgent;
  if (m_.mode != MigrationMode::kPrecopy) {
    if (offer.urgent_address.empty()) protocol_error("a post-copy OFFER without an urgent lane address");
    RemoteOptions ro;
    ro.address = offer.urgent_address;
    ro.secret = options_.secret;
    ro.deadline = options_.postcopy_deadline;
    urgent = connect_remote(ro);
    if (urgent->size() != object_size_)
      protocol_error("an urgent lane of " + std::to_string(urgent->size()) + " bytes for a " +
                     std::to_string(object_size_) + "-byte migration");
  }
  pages_ = std::make_shared<DestPages>(object_size_, urgent);
  // The first round brings every page: the runtime places each from the
  // frame it came in (below), never a page fault and a copy by the receiver.
  if (m_.mode != MigrationMode::kPostcopy) pages_->mark_missing_all();
  for (size_t i = 0; i < sizes_.size(); ++i) {
    RegionOptions ro = options_.dest_region;
    ro.offset = bases_[i];
    ro.length = sizes_[i];
    ro.writable = true;
    // Stale pages are dropped with MADV_DONTNEED so that a touch fetches
    // them anew (not zeros, as a balloon's drop reads).
    ro.reload_removed = true;
    // The receiver asks for every chunk it has (the first round, the push):
    // read-ahead would only fetch the same pages twice.
    ro.readahead = false;
    // Later rounds write into the region: a page placed as the shared zero
    // page would fault again on that write.
    ro.zeros_as_pages = true;
    regions.push_back(runtime.map(pages_, ro));
  }
  fill_ = options_.dest_region.fill_size;
  std::array<uint8_t, remote::kMacSize> proof{};
  if (auth) proof = remote::handshake_mac(options_.secret, "server", offer.nonce, hello.nonce);
  ch_.send(Frame::kAccept, 0, 0, std::span<const std::byte>(reinterpret_cast<const std::byte*>(proof.data()), proof.size()));
}

void IncomingMigration::Impl::run_until_resume(Runtime& runtime) {
  handshake(runtime);
  m_.setup_ns = ns_since(start_);
  uint32_t round = 0;
  bool stale_seen = false;
  const uint64_t max_state = options_.max_state_bytes;
  // Until the switch-over nobody else sees the regions. The first round's
  // pages are placed by the runtime from the frames they came in; later
  // rounds write into the placed pages.
  std::vector<std::pair<uint64_t, uint64_t>> held;
  for (;;) {
    Received f = ch_.receive({{Frame::kPages, kMaxPagesPayload},
                              {Frame::kZero, 8},
                              {Frame::kRoundEnd, 0},
                              {Frame::kStale, kMaxPagesPayload},
                              {Frame::kSwitch, max_state}});
    if (f.type == Frame::kPages) {
      if (stale_seen) protocol_error("PAGES after STALE");
      size_t i = locate(f.id, f.payload.size(), "PAGES");
      m_.pages_sent += f.payload.size() / kPage;
      if (round == 0) {
        place_frame(f);
        continue;
      }
      uint64_t at = f.id - bases_[i];
      uint64_t n = std::min<uint64_t>(f.payload.size(), sizes_[i] - std::min(sizes_[i], at));
      std::memcpy(regions[i].data() + at, f.payload.data(), n);
    } else if (f.type == Frame::kZero) {
      if (f.payload.size() != 8) protocol_error("a ZERO frame of " + std::to_string(f.payload.size()) + " bytes");
      if (stale_seen) protocol_error("ZERO after STALE");
      uint64_t len = detail::get_le(f.payload.data(), 8);
      size_t i = locate(f.id, len, "ZERO");
      uint64_t at = f.id - bases_[i];
      m_.pages_sent += len / kPage;
      if (round == 0) {
        place_zero(f.id, len);
        continue;
      }
      std::memset(regions[i].data() + at, 0, std::min<uint64_t>(len, sizes_[i] - std::min(sizes_[i], at)));
    } else if (f.type == Frame::kRoundEnd) {
      if (f.id != round) protocol_error("ROUND_END " + std::to_string(f.id) + ", expected " + std::to_string(round));
      // After STALE it is a barrier: the source stops once the drop is done.
      if (!stale_seen) {
        if (round == 0) await_first_round();
        round++;
        m_.rounds.emplace_back();
      }
      ch_.send(Frame::kRoundEnd, 0, f.id, {});  // the source measures and stops by this
    } else if (f.type == Frame::kStale) {
      if (m_.mode != MigrationMode::kHybrid || round == 0) protocol_error("STALE outside a hybrid switch-over");
      if (f.payload.size() % 16) protocol_error("a STALE frame of " + std::to_string(f.payload.size()) + " bytes");
      stale_seen = true;
      for (size_t p = 0; p < f.payload.size(); p += 16) {
        uint64_t off = detail::get_le(f.payload.data() + p, 8), len = detail::get_le(f.payload.data() + p + 8, 8);
        size_t i = locate(off, len, "STALE");
        // Missing first, then dropped: a touch after the drop fetches it.
        // A page still missing from an earlier STALE is not dropped again
        // (the source fetches it after the switch-over either way).
        held.clear();
        pages_->mark_missing(off, len, &held);
        for (auto [at, n] : held) {
          if (::madvise(regions[i].data() + (at - bases_[i]), n, MADV_DONTNEED) != 0)
            throw_errno("migration: madvise(DONTNEED) of stale pages", errno);
          m_.final_pages += n / kPage;
        }
      }
    } else {  // kSwitch
      bool post = f.flags & kSwitchPostcopy, all = f.flags & kSwitchAllStale;
      if (f.flags & ~(kSwitchPostcopy | kSwitchAllStale)) protocol_error("SWITCH with unknown flags");
      if (post != (m_.mode != MigrationMode::kPrecopy)) protocol_error("a SWITCH that does not match the mode");
      if (all && (m_.mode != MigrationMode::kPostcopy || round != 0)) protocol_error("SWITCH all-stale after rounds");
      if (m_.mode == MigrationMode::kPostcopy && !all) protocol_error("a post-copy SWITCH without all-stale");
      if (m_.mode == MigrationMode::kHybrid && round == 0) protocol_error("a hybrid SWITCH before any round");
      if (all) {
        pages_->mark_missing_all();
        m_.final_pages = object_size_ / kPage;
      }
      state.assign(f.payload.begin(), f.payload.end());
      break;
    }
  }
  ch_.send(Frame::kResumed, 0, 0, {});
  resumed_ = Clock::now();
  wait_at_resume_ns_ = regions_wait_ns();
  if (m_.mode == MigrationMode::kPrecopy) {
    m_.total_ns = ns_since(start_);
    finished_ = true;
    listener_.reset();
    return;
  }
  // Chunks complete before the resume (hybrid: all but the stale) are placed
  // as soon as the pushed rest of them arrives; start with what is there.
  receiver_ = std::thread([this] { receive_push(); });
}

// The first round is in place before the source goes on: later rounds
// write into its pages, and a hybrid STALE drops them, which a placement
// still in flight would undo (a reload_removed region places what it read).
void IncomingMigration::Impl::await_first_round() {
  if (!pages_->available(0, object_size_)) {
    uint64_t at = pages_->missing_ranges().front().first;
    protocol_error("a first round without the page at object offset " + std::to_string(at));
  }
  const Clock::time_point until = Clock::now() + options_.deadline;
  for (;;) {
    bool placed = pages_->pages_pending() == 0;
    for (size_t i = 0; placed && i < regions.size(); ++i) placed = regions[i].stats().resident_bytes >= sizes_[i];
    if (placed) break;
    if (Clock::now() > until)
      throw Error("migration: the first round's pages were not placed within " +
                      std::to_string(options_.deadline.count()) + " ms",
                  ETIMEDOUT);
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  // Pre-copy needs no frame buffers from here on; hybrid's push does.
  if (m_.mode == MigrationMode::kPrecopy) pages_->release_buffers();
}

// A PAGES frame of round 0 or of the push: its pages are placed from the
// buffer they came in (the channel reads the next frame into a spare one).
void IncomingMigration::Impl::place_frame(const Received& f) {
  std::vector<std::byte> frame = pages_->spare_buffer();
  ch_.swap_buffer(frame);
  pages_->store(f.id, std::move(frame), f.payload.size());
  prefetch_ready(f.id, f.payload.size());
}

void IncomingMigration::Impl::place_zero(uint64_t offset, uint64_t length) {
  pages_->store_zero(offset, length);
  prefetch_ready(offset, length);
}

void IncomingMigration::Impl::prefetch_ready(uint64_t offset, uint64_t length) {
  size_t i = static_cast<size_t>(std::upper_bound(bases_.begin(), bases_.end(), offset) - bases_.begin()) - 1;
  uint64_t at = offset - bases_[i];
  uint64_t first = at / fill_ * fill_, end = std::min(sizes_[i], at + length);
  ready_.clear();
  for (uint64_t c = first; c < end; c += fill_)
    if (pages_->available(bases_[i] + c, std::min(fill_, sizes_[i] - c))) ready_.push_back(c);
  if (!ready_.empty()) regions[i].prefetch_chunks(ready_);  // one command to the runtime per frame
}

// After the push (or without it, if its connection broke): whatever is still
// missing is pulled over the urgent lane, and every pushed page is placed.
void IncomingMigration::Impl::finish_pull() {
  for (Region& r : regions) r.drain();
  uint64_t last = pages_->pages_pending();
  Clock::time_point progress = Clock::now();
  for (;;) {
    uint64_t now = pages_->pages_pending();
    if (now == 0) return;
    if (now != last) progress = Clock::now(), last = now;
    if (Clock::now() - progress > options_.postcopy_deadline)
      throw Error("migration: " + std::to_string(now) + " pages still missing at the destination after " +
                      std::to_string(options_.postcopy_deadline.count()) + " ms without progress",
                  ETIMEDOUT);
    {
      std::unique_lock lock(mu_);
      if (stopping_) throw Error("migration: stopped with " + std::to_string(now) + " pages missing", ECANCELED);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void IncomingMigration::Impl::receive_until_done() {
  for (;;) {
    Received f = ch_.receive({{Frame::kPages, kMaxPagesPayload}, {Frame::kZero, 8}, {Frame::kDone, 0}});
    if (f.type == Frame::kDone) return;
    if (f.type == Frame::kPages) {
      locate(f.id, f.payload.size(), "PAGES");
      m_.pages_pushed += f.payload.size() / kPage;
      place_frame(f);
    } else {
      if (f.payload.size() != 8) protocol_error("a ZERO frame of " + std::to_string(f.payload.size()) + " bytes");
      uint64_t len = detail::get_le(f.payload.data(), 8);
      locate(f.id, len, "ZERO");
      m_.pages_pushed += len / kPage;
      place_zero(f.id, len);
    }
  }
}

// Post-copy recovery, the destination's half: the stream broke. Every
// region drains over the urgent lane meanwhile (faults first), and this
// waits up to postcopy_deadline for the source to reconnect on the
// listener; then the push goes on over the new stream.
bool IncomingMigration::Impl::await_recovery() {
  for (Region& r : regions) r.drain();
  const Clock::time_point until = Clock::now() + options_.postcopy_deadline;
  while (Clock::now() < until) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return false;
    }
    pollfd p{listener_->fd.get(), POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    detail::UniqueFd s(::accept4(listener_->fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!s) continue;
    tune_socket(s.get());
    try {
      Channel ch(std::move(s), options_.deadline, "the source (reconnected via " + listener_->endpoint + ")");
      resume_handshake(ch);
      std::lock_guard lock(mu_);
      if (stopping_) return false;
      ch_ = std::move(ch);
      m_.recoveries++;
      return true;
    } catch (const Error&) {
      // Not our source (or not in time): keep waiting for it.
    }
  }
  return false;
}

void IncomingMigration::Impl::resume_handshake(Channel& ch) {
  Hello hello;
  const bool auth = !options_.secret.empty();
  hello.caps = auth ? kCapAuth : 0;
  hello.nonce = remote::random_nonce();
  ch.send(Frame::kHello, 0, 0, encode_hello(hello));
  Received r = ch.receive({{Frame::kResume, kResumeSize}});
  if (r.payload.size() != kResumeSize) {
    ch.send_error(remote::ErrorCode::kBadFrame, "RESUME of the wrong size");
    throw Error("migration: a RESUME of " + std::to_string(r.payload.size()) + " bytes", EPROTO);
  }
  std::array<uint8_t, remote::kNonceSize> nonce;
  std::array<uint8_t, remote::kMacSize> proof;
  std::memcpy(nonce.data(), r.payload.data(), nonce.size());
  std::memcpy(proof.data(), r.payload.data() + nonce.size(), proof.size());
  if (nonce != source_nonce_) {
    ch.send_error(remote::ErrorCode::kBadFrame, "not the migration in progress here");
    throw Error("migration: a RESUME for another migration", EPROTO);
  }
  if (auth && !remote::mac_equal(remote::handshake_mac(options_.secret, "resume", hello.nonce, nonce), proof)) {
    ch.send_error(remote::ErrorCode::kAuthFailed, "authentication failed");
    throw Error("migration: a reconnecting source failed authentication", EACCES);
  }
  std::array<uint8_t, remote::kMacSize> answer{};
  if (auth) answer = remote::handshake_mac(options_.secret, "resumed", nonce, hello.nonce);
  ch.send(Frame::kAccept, 0, 0, std::span<const std::byte>(reinterpret_cast<const std::byte*>(answer.data()), answer.size()));
  // What is missing now (pages a fault or the drain fetch meanwhile are
  // dropped from the push when they arrive: store() takes missing ones only).
  std::vector<std::byte> want;
  for (auto [offset, length] : pages_->missing_ranges()) {
    if (want.size() + 16 > kMaxPagesPayload) {
      ch.send(Frame::kWant, kWantMore, 0, want);
      want.clear();
    }
    append_range(&want, offset, length);
  }
  ch.send(Frame::kWant, 0, 0, want);
}

void IncomingMigration::Impl::receive_push() {
  std::string push_error;
  for (;;) {
    try {
      receive_until_done();
      push_error.clear();
      break;
    } catch (const Error& e) {
      push_error = e.what();
      // A source that said what is wrong (EPROTO, EACCES) is not coming
      // back; a lost connection may be.
      if (e.sys_errno() == EPROTO || e.sys_errno() == EACCES || !await_recovery()) break;
    }
  }
  try {
    {
      std::unique_lock lock(mu_);
      if (stopping_) throw Error("migration: stopped", ECANCELED);
    }
    finish_pull();
    m_.postcopy_ns = ns_since(resumed_);
    DestPages::Figures f = pages_->figures();
    m_.pages_requested = f.pages_requested;
    m_.requests = f.requests;
    m_.blocked_ns = regions_wait_ns() - wait_at_resume_ns_;
    m_.request_p50_ns = quantile(f.latencies_ns, 0.5);
    m_.request_p99_ns = quantile(f.latencies_ns, 0.99);
    m_.request_max_ns = f.latencies_ns.empty() ? 0 : f.latencies_ns.back();
    if (push_error.empty()) {
      Complete c{m_.pages_requested, m_.requests, m_.request_p50_ns, m_.request_p99_ns, m_.request_max_ns,
                 m_.blocked_ns, m_.postcopy_ns};
      ch_.send(Frame::kComplete, 0, 0, encode_complete(c));
    }
    pages_->release_buffers();
    m_.total_ns = ns_since(start_);
  } catch (const Error& e) {
    std::lock_guard lock(mu_);
    error_ = push_error.empty() ? e.what() : push_error + "; then: " + e.what();
    error_errno_ = e.sys_errno();
  }
  std::lock_guard lock(mu_);
  finished_ = true;
  listener_.reset();
}

MigrationMetrics IncomingMigration::Impl::wait() {
  if (receiver_.joinable()) receiver_.join();
  std::lock_guard lock(mu_);
  if (!error_.empty()) throw Error(error_, error_errno_);
  return m_;
}

void IncomingMigration::Impl::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    ::shutdown(ch_.fd(), SHUT_RDWR);  // the receiver's wait ends
  }
  if (receiver_.joinable()) receiver_.join();
}

// ---- IncomingMigration --------------------------------------------------------

IncomingMigration::IncomingMigration() = default;
IncomingMigration::IncomingMigration(IncomingMigration&&) noexcept = default;
IncomingMigration& IncomingMigration::operator=(IncomingMigration&&) noexcept = default;
IncomingMigration::~IncomingMigration() = default;

std::vector<Region>& IncomingMigration::regions() {
  if (!impl_) throw Error("IncomingMigration: empty (not from accept())");
  return impl_->regions;
}

const std::vector<std::byte>& IncomingMigration::state() const {
  if (!impl_) throw Error("IncomingMigration: empty (not from accept())");
  return impl_->state;
}

MigrationMetrics IncomingMigration::wait() {
  if (!impl_) throw Error("IncomingMigration: empty (not from accept())");
  return impl_->wait();
}

// ---- MigrationListener ----------------------------------------------------------

struct MigrationListener::State {
  std::shared_ptr<ListenSocket> socket = std::make_shared<ListenSocket>();
  MigrationOptions options;
};

MigrationListener::MigrationListener(const std::string& listen, MigrationOptions options)
    : state_(std::make_unique<State>()) {
  state_->options = std::move(options);
  remote::SocketAddress a = remote::resolve_address(listen).at(0);
  detail::UniqueFd fd(::socket(a.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) throw_errno("MigrationListener: socket for " + listen, errno);
  if (a.family() == AF_UNIX) {
    std::string path = listen.substr(5);
    struct stat st;
    if (::lstat(path.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) throw Error("MigrationListener: " + path + " exists and is not a socket");
      ::unlink(path.c_str());
    }
    state_->socket->unix_path = path;
  } else {
    int one = 1;
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  }
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&a.storage), a.length) != 0)
    throw_errno("MigrationListener: cannot bind " + listen, errno);
  if (::listen(fd.get(), 4) != 0) throw_errno("MigrationListener: listen on " + listen, errno);
  remote::SocketAddress bound;
  bound.length = sizeof bound.storage;
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&bound.storage), &bound.length);
  state_->socket->endpoint = remote::format_address(bound);
  state_->socket->fd = std::move(fd);
}

MigrationListener::~MigrationListener() = default;

std::string MigrationListener::endpoint() const { return state_->socket->endpoint; }

IncomingMigration MigrationListener::accept(Runtime& runtime, std::chrono::milliseconds timeout) {
  const ListenSocket& sock = *state_->socket;
  pollfd p{sock.fd.get(), POLLIN, 0};
  int rc;
  do rc = ::poll(&p, 1, static_cast<int>(timeout.count()));
  while (rc < 0 && errno == EINTR);
  if (rc == 0) throw Error("MigrationListener: no source connected to " + sock.endpoint + " within " +
                               std::to_string(timeout.count()) + " ms",
                           ETIMEDOUT);
  if (rc < 0) throw_errno("MigrationListener: poll", errno);
  detail::UniqueFd s(::accept4(sock.fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
  if (!s) throw_errno("MigrationListener: accept on " + sock.endpoint, errno);
  tune_socket(s.get());
  IncomingMigration in;
  in.impl_ = std::make_unique<IncomingMigration::Impl>(
      Channel(std::move(s), state_->options.deadline, "the source (via " + sock.endpoint + ")"), state_->options,
      state_->socket);
  in.impl_->run_until_resume(runtime);
  return in;
}

}  // namespace faultline

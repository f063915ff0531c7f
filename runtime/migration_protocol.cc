// SPDX-License-Identifier: Apache-2.0
#include "migration_protocol.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstring>

#include "faultline/error.h"
#include "little_endian.h"

namespace faultline::migration {

namespace {

void put(std::vector<std::byte>& out, uint64_t v, int bytes) {
  size_t at = out.size();
  out.resize(at + static_cast<size_t>(bytes));
  detail::put_le(out.data() + at, v, bytes);
}
void put_bytes(std::vector<std::byte>& out, const void* p, size_t n) {
  const auto* b = static_cast<const std::byte*>(p);
  out.insert(out.end(), b, b + n);
}

// Reads fields in order; remembers the first shortfall.
struct Reader {
  std::span<const std::byte> p;
  size_t at = 0;
  bool short_ = false;
  uint64_t get(int bytes) {
    if (at + static_cast<size_t>(bytes) > p.size()) {
      short_ = true;
      return 0;
    }
    uint64_t v = detail::get_le(p.data() + at, bytes);
    at += static_cast<size_t>(bytes);
    return v;
  }
  template <size_t N>
  void get(std::array<uint8_t, N>& out) {
    if (at + N > p.size()) {
      short_ = true;
      return;
    }
    std::memcpy(out.data(), p.data() + at, N);
    at += N;
  }
};

}  // namespace

void append_range(std::vector<std::byte>* payload, uint64_t offset, uint64_t length) {
  std::byte pair[16];
  detail::put_le(pair, offset, 8);
  detail::put_le(pair + 8, length, 8);
  payload->insert(payload->end(), pair, pair + 16);
}

const char* frame_name(Frame f) {
  switch (f) {
    case Frame::kHello: return "HELLO";
    case Frame::kOffer: return "OFFER";
    case Frame::kAccept: return "ACCEPT";
    case Frame::kPages: return "PAGES";
    case Frame::kZero: return "ZERO";
    case Frame::kRoundEnd: return "ROUND_END";
    case Frame::kStale: return "STALE";
    case Frame::kSwitch: return "SWITCH";
    case Frame::kResumed: return "RESUMED";
    case Frame::kDone: return "DONE";
    case Frame::kComplete: return "COMPLETE";
    case Frame::kError: return "ERROR";
    case Frame::kResume: return "RESUME";
    case Frame::kWant: return "WANT";
  }
  return "unknown";
}

std::vector<std::byte> encode_hello(const Hello& h) {
  std::vector<std::byte> out;
  put(out, h.magic, 4);
  put(out, h.version, 2);
  put(out, 0, 2);
  put(out, h.caps, 4);
  put_bytes(out, h.nonce.data(), h.nonce.size());
  return out;
}

std::string decode_hello(std::span<const std::byte> p, Hello* h) {
  if (p.size() != kHelloSize) return "HELLO payload of " + std::to_string(p.size()) + " bytes, expected 44";
  Reader r{p};
  h->magic = static_cast<uint32_t>(r.get(4));
  h->version = static_cast<uint16_t>(r.get(2));
  if (r.get(2) != 0) return "HELLO reserved field not 0";
  h->caps = static_cast<uint32_t>(r.get(4));
  r.get(h->nonce);
  if (h->caps & ~kCapAuth) return "HELLO with unknown capabilities " + std::to_string(h->caps);
  return {};
}

std::vector<std::byte> encode_offer(const Offer& o) {
  std::vector<std::byte> out;
  put(out, o.magic, 4);
  put(out, o.version, 2);
  put(out, o.mode, 1);
  put(out, 0, 1);
  put(out, o.caps, 4);
  put_bytes(out, o.nonce.data(), o.nonce.size());
  put_bytes(out, o.proof.data(), o.proof.size());
  put(out, o.region_sizes.size(), 4);
  for (uint64_t s : o.region_sizes) put(out, s, 8);
  put(out, o.urgent_address.size(), 2);
  put_bytes(out, o.urgent_address.data(), o.urgent_address.size());
  return out;
}

std::string decode_offer(std::span<const std::byte> p, Offer* o) {
  Reader r{p};
  o->magic = static_cast<uint32_t>(r.get(4));
  o->version = static_cast<uint16_t>(r.get(2));
  o->mode = static_cast<uint8_t>(r.get(1));
  uint64_t reserved = r.get(1);
  o->caps = static_cast<uint32_t>(r.get(4));
  r.get(o->nonce);
  r.get(o->proof);
  uint64_t count = r.get(4);
  if (r.short_) return "OFFER payload of " + std::to_string(p.size()) + " bytes is too short";
  if (o->magic != kMagic || o->version != kVersion) return {};  // the caller names these
  if (reserved != 0) return "OFFER reserved field not 0";
  if (o->mode > 2) return "OFFER mode " + std::to_string(o->mode) + " unknown";
  if (o->caps & ~kCapAuth) return "OFFER with unknown capabilities " + std::to_string(o->caps);
  if (count == 0 || count > kMaxRegions)
    return "OFFER region count " + std::to_string(count) + ": must be 1.." + std::to_string(kMaxRegions);
  o->region_sizes.clear();
  for (uint64_t i = 0; i < count; ++i) {
    uint64_t s = r.get(8);
    if (!r.short_ && (s == 0 || s > (uint64_t{1} << 46)))
      return "OFFER region " + std::to_string(i) + " size " + std::to_string(s) + ": must be 1..64 TiB";
    o->region_sizes.push_back(s);
  }
  uint64_t alen = r.get(2);
  if (r.short_ || r.at + alen != p.size())
    return "OFFER payload of " + std::to_string(p.size()) + " bytes does not match its region count and address";
  o->urgent_address.assign(reinterpret_cast<const char*>(p.data() + r.at), alen);
  return {};
}

std::vector<std::byte> encode_complete(const Complete& c) {
  std::vector<std::byte> out;
  for (uint64_t v : {c.pages_requested, c.requests, c.p50_ns, c.p99_ns, c.max_ns, c.blocked_ns, c.postcopy_ns})
    put(out, v, 8);
  return out;
}

std::string decode_complete(std::span<const std::byte> p, Complete* c) {
  if (p.size() != kCompleteSize) return "COMPLETE payload of " + std::to_string(p.size()) + " bytes, expected 56";
  Reader r{p};
  for (uint64_t* v : {&c->pages_requested, &c->requests, &c->p50_ns, &c->p99_ns, &c->max_ns, &c->blocked_ns,
                      &c->postcopy_ns})
    *v = r.get(8);
  return {};
}

std::vector<uint64_t> region_bases(std::span<const uint64_t> sizes, uint64_t* object_size) {
  std::vector<uint64_t> bases;
  uint64_t at = 0;
  for (uint64_t s : sizes) {
    bases.push_back(at);
    at += (s + kPage - 1) / kPage * kPage;
  }
  *object_size = at;
  return bases;
}

std::string Received::text() const { return std::string(reinterpret_cast<const char*>(payload.data()), payload.size()); }

// ---- Channel ----------------------------------------------------------------

Channel::Channel(detail::UniqueFd fd, std::chrono::milliseconds deadline, std::string peer)
    : fd_(std::move(fd)), deadline_(deadline), peer_(std::move(peer)) {}

void Channel::wait(short events, const char* what) {
  pollfd p{fd_.get(), events, 0};
  for (;;) {
    int rc = ::poll(&p, 1, static_cast<int>(deadline_.count()));
    if (rc > 0) return;
    if (rc == 0)
      throw Error("migration: " + peer_ + " did not " + what + " within " + std::to_string(deadline_.count()) + " ms",
                  ETIMEDOUT);
    if (errno != EINTR) throw_errno("migration: poll on the connection to " + peer_, errno);
  }
}

void Channel::write_all(const iovec* iov_in, int count) {
  iovec iov[3];
  std::memcpy(iov, iov_in, sizeof(iovec) * static_cast<size_t>(count));
  int first = 0;
  while (first < count) {
    msghdr m{};
    m.msg_iov = iov + first;
    m.msg_iovlen = static_cast<size_t>(count - first);
    ssize_t n = ::sendmsg(fd_.get(), &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        wait(POLLOUT, "take data");
        continue;
      }
      throw_errno("migration: send to " + peer_, errno);
    }
    bytes_sent_ += static_cast<uint64_t>(n);
    size_t left = static_cast<size_t>(n);
    while (first < count && left >= iov[first].iov_len) left -= iov[first++].iov_len;
    if (first < count) {
      iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + left;
      iov[first].iov_len -= left;
    }
  }
}

namespace {
constexpr size_t kGatherBytes = 256 * 1024;  // what tx_ and in_ hold
constexpr size_t kGatherFrame = 64 * 1024;   // larger payloads go (and come) straight
}  // namespace

// From the read-ahead buffer first; a large remainder straight into `p`,
// a small one through the buffer (one recv for many small frames).
void Channel::read_all(std::byte* p, size_t n) {
  while (n > 0) {
    if (in_pos_ < in_len_) {
      size_t take = std::min(n, in_len_ - in_pos_);
      std::memcpy(p, in_.data() + in_pos_, take);
      in_pos_ += take, p += take, n -= take;
      continue;
    }
    bool direct = n >= kGatherFrame;
    if (!direct && in_.size() < kGatherBytes) in_.resize(kGatherBytes);
    ssize_t got = direct ? ::recv(fd_.get(), p, n, MSG_DONTWAIT) : ::recv(fd_.get(), in_.data(), in_.size(), MSG_DONTWAIT);
    if (got > 0) {
      if (direct) {
        p += got;
        n -= static_cast<size_t>(got);
      } else {
        in_pos_ = 0, in_len_ = static_cast<size_t>(got);
      }
      continue;
    }
    if (got == 0) throw Error("migration: " + peer_ + " closed the connection", ECONNRESET);
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      wait(POLLIN, "send");
      continue;
    }
    throw_errno("migration: receive from " + peer_, errno);
  }
}

void Channel::send(Frame type, uint8_t flags, uint64_t id, std::span<const std::byte> payload) {
  std::byte header[remote::kHeaderSize];
  remote::encode_header(header, static_cast<remote::FrameType>(type), flags, 0, id, payload);
  bool bulk = type == Frame::kPages || type == Frame::kZero;
  if (bulk && payload.size() < kGatherFrame) {
    tx_.insert(tx_.end(), header, header + sizeof header);
    tx_.insert(tx_.end(), payload.begin(), payload.end());
    if (tx_.size() >= kGatherBytes) flush();
    return;
  }
  iovec iov[3] = {{tx_.data(), tx_.size()},
                  {header, sizeof header},
                  {const_cast<std::byte*>(payload.data()), payload.size()}};
  write_all(iov, payload.empty() ? 2 : 3);
  tx_.clear();
}

void Channel::flush() {
  if (tx_.empty()) return;
  iovec iov[1] = {{tx_.data(), tx_.size()}};
  write_all(iov, 1);
  tx_.clear();
}

void Channel::send_error(remote::ErrorCode code, const std::string& text) noexcept {
  try {
    std::string t = text.substr(0, remote::kMaxErrorMessage);
    std::span<const std::byte> payload(reinterpret_cast<const std::byte*>(t.data()), t.size());
    std::byte header[remote::kHeaderSize];
    remote::encode_header(header, static_cast<remote::FrameType>(Frame::kError), 0, static_cast<uint16_t>(code), 0,
                          payload);
    iovec iov[2] = {{header, sizeof header}, {const_cast<std::byte*>(payload.data()), payload.size()}};
    msghdr m{};
    m.msg_iov = iov;
    m.msg_iovlen = payload.empty() ? 1 : 2;
    // Best effort: a peer that does not read gets nothing rather than a wait.
    (void)::sendmsg(fd_.get(), &m, MSG_NOSIGNAL | MSG_DONTWAIT);
  } catch (...) {
  }
}

bool Channel::readable() {
  if (in_pos_ < in_len_) return true;
  pollfd p{fd_.get(), POLLIN, 0};
  return ::poll(&p, 1, 0) > 0;
}

Received Channel::receive(std::initializer_list<Allowed> allowed) {
  flush();  // what the peer may be waiting for before it answers
  std::byte h[remote::kHeaderSize];
  read_all(h, sizeof h);
  Received r;
  uint8_t raw = uint8_t(h[0]);
  r.flags = uint8_t(h[1]);
  r.code = static_cast<uint16_t>(detail::get_le(h + 2, 2));
  uint32_t length = static_cast<uint32_t>(detail::get_le(h + 4, 4));
  r.id = detail::get_le(h + 8, 8);
  uint32_t crc = static_cast<uint32_t>(detail::get_le(h + 16, 4));
  auto bad = [&](remote::ErrorCode code, const std::string& what) {
    send_error(code, what);
    return Error("migration: " + peer_ + " sent " + what, EPROTO);
  };
  r.type = Frame(raw);
  bool ok = r.type == Frame::kError;
  uint64_t max_payload = 0;
  for (const Allowed& a : allowed)
    if (a.type == r.type) ok = true, max_payload = a.max_payload;
  if (!ok) {
    bool known = raw >= uint8_t(Frame::kHello) && raw <= uint8_t(Frame::kWant);
    throw bad(known ? remote::ErrorCode::kBadFrame : remote::ErrorCode::kUnknownType,
              std::string("frame type ") + std::to_string(raw) + (known ? std::string(" (") + frame_name(r.type) + ")" : "") +
                  " where it is not allowed");
  }
  uint64_t limit = r.type == Frame::kError ? remote::kMaxErrorMessage : max_payload;
  if (length > limit)
    throw bad(remote::ErrorCode::kTooLarge, std::string(frame_name(r.type)) + " frame length " + std::to_string(length) +
                                                " over the limit " + std::to_string(limit));
  if (rx_.size() < length) rx_.resize(length);
  read_all(rx_.data(), length);
  r.payload = std::span<const std::byte>(rx_.data(), length);
  uint32_t want = remote::crc32c(remote::crc32c(0, h, 16), r.payload.data(), r.payload.size());
  if (want != crc)
    throw bad(remote::ErrorCode::kBadChecksum, std::string(frame_name(r.type)) + " frame with a bad checksum");
  if (r.type == Frame::kError)
    throw Error("migration: " + peer_ + " reported an error (" +
                    remote::error_code_name(static_cast<remote::ErrorCode>(r.code)) + "): " + r.text(),
                r.code == uint16_t(remote::ErrorCode::kAuthFailed) ? EACCES : EPROTO);
  return r;
}

// ---- Connecting ---------------------------------------------------------------

void tune_socket(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0 && ss.ss_family != AF_UNIX) {
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  int buf = 4 << 20;  // a round's stream; the kernel caps it at wmem_max
  ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
}

detail::UniqueFd connect_to(const std::string& address, std::chrono::milliseconds deadline) {
  std::string last = "no address";
  for (const remote::SocketAddress& a : remote::resolve_address(address)) {
    detail::UniqueFd s(::socket(a.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!s) throw_errno("migration: socket for " + address, errno);
    int rc = ::connect(s.get(), reinterpret_cast<const sockaddr*>(&a.storage), a.length);
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd p{s.get(), POLLOUT, 0};
      int prc;
      do prc = ::poll(&p, 1, static_cast<int>(deadline.count()));
      while (prc < 0 && errno == EINTR);
      if (prc == 0) {
        last = "timed out after " + std::to_string(deadline.count()) + " ms";
        continue;
      }
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(s.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      rc = err == 0 ? 0 : -1;
      errno = err;
    }
    if (rc != 0) {
      last = std::strerror(errno);
      continue;
    }
    tune_socket(s.get());
    return s;
  }
  throw Error("migration: cannot connect to " + address + ": " + last, ECONNREFUSED);
}

}  // namespace faultline::migration

// SPDX-License-Identifier: Apache-2.0
// RemoteBackend: reads from a PageServer over the protocol of
// docs/protocol.md, without a thread of its own.
//
// Everything runs on the runtime's fault-loop thread, inside submit() and
// reap(): a demand fault goes from the userfaultfd to the socket and back
// without a thread hop. completion_fd() is an epoll fd of our own holding
// the socket and a timerfd (deadlines, reconnect backoff); the runtime polls
// it, and reap() drives the connection, reads responses until EAGAIN and
// completes reads. After sending a demand read, reap() polls the socket for
// up to busy_poll before it returns, so on loopback the answer is usually
// there before the thread would have gone back to sleep.
//
// Reads: each submit() merges adjacent requests of the same urgency into
// one wire request (up to the server's max_request_bytes), tagged by a fresh
// id; answers come in any order. Wire requests wait in two queues (demand
// first) until the connection is up and the server's in-flight budget has
// room (read-ahead may use three quarters of it, demand reads all of it).
//
// Read errors: the server answers a READ as a whole, so when a merged wire
// fails, each of its reads is asked again once, alone: only the reads that
// overlap the bytes the server cannot read fail (a corrupt snapshot chunk
// fails the fills over it, as in process, not its merged neighbours).
//
// Failures: when the connection breaks (EOF, error, a malformed or
// unexpected frame from the server) every request not yet answered is put
// back in the queues, and the backend reconnects with exponential backoff
// (1 ms .. 1 s) while any read is pending. A read whose deadline passes
// completes with -ETIMEDOUT; if its request was already sent, the answer is
// still read and dropped (the id stays known until then).
#include "faultline/remote_backend.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <memory>
#include <unordered_map>
#include <vector>

#include "faultline/error.h"
#include "little_endian.h"
#include "remote_protocol.h"
#include "unique_fd.h"

namespace faultline {
namespace {

using namespace remote;
using detail::UniqueFd;
using Clock = std::chrono::steady_clock;

constexpr uint32_t kMaxQueueDepth = 4096;
// Cap on one wire request whatever the server allows: bounds the receive
// buffer; a longer ReadRequest is answered short and the runtime asks for
// the rest.
constexpr uint32_t kMaxWireBytes = 4u << 20;
// The receive buffer before HELLO: handshake frames and a connection ERROR.
constexpr size_t kHandshakeRxBytes = 4096;
static_assert(kHandshakeRxBytes >= kHeaderSize + kMaxErrorMessage);
// Receive buffer bytes past the longest frame.
constexpr size_t kRecvSlackBytes = 64 * 1024;
constexpr auto kFirstBackoff = std::chrono::milliseconds(1);
constexpr auto kMaxBackoff = std::chrono::milliseconds(1000);
// DATA payloads at least this long are received straight into the reads'
// buffers (below it the copy costs less than the extra recvmsg).
constexpr uint32_t kDirectBytes = 32 * 1024;

class RemoteBackend final : public Backend {
 public:
  explicit RemoteBackend(const RemoteOptions& options);

  uint64_t size() const override { return size_; }
  std::string name() const override { return "remote " + address_; }
  uint32_t queue_depth() const override { return options_.queue_depth; }
  int completion_fd() const override { return epoll_.get(); }
  void submit(std::span<const ReadRequest> reads) override;
  size_t reap(std::span<ReadCompletion> out) override;
  void make_urgent(uint64_t tag) override;

 private:
  struct Part {  // one ReadRequest inside a wire request
    uint64_t tag;
    std::byte* dest;
    uint32_t at;  // offset inside the wire request
    uint32_t length;
    bool piece = false;  // one of several wires of a read longer than max_wire_ (see Split)
  };
  struct Wire {
    uint64_t offset = 0;
    uint32_t length = 0;  // asked for; the answer is min(length, size - offset)
    bool urgent = false;
    bool sent = false;
    bool abandoned = false;  // its reads timed out; the answer is dropped
    Clock::time_point deadline;
    std::vector<Part> parts;
  };
  enum class State { kDisconnected, kConnecting, kAwaitHello, kAwaitWelcome, kReady };

  void start_connect();
  void connection_lost(const std::string& why);
  void pump();                   // everything that can move without blocking
  bool read_socket();            // returns false if the connection went away
  bool handle_frame(const ParseResult& f);
  bool handle_hello(const ParseResult& f);
  bool handle_answer(const ParseResult& f);
  void finish_wire(std::unordered_map<uint64_t, Wire>::iterator it);
  // A merged wire failed: queues each of its reads as a wire of its own.
  void ask_parts_alone(const Wire& merged);
  bool start_direct(const ParseResult& f, size_t* pos);
  bool receive_direct();  // false if the connection went away
  void send_requests();
  bool flush_tx();
  // Grows rx_ to n bytes, keeping its rx_len_ bytes.
  void reserve_rx(size_t n);
  void expire(Clock::time_point now);
  void expire_wires(Clock::time_point now);
  void arm_timer();
  // data: the answer's bytes, or empty when they are already in place.
  void complete_parts(Wire& w, int64_t result_for_all, std::span<const std::byte> data, bool zero);
  void complete_piece(const Part& p, int64_t result, bool zero);

  RemoteOptions options_;
  std::string address_;
  std::vector<SocketAddress> addresses_;
  uint64_t size_ = 0;  // 0 until the first HELLO
  uint32_t max_wire_ = 0;
  uint64_t max_in_flight_ = 0;

  UniqueFd epoll_, timer_, socket_;
  State state_ = State::kDisconnected;
  size_t address_index_ = 0;
  std::array<uint8_t, kNonceSize> server_nonce_{}, client_nonce_{};
  std::string last_error_;
  // The server refused us in a way retrying will not fix (secret, version):
  // connect_remote() gives up at once. Later, reads keep retrying until
  // their deadlines, in case the server is fixed and restarted.
  bool fatal_ = false;
  Clock::time_point next_attempt_{};
  Clock::duration backoff_ = kFirstBackoff;
  Clock::time_point armed_for_ = Clock::time_point::max();

  // Not value-initialized: zeroing the 4 MiB a server may need took most
  // of connect_remote(). Holds the handshake until HELLO says how long a
  // frame can be, then grows once (reserve_rx).
  std::unique_ptr<std::byte[]> rx_;
  size_t rx_cap_ = 0;
  size_t rx_len_ = 0;
  std::vector<std::byte> tx_;
  size_t tx_sent_ = 0;

  std::unordered_map<uint64_t, Wire> wires_;
  std::deque<uint64_t> urgent_queue_, normal_queue_;  // ids not yet sent
  uint64_t next_id_ = 1;
  uint64_t in_flight_bytes_ = 0;  // sent, not answered (the server's budget)
  uint32_t urgent_sent_ = 0;      // demand requests sent, not answered
  bool server_raise_ = false;     // the server takes RAISE frames (kCapRaise)
  std::deque<ReadCompletion> done_;
  SpinPolicy spin_;

  // A read longer than the server's request limit goes out as several
  // wires (pieces) and completes once, when the last piece is answered:
  // the runtime sees one full read, not a short one to retry.
  struct Split {
    std::byte* dest = nullptr;
    uint32_t pieces_left = 0;
    uint32_t valid = 0;  // bytes read from dest's start; lowered by a short piece
    int64_t error = 0;   // the first piece's error, if any
    std::vector<std::pair<uint32_t, uint32_t>> zero_pieces;  // (at, length) not yet written
    bool any_data = false;
  };
  std::unordered_map<uint64_t, Split> splits_;  // by tag

  // A long DATA payload received straight into its reads' buffers rather
  // than through rx_ (saves a copy of every byte on sequential scans). The
  // checksum is computed as the bytes arrive. If the reads time out
  // meanwhile, their buffers are no longer ours: the rest is received into
  // rx_ and dropped.
  struct Direct {
    bool active = false;
    bool discard = false;
    uint64_t id = 0;
    FrameHeader header;
    uint32_t got = 0;
    uint32_t crc = 0;
  };
  Direct direct_;

  friend std::shared_ptr<Backend> faultline::connect_remote(const RemoteOptions&);
};

RemoteBackend::RemoteBackend(const RemoteOptions& options) : options_(options), address_(options.address) {
  if (options_.queue_depth == 0 || options_.queue_depth > kMaxQueueDepth)
    throw Error("remote backend '" + address_ + "': RemoteOptions.queue_depth " +
                std::to_string(options_.queue_depth) + " outside 1.." + std::to_string(kMaxQueueDepth));
  if (options_.deadline.count() <= 0)
    throw Error("remote backend '" + address_ + "': RemoteOptions.deadline must be positive");
  addresses_ = resolve_address(address_);
  epoll_ = UniqueFd(epoll_create1(EPOLL_CLOEXEC));
  if (!epoll_) throw_errno("remote backend: epoll_create1", errno);
  timer_ = UniqueFd(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  if (!timer_) throw_errno("remote backend: timerfd_create", errno);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.fd = timer_.get();
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, timer_.get(), &ev) != 0) throw_errno("remote backend: epoll_ctl", errno);
  reserve_rx(kHandshakeRxBytes);
}

void RemoteBackend::reserve_rx(size_t n) {
  if (n <= rx_cap_) return;
  std::unique_ptr<std::byte[]> bigger(new std::byte[n]);
  if (rx_len_ > 0) std::memcpy(bigger.get(), rx_.get(), rx_len_);
  rx_ = std::move(bigger);
  rx_cap_ = n;
}

// ---- Connection -------------------------------------------------------------

void RemoteBackend::start_connect() {
  const SocketAddress& a = addresses_[address_index_ % addresses_.size()];
  UniqueFd s(::socket(a.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!s) return connection_lost(std::string("socket: ") + std::strerror(errno));
  if (a.family() != AF_UNIX) {
    int one = 1;
    ::setsockopt(s.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  int rc = ::connect(s.get(), reinterpret_cast<const sockaddr*>(&a.storage), a.length);
  if (rc != 0 && errno != EINPROGRESS) {
    int err = errno;
    socket_ = std::move(s);
    return connection_lost(std::string("connect: ") + std::strerror(err));
  }
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.fd = s.get();
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, s.get(), &ev) != 0) {
    int err = errno;
    socket_ = std::move(s);
    return connection_lost(std::string("epoll_ctl: ") + std::strerror(err));
  }
  socket_ = std::move(s);
  state_ = rc == 0 ? State::kAwaitHello : State::kConnecting;
  rx_len_ = 0;
  tx_.clear();
  tx_sent_ = 0;
}

void RemoteBackend::connection_lost(const std::string& why) {
  last_error_ = why;
  socket_.reset();  // (closing removes it from the epoll set)
  state_ = State::kDisconnected;
  address_index_++;
  // Everything sent and unanswered is asked again on the next connection.
  std::vector<uint64_t> resend_urgent, resend_normal;
  for (auto it = wires_.begin(); it != wires_.end();) {
    Wire& w = it->second;
    if (w.abandoned) {
      it = wires_.erase(it);
      continue;
    }
    if (w.sent) {
      w.sent = false;
      (w.urgent ? resend_urgent : resend_normal).push_back(it->first);
    }
    ++it;
  }
  std::sort(resend_urgent.begin(), resend_urgent.end());
  std::sort(resend_normal.begin(), resend_normal.end());
  urgent_queue_.insert(urgent_queue_.begin(), resend_urgent.begin(), resend_urgent.end());
  normal_queue_.insert(normal_queue_.begin(), resend_normal.begin(), resend_normal.end());
  in_flight_bytes_ = 0;
  urgent_sent_ = 0;
  direct_ = Direct{};
  rx_len_ = 0;
  tx_.clear();
  tx_sent_ = 0;
  next_attempt_ = Clock::now() + backoff_;
  // Never wait longer than a quarter of the deadline between attempts, or
  // a server back in time would not be found in time.
  backoff_ = std::min<Clock::duration>({backoff_ * 2, kMaxBackoff, options_.deadline / 4});
}

void RemoteBackend::pump() {
  if (state_ == State::kDisconnected) {
    if (wires_.empty()) return;
    if (Clock::now() < next_attempt_) return;
    start_connect();
    if (state_ == State::kDisconnected) return;
  }
  if (state_ == State::kConnecting) {
    pollfd p{socket_.get(), POLLOUT, 0};
    if (::poll(&p, 1, 0) <= 0) return;
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(socket_.get(), SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) return connection_lost(std::string("connect: ") + std::strerror(err));
    state_ = State::kAwaitHello;
  }
  if (!read_socket()) return;
  if (state_ == State::kReady) send_requests();
  flush_tx();
}

bool RemoteBackend::flush_tx() {
  while (socket_ && tx_sent_ < tx_.size()) {
    ssize_t n = ::send(socket_.get(), tx_.data() + tx_sent_, tx_.size() - tx_sent_, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return true;  // EPOLLOUT brings us back
      connection_lost(std::string("send: ") + std::strerror(errno));
      return false;
    }
    tx_sent_ += static_cast<size_t>(n);
  }
  if (tx_sent_ == tx_.size()) {
    tx_.clear();
    tx_sent_ = 0;
  }
  return true;
}

bool RemoteBackend::read_socket() {
  for (;;) {
    if (direct_.active) {
      if (!receive_direct()) return false;
      if (direct_.active) return true;  // the socket is drained
    }
    if (rx_len_ == rx_cap_) {  // cannot happen with a valid peer: frames are bounded
      connection_lost("receive buffer full without a complete frame");
      return false;
    }
    ssize_t n = ::recv(socket_.get(), rx_.get() + rx_len_, rx_cap_ - rx_len_, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
      connection_lost(std::string("recv: ") + std::strerror(errno));
      return false;
    }
    if (n == 0) {
      connection_lost(rx_len_ > 0 ? "server closed the connection in the middle of a frame"
                                  : "server closed the connection");
      return false;
    }
    rx_len_ += static_cast<size_t>(n);
    size_t pos = 0;
    for (;;) {
      uint32_t max_payload = state_ == State::kReady ? max_wire_ : 0;
      ParseResult f = parse_frame(std::span(rx_.get() + pos, rx_len_ - pos), Receiver::kClient, max_payload);
      if (f.status == ParseResult::kNeedMore) {
        if (f.header_checked && !start_direct(f, &pos)) return false;
        break;
      }
      if (f.status == ParseResult::kError) {
        connection_lost("server sent a bad frame: " + f.message);
        return false;
      }
      if (!handle_frame(f)) return false;
      pos += f.consumed;
    }
    std::memmove(rx_.get(), rx_.get() + pos, rx_len_ - pos);
    rx_len_ -= pos;
  }
}

bool RemoteBackend::handle_frame(const ParseResult& f) {
  const FrameHeader& h = f.header;
  if (h.type == FrameType::kError && h.id == 0) {
    std::string text(reinterpret_cast<const char*>(f.payload.data()), f.payload.size());
    ErrorCode code = ErrorCode(h.code);
    // A server that refuses us for good (secret, version) gets no retries
    // during connect_remote(); later they run until the reads' deadlines.
    if (code == ErrorCode::kAuthFailed || code == ErrorCode::kBadVersion || code == ErrorCode::kBadMagic) fatal_ = true;
    connection_lost(std::string("server: ") + error_code_name(code) + ": " + text);
    return false;
  }
  switch (state_) {
    case State::kAwaitHello:
      if (h.type != FrameType::kHello) break;
      return handle_hello(f);
    case State::kAwaitWelcome: {
      if (h.type != FrameType::kWelcome) break;
      if (!options_.secret.empty()) {
        auto expected = handshake_mac(options_.secret, "server", client_nonce_, server_nonce_);
        std::array<uint8_t, kMacSize> got;
        std::memcpy(got.data(), f.payload.data(), kMacSize);
        if (!mac_equal(expected, got)) {
          fatal_ = true;
          connection_lost("server failed to prove it knows the secret");
          return false;
        }
      }
      state_ = State::kReady;
      backoff_ = kFirstBackoff;
      return true;
    }
    case State::kReady:
      if (h.type == FrameType::kData || h.type == FrameType::kZero || h.type == FrameType::kError)
        return handle_answer(f);
      break;
    default:
      break;
  }
  connection_lost("server sent an unexpected frame (type " + std::to_string(int(h.type)) + ")");
  return false;
}

bool RemoteBackend::handle_hello(const ParseResult& f) {
  Hello h;
  std::string err = decode_hello(f.payload, &h);
  if (err.empty() && h.magic != kMagic) err = "HELLO with a bad magic number";
  if (err.empty() && h.version != kVersion) {
    err = "server speaks protocol version " + std::to_string(h.version) + ", this client " + std::to_string(kVersion);
    fatal_ = true;
  }
  if (err.empty() && h.object_size == 0) err = "server serves an empty object";
  if (err.empty() && size_ != 0 && h.object_size != size_)
    err = "object size changed from " + std::to_string(size_) + " to " + std::to_string(h.object_size);
  if (err.empty() && (h.max_request_bytes < 4096 || h.max_request_bytes > kMaxRequestLimit))
    err = "server announces max_request_bytes " + std::to_string(h.max_request_bytes);
  if (err.empty() && h.max_in_flight_bytes < h.max_request_bytes)
    err = "server announces max_in_flight_bytes " + std::to_string(h.max_in_flight_bytes) + " below max_request_bytes";
  bool server_auth = h.capabilities & kCapAuth;
  server_raise_ = h.capabilities & kCapRaise;
  if (err.empty() && server_auth && options_.secret.empty()) {
    err = "server requires a secret and none was given";
    fatal_ = true;
  }
  if (err.empty() && !server_auth && !options_.secret.empty()) {
    err = "a secret was given but the server does not authenticate";
    fatal_ = true;
  }
  if (!err.empty()) {
    connection_lost(err);
    return false;
  }
  size_ = h.object_size;
  max_wire_ = std::min(h.max_request_bytes, kMaxWireBytes);
  // A whole DATA frame, and room behind it so one recv brings many answers.
  reserve_rx(kHeaderSize + max_wire_ + kRecvSlackBytes);
  max_in_flight_ = h.max_in_flight_bytes;
  server_nonce_ = h.nonce;
  client_nonce_ = random_nonce();
  ClientHello ch;
  ch.capabilities = server_auth ? kCapAuth : 0;
  ch.nonce = client_nonce_;
  if (server_auth) ch.mac = handshake_mac(options_.secret, "client", server_nonce_, client_nonce_);
  append_frame(tx_, FrameType::kClientHello, 0, 0, 0, encode_client_hello(ch));
  state_ = State::kAwaitWelcome;
  return true;
}

bool RemoteBackend::handle_answer(const ParseResult& f) {
  const FrameHeader& h = f.header;
  auto it = wires_.find(h.id);
  if (it == wires_.end() || !it->second.sent) {
    connection_lost("server answered id " + std::to_string(h.id) + ", which was not asked for");
    return false;
  }
  Wire& w = it->second;
  uint32_t expected = static_cast<uint32_t>(std::min<uint64_t>(w.length, size_ - w.offset));
  if (h.type == FrameType::kError) {
    if (ErrorCode(h.code) != ErrorCode::kIoError) {
      connection_lost("server sent error code " + std::to_string(h.code) + " for id " + std::to_string(h.id));
      return false;
    }
    if (w.parts.size() > 1 && !w.abandoned) {
      // The server fails a READ as a whole, so one bad byte would fail
      // every read merged into it: ask each again on its own instead.
      Wire merged = std::move(w);
      finish_wire(it);
      ask_parts_alone(merged);
      return true;
    }
    complete_parts(w, -EIO, {}, false);
  } else {
    uint32_t got = h.type == FrameType::kData ? static_cast<uint32_t>(f.payload.size())
                                               : static_cast<uint32_t>(detail::get_le(f.payload.data(), 4));
    if (got != expected) {
      connection_lost("server answered " + std::to_string(got) + " bytes for id " + std::to_string(h.id) +
                      ", expected " + std::to_string(expected));
      return false;
    }
    complete_parts(w, expected, f.payload, h.type == FrameType::kZero);
  }
  finish_wire(it);
  return true;
}

void RemoteBackend::ask_parts_alone(const Wire& merged) {
  std::vector<uint64_t> ids;
  for (const Part& p : merged.parts) {
    uint64_t id = next_id_++;
    Wire& w = wires_[id];
    w.offset = merged.offset + p.at;
    w.length = p.length;
    w.urgent = merged.urgent;
    w.deadline = merged.deadline;
    w.parts.push_back({p.tag, p.dest, 0, p.length});
    ids.push_back(id);
  }
  // Ahead of what was queued after them; sent by the caller's pump.
  auto& q = merged.urgent ? urgent_queue_ : normal_queue_;
  q.insert(q.begin(), ids.begin(), ids.end());
}

void RemoteBackend::finish_wire(std::unordered_map<uint64_t, Wire>::iterator it) {
  in_flight_bytes_ -= it->second.length;
  if (it->second.urgent) urgent_sent_--;
  wires_.erase(it);
}

// Called with a valid DATA header whose payload is not all in rx_ yet.
bool RemoteBackend::start_direct(const ParseResult& f, size_t* pos) {
  const FrameHeader& h = f.header;
  if (state_ != State::kReady || h.type != FrameType::kData || h.length < kDirectBytes) return true;
  auto it = wires_.find(h.id);
  if (it == wires_.end() || !it->second.sent || it->second.abandoned) return true;  // (refused when complete)
  Wire& w = it->second;
  if (h.length != std::min<uint64_t>(w.length, size_ - w.offset)) return true;
  direct_ = Direct{};
  direct_.active = true;
  direct_.id = h.id;
  direct_.header = h;
  const std::byte* head = rx_.get() + *pos;
  direct_.crc = crc32c(0, head, 16);
  // What already came goes to the buffers now; the rest is received there.
  uint32_t have = static_cast<uint32_t>(rx_len_ - *pos - kHeaderSize);
  const std::byte* bytes = head + kHeaderSize;
  direct_.crc = crc32c(direct_.crc, bytes, have);
  for (const Part& p : w.parts) {
    if (p.at >= have) break;
    std::memcpy(p.dest, bytes + p.at, std::min(p.length, have - p.at));
  }
  direct_.got = have;
  *pos = rx_len_;
  return true;
}

bool RemoteBackend::receive_direct() {
  while (direct_.active) {
    uint32_t length = direct_.header.length;
    auto it = wires_.find(direct_.id);
    iovec iov[64];
    int n_iov = 0;
    if (direct_.discard || it == wires_.end() || it->second.abandoned) {
      direct_.discard = true;
      iov[n_iov++] = {rx_.get(), std::min<size_t>(rx_cap_, length - direct_.got)};
    } else {
      for (const Part& p : it->second.parts) {
        uint64_t start = std::max<uint64_t>(p.at, direct_.got);
        uint64_t end = std::min<uint64_t>(uint64_t{p.at} + p.length, length);
        if (start >= end) continue;
        iov[n_iov++] = {p.dest + (start - p.at), static_cast<size_t>(end - start)};
        if (n_iov == 64) break;
      }
    }
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<size_t>(n_iov);
    ssize_t n = ::recvmsg(socket_.get(), &msg, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
      connection_lost(std::string("recv: ") + std::strerror(errno));
      return false;
    }
    if (n == 0) {
      connection_lost("server closed the connection in the middle of a frame");
      return false;
    }
    size_t left = static_cast<size_t>(n);
    for (int i = 0; i < n_iov && left > 0; ++i) {
      size_t k = std::min(left, iov[i].iov_len);
      direct_.crc = crc32c(direct_.crc, iov[i].iov_base, k);
      left -= k;
    }
    direct_.got += static_cast<uint32_t>(n);
    if (direct_.got < length) continue;
    if (direct_.crc != direct_.header.crc) {
      connection_lost("server sent a bad frame: DATA frame checksum mismatch (id " + std::to_string(direct_.id) + ")");
      return false;
    }
    direct_.active = false;
    it = wires_.find(direct_.id);
    if (it != wires_.end()) {  // (an abandoned wire completes nothing)
      complete_parts(it->second, length, {}, false);
      finish_wire(it);
    }
  }
  return true;
}

void RemoteBackend::complete_parts(Wire& w, int64_t result, std::span<const std::byte> data, bool zero) {
  if (w.abandoned) return;
  for (const Part& p : w.parts) {
    ReadCompletion c;
    c.tag = p.tag;
    if (result < 0) {
      c.result = result;
    } else {
      uint64_t n = result > p.at ? std::min<uint64_t>(p.length, uint64_t(result) - p.at) : 0;
      c.result = static_cast<int64_t>(n);
      c.zero = zero;
      if (!zero && n > 0 && !data.empty()) std::memcpy(p.dest, data.data() + p.at, n);
    }
    if (p.piece)
      complete_piece(p, c.result, c.zero);
    else
      done_.push_back(c);
  }
  w.parts.clear();
}

void RemoteBackend::complete_piece(const Part& p, int64_t result, bool zero) {
  auto it = splits_.find(p.tag);
  Split& s = it->second;
  auto at = static_cast<uint32_t>(p.dest - s.dest);
  if (result < 0) {
    if (s.error == 0) s.error = result;
  } else if (static_cast<uint64_t>(result) < p.length) {
    s.valid = std::min<uint32_t>(s.valid, at + static_cast<uint32_t>(result));
  }
  if (result > 0) {
    if (zero)
      s.zero_pieces.emplace_back(at, static_cast<uint32_t>(result));
    else
      s.any_data = true;
  }
  if (--s.pieces_left > 0) return;
  ReadCompletion c;
  c.tag = p.tag;
  if (s.error < 0) {
    c.result = s.error;
  } else {
    c.result = s.valid;
    c.zero = !s.any_data;  // every piece was a hole: dest untouched
    if (s.any_data)
      for (auto [at, n] : s.zero_pieces) std::memset(s.dest + at, 0, n);
  }
  done_.push_back(c);
  splits_.erase(it);
}

void RemoteBackend::send_requests() {
  for (auto* q : {&urgent_queue_, &normal_queue_}) {
    bool urgent = q == &urgent_queue_;
    uint64_t budget = urgent ? max_in_flight_ : max_in_flight_ - max_in_flight_ / 4;
    while (!q->empty()) {
      auto it = wires_.find(q->front());
      if (it == wires_.end() || it->second.sent) {  // timed out meanwhile
        q->pop_front();
        continue;
      }
      Wire& w = it->second;
      if (in_flight_bytes_ + w.length > budget) break;
      std::vector<std::byte> payload = encode_read({w.offset, w.length});
      append_frame(tx_, FrameType::kRead, w.urgent ? kReadUrgent : 0, 0, it->first, payload);
      w.sent = true;
      in_flight_bytes_ += w.length;
      if (w.urgent) urgent_sent_++;
      q->pop_front();
    }
  }
}

void RemoteBackend::expire(Clock::time_point now) {
  expire_wires(now);
  // Every read has failed and none waits: the next one to come (perhaps
  // much later) tries at once rather than after the grown backoff.
  if (state_ == State::kDisconnected && wires_.empty()) {
    backoff_ = kFirstBackoff;
    next_attempt_ = now;
  }
}

void RemoteBackend::expire_wires(Clock::time_point now) {
  for (auto it = wires_.begin(); it != wires_.end();) {
    Wire& w = it->second;
    if (w.abandoned || w.deadline > now) {
      ++it;
      continue;
    }
    complete_parts(w, -ETIMEDOUT, {}, false);
    w.abandoned = true;
    if (direct_.active && direct_.id == it->first) direct_.discard = true;  // its buffers are not ours now
    if (!w.sent)
      it = wires_.erase(it);  // (its id is skipped in the queue)
    else
      ++it;
  }
}

void RemoteBackend::arm_timer() {
  Clock::time_point when = Clock::time_point::max();
  for (const auto& [id, w] : wires_)
    if (!w.abandoned) when = std::min(when, w.deadline);
  if (state_ == State::kDisconnected && !wires_.empty()) when = std::min(when, next_attempt_);
  // Only ever moved earlier: a timer left armed for reads that completed
  // meanwhile fires once for nothing, which costs less than a syscall to
  // re-arm it on every read.
  if (when >= armed_for_) return;
  armed_for_ = when;
  itimerspec spec{};
  if (when != Clock::time_point::max()) {
    auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(when.time_since_epoch()).count();
    if (ns <= 0) ns = 1;
    spec.it_value.tv_sec = ns / 1000000000;
    spec.it_value.tv_nsec = ns % 1000000000;
  }
  timerfd_settime(timer_.get(), TFD_TIMER_ABSTIME, &spec, nullptr);
}

// ---- Backend interface ------------------------------------------------------

void RemoteBackend::submit(std::span<const ReadRequest> reads) {
  Clock::time_point deadline = Clock::now() + options_.deadline;
  uint32_t max_wire = max_wire_ ? max_wire_ : kMaxWireBytes;
  Wire* open = nullptr;  // the wire request the next read may extend
  for (const ReadRequest& r : reads) {
    if (r.offset >= size_ || r.length == 0) {  // (the runtime never asks that)
      done_.push_back({r.tag, r.offset >= size_ ? -EINVAL : 0, false, nullptr});
      open = nullptr;
      continue;
    }
    uint32_t length = static_cast<uint32_t>(std::min<uint64_t>(r.length, size_ - r.offset));
    if (length > max_wire) {
      Split& split = splits_[r.tag];
      split.dest = r.dest;
      split.valid = length;
      for (uint32_t at = 0; at < length; at += max_wire) {
        uint32_t n = std::min(max_wire, length - at);
        Wire& w = wires_[next_id_];
        w.offset = r.offset + at;
        w.length = n;
        w.urgent = r.urgent;
        w.deadline = deadline;
        w.parts.push_back({r.tag, r.dest + at, 0, n, true});
        (r.urgent ? urgent_queue_ : normal_queue_).push_back(next_id_++);
        split.pieces_left++;
      }
      open = nullptr;
      continue;
    }
    if (open && open->urgent == r.urgent && open->offset + open->length == r.offset &&
        uint64_t{open->length} + length <= max_wire) {
      open->parts.push_back({r.tag, r.dest, open->length, length});
      open->length += length;
      continue;
    }
    uint64_t id = next_id_++;
    Wire& w = wires_[id];
    w.offset = r.offset;
    w.length = length;
    w.urgent = r.urgent;
    w.deadline = deadline;
    w.parts.push_back({r.tag, r.dest, 0, length});
    (r.urgent ? urgent_queue_ : normal_queue_).push_back(id);
    open = &w;
  }
  if (state_ == State::kReady) {
    send_requests();
    flush_tx();
  } else if (state_ == State::kDisconnected) {
    pump();
  }
  arm_timer();
}

size_t RemoteBackend::reap(std::span<ReadCompletion> out) {
  // Empties our epoll's ready list (the socket is edge-triggered; the
  // timer, level-triggered, is read just below), so the runtime's epoll sees
  // the next event as a new edge. What was ready is handled by pump().
  epoll_event events[4];
  int n_events = epoll_wait(epoll_.get(), events, 4, 0);
  for (int i = 0; i < n_events; ++i) {
    if (events[i].data.fd != timer_.get()) continue;
    uint64_t expirations;
    (void)!::read(timer_.get(), &expirations, sizeof expirations);
    armed_for_ = Clock::time_point::max();  // (a fired timer is disarmed)
  }
  pump();
  if (done_.empty() && state_ == State::kReady && urgent_sent_ > 0 && options_.busy_poll.count() > 0 &&
      spin_.should_spin()) {
    // A demand read is out: the answer may be microseconds away.
    Clock::time_point until = Clock::now() + options_.busy_poll;
    while (done_.empty() && state_ == State::kReady && urgent_sent_ > 0 && Clock::now() < until) {
      if (!read_socket()) break;
      send_requests();  // (reads a failed merged wire asked again)
      flush_tx();
    }
    done_.empty() ? spin_.miss() : spin_.hit();
  }
  expire(Clock::now());
  arm_timer();
  size_t n = std::min(out.size(), done_.size());
  for (size_t i = 0; i < n; ++i) {
    out[i] = done_.front();
    done_.pop_front();
  }
  // More left than out holds: the runtime calls again (it does while we fill out).
  return n;
}

// A demand fault on a read-ahead. A wire not yet sent moves to the demand
// queue (its merged neighbours go with it); one already sent is raised on
// the server with a RAISE frame, if the server takes them.
void RemoteBackend::make_urgent(uint64_t tag) {
  auto has_tag = [&](const Wire& w) {
    return std::any_of(w.parts.begin(), w.parts.end(), [&](const Part& p) { return p.tag == tag; });
  };
  for (auto qit = normal_queue_.begin(); qit != normal_queue_.end(); ++qit) {
    auto it = wires_.find(*qit);
    if (it == wires_.end() || it->second.sent || it->second.abandoned || !has_tag(it->second)) continue;
    it->second.urgent = true;
    urgent_queue_.push_back(*qit);
    normal_queue_.erase(qit);
    if (state_ == State::kReady) {
      send_requests();
      flush_tx();
    }
    return;
  }
  if (state_ != State::kReady || !server_raise_) return;
  bool raised = false;
  for (auto& [id, w] : wires_) {  // (a long read goes as several wires: each is raised)
    if (!w.sent || w.urgent || w.abandoned || !has_tag(w)) continue;
    w.urgent = true;
    urgent_sent_++;  // (finish_wire counts it out as urgent)
    append_frame(tx_, FrameType::kRaise, 0, 0, id, {});
    raised = true;
  }
  if (raised) flush_tx();
}

}  // namespace

std::shared_ptr<Backend> connect_remote(const RemoteOptions& options) {
  auto backend = std::make_shared<RemoteBackend>(options);
  RemoteBackend& b = *backend;
  Clock::time_point give_up = Clock::now() + options.deadline;
  // Try each resolved address once, then give up with the last problem.
  for (size_t tries = 0; tries < b.addresses_.size() && b.state_ != RemoteBackend::State::kReady; ++tries) {
    b.start_connect();
    while (b.state_ != RemoteBackend::State::kDisconnected && b.state_ != RemoteBackend::State::kReady) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(give_up - Clock::now()).count();
      if (left <= 0) {
        b.connection_lost("timed out after " + std::to_string(options.deadline.count()) + " ms");
        b.fatal_ = true;
        break;
      }
      if (b.state_ == RemoteBackend::State::kConnecting || !b.tx_.empty()) {
        pollfd p{b.socket_.get(), POLLOUT, 0};
        ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 100)));
      } else {
        pollfd p{b.socket_.get(), POLLIN, 0};
        ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 100)));
      }
      b.pump();
    }
    if (b.fatal_) break;
  }
  if (b.state_ != RemoteBackend::State::kReady)
    throw Error("remote backend '" + options.address + "': " + b.last_error_);
  b.fatal_ = false;
  return backend;
}

}  // namespace faultline

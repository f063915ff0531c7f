// SPDX-License-Identifier: Apache-2.0
// PageServer: serves a Backend over the protocol of docs/protocol.md with
// Boost.Asio on one thread.
//
// Everything (sockets, timers, the backend) lives on the server thread, so
// nothing here is locked; other threads only read the atomic counters and
// post stop(). Each connection reads frames into a 64 KiB buffer, validates
// them (remote_protocol.h) and queues backend reads; reads go to the backend
// in batches of up to its queue depth, demand reads (the urgent flag) first.
// A finished read becomes a DATA frame written straight from the read
// buffer (header and payload gathered into one write); urgent responses go
// ahead of queued read-ahead responses.
//
// A peer that breaks the protocol or a limit gets one ERROR frame naming the
// problem and is closed; the log callback hears about it. Its backend reads
// still in flight finish and are dropped (their buffers must outlive them).
//
// The backend's completion_fd() is watched edge-triggered, as the Backend
// contract wants, through an epoll set of our own: Asio re-arms a descriptor
// with EPOLL_CTL_MOD, which reports a still-readable fd as ready again, and
// the backends never drain their eventfd, so waiting on it directly would
// wake at once forever. Our set is readable only while an edge is pending,
// and we empty it before each reap.
//
// A Unix socket path is taken only from a dead server (nobody accepts on
// it), never from a live one or from a file that is not a socket, and on
// stop it is removed only if it is still the socket this server bound.
//
// For latency, the thread spins on io_context::poll() for busy_poll after
// the last event before it sleeps in epoll: a client that faults page after
// page then never waits for the server thread to wake up.
#include "faultline/page_server.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <optional>
#include <utility>  // (before Asio: 1.74's awaitable.hpp uses std::exchange without it)

#include <boost/asio.hpp>
#include <cstring>
#include <deque>
#include <set>
#include <thread>
#include <unordered_map>

#include "faultline/error.h"
#include "remote_protocol.h"
#include "unix_socket_path.h"
#include "unique_fd.h"

namespace faultline {
namespace {

namespace asio = boost::asio;
using Protocol = asio::generic::stream_protocol;
using Acceptor = asio::basic_socket_acceptor<Protocol>;
using Clock = std::chrono::steady_clock;
using namespace remote;

constexpr size_t kRxBufferSize = 64 * 1024;
constexpr size_t kWriteBatchBytes = 256 * 1024;
constexpr int kReadAttempts = 4;

struct FreeDeleter {
  void operator()(std::byte* p) const { std::free(p); }
};

struct Conn;

// One READ being served: the backend reads [read_offset, read_offset +
// read_length) (the request widened to the backend's alignment) into buf.
struct Job {
  std::shared_ptr<Conn> conn;
  uint64_t id = 0;
  uint64_t offset = 0;
  uint32_t length = 0;  // clipped to the object's end
  uint32_t asked = 0;   // as requested: counted against the in-flight limit
  bool urgent = false;
  uint64_t read_offset = 0;
  uint32_t read_length = 0;
  uint32_t got = 0;
  int attempts = 0;
  Clock::time_point received;
  std::unique_ptr<std::byte, FreeDeleter> buf;
};

// A frame waiting to be written: header plus a payload that lives in the
// job's buffer or in `small`.
struct Outgoing {
  std::byte header[kHeaderSize];
  std::unique_ptr<Job> job;
  std::vector<std::byte> small;
  std::span<const std::byte> payload;
  uint64_t in_flight = 0;  // released when written
  // For the answer to a READ (data, zeros or an error): when the READ came.
  std::optional<Clock::time_point> answers;
  bool zero = false;  // a ZERO frame for job->length bytes
};

struct Conn : std::enable_shared_from_this<Conn> {
  Conn(asio::io_context& io, Protocol::socket s) : socket(std::move(s)), idle_timer(io) {}
  Protocol::socket socket;
  asio::steady_timer idle_timer;
  uint64_t number = 0;
  std::string peer;
  enum class State { kHandshake, kReady, kClosing, kClosed } state = State::kHandshake;
  std::array<uint8_t, kNonceSize> nonce{};
  std::vector<std::byte> rx = std::vector<std::byte>(kRxBufferSize);
  size_t rx_len = 0;
  std::deque<std::unique_ptr<Outgoing>> urgent_out, normal_out;
  std::vector<std::unique_ptr<Outgoing>> writing;
  bool write_active = false;
  uint64_t in_flight_bytes = 0;
  Clock::time_point last_activity = Clock::now();
};

std::string describe_peer(const Protocol::socket& s, uint64_t number) {
  std::string name = "connection " + std::to_string(number);
  boost::system::error_code ec;
  Protocol::endpoint ep = s.remote_endpoint(ec);
  if (!ec && (ep.protocol().family() == AF_INET || ep.protocol().family() == AF_INET6)) {
    SocketAddress a;
    std::memcpy(&a.storage, ep.data(), std::min<size_t>(ep.size(), sizeof a.storage));
    a.length = static_cast<socklen_t>(ep.size());
    name += " from " + format_address(a);
  }
  return name;
}

}  // namespace

class PageServer::Impl {
 public:
  Impl(std::shared_ptr<Backend> source, PageServerOptions options);
  ~Impl() { stop(); }
  void stop();
  std::vector<std::string> endpoints;
  PageServerStats stats() const;

 private:
  struct Counters {
    std::atomic<uint64_t> accepted{0}, rejected{0}, open{0}, requests{0}, bytes_sent{0}, zero_bytes{0},
        protocol_errors{0}, auth_failures{0}, idle_timeouts{0}, read_errors{0}, latency_sum_ns{0}, raised{0};
    std::array<std::atomic<uint64_t>, kPageServerLatencyBoundsUs.size() + 1> latency_buckets{};
  };
  static void add(std::atomic<uint64_t>& c, uint64_t n = 1) { c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed); }

  void listen_all();
  void run();
  void accept(size_t listener);
  void on_accept(Protocol::socket socket);
  void start_read(const std::shared_ptr<Conn>& c);
  void on_read(const std::shared_ptr<Conn>& c, size_t n);
  bool handle_frame(const std::shared_ptr<Conn>& c, const ParseResult& f);
  void handle_client_hello(const std::shared_ptr<Conn>& c, const ParseResult& f);
  void handle_read(const std::shared_ptr<Conn>& c, const ParseResult& f);
  void handle_raise(const std::shared_ptr<Conn>& c, const ParseResult& f);
  void arm_idle(const std::shared_ptr<Conn>& c, Clock::duration after);
  void send_small(const std::shared_ptr<Conn>& c, FrameType type, uint16_t code, uint64_t id,
                  std::vector<std::byte> payload, bool urgent);
  void queue(const std::shared_ptr<Conn>& c, std::unique_ptr<Outgoing> out, bool urgent);
  void kick_writer(const std::shared_ptr<Conn>& c);
  // Sends ERROR id 0 naming the problem, logs it, and closes after the write.
  void disconnect(const std::shared_ptr<Conn>& c, ErrorCode code, const std::string& why);
  void close(const std::shared_ptr<Conn>& c, const std::string& why, LogLevel level = LogLevel::kInfo);
  void log(LogLevel level, const std::string& line) {
    const std::string message = "page server: " + line;
    if (options_.log)
      options_.log(level, message);
    else
      log_to_stderr(level, message);
  }
  // A READ answered (its response written): counted with its latency.
  void answered(Clock::time_point received);

  // Backend side.
  void drive();
  bool submit_some();
  size_t reap_some();
  void complete(Job* job, const ReadCompletion& c);
  void take_completion_edges();
  void finish_job(std::unique_ptr<Job> job, bool zero);
  void fail_job(std::unique_ptr<Job> job, int err);
  void arm_completion_wait();
  void maybe_finish_stop();

  std::shared_ptr<Backend> backend_;
  PageServerOptions options_;
  uint64_t object_size_;
  uint32_t alignment_;
  uint32_t depth_;
  asio::io_context io_{1};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::vector<std::unique_ptr<Acceptor>> acceptors_;
  std::vector<detail::BoundSocket> unix_sockets_;
  std::set<std::shared_ptr<Conn>> conns_;
  uint64_t next_conn_ = 1;
  std::deque<std::unique_ptr<Job>> urgent_jobs_, normal_jobs_;
  std::unordered_map<Job*, std::unique_ptr<Job>> in_backend_;
  std::vector<ReadRequest> batch_;
  // Our epoll set holding the backend's completion_fd(), edge-triggered.
  std::optional<asio::posix::stream_descriptor> completion_;
  bool stopping_ = false;
  Counters counters_;
  std::thread thread_;
  std::atomic<bool> stopped_{false};
};

PageServer::Impl::Impl(std::shared_ptr<Backend> source, PageServerOptions options)
    : backend_(std::move(source)), options_(std::move(options)) {
  if (!backend_) throw Error("page server: no backend");
  object_size_ = backend_->size();
  alignment_ = std::max<uint32_t>(backend_->alignment(), 16);
  depth_ = std::max<uint32_t>(backend_->queue_depth(), 1);
  if ((alignment_ & (alignment_ - 1)) != 0)
    throw Error("page server: backend alignment " + std::to_string(alignment_) + " is not a power of two");
  if (options_.listen.empty()) throw Error("page server: PageServerOptions.listen is empty");
  if (options_.max_connections == 0) throw Error("page server: PageServerOptions.max_connections is 0");
  if (options_.max_request_bytes < 4096 || options_.max_request_bytes > kMaxRequestLimit)
    throw Error("page server: PageServerOptions.max_request_bytes " + std::to_string(options_.max_request_bytes) +
                " outside 4096.." + std::to_string(kMaxRequestLimit));
  if (options_.max_in_flight_bytes < options_.max_request_bytes)
    throw Error("page server: PageServerOptions.max_in_flight_bytes " + std::to_string(options_.max_in_flight_bytes) +
                " below max_request_bytes " + std::to_string(options_.max_request_bytes));
  if (options_.idle_timeout.count() <= 0 || options_.idle_timeout.count() > 0xffffffffll)
    throw Error("page server: PageServerOptions.idle_timeout must be 1 ms .. 49 days");

  if (int fd = backend_->completion_fd(); fd >= 0) {
    int set = ::epoll_create1(EPOLL_CLOEXEC);
    if (set < 0) throw_errno("page server: epoll_create1", errno);
    completion_.emplace(io_, set);  // (Asio owns and closes it)
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLET;
    if (::epoll_ctl(set, EPOLL_CTL_ADD, fd, &ev) != 0)
      throw_errno("page server: epoll_ctl on the backend's completion fd", errno);
  }
  try {
    listen_all();
  } catch (...) {
    for (const detail::BoundSocket& s : unix_sockets_) detail::remove_if_ours(s);
    throw;
  }
  work_.emplace(io_.get_executor());
  for (size_t i = 0; i < acceptors_.size(); ++i) accept(i);
  if (completion_) arm_completion_wait();
  thread_ = std::thread([this] { run(); });
}

void PageServer::Impl::listen_all() {
  for (const std::string& address : options_.listen) {
    std::vector<SocketAddress> candidates = resolve_address(address);
    std::string problem;
    for (const SocketAddress& a : candidates) {
      Protocol::endpoint ep(&a.storage, a.length);
      auto acceptor = std::make_unique<Acceptor>(io_);
      boost::system::error_code ec;
      std::optional<detail::StartLock> start_lock;  // (released once we listen, or have failed to)
      if (a.family() == AF_UNIX) {
        const std::string where = "page server: cannot listen on '" + address + "': ";
        start_lock.emplace(address.substr(5), where);
        detail::clear_stale_socket(address.substr(5), where);
      }
      acceptor->open(ep.protocol(), ec);
      if (!ec && a.family() != AF_UNIX) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
      if (!ec) acceptor->bind(ep, ec);
      if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
      if (ec) {
        problem = ec.message();
        continue;
      }
      Protocol::endpoint local = acceptor->local_endpoint(ec);
      SocketAddress bound;
      std::memcpy(&bound.storage, local.data(), std::min<size_t>(local.size(), sizeof bound.storage));
      bound.length = static_cast<socklen_t>(local.size());
      endpoints.push_back(a.family() == AF_UNIX ? address : format_address(bound));
      acceptors_.push_back(std::move(acceptor));
      if (a.family() == AF_UNIX) {
        detail::BoundSocket s{address.substr(5)};
        struct stat st;
        if (::lstat(s.path.c_str(), &st) != 0) throw_errno("page server: stat of the socket just bound, " + s.path, errno);
        s.dev = st.st_dev;
        s.ino = st.st_ino;
        unix_sockets_.push_back(std::move(s));
      }
      problem.clear();
      break;
    }
    if (!problem.empty()) throw Error("page server: cannot listen on '" + address + "': " + problem);
  }
}

void PageServer::Impl::run() {
  pthread_setname_np(pthread_self(), "faultline-srv");
  SpinPolicy spin;
  while (!io_.stopped()) {
    if (io_.poll() > 0) continue;  // (runs every handler that is ready)
    if (io_.stopped()) break;
    bool caught = false;
    if (options_.busy_poll.count() > 0 && spin.should_spin()) {
      auto until = Clock::now() + options_.busy_poll;
      while (!caught && !io_.stopped() && Clock::now() < until) caught = io_.poll() > 0;
      caught ? spin.hit() : spin.miss();
    }
    if (!caught) io_.run_one();
  }
}

void PageServer::Impl::stop() {
  if (stopped_.exchange(true)) return;
  asio::post(io_, [this] {
    stopping_ = true;
    for (const detail::BoundSocket& s : unix_sockets_) detail::remove_if_ours(s);  // (before the close: see there)
    for (auto& a : acceptors_) a->close();
    auto conns = conns_;
    std::vector<std::byte> bye;
    std::string text = "server stopping";
    append_frame(bye, FrameType::kError, 0, uint16_t(ErrorCode::kShuttingDown), 0,
                 std::as_bytes(std::span(text.data(), text.size())));
    for (const auto& c : conns) {
      // Best effort, never waiting: unless a response is half written, the
      // peer learns why the connection ends.
      if (!c->write_active) (void)!::send(c->socket.native_handle(), bye.data(), bye.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      close(c, "server stopping");
    }
    urgent_jobs_.clear();
    normal_jobs_.clear();
    maybe_finish_stop();
  });
  if (thread_.joinable()) thread_.join();
}

void PageServer::Impl::maybe_finish_stop() {
  // Reads still in the backend write into our buffers: wait for them.
  if (!stopping_ || !in_backend_.empty()) return;
  if (completion_) completion_->cancel();
  // No io_.stop(): the handlers of the closed sockets and cancelled timers
  // are still queued, each holding its connection (a cycle through the
  // socket's own operation queue). run() goes on until the context runs
  // out of work, so every one of them runs and lets go.
  work_.reset();
}

PageServerStats PageServer::Impl::stats() const {
  PageServerStats s;
  s.connections_accepted = counters_.accepted.load(std::memory_order_relaxed);
  s.connections_rejected = counters_.rejected.load(std::memory_order_relaxed);
  s.connections_open = counters_.open.load(std::memory_order_relaxed);
  s.requests = counters_.requests.load(std::memory_order_relaxed);
  s.bytes_sent = counters_.bytes_sent.load(std::memory_order_relaxed);
  s.protocol_errors = counters_.protocol_errors.load(std::memory_order_relaxed);
  s.auth_failures = counters_.auth_failures.load(std::memory_order_relaxed);
  s.idle_timeouts = counters_.idle_timeouts.load(std::memory_order_relaxed);
  s.read_errors = counters_.read_errors.load(std::memory_order_relaxed);
  s.zero_bytes = counters_.zero_bytes.load(std::memory_order_relaxed);
  s.raised = counters_.raised.load(std::memory_order_relaxed);
  s.latency_sum_ns = counters_.latency_sum_ns.load(std::memory_order_relaxed);
  for (size_t i = 0; i < s.latency_buckets.size(); ++i)
    s.latency_buckets[i] = counters_.latency_buckets[i].load(std::memory_order_relaxed);
  return s;
}

void PageServer::Impl::answered(Clock::time_point received) {
  const uint64_t ns = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - received).count());
  size_t bucket = 0;
  while (bucket < kPageServerLatencyBoundsUs.size() && ns > kPageServerLatencyBoundsUs[bucket] * 1000) ++bucket;
  add(counters_.latency_buckets[bucket]);
  add(counters_.latency_sum_ns, ns);
  add(counters_.requests);
}

// ---- Connections ------------------------------------------------------------

void PageServer::Impl::accept(size_t listener) {
  acceptors_[listener]->async_accept([this, listener](boost::system::error_code ec, Protocol::socket socket) {
    if (stopping_) return;
    if (ec) {
      if (ec == asio::error::operation_aborted) return;
      log(LogLevel::kWarning, "accept failed: " + ec.message());
      if (ec == asio::error::no_descriptors || ec == asio::error::no_buffer_space) {
        // Out of fds: back off instead of spinning on the same error.
        auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(50));
        timer->async_wait([this, listener, timer](boost::system::error_code) {
          if (!stopping_) accept(listener);
        });
        return;
      }
    } else {
      on_accept(std::move(socket));
    }
    accept(listener);
  });
}

void PageServer::Impl::on_accept(Protocol::socket socket) {
  uint64_t number = next_conn_++;
  std::string peer = describe_peer(socket, number);
  if (conns_.size() >= options_.max_connections) {
    add(counters_.rejected);
    log(LogLevel::kWarning, peer + ": rejected, " + std::to_string(conns_.size()) + " connections open (max_connections)");
    // Best effort: one ERROR frame, then close; never wait for a peer we refuse.
    std::string msg = "server has max_connections (" + std::to_string(options_.max_connections) + ") open";
    std::vector<std::byte> frame;
    append_frame(frame, FrameType::kError, 0, uint16_t(ErrorCode::kBusy), 0,
                 std::as_bytes(std::span(msg.data(), msg.size())));
    (void)!::send(socket.native_handle(), frame.data(), frame.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    boost::system::error_code ec;
    socket.close(ec);
    return;
  }
  boost::system::error_code ec;
  if (socket.local_endpoint(ec).protocol().family() != AF_UNIX) {
    int one = 1;
    ::setsockopt(socket.native_handle(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  auto c = std::make_shared<Conn>(io_, std::move(socket));
  c->number = number;
  c->peer = std::move(peer);
  c->nonce = random_nonce();
  conns_.insert(c);
  add(counters_.accepted);
  add(counters_.open);
  log(LogLevel::kInfo, c->peer + ": connected");
  Hello hello;
  hello.capabilities = kCapZero | kCapRaise | (options_.secret.empty() ? 0 : kCapAuth);
  hello.max_request_bytes = options_.max_request_bytes;
  hello.object_size = object_size_;
  hello.max_in_flight_bytes = options_.max_in_flight_bytes;
  hello.idle_timeout_ms = static_cast<uint32_t>(options_.idle_timeout.count());
  hello.nonce = c->nonce;
  send_small(c, FrameType::kHello, 0, 0, encode_hello(hello), true);
  arm_idle(c, options_.idle_timeout);
  start_read(c);
}

void PageServer::Impl::start_read(const std::shared_ptr<Conn>& c) {
  c->socket.async_read_some(asio::buffer(c->rx.data() + c->rx_len, c->rx.size() - c->rx_len),
                            [this, c](boost::system::error_code ec, size_t n) {
                              if (c->state == Conn::State::kClosed || c->state == Conn::State::kClosing) return;
                              if (ec) {
                                if (ec == asio::error::eof && c->rx_len > 0) {
                                  add(counters_.protocol_errors);
                                  close(c,
                                        "protocol error: truncated frame (" + std::to_string(c->rx_len) +
                                            " bytes) at end of stream",
                                        LogLevel::kWarning);
                                } else {
                                  close(c, ec == asio::error::eof ? "disconnected" : "read failed: " + ec.message());
                                }
                                return;
                              }
                              on_read(c, n);
                            });
}

void PageServer::Impl::on_read(const std::shared_ptr<Conn>& c, size_t n) {
  c->rx_len += n;
  c->last_activity = Clock::now();
  size_t pos = 0;
  while (c->state == Conn::State::kHandshake || c->state == Conn::State::kReady) {
    ParseResult f = parse_frame(std::span(c->rx.data() + pos, c->rx_len - pos), Receiver::kServer, 0);
    if (f.status == ParseResult::kNeedMore) break;
    if (f.status == ParseResult::kError) {
      disconnect(c, f.code, f.message);
      return;
    }
    pos += f.consumed;
    if (!handle_frame(c, f)) return;
  }
  if (c->state != Conn::State::kHandshake && c->state != Conn::State::kReady) return;
  std::memmove(c->rx.data(), c->rx.data() + pos, c->rx_len - pos);
  c->rx_len -= pos;
  drive();
  start_read(c);
}

bool PageServer::Impl::handle_frame(const std::shared_ptr<Conn>& c, const ParseResult& f) {
  switch (f.header.type) {
    case FrameType::kClientHello:
      handle_client_hello(c, f);
      break;
    case FrameType::kRead:
      handle_read(c, f);
      break;
    case FrameType::kRaise:
      handle_raise(c, f);
      break;
    case FrameType::kError: {
      std::string text(reinterpret_cast<const char*>(f.payload.data()), f.payload.size());
      close(c,
            "peer reported error " + std::to_string(f.header.code) + " (" +
                error_code_name(ErrorCode(f.header.code)) + "): " + text,
            LogLevel::kWarning);
      return false;
    }
    default:  // parse_frame lets only client frames through
      disconnect(c, ErrorCode::kBadFrame, "unexpected frame");
      return false;
  }
  return c->state == Conn::State::kHandshake || c->state == Conn::State::kReady;
}

void PageServer::Impl::handle_client_hello(const std::shared_ptr<Conn>& c, const ParseResult& f) {
  if (c->state != Conn::State::kHandshake)
    return disconnect(c, ErrorCode::kBadFrame, "CLIENT_HELLO after the handshake");
  ClientHello h;
  if (std::string err = decode_client_hello(f.payload, &h); !err.empty())
    return disconnect(c, ErrorCode::kBadFrame, err);
  if (h.magic != kMagic) {
    char hex[16];
    std::snprintf(hex, sizeof hex, "0x%08x", h.magic);
    return disconnect(c, ErrorCode::kBadMagic, std::string("CLIENT_HELLO magic ") + hex + ", expected 0x50544c46");
  }
  if (h.version != kVersion)
    return disconnect(c, ErrorCode::kBadVersion, "CLIENT_HELLO version " + std::to_string(h.version) +
                                                     ", this server speaks version " + std::to_string(kVersion));
  std::array<uint8_t, kMacSize> proof{};
  if (!options_.secret.empty()) {
    auto expected = handshake_mac(options_.secret, "client", c->nonce, h.nonce);
    if (!mac_equal(expected, h.mac)) {
      add(counters_.auth_failures);
      return disconnect(c, ErrorCode::kAuthFailed, "wrong secret (client's proof does not match)");
    }
    proof = handshake_mac(options_.secret, "server", h.nonce, c->nonce);
  }
  c->state = Conn::State::kReady;
  send_small(c, FrameType::kWelcome, 0, 0, std::vector<std::byte>(reinterpret_cast<std::byte*>(proof.data()),
                                                                   reinterpret_cast<std::byte*>(proof.data()) + kMacSize),
             true);
  log(LogLevel::kInfo, c->peer + ": handshake done" + (options_.secret.empty() ? "" : " (authenticated)"));
}

void PageServer::Impl::handle_read(const std::shared_ptr<Conn>& c, const ParseResult& f) {
  if (c->state != Conn::State::kReady) return disconnect(c, ErrorCode::kBadFrame, "READ before the handshake");
  ReadRequestWire r;
  if (std::string err = decode_read(f.payload, &r); !err.empty()) return disconnect(c, ErrorCode::kBadFrame, err);
  std::string id = " (id " + std::to_string(f.header.id) + ")";
  if (r.offset >= object_size_)
    return disconnect(c, ErrorCode::kOutOfRange, "READ offset " + std::to_string(r.offset) + " at or past the end " +
                                                     std::to_string(object_size_) + id);
  if (r.length > options_.max_request_bytes)
    return disconnect(c, ErrorCode::kTooLarge, "READ length " + std::to_string(r.length) + " over max_request_bytes " +
                                                   std::to_string(options_.max_request_bytes) + id);
  if (c->in_flight_bytes + r.length > options_.max_in_flight_bytes)
    return disconnect(c, ErrorCode::kInFlightLimit,
                      "READ of " + std::to_string(r.length) + " bytes with " + std::to_string(c->in_flight_bytes) +
                          " in flight, over max_in_flight_bytes " + std::to_string(options_.max_in_flight_bytes) + id);
  auto job = std::make_unique<Job>();
  job->received = Clock::now();
  job->conn = c;
  job->id = f.header.id;
  job->offset = r.offset;
  job->length = static_cast<uint32_t>(std::min<uint64_t>(r.length, object_size_ - r.offset));
  job->asked = r.length;
  job->urgent = f.header.flags & kReadUrgent;
  job->read_offset = r.offset & ~uint64_t(alignment_ - 1);
  uint64_t end = (r.offset + job->length + alignment_ - 1) & ~uint64_t(alignment_ - 1);
  job->read_length = static_cast<uint32_t>(end - job->read_offset);
  c->in_flight_bytes += r.length;  // (released when the answer, even an error, is written)
  job->buf.reset(static_cast<std::byte*>(std::aligned_alloc(alignment_, job->read_length)));
  if (!job->buf) return fail_job(std::move(job), ENOMEM);
  (job->urgent ? urgent_jobs_ : normal_jobs_).push_back(std::move(job));
}

// RAISE: a READ of this connection, sent as read-ahead, now has a thread
// waiting on it. Wherever it is (queued, in the backend, its answer waiting
// to be written), it moves to the urgent side; an id already answered, or
// never sent, is ignored (the answer may be on its way).
void PageServer::Impl::handle_raise(const std::shared_ptr<Conn>& c, const ParseResult& f) {
  if (c->state != Conn::State::kReady) return disconnect(c, ErrorCode::kBadFrame, "RAISE before the handshake");
  const uint64_t id = f.header.id;
  auto mine = [&](const Job& j) { return j.conn == c && j.id == id; };
  for (auto it = normal_jobs_.begin(); it != normal_jobs_.end(); ++it)
    if (mine(**it)) {
      (*it)->urgent = true;
      urgent_jobs_.push_back(std::move(*it));
      normal_jobs_.erase(it);
      return add(counters_.raised);
    }
  for (auto& [key, job] : in_backend_)
    if (mine(*job) && !job->urgent) {
      job->urgent = true;
      backend_->make_urgent(reinterpret_cast<uint64_t>(key));
      return add(counters_.raised);
    }
  for (auto it = c->normal_out.begin(); it != c->normal_out.end(); ++it)
    if ((*it)->job && mine(*(*it)->job)) {
      c->urgent_out.push_back(std::move(*it));
      c->normal_out.erase(it);
      add(counters_.raised);
      return kick_writer(c);
    }
}

void PageServer::Impl::arm_idle(const std::shared_ptr<Conn>& c, Clock::duration after) {
  c->idle_timer.expires_after(after);
  c->idle_timer.async_wait([this, c](boost::system::error_code ec) {
    if (ec || c->state == Conn::State::kClosed) return;
    Clock::duration quiet = Clock::now() - c->last_activity;
    if (quiet < options_.idle_timeout) return arm_idle(c, options_.idle_timeout - quiet);
    if (c->state == Conn::State::kClosing) return close(c, "closed: peer does not read", LogLevel::kWarning);
    add(counters_.idle_timeouts);
    disconnect(c, ErrorCode::kIdle, "idle for " + std::to_string(options_.idle_timeout.count()) + " ms");
  });
}

void PageServer::Impl::send_small(const std::shared_ptr<Conn>& c, FrameType type, uint16_t code, uint64_t id,
                                  std::vector<std::byte> payload, bool urgent) {
  auto out = std::make_unique<Outgoing>();
  out->small = std::move(payload);
  out->payload = out->small;
  encode_header(out->header, type, 0, code, id, out->payload);
  queue(c, std::move(out), urgent);
}

void PageServer::Impl::queue(const std::shared_ptr<Conn>& c, std::unique_ptr<Outgoing> out, bool urgent) {
  (urgent ? c->urgent_out : c->normal_out).push_back(std::move(out));
  kick_writer(c);
}

void PageServer::Impl::kick_writer(const std::shared_ptr<Conn>& c) {
  if (c->write_active || c->state == Conn::State::kClosed) return;
  if (c->urgent_out.empty() && c->normal_out.empty()) {
    if (c->state == Conn::State::kClosing) close(c, "");
    return;
  }
  std::vector<asio::const_buffer> buffers;
  size_t bytes = 0;
  for (auto* q : {&c->urgent_out, &c->normal_out}) {
    while (!q->empty() && (bytes == 0 || bytes + q->front()->payload.size() <= kWriteBatchBytes)) {
      Outgoing* o = q->front().get();
      buffers.emplace_back(o->header, kHeaderSize);
      if (!o->payload.empty()) buffers.emplace_back(o->payload.data(), o->payload.size());
      bytes += kHeaderSize + o->payload.size();
      c->writing.push_back(std::move(q->front()));
      q->pop_front();
    }
  }
  c->write_active = true;
  asio::async_write(c->socket, buffers, [this, c](boost::system::error_code ec, size_t) {
    c->write_active = false;
    if (c->state == Conn::State::kClosed) return c->writing.clear();
    if (ec) return close(c, "write failed: " + ec.message());
    c->last_activity = Clock::now();
    for (auto& o : c->writing) {
      c->in_flight_bytes -= o->in_flight;
      if (o->answers) answered(*o->answers);
      if (o->job) add(o->zero ? counters_.zero_bytes : counters_.bytes_sent, o->job->length);
    }
    c->writing.clear();
    kick_writer(c);
  });
}

void PageServer::Impl::disconnect(const std::shared_ptr<Conn>& c, ErrorCode code, const std::string& why) {
  if (c->state == Conn::State::kClosed || c->state == Conn::State::kClosing) return;
  if (code != ErrorCode::kIdle && code != ErrorCode::kAuthFailed) add(counters_.protocol_errors);
  log(LogLevel::kWarning, c->peer + ": " + (code == ErrorCode::kIdle ? "" : "protocol error: ") + error_code_name(code) + ": " + why +
      "; disconnecting");
  c->state = Conn::State::kClosing;
  // Nothing more for this peer but the error: drop queued responses.
  c->urgent_out.clear();
  c->normal_out.clear();
  std::string text = why.substr(0, kMaxErrorMessage);
  auto out = std::make_unique<Outgoing>();
  out->small.assign(reinterpret_cast<const std::byte*>(text.data()),
                    reinterpret_cast<const std::byte*>(text.data()) + text.size());
  out->payload = out->small;
  encode_header(out->header, FrameType::kError, 0, uint16_t(code), 0, out->payload);
  c->urgent_out.push_back(std::move(out));
  // A peer that does not read its socket cannot hold the connection open:
  // the idle timer closes it.
  c->last_activity = Clock::now();
  kick_writer(c);
  if (c->state == Conn::State::kClosing) {
    boost::system::error_code ignored;
    c->socket.shutdown(asio::socket_base::shutdown_receive, ignored);
  }
}

void PageServer::Impl::close(const std::shared_ptr<Conn>& c, const std::string& why, LogLevel level) {
  if (c->state == Conn::State::kClosed) return;
  c->state = Conn::State::kClosed;
  boost::system::error_code ignored;
  c->socket.shutdown(asio::socket_base::shutdown_both, ignored);
  c->socket.close(ignored);
  c->idle_timer.cancel();
  c->urgent_out.clear();
  c->normal_out.clear();
  if (!c->write_active) c->writing.clear();  // (else the write handler still refers to them)
  if (conns_.erase(c)) add(counters_.open, uint64_t(-1));
  if (!why.empty()) log(level, c->peer + ": " + why);
}

// ---- Backend ----------------------------------------------------------------

void PageServer::Impl::drive() {
  for (;;) {
    bool submitted = submit_some();
    size_t reaped = reap_some();
    if (!submitted && reaped == 0) break;
  }
  maybe_finish_stop();
}

bool PageServer::Impl::submit_some() {
  batch_.clear();
  while (in_backend_.size() + batch_.size() < depth_ && (!urgent_jobs_.empty() || !normal_jobs_.empty())) {
    auto& q = urgent_jobs_.empty() ? normal_jobs_ : urgent_jobs_;
    std::unique_ptr<Job> job = std::move(q.front());
    q.pop_front();
    if (job->conn->state != Conn::State::kReady) continue;  // its peer is gone
    ReadRequest r;
    r.offset = job->read_offset + job->got;
    r.length = job->read_length - job->got;
    r.dest = job->buf.get() + job->got;
    r.tag = reinterpret_cast<uint64_t>(job.get());
    r.urgent = job->urgent;
    batch_.push_back(r);
    Job* key = job.get();
    in_backend_.emplace(key, std::move(job));
  }
  if (batch_.empty()) return false;
  backend_->submit(batch_);
  return true;
}

size_t PageServer::Impl::reap_some() {
  ReadCompletion done[64];
  size_t total = 0;
  for (;;) {
    size_t n = backend_->reap(done);
    for (size_t i = 0; i < n; ++i) complete(reinterpret_cast<Job*>(done[i].tag), done[i]);
    total += n;
    if (n < std::size(done)) return total;
  }
}

void PageServer::Impl::complete(Job* key, const ReadCompletion& c) {
  auto it = in_backend_.find(key);
  if (it == in_backend_.end()) return;  // a backend bug; never trust it with memory
  std::unique_ptr<Job> job = std::move(it->second);
  in_backend_.erase(it);
  if (job->conn->state != Conn::State::kReady) return;
  if (c.result < 0) {
    int err = static_cast<int>(-c.result);
    bool transient = err == EAGAIN || err == EINTR || err == EBUSY;
    if (transient && ++job->attempts < kReadAttempts) {
      urgent_jobs_.push_front(std::move(job));
      return;
    }
    return fail_job(std::move(job), err);
  }
  uint32_t result = static_cast<uint32_t>(std::min<uint64_t>(uint64_t(c.result), job->read_length - job->got));
  uint32_t needed = static_cast<uint32_t>(job->offset + job->length - job->read_offset);
  if (c.zero && job->got == 0 && result >= needed) return finish_job(std::move(job), true);
  if (c.zero)
    std::memset(job->buf.get() + job->got, 0, result);
  else if (c.data)
    std::memcpy(job->buf.get() + job->got, c.data, result);
  job->got += result;
  if (job->got < needed) {  // short read: go on from there, a few times
    if (result == 0 && ++job->attempts >= kReadAttempts) return fail_job(std::move(job), EIO);
    if (job->got % alignment_ != 0) job->got = 0;
    urgent_jobs_.push_front(std::move(job));
    return;
  }
  finish_job(std::move(job), false);
}

void PageServer::Impl::finish_job(std::unique_ptr<Job> job, bool zero) {
  std::shared_ptr<Conn> c = job->conn;
  auto out = std::make_unique<Outgoing>();
  out->in_flight = job->asked;
  out->answers = job->received;
  out->zero = zero;
  bool urgent = job->urgent;
  if (zero) {
    out->small.resize(kZeroSize);
    for (int i = 0; i < 4; ++i) out->small[i] = std::byte(job->length >> (8 * i));
    out->payload = out->small;
    encode_header(out->header, FrameType::kZero, 0, 0, job->id, out->payload);
  } else {
    out->payload = std::span<const std::byte>(job->buf.get() + (job->offset - job->read_offset), job->length);
    encode_header(out->header, FrameType::kData, 0, 0, job->id, out->payload);
  }
  job->conn.reset();  // (the connection holds the frame: no cycle)
  out->job = std::move(job);
  queue(c, std::move(out), urgent);
}

void PageServer::Impl::fail_job(std::unique_ptr<Job> job, int err) {
  add(counters_.read_errors);
  std::shared_ptr<Conn> c = job->conn;
  std::string text = "read of " + std::to_string(job->length) + " bytes at offset " + std::to_string(job->offset) +
                     " failed: " + std::strerror(err);
  log(LogLevel::kError, c->peer + ": " + text);
  auto out = std::make_unique<Outgoing>();
  out->in_flight = job->asked;
  out->answers = job->received;
  out->small.assign(reinterpret_cast<const std::byte*>(text.data()),
                    reinterpret_cast<const std::byte*>(text.data()) + text.size());
  out->payload = out->small;
  encode_header(out->header, FrameType::kError, 0, uint16_t(ErrorCode::kIoError), job->id, out->payload);
  queue(c, std::move(out), job->urgent);
}

void PageServer::Impl::arm_completion_wait() {
  completion_->async_wait(asio::posix::descriptor_base::wait_read, [this](boost::system::error_code ec) {
    if (ec) return;
    // Edges first, then the reaping: an edge from a completion that comes
    // meanwhile stays pending in our set and wakes us again.
    take_completion_edges();
    arm_completion_wait();
    drive();
  });
}

void PageServer::Impl::take_completion_edges() {
  // The set holds one descriptor: one event empties its ready list.
  epoll_event ev;
  while (::epoll_wait(completion_->native_handle(), &ev, 1, 0) < 0 && errno == EINTR) {
  }
}

// ---- PageServer -------------------------------------------------------------

PageServer::PageServer(std::shared_ptr<Backend> source, PageServerOptions options)
    : impl_(std::make_unique<Impl>(std::move(source), std::move(options))) {}
PageServer::~PageServer() { stop(); }
std::vector<std::string> PageServer::endpoints() const { return impl_->endpoints; }
void PageServer::stop() { impl_->stop(); }
PageServerStats PageServer::stats() const { return impl_->stats(); }

}  // namespace faultline

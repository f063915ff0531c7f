// SPDX-License-Identifier: Apache-2.0
// PageServer and RemoteBackend together on loopback: contents byte for byte
// through the runtime, many clients, authentication, every class of
// malformed frame, limits, and a server that dies mid-transfer.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <thread>

#include "faultline/faultline.h"
#include "faultline/page_server.h"
#include "faultline/remote_backend.h"
#include "faultline/snapshot.h"
#include "faultline/zstd_snapshot_backend.h"
#include "remote_protocol.h"
#include "snapshot_test_util.h"
#include "read_all.h"
#include "test_backends.h"
#include "test_util.h"

using namespace faultline;
using namespace faultline::test;
using namespace std::chrono_literals;

namespace {

constexpr size_t kKiB = 1024, kMiB = 1024 * 1024;

// Collects the server's log lines for checks, thread-safely.
struct LogLines {
  std::mutex mu;
  std::vector<std::string> lines;
  LogSink callback() {
    return [this](LogLevel, std::string_view l) {
      std::lock_guard lock(mu);
      lines.emplace_back(l);
    };
  }
  bool contains(const std::string& needle) {
    std::lock_guard lock(mu);
    for (const auto& l : lines)
      if (l.find(needle) != std::string::npos) return true;
    return false;
  }
  std::string all() {
    std::lock_guard lock(mu);
    std::string s;
    for (const auto& l : lines) s += l + "\n";
    return s;
  }
};

// Polls `cond` for up to `limit`.
template <class F>
bool eventually(F cond, std::chrono::milliseconds limit = 5000ms) {
  auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (cond()) return true;
    std::this_thread::sleep_for(1ms);
  }
  return cond();
}

std::shared_ptr<Backend> memory(const std::vector<std::byte>& data) {
  return std::make_shared<MemoryBackend>(data);
}

}  // namespace

TEST_CASE("a region over a page server holds the served bytes, TCP and unix socket", "[remote]") {
  auto data = pattern(3 * kMiB + 1234, 7);
  TempFile dir_anchor(size_t{1});
  std::string unix_path = dir_anchor.path() + ".sock";
  PageServerOptions so;
  so.listen = {"127.0.0.1:0", "unix:" + unix_path};
  PageServer server(memory(data), so);
  auto eps = server.endpoints();
  REQUIRE(eps.size() == 2);
  CHECK(eps[0].rfind("127.0.0.1:", 0) == 0);
  CHECK(eps[0] != "127.0.0.1:0");
  CHECK(eps[1] == "unix:" + unix_path);
  Runtime rt;
  for (const std::string& ep : eps) {
    RemoteOptions ro;
    ro.address = ep;
    auto backend = connect_remote(ro);
    CHECK(backend->size() == data.size());
    CHECK(backend->name() == "remote " + ep);
    for (uint32_t fill : {4096u, 65536u, 2u * 1024 * 1024}) {
      INFO(ep << " fill " << fill);
      RegionOptions o;
      o.fill_size = fill;
      Region r = rt.map(backend, o);
      REQUIRE(first_mismatch(r.data(), data.data(), data.size()) == -1);
      CHECK(r.stats().errors == 0);
    }
  }
  CHECK(server.stats().connections_accepted == 2);
  CHECK(server.stats().protocol_errors == 0);
  CHECK(server.stats().bytes_sent >= 2 * data.size());
}

namespace {

using namespace faultline::remote;

// A hand-driven client for the hostile-peer tests: sends whatever it is
// told and reads frames as they come.
class RawClient {
 public:
  struct Frame {
    FrameHeader header;
    std::vector<std::byte> payload;
    std::string text() const { return std::string(reinterpret_cast<const char*>(payload.data()), payload.size()); }
  };

  explicit RawClient(const std::string& address) {
    SocketAddress a = resolve_address(address).at(0);
    fd_ = ::socket(a.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    REQUIRE(::connect(fd_, reinterpret_cast<const sockaddr*>(&a.storage), a.length) == 0);
  }
  ~RawClient() { ::close(fd_); }

  void send(std::span<const std::byte> bytes) {
    (void)!::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
  }
  void send_frame(FrameType type, uint8_t flags, uint16_t code, uint64_t id, std::span<const std::byte> payload) {
    std::vector<std::byte> b;
    append_frame(b, type, flags, code, id, payload);
    send(b);
  }
  void send_read(uint64_t id, uint64_t offset, uint32_t length, uint8_t flags = 0) {
    send_frame(FrameType::kRead, flags, 0, id, encode_read({offset, length}));
  }
  void shutdown_write() { ::shutdown(fd_, SHUT_WR); }

  // The next frame, or nullopt at end of stream. Fails the test on a
  // malformed frame or when nothing comes within `timeout`.
  std::optional<Frame> next(std::chrono::milliseconds timeout = 5000ms) {
    auto until = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      ParseResult f = parse_frame(buf_, Receiver::kClient, kMaxRequestLimit);
      REQUIRE(f.status != ParseResult::kError);
      if (f.status == ParseResult::kFrame) {
        Frame fr{f.header, std::vector<std::byte>(f.payload.begin(), f.payload.end())};
        buf_.erase(buf_.begin(), buf_.begin() + static_cast<long>(f.consumed));
        return fr;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
      REQUIRE(left.count() > 0);
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      std::byte tmp[65536];
      ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
      if (n <= 0) {
        REQUIRE(buf_.empty());
        return std::nullopt;
      }
      buf_.insert(buf_.end(), tmp, tmp + n);
    }
  }

  // Reads HELLO; answers it with `secret` (and checks the server's proof).
  void handshake(const std::string& secret = "") {
    read_hello();
    ClientHello ch;
    ch.nonce = random_nonce();
    if (hello.capabilities & kCapAuth) ch.capabilities = kCapAuth;
    if (!secret.empty()) ch.mac = handshake_mac(secret, "client", hello.nonce, ch.nonce);
    send_frame(FrameType::kClientHello, 0, 0, 0, encode_client_hello(ch));
    auto w = next();
    REQUIRE(w);
    REQUIRE(w->header.type == FrameType::kWelcome);
    if (!secret.empty()) {
      auto expected = handshake_mac(secret, "server", ch.nonce, hello.nonce);
      REQUIRE(std::memcmp(expected.data(), w->payload.data(), kMacSize) == 0);
    }
  }
  void read_hello() {
    auto h = next();
    REQUIRE(h);
    REQUIRE(h->header.type == FrameType::kHello);
    REQUIRE(decode_hello(h->payload, &hello).empty());
  }
  // Expects ERROR id 0 with `code`, then the end of the stream.
  std::string expect_disconnect(ErrorCode code) {
    auto e = next();
    REQUIRE(e);
    CHECK(e->header.type == FrameType::kError);
    CHECK(e->header.id == 0);
    CHECK(e->header.code == uint16_t(code));
    CHECK_FALSE(next());
    return e->text();
  }

  Hello hello;

 private:
  int fd_ = -1;
  std::vector<std::byte> buf_;
};

// Catches SIGBUS on the calling thread while `touch` runs.
thread_local sigjmp_buf t_jump;
void on_sigbus(int) { siglongjmp(t_jump, 1); }
bool touch_gives_sigbus(volatile const std::byte* p, std::byte* out = nullptr) {
  struct sigaction sa {}, old{};
  sa.sa_handler = on_sigbus;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, &old);
  bool bus = false;
  if (sigsetjmp(t_jump, 1) == 0) {
    std::byte b = *p;
    if (out) *out = b;
  } else {
    bus = true;
  }
  sigaction(SIGBUS, &old, nullptr);
  return bus;
}

}  // namespace

TEST_CASE("a page server serves a FileBackend (io_uring completions) with offsets and short tails", "[remote]") {
  auto data = pattern(5 * kMiB + 777, 11);
  TempFile file(data);
  auto source = std::make_shared<FileBackend>(file.path());
  PageServer server(source, {});
  RemoteOptions ro;
  ro.address = server.endpoints().at(0);
  auto backend = connect_remote(ro);
  REQUIRE(backend->size() == data.size());
  Runtime rt;
  for (uint64_t offset : {uint64_t{0}, uint64_t{12288}, uint64_t{12345}}) {
    RegionOptions o;
    o.offset = offset;
    o.fill_size = 16384;
    Region r = rt.map(backend, o);
    INFO("offset " << offset);
    REQUIRE(r.size() == data.size() - offset);
    REQUIRE(first_mismatch(r.data(), data.data() + offset, r.size()) == -1);
    for (size_t i = r.size(); i % 4096 != 0; ++i) REQUIRE(r.data()[i] == std::byte{0});
  }
  // Random single pages, demand-only.
  RegionOptions o;
  o.fill_size = 4096;
  o.readahead = false;
  Region r = rt.map(backend, o);
  uint64_t x = 12345;
  for (int i = 0; i < 300; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    size_t at = (x >> 20) % data.size();
    REQUIRE(r.data()[at] == data[at]);
  }
  CHECK(r.stats().errors == 0);
}

TEST_CASE("several clients at once each get their bytes", "[remote]") {
  auto data = pattern(8 * kMiB, 23);
  PageServer server(memory(data), {});
  std::string address = server.endpoints().at(0);
  constexpr int kClients = 4;
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kClients; ++t) {
    threads.emplace_back([&, t] {
      RemoteOptions ro;
      ro.address = address;
      auto backend = connect_remote(ro);
      Runtime rt;
      RegionOptions o;
      o.fill_size = t % 2 ? 4096 : 65536;
      o.readahead = t < 2;
      Region r = rt.map(backend, o);
      uint64_t x = 99 + t;
      for (int i = 0; i < 2000; ++i) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        size_t at = (x >> 17) % data.size();
        if (r.data()[at] != data[at]) bad++;
      }
      if (t == 0 && first_mismatch(r.data(), data.data(), data.size()) != -1) bad++;
      if (r.stats().errors != 0) bad++;
    });
  }
  for (auto& t : threads) t.join();
  CHECK(bad == 0);
  CHECK(server.stats().connections_accepted == kClients);
  CHECK(server.stats().protocol_errors == 0);
  CHECK(eventually([&] { return server.stats().connections_open == 0; }));
}

TEST_CASE("with a secret, only clients that know it get anything", "[remote][auth]") {
  auto data = pattern(1 * kMiB, 5);
  LogLines log;
  PageServerOptions so;
  so.secret = "correct horse battery staple";
  so.log = log.callback();
  PageServer server(memory(data), so);
  std::string address = server.endpoints().at(0);
  RemoteOptions ro;
  ro.address = address;

  ro.secret = so.secret;
  auto backend = connect_remote(ro);
  Runtime rt;
  Region r = rt.map(backend);
  REQUIRE(first_mismatch(r.data(), data.data(), data.size()) == -1);
  CHECK(log.contains("(authenticated)"));

  std::string wrong_secret = "wrong";  // (a literal here trips GCC 12's -Wrestrict)
  ro.secret = wrong_secret;
  try {
    connect_remote(ro);
    FAIL("connected with a wrong secret");
  } catch (const Error& e) {
    CHECK_THAT(e.what(), Catch::Contains(address) && Catch::Contains("authentication failed"));
  }
  CHECK(server.stats().auth_failures == 1);
  CHECK(eventually([&] { return log.contains("wrong secret"); }));

  ro.secret = "";
  CHECK_THROWS_WITH(connect_remote(ro), Catch::Contains("requires a secret"));

  // A client that skips the handshake and asks anyway gets only an error.
  RawClient raw(address);
  raw.read_hello();
  CHECK(raw.hello.capabilities & kCapAuth);
  raw.send_read(1, 0, 4096);
  CHECK_THAT(raw.expect_disconnect(ErrorCode::kBadFrame), Catch::Contains("before the handshake"));
  // One with a made-up proof is refused.
  RawClient liar(address);
  liar.read_hello();
  ClientHello ch;
  ch.capabilities = kCapAuth;
  ch.mac.fill(0x5a);
  liar.send_frame(FrameType::kClientHello, 0, 0, 0, encode_client_hello(ch));
  liar.expect_disconnect(ErrorCode::kAuthFailed);
  CHECK(server.stats().auth_failures == 2);

  // And a client with a secret does not trust a server without one.
  PageServer open_server(memory(data), {});
  ro.address = open_server.endpoints().at(0);
  ro.secret = wrong_secret;
  CHECK_THROWS_WITH(connect_remote(ro), Catch::Contains("does not authenticate"));
}

TEST_CASE("each class of malformed frame is logged and disconnected; other clients go on", "[remote][hostile]") {
  auto data = pattern(4 * kMiB, 31);
  LogLines log;
  PageServerOptions so;
  so.log = log.callback();
  PageServer server(memory(data), so);
  std::string address = server.endpoints().at(0);

  RemoteOptions ro;
  ro.address = address;
  auto backend = connect_remote(ro);
  Runtime rt;
  RegionOptions o;
  o.fill_size = 4096;
  o.readahead = false;
  Region good = rt.map(backend, o);
  size_t next_page = 0;
  auto good_client_works = [&] {
    size_t at = (next_page++ * 37 % 1024) * 4096 + 100;
    return good.data()[at] == data[at] && good.data()[at + 3000] == data[at + 3000];
  };

  struct Case {
    const char* name;
    bool handshake;
    std::function<void(RawClient&)> send;
    ErrorCode code;  // kNone: closed without an ERROR frame
    const char* logged;
  };
  std::vector<std::byte> read_frame;
  append_frame(read_frame, FrameType::kRead, 0, 0, 7, encode_read({0, 4096}));
  std::vector<Case> cases = {
      {"bad magic", false,
       [](RawClient& c) {
         ClientHello ch;
         ch.magic = 0xdeadbeef;
         c.send_frame(FrameType::kClientHello, 0, 0, 0, encode_client_hello(ch));
       },
       ErrorCode::kBadMagic, "magic 0xdeadbeef"},
      {"bad version", false,
       [](RawClient& c) {
         ClientHello ch;
         ch.version = 2;
         c.send_frame(FrameType::kClientHello, 0, 0, 0, encode_client_hello(ch));
       },
       ErrorCode::kBadVersion, "version 2"},
      {"oversize length", true,
       [](RawClient& c) {
         std::byte h[kHeaderSize];
         encode_header(h, FrameType::kError, 0, 1, 0, {});
         uint32_t huge = 0x7fffffff;
         std::memcpy(h + 4, &huge, 4);  // header only: refused before any payload
         c.send(h);
       },
       ErrorCode::kTooLarge, "over the limit"},
      {"wrong fixed length", true,
       [](RawClient& c) { c.send_frame(FrameType::kRead, 0, 0, 1, std::vector<std::byte>(15)); },
       ErrorCode::kBadFrame, "expected 16"},
      {"offset past end", true, [&](RawClient& c) { c.send_read(3, data.size(), 4096); }, ErrorCode::kOutOfRange,
       "past the end"},
      {"offset near 2^64", true, [&](RawClient& c) { c.send_read(3, ~uint64_t{0} - 100, 4096); },
       ErrorCode::kOutOfRange, "past the end"},
      {"bad checksum", true,
       [&](RawClient& c) {
         auto f = read_frame;
         f[kHeaderSize + 1] ^= std::byte{1};
         c.send(f);
       },
       ErrorCode::kBadChecksum, "checksum"},
      {"unknown type", true,
       [&](RawClient& c) {
         auto f = read_frame;
         f[0] = std::byte{99};
         c.send(f);
       },
       ErrorCode::kUnknownType, "unknown frame type 99"},
      {"frame sent the wrong way", true,
       [](RawClient& c) { c.send_frame(FrameType::kData, 0, 0, 1, std::vector<std::byte>(10)); },
       ErrorCode::kBadFrame, "wrong way"},
      {"unknown flags", true,
       [&](RawClient& c) { c.send_frame(FrameType::kRead, 0x80, 0, 1, encode_read({0, 4096})); },
       ErrorCode::kBadFrame, "unknown flags"},
      {"second handshake", true,
       [](RawClient& c) { c.send_frame(FrameType::kClientHello, 0, 0, 0, encode_client_hello({})); },
       ErrorCode::kBadFrame, "after the handshake"},
      {"truncated frame", true,
       [&](RawClient& c) {
         c.send(std::span(read_frame).first(kHeaderSize + 5));
         c.shutdown_write();
       },
       ErrorCode::kNone, "truncated frame"},
  };
  uint64_t errors = 0;
  for (const Case& k : cases) {
    INFO(k.name);
    {
      RawClient raw(address);
      if (k.handshake)
        raw.handshake();
      else
        raw.read_hello();
      k.send(raw);
      if (k.code == ErrorCode::kNone)
        CHECK_FALSE(raw.next());
      else
        CHECK_THAT(raw.expect_disconnect(k.code), Catch::Contains(k.logged));
    }
    CHECK(eventually([&] { return log.contains(k.logged); }));
    CHECK(server.stats().protocol_errors == ++errors);
    CHECK(good_client_works());
  }
  CHECK(eventually([&] { return server.stats().connections_open == 1; }));
  CHECK(good.stats().errors == 0);
}

TEST_CASE("server limits: connections, request size, bytes in flight, idle timeout", "[remote][limits_remote]") {
  auto data = pattern(8 * kMiB, 3);
  LogLines log;
  PageServerOptions so;
  so.max_connections = 2;
  so.max_request_bytes = 64 * 1024;
  so.max_in_flight_bytes = 128 * 1024;
  so.idle_timeout = 300ms;
  so.log = log.callback();
  PageServer server(memory(data), so);
  std::string address = server.endpoints().at(0);

  SECTION("connections") {
    RawClient a(address), b(address);
    a.handshake();
    b.handshake();
    RemoteOptions ro;
    ro.address = address;
    CHECK_THROWS_WITH(connect_remote(ro), Catch::Contains("server busy") && Catch::Contains("max_connections (2)"));
    CHECK(server.stats().connections_rejected == 1);
    CHECK(log.contains("rejected"));
  }
  SECTION("request size") {
    RawClient c(address);
    c.handshake();
    CHECK(c.hello.max_request_bytes == 64 * 1024);
    c.send_read(1, 0, 64 * 1024);  // at the limit: served
    auto d = c.next();
    REQUIRE(d);
    CHECK(d->header.type == FrameType::kData);
    CHECK(d->payload.size() == 64 * 1024);
    CHECK(std::memcmp(d->payload.data(), data.data(), 64 * 1024) == 0);
    c.send_read(2, 0, 64 * 1024 + 1);
    CHECK_THAT(c.expect_disconnect(ErrorCode::kTooLarge), Catch::Contains("over max_request_bytes 65536"));
  }
  SECTION("bytes in flight") {
    RawClient c(address);
    c.handshake();
    // Three requests in one segment: the third goes over before any is answered.
    std::vector<std::byte> frames;
    for (uint64_t id = 1; id <= 3; ++id)
      append_frame(frames, FrameType::kRead, 0, 0, id, encode_read({id * 65536, 65536}));
    c.send(frames);
    int data_frames = 0;
    uint16_t error_code = 0;
    for (;;) {
      auto f = c.next();
      REQUIRE(f);
      if (f->header.type != FrameType::kData) {
        CHECK(f->header.type == FrameType::kError);
        error_code = f->header.code;
        break;
      }
      data_frames++;
    }
    CHECK(data_frames <= 2);
    CHECK(error_code == uint16_t(ErrorCode::kInFlightLimit));
    CHECK_FALSE(c.next());
    CHECK(log.contains("over max_in_flight_bytes"));
  }
  SECTION("idle timeout, and a remote backend reconnects after it") {
    RemoteOptions ro;
    ro.address = address;
    auto backend = connect_remote(ro);
    Runtime rt;
    RegionOptions o;
    o.fill_size = 4096;
    o.readahead = false;
    Region r = rt.map(backend, o);
    CHECK(r.data()[5] == data[5]);
    RawClient c(address);
    c.handshake();
    auto start = std::chrono::steady_clock::now();
    c.expect_disconnect(ErrorCode::kIdle);
    CHECK(std::chrono::steady_clock::now() - start >= 250ms);
    CHECK(eventually([&] { return server.stats().idle_timeouts == 2; }));
    CHECK(r.data()[8 * 4096 + 5] == data[8 * 4096 + 5]);  // over a new connection
    CHECK(server.stats().connections_accepted == 3);
    CHECK(r.stats().errors == 0);
  }
}

TEST_CASE("bad options and addresses are refused with the field named", "[remote]") {
  auto source = memory(pattern(4096));
  PageServerOptions so;
  so.listen = {"nonsense"};
  CHECK_THROWS_WITH(PageServer(source, so), Catch::Contains("nonsense"));
  so.listen = {"127.0.0.1:99999"};
  CHECK_THROWS_WITH(PageServer(source, so), Catch::Contains("bad port"));
  so.listen = {"127.0.0.1:0"};
  so.max_request_bytes = 100;
  CHECK_THROWS_WITH(PageServer(source, so), Catch::Contains("max_request_bytes"));
  so = {};
  so.max_connections = 0;
  CHECK_THROWS_WITH(PageServer(source, so), Catch::Contains("max_connections"));
  // An address in use.
  PageServer first(source, {});
  so = {};
  so.listen = {first.endpoints().at(0)};
  CHECK_THROWS_WITH(PageServer(source, so), Catch::Contains(first.endpoints().at(0)) && Catch::Contains("in use"));

  RemoteOptions ro;
  ro.address = "unix:/nonexistent/dir/sock";
  CHECK_THROWS_WITH(connect_remote(ro), Catch::Contains("unix:/nonexistent/dir/sock"));
  ro.address = first.endpoints().at(0);
  ro.queue_depth = 0;
  CHECK_THROWS_WITH(connect_remote(ro), Catch::Contains("queue_depth"));
  // Nothing listening.
  first.stop();
  ro.queue_depth = 64;
  CHECK_THROWS_WITH(connect_remote(ro), Catch::Contains("refused"));
}

namespace {

// A page server written by hand that can be told to misbehave: it does the
// handshake honestly, then answers READs as `mode` says. Serves pattern(size, 77).
class FakeServer {
 public:
  enum class Mode { kHonest, kBadChecksum, kWrongLength, kUnknownId, kSilent, kGarbage, kTooLong };
  FakeServer(const std::string& path, Mode mode, uint64_t size) : path_(path), mode_(mode), size_(size) {
    data_ = pattern(size, 77);
    SocketAddress a = resolve_address("unix:" + path).at(0);
    ::unlink(path.c_str());
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(::bind(fd_, reinterpret_cast<const sockaddr*>(&a.storage), a.length) == 0);
    REQUIRE(::listen(fd_, 16) == 0);
    thread_ = std::thread([this] { run(); });
  }
  ~FakeServer() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
    ::unlink(path_.c_str());
  }
  int connections() const { return connections_; }
  const std::vector<std::byte>& data() const { return data_; }

 private:
  void run() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      connections_++;
      serve(c);
      ::close(c);
    }
  }
  // One connection at a time; returns when the client goes or on stop.
  void serve(int c) {
    Hello h;
    h.capabilities = kCapZero;
    h.max_request_bytes = 1 << 20;
    h.object_size = size_;
    h.max_in_flight_bytes = 16 << 20;
    h.idle_timeout_ms = 60000;
    std::vector<std::byte> out;
    append_frame(out, FrameType::kHello, 0, 0, 0, encode_hello(h));
    std::vector<std::byte> in;
    bool ready = false;
    while (!stop_) {
      if (!out.empty()) {
        (void)!::send(c, out.data(), out.size(), MSG_NOSIGNAL);
        out.clear();
      }
      pollfd p{c, POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) continue;
      std::byte tmp[4096];
      ssize_t n = ::recv(c, tmp, sizeof tmp, 0);
      if (n <= 0) return;
      in.insert(in.end(), tmp, tmp + n);
      for (;;) {
        ParseResult f = parse_frame(in, Receiver::kServer, 0);
        if (f.status == ParseResult::kError) return;
        if (f.status == ParseResult::kNeedMore) break;
        if (!ready) {
          append_frame(out, FrameType::kWelcome, 0, 0, 0, std::vector<std::byte>(kMacSize));
          ready = true;
        } else if (f.header.type == FrameType::kRead) {
          ReadRequestWire r;
          // (No Catch2 assertions on this thread: Catch2 is not thread-safe.
          // A READ the client should never send shows up as a timeout.)
          if (!decode_read(f.payload, &r).empty() || r.offset >= size_) return;
          answer(out, f.header.id, r);
        }
        in.erase(in.begin(), in.begin() + static_cast<long>(f.consumed));
      }
    }
  }
  void answer(std::vector<std::byte>& out, uint64_t id, const ReadRequestWire& r) {
    uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(r.length, size_ - r.offset));
    std::span<const std::byte> bytes(data_.data() + r.offset, n);
    switch (mode_) {
      case Mode::kHonest:
        append_frame(out, FrameType::kData, 0, 0, id, bytes);
        break;
      case Mode::kBadChecksum: {
        size_t at = out.size();
        append_frame(out, FrameType::kData, 0, 0, id, bytes);
        out[at + kHeaderSize + n / 2] ^= std::byte{0x40};
        break;
      }
      case Mode::kWrongLength:
        append_frame(out, FrameType::kData, 0, 0, id, bytes.first(n - 1));
        break;
      case Mode::kTooLong: {
        std::vector<std::byte> more(bytes.begin(), bytes.end());
        more.resize(n + 4096);
        append_frame(out, FrameType::kData, 0, 0, id, more);
        break;
      }
      case Mode::kUnknownId:
        append_frame(out, FrameType::kData, 0, 0, id + 1000, bytes);
        break;
      case Mode::kSilent:
        break;
      case Mode::kGarbage:
        for (uint32_t i = 0; i < 100; ++i) out.push_back(pattern_byte(i + id, 5));
        break;
    }
  }

  std::string path_;
  Mode mode_;
  uint64_t size_;
  std::vector<std::byte> data_;
  int fd_ = -1;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  std::thread thread_;
};

// Submits one read to `b` and waits (as the runtime does: poll on
// completion_fd, then reap) for its completion.
ReadCompletion read_through(Backend& b, uint64_t offset, uint32_t length, std::byte* dest,
                            std::chrono::milliseconds limit = 10000ms) {
  ReadRequest r;
  r.offset = offset;
  r.length = length;
  r.dest = dest;
  r.tag = 42;
  r.urgent = true;
  b.submit({&r, 1});
  auto until = std::chrono::steady_clock::now() + limit;
  ReadCompletion out[4];
  while (std::chrono::steady_clock::now() < until) {
    size_t n = b.reap(out);
    if (n > 0) {
      REQUIRE(n == 1);
      REQUIRE(out[0].tag == 42);
      return out[0];
    }
    pollfd p{b.completion_fd(), POLLIN, 0};
    ::poll(&p, 1, 10);
  }
  FAIL("no completion within " << limit.count() << " ms: the backend hangs");
  return {};
}

}  // namespace

TEST_CASE("a hostile server can only fail the reads it was asked for, within the deadline", "[remote][hostile]") {
  using Mode = FakeServer::Mode;
  auto mode = GENERATE(Mode::kHonest, Mode::kBadChecksum, Mode::kWrongLength, Mode::kTooLong, Mode::kUnknownId,
                       Mode::kSilent, Mode::kGarbage);
  TempFile anchor(size_t{1});
  std::string path = anchor.path() + ".sock";
  FakeServer server(path, mode, 1 * kMiB);
  RemoteOptions ro;
  ro.address = "unix:" + path;
  // Long enough that connecting and an honest answer fit in it on a loaded
  // machine (300 ms did not always: the handshake shares the deadline).
  ro.deadline = 1000ms;
  ro.busy_poll = 0us;
  auto backend = connect_remote(ro);
  REQUIRE(backend->size() == 1 * kMiB);
  // 64 KiB: long enough to be received straight into the buffer.
  std::vector<std::byte> dest(65536, std::byte{0xee});
  auto start = std::chrono::steady_clock::now();
  ReadCompletion c = read_through(*backend, 4096, 65536, dest.data());
  auto took = std::chrono::steady_clock::now() - start;
  INFO("mode " << int(mode));
  if (mode == Mode::kHonest) {
    CHECK(c.result == 65536);
    CHECK(std::memcmp(dest.data(), server.data().data() + 4096, 65536) == 0);
    CHECK(took < 1000ms);
  } else {
    CHECK(c.result == -ETIMEDOUT);
    CHECK(took >= 990ms);
    CHECK(took < 4000ms);
    // It kept trying (reconnecting) until the deadline, not just once...
    if (mode != Mode::kSilent) CHECK(server.connections() >= 2);
  }
  // ...and it is still usable: nothing was corrupted on the client side.
  c = read_through(*backend, 1 * kMiB - 100, 4096, dest.data());
  if (mode == Mode::kHonest) {
    CHECK(c.result == 100);  // short at the end of the object
    CHECK(std::memcmp(dest.data(), server.data().data() + 1 * kMiB - 100, 100) == 0);
  } else {
    CHECK(c.result == -ETIMEDOUT);
  }
}

TEST_CASE("the remote backend completes every read, merged or not, out of order", "[remote]") {
  auto data = pattern(2 * kMiB, 13);
  PageServer server(memory(data), {});
  RemoteOptions ro;
  ro.address = server.endpoints().at(0);
  auto backend = connect_remote(ro);
  // 64 reads: runs of adjacent ones (merged into one request), scattered
  // ones, demand and read-ahead mixed; each lands in its own buffer.
  std::vector<ReadRequest> reads;
  std::vector<std::vector<std::byte>> bufs(64, std::vector<std::byte>(16384));
  for (int i = 0; i < 64; ++i) {
    ReadRequest r;
    r.offset = i < 32 ? uint64_t(i) * 16384 : (uint64_t(i) * 7919 * 4096) % (data.size() - 16384);
    r.length = 16384;
    r.dest = bufs[i].data();
    r.tag = 1000 + i;
    r.urgent = i % 5 == 0;
    reads.push_back(r);
  }
  backend->submit(reads);
  std::vector<int> seen(64, 0);
  auto until = std::chrono::steady_clock::now() + 10s;
  size_t got = 0;
  ReadCompletion out[8];
  while (got < 64 && std::chrono::steady_clock::now() < until) {
    size_t n = backend->reap(out);
    for (size_t k = 0; k < n; ++k) {
      int i = static_cast<int>(out[k].tag - 1000);
      REQUIRE(i >= 0);
      REQUIRE(i < 64);
      seen[i]++;
      CHECK(out[k].result == 16384);
      CHECK(std::memcmp(bufs[i].data(), data.data() + reads[i].offset, 16384) == 0);
    }
    got += n;
    if (n == 0) {
      pollfd p{backend->completion_fd(), POLLIN, 0};
      ::poll(&p, 1, 10);
    }
  }
  CHECK(got == 64);
  CHECK(std::count(seen.begin(), seen.end(), 1) == 64);
  // The adjacent run went as fewer requests than reads.
  CHECK(server.stats().requests < 64);
}

TEST_CASE("a demand fault on a read-ahead already sent is raised on the server (RAISE)", "[remote][urgent]") {
  auto data = pattern(2 * kMiB, 17);
  auto scripted = std::make_shared<ScriptedBackend>(data, 16);
  scripted->hold();  // the server's reads wait in the backend's queue
  PageServer server(scripted, {});
  RemoteOptions ro;
  ro.address = server.endpoints().at(0);
  auto backend = connect_remote(ro);
  std::vector<ReadRequest> reads;
  std::vector<std::vector<std::byte>> bufs(8, std::vector<std::byte>(16384));
  for (int i = 0; i < 8; ++i)  // read-ahead, apart from each other (one request each)
    reads.push_back(ReadRequest{uint64_t(i) * 128 * kKiB, 16384, bufs[i].data(), uint64_t(1000 + i), false});
  std::vector<uint64_t> order;
  auto done = read_all(
      *backend, reads,
      [&] {
        REQUIRE(eventually([&] { return scripted->pending() == 8; }));
        backend->make_urgent(1006);
        REQUIRE(eventually([&] { return scripted->raised() == 1; }));
        scripted->release();
      },
      &order);
  for (int i = 0; i < 8; ++i) {
    CHECK(done.at(1000 + i).result == 16384);
    CHECK(std::memcmp(bufs[i].data(), data.data() + reads[i].offset, 16384) == 0);
  }
  REQUIRE(order.size() == 8);
  CHECK(scripted->served().front() == 6 * 128 * kKiB);  // read first on the server
  CHECK(order.front() == 1006);                        // and answered first
  CHECK(server.stats().raised == 1);
}

namespace {

// A PageServer in a child process (so it can be killed like a crashed
// server). Serves `data` (the child's copy of the parent's memory: nothing
// to generate, so it starts at once) on `address`.
class ServerProcess {
 public:
  ServerProcess(const std::string& address, std::span<const std::byte> data) {
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      ::close(p[0]);
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // never outlive a test that crashed
      try {
        PageServerOptions so;
        so.listen = {address};
        PageServer server(MemoryBackend::borrow(data), so);
        char ok = 1;
        (void)!::write(p[1], &ok, 1);
        for (;;) ::pause();
      } catch (...) {
        _exit(3);
      }
    }
    ::close(p[1]);
    char ok = 0;
    bool started = ::read(p[0], &ok, 1) == 1;
    ::close(p[0]);
    REQUIRE(started);
  }
  ~ServerProcess() { kill(); }
  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int status;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
  }

 private:
  pid_t pid_ = -1;
};

}  // namespace

TEST_CASE("a server killed mid-transfer gives SIGBUS after the deadline; a restarted one lets the client recover",
          "[remote][fork]") {
  constexpr size_t kSize = 64 * kMiB;
  auto data = pattern(kSize, 9);
  TempFile anchor(size_t{1});
  std::string address = "unix:" + anchor.path() + ".sock";
  auto server = std::make_unique<ServerProcess>(address, data);
  RemoteOptions ro;
  ro.address = address;
  ro.deadline = 1500ms;
  auto backend = connect_remote(ro);
  Runtime rt;
  RegionOptions o;
  o.fill_size = 4096;
  o.readahead_max = 256 * kKiB;  // (fewer poisoned read-ahead chunks to log)
  Region r = rt.map(backend, o);

  // 1. A reader scans; the server dies under it.
  std::atomic<size_t> progress{0};
  std::atomic<bool> bus{false};
  std::chrono::steady_clock::time_point killed_at, bus_at;
  size_t bus_offset = 0;
  std::thread reader([&] {
    for (size_t at = 0; at < kSize; at += 4096) {
      std::byte b{};
      if (touch_gives_sigbus(r.data() + at, &b)) {
        bus_at = std::chrono::steady_clock::now();
        bus_offset = at;
        bus = true;
        return;
      }
      if (b != data[at]) return;  // wrong bytes: caught below (no SIGBUS, no progress)
      progress = at;
      if (at > 2 * kMiB) std::this_thread::sleep_for(20us);  // give the kill a chance mid-scan
    }
  });
  REQUIRE(eventually([&] { return progress > 2 * kMiB; }));
  killed_at = std::chrono::steady_clock::now();
  server->kill();
  reader.join();
  REQUIRE(bus);
  CHECK(bus_at - killed_at >= 1400ms);  // retried until the deadline, not given up at once
  CHECK(bus_at - killed_at < 5s);
  CHECK(bus_offset < kSize);
  CHECK(first_mismatch(r.data(), data.data(), progress) == -1);

  // 2. While the server is down, a fault waits; when it comes back within
  // the deadline, the fault is served from the new server.
  size_t far = kSize - 4 * kMiB;
  std::atomic<bool> served{false};
  std::byte got{};
  std::thread waiter([&] {
    served = !touch_gives_sigbus(r.data() + far + 123, &got);
  });
  std::this_thread::sleep_for(200ms);
  server = std::make_unique<ServerProcess>(address, data);
  waiter.join();
  REQUIRE(served);
  CHECK(got == data[far + 123]);
  // The rest of that end of the region reads correctly over the new connection.
  CHECK(first_mismatch(r.data() + far, data.data() + far, 4 * kMiB) == -1);
  CHECK(r.stats().errors > 0);  // the poisoned reads of step 1
}

namespace {


// Reads every page of r in order, one byte each (a SIGBUS is caught), then
// compares every page that did not fail with `data`. The pages that failed.
std::vector<size_t> failed_pages(Region& r, const std::vector<std::byte>& data) {
  constexpr size_t kPage = 4096;
  std::vector<size_t> failed;
  for (size_t page = 0; page < r.size() / kPage; ++page)
    if (touch_gives_sigbus(r.data() + page * kPage)) failed.push_back(page);
  size_t wrong = 0;
  for (size_t page = 0, f = 0; page < r.size() / kPage; ++page) {
    if (f < failed.size() && failed[f] == page) {
      ++f;
      continue;
    }
    if (first_mismatch(r.data() + page * kPage, data.data() + page * kPage, kPage) != -1) ++wrong;
  }
  CHECK(wrong == 0);
  return failed;
}

}  // namespace

TEST_CASE("a corrupt snapshot chunk served remotely fails only its own pages, as in process",
          "[remote][snapshot][corrupt]") {
  // Served remotely, adjacent fills travel merged into one READ; the
  // server fails a READ whole, so before the client asked each fill again
  // on its own, two bad chunks cost hundreds of pages instead of 32.
  constexpr uint32_t kChunk = 64 * kKiB;  // the default fill_size too
  constexpr size_t kChunks = 96;
  const std::vector<uint64_t> bad = {9, 41};
  auto data = pattern(kChunks * kChunk, 31);
  TempDir dir;
  SnapshotWriteOptions w;
  w.chunk_size = kChunk;
  w.threads = 1;
  std::string path = dir.file("snap");
  write_snapshot(data, path, w);
  auto f = read_bytes(path);
  for (uint64_t c : bad) patch_entry(f, c, [](detail::ChunkEntry& e) { e.checksum ^= 1; });
  write_bytes(path, f);
  std::vector<size_t> expected;
  for (uint64_t c : bad)
    for (size_t p = 0; p < kChunk / 4096; ++p) expected.push_back(c * kChunk / 4096 + p);

  Runtime rt;
  RegionOptions o;  // defaults: 64 KiB fills, read-ahead up to 4 MiB (many fills per batch)
  auto local = open_zstd_snapshot(path);
  Region in_process = rt.map(local, o);
  std::vector<size_t> local_failed = failed_pages(in_process, data);
  CHECK(local_failed == expected);
  CHECK(in_process.stats().errors == bad.size());

  LogLines log;
  PageServerOptions so;
  so.listen = {"127.0.0.1:0"};
  so.log = log.callback();
  PageServer server(open_zstd_snapshot(path), so);
  RemoteOptions ro;
  ro.address = server.endpoints().at(0);
  auto remote = connect_remote(ro);
  Region over_remote = rt.map(remote, o);
  std::vector<size_t> remote_failed = failed_pages(over_remote, data);
  INFO(log.all());
  CHECK(remote_failed.size() == expected.size());
  CHECK(remote_failed == expected);
  CHECK(remote_failed == local_failed);
  CHECK(over_remote.stats().errors == bad.size());
  CHECK(server.stats().protocol_errors == 0);
  CHECK(log.contains("read of 65536 bytes at offset " + std::to_string(bad[0] * kChunk) + " failed"));
  CHECK(log.contains("read of 65536 bytes at offset " + std::to_string(bad[1] * kChunk) + " failed"));
}

TEST_CASE("reads up to and past the server's request limit arrive whole, whatever the limit", "[remote]") {
  auto data = pattern(20 * kMiB + 3 * 4096, 37);
  // 64 MiB is more than the client's own 4 MiB cap on one READ.
  for (uint32_t limit : {128u * 1024, 1u << 20, 4u << 20, 64u << 20}) {
    PageServerOptions so;
    so.listen = {"127.0.0.1:0"};
    so.max_request_bytes = limit;
    so.max_in_flight_bytes = std::max<size_t>(so.max_in_flight_bytes, 2 * size_t{limit});
    PageServer server(memory(data), so);
    RemoteOptions ro;
    ro.address = server.endpoints().at(0);
    auto backend = connect_remote(ro);
    const uint32_t wire = std::min(limit, 4u << 20);
    // Lengths around the longest READ, alone and in adjacent runs (merged
    // up to the limit), and one past the end of the object (short).
    std::vector<uint32_t> lengths = {65 * 1024, wire - 4096, wire, wire + 4096, 3 * wire / 2, 2 * wire, 5u << 20};
    std::vector<ReadRequest> reads;
    std::vector<std::vector<std::byte>> bufs;
    uint64_t at = 4096;
    for (uint32_t len : lengths) {
      for (int twice = 0; twice < 2; ++twice) {  // two adjacent reads of each length
        if (at >= data.size()) at = (at * 7) % (data.size() / 2) / 4096 * 4096;
        bufs.emplace_back(len + 1, std::byte{0xEE});
        ReadRequest r;
        r.offset = at;
        r.length = len;
        r.dest = bufs.back().data();
        r.tag = reads.size();
        r.urgent = twice == 0;
        reads.push_back(r);
        at += len;
      }
    }
    ReadRequest tail{data.size() - 5000, 2u << 20, nullptr, reads.size(), false};
    bufs.emplace_back((2u << 20) + 1, std::byte{0xEE});
    tail.dest = bufs.back().data();
    reads.push_back(tail);
    auto done = read_all(*backend, reads);
    for (const ReadRequest& r : reads) {
      INFO("limit " << limit << ": read of " << r.length << " at " << r.offset);
      const ReadCompletion& c = done.at(r.tag);
      uint64_t want = std::min<uint64_t>(r.length, data.size() - r.offset);
      REQUIRE(c.result == static_cast<int64_t>(want));
      REQUIRE_FALSE(c.zero);
      CHECK(first_mismatch(r.dest, data.data() + r.offset, want) == -1);
      CHECK(r.dest[r.length] == std::byte{0xEE});  // nothing written past the read
    }
    CHECK(server.stats().protocol_errors == 0);
  }
}

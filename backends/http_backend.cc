// SPDX-License-Identifier: Apache-2.0
// HttpBackend: range requests over a pool of keep-alive connections, on an
// I/O thread of its own (Boost.Asio coroutines, Boost.Beast's parser,
// OpenSSL for https).
//
// How a read travels:
//   submit()    [fault thread] merges adjacent requests of the same urgency
//               into Jobs (one Range each, up to max_request_bytes) and
//               posts them to the I/O thread.
//   I/O thread  queues jobs (demand first). Each connection is a coroutine
//               that takes a batch of up to requests_per_connection jobs of
//               one urgency, writes their requests at once (pipelining),
//               then reads the answers in order. Read-ahead batches never
//               hold every connection: one stays free for demand reads.
//               Body bytes go through the connection's bounce buffer into
//               the reads' staging memory, so a job that timed out (its
//               memory no longer ours) is never written once it completed.
//               Completions are queued under a mutex and raise an edge on
//               the eventfd (completion_fd()).
//   reap()      [fault thread] takes the queued completions.
//
// Failures: a 5xx answer (or 408/429), a lost connection or a stalled one
// (io_timeout) puts the batch's unanswered jobs back at the head of their
// queue; the connection reconnects with exponential backoff (1 ms .. 1 s,
// at most a quarter of the deadline). A watchdog completes every job whose
// deadline passed with -ETIMEDOUT and closes the connection it was on. A
// 412, or an answer whose ETag / Last-Modified is not the pinned one, fails
// the job with -ESTALE and marks the object changed: every later read fails
// the same way, at once.
#include "faultline/http_backend.h"

#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>

// (First: Boost 1.74's asio/awaitable.hpp uses std::exchange without it.)
#include <utility>
// clang-format off
#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <deque>
#include <fstream>
#include <future>
#include <mutex>
#include <optional>
#include <sstream>
#include <thread>
#include <vector>
// clang-format on

#include "backend_limits.h"
#include "event_fd.h"
#include "faultline/error.h"
#include "http_url.h"
#include "log.h"
#include "unique_fd.h"

namespace faultline {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;
using detail::check_option_range;

constexpr size_t kBounceBytes = 256 * 1024;
constexpr auto kFirstBackoff = std::chrono::milliseconds(1);
constexpr auto kMaxBackoff = std::chrono::milliseconds(1000);
// Error bodies up to this long are read and dropped, keeping the connection.
constexpr uint64_t kMaxDiscardBody = 64 * 1024;
constexpr uint64_t kBlockingTag = ~uint64_t{0};  // (read_range's jobs complete through a promise)

// One ReadRequest inside a Job.
struct Part {
  uint64_t tag;
  std::byte* dest;
  uint32_t at;  // offset inside the job's range
  uint32_t length;
};

// One range request.
struct Job {
  uint64_t offset = 0;
  uint32_t length = 0;  // within the object (submit() clamps)
  bool urgent = false;
  bool done = false;  // completed (answered, failed or timed out): its memory is not ours
  Clock::time_point deadline;
  std::vector<Part> parts;
  std::promise<int64_t>* blocking = nullptr;  // read_range(): completes here instead
};
using JobPtr = std::shared_ptr<Job>;

// Why an exchange ended early, and what to do about it.
struct Outcome {
  enum Kind { kOk, kRetry, kReconnect } kind = kOk;  // kReconnect: drop the connection, no backoff
  std::string why;
};

struct Connection {
  explicit Connection(asio::io_context& io) : wake(io), pause(io), bounce(new std::byte[kBounceBytes]) {}
  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls;
  beast::flat_buffer buffer;
  asio::steady_timer wake;   // an idle connection waits here for work
  asio::steady_timer pause;  // backoff before reconnecting
  std::vector<JobPtr> batch;
  bool batch_urgent = false;
  bool open = false;
  unsigned failures = 0;  // in a row, since the last answer
  std::unique_ptr<std::byte[]> bounce;

  beast::tcp_stream& lowest() { return tls ? beast::get_lowest_layer(*tls) : *plain; }
  void close() {
    error_code ec;
    if (tls || plain) lowest().socket().close(ec);
    open = false;
  }
};

// "bytes FIRST-LAST/TOTAL" (or "bytes */TOTAL"); false if malformed.
bool parse_content_range(std::string_view v, uint64_t* first, uint64_t* last, uint64_t* total, bool* star) {
  if (v.substr(0, 6) != "bytes ") return false;
  v.remove_prefix(6);
  auto number = [&](uint64_t* out) {
    auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), *out);
    if (ec != std::errc() || end == v.data()) return false;
    v.remove_prefix(static_cast<size_t>(end - v.data()));
    return true;
  };
  *star = !v.empty() && v[0] == '*';
  if (*star) {
    v.remove_prefix(1);
  } else {
    if (!number(first) || v.empty() || v[0] != '-') return false;
    v.remove_prefix(1);
    if (!number(last) || *last < *first) return false;
  }
  if (v.empty() || v[0] != '/') return false;
  v.remove_prefix(1);
  return number(total) && v.empty();
}

std::string trim(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  size_t i = 0;
  while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
  return s.substr(i);
}

// The authentication header line ("Name: value\r\n"), from the options.
std::string auth_line(const HttpOptions& o, const std::string& shown) {
  if (!o.auth_header.empty() && !o.auth_file.empty())
    throw Error("http backend " + shown + ": set HttpOptions.auth_header or auth_file, not both", EINVAL);
  std::string line = o.auth_header;
  if (!o.auth_file.empty()) {
    std::ifstream in(o.auth_file);
    if (!in) throw_errno("http backend " + shown + ": cannot read the auth file " + o.auth_file, errno ? errno : EIO);
    std::getline(in, line);
    line = trim(line);
    if (line.empty()) throw Error("http backend " + shown + ": the auth file " + o.auth_file + " is empty", EINVAL);
    if (line.find(':') == std::string::npos) line = "Authorization: Bearer " + line;
  }
  if (line.empty()) return {};
  size_t colon = line.find(':');
  std::string name = line.substr(0, colon == std::string::npos ? 0 : colon);
  bool ok = !name.empty();
  for (char c : name) ok &= std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_';
  for (char c : line) ok &= c != '\r' && c != '\n';
  // (The value is never part of a message.)
  if (!ok) throw Error("http backend " + shown + ": the auth header must be 'Name: value' on one line", EINVAL);
  return trim(line) + "\r\n";
}

}  // namespace

class HttpBackend::Impl {
 public:
  explicit Impl(const HttpOptions& options);
  ~Impl();

  void submit(std::span<const ReadRequest> reads);
  size_t reap(std::span<ReadCompletion> out);
  void make_urgent(uint64_t tag);
  int64_t read_range(uint64_t offset, std::span<std::byte> out);

  HttpOptions options_;
  detail::HttpUrl url_;
  uint64_t size_ = 0;
  std::string etag_, last_modified_;
  detail::UniqueFd efd_;

  std::atomic<bool> changed_{false};
  struct Counters {
    std::atomic<uint64_t> requests{0}, bytes{0}, retries{0}, connects{0}, timeouts{0}, stale{0}, raised{0};
  } counters_;

 private:
  // ---- I/O thread ----
  asio::awaitable<void> run_connection(Connection& c);
  asio::awaitable<Outcome> connect(Connection& c);
  template <class Stream>
  asio::awaitable<Outcome> exchange(Stream& s, Connection& c);
  template <class Stream>
  asio::awaitable<Outcome> answer(Stream& s, Connection& c, Job& job);
  asio::awaitable<void> watchdog();
  // The pinning request at open: sets size_ and the validators, or throws.
  asio::awaitable<void> probe(Connection& c, std::string* error);
  void enqueue(std::vector<JobPtr> jobs);
  void raise(uint64_t tag);
  bool take_batch(Connection& c);
  void end_batch(Connection& c, bool requeue);
  void kick();
  void expire(Clock::time_point now);
  void complete(Job& job, int64_t result);
  std::string request_text(const Job& job) const;
  std::string validator_problem(const http::response_header<>& h) const;
  void stop_io();

  asio::io_context io_;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  ssl::context tls_{ssl::context::tls_client};
  std::string auth_;        // "Name: value\r\n" or empty; never logged
  std::string condition_;   // "If-Match: ...\r\n" or "If-Unmodified-Since: ...\r\n"
  std::vector<std::unique_ptr<Connection>> connections_;
  std::deque<JobPtr> urgent_, normal_;
  uint32_t normal_batches_ = 0;  // connections holding a read-ahead batch
  uint64_t in_flight_bytes_ = 0;
  asio::steady_timer watch_{io_};
  bool stopping_ = false;
  bool timeout_logged_ = false;
  std::string last_problem_;
  std::thread thread_;

  // Shared with the fault thread.
  std::mutex mu_;
  std::deque<ReadCompletion> done_;
};

HttpBackend::Impl::Impl(const HttpOptions& options) : options_(options), url_(detail::parse_http_url(options.url)) {
  const std::string& u = url_.shown;
  check_option_range("HttpOptions.connections", options.connections, 1, 64, u);
  check_option_range("HttpOptions.requests_per_connection", options.requests_per_connection, 1, 64, u);
  check_option_range("HttpOptions.max_request_bytes", options.max_request_bytes, 4096, 64u << 20, u);
  check_option_range("HttpOptions.max_in_flight_bytes", options.max_in_flight_bytes,
                     std::max<uint64_t>(64 * 1024, options.max_request_bytes), uint64_t{1} << 30, u);
  check_option_range("HttpOptions.queue_depth", options.queue_depth, 1, detail::kMaxQueueDepth, u);
  if (options.deadline.count() <= 0) throw Error("HttpOptions.deadline must be positive for " + u, EINVAL);
  if (options.io_timeout.count() <= 0) throw Error("HttpOptions.io_timeout must be positive for " + u, EINVAL);
  auth_ = auth_line(options, u);
  if (url_.tls) {
    if (options.insecure_skip_verify) {
      tls_.set_verify_mode(ssl::verify_none);
    } else {
      tls_.set_verify_mode(ssl::verify_peer);
      error_code ec;
      if (options.ca_file.empty())
        tls_.set_default_verify_paths(ec);
      else
        tls_.load_verify_file(options.ca_file, ec);
      if (ec)
        throw Error("http backend " + u + ": cannot load " +
                        (options.ca_file.empty() ? "the system's CA certificates" : "the CA file " + options.ca_file) +
                        ": " + ec.message(),
                    EINVAL);
    }
  }
  efd_ = detail::make_eventfd();
  if (!efd_) throw_errno("http backend " + u + ": eventfd", errno);
  for (uint32_t i = 0; i < options.connections; ++i) connections_.push_back(std::make_unique<Connection>(io_));

  // Pin the object on the first connection, on this thread.
  std::string error;
  bool finished = false;
  asio::co_spawn(io_, probe(*connections_[0], &error), [&](std::exception_ptr e) {
    finished = true;
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        error = x.what();
      }
    }
  });
  io_.run_for(options.deadline);
  if (!finished) {
    connections_[0]->close();
    io_.restart();
    io_.run_for(std::chrono::seconds(1));  // let the probe see its socket closed and unwind
    if (!finished) io_.stop();
    if (error.empty() || !finished)
      error = "no answer within the deadline (" + std::to_string(options.deadline.count()) + " ms)" +
              (last_problem_.empty() ? "" : ": " + last_problem_);
  }
  if (!error.empty()) throw Error("http backend " + u + ": " + error, EIO);
  io_.restart();

  work_.emplace(io_.get_executor());
  for (auto& c : connections_) asio::co_spawn(io_, run_connection(*c), asio::detached);
  asio::co_spawn(io_, watchdog(), asio::detached);
  thread_ = std::thread([this] { io_.run(); });
  pthread_setname_np(thread_.native_handle(), "faultline-http");
}

HttpBackend::Impl::~Impl() {
  if (thread_.joinable()) {
    asio::post(io_, [this] { stop_io(); });
    work_.reset();
    thread_.join();
  }
}

void HttpBackend::Impl::stop_io() {
  stopping_ = true;
  for (auto& c : connections_) {
    c->close();
    c->wake.cancel();
    c->pause.cancel();
  }
  watch_.cancel();
}

// ---- Requests -----------------------------------------------------------------

std::string HttpBackend::Impl::request_text(const Job& job) const {
  std::string r;
  r.reserve(256 + url_.target.size());
  r += "GET ";
  r += url_.target;
  r += " HTTP/1.1\r\nHost: ";
  r += url_.host_header;
  r += "\r\nRange: bytes=";
  r += std::to_string(job.offset);
  r += '-';
  r += std::to_string(job.offset + job.length - 1);
  r += "\r\nUser-Agent: faultline\r\nAccept-Encoding: identity\r\n";
  r += condition_;
  r += auth_;
  r += "\r\n";
  return r;
}

// Empty if the answer's ETag and Last-Modified are those pinned at open.
std::string HttpBackend::Impl::validator_problem(const http::response_header<>& h) const {
  if (!etag_.empty()) {
    auto it = h.find(http::field::etag);
    std::string got = it == h.end() ? "" : std::string(it->value());
    if (got != etag_) return "ETag " + (got.empty() ? std::string("missing") : got) + ", pinned " + etag_;
  } else {
    auto it = h.find(http::field::last_modified);
    std::string got = it == h.end() ? "" : std::string(it->value());
    if (got != last_modified_)
      return "Last-Modified " + (got.empty() ? std::string("missing") : got) + ", pinned " + last_modified_;
  }
  return {};
}

asio::awaitable<Outcome> HttpBackend::Impl::connect(Connection& c) {
  c.plain.reset();
  c.tls.reset();
  c.buffer.clear();
  error_code ec;
  tcp::resolver resolver(io_);
  auto endpoints = co_await resolver.async_resolve(url_.host, std::to_string(url_.port),
                                                   asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return Outcome{Outcome::kRetry, "cannot resolve " + url_.host + ": " + ec.message()};
  if (url_.tls)
    c.tls.emplace(io_, tls_);
  else
    c.plain.emplace(io_);
  beast::tcp_stream& s = c.lowest();
  s.expires_after(options_.io_timeout);
  co_await s.async_connect(endpoints, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return Outcome{Outcome::kRetry, "connect to " + url_.host_header + ": " + ec.message()};
  s.socket().set_option(tcp::no_delay(true), ec);
  counters_.connects.fetch_add(1, std::memory_order_relaxed);
  if (c.tls) {
    SSL* ssl = c.tls->native_handle();
    SSL_set_tlsext_host_name(ssl, url_.host.c_str());
    if (!options_.insecure_skip_verify) {
      error_code ip_ec;
      asio::ip::make_address(url_.host, ip_ec);
      X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
      if (!ip_ec)
        X509_VERIFY_PARAM_set1_ip_asc(param, url_.host.c_str());
      else
        SSL_set1_host(ssl, url_.host.c_str());
    }
    co_await c.tls->async_handshake(ssl::stream_base::client, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      long verify = SSL_get_verify_result(ssl);
      std::string why = "TLS handshake with " + url_.host_header + " failed: " + ec.message();
      if (verify != X509_V_OK)
        why += " (" + std::string(X509_verify_cert_error_string(verify)) +
               "; give the server's CA in HttpOptions.ca_file, or --ca-file)";
      co_return Outcome{Outcome::kRetry, why};
    }
  }
  c.open = true;
  co_return Outcome{};
}

asio::awaitable<void> HttpBackend::Impl::probe(Connection& c, std::string* error) {
  Outcome o = co_await connect(c);
  if (o.kind != Outcome::kOk) {
    *error = o.why;
    co_return;
  }
  auto run = [&](auto& s) -> asio::awaitable<void> {
    error_code ec;
    std::string req = "GET " + url_.target + " HTTP/1.1\r\nHost: " + url_.host_header +
                      "\r\nRange: bytes=0-0\r\nUser-Agent: faultline\r\nAccept-Encoding: identity\r\n" + auth_ +
                      "\r\n";
    beast::get_lowest_layer(s).expires_after(options_.io_timeout);
    co_await asio::async_write(s, asio::buffer(req), asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      *error = "sending the first request: " + ec.message();
      co_return;
    }
    http::response_parser<http::buffer_body> p;
    p.body_limit(std::numeric_limits<uint64_t>::max());
    co_await http::async_read_header(s, c.buffer, p, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      *error = "reading the answer to the first request: " + ec.message();
      co_return;
    }
    const auto& h = p.get();
    unsigned status = h.result_int();
    auto field = [&](http::field f) {
      auto it = h.find(f);
      return it == h.end() ? std::string() : std::string(it->value());
    };
    if (status == 200 && p.content_length() && *p.content_length() == 0) {
      *error = "the object is empty: nothing to map";
      co_return;
    }
    if (status == 200) {
      *error = "the server ignores Range requests (it answered 200 with the whole object to 'Range: bytes=0-0'); "
               "faultline needs a server that answers 206 Partial Content";
      co_return;
    }
    uint64_t first = 0, last = 0, total = 0;
    bool star = false;
    std::string range = field(http::field::content_range);
    if (status == 416 && parse_content_range(range, &first, &last, &total, &star) && star && total == 0) {
      *error = "the object is empty: nothing to map";
      co_return;
    }
    if (status != 206) {
      *error = "the server answered " + std::to_string(status) + " " + std::string(h.reason()) +
               (status / 100 == 3 ? " (redirects are not followed: give the final URL)" : "");
      co_return;
    }
    if (!parse_content_range(range, &first, &last, &total, &star) || star || first != 0 || last != 0 || total == 0) {
      *error = "the server answered 206 with Content-Range '" + range + "', expected 'bytes 0-0/SIZE'";
      co_return;
    }
    size_ = total;
    etag_ = field(http::field::etag);
    last_modified_ = field(http::field::last_modified);
    if (etag_.rfind("W/", 0) == 0) etag_.clear();  // a weak ETag cannot be used with If-Match
    if (!etag_.empty())
      condition_ = "If-Match: " + etag_ + "\r\n";
    else if (!last_modified_.empty())
      condition_ = "If-Unmodified-Since: " + last_modified_ + "\r\n";
    else {
      *error = "the server gives neither a strong ETag nor Last-Modified: changes to the object could not be "
               "detected, so it is refused";
      co_return;
    }
    std::byte one[16];
    while (!p.is_done()) {
      p.get().body().data = one;
      p.get().body().size = sizeof one;
      co_await http::async_read(s, c.buffer, p, asio::redirect_error(asio::use_awaitable, ec));
      if (ec == http::error::need_buffer) ec = {};
      if (ec) {
        *error = "reading the first answer's body: " + ec.message();
        co_return;
      }
    }
    if (!h.keep_alive()) c.close();
  };
  if (c.tls)
    co_await run(*c.tls);
  else
    co_await run(*c.plain);
}

// ---- Scheduling (I/O thread) ----------------------------------------------------

void HttpBackend::Impl::enqueue(std::vector<JobPtr> jobs) {
  bool arm = watch_.expiry() == Clock::time_point::max();
  for (JobPtr& j : jobs) {
    if (stopping_) break;
    (j->urgent ? urgent_ : normal_).push_back(std::move(j));
  }
  if (arm) watch_.cancel();  // the watchdog picks up the new deadlines
  kick();
}

// A demand fault on a background read: its job, if still queued, moves to
// the urgent queue (and so onto the connection kept free for demand reads).
// One already on a connection is on the wire: nothing to move.
void HttpBackend::Impl::raise(uint64_t tag) {
  for (auto it = normal_.begin(); it != normal_.end(); ++it) {
    JobPtr& j = *it;
    if (j->done) continue;
    if (std::none_of(j->parts.begin(), j->parts.end(), [&](const Part& p) { return p.tag == tag; })) continue;
    j->urgent = true;
    urgent_.push_back(std::move(j));
    normal_.erase(it);
    counters_.raised.fetch_add(1, std::memory_order_relaxed);
    kick();
    return;
  }
}

void HttpBackend::Impl::kick() {
  for (auto& c : connections_)
    if (c->batch.empty()) c->wake.cancel();
}

bool HttpBackend::Impl::take_batch(Connection& c) {
  if (changed_.load(std::memory_order_relaxed)) {  // nothing more is asked of a changed object
    for (auto* q : {&urgent_, &normal_}) {
      for (JobPtr& j : *q)
        if (!j->done) complete(*j, -ESTALE);
      q->clear();
    }
    return false;
  }
  const uint64_t limit = options_.max_in_flight_bytes;
  auto fill = [&](std::deque<JobPtr>& q, uint64_t budget) {
    while (!q.empty() && c.batch.size() < options_.requests_per_connection) {
      JobPtr& j = q.front();
      if (j->done) {
        q.pop_front();
        continue;
      }
      if (in_flight_bytes_ + j->length > budget && !(c.batch.empty() && in_flight_bytes_ == 0)) break;
      in_flight_bytes_ += j->length;
      c.batch.push_back(std::move(j));
      q.pop_front();
    }
  };
  fill(urgent_, limit);
  if (!c.batch.empty()) {
    c.batch_urgent = true;
    return true;
  }
  // Read-ahead never takes the last free connection: it stays for demand reads.
  uint32_t max_normal = std::max<uint32_t>(1, options_.connections - 1);
  if (normal_batches_ >= max_normal) return false;
  fill(normal_, limit - limit / 4);
  if (c.batch.empty()) return false;
  c.batch_urgent = false;
  normal_batches_++;
  return true;
}

// The batch is over: jobs not completed go back to the head of their queue.
void HttpBackend::Impl::end_batch(Connection& c, bool requeue) {
  std::vector<JobPtr> back[2];
  for (JobPtr& j : c.batch) {
    in_flight_bytes_ -= j->length;
    if (!j->done && requeue) back[j->urgent].push_back(std::move(j));
  }
  for (int u = 0; u < 2; ++u) {
    auto& q = u ? urgent_ : normal_;
    q.insert(q.begin(), back[u].begin(), back[u].end());
    if (!back[u].empty()) counters_.retries.fetch_add(back[u].size(), std::memory_order_relaxed);
  }
  if (!c.batch_urgent) normal_batches_--;
  c.batch.clear();
  kick();
}

asio::awaitable<void> HttpBackend::Impl::run_connection(Connection& c) {
  error_code ec;
  while (!stopping_) {
    if (!c.open && c.failures > 0) {
      auto backoff = std::min<Clock::duration>({kFirstBackoff * (1u << std::min(c.failures - 1, 20u)), kMaxBackoff,
                                                Clock::duration(options_.deadline) / 4});
      c.pause.expires_after(backoff);
      co_await c.pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      if (stopping_) break;
    }
    if (!take_batch(c)) {
      c.wake.expires_at(Clock::time_point::max());
      co_await c.wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      continue;
    }
    Outcome o;
    if (!c.open) o = co_await connect(c);
    // (Not a ?: of two co_awaits: GCC 12 miscompiles that.)
    if (o.kind == Outcome::kOk && !stopping_) {
      if (c.tls)
        o = co_await exchange(*c.tls, c);
      else
        o = co_await exchange(*c.plain, c);
    }
    if (stopping_) break;
    if (o.kind != Outcome::kOk) {
      c.close();
      if (o.kind == Outcome::kRetry) {
        c.failures++;
        last_problem_ = o.why;
      }
    }
    end_batch(c, true);
  }
  if (!c.batch.empty()) end_batch(c, false);
}

template <class Stream>
asio::awaitable<Outcome> HttpBackend::Impl::exchange(Stream& s, Connection& c) {
  std::string out;
  for (const JobPtr& j : c.batch) out += request_text(*j);
  error_code ec;
  c.lowest().expires_after(options_.io_timeout);
  co_await asio::async_write(s, asio::buffer(out), asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return Outcome{c.failures == 0 ? Outcome::kReconnect : Outcome::kRetry, "send: " + ec.message()};
  for (size_t i = 0; i < c.batch.size(); ++i) {
    Outcome o = co_await answer(s, c, *c.batch[i]);
    if (o.kind != Outcome::kOk) {
      // A keep-alive connection the server closed before our first answer
      // on it: reconnect at once, it is not a failure of the server.
      if (o.kind == Outcome::kRetry && i == 0 && c.failures == 0 && o.why.find("end of stream") != std::string::npos)
        o.kind = Outcome::kReconnect;
      co_return o;
    }
    if (!c.open) {  // the server said Connection: close
      co_return Outcome{Outcome::kReconnect, "closed by the server"};
    }
  }
  co_return Outcome{};
}

template <class Stream>
asio::awaitable<Outcome> HttpBackend::Impl::answer(Stream& s, Connection& c, Job& job) {
  error_code ec;
  http::response_parser<http::buffer_body> p;
  p.body_limit(std::numeric_limits<uint64_t>::max());
  c.lowest().expires_after(options_.io_timeout);
  co_await http::async_read_header(s, c.buffer, p, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return Outcome{Outcome::kRetry, "reading an answer: " + ec.message()};
  const auto& h = p.get();
  unsigned status = h.result_int();
  int fail = 0;  // the job fails with this errno, after the body is dropped
  std::string problem;
  if (status == 412) {
    fail = ESTALE;
    problem = "the object changed (412 Precondition Failed)";
  } else if (status >= 500 || status == 408 || status == 429) {
    co_return Outcome{Outcome::kRetry, "the server answered " + std::to_string(status)};
  } else if (status != 206) {
    fail = EIO;
    problem = "the server answered " + std::to_string(status) + " " + std::string(h.reason()) +
              (status == 200 ? " (it ignored the Range header)" : "");
  } else {
    std::string changed = validator_problem(h);
    if (!changed.empty()) {
      fail = ESTALE;
      problem = "the object changed (" + changed + ")";
    }
  }
  const uint64_t want = job.length;
  if (!fail) {
    auto it = h.find(http::field::content_range);
    uint64_t first = 0, last = 0, total = 0;
    bool star = false;
    if (it == h.end() || !parse_content_range(std::string_view(it->value().data(), it->value().size()), &first, &last, &total, &star) || star ||
        first != job.offset || last != job.offset + want - 1 || total != size_) {
      std::string got = it == h.end() ? "none" : std::string(it->value());
      if (total != size_ && total != 0) {
        fail = ESTALE;
        problem = "the object changed (its size is now " + std::to_string(total) + ")";
      } else {
        co_return Outcome{Outcome::kRetry, "the server answered Content-Range " + got + " for bytes " +
                                               std::to_string(job.offset) + "-" +
                                               std::to_string(job.offset + want - 1)};
      }
    } else if (!p.content_length() || *p.content_length() != want) {
      co_return Outcome{Outcome::kRetry, "the server answered a 206 without the right Content-Length"};
    }
  }
  if (fail) {
    if (fail == ESTALE) {
      if (!changed_.exchange(true))
        detail::logf(options_.log, LogLevel::kError,
                     "http backend %s: %s; every read from now on fails (SIGBUS for its pages)", url_.shown.c_str(),
                     problem.c_str());
      counters_.stale.fetch_add(job.parts.size(), std::memory_order_relaxed);
    } else {
      detail::logf(options_.log, LogLevel::kError, "http backend %s: bytes %llu-%llu: %s", url_.shown.c_str(),
                   static_cast<unsigned long long>(job.offset),
                   static_cast<unsigned long long>(job.offset + want - 1), problem.c_str());
    }
    if (!job.done) complete(job, -fail);
    // Keep the connection only if the body is short and announced.
    if (p.content_length() && *p.content_length() <= kMaxDiscardBody && h.keep_alive()) {
      while (!p.is_done()) {
        p.get().body().data = c.bounce.get();
        p.get().body().size = kBounceBytes;
        co_await http::async_read(s, c.buffer, p, asio::redirect_error(asio::use_awaitable, ec));
        if (ec == http::error::need_buffer) ec = {};
        if (ec) co_return Outcome{Outcome::kReconnect, "reading an error body: " + ec.message()};
      }
      co_return Outcome{};
    }
    co_return Outcome{Outcome::kReconnect, problem};
  }
  uint64_t got = 0;
  size_t part = 0;
  while (!p.is_done()) {
    p.get().body().data = c.bounce.get();
    p.get().body().size = kBounceBytes;
    c.lowest().expires_after(options_.io_timeout);
    co_await http::async_read(s, c.buffer, p, asio::redirect_error(asio::use_awaitable, ec));
    if (ec == http::error::need_buffer) ec = {};
    if (ec) co_return Outcome{Outcome::kRetry, "reading bytes " + std::to_string(job.offset + got) + "..: " +
                                                   ec.message()};
    size_t n = kBounceBytes - p.get().body().size;
    if (got + n > want) co_return Outcome{Outcome::kRetry, "the server sent more bytes than asked"};
    if (!job.done) {  // (a job that timed out: its memory is not ours, drop the bytes)
      size_t from = 0;
      while (from < n) {
        const Part& pt = job.parts[part];
        uint64_t at = got + from;  // in the job
        size_t k = std::min<uint64_t>(n - from, pt.at + pt.length - at);
        std::memcpy(pt.dest + (at - pt.at), c.bounce.get() + from, k);
        from += k;
        if (at + k == pt.at + pt.length) part++;
      }
    }
    got += n;
  }
  if (got != want) co_return Outcome{Outcome::kRetry, "short body"};
  counters_.requests.fetch_add(1, std::memory_order_relaxed);
  counters_.bytes.fetch_add(got, std::memory_order_relaxed);
  c.failures = 0;
  timeout_logged_ = false;
  if (!job.done) complete(job, static_cast<int64_t>(want));
  if (!h.keep_alive()) c.close();
  co_return Outcome{};
}

// ---- Deadlines ------------------------------------------------------------------

asio::awaitable<void> HttpBackend::Impl::watchdog() {
  error_code ec;
  while (!stopping_) {
    Clock::time_point next = Clock::time_point::max();
    for (auto* q : {&urgent_, &normal_})
      for (const JobPtr& j : *q)
        if (!j->done) next = std::min(next, j->deadline);
    for (auto& c : connections_)
      for (const JobPtr& j : c->batch)
        if (!j->done) next = std::min(next, j->deadline);
    watch_.expires_at(next);
    co_await watch_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    if (stopping_) break;
    expire(Clock::now());
  }
}

void HttpBackend::Impl::expire(Clock::time_point now) {
  uint64_t expired = 0;
  for (auto* q : {&urgent_, &normal_})
    for (auto it = q->begin(); it != q->end();) {
      if ((*it)->done || (*it)->deadline <= now) {
        if (!(*it)->done) {
          complete(**it, -ETIMEDOUT);
          expired++;
        }
        it = q->erase(it);
      } else {
        ++it;
      }
    }
  for (auto& c : connections_) {
    bool hit = false;
    for (const JobPtr& j : c->batch)
      if (!j->done && j->deadline <= now) {
        complete(*j, -ETIMEDOUT);
        expired++;
        hit = true;
      }
    // Whatever holds it up (a stalled server, a slow one), this connection
    // cannot serve the rest in time either: drop it, its other jobs retry.
    if (hit) c->close();
  }
  if (expired) {
    counters_.timeouts.fetch_add(expired, std::memory_order_relaxed);
    if (!timeout_logged_)
      detail::logf(options_.log, LogLevel::kWarning, "http backend %s: reads timed out after %lld ms%s%s",
                   url_.shown.c_str(), static_cast<long long>(options_.deadline.count()),
                   last_problem_.empty() ? "" : "; last problem: ", last_problem_.c_str());
    timeout_logged_ = true;
  }
}

void HttpBackend::Impl::complete(Job& job, int64_t result) {
  job.done = true;
  if (job.blocking) {
    job.blocking->set_value(result);
    return;
  }
  bool signal;
  {
    std::lock_guard lock(mu_);
    signal = done_.empty();
    for (const Part& p : job.parts)
      done_.push_back(ReadCompletion{p.tag, result < 0 ? result : int64_t{p.length}, false, nullptr});
  }
  if (signal) detail::signal_eventfd(efd_.get());
}

// ---- Fault thread -------------------------------------------------------------

void HttpBackend::Impl::submit(std::span<const ReadRequest> reads) {
  Clock::time_point deadline = Clock::now() + options_.deadline;
  std::vector<JobPtr> jobs;
  bool failed_now = false;
  bool stale = changed_.load(std::memory_order_relaxed);
  {
    std::lock_guard lock(mu_);
    for (const ReadRequest& r : reads) {
      if (r.offset >= size_ || r.length == 0 || stale) {
        done_.push_back({r.tag, stale ? -ESTALE : r.offset >= size_ ? -EINVAL : 0, false, nullptr});
        failed_now = true;
      }
    }
  }
  if (failed_now) detail::signal_eventfd(efd_.get());
  if (stale) return;
  Job* open = nullptr;
  for (const ReadRequest& r : reads) {
    if (r.offset >= size_ || r.length == 0) {
      open = nullptr;
      continue;
    }
    auto length = static_cast<uint32_t>(std::min<uint64_t>(r.length, size_ - r.offset));
    if (open && open->urgent == r.urgent && open->offset + open->length == r.offset &&
        uint64_t{open->length} + length <= options_.max_request_bytes) {
      open->parts.push_back({r.tag, r.dest, open->length, length});
      open->length += length;
      continue;
    }
    auto j = std::make_shared<Job>();
    j->offset = r.offset;
    j->length = length;
    j->urgent = r.urgent;
    j->deadline = deadline;
    j->parts.push_back({r.tag, r.dest, 0, length});
    open = j.get();
    jobs.push_back(std::move(j));
  }
  if (!jobs.empty()) asio::post(io_, [this, jobs = std::move(jobs)]() mutable { enqueue(std::move(jobs)); });
}

void HttpBackend::Impl::make_urgent(uint64_t tag) {
  asio::post(io_, [this, tag] { raise(tag); });
}

size_t HttpBackend::Impl::reap(std::span<ReadCompletion> out) {
  std::lock_guard lock(mu_);
  size_t n = std::min(out.size(), done_.size());
  for (size_t i = 0; i < n; ++i) {
    out[i] = done_.front();
    done_.pop_front();
  }
  return n;
}

int64_t HttpBackend::Impl::read_range(uint64_t offset, std::span<std::byte> out) {
  if (changed_) return -ESTALE;
  if (offset >= size_ || out.empty()) return offset > size_ ? -EINVAL : 0;
  uint64_t total = std::min<uint64_t>(out.size(), size_ - offset);
  // One request per max_request_bytes, sent together (they pipeline).
  std::vector<std::promise<int64_t>> promises((total + options_.max_request_bytes - 1) / options_.max_request_bytes);
  std::vector<JobPtr> jobs;
  Clock::time_point deadline = Clock::now() + options_.deadline;
  for (size_t i = 0; i < promises.size(); ++i) {
    uint64_t at = i * uint64_t{options_.max_request_bytes};
    auto j = std::make_shared<Job>();
    j->offset = offset + at;
    j->length = static_cast<uint32_t>(std::min<uint64_t>(options_.max_request_bytes, total - at));
    j->urgent = true;
    j->deadline = deadline;
    j->parts.push_back({kBlockingTag, out.data() + at, 0, j->length});
    j->blocking = &promises[i];
    jobs.push_back(std::move(j));
  }
  std::vector<std::future<int64_t>> futures;
  for (auto& p : promises) futures.push_back(p.get_future());
  asio::post(io_, [this, jobs]() mutable { enqueue(std::move(jobs)); });
  int64_t result = static_cast<int64_t>(total);
  for (auto& f : futures) {
    int64_t r = f.get();
    if (r < 0 && result >= 0) result = r;
  }
  return result;
}

// ---- The public class -----------------------------------------------------------

HttpBackend::HttpBackend(const HttpOptions& options) : impl_(std::make_unique<Impl>(options)) {}
HttpBackend::~HttpBackend() = default;
uint64_t HttpBackend::size() const { return impl_->size_; }
std::string HttpBackend::name() const { return "http " + impl_->url_.shown; }
uint32_t HttpBackend::queue_depth() const { return impl_->options_.queue_depth; }
int HttpBackend::completion_fd() const { return impl_->efd_.get(); }
void HttpBackend::submit(std::span<const ReadRequest> reads) { impl_->submit(reads); }
size_t HttpBackend::reap(std::span<ReadCompletion> out) { return impl_->reap(out); }
void HttpBackend::make_urgent(uint64_t tag) { impl_->make_urgent(tag); }
int64_t HttpBackend::read_range(uint64_t offset, std::span<std::byte> out) { return impl_->read_range(offset, out); }
std::string HttpBackend::validator() const { return impl_->etag_.empty() ? impl_->last_modified_ : impl_->etag_; }

HttpCounters HttpBackend::counters() const {
  const auto& c = impl_->counters_;
  HttpCounters out;
  out.requests = c.requests.load(std::memory_order_relaxed);
  out.bytes = c.bytes.load(std::memory_order_relaxed);
  out.retries = c.retries.load(std::memory_order_relaxed);
  out.connects = c.connects.load(std::memory_order_relaxed);
  out.timeouts = c.timeouts.load(std::memory_order_relaxed);
  out.stale = c.stale.load(std::memory_order_relaxed);
  out.raised = c.raised.load(std::memory_order_relaxed);
  return out;
}

std::shared_ptr<Backend> open_http(const HttpOptions& options) { return std::make_shared<HttpBackend>(options); }

bool is_http_url(const std::string& path) { return path.rfind("http://", 0) == 0 || path.rfind("https://", 0) == 0; }

}  // namespace faultline

// SPDX-License-Identifier: Apache-2.0
// The insides of HttpBackend (faultline/http_backend.h), private to its two
// files: http_backend.cc (the object's life, deadlines, the fault thread's
// side, the public class), http_connection.cc (what one connection does:
// connect, pin, write a batch of requests, read the answers; and how jobs
// are scheduled onto connections) and http_demand_lane.cc (the connection
// the fault thread drives itself). How a read travels: http_backend.cc.
#pragma once

#include "faultline/http_backend.h"


#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>

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
#include "spin_policy.h"
#include "event_fd.h"
#include "faultline/error.h"
#include "http_url.h"
#include "log.h"
#include "unique_fd.h"

namespace faultline {
namespace http_impl {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;
using detail::check_option_range;

constexpr size_t kBounceBytes = 256 * 1024;
constexpr size_t kReadBytes = 64 * 1024;  // Beast's largest read (read_size's limit)
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
  explicit Connection(asio::io_context& io) : wake(io), pause(io), bounce(new std::byte[kBounceBytes]) {
    // Beast reads from the socket into `buffer` as much as it has room for
    // (at most 64 KiB a read): without this room a body comes 512 bytes a
    // recvmsg, and a 4 MiB range takes ~8000 of them.
    buffer.reserve(kReadBytes);
  }
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

// What an answer's header says about the job it answers.
struct Verdict {
  int fail = 0;          // the job fails with this errno (ESTALE: the object changed)
  bool retry = false;    // a transient problem: ask again
  std::string problem;   // why it fails or is asked again
  bool ok() const { return !fail && !retry; }
};

// The demand lane (http_demand_lane.cc): a plain-http keep-alive connection
// owned by the fault thread. A demand read is written to it inside submit()
// and its answer read inside reap(), so a fault costs no hop to the I/O
// thread and back. The I/O thread only opens the connection.
struct Lane {
  detail::UniqueFd socket;     // invalid: down
  std::deque<JobPtr> sent;     // requests written, answered in this order
  std::optional<http::response_parser<http::buffer_body>> parser;  // for sent.front()
  bool judged = false;         // sent.front()'s header was read and is good
  size_t part = 0;             // sent.front()'s part receiving body bytes
  std::vector<char> rx = std::vector<char>(kReadBytes);
  size_t rx_begin = 0, rx_end = 0;
  bool opening = false;        // the I/O thread is opening a connection
  bool answered = false;       // this connection answered at least once
  unsigned failures = 0;       // connections in a row that answered nothing
  Clock::time_point progress;  // of sent.front(): last bytes received, or sent
  bool timer_armed = false;
  SpinPolicy spin;
};

// "bytes FIRST-LAST/TOTAL" (or "bytes */TOTAL"); false if malformed.
bool parse_content_range(std::string_view v, uint64_t* first, uint64_t* last, uint64_t* total, bool* star);

}  // namespace http_impl

class HttpBackend::Impl {
 public:
  explicit Impl(const HttpOptions& options);
  ~Impl();

  void submit(std::span<const ReadRequest> reads);
  size_t reap(std::span<ReadCompletion> out);
  void make_urgent(uint64_t tag);
  int64_t read_range(uint64_t offset, std::span<std::byte> out);
  int completion_fd() const { return epoll_ ? epoll_.get() : efd_.get(); }

  HttpOptions options_;
  detail::HttpUrl url_;
  uint64_t size_ = 0;
  std::string etag_, last_modified_;
  detail::UniqueFd efd_;

  std::atomic<bool> changed_{false};
  struct Counters {
    std::atomic<uint64_t> requests{0}, bytes{0}, retries{0}, connects{0}, timeouts{0}, stale{0}, raised{0},
        lane_requests{0};
  } counters_;

 private:
  // ---- I/O thread ----
  http_impl::asio::awaitable<void> run_connection(http_impl::Connection& c);
  http_impl::asio::awaitable<http_impl::Outcome> connect(http_impl::Connection& c);
  template <class Stream>
  http_impl::asio::awaitable<http_impl::Outcome> exchange(Stream& s, http_impl::Connection& c);
  template <class Stream>
  http_impl::asio::awaitable<http_impl::Outcome> answer(Stream& s, http_impl::Connection& c, http_impl::Job& job);
  http_impl::asio::awaitable<void> watchdog();
  // The pinning request at open: sets size_ and the validators, or throws.
  http_impl::asio::awaitable<void> probe(http_impl::Connection& c, std::string* error);
  void enqueue(std::vector<http_impl::JobPtr> jobs);
  void raise(uint64_t tag);
  bool take_batch(http_impl::Connection& c);
  void end_batch(http_impl::Connection& c, bool requeue);
  void kick();
  http_impl::Clock::duration backoff(unsigned failures) const;
  void expire(http_impl::Clock::time_point now);
  void complete(http_impl::Job& job, int64_t result);
  std::string request_text(const http_impl::Job& job) const;
  std::string validator_problem(const http_impl::http::response_header<>& h) const;
  http_impl::Verdict judge(const http_impl::http::response_header<>& h, boost::optional<uint64_t> content_length,
                           const http_impl::Job& job) const;
  void stop_io();

  // ---- The demand lane: fault thread (http_demand_lane.cc) ----
  bool lane_send(const http_impl::JobPtr& job);
  void lane_reap();
  bool lane_take_offer();
  bool lane_read();
  bool lane_parse();
  void lane_answered();
  void lane_drop();
  void lane_check_timer();
  void lane_arm_timer(http_impl::Clock::time_point at);
  // ---- The demand lane: I/O thread ----
  http_impl::asio::awaitable<void> open_lane(unsigned failures);

  http_impl::asio::io_context io_;
  std::optional<http_impl::asio::executor_work_guard<http_impl::asio::io_context::executor_type>> work_;
  http_impl::ssl::context tls_{http_impl::ssl::context::tls_client};
  std::string auth_;        // "Name: value\r\n" or empty; never logged
  std::string condition_;   // "If-Match: ...\r\n" or "If-Unmodified-Since: ...\r\n"
  std::vector<std::unique_ptr<http_impl::Connection>> connections_;
  std::deque<http_impl::JobPtr> urgent_, normal_;
  uint32_t normal_batches_ = 0;  // connections holding a read-ahead batch
  uint64_t in_flight_bytes_ = 0;
  http_impl::asio::steady_timer watch_{io_};
  bool stopping_ = false;
  bool timeout_logged_ = false;
  std::string last_problem_;
  std::thread thread_;

  std::optional<http_impl::Connection> lane_conn_;  // the lane's connection while being opened

  // Fault thread.
  http_impl::Lane lane_;
  std::deque<ReadCompletion> lane_done_;
  detail::UniqueFd epoll_;       // completion_fd() over http: efd_, the lane's socket and its timer
  detail::UniqueFd lane_timer_;  // stalls and deadlines of the lane's requests

  // Shared with the fault thread.
  std::mutex mu_;
  std::deque<ReadCompletion> done_;
  detail::UniqueFd lane_offer_;  // a connection open_lane() made, for the fault thread to take
};

}  // namespace faultline

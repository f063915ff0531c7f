// SPDX-License-Identifier: Apache-2.0
// HttpBackend's demand lane (http_backend_impl.h, struct Lane): over plain
// http, one keep-alive connection that the fault thread drives itself.
//
// Through the I/O thread a demand fault costs two thread hops (the post to
// it, the eventfd back), each a cross-CPU wake-up. On the lane, submit()
// writes the request to the socket, and reap() reads the answer, busy-
// polling briefly as the remote backend does, straight into the read's
// staging memory. The lane is deliberately simple: it completes only reads
// whose answer is a clean 206 (judge()); anything else (an error status, a
// changed object, a lost or stalled connection, a deadline near) drops the
// connection and hands its unanswered jobs to the I/O thread, which retries,
// times out and reports them as it does every read. The I/O thread opens the
// lane's connections (name resolution, backoff) and passes the socket over.
#include "http_backend_impl.h"

namespace faultline {

using namespace http_impl;

// ---- Fault thread ---------------------------------------------------------------

// Writes the job's request on the lane; false if it must take the I/O
// thread's way (https, no lane, the lane full, or the socket would block).
bool HttpBackend::Impl::lane_send(const JobPtr& job) {
  if (url_.tls) return false;
  if (!lane_.socket && !lane_take_offer()) return false;
  if (lane_.sent.size() >= options_.requests_per_connection) return false;
  std::string request = request_text(*job);
  ssize_t n = ::send(lane_.socket.get(), request.data(), request.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n == static_cast<ssize_t>(request.size())) {
    if (lane_.sent.empty()) {
      lane_.progress = Clock::now();
      if (!lane_.timer_armed) lane_arm_timer(lane_.progress + std::min(options_.io_timeout, options_.deadline));
    }
    lane_.sent.push_back(job);
    return true;
  }
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return false;  // nothing written
  lane_drop();  // a failed or short send: half a request on the wire spoils the connection
  return false;
}

// Takes a connection on offer, handles the timer, reads what arrived; then,
// with a demand read out and nothing answered yet, polls for up to busy_poll.
void HttpBackend::Impl::lane_reap() {
  if (!epoll_) return;  // https: no lane
  // Empty our epoll's ready list, so the runtime's epoll sees the next
  // event as a new edge.
  epoll_event events[4];
  int n_events = epoll_wait(epoll_.get(), events, 4, 0);
  for (int i = 0; i < n_events; ++i)
    if (events[i].data.fd == lane_timer_.get()) lane_check_timer();
  if (!lane_.socket) lane_take_offer();
  if (!lane_.socket || !lane_read()) return;
  if (lane_done_.empty() && !lane_.sent.empty() && options_.busy_poll.count() > 0 && lane_.spin.should_spin()) {
    Clock::time_point until = Clock::now() + options_.busy_poll;
    while (lane_done_.empty() && lane_.socket && !lane_.sent.empty() && Clock::now() < until)
      if (!lane_read()) break;
    lane_done_.empty() ? lane_.spin.miss() : lane_.spin.hit();
  }
}

// Takes the connection open_lane() offers, if there is one.
bool HttpBackend::Impl::lane_take_offer() {
  detail::UniqueFd offered;
  {
    std::lock_guard lock(mu_);
    offered = std::move(lane_offer_);
  }
  if (!offered) return false;
  lane_.opening = false;
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
  ev.data.fd = offered.get();
  if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, offered.get(), &ev) != 0) {
    lane_drop();  // epoll_ctl failed
    return false;
  }
  lane_.socket = std::move(offered);
  lane_.answered = false;
  return true;
}

// Reads the socket until it would block, completing the answers it holds.
// False if the lane went down.
bool HttpBackend::Impl::lane_read() {
  for (;;) {
    if (lane_.rx_begin == lane_.rx_end) {
      lane_.rx_begin = lane_.rx_end = 0;
    } else if (lane_.rx_end == lane_.rx.size()) {
      // An incomplete header fills the buffer from its start: it is too long.
      if (lane_.rx_begin == 0) {
        lane_drop();  // an answer's header is too long
        return false;
      }
      std::memmove(lane_.rx.data(), lane_.rx.data() + lane_.rx_begin, lane_.rx_end - lane_.rx_begin);
      lane_.rx_end -= lane_.rx_begin;
      lane_.rx_begin = 0;
    }
    ssize_t n = ::recv(lane_.socket.get(), lane_.rx.data() + lane_.rx_end, lane_.rx.size() - lane_.rx_end,
                       MSG_DONTWAIT);
    if (n > 0) {
      lane_.rx_end += static_cast<size_t>(n);
      lane_.progress = Clock::now();
      if (!lane_parse()) return false;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return true;
    lane_drop();  // closed by the server, or recv failed
    return false;
  }
}

// Feeds the received bytes to the front job's parser. False if the lane went down.
bool HttpBackend::Impl::lane_parse() {
  while (lane_.rx_begin < lane_.rx_end) {
    if (lane_.sent.empty()) {
      lane_drop();  // the server sent bytes nobody asked for
      return false;
    }
    Job& job = *lane_.sent.front();
    if (!lane_.parser) {
      lane_.parser.emplace();
      lane_.parser->body_limit(std::numeric_limits<uint64_t>::max());
      lane_.judged = false;
      lane_.part = 0;
    }
    auto& p = *lane_.parser;
    auto body_into_part = [&] {
      const Part& pt = job.parts[lane_.part];
      p.get().body().data = pt.dest;
      p.get().body().size = pt.length;
    };
    error_code ec;
    size_t n = p.put(asio::buffer(lane_.rx.data() + lane_.rx_begin, lane_.rx_end - lane_.rx_begin), ec);
    lane_.rx_begin += n;
    if (ec == http::error::need_more) return true;
    if (ec == http::error::need_buffer && lane_.judged) {  // the part is full: the next one
      if (++lane_.part >= job.parts.size()) {
        lane_drop();  // the server sent more bytes than asked
        return false;
      }
      body_into_part();
    } else if (ec && ec != http::error::need_buffer) {
      lane_drop();  // a malformed answer
      return false;
    }
    if (p.is_header_done() && !lane_.judged) {
      // Anything but a clean 206 goes to the I/O thread, which asks again
      // and reports what it gets.
      if (!judge(p.get().base(), p.content_length(), job).ok()) {
        lane_drop();  // an answer that is not a clean 206
        return false;
      }
      lane_.judged = true;
      body_into_part();
    }
    if (p.is_done()) lane_answered();
    if (!lane_.socket) return false;
  }
  return true;
}

// sent.front()'s answer is complete: its parts are done.
void HttpBackend::Impl::lane_answered() {
  JobPtr job = std::move(lane_.sent.front());
  lane_.sent.pop_front();
  bool keep_alive = lane_.parser->get().keep_alive();
  lane_.parser.reset();
  job->done = true;
  for (const Part& pt : job->parts) lane_done_.push_back(ReadCompletion{pt.tag, int64_t{pt.length}, false, nullptr});
  counters_.requests.fetch_add(1, std::memory_order_relaxed);
  counters_.lane_requests.fetch_add(1, std::memory_order_relaxed);
  counters_.bytes.fetch_add(job->length, std::memory_order_relaxed);
  lane_.answered = true;
  lane_.failures = 0;
  lane_.progress = Clock::now();
  if (!keep_alive) lane_drop();  // the server closes the connection after this answer
}

// Closes the lane's connection, hands its unanswered jobs to the I/O
// thread (to its demand queue, their deadlines kept) and asks it for a new
// connection.
// (Not logged: the I/O thread's retry reports what is wrong, if anything is.)
void HttpBackend::Impl::lane_drop() {
  if (lane_.socket && !lane_.answered) lane_.failures++;
  lane_.socket.reset();  // (closing removes it from the epoll set)
  lane_.parser.reset();
  lane_.rx_begin = lane_.rx_end = 0;
  if (!lane_.sent.empty()) {
    std::vector<JobPtr> back(lane_.sent.begin(), lane_.sent.end());
    lane_.sent.clear();
    counters_.retries.fetch_add(back.size(), std::memory_order_relaxed);
    asio::post(io_, [this, back = std::move(back)]() mutable { enqueue(std::move(back)); });
  }
  if (!lane_.opening) {
    lane_.opening = true;
    asio::co_spawn(io_, open_lane(lane_.failures), asio::detached);
  }
}

// The lane's timer fired: drop a lane that stalled for io_timeout or holds
// a job whose deadline is near (the I/O thread then times it out), else
// wait on.
void HttpBackend::Impl::lane_check_timer() {
  uint64_t expirations;
  (void)!::read(lane_timer_.get(), &expirations, sizeof expirations);
  lane_.timer_armed = false;
  if (lane_.sent.empty()) return;
  Clock::time_point now = Clock::now();
  Clock::time_point at = std::min(lane_.progress + options_.io_timeout, lane_.sent.front()->deadline);
  if (at <= now) {
    lane_drop();  // stalled
    return;
  }
  lane_arm_timer(at);
}

void HttpBackend::Impl::lane_arm_timer(Clock::time_point at) {
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(at.time_since_epoch()).count();
  itimerspec spec{};
  spec.it_value.tv_sec = static_cast<time_t>(ns / 1000000000);
  spec.it_value.tv_nsec = static_cast<long>(ns % 1000000000);
  if (spec.it_value.tv_sec == 0 && spec.it_value.tv_nsec == 0) spec.it_value.tv_nsec = 1;
  lane_.timer_armed = timerfd_settime(lane_timer_.get(), TFD_TIMER_ABSTIME, &spec, nullptr) == 0;
}

// ---- I/O thread -------------------------------------------------------------------

// Opens a connection for the lane (after a backoff if the last ones
// answered nothing) and offers it to the fault thread.
asio::awaitable<void> HttpBackend::Impl::open_lane(unsigned failures) {
  error_code ec;
  if (stopping_) co_return;
  if (!lane_conn_) lane_conn_.emplace(io_);
  Connection& c = *lane_conn_;
  for (;;) {
    if (failures > 0) {
      c.pause.expires_after(backoff(failures));
      co_await c.pause.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    }
    if (stopping_) co_return;
    Outcome o = co_await connect(c);
    if (stopping_) co_return;
    if (o.kind == Outcome::kOk) {
      int fd = c.plain->release_socket().release(ec);
      c.plain.reset();
      c.open = false;
      if (!ec && fd >= 0) {
        std::lock_guard lock(mu_);
        lane_offer_ = detail::UniqueFd(fd);
        break;
      }
      o.why = "releasing the socket: " + ec.message();
    }
    last_problem_ = o.why;
    failures++;
  }
  detail::signal_eventfd(efd_.get());
}

}  // namespace faultline

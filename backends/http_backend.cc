// SPDX-License-Identifier: Apache-2.0
// HttpBackend: range requests over a pool of keep-alive connections, on an
// I/O thread of its own (Boost.Asio coroutines, Boost.Beast's parser,
// OpenSSL for https).
//
// How a read travels:
//   submit()    [fault thread] merges adjacent requests of the same urgency
//               into Jobs (one Range each, up to max_request_bytes). Over
//               plain http a demand job goes out at once on the demand lane
//               (http_demand_lane.cc), a connection the fault thread drives
//               itself; the rest (and demand jobs when the lane is down or
//               full) are posted to the I/O thread.
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
//   reap()      [fault thread] reads the lane's answers (busy-polling
//               briefly for one just asked), then takes the queued completions.
//
// Failures: a 5xx answer (or 408/429), a lost connection or a stalled one
// (io_timeout) puts the batch's unanswered jobs back at the head of their
// queue; the connection reconnects with exponential backoff (1 ms .. 1 s,
// at most a quarter of the deadline). A watchdog completes every job whose
// deadline passed with -ETIMEDOUT and closes the connection it was on. A
// 412, or an answer whose ETag / Last-Modified is not the pinned one, fails
// the job with -ESTALE and marks the object changed: every later read fails
// the same way, at once.
#include "http_backend_impl.h"

namespace faultline {

using namespace http_impl;

namespace {

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
  if (options.busy_poll.count() < 0 || options.busy_poll > std::chrono::seconds(1))
    throw Error("HttpOptions.busy_poll must be 0..1 s for " + u, EINVAL);
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
  if (!url_.tls) {  // the demand lane: completion_fd() is an epoll set of efd_, its socket and its timer
    epoll_ = detail::UniqueFd(epoll_create1(EPOLL_CLOEXEC));
    if (!epoll_) throw_errno("http backend " + u + ": epoll_create1", errno);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLET;
    ev.data.fd = efd_.get();
    if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, efd_.get(), &ev) != 0)
      throw_errno("http backend " + u + ": epoll_ctl", errno);
    lane_timer_ = detail::UniqueFd(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
    if (!lane_timer_) throw_errno("http backend " + u + ": timerfd_create", errno);
    ev.events = EPOLLIN;  // (level-triggered: lane_reap() reads it)
    ev.data.fd = lane_timer_.get();
    if (epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, lane_timer_.get(), &ev) != 0)
      throw_errno("http backend " + u + ": epoll_ctl", errno);
  }
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
  if (!url_.tls) {
    lane_.opening = true;
    asio::co_spawn(io_, open_lane(0), asio::detached);
  }
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
  if (lane_conn_) {
    lane_conn_->close();
    lane_conn_->pause.cancel();
  }
  watch_.cancel();
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
  auto time_out = [&](Job& j) {
    counters_.timeouts.fetch_add(1, std::memory_order_relaxed);  // (before the completion shows it)
    complete(j, -ETIMEDOUT);
    expired++;
  };
  for (auto* q : {&urgent_, &normal_})
    for (auto it = q->begin(); it != q->end();) {
      if ((*it)->done || (*it)->deadline <= now) {
        if (!(*it)->done) time_out(**it);
        it = q->erase(it);
      } else {
        ++it;
      }
    }
  for (auto& c : connections_) {
    bool hit = false;
    for (const JobPtr& j : c->batch)
      if (!j->done && j->deadline <= now) {
        time_out(*j);
        hit = true;
      }
    // Whatever holds it up (a stalled server, a slow one), this connection
    // cannot serve the rest in time either: drop it, its other jobs retry.
    if (hit) c->close();
  }
  if (expired) {
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
  // Demand jobs go out on the lane now (once merging is over: a job is
  // final when written).
  std::erase_if(jobs, [&](const JobPtr& j) { return j->urgent && lane_send(j); });
  if (!jobs.empty()) asio::post(io_, [this, jobs = std::move(jobs)]() mutable { enqueue(std::move(jobs)); });
}

void HttpBackend::Impl::make_urgent(uint64_t tag) {
  asio::post(io_, [this, tag] { raise(tag); });
}

size_t HttpBackend::Impl::reap(std::span<ReadCompletion> out) {
  lane_reap();
  size_t n = 0;
  while (n < out.size() && !lane_done_.empty()) {
    out[n++] = lane_done_.front();
    lane_done_.pop_front();
  }
  std::lock_guard lock(mu_);
  while (n < out.size() && !done_.empty()) {
    out[n++] = done_.front();
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
int HttpBackend::completion_fd() const { return impl_->completion_fd(); }
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
  out.lane_requests = c.lane_requests.load(std::memory_order_relaxed);
  return out;
}

std::shared_ptr<Backend> open_http(const HttpOptions& options) { return std::make_shared<HttpBackend>(options); }

bool is_http_url(const std::string& path) { return path.rfind("http://", 0) == 0 || path.rfind("https://", 0) == 0; }

}  // namespace faultline

// SPDX-License-Identifier: Apache-2.0
// HttpBackend's connections (http_backend_impl.h): connecting (and TLS),
// the pinning request at open, a batch of pipelined range requests and
// their answers, and the scheduling of jobs onto connections. Everything
// here runs on the backend's I/O thread.
#include "http_backend_impl.h"

namespace faultline {

using namespace http_impl;

namespace http_impl {

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

}  // namespace http_impl

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

// The checks every range answer passes before its body is used: 206, the
// pinned validators, the asked range of an object of the pinned size.
Verdict HttpBackend::Impl::judge(const http::response_header<>& h, boost::optional<uint64_t> content_length,
                                 const Job& job) const {
  unsigned status = h.result_int();
  if (status == 412) return {ESTALE, false, "the object changed (412 Precondition Failed)"};
  if (status >= 500 || status == 408 || status == 429)
    return {0, true, "the server answered " + std::to_string(status)};
  if (status != 206)
    return {EIO, false,
            "the server answered " + std::to_string(status) + " " + std::string(h.reason()) +
                (status == 200 ? " (it ignored the Range header)" : "")};
  std::string changed = validator_problem(h);
  if (!changed.empty()) return {ESTALE, false, "the object changed (" + changed + ")"};
  const uint64_t want = job.length;
  auto it = h.find(http::field::content_range);
  uint64_t first = 0, last = 0, total = 0;
  bool star = false;
  if (it == h.end() ||
      !parse_content_range(std::string_view(it->value().data(), it->value().size()), &first, &last, &total, &star) ||
      star || first != job.offset || last != job.offset + want - 1 || total != size_) {
    if (total != size_ && total != 0)
      return {ESTALE, false, "the object changed (its size is now " + std::to_string(total) + ")"};
    std::string got = it == h.end() ? "none" : std::string(it->value());
    return {0, true,
            "the server answered Content-Range " + got + " for bytes " + std::to_string(job.offset) + "-" +
                std::to_string(job.offset + want - 1)};
  }
  if (!content_length || *content_length != want)
    return {0, true, "the server answered a 206 without the right Content-Length"};
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
  // (Jobs the demand lane hands back may be due before what the watchdog waits for.)
  bool arm = false;
  for (JobPtr& j : jobs) {
    if (stopping_) break;
    arm |= j->deadline < watch_.expiry();
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

// Before reconnecting after `failures` (>= 1) failures in a row: 1 ms
// doubling up to 1 s, at most a quarter of the deadline.
Clock::duration HttpBackend::Impl::backoff(unsigned failures) const {
  return std::min<Clock::duration>({kFirstBackoff * (1u << std::min(failures - 1, 20u)), kMaxBackoff,
                                    Clock::duration(options_.deadline) / 4});
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
      c.pause.expires_after(backoff(c.failures));
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
  Verdict v = judge(h, p.content_length(), job);
  if (v.retry) co_return Outcome{Outcome::kRetry, v.problem};
  const uint64_t want = job.length;
  const int fail = v.fail;
  const std::string& problem = v.problem;
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

}  // namespace faultline

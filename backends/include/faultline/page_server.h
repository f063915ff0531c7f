// SPDX-License-Identifier: Apache-2.0
// PageServer serves one Backend, read-only, to many clients over TCP or Unix
// sockets, with the wire protocol of docs/protocol.md. Clients connect with
// connect_remote() (remote_backend.h) and map the object lazily.
//
// The server runs on a thread of its own (Boost.Asio); the backend is used
// only from that thread, so any Backend works, including one that is not
// thread-safe. The caller must not use `source` elsewhere while the server
// runs (the Backend contract allows one user at a time).
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "faultline/backend.h"
#include "faultline/log.h"

namespace faultline {

struct PageServerOptions {
  // "HOST:PORT" (TCP; port 0 picks a free port; "[::1]:PORT" for IPv6) or
  // "unix:/path". A socket file left there by a server that is gone is
  // replaced; a socket some server accepts on, or a file that is not a
  // socket, is refused (Error naming the path). stop() removes the socket
  // file only if the path still names the socket this server bound.
  std::vector<std::string> listen = {"127.0.0.1:0"};
  // Empty: no authentication. Otherwise both sides prove they know it by
  // HMAC-SHA256 challenge and response; it never crosses the wire, and a
  // client that has not proved it gets nothing but the challenge.
  std::string secret;
  size_t max_connections = 64;             // more are accepted and closed at once
  uint32_t max_request_bytes = 4u << 20;   // largest read one request may ask for
  size_t max_in_flight_bytes = 64u << 20;  // per connection: asked for, not yet sent
  std::chrono::milliseconds idle_timeout{60000};  // a connection silent that long is closed
  // After its last event the server thread polls this long before it
  // sleeps, so a client faulting page after page never waits for it to
  // wake up. 0: sleep at once (no CPU burnt while idle-ish).
  std::chrono::microseconds busy_poll{50};
  // Where the server's events go (faultline/log.h), one line each, from the
  // server thread: connections and disconnections as kInfo, peers closed
  // for a protocol error, a failed challenge or silence as kWarning, backend
  // reads that failed as kError. Empty: log_to_stderr, which leaves out kInfo.
  LogSink log;
};

// Upper bounds of the request-latency histogram, in microseconds (from the
// READ frame received to its answer written to the socket). Requests slower
// than the last bound fall in one more, unbounded, bucket.
inline constexpr std::array<uint64_t, 14> kPageServerLatencyBoundsUs = {
    50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000, 5000000};

// The server's counters since it started. stats() reads them one by one while
// the server runs, so a snapshot taken during traffic may be a few events
// apart between fields; each field is exact.
struct PageServerStats {
  uint64_t connections_accepted = 0;
  uint64_t connections_rejected = 0;  // over max_connections
  uint64_t connections_open = 0;
  uint64_t requests = 0;              // read requests answered (data, zeros or an error), answer written
  uint64_t bytes_sent = 0;            // bytes of object data sent (DATA payloads)
  uint64_t zero_bytes = 0;            // bytes answered with a ZERO frame (all zero, not sent)
  uint64_t protocol_errors = 0;       // peers disconnected for a malformed frame or a broken limit
  uint64_t auth_failures = 0;         // peers that failed the challenge
  uint64_t idle_timeouts = 0;         // peers closed for silence
  uint64_t read_errors = 0;           // backend reads that failed (sent as error responses)
  uint64_t raised = 0;                // read-ahead requests a client's RAISE made urgent
  // Answered requests by latency: latency_buckets[i] counts those above
  // bound i-1 and at most bound i of kPageServerLatencyBoundsUs; the last
  // entry, those above every bound. They add up to `requests`.
  std::array<uint64_t, kPageServerLatencyBoundsUs.size() + 1> latency_buckets{};
  uint64_t latency_sum_ns = 0;  // the latencies of all answered requests, added up
};

class PageServer {
 public:
  // Binds every address in options.listen and starts serving. Throws Error
  // naming the address if one cannot be bound, or naming the option if an
  // option is invalid.
  PageServer(std::shared_ptr<Backend> source, PageServerOptions options);
  ~PageServer();  // stop()
  PageServer(const PageServer&) = delete;
  PageServer& operator=(const PageServer&) = delete;

  // The bound addresses in listen order, ephemeral ports resolved:
  // "127.0.0.1:40123", "[::1]:40124", "unix:/tmp/s".
  std::vector<std::string> endpoints() const;
  // Closes the listeners and every connection, and joins the server thread.
  // Idempotent; safe from any thread but the server's own (the log callback).
  void stop();
  PageServerStats stats() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace faultline

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

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "faultline/backend.h"

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
  // Called on the server thread for connections, disconnections and errors
  // (one line each, no newline). May be empty.
  std::function<void(const std::string&)> log;
};

struct PageServerStats {
  uint64_t connections_accepted = 0;
  uint64_t connections_rejected = 0;  // over max_connections
  uint64_t connections_open = 0;
  uint64_t requests = 0;              // read requests served (with data or an error code)
  uint64_t bytes_sent = 0;            // payload bytes of read responses
  uint64_t protocol_errors = 0;       // peers disconnected for a malformed frame or a broken limit
  uint64_t auth_failures = 0;         // peers that failed the challenge
  uint64_t idle_timeouts = 0;         // peers closed for silence
  uint64_t read_errors = 0;           // backend reads that failed (sent as error responses)
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

// SPDX-License-Identifier: Apache-2.0
// HttpBackend: a read-only Backend over an http:// or https:// URL (a web
// server, an S3-compatible store, a CDN), read with Range requests.
//
// Opening pins the object: a first ranged GET learns its size (from
// Content-Range) and its ETag or Last-Modified; every later range is sent
// with If-Match (or If-Unmodified-Since), and every answer's validator is
// compared with the pinned one. A read answered for a changed object fails
// with -ESTALE, and so does every read after it: the runtime never places a
// mix of old and new bytes (the faulting access gets SIGBUS). A server that
// answers a range request with the whole object (200) is refused at open.
//
// Reads go out on a pool of keep-alive connections, several requests
// pipelined on each, adjacent reads merged into one range. Demand reads
// (ReadRequest::urgent) are sent first, and read-ahead and prefetch never
// occupy every connection, so a fault never waits behind a long prefetch.
// A 5xx answer or a lost connection is retried with backoff until the read's
// deadline, past which it completes with -ETIMEDOUT (SIGBUS for the pages).
// Over plain http, demand reads go on one more connection that the fault
// thread writes and reads itself (the demand lane: no hop to another thread,
// a brief busy-poll for the answer); everything else runs on one I/O thread
// of the backend's own. Memory is bounded (a buffer per connection,
// bookkeeping per read in flight).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "faultline/backend.h"
#include "faultline/log.h"

namespace faultline {

struct HttpOptions {
  std::string url;  // http://HOST[:PORT]/PATH[?QUERY] or https://...; a query (a presigned URL) is never logged
  uint32_t connections = 4;              // keep-alive connections, 1..64
  uint32_t requests_per_connection = 4;  // pipelined requests in flight on each, 1..64
  // Adjacent reads are merged into one range up to this many bytes (a
  // longer read goes out alone, as one range). 4 KiB..64 MiB.
  uint32_t max_request_bytes = 4u << 20;
  // Bytes asked for and not yet received, all connections together; read-ahead
  // and prefetch may use three quarters of it. 64 KiB..1 GiB, at least
  // max_request_bytes.
  uint64_t max_in_flight_bytes = 64u << 20;
  uint32_t queue_depth = 64;  // runtime reads in flight, 1..4096
  // A read not served within this time of its submission completes with
  // -ETIMEDOUT. Also bounds open_http().
  std::chrono::milliseconds deadline{10000};
  // A connect, TLS handshake or response that makes no progress for this
  // long drops the connection (the reads on it are retried).
  std::chrono::milliseconds io_timeout{5000};
  // Over plain http, after sending a demand read the fault thread polls
  // for its answer this long before sleeping (when polling has been paying
  // off: see SpinPolicy). 0: never poll.
  std::chrono::microseconds busy_poll{50};
  // https: certificates are verified against the system's store, or against
  // the CA certificates in this PEM file; the name in the URL must match.
  std::string ca_file;
  bool insecure_skip_verify = false;  // for tests only: accept any certificate
  // Authentication, sent with every request and never logged: a header
  // "Name: value", or a file holding one line, either "Name: value" or a
  // bare token (sent as "Authorization: Bearer TOKEN"). At most one of the two.
  std::string auth_header;
  std::string auth_file;
  LogSink log;  // warnings (a changed object, reads that time out); empty: stderr
};

// Counters of one backend; any thread may read them.
struct HttpCounters {
  uint64_t requests = 0;     // range requests answered (after merging)
  uint64_t bytes = 0;        // body bytes received
  uint64_t retries = 0;      // requests sent again (5xx, connection lost)
  uint64_t connects = 0;     // connections opened, including the first
  uint64_t timeouts = 0;     // reads failed with -ETIMEDOUT
  uint64_t stale = 0;        // reads failed because the object changed
  uint64_t raised = 0;       // queued background requests make_urgent() moved to the demand queue
  uint64_t lane_requests = 0;  // of `requests`, answered on the demand lane (plain http)
};

class HttpBackend final : public Backend {
 public:
  // Connects, pins the object and starts the I/O thread. Throws Error naming
  // the URL (without its query) and the problem: a bad URL or option,
  // refused connection, TLS verification failure, an HTTP error status, a
  // server that ignores Range, an object without ETag or Last-Modified.
  explicit HttpBackend(const HttpOptions& options);
  ~HttpBackend() override;

  uint64_t size() const override;
  std::string name() const override;
  uint32_t queue_depth() const override;
  int completion_fd() const override;
  void submit(std::span<const ReadRequest> reads) override;
  size_t reap(std::span<ReadCompletion> out) override;
  // A request still queued moves to the demand queue; one on the wire stays.
  void make_urgent(uint64_t tag) override;

  // A blocking read of out.size() bytes at offset, with the same pinning,
  // retries and deadline; from any thread but the fault loop's. Returns the
  // bytes read (short only at the end of the object) or a negative errno.
  int64_t read_range(uint64_t offset, std::span<std::byte> out);

  HttpCounters counters() const;
  // The ETag (or, without one, the Last-Modified date) pinned at open.
  std::string validator() const;

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// A Backend over the object at options.url (an HttpBackend).
std::shared_ptr<Backend> open_http(const HttpOptions& options);

// Whether `path` is an http:// or https:// URL (for tools that take a file or a URL).
bool is_http_url(const std::string& path);

}  // namespace faultline

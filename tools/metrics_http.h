// SPDX-License-Identifier: Apache-2.0
// MetricsHttpServer: the HTTP/1.1 endpoint of `faultline serve --metrics`
// (Boost.Beast). It serves one resource, GET (or HEAD) /metrics, whose body
// `render` makes afresh for each request; any other path is 404 and any
// other method on /metrics 405. Kept apart from the page server: it only
// reads what `render` returns.
//
// It runs on a thread of its own; `render` is called there and must be
// thread-safe with respect to the rest of the program (PageServer::stats()
// is). Connections are few and short (a scraper every few seconds): at most
// kMaxConnections at once, more are closed at once, and one silent for
// kIdleTimeout is closed.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>

namespace faultline::tools {

class MetricsHttpServer {
 public:
  static constexpr size_t kMaxConnections = 16;
  static constexpr std::chrono::seconds kIdleTimeout{30};

  // Binds `address`, "HOST:PORT" (port 0 picks a free port; "[::1]:PORT"
  // for IPv6), and starts serving. Throws Error naming the address if it
  // cannot be parsed, resolved or bound.
  MetricsHttpServer(const std::string& address, std::function<std::string()> render);
  ~MetricsHttpServer();  // stop()
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  // The bound address, ephemeral port resolved: "127.0.0.1:40123", "[::1]:9100".
  std::string endpoint() const;
  // Closes the listener and every connection and joins the thread. Idempotent.
  void stop();

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace faultline::tools

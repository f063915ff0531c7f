// SPDX-License-Identifier: Apache-2.0
// MetricsHttpServer: Boost.Beast on one Asio thread. Every object (the
// acceptor, the sessions) lives on that thread; stop() posts the shutdown
// there and then lets the io_context run dry, so every handler (holding a
// session) runs before the thread ends and nothing outlives the server.
#include "metrics_http.h"

#include <atomic>
#include <optional>
#include <set>
#include <thread>
#include <utility>  // (before Asio: 1.74's awaitable.hpp uses std::exchange without it)

#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include "faultline/error.h"

namespace faultline::tools {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

// Prometheus' text exposition format, version 0.0.4.
constexpr const char* kMetricsType = "text/plain; version=0.0.4; charset=utf-8";
constexpr size_t kHeaderLimit = 8 * 1024;
constexpr size_t kBodyLimit = 64 * 1024;  // a GET has none; a POST is answered 405

// The candidates for "HOST:PORT" ("[v6]:PORT"), or Error naming the address.
tcp::resolver::results_type resolve(asio::io_context& io, const std::string& address) {
  const std::string where = "metrics: cannot listen on '" + address + "': ";
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size())
    throw Error(where + "expected HOST:PORT (e.g. 127.0.0.1:9464, [::1]:0)");
  std::string host = address.substr(0, colon);
  const std::string port = address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos || std::stoul(port) > 65535)
    throw Error(where + "port '" + port + "' is not a number from 0 to 65535");
  boost::system::error_code ec;
  tcp::resolver resolver(io);
  auto results = resolver.resolve(host, port, tcp::resolver::numeric_service, ec);
  if (ec) throw Error(where + ec.message());
  return results;
}

std::string format(const tcp::endpoint& ep) {
  const std::string host = ep.address().to_string();
  return (ep.address().is_v6() ? "[" + host + "]" : host) + ":" + std::to_string(ep.port());
}

// One HTTP connection: requests read and answered one after another.
struct Session {
  explicit Session(tcp::socket socket) : stream(std::move(socket)) {}
  beast::tcp_stream stream;
  beast::flat_buffer buffer;
  std::optional<http::request_parser<http::string_body>> parser;
  http::response<http::string_body> response;
};

}  // namespace

class MetricsHttpServer::Impl {
 public:
  Impl(const std::string& address, std::function<std::string()> render);
  ~Impl() { stop(); }
  void stop();
  std::string endpoint;

 private:
  void accept();
  void read(const std::shared_ptr<Session>& s);
  void respond(const std::shared_ptr<Session>& s);
  void close(const std::shared_ptr<Session>& s);

  std::function<std::string()> render_;
  asio::io_context io_{1};
  tcp::acceptor acceptor_{io_};
  std::set<std::shared_ptr<Session>> sessions_;
  bool stopping_ = false;
  std::thread thread_;
  std::atomic<bool> stopped_{false};
};

MetricsHttpServer::Impl::Impl(const std::string& address, std::function<std::string()> render)
    : render_(std::move(render)) {
  std::string problem = "no address";
  for (const auto& candidate : resolve(io_, address)) {
    boost::system::error_code ec;
    tcp::acceptor a(io_);
    a.open(candidate.endpoint().protocol(), ec);
    if (!ec) a.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) a.bind(candidate.endpoint(), ec);
    if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
    if (!ec) endpoint = format(a.local_endpoint(ec));
    if (ec) {
      problem = ec.message();
      continue;
    }
    acceptor_ = std::move(a);
    break;
  }
  if (!acceptor_.is_open()) throw Error("metrics: cannot listen on '" + address + "': " + problem);
  accept();
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "faultline-http");
    io_.run();  // until stop(): the acceptor always has an accept pending
  });
}

void MetricsHttpServer::Impl::stop() {
  if (stopped_.exchange(true)) return;
  asio::post(io_, [this] {
    stopping_ = true;
    boost::system::error_code ignored;
    acceptor_.close(ignored);
    for (const auto& s : sessions_) s->stream.socket().close(ignored);
    sessions_.clear();
  });
  if (thread_.joinable()) thread_.join();
}

void MetricsHttpServer::Impl::accept() {
  acceptor_.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
    if (stopping_) return;
    if (ec) {
      if (ec == asio::error::operation_aborted) return;
      // Out of descriptors, say: try again later rather than spin on it.
      auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(100));
      timer->async_wait([this, timer](boost::system::error_code) {
        if (!stopping_) accept();
      });
      return;
    }
    if (sessions_.size() >= kMaxConnections) {
      socket.close(ec);
    } else {
      auto s = std::make_shared<Session>(std::move(socket));
      sessions_.insert(s);
      read(s);
    }
    accept();
  });
}

void MetricsHttpServer::Impl::read(const std::shared_ptr<Session>& s) {
  s->parser.emplace();
  s->parser->header_limit(kHeaderLimit);
  s->parser->body_limit(kBodyLimit);
  s->stream.expires_after(kIdleTimeout);
  http::async_read(s->stream, s->buffer, *s->parser, [this, s](beast::error_code ec, size_t) {
    if (stopping_) return;
    if (ec) return close(s);  // the peer is done, silent too long, or did not speak HTTP
    respond(s);
  });
}

void MetricsHttpServer::Impl::respond(const std::shared_ptr<Session>& s) {
  const http::request<http::string_body>& request = s->parser->get();
  http::response<http::string_body>& response = s->response;
  response = {};
  response.version(request.version());
  response.keep_alive(request.keep_alive());
  response.set(http::field::server, "faultline");
  std::string_view target(request.target().data(), request.target().size());
  target = target.substr(0, target.find('?'));
  if (target != "/metrics") {
    response.result(http::status::not_found);
    response.set(http::field::content_type, "text/plain; charset=utf-8");
    response.body() = "not found: this server has only /metrics\n";
  } else if (request.method() != http::verb::get) {
    response.result(http::status::method_not_allowed);
    response.set(http::field::allow, "GET");
    response.set(http::field::content_type, "text/plain; charset=utf-8");
    response.body() = "method not allowed: /metrics takes GET\n";
  } else {
    response.result(http::status::ok);
    response.set(http::field::content_type, kMetricsType);
    try {
      response.body() = render_();
    } catch (const std::exception& e) {
      response.result(http::status::internal_server_error);
      response.set(http::field::content_type, "text/plain; charset=utf-8");
      response.body() = std::string("cannot render the metrics: ") + e.what() + "\n";
    }
  }
  response.prepare_payload();
  s->stream.expires_after(kIdleTimeout);
  http::async_write(s->stream, response, [this, s](beast::error_code ec, size_t) {
    if (stopping_) return;
    if (ec || !s->response.keep_alive()) return close(s);
    read(s);
  });
}

void MetricsHttpServer::Impl::close(const std::shared_ptr<Session>& s) {
  boost::system::error_code ignored;
  s->stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  s->stream.socket().close(ignored);
  sessions_.erase(s);
}

MetricsHttpServer::MetricsHttpServer(const std::string& address, std::function<std::string()> render)
    : impl_(std::make_unique<Impl>(address, std::move(render))) {}
MetricsHttpServer::~MetricsHttpServer() { stop(); }
std::string MetricsHttpServer::endpoint() const { return impl_->endpoint; }
void MetricsHttpServer::stop() { impl_->stop(); }

}  // namespace faultline::tools

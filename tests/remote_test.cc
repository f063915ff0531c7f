// PageServer and RemoteBackend together on loopback: contents byte for byte
// through the runtime, many clients, authentication, every class of
// malformed frame, limits, and a server that dies mid-transfer.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <mutex>
#include <thread>

#include "faultline/faultline.h"
#include "faultline/page_server.h"
#include "faultline/remote_backend.h"
#include "remote_protocol.h"
#include "test_util.h"

using namespace faultline;
using namespace faultline::test;
using namespace std::chrono_literals;

namespace {

constexpr size_t kKiB = 1024, kMiB = 1024 * 1024;

long first_mismatch(const std::byte* got, const std::byte* want, size_t n) {
  for (size_t i = 0; i < n; ++i)
    if (got[i] != want[i]) return static_cast<long>(i);
  return -1;
}

// Collects the server's log lines for checks, thread-safely.
struct LogSink {
  std::mutex mu;
  std::vector<std::string> lines;
  std::function<void(const std::string&)> callback() {
    return [this](const std::string& l) {
      std::lock_guard lock(mu);
      lines.push_back(l);
    };
  }
  bool contains(const std::string& needle) {
    std::lock_guard lock(mu);
    for (const auto& l : lines)
      if (l.find(needle) != std::string::npos) return true;
    return false;
  }
  std::string all() {
    std::lock_guard lock(mu);
    std::string s;
    for (const auto& l : lines) s += l + "\n";
    return s;
  }
};

// Polls `cond` for up to `limit`.
template <class F>
bool eventually(F cond, std::chrono::milliseconds limit = 5000ms) {
  auto until = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < until) {
    if (cond()) return true;
    std::this_thread::sleep_for(1ms);
  }
  return cond();
}

std::shared_ptr<Backend> memory(const std::vector<std::byte>& data) {
  return std::make_shared<MemoryBackend>(data);
}

}  // namespace

TEST_CASE("a region over a page server holds the served bytes, TCP and unix socket", "[remote]") {
  auto data = pattern(3 * kMiB + 1234, 7);
  TempFile dir_anchor(size_t{1});
  std::string unix_path = dir_anchor.path() + ".sock";
  PageServerOptions so;
  so.listen = {"127.0.0.1:0", "unix:" + unix_path};
  PageServer server(memory(data), so);
  auto eps = server.endpoints();
  REQUIRE(eps.size() == 2);
  CHECK(eps[0].rfind("127.0.0.1:", 0) == 0);
  CHECK(eps[0] != "127.0.0.1:0");
  CHECK(eps[1] == "unix:" + unix_path);
  Runtime rt;
  for (const std::string& ep : eps) {
    RemoteOptions ro;
    ro.address = ep;
    auto backend = connect_remote(ro);
    CHECK(backend->size() == data.size());
    CHECK(backend->name() == "remote " + ep);
    for (uint32_t fill : {4096u, 65536u, 2u * 1024 * 1024}) {
      INFO(ep << " fill " << fill);
      RegionOptions o;
      o.fill_size = fill;
      Region r = rt.map(backend, o);
      REQUIRE(first_mismatch(r.data(), data.data(), data.size()) == -1);
      CHECK(r.stats().errors == 0);
    }
  }
  CHECK(server.stats().connections_accepted == 2);
  CHECK(server.stats().protocol_errors == 0);
  CHECK(server.stats().bytes_sent >= 2 * data.size());
}

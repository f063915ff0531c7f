// SPDX-License-Identifier: Apache-2.0
// Runtime::adopt() and map_foreign() (faultline/foreign.h) against a second
// process: the test VMM (fake_vmm.cc) creates and registers a userfaultfd
// and sends it in Firecracker's handshake, which this test receives itself;
// the VMM's threads check every byte. Also the options refused for foreign
// memory, overlaps, the owner's exit (wait_exit, map_foreign afterwards),
// and fail(): the guest's next touch gets SIGBUS. No fork: runs under TSan.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "child_process.h"
#include "faultline/faultline.h"
#include "faultline/memory_backend.h"
#include "test_util.h"

#ifdef FAULTLINE_TEST_VMM_PATH

using namespace faultline;
using namespace faultline::test;

namespace {

struct Handshake {
  int uffd = -1;
  pid_t pid = 0;
  nlohmann::json mappings;
  int conn = -1;
  ~Handshake() {
    if (uffd >= 0) ::close(uffd);
    if (conn >= 0) ::close(conn);
  }
};

// Listens on `path`, accepts the VMM and receives its message (20 s at most).
void receive_handshake(const std::string& path, Handshake* h) {
  int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(l >= 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::snprintf(a.sun_path, sizeof a.sun_path, "%s", path.c_str());
  ::unlink(path.c_str());
  REQUIRE(bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  REQUIRE(listen(l, 1) == 0);
  pollfd p{l, POLLIN, 0};
  REQUIRE(poll(&p, 1, 20000) == 1);
  h->conn = accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
  ::close(l);
  ::unlink(path.c_str());
  REQUIRE(h->conn >= 0);
  ucred peer{};
  socklen_t len = sizeof peer;
  REQUIRE(getsockopt(h->conn, SOL_SOCKET, SO_PEERCRED, &peer, &len) == 0);
  h->pid = peer.pid;
  p = {h->conn, POLLIN, 0};
  REQUIRE(poll(&p, 1, 20000) == 1);
  std::vector<char> buf(65536);
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
  iovec iov{buf.data(), buf.size()};
  msghdr m{};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = control;
  m.msg_controllen = sizeof control;
  ssize_t n = recvmsg(h->conn, &m, MSG_CMSG_CLOEXEC);
  REQUIRE(n > 0);
  cmsghdr* c = CMSG_FIRSTHDR(&m);
  REQUIRE(c != nullptr);
  std::memcpy(&h->uffd, CMSG_DATA(c), sizeof(int));
  h->mappings = nlohmann::json::parse(std::string(buf.data(), static_cast<size_t>(n)));
}

std::vector<std::byte> image_bytes() {
  std::vector<std::byte> bytes = pattern(3 * 1024 * 1024 + 3 * 4096, 21);
  std::fill(bytes.begin() + 1024 * 1024, bytes.begin() + 1536 * 1024, std::byte{0});
  return bytes;
}

}  // namespace

TEST_CASE("Runtime::adopt and map_foreign serve another process's memory", "[foreign][runtime]") {
  TempFile raw(image_bytes());
  const std::string sock = raw.path() + ".sock";
  auto backend = std::make_shared<MemoryBackend>(image_bytes());
  ChildProcess v(FAULTLINE_TEST_VMM_PATH, {"ok", sock, raw.path(), "2", "4", "page_size"});
  Handshake h;
  receive_handshake(sock, &h);
  REQUIRE(h.mappings.size() == 2);

  Runtime rt;
  CHECK_THAT(error_of([&] {
               int devnull = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
               rt.adopt(devnull, h.pid);
             }),
             Catch::Contains("is not a userfaultfd (it is /dev/null)"));
  ForeignSpace space = rt.adopt(std::exchange(h.uffd, -1), h.pid);
  CHECK(space.pid() == h.pid);
  CHECK_FALSE(space.exited());

  const nlohmann::json& m0 = h.mappings[0];
  const uintptr_t base0 = m0["base_host_virt_addr"].get<uintptr_t>();
  const uint64_t size0 = m0["size"].get<uint64_t>();
  // The options that would touch the memory from here are refused, by name.
  auto refused = [&](RegionOptions o) { return error_of([&] { rt.map_foreign(space, base0, size0, backend, o); }); };
  RegionOptions o;
  o.budget.bytes = 1 << 20;
  CHECK_THAT(refused(o), Catch::Contains("RegionOptions.budget.bytes = 1048576 does not apply"));
  o = {};
  o.writable = true;
  o.track_dirty = true;
  CHECK_THAT(refused(o), Catch::Contains("RegionOptions.track_dirty does not apply"));
  o = {};
  o.writable = true;
  CHECK_THAT(refused(o), Catch::Contains("RegionOptions.writable"));
  o = {};
  o.length = 4096;
  CHECK_THAT(refused(o), Catch::Contains("RegionOptions.length = 4096 differs"));
  CHECK_THAT(error_of([&] { rt.map_foreign(space, base0 + 1, size0, backend); }),
             Catch::Contains("must be non-zero multiples of the page size (4096)"));
  {
    Runtime with_budget([] {
      RuntimeOptions ro;
      ro.budget.bytes = 1 << 20;
      return ro;
    }());
    CHECK_THAT(error_of([&] { with_budget.map_foreign(space, base0, size0, backend); }),
               Catch::Contains("another Runtime"));
  }

  // The VMM's threads are faulting already: those faults wait for these.
  std::vector<Region> regions;
  for (const nlohmann::json& m : h.mappings) {
    RegionOptions ro;
    ro.offset = m["offset"].get<uint64_t>();
    ro.record_touches = true;
    regions.push_back(rt.map_foreign(space, m["base_host_virt_addr"].get<uintptr_t>(), m["size"].get<uint64_t>(),
                                     backend, ro));
    CHECK(regions.back().data() == nullptr);
    CHECK(regions.back().address() == m["base_host_virt_addr"].get<uintptr_t>());
  }
  CHECK_THAT(error_of([&] { rt.map_foreign(space, base0 + 4096, 4096, backend); }), Catch::Contains("overlaps"));

  INFO("VMM stderr: " << v.stderr_text());
  CHECK(v.wait(60000) == 0);  // every byte matched
  CHECK(v.read_line().find("all match") != std::string::npos);
  REQUIRE(space.wait_exit(std::chrono::seconds(10)));
  CHECK(space.exited());
  uint64_t faults = 0, touched = 0;
  for (const Region& r : regions) {
    faults += r.stats().faults;
    touched += r.touched_chunks().size();
  }
  CHECK(faults > 0);
  CHECK(touched == (regions[0].size() + 65535) / 65536 + (regions[1].size() + 65535) / 65536);
  CHECK_THAT(error_of([&] { rt.map_foreign(space, base0, size0, backend); }), Catch::Contains("has exited"));
  regions.clear();  // (after the exit: closing is still clean)
}

TEST_CASE("ForeignSpace::fail: the guest's touch gets SIGBUS instead of hanging", "[foreign][runtime]") {
  TempFile raw(image_bytes());
  const std::string sock = raw.path() + ".sock";
  auto backend = std::make_shared<MemoryBackend>(image_bytes());
  // overlap-touch: the VMM waits for our hang-up, then reads its first page.
  ChildProcess v(FAULTLINE_TEST_VMM_PATH, {"overlap-touch", sock, raw.path(), "2", "1", "both"});
  Handshake h;
  receive_handshake(sock, &h);
  Runtime rt;
  ForeignSpace space = rt.adopt(std::exchange(h.uffd, -1), h.pid);
  const nlohmann::json& m1 = h.mappings[1];
  Region r = rt.map_foreign(space, m1["base_host_virt_addr"].get<uintptr_t>(), m1["size"].get<uint64_t>(), backend,
                            [&] {
                              RegionOptions o;
                              o.offset = m1["offset"].get<uint64_t>();
                              return o;
                            }());
  const nlohmann::json& m0 = h.mappings[0];  // no region: named to fail() directly
  space.fail({{m0["base_host_virt_addr"].get<uintptr_t>(), m0["size"].get<uint64_t>()}});
  CHECK_THAT(error_of([&] { rt.map_foreign(space, m0["base_host_virt_addr"].get<uintptr_t>(), 4096, backend); }),
             Catch::Contains("fail() was called"));
  ::close(std::exchange(h.conn, -1));
  INFO("VMM stderr: " << v.stderr_text());
  CHECK(v.wait(30000) == 0);
  CHECK(v.read_line() == "SIGBUS as expected");
  CHECK(space.wait_exit(std::chrono::seconds(10)));
}

#endif

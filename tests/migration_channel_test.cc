// SPDX-License-Identifier: Apache-2.0
// The migration stream's Channel gathers small PAGES and ZERO frames into
// one write and reads small frames out of a buffer: every frame still
// arrives whole and in order, a frame that asks for an answer is never held
// back, and a frame waiting in the read buffer counts as readable.
#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <thread>
#include <vector>

#include "migration_protocol.h"
#include "unique_fd.h"

using faultline::detail::UniqueFd;
using faultline::migration::Channel;
using faultline::migration::Frame;

namespace {

constexpr std::chrono::milliseconds kDeadline{2000};

struct Pair {
  Channel a, b;
};

Pair connected() {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  return {Channel(UniqueFd(sv[0]), kDeadline, "a"), Channel(UniqueFd(sv[1]), kDeadline, "b")};
}

std::vector<std::byte> page_of(uint64_t n, size_t size = 4096) {
  std::vector<std::byte> p(size);
  for (size_t i = 0; i < size; ++i) p[i] = std::byte((n * 131 + i) % 251);
  return p;
}

}  // namespace

TEST_CASE("migration channel: small frames gathered arrive whole and in order, a control frame flushes them",
          "[migration][channel]") {
  Pair p = connected();
  // 200 pages of 4 KiB (more than one 256 KiB gathering), a large frame
  // between them, zero runs, then ROUND_END, which must not wait. (From a
  // thread: more than the socket holds.)
  std::string sender_error;
  std::thread sender([&] {
    try {
      for (uint64_t i = 0; i < 200; ++i) {
        p.a.send(Frame::kPages, 0, i * 4096, page_of(i));
        if (i == 100) p.a.send(Frame::kPages, 0, 1u << 30, page_of(999, 256 * 1024));
        if (i % 50 == 0) {
          std::byte len[8] = {};
          len[1] = std::byte(0x10);  // 4096
          p.a.send(Frame::kZero, 0, (1ull << 32) + i, len);
        }
      }
      p.a.send(Frame::kRoundEnd, 0, 7, {});
    } catch (const std::exception& e) {
      sender_error = e.what();  // after a failed check below stopped the reading
    }
  });
  struct Join {
    std::thread& t;
    ~Join() {
      if (t.joinable()) t.join();
    }
  } join{sender};
  const std::initializer_list<Channel::Allowed> allowed = {
      {Frame::kPages, 1u << 20}, {Frame::kZero, 8}, {Frame::kRoundEnd, 0}};
  for (uint64_t i = 0; i < 200; ++i) {
    faultline::migration::Received r = p.b.receive(allowed);
    REQUIRE(r.type == Frame::kPages);
    REQUIRE(r.id == i * 4096);
    REQUIRE(r.payload.size() == 4096);
    auto want = page_of(i);
    REQUIRE(std::memcmp(r.payload.data(), want.data(), 4096) == 0);
    if (i == 100) {
      r = p.b.receive(allowed);
      REQUIRE(r.id == 1u << 30);
      auto big = page_of(999, 256 * 1024);
      REQUIRE(r.payload.size() == big.size());
      REQUIRE(std::memcmp(r.payload.data(), big.data(), big.size()) == 0);
    }
    if (i % 50 == 0) {
      r = p.b.receive(allowed);
      REQUIRE(r.type == Frame::kZero);
      REQUIRE(r.id == (1ull << 32) + i);
    }
  }
  // The small frames before it were written with it.
  faultline::migration::Received end = p.b.receive(allowed);
  CHECK(end.type == Frame::kRoundEnd);
  CHECK(end.id == 7);
  CHECK_FALSE(p.b.readable());
  sender.join();
  CHECK(sender_error == "");
}

TEST_CASE("migration channel: gathered frames go out before a receive, and buffered ones are readable",
          "[migration][channel]") {
  Pair p = connected();
  p.a.send(Frame::kPages, 0, 0, page_of(1));
  p.a.send(Frame::kPages, 0, 4096, page_of(2));
  // Nothing written yet: the frames wait for more, or for a control frame.
  CHECK_FALSE(p.b.readable());
  // b answers only what it received; a's receive writes the gathered frames
  // first, so the exchange cannot wait on itself.
  p.b.send(Frame::kRoundEnd, 0, 1, {});
  CHECK(p.a.receive({{Frame::kRoundEnd, 0}}).id == 1);
  faultline::migration::Received r = p.b.receive({{Frame::kPages, 4096}});
  CHECK(r.id == 0);
  // The second frame came in the same read: it is in b's buffer, not in
  // the socket, and readable() says so.
  CHECK(p.b.readable());
  CHECK(p.b.receive({{Frame::kPages, 4096}}).id == 4096);
  CHECK_FALSE(p.b.readable());
  CHECK(p.a.bytes_sent() == 2 * (faultline::remote::kHeaderSize + 4096));
}

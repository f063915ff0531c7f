// SPDX-License-Identifier: Apache-2.0
// The wire protocol's codec on its own: checksums, frame parsing and every
// rejection, payload encoders and decoders, HMAC proofs, addresses.
#include <catch2/catch.hpp>
#include <cstring>

#include "faultline/error.h"
#include "remote_protocol.h"

using namespace faultline;
using namespace faultline::remote;

namespace {

std::vector<std::byte> frame(FrameType type, uint8_t flags, uint16_t code, uint64_t id,
                             std::span<const std::byte> payload) {
  std::vector<std::byte> b;
  append_frame(b, type, flags, code, id, payload);
  return b;
}

std::vector<std::byte> bytes(const std::string& s) {
  return std::vector<std::byte>(reinterpret_cast<const std::byte*>(s.data()),
                                reinterpret_cast<const std::byte*>(s.data()) + s.size());
}

}  // namespace

TEST_CASE("CRC-32C matches the published check values", "[remote][protocol]") {
  CHECK(crc32c(0, "123456789", 9) == 0xE3069283u);
  CHECK(crc32c(0, "", 0) == 0);
  std::vector<uint8_t> zeros(32, 0);
  CHECK(crc32c(0, zeros.data(), 32) == 0x8A9136AAu);  // RFC 3720 B.4
  std::vector<uint8_t> ones(32, 0xff);
  CHECK(crc32c(0, ones.data(), 32) == 0x62A8AB43u);
  // Incremental equals one pass, at every split (the SSE4.2 path's 8-byte
  // steps and tails, and the table path agree).
  std::vector<uint8_t> v(1000);
  for (size_t i = 0; i < v.size(); ++i) v[i] = uint8_t(i * 31 + 7);
  uint32_t whole = crc32c(0, v.data(), v.size());
  for (size_t split : {0, 1, 7, 8, 9, 500, 999, 1000})
    CHECK(crc32c(crc32c(0, v.data(), split), v.data() + split, v.size() - split) == whole);
}

TEST_CASE("frames round-trip, byte for byte, in little-endian layout", "[remote][protocol]") {
  auto payload = encode_read({0x0102030405060708ull, 0x11223344});
  auto f = frame(FrameType::kRead, kReadUrgent, 0, 0xA1A2A3A4A5A6A7A8ull, payload);
  REQUIRE(f.size() == kHeaderSize + kReadSize);
  CHECK(f[0] == std::byte{4});
  CHECK(f[1] == std::byte{1});
  CHECK(f[4] == std::byte{16});
  CHECK(f[8] == std::byte{0xA8});
  CHECK(f[15] == std::byte{0xA1});
  CHECK(f[kHeaderSize] == std::byte{0x08});

  ParseResult r = parse_frame(f, Receiver::kServer, 0);
  REQUIRE(r.status == ParseResult::kFrame);
  CHECK(r.consumed == f.size());
  CHECK(r.header.type == FrameType::kRead);
  CHECK(r.header.flags == kReadUrgent);
  CHECK(r.header.id == 0xA1A2A3A4A5A6A7A8ull);
  ReadRequestWire rw;
  REQUIRE(decode_read(r.payload, &rw).empty());
  CHECK(rw.offset == 0x0102030405060708ull);
  CHECK(rw.length == 0x11223344);

  // Every prefix is "need more", never an error or a frame.
  for (size_t n = 0; n < f.size(); ++n)
    CHECK(parse_frame(std::span(f).first(n), Receiver::kServer, 0).status == ParseResult::kNeedMore);
  // Two frames back to back: the first is parsed alone.
  auto two = f;
  two.insert(two.end(), f.begin(), f.end());
  CHECK(parse_frame(two, Receiver::kServer, 0).consumed == f.size());

  Hello h;
  h.capabilities = kCapAuth | kCapZero;
  h.max_request_bytes = 1 << 20;
  h.object_size = 0x123456789abcull;
  h.max_in_flight_bytes = 64 << 20;
  h.idle_timeout_ms = 60000;
  h.nonce = random_nonce();
  Hello h2;
  REQUIRE(decode_hello(encode_hello(h), &h2).empty());
  CHECK(h2.magic == kMagic);
  CHECK(h2.version == kVersion);
  CHECK(h2.capabilities == h.capabilities);
  CHECK(h2.max_request_bytes == h.max_request_bytes);
  CHECK(h2.object_size == h.object_size);
  CHECK(h2.max_in_flight_bytes == h.max_in_flight_bytes);
  CHECK(h2.idle_timeout_ms == h.idle_timeout_ms);
  CHECK(h2.nonce == h.nonce);
  CHECK(std::memcmp(encode_hello(h).data(), "FLTP", 4) == 0);

  ClientHello c;
  c.capabilities = kCapAuth;
  c.nonce = random_nonce();
  c.mac.fill(9);
  ClientHello c2;
  REQUIRE(decode_client_hello(encode_client_hello(c), &c2).empty());
  CHECK(c2.magic == kMagic);
  CHECK(c2.nonce == c.nonce);
  CHECK(c2.mac == c.mac);
}

TEST_CASE("the frame parser rejects each malformed header with the right code", "[remote][protocol]") {
  auto read = frame(FrameType::kRead, 0, 0, 5, encode_read({0, 4096}));
  auto expect = [](std::span<const std::byte> b, Receiver who, ErrorCode code, const char* text) {
    ParseResult r = parse_frame(b, who, 1 << 20);
    INFO(text);
    REQUIRE(r.status == ParseResult::kError);
    CHECK(r.code == code);
    CHECK_THAT(r.message, Catch::Contains(text));
  };
  auto f = read;
  f[0] = std::byte{0};
  expect(f, Receiver::kServer, ErrorCode::kUnknownType, "unknown frame type 0");
  f[0] = std::byte{9};
  expect(f, Receiver::kServer, ErrorCode::kUnknownType, "unknown frame type 9");
  // RAISE: client to server only, and no payload.
  expect(frame(FrameType::kRaise, 0, 0, 5, {}), Receiver::kClient, ErrorCode::kBadFrame, "RAISE sent the wrong way");
  expect(frame(FrameType::kRaise, 0, 0, 5, bytes("x")), Receiver::kServer, ErrorCode::kTooLarge, "RAISE frame length 1");
  CHECK(parse_frame(frame(FrameType::kRaise, 0, 0, 5, {}), Receiver::kServer, 1 << 20).status == ParseResult::kFrame);
  expect(read, Receiver::kClient, ErrorCode::kBadFrame, "READ sent the wrong way");
  expect(frame(FrameType::kData, 0, 0, 1, bytes("x")), Receiver::kServer, ErrorCode::kBadFrame, "wrong way");
  f = read;
  f[1] = std::byte{2};
  expect(f, Receiver::kServer, ErrorCode::kBadFrame, "unknown flags 2");
  expect(frame(FrameType::kRead, 0, 3, 1, encode_read({0, 1})), Receiver::kServer, ErrorCode::kBadFrame,
         "error code 3");
  expect(frame(FrameType::kRead, 0, 0, 1, bytes("short")), Receiver::kServer, ErrorCode::kBadFrame, "expected 16");
  expect(frame(FrameType::kHello, 0, 0, 0, bytes("x")), Receiver::kClient, ErrorCode::kBadFrame, "expected 68");
  // Oversize lengths are refused from the header alone, before any payload.
  std::byte h[kHeaderSize];
  encode_header(h, FrameType::kError, 0, 1, 0, {});
  uint32_t huge = 0xffffffff;
  std::memcpy(h + 4, &huge, 4);
  expect(std::span(h, kHeaderSize), Receiver::kServer, ErrorCode::kTooLarge, "over the limit 1024");
  encode_header(h, FrameType::kData, 0, 0, 1, {});
  uint32_t big = (1 << 20) + 1;
  std::memcpy(h + 4, &big, 4);
  expect(std::span(h, kHeaderSize), Receiver::kClient, ErrorCode::kTooLarge, "over the limit 1048576");
  // Any bit flipped in the header's checked bytes or the payload.
  for (size_t i = 0; i < read.size(); ++i) {
    if (i >= 16 && i < 20) continue;  // the checksum itself: also caught, below
    f = read;
    f[i] ^= std::byte{0x10};
    ParseResult r = parse_frame(f, Receiver::kServer, 0);
    INFO("byte " << i);
    CHECK(r.status == ParseResult::kError);
  }
  f = read;
  f[17] ^= std::byte{1};
  expect(f, Receiver::kServer, ErrorCode::kBadChecksum, "checksum");
}

TEST_CASE("payload decoders check sizes and reserved fields", "[remote][protocol]") {
  ReadRequestWire r;
  CHECK_THAT(decode_read(encode_read({0, 0}), &r), Catch::Contains("length 0"));
  auto p = encode_read({1, 2});
  p[12] = std::byte{1};
  CHECK_THAT(decode_read(p, &r), Catch::Contains("reserved"));
  CHECK_THAT(decode_read(std::span(p).first(15), &r), Catch::Contains("15 bytes"));
  Hello h;
  auto hp = encode_hello({});
  hp[6] = std::byte{1};
  CHECK_THAT(decode_hello(hp, &h), Catch::Contains("reserved"));
  ClientHello c;
  CHECK_THAT(decode_client_hello(std::span(hp).first(10), &c), Catch::Contains("10 bytes"));
}

TEST_CASE("handshake proofs depend on the secret, the label and both nonces", "[remote][protocol][auth]") {
  auto a = random_nonce(), b = random_nonce();
  CHECK(a != b);
  auto m = handshake_mac("secret", "client", a, b);
  CHECK(mac_equal(m, handshake_mac("secret", "client", a, b)));
  CHECK_FALSE(mac_equal(m, handshake_mac("secret2", "client", a, b)));
  CHECK_FALSE(mac_equal(m, handshake_mac("secret", "server", a, b)));
  CHECK_FALSE(mac_equal(m, handshake_mac("secret", "client", b, a)));
}

TEST_CASE("addresses parse, resolve and print back", "[remote][protocol]") {
  auto v4 = resolve_address("127.0.0.1:8080");
  REQUIRE(v4.size() == 1);
  CHECK(format_address(v4[0]) == "127.0.0.1:8080");
  auto v6 = resolve_address("[::1]:9");
  REQUIRE(v6.size() == 1);
  CHECK(format_address(v6[0]) == "[::1]:9");
  auto un = resolve_address("unix:/tmp/x.sock");
  CHECK(format_address(un.at(0)) == "unix:/tmp/x.sock");
  CHECK_FALSE(resolve_address("localhost:1").empty());
  CHECK_THROWS_WITH(resolve_address("127.0.0.1"), Catch::Contains("expected HOST:PORT"));
  CHECK_THROWS_WITH(resolve_address("127.0.0.1:"), Catch::Contains("bad port"));
  CHECK_THROWS_WITH(resolve_address("127.0.0.1:65536"), Catch::Contains("bad port"));
  CHECK_THROWS_WITH(resolve_address("127.0.0.1:-1"), Catch::Contains("bad port"));
  CHECK_THROWS_WITH(resolve_address(":80"), Catch::Contains("no host"));
  CHECK_THROWS_WITH(resolve_address("[::1:80"), Catch::Contains("[IPV6]:PORT"));
  CHECK_THROWS_WITH(resolve_address("unix:"), Catch::Contains("unix socket path"));
  CHECK_THROWS_WITH(resolve_address("unix:/" + std::string(200, 'a')), Catch::Contains("longer than"));
  CHECK_THROWS_AS(resolve_address("no-such-host.invalid:80"), Error);
}

// SPDX-License-Identifier: Apache-2.0
// libFuzzer target for the page-server protocol decoder (remote_protocol.h):
// the bytes are a stream as one peer would receive it. Frames are parsed in
// a loop as the server and the client do, every accepted payload goes
// through its decoder, and each accepted frame must re-encode to exactly
// the bytes it came from (the parser accepts only what the encoder makes).
// Each input is tried as is and with every frame's checksum fixed up.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <endian.h>

#include <cstring>
#include <span>
#include <vector>

#include "remote_protocol.h"

using namespace faultline::remote;

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

void parse_stream(std::span<const std::byte> stream, Receiver receiver, uint32_t max_payload) {
  size_t pos = 0;
  while (pos < stream.size()) {
    ParseResult f = parse_frame(stream.subspan(pos), receiver, max_payload);
    if (f.status != ParseResult::kFrame) {
      check(f.status == ParseResult::kNeedMore || !f.message.empty());
      return;
    }
    check(f.consumed == kHeaderSize + f.header.length && f.consumed <= stream.size() - pos);
    check(f.payload.data() == stream.data() + pos + kHeaderSize && f.payload.size() == f.header.length);
    std::byte header[kHeaderSize];
    encode_header(header, f.header.type, f.header.flags, f.header.code, f.header.id, f.payload);
    check(std::memcmp(header, stream.data() + pos, kHeaderSize) == 0);
    switch (f.header.type) {
      case FrameType::kHello: {
        Hello h;
        if (decode_hello(f.payload, &h).empty()) check(encode_hello(h).size() == kHelloSize);
        break;
      }
      case FrameType::kClientHello: {
        ClientHello h;
        if (decode_client_hello(f.payload, &h).empty()) {
          auto again = encode_client_hello(h);
          check(std::memcmp(again.data(), f.payload.data(), kClientHelloSize) == 0);
        }
        break;
      }
      case FrameType::kRead: {
        ReadRequestWire r;
        if (decode_read(f.payload, &r).empty()) {
          auto again = encode_read(r);
          check(std::memcmp(again.data(), f.payload.data(), kReadSize) == 0);
        }
        break;
      }
      default:
        break;
    }
    pos += f.consumed;
  }
}

// Random bytes almost never carry a right CRC, so the fuzzer would stop at
// the checksum. A copy with every frame's CRC fixed up reaches the payload
// decoders and the frame-after-frame logic too.
std::vector<std::byte> with_fixed_checksums(std::span<const std::byte> in) {
  std::vector<std::byte> out(in.begin(), in.end());
  size_t pos = 0;
  while (out.size() - pos >= kHeaderSize) {
    uint32_t length;
    std::memcpy(&length, out.data() + pos + 4, 4);
    length = le32toh(length);
    if (length > out.size() - pos - kHeaderSize) break;
    uint32_t crc = crc32c(crc32c(0, out.data() + pos, 16), out.data() + pos + kHeaderSize, length);
    crc = htole32(crc);
    std::memcpy(out.data() + pos + 16, &crc, 4);
    pos += kHeaderSize + length;
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const std::byte> stream(reinterpret_cast<const std::byte*>(data), size);
  auto fixed = with_fixed_checksums(stream);
  for (std::span<const std::byte> s : {stream, std::span<const std::byte>(fixed)}) {
    parse_stream(s, Receiver::kServer, 0);
    parse_stream(s, Receiver::kClient, 1 << 20);
    parse_stream(s, Receiver::kClient, 64);
  }
  return 0;
}

// libFuzzer target for the page-server protocol decoder (remote_protocol.h):
// the bytes are a stream as one peer would receive it. Frames are parsed in
// a loop as the server and the client do, every accepted payload goes
// through its decoder, and each accepted frame must re-encode to exactly
// the bytes it came from (the parser accepts only what the encoder makes).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>

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

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::span<const std::byte> stream(reinterpret_cast<const std::byte*>(data), size);
  parse_stream(stream, Receiver::kServer, 0);
  parse_stream(stream, Receiver::kClient, 1 << 20);
  parse_stream(stream, Receiver::kClient, 64);
  return 0;
}

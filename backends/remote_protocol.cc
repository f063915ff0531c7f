// SPDX-License-Identifier: Apache-2.0
// Wire protocol helpers: see remote_protocol.h and docs/protocol.md.
#include "remote_protocol.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <sys/un.h>

#include <cstring>

#include "crc32c.h"
#include "faultline/error.h"
#include "little_endian.h"

namespace faultline::remote {
namespace {

// The protocol is little-endian whatever the host (runtime/little_endian.h).
void put16(std::byte* p, uint16_t v) { detail::put_le(p, v, 2); }
void put32(std::byte* p, uint32_t v) { detail::put_le(p, v, 4); }
void put64(std::byte* p, uint64_t v) { detail::put_le(p, v, 8); }
uint16_t get16(const std::byte* p) { return static_cast<uint16_t>(detail::get_le(p, 2)); }
uint32_t get32(const std::byte* p) { return static_cast<uint32_t>(detail::get_le(p, 4)); }
uint64_t get64(const std::byte* p) { return detail::get_le(p, 8); }

ParseResult failure(ErrorCode code, std::string message) {
  ParseResult r;
  r.status = ParseResult::kError;
  r.code = code;
  r.message = std::move(message);
  return r;
}

const char* type_name(FrameType t) {
  switch (t) {
    case FrameType::kHello: return "HELLO";
    case FrameType::kClientHello: return "CLIENT_HELLO";
    case FrameType::kWelcome: return "WELCOME";
    case FrameType::kRead: return "READ";
    case FrameType::kData: return "DATA";
    case FrameType::kZero: return "ZERO";
    case FrameType::kError: return "ERROR";
    case FrameType::kRaise: return "RAISE";
  }
  return "?";
}

}  // namespace

uint32_t crc32c(uint32_t crc, const void* data, size_t n) { return detail::crc32c(data, n, crc); }

const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kNone: return "none";
    case ErrorCode::kBadFrame: return "bad frame";
    case ErrorCode::kBadMagic: return "bad magic";
    case ErrorCode::kBadVersion: return "unsupported version";
    case ErrorCode::kAuthFailed: return "authentication failed";
    case ErrorCode::kOutOfRange: return "offset out of range";
    case ErrorCode::kTooLarge: return "too large";
    case ErrorCode::kInFlightLimit: return "in-flight limit";
    case ErrorCode::kBadChecksum: return "bad checksum";
    case ErrorCode::kUnknownType: return "unknown frame type";
    case ErrorCode::kBusy: return "server busy";
    case ErrorCode::kIoError: return "read error";
    case ErrorCode::kShuttingDown: return "shutting down";
    case ErrorCode::kIdle: return "idle timeout";
  }
  return "unknown error code";
}

void encode_header(std::byte out[kHeaderSize], FrameType type, uint8_t flags, uint16_t code, uint64_t id,
                   std::span<const std::byte> payload) {
  out[0] = std::byte(type);
  out[1] = std::byte(flags);
  put16(out + 2, code);
  put32(out + 4, static_cast<uint32_t>(payload.size()));
  put64(out + 8, id);
  uint32_t crc = crc32c(0, out, 16);
  crc = crc32c(crc, payload.data(), payload.size());
  put32(out + 16, crc);
}

void append_frame(std::vector<std::byte>& out, FrameType type, uint8_t flags, uint16_t code, uint64_t id,
                  std::span<const std::byte> payload) {
  size_t at = out.size();
  out.resize(at + kHeaderSize + payload.size());
  if (!payload.empty()) std::memcpy(out.data() + at + kHeaderSize, payload.data(), payload.size());
  encode_header(out.data() + at, type, flags, code, id, payload);
}

ParseResult parse_frame(std::span<const std::byte> bytes, Receiver receiver, uint32_t max_payload) {
  ParseResult r;
  if (bytes.size() < kHeaderSize) return r;
  const std::byte* p = bytes.data();
  FrameHeader& h = r.header;
  uint8_t raw_type = uint8_t(p[0]);
  h.flags = uint8_t(p[1]);
  h.code = get16(p + 2);
  h.length = get32(p + 4);
  h.id = get64(p + 8);
  h.crc = get32(p + 16);
  if (raw_type < uint8_t(FrameType::kHello) || raw_type > uint8_t(FrameType::kRaise))
    return failure(ErrorCode::kUnknownType, "unknown frame type " + std::to_string(raw_type));
  h.type = FrameType(raw_type);
  bool from_client = h.type == FrameType::kClientHello || h.type == FrameType::kRead || h.type == FrameType::kRaise;
  bool from_server = h.type == FrameType::kHello || h.type == FrameType::kWelcome || h.type == FrameType::kData ||
                     h.type == FrameType::kZero;
  if ((receiver == Receiver::kServer && from_server) || (receiver == Receiver::kClient && from_client))
    return failure(ErrorCode::kBadFrame, std::string("frame type ") + type_name(h.type) + " sent the wrong way");
  uint8_t allowed_flags = h.type == FrameType::kRead ? kReadUrgent : 0;
  if (h.flags & ~allowed_flags)
    return failure(ErrorCode::kBadFrame,
                   std::string(type_name(h.type)) + " frame with unknown flags " + std::to_string(h.flags));
  if (h.type != FrameType::kError && h.code != 0)
    return failure(ErrorCode::kBadFrame, std::string(type_name(h.type)) + " frame with error code " +
                                             std::to_string(h.code));
  // Fixed-size payloads must be exactly that size; the rest have a limit.
  size_t fixed = 0;
  uint64_t limit = 0;
  switch (h.type) {
    case FrameType::kHello: fixed = kHelloSize; break;
    case FrameType::kClientHello: fixed = kClientHelloSize; break;
    case FrameType::kWelcome: fixed = kWelcomeSize; break;
    case FrameType::kRead: fixed = kReadSize; break;
    case FrameType::kZero: fixed = kZeroSize; break;
    case FrameType::kData: limit = max_payload; break;
    case FrameType::kError: limit = kMaxErrorMessage; break;
    case FrameType::kRaise: limit = 0; break;
  }
  if (fixed != 0 && h.length != fixed)
    return failure(ErrorCode::kBadFrame, std::string(type_name(h.type)) + " frame length " +
                                             std::to_string(h.length) + ", expected " + std::to_string(fixed));
  if (fixed == 0 && h.length > limit)
    return failure(ErrorCode::kTooLarge, std::string(type_name(h.type)) + " frame length " +
                                             std::to_string(h.length) + " over the limit " + std::to_string(limit));
  if (bytes.size() - kHeaderSize < h.length) {  // wait for the payload
    r.header_checked = true;
    return r;
  }
  r.payload = bytes.subspan(kHeaderSize, h.length);
  uint32_t crc = crc32c(crc32c(0, p, 16), r.payload.data(), r.payload.size());
  if (crc != h.crc)
    return failure(ErrorCode::kBadChecksum, std::string(type_name(h.type)) + " frame checksum mismatch (id " +
                                                std::to_string(h.id) + ")");
  r.status = ParseResult::kFrame;
  r.consumed = kHeaderSize + h.length;
  return r;
}

std::vector<std::byte> encode_hello(const Hello& h) {
  std::vector<std::byte> b(kHelloSize);
  put32(&b[0], h.magic);
  put16(&b[4], h.version);
  put16(&b[6], 0);
  put32(&b[8], h.capabilities);
  put32(&b[12], h.max_request_bytes);
  put64(&b[16], h.object_size);
  put64(&b[24], h.max_in_flight_bytes);
  put32(&b[32], h.idle_timeout_ms);
  std::memcpy(&b[36], h.nonce.data(), kNonceSize);
  return b;
}

std::string decode_hello(std::span<const std::byte> p, Hello* h) {
  if (p.size() != kHelloSize) return "HELLO payload of " + std::to_string(p.size()) + " bytes";
  h->magic = get32(&p[0]);
  h->version = get16(&p[4]);
  if (get16(&p[6]) != 0) return "HELLO reserved field not zero";
  h->capabilities = get32(&p[8]);
  h->max_request_bytes = get32(&p[12]);
  h->object_size = get64(&p[16]);
  h->max_in_flight_bytes = get64(&p[24]);
  h->idle_timeout_ms = get32(&p[32]);
  std::memcpy(h->nonce.data(), &p[36], kNonceSize);
  return "";
}

std::vector<std::byte> encode_client_hello(const ClientHello& h) {
  std::vector<std::byte> b(kClientHelloSize);
  put32(&b[0], h.magic);
  put16(&b[4], h.version);
  put16(&b[6], 0);
  put32(&b[8], h.capabilities);
  std::memcpy(&b[12], h.nonce.data(), kNonceSize);
  std::memcpy(&b[44], h.mac.data(), kMacSize);
  return b;
}

std::string decode_client_hello(std::span<const std::byte> p, ClientHello* h) {
  if (p.size() != kClientHelloSize) return "CLIENT_HELLO payload of " + std::to_string(p.size()) + " bytes";
  h->magic = get32(&p[0]);
  h->version = get16(&p[4]);
  if (get16(&p[6]) != 0) return "CLIENT_HELLO reserved field not zero";
  h->capabilities = get32(&p[8]);
  std::memcpy(h->nonce.data(), &p[12], kNonceSize);
  std::memcpy(h->mac.data(), &p[44], kMacSize);
  return "";
}

std::vector<std::byte> encode_read(const ReadRequestWire& r) {
  std::vector<std::byte> b(kReadSize);
  put64(&b[0], r.offset);
  put32(&b[8], r.length);
  put32(&b[12], 0);
  return b;
}

std::string decode_read(std::span<const std::byte> p, ReadRequestWire* r) {
  if (p.size() != kReadSize) return "READ payload of " + std::to_string(p.size()) + " bytes";
  r->offset = get64(&p[0]);
  r->length = get32(&p[8]);
  if (get32(&p[12]) != 0) return "READ reserved field not zero";
  if (r->length == 0) return "READ of length 0";
  return "";
}

std::array<uint8_t, kMacSize> handshake_mac(const std::string& secret, const char* label,
                                            std::span<const uint8_t, kNonceSize> first,
                                            std::span<const uint8_t, kNonceSize> second) {
  uint8_t message[16 + 2 * kNonceSize] = {};
  std::strncpy(reinterpret_cast<char*>(message), label, 15);
  std::memcpy(message + 16, first.data(), kNonceSize);
  std::memcpy(message + 16 + kNonceSize, second.data(), kNonceSize);
  std::array<uint8_t, kMacSize> mac{};
  unsigned int n = 0;
  if (!HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()), message, sizeof message, mac.data(), &n) ||
      n != kMacSize)
    throw Error("HMAC-SHA256 failed (libcrypto)");
  return mac;
}

bool mac_equal(std::span<const uint8_t, kMacSize> a, std::span<const uint8_t, kMacSize> b) {
  return CRYPTO_memcmp(a.data(), b.data(), kMacSize) == 0;
}

std::array<uint8_t, kNonceSize> random_nonce() {
  std::array<uint8_t, kNonceSize> n{};
  if (RAND_bytes(n.data(), static_cast<int>(n.size())) != 1) throw Error("no random bytes for a nonce (libcrypto)");
  return n;
}

std::vector<SocketAddress> resolve_address(const std::string& address) {
  std::vector<SocketAddress> out;
  if (address.rfind("unix:", 0) == 0) {
    std::string path = address.substr(5);
    SocketAddress a;
    auto* un = reinterpret_cast<sockaddr_un*>(&a.storage);
    if (path.empty() || path.size() >= sizeof un->sun_path)
      throw Error("address '" + address + "': unix socket path empty or longer than " +
                  std::to_string(sizeof un->sun_path - 1) + " bytes");
    un->sun_family = AF_UNIX;
    std::memcpy(un->sun_path, path.data(), path.size());
    a.length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
    out.push_back(a);
    return out;
  }
  std::string host, port;
  if (!address.empty() && address[0] == '[') {
    size_t close = address.find(']');
    if (close == std::string::npos || close + 1 >= address.size() || address[close + 1] != ':')
      throw Error("address '" + address + "': expected [IPV6]:PORT");
    host = address.substr(1, close - 1);
    port = address.substr(close + 2);
  } else {
    size_t colon = address.rfind(':');
    if (colon == std::string::npos || address.find(':') != colon)
      throw Error("address '" + address + "': expected HOST:PORT, [IPV6]:PORT or unix:/path");
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
  }
  if (host.empty()) throw Error("address '" + address + "': no host");
  bool digits = !port.empty() && port.size() <= 5 && port.find_first_not_of("0123456789") == std::string::npos;
  if (!digits || std::stoul(port) > 65535) throw Error("address '" + address + "': bad port '" + port + "'");
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0) throw Error("address '" + address + "': " + gai_strerror(rc));
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    if (ai->ai_addrlen > sizeof(sockaddr_storage)) continue;
    SocketAddress a;
    std::memcpy(&a.storage, ai->ai_addr, ai->ai_addrlen);
    a.length = ai->ai_addrlen;
    out.push_back(a);
  }
  freeaddrinfo(res);
  if (out.empty()) throw Error("address '" + address + "': no usable address");
  return out;
}

std::string format_address(const SocketAddress& a) {
  char buf[INET6_ADDRSTRLEN] = {};
  switch (a.family()) {
    case AF_UNIX: {
      auto* un = reinterpret_cast<const sockaddr_un*>(&a.storage);
      size_t max = a.length > offsetof(sockaddr_un, sun_path) ? a.length - offsetof(sockaddr_un, sun_path) : 0;
      return "unix:" + std::string(un->sun_path, strnlen(un->sun_path, std::min(max, sizeof un->sun_path)));
    }
    case AF_INET: {
      auto* in = reinterpret_cast<const sockaddr_in*>(&a.storage);
      inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf);
      return std::string(buf) + ":" + std::to_string(ntohs(in->sin_port));
    }
    case AF_INET6: {
      auto* in6 = reinterpret_cast<const sockaddr_in6*>(&a.storage);
      inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf);
      std::string s = "[";  // (built up in steps: GCC 12 warns falsely on "[" + std::string)
      s += buf;
      s += "]:";
      s += std::to_string(ntohs(in6->sin6_port));
      return s;
    }
  }
  return "family " + std::to_string(a.family());
}

}  // namespace faultline::remote

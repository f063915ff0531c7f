// SPDX-License-Identifier: Apache-2.0
// The page server's wire protocol (docs/protocol.md): frame layout, limits,
// encoders, a decoder that validates everything a peer sends, CRC-32C,
// HMAC-SHA256 for the handshake, and address parsing. Shared by PageServer,
// RemoteBackend and the protocol fuzzer; no I/O here.
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "spin_policy.h"

namespace faultline::remote {

constexpr uint32_t kMagic = 0x50544c46;  // bytes "FLTP" on the wire
constexpr uint16_t kVersion = 1;
constexpr size_t kHeaderSize = 20;
constexpr size_t kNonceSize = 32;
constexpr size_t kMacSize = 32;
constexpr uint32_t kMaxErrorMessage = 1024;
// Largest max_request_bytes a server may announce (and a client accepts).
constexpr uint32_t kMaxRequestLimit = 64u << 20;

enum class FrameType : uint8_t {
  kHello = 1,        // server -> client, first frame
  kClientHello = 2,  // client -> server, answer to kHello
  kWelcome = 3,      // server -> client, handshake done
  kRead = 4,         // client -> server
  kData = 5,         // server -> client, bytes of one read
  kZero = 6,         // server -> client, the read's bytes are all zero
  kError = 7,        // either way; id 0: the connection is closed after it
  kRaise = 8,        // client -> server, no payload: the READ of this id is now urgent
};

// Error codes carried in the header of kError frames.
enum class ErrorCode : uint16_t {
  kNone = 0,
  kBadFrame = 1,       // malformed frame (field, length or order)
  kBadMagic = 2,
  kBadVersion = 3,
  kAuthFailed = 4,
  kOutOfRange = 5,     // read offset at or past the object's end
  kTooLarge = 6,       // length over a limit
  kInFlightLimit = 7,  // more bytes asked for than the server allows in flight
  kBadChecksum = 8,
  kUnknownType = 9,
  kBusy = 10,          // the server has max_connections already
  kIoError = 11,       // the server's backend failed this read (id != 0)
  kShuttingDown = 12,
  kIdle = 13,          // closed for silence
};
const char* error_code_name(ErrorCode code);

// Capability bits of kHello / kClientHello.
constexpr uint32_t kCapAuth = 1;  // the server demands the shared secret
constexpr uint32_t kCapZero = 2;  // kZero frames
constexpr uint32_t kCapRaise = 4;  // the server takes kRaise frames

// Flags of kRead.
constexpr uint8_t kReadUrgent = 1;

struct FrameHeader {
  FrameType type{};
  uint8_t flags = 0;
  uint16_t code = 0;
  uint32_t length = 0;  // payload bytes after the header
  uint64_t id = 0;
  uint32_t crc = 0;     // CRC-32C of header bytes 0..15, then the payload
};

// Which peer is reading: each accepts only the frames the other may send.
enum class Receiver { kServer, kClient };

struct ParseResult {
  enum Status { kNeedMore, kFrame, kError } status = kNeedMore;
  FrameHeader header;
  std::span<const std::byte> payload;
  size_t consumed = 0;  // bytes of the frame, when kFrame
  // kNeedMore with the header complete and valid (header is filled in): the
  // receiver may take the payload elsewhere, checking `crc` itself.
  bool header_checked = false;
  ErrorCode code = ErrorCode::kNone;
  std::string message;  // when kError: what was wrong, with the field and value
};

// Parses the frame at the start of `bytes`. Validates the header (type
// allowed for the receiver, flags, length against max_payload and the
// type's fixed size) as soon as it is complete, before the payload
// arrives, then the checksum. Never reads past `bytes`.
ParseResult parse_frame(std::span<const std::byte> bytes, Receiver receiver, uint32_t max_payload);

// Writes a header for `payload` (whose bytes are checksummed but not copied).
void encode_header(std::byte out[kHeaderSize], FrameType type, uint8_t flags, uint16_t code, uint64_t id,
                   std::span<const std::byte> payload);
// Appends header and payload to `out`.
void append_frame(std::vector<std::byte>& out, FrameType type, uint8_t flags, uint16_t code, uint64_t id,
                  std::span<const std::byte> payload);

struct Hello {
  uint32_t magic = kMagic;
  uint16_t version = kVersion;
  uint32_t capabilities = 0;
  uint32_t max_request_bytes = 0;
  uint64_t object_size = 0;
  uint64_t max_in_flight_bytes = 0;
  uint32_t idle_timeout_ms = 0;
  std::array<uint8_t, kNonceSize> nonce{};
};
constexpr size_t kHelloSize = 68;

struct ClientHello {
  uint32_t magic = kMagic;
  uint16_t version = kVersion;
  uint32_t capabilities = 0;
  std::array<uint8_t, kNonceSize> nonce{};
  std::array<uint8_t, kMacSize> mac{};
};
constexpr size_t kClientHelloSize = 76;
constexpr size_t kWelcomeSize = kMacSize;

struct ReadRequestWire {
  uint64_t offset = 0;
  uint32_t length = 0;
};
constexpr size_t kReadSize = 16;
constexpr size_t kZeroSize = 4;

std::vector<std::byte> encode_hello(const Hello& h);
std::vector<std::byte> encode_client_hello(const ClientHello& h);
std::vector<std::byte> encode_read(const ReadRequestWire& r);
// Decoders check sizes and reserved fields; magic and version are left to
// the caller, which answers them with their own error codes. They return
// an empty string on success, else what was wrong.
std::string decode_hello(std::span<const std::byte> payload, Hello* out);
std::string decode_client_hello(std::span<const std::byte> payload, ClientHello* out);
std::string decode_read(std::span<const std::byte> payload, ReadRequestWire* out);

// CRC-32C (crc32c.h), continuing from crc (0 to start).
uint32_t crc32c(uint32_t crc, const void* data, size_t n);

// The handshake proofs. The client proves it knows the secret with
// mac("client", server nonce, client nonce), the server answers with
// mac("server", client nonce, server nonce).
std::array<uint8_t, kMacSize> handshake_mac(const std::string& secret, const char* label,
                                            std::span<const uint8_t, kNonceSize> first,
                                            std::span<const uint8_t, kNonceSize> second);
bool mac_equal(std::span<const uint8_t, kMacSize> a, std::span<const uint8_t, kMacSize> b);
std::array<uint8_t, kNonceSize> random_nonce();

// "HOST:PORT", "[IPV6]:PORT" or "unix:/path", resolved to socket addresses
// (a host name may give several). Throws Error naming the address.
struct SocketAddress {
  sockaddr_storage storage{};
  socklen_t length = 0;
  int family() const { return storage.ss_family; }
};
std::vector<SocketAddress> resolve_address(const std::string& address);
// The address in the listen syntax, e.g. "127.0.0.1:40123" or "unix:/p".
std::string format_address(const SocketAddress& address);

}  // namespace faultline::remote

// SPDX-License-Identifier: Apache-2.0
// The migration stream (docs/migration.md): frame types and payloads on the
// page server's 20-byte frame header and CRC-32C (backends/remote_protocol.h),
// and a Channel that sends and receives frames on a blocking socket with a
// deadline on every wait. The urgent lane of post-copy is the page server's
// own protocol, unchanged.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "remote_protocol.h"
#include "unique_fd.h"

namespace faultline::migration {

using Clock = std::chrono::steady_clock;

inline uint64_t ns_since(Clock::time_point t) {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t).count());
}

constexpr uint32_t kMagic = 0x4d544c46;  // bytes "FLTM"
constexpr uint16_t kVersion = 1;
constexpr uint64_t kPage = 4096;
constexpr uint32_t kMaxPagesPayload = 4u << 20;  // PAGES frames
constexpr uint32_t kMaxRegions = 256;
constexpr uint32_t kCapAuth = 1;

// Numbered apart from the page server's (1..7), so a peer of the wrong kind
// is told so, not misread.
enum class Frame : uint8_t {
  kHello = 32,     // D -> S: magic, version, caps, nonce_d
  kOffer = 33,     // S -> D: magic, version, mode, caps, nonce_s, proof_s, regions, urgent lane
  kAccept = 34,    // D -> S: proof_d
  kPages = 35,     // S -> D: id = object offset; payload = whole pages
  kZero = 36,      // S -> D: id = object offset; payload = length u64: zero pages
  kRoundEnd = 37,  // S -> D: id = round; D -> S: the same, once everything before it is in place
  kStale = 38,     // S -> D: (offset u64, length u64) pairs the destination must fetch
  kSwitch = 39,    // S -> D: flags: kSwitchPostcopy, kSwitchAllStale; payload = state blob
  kResumed = 40,   // D -> S
  kDone = 41,      // S -> D: every stale page pushed
  kComplete = 42,  // D -> S: the destination's post-copy figures (kCompleteSize)
  kError = 43,     // either way; code = remote::ErrorCode; text; then close
  // Post-copy recovery, on a new connection after the stream broke (the
  // destination sends HELLO first, as on any connection):
  kResume = 44,  // S -> D: nonce_s of the migration's OFFER, proof (kResumeSize)
  kWant = 45,    // D -> S after its ACCEPT: (offset u64, length u64) pairs still missing; flags kWantMore
};
const char* frame_name(Frame f);

constexpr uint8_t kSwitchPostcopy = 1;
constexpr uint8_t kSwitchAllStale = 2;

constexpr uint8_t kWantMore = 1;  // another WANT frame follows

constexpr size_t kHelloSize = 44;
constexpr size_t kResumeSize = 64;
constexpr size_t kCompleteSize = 56;

struct Hello {
  uint32_t magic = kMagic;
  uint16_t version = kVersion;
  uint32_t caps = 0;
  std::array<uint8_t, remote::kNonceSize> nonce{};
};

struct Offer {
  uint32_t magic = kMagic;
  uint16_t version = kVersion;
  uint8_t mode = 0;  // MigrationMode
  uint32_t caps = 0;
  std::array<uint8_t, remote::kNonceSize> nonce{};
  std::array<uint8_t, remote::kMacSize> proof{};
  std::vector<uint64_t> region_sizes;  // 1..kMaxRegions, each > 0
  std::string urgent_address;          // empty in pre-copy
};

struct Complete {
  uint64_t pages_requested = 0, requests = 0, p50_ns = 0, p99_ns = 0, max_ns = 0, blocked_ns = 0, postcopy_ns = 0;
};

std::vector<std::byte> encode_hello(const Hello& h);
std::vector<std::byte> encode_offer(const Offer& o);
std::vector<std::byte> encode_complete(const Complete& c);
// Empty string on success, else what was wrong (field and value).
std::string decode_hello(std::span<const std::byte> p, Hello* h);
std::string decode_offer(std::span<const std::byte> p, Offer* o);
std::string decode_complete(std::span<const std::byte> p, Complete* c);

// Appends one (offset u64, length u64) pair of a STALE or WANT payload.
void append_range(std::vector<std::byte>* payload, uint64_t offset, uint64_t length);

// Regions are laid end to end, each starting on a page: the object the
// urgent lane serves and that PAGES offsets address.
std::vector<uint64_t> region_bases(std::span<const uint64_t> sizes, uint64_t* object_size);

struct Received {
  Frame type{};
  uint8_t flags = 0;
  uint16_t code = 0;
  uint64_t id = 0;
  // Into the channel's buffer: valid until its next receive().
  std::span<const std::byte> payload;
  std::string text() const;  // an ERROR's message
};

// A connected stream socket, blocking calls bounded by `deadline` each.
// Throws Error on timeout, a closed peer, a malformed frame, or an ERROR
// frame from the peer (its text in the message). One user at a time.
//
// Small PAGES and ZERO frames are gathered and written 256 KiB at a time,
// and small frames are read out of a 256 KiB buffer: a system call costs
// ~2.4 us on the development VM, and a round of scattered dirty pages is
// one 4 KiB frame per page. Any other frame goes out at once, with what is
// gathered before it, so a frame that asks for an answer is never held.
class Channel {
 public:
  Channel(detail::UniqueFd fd, std::chrono::milliseconds deadline, std::string peer);
  int fd() const { return fd_.get(); }
  const std::string& peer() const { return peer_; }

  void send(Frame type, uint8_t flags, uint64_t id, std::span<const std::byte> payload);
  // Sends ERROR (best effort, never throws) before the caller closes.
  void send_error(remote::ErrorCode code, const std::string& text) noexcept;
  // The next frame, whose type must be one of `allowed`, each with the
  // largest payload it may have: checked before any payload is read.
  struct Allowed {
    Frame type;
    uint64_t max_payload;
  };
  Received receive(std::initializer_list<Allowed> allowed);
  // Exchanges the buffer the last payload was read into for `other`: the
  // caller keeps that payload (its span stays valid) and the next frame is
  // read into `other`, grown as needed.
  void swap_buffer(std::vector<std::byte>& other) { rx_.swap(other); }
  // Whether a frame (or EOF) is waiting, without blocking.
  bool readable();
  // Writes the gathered frames (send() and receive() do it when needed).
  void flush();
  // Bytes written to the socket so far (gathered frames count once flushed).
  uint64_t bytes_sent() const { return bytes_sent_; }

 private:
  void write_all(const struct iovec* iov, int count);
  void read_all(std::byte* p, size_t n);
  void wait(short events, const char* what);

  detail::UniqueFd fd_;
  std::chrono::milliseconds deadline_;
  std::string peer_;
  uint64_t bytes_sent_ = 0;
  std::vector<std::byte> rx_;  // grows to the largest payload seen, never shrinks
  std::vector<std::byte> tx_;  // gathered frames, not yet written
  std::vector<std::byte> in_;  // read ahead of the frame being parsed
  size_t in_pos_ = 0, in_len_ = 0;
};

// Connects to "HOST:PORT" / "unix:/path" within `deadline`. Throws Error.
detail::UniqueFd connect_to(const std::string& address, std::chrono::milliseconds deadline);
void tune_socket(int fd);  // TCP_NODELAY and larger buffers where they apply

}  // namespace faultline::migration

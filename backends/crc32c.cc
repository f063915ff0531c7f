// SPDX-License-Identifier: Apache-2.0
#include "crc32c.h"

#include <array>
#include <cstring>

namespace faultline::detail {

namespace {

constexpr uint32_t kPolyReflected = 0x82F63B78;

// Slicing-by-8 tables: table[k][b] is the CRC of byte b followed by k zero bytes.
constexpr std::array<std::array<uint32_t, 256>, 8> make_tables() {
  std::array<std::array<uint32_t, 256>, 8> t{};
  for (uint32_t b = 0; b < 256; ++b) {
    uint32_t c = b;
    for (int i = 0; i < 8; ++i) c = (c >> 1) ^ ((c & 1) ? kPolyReflected : 0);
    t[0][b] = c;
  }
  for (uint32_t b = 0; b < 256; ++b)
    for (int k = 1; k < 8; ++k) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xff];
  return t;
}

constexpr auto kTables = make_tables();

// The hardware loop runs three independent streams over blocks of
// kStreamBlock bytes (the crc32 instruction has a latency of three cycles
// and a throughput of one per cycle) and joins them with kShift: the CRC
// register after kStreamBlock more zero bytes, a linear map on its 32 bits,
// as four byte-indexed tables.
constexpr size_t kStreamBlock = 1024;

constexpr std::array<std::array<uint32_t, 256>, 4> make_shift() {
  std::array<uint32_t, 32> basis{};
  for (int bit = 0; bit < 32; ++bit) {
    uint32_t c = uint32_t{1} << bit;
    for (size_t i = 0; i < kStreamBlock; ++i) c = (c >> 8) ^ kTables[0][c & 0xff];
    basis[bit] = c;
  }
  std::array<std::array<uint32_t, 256>, 4> t{};
  for (int k = 0; k < 4; ++k)
    for (uint32_t b = 0; b < 256; ++b) {
      uint32_t v = 0;
      for (int bit = 0; bit < 8; ++bit)
        if (b >> bit & 1) v ^= basis[8 * k + bit];
      t[k][b] = v;
    }
  return t;
}

constexpr auto kShift = make_shift();

uint32_t shift_block(uint32_t c) {
  return kShift[0][c & 0xff] ^ kShift[1][(c >> 8) & 0xff] ^ kShift[2][(c >> 16) & 0xff] ^ kShift[3][c >> 24];
}

uint32_t crc_table(uint32_t c, const unsigned char* p, size_t n) {
  while (n >= 8) {
    uint32_t lo, hi;
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + 4, 4);
    lo ^= c;  // little-endian load (x86, arm64-le)
    c = kTables[7][lo & 0xff] ^ kTables[6][(lo >> 8) & 0xff] ^ kTables[5][(lo >> 16) & 0xff] ^ kTables[4][lo >> 24] ^
        kTables[3][hi & 0xff] ^ kTables[2][(hi >> 8) & 0xff] ^ kTables[1][(hi >> 16) & 0xff] ^ kTables[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n--) c = (c >> 8) ^ kTables[0][(c ^ *p++) & 0xff];
  return c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t crc_sse42(uint32_t c, const unsigned char* p, size_t n) {
  while (n >= 3 * kStreamBlock) {
    uint64_t a = c, b = 0, d = 0;
    for (size_t i = 0; i < kStreamBlock; i += 8) {
      uint64_t wa, wb, wd;
      std::memcpy(&wa, p + i, 8);
      std::memcpy(&wb, p + kStreamBlock + i, 8);
      std::memcpy(&wd, p + 2 * kStreamBlock + i, 8);
      a = __builtin_ia32_crc32di(a, wa);
      b = __builtin_ia32_crc32di(b, wb);
      d = __builtin_ia32_crc32di(d, wd);
    }
    // The register is linear in (start value, data): the three streams join as
    // crc(A B C) = shift(shift(crc(A)) ^ crc0(B)) ^ crc0(C).
    c = shift_block(shift_block(static_cast<uint32_t>(a)) ^ static_cast<uint32_t>(b)) ^ static_cast<uint32_t>(d);
    p += 3 * kStreamBlock;
    n -= 3 * kStreamBlock;
  }
  uint64_t c64 = c;
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    c64 = __builtin_ia32_crc32di(c64, w);
    p += 8;
    n -= 8;
  }
  c = static_cast<uint32_t>(c64);
  while (n--) c = __builtin_ia32_crc32qi(c, *p++);
  return c;
}
#endif

}  // namespace

uint32_t crc32c(const void* data, size_t n, uint32_t crc) {
  auto* p = static_cast<const unsigned char*>(data);
  uint32_t c = ~crc;
#if defined(__x86_64__)
  // A property of the CPU, fixed for the life of the process.
  static const bool hardware = __builtin_cpu_supports("sse4.2");
  if (hardware) return ~crc_sse42(c, p, n);
#endif
  return ~crc_table(c, p, n);
}

uint32_t crc32c_portable(const void* data, size_t n, uint32_t crc) {
  return ~crc_table(~crc, static_cast<const unsigned char*>(data), n);
}

}  // namespace faultline::detail

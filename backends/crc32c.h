// SPDX-License-Identifier: Apache-2.0
// CRC-32C (Castagnoli, the iSCSI/ext4/Btrfs polynomial 0x1EDC6F41): the
// checksum of every snapshot chunk and of the snapshot's header and index.
// Uses the SSE4.2 crc32 instruction where the CPU has it (many GB/s, so
// checking every restored byte costs little), a table otherwise; both give
// the same value.
#pragma once

#include <cstddef>
#include <cstdint>

namespace faultline::detail {

// The CRC-32C of n bytes at p, continuing from `crc` (the CRC of the bytes
// before them; 0 to start). crc32c("123456789") == 0xE3069283.
uint32_t crc32c(const void* p, size_t n, uint32_t crc = 0);
// The table-driven version crc32c() falls back to (the tests compare both).
uint32_t crc32c_portable(const void* p, size_t n, uint32_t crc = 0);

}  // namespace faultline::detail

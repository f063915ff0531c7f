// SPDX-License-Identifier: Apache-2.0
// Maps a MemoryBackend region through an installed faultline and checks that
// first touches read the right bytes. Exit 0 on success, 1 otherwise.
#include <faultline/faultline.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <vector>

namespace {

std::byte byte_at(uint64_t i) {
  uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull;
  return std::byte(static_cast<uint8_t>(x ^ (x >> 29)));
}

}  // namespace

int main() {
  // Not a multiple of the page size, so the tail page is partial.
  const size_t size = (4u << 20) + 123;
  std::vector<std::byte> bytes(size);
  for (size_t i = 0; i < size; ++i) bytes[i] = byte_at(i);

  try {
    faultline::Runtime runtime;
    auto backend = std::make_shared<faultline::MemoryBackend>(bytes);
    faultline::Region region = runtime.map(backend);
    if (region.data() == nullptr || region.size() != size) {
      std::fprintf(stderr, "FAIL: region is %p, %zu bytes; expected %zu bytes\n",
                   static_cast<void*>(region.data()), region.size(), size);
      return 1;
    }
    const size_t offsets[] = {0, 1, 4095, 4096, 65535, 65536, 1u << 20, (3u << 20) + 777, size - 1};
    int bad = 0;
    for (size_t off : offsets) {
      if (region.data()[off] != byte_at(off)) {
        std::fprintf(stderr, "FAIL: byte %zu is 0x%02x, expected 0x%02x\n", off,
                     static_cast<unsigned>(region.data()[off]), static_cast<unsigned>(byte_at(off)));
        ++bad;
      }
    }
    const faultline::StatsSnapshot st = region.stats();
    if (st.faults == 0 || st.bytes_installed == 0) {
      std::fprintf(stderr, "FAIL: stats show no fault served: %s\n", st.to_json().c_str());
      ++bad;
    }
    if (bad) return 1;
    std::printf("install check: ok: %zu bytes checked, %llu faults, userfaultfd %s\n",
                std::size(offsets), static_cast<unsigned long long>(st.faults),
                runtime.mode().describe().c_str());
    return 0;
  } catch (const faultline::Error& e) {
    std::fprintf(stderr, "FAIL: faultline error: %s\n", e.what());
    return 1;
  }
}

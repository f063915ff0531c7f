// SPDX-License-Identifier: Apache-2.0
// A program built against an installed faultline (see check.sh): maps a file
// it writes into DIR and checks bytes and fault counts; unless built with
// FAULTLINE_CHECK_CORE_ONLY, also restores a zstd snapshot of the same bytes
// and maps them from an in-process page server over loopback, so that every
// part of the library (core, snapshot, remote) is linked and used.
//
// Usage: app DIR. Exit 0 on success, 1 on any mismatch or error.
#include <faultline/faultline.h>

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

namespace {

std::byte byte_at(uint64_t i) {
  uint64_t x = (i + 1) * 0x9E3779B97F4A7C15ull;
  return std::byte(static_cast<uint8_t>(x ^ (x >> 29)));
}

// Not a multiple of the page size, so the tail page is partial.
constexpr size_t kSize = (4u << 20) + 123;
constexpr size_t kOffsets[] = {0, 1, 4095, 4096, 65535, 65536, 1u << 20, (3u << 20) + 777, kSize - 1};

// Reads kOffsets of `region` (each a first touch of its page) and checks the
// bytes and that faults were served. Returns the number of problems.
int check_region(const char* what, const faultline::Region& region) {
  if (region.data() == nullptr || region.size() != kSize) {
    std::fprintf(stderr, "FAIL: %s: region is %p, %zu bytes; expected %zu bytes\n", what,
                 static_cast<void*>(region.data()), region.size(), kSize);
    return 1;
  }
  int bad = 0;
  for (size_t off : kOffsets) {
    std::byte b = region.data()[off];
    if (b != byte_at(off)) {
      std::fprintf(stderr, "FAIL: %s: byte %zu is 0x%02x, expected 0x%02x\n", what, off,
                   static_cast<unsigned>(b), static_cast<unsigned>(byte_at(off)));
      ++bad;
    }
  }
  const faultline::StatsSnapshot st = region.stats();
  if (st.faults == 0 || st.bytes_installed == 0) {
    std::fprintf(stderr, "FAIL: %s: stats show no fault served: %s\n", what, st.to_json().c_str());
    ++bad;
  } else {
    std::printf("%s: %zu bytes checked, %llu faults\n", what, std::size(kOffsets),
                static_cast<unsigned long long>(st.faults));
  }
  return bad;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  if (std::strcmp(faultline::version(), FAULTLINE_VERSION_STRING) != 0) {
    std::fprintf(stderr, "FAIL: library version %s, headers %s\n", faultline::version(), FAULTLINE_VERSION_STRING);
    return 1;
  }
  std::vector<std::byte> bytes(kSize);
  for (size_t i = 0; i < kSize; ++i) bytes[i] = byte_at(i);
  const std::string file = dir + "/data.bin";
  {
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    if (!out.flush()) {
      std::fprintf(stderr, "FAIL: cannot write %s\n", file.c_str());
      return 1;
    }
  }

  int bad = 0;
  try {
    faultline::Runtime runtime;
    std::printf("faultline %s, userfaultfd %s\n", faultline::version(), runtime.mode().describe().c_str());
    bad += check_region("file", runtime.map(std::make_shared<faultline::FileBackend>(file)));
#ifndef FAULTLINE_CHECK_CORE_ONLY
    const std::string snap = dir + "/data.flsnap";
    faultline::write_snapshot(bytes, snap);
    bad += check_region("snapshot", runtime.map(faultline::open_zstd_snapshot(snap)));

    faultline::PageServer server(faultline::MemoryBackend::borrow(bytes), {});
    faultline::RemoteOptions remote;
    remote.address = server.endpoints().at(0);
    bad += check_region("remote", runtime.map(faultline::connect_remote(remote)));
#endif
  } catch (const faultline::Error& e) {
    std::fprintf(stderr, "FAIL: faultline error: %s\n", e.what());
    return 1;
  }
  if (bad) return 1;
  std::printf("install check: ok\n");
  return 0;
}

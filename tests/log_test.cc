// SPDX-License-Identifier: Apache-2.0
// The library's warnings go to the application's LogSink, not to stderr.
#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <mutex>
#include <string>
#include <vector>

#include "faultline/faultline.h"
#include "faultline/snapshot.h"
#include "faultline/zstd_snapshot_backend.h"
#include "snapshot_test_util.h"
#include "test_util.h"

using namespace faultline;
using namespace faultline::test;
namespace t = faultline::test;

namespace {

// Lines a sink received, from any thread.
struct Lines {
  std::mutex mu;
  std::vector<std::pair<LogLevel, std::string>> lines;
  LogSink sink() {
    return [this](LogLevel level, std::string_view m) {
      std::lock_guard lock(mu);
      lines.emplace_back(level, std::string(m));
    };
  }
  size_t count(LogLevel level, const std::string& needle) {
    std::lock_guard lock(mu);
    size_t n = 0;
    for (auto& [l, m] : lines) n += l == level && m.find(needle) != std::string::npos;
    return n;
  }
};

// What the process writes to stderr while it lives.
class StderrCapture {
 public:
  StderrCapture() : saved_(dup(STDERR_FILENO)) {
    std::fflush(stderr);
    int fd = ::open(dir_.file("stderr").c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    dup2(fd, STDERR_FILENO);
    ::close(fd);
  }
  ~StderrCapture() { restore(); }
  std::string text() {
    restore();
    auto b = t::read_bytes(dir_.file("stderr"));
    return std::string(b.begin(), b.end());
  }

 private:
  void restore() {
    if (saved_ < 0) return;
    std::fflush(stderr);
    dup2(saved_, STDERR_FILENO);
    ::close(saved_);
    saved_ = -1;
  }
  t::TempDir dir_;
  int saved_;
};

constexpr uint32_t kChunk = 64 * 1024;

// A snapshot of `data` whose chunk `bad` fails its checksum.
std::string corrupt_snapshot(const t::TempDir& dir, const std::vector<std::byte>& data, uint64_t bad) {
  SnapshotWriteOptions w;
  w.chunk_size = kChunk;
  write_snapshot(data, dir.file("snap"), w);
  auto f = t::read_bytes(dir.file("snap"));
  t::patch_entry(f, bad, [](detail::ChunkEntry& e) { e.checksum ^= 1; });
  t::write_bytes(dir.file("snap"), f);
  return dir.file("snap");
}

// Prefetches the whole region (a bad chunk is poisoned, not read by us) and
// waits until every chunk was handled.
void load_all(Region& region) {
  region.prefetch(0, region.size());
  REQUIRE(wait_until([&] {
    auto s = region.stats();
    return s.pages_installed * 4096 + s.errors * kChunk >= region.size() && s.errors > 0;
  }));
}

}  // namespace

TEST_CASE("warnings of the runtime and the backend go to their LogSinks, not stderr", "[log]") {
  t::TempDir dir;
  auto data = pattern(16 * kChunk, 51);
  std::string path = corrupt_snapshot(dir, data, 5);
  Lines runtime_lines, backend_lines;
  StderrCapture capture;
  {
    RuntimeOptions ro;
    ro.log = runtime_lines.sink();
    Runtime rt(ro);
    ZstdSnapshotOptions zo;
    zo.log = backend_lines.sink();
    RegionOptions o;
    o.fill_size = kChunk;
    o.readahead = false;
    Region region = rt.map(open_zstd_snapshot(path, zo), o);
    load_all(region);
    CHECK(region.stats().errors == 1);
    CHECK(first_mismatch(region.data(), data.data(), 5 * kChunk) == -1);
    CHECK(first_mismatch(region.data() + 6 * kChunk, data.data() + 6 * kChunk, 10 * kChunk) == -1);
  }
  std::string err = capture.text();
  CHECK(err.find("faultline") == std::string::npos);
  INFO("stderr: " << err);
  CHECK(backend_lines.count(LogLevel::kError, "snapshot " + path + ": chunk 5 at offset ") == 1);
  CHECK(backend_lines.count(LogLevel::kError, "checksum mismatch") == 1);
  CHECK(backend_lines.count(LogLevel::kError, "its pages get SIGBUS") == 1);
  CHECK(runtime_lines.count(LogLevel::kError, "cannot read 65536 bytes at offset 327680") == 1);
  std::lock_guard lock(runtime_lines.mu);
  for (auto& [level, m] : runtime_lines.lines) {
    CHECK(m.rfind("faultline: ", 0) == std::string::npos);  // the sink gets the bare message
    CHECK(m.find('\n') == std::string::npos);
  }
}

TEST_CASE("without a LogSink, warnings go to stderr, one line each", "[log]") {
  t::TempDir dir;
  auto data = pattern(16 * kChunk, 52);
  std::string path = corrupt_snapshot(dir, data, 3);
  StderrCapture capture;
  {
    Runtime rt;
    RegionOptions o;
    o.fill_size = kChunk;
    o.readahead = false;
    Region region = rt.map(open_zstd_snapshot(path), o);
    load_all(region);
  }
  std::string err = capture.text();
  INFO("stderr: " << err);
  CHECK(err.find("faultline: snapshot " + path + ": chunk 3 at offset ") != std::string::npos);
  CHECK(err.find("faultline: zstd snapshot " + path + ": cannot read 65536 bytes at offset 196608 (Bad message)") !=
        std::string::npos);
  CHECK(err.back() == '\n');
}

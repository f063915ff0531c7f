// SPDX-License-Identifier: Apache-2.0
// Working sets: recording first touches, the working-set file, replaying it
// with prefetch_chunks(), and the background drain.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "faultline/faultline.h"
#include "test_backends.h"
#include "test_util.h"

using namespace faultline;
using namespace faultline::test;

namespace {

constexpr size_t kKiB = 1024, kMiB = 1024 * 1024;


// A fresh directory, removed with the object.
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/faultline-ws-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

// The chunks a "workload" touches: a fixed pseudo-random 10% of the region,
// in a fixed order.
std::vector<uint64_t> workload_chunks(uint64_t chunks, uint32_t seed) {
  std::vector<uint64_t> all(chunks);
  for (uint64_t c = 0; c < chunks; ++c) all[c] = c;
  std::mt19937_64 rng(seed);
  std::shuffle(all.begin(), all.end(), rng);
  all.resize(chunks / 10);
  return all;
}

// Touches one byte in each of `chunks` and checks it; returns false on a wrong byte.
bool run_workload(const Region& r, const std::vector<std::byte>& data, const std::vector<uint64_t>& chunks,
                  uint32_t fill) {
  for (uint64_t c : chunks)
    for (uint64_t at : {c * fill + 17, c * fill + fill - 1})
      if (r.data()[at] != data[at]) return false;
  return true;
}

std::vector<unsigned char> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

void write_file(const std::string& path, const std::vector<unsigned char>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

}  // namespace

TEST_CASE("a recording region lists chunks in first-touch order, once each", "[workingset]") {
  auto data = pattern(8 * kMiB, 3);
  Runtime rt;
  RegionOptions o;
  o.record_touches = true;
  Region r = rt.map(MemoryBackend::borrow(data), o);
  CHECK_FALSE(r.options().readahead);  // recording turns it off
  for (uint64_t c : {5, 2, 9, 2, 7, 5, 100})
    REQUIRE(r.data()[c * o.fill_size + 3] == data[c * o.fill_size + 3]);
  std::vector<uint64_t> want = {5 * 65536, 2 * 65536, 9 * 65536, 7 * 65536, 100 * 65536};
  CHECK(r.touched_chunks() == want);

  Region plain = rt.map(MemoryBackend::borrow(data));
  CHECK_THROWS_WITH(plain.touched_chunks(), Catch::Contains("RegionOptions.record_touches"));
  CHECK_THROWS_WITH(r.prefetch_chunks(std::vector<uint64_t>{0, 8 * kMiB}),
                    Catch::Contains("offsets[1] = 8388608") && Catch::Contains("past the end"));
}

TEST_CASE("working-set files round-trip and every corruption is named", "[workingset][errors]") {
  TempDir dir;
  std::string path = dir.path + "/ws";
  WorkingSet ws{65536, 64 * kMiB, {3 * 65536, 0, 1000 * 65536, 7 * 65536}};
  save_working_set(path, ws);
  WorkingSet back = load_working_set(path);
  CHECK(back.fill_size == ws.fill_size);
  CHECK(back.region_length == ws.region_length);
  CHECK(back.offsets == ws.offsets);
  CHECK(std::filesystem::directory_iterator(dir.path)->path() == path);  // no temporary left behind

  auto good = read_file(path);
  auto corrupt = [&](auto edit, const std::string& message) {
    auto bytes = good;
    edit(bytes);
    write_file(path, bytes);
    CHECK_THROWS_WITH(load_working_set(path), Catch::Contains(path) && Catch::Contains(message));
  };
  corrupt([](auto& b) { b[0] = 'X'; }, "magic");
  corrupt([](auto& b) { b[8] = 2; }, "version = 2");
  corrupt([](auto& b) { b.resize(20); }, "truncated");
  corrupt([](auto& b) { b.resize(b.size() - 1); }, "count = 4 does not match");
  corrupt([](auto& b) { b[24] = 9; }, "count = 9");
  corrupt([](auto& b) { b[40] ^= 1; }, "checksum mismatch");
  CHECK_THROWS_WITH(load_working_set(dir.path + "/missing"), Catch::Contains("cannot open") && Catch::Contains("missing"));

  // Offsets are checked on save (and, behind a valid checksum, on load).
  CHECK_THROWS_WITH(save_working_set(path, WorkingSet{65536, kMiB, {kMiB}}), Catch::Contains("offsets[0] = 1048576"));
  CHECK_THROWS_WITH(save_working_set(path, WorkingSet{65536, kMiB, {4096}}), Catch::Contains("multiple of fill_size"));
  CHECK_THROWS_WITH(save_working_set(path, WorkingSet{1000, kMiB, {}}), Catch::Contains("fill_size = 1000"));
  CHECK_THROWS_WITH(save_working_set(dir.path + "/no/such/dir/ws", ws), Catch::Contains("temporary file"));
}

TEST_CASE("replaying a recorded working set gives the same bytes with far fewer faults", "[workingset]") {
  auto data = pattern(64 * kMiB, 5);
  TempFile file(data);
  TempDir dir;
  RegionOptions o;  // 64 KiB fills
  auto chunks = workload_chunks(data.size() / o.fill_size, 11);
  Runtime rt;

  // Run 1 records.
  uint64_t recorded_faults;
  {
    RegionOptions rec = o;
    rec.record_touches = true;
    Region r = rt.map(std::make_shared<FileBackend>(file.path()), rec);
    REQUIRE(run_workload(r, data, chunks, o.fill_size));
    recorded_faults = r.stats().faults;
    CHECK(recorded_faults >= chunks.size());
    save_working_set(dir.path + "/ws", WorkingSet{o.fill_size, r.size(), r.touched_chunks()});
  }
  WorkingSet ws = load_working_set(dir.path + "/ws");
  REQUIRE(ws.offsets.size() == chunks.size());
  for (size_t i = 0; i < chunks.size(); ++i) REQUIRE(ws.offsets[i] == chunks[i] * o.fill_size);

  SECTION("prefetch finished before the workload starts: no faults") {
    Region r = rt.map(std::make_shared<FileBackend>(file.path()), o);
    r.prefetch_chunks(ws.offsets);
    REQUIRE(wait_until([&] { return r.stats().prefetch_chunks == chunks.size() &&
                                    r.stats().pages_installed == chunks.size() * o.fill_size / 4096; }));
    REQUIRE(run_workload(r, data, chunks, o.fill_size));
    CHECK(r.stats().faults == 0);
    CHECK(r.stats().bytes_read == chunks.size() * o.fill_size);
  }
  SECTION("workload racing the prefetch: demand faults and prefetch at once") {
    Region r = rt.map(std::make_shared<FileBackend>(file.path()), o);
    r.prefetch_chunks(ws.offsets);
    REQUIRE(run_workload(r, data, chunks, o.fill_size));
    CHECK(r.stats().faults <= recorded_faults);
    CHECK(r.stats().errors == 0);
    // Every chunk read once, by a fault or by the prefetch.
    CHECK(r.stats().bytes_read == chunks.size() * o.fill_size);
  }
}

TEST_CASE("drain loads the whole region in the background, demand faults first", "[workingset][drain]") {
  auto data = pattern(48 * kMiB, 7);
  TempFile file(data);
  Runtime rt;
  RegionOptions o;
  o.readahead = false;
  Region r = rt.map(std::make_shared<FileBackend>(file.path()), o);
  std::vector<uint64_t> hot = {700, 3, 512};  // chunks, prefetched first
  for (uint64_t& c : hot) c *= o.fill_size;
  r.prefetch_chunks(hot);
  r.drain();
  // A thread faulting at random while the drain runs.
  std::atomic<bool> wrong{false};
  std::thread reader([&] {
    std::mt19937_64 rng(1);
    for (int i = 0; i < 2000; ++i) {
      uint64_t at = rng() % data.size();
      if (r.data()[at] != data[at]) wrong = true;
    }
  });
  reader.join();
  uint64_t pages = data.size() / 4096;
  REQUIRE(wait_until([&] { return r.stats().pages_installed == pages; }, 30000));
  CHECK_FALSE(wrong);
  uint64_t faults = r.stats().faults;
  CHECK(std::memcmp(r.data(), data.data(), data.size()) == 0);
  CHECK(r.stats().faults == faults);  // all there: the check faulted nothing
  CHECK(r.stats().bytes_read == data.size());  // every chunk read exactly once
  CHECK(r.stats().errors == 0);
}

TEST_CASE("drain keeps little in flight until it has run a while without demand faults", "[workingset][drain]") {
  auto data = pattern(32 * kMiB, 9);
  auto backend = std::make_shared<ScriptedBackend>(data, 64);
  Runtime rt;
  RegionOptions o;  // 64 KiB fills: the drain starts with one read in flight
  o.readahead = false;
  Region r = rt.map(backend, o);
  backend->hold();
  r.drain();
  REQUIRE(wait_until([&] { return backend->pending() == 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  CHECK(backend->pending() == 1);
  // Unheld, it ramps up to 4 MiB in flight (64 reads of 64 KiB, limited by
  // the 3/4 of the queue background reads may use) and loads everything.
  backend->release();
  REQUIRE(wait_until([&] { return r.stats().pages_installed == data.size() / 4096; }, 30000));
  CHECK(backend->reads() == data.size() / o.fill_size);
  CHECK(std::memcmp(r.data(), data.data(), data.size()) == 0);
}

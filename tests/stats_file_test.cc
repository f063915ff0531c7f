// SPDX-License-Identifier: Apache-2.0
// RuntimeOptions::stats_file: the runtime's stats JSON, written every
// interval and when the runtime stops.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <fstream>
#include <sstream>

#include "faultline/faultline.h"
#include "snapshot_test_util.h"
#include "test_util.h"

using namespace faultline;
using namespace faultline::test;
namespace t = faultline::test;

namespace {

constexpr size_t kMiB = 1024 * 1024;

// The file's JSON, or null while it is missing or (never, if the writer is
// right) partial.
nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return nlohmann::json::parse(text.str(), nullptr, false);
}

}  // namespace

TEST_CASE("the stats file is written at start, every interval and at the end", "[stats]") {
  t::TempDir dir;
  const std::string path = dir.file("stats.json");
  auto data = pattern(4 * kMiB, 61);
  mode_t mask = umask(027);
  umask(mask);
  {
    RuntimeOptions ro;
    ro.stats_file = path;
    ro.stats_interval = std::chrono::milliseconds(20);
    Runtime rt(ro);
    auto first = read_json(path);  // written by the constructor
    REQUIRE(first.is_object());
    CHECK(first["version"] == version());
    CHECK(first["faults"] == 0);
    struct stat st {};
    REQUIRE(stat(path.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == (0666 & ~mask));

    RegionOptions o;
    o.readahead = false;
    Region r = rt.map(MemoryBackend::borrow(data), o);
    CHECK(first_mismatch(r.data(), data.data(), 16 * 65536) == -1);  // 16 faults
    REQUIRE(wait_until([&] {
      auto j = read_json(path);
      return j.is_object() && j["faults"] == 16;
    }));
    CHECK(first_mismatch(r.data() + kMiB, data.data() + kMiB, 65536) == -1);  // one more, then stop at once
  }
  auto last = read_json(path);  // the destructor's write has the final numbers
  REQUIRE(last.is_object());
  CHECK(last["faults"] == 17);
  CHECK(last["bytes_installed"] == 17 * 65536);
  CHECK(dir.entries() == 1);  // no temporary file left behind
}

TEST_CASE("a stats file that cannot be written, or a bad interval, is an error at once", "[stats][errors]") {
  t::TempDir dir;
  RuntimeOptions ro;
  ro.stats_file = dir.file("missing/stats.json");
  CHECK_THROWS_WITH(Runtime(ro), Catch::Contains("stats file") && Catch::Contains(dir.file("missing")));
  ro.stats_file = dir.file("stats.json");
  ro.stats_interval = std::chrono::milliseconds(5);
  CHECK_THROWS_WITH(Runtime(ro), Catch::Contains("RuntimeOptions.stats_interval = 5 ms"));
  CHECK(dir.entries() == 0);
}

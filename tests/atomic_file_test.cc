// SPDX-License-Identifier: Apache-2.0
// The crash-safe file writer (runtime/atomic_file.h) and the modes of the
// files written with it: snapshots and working sets follow the umask, and a
// snapshot of a file is never readable by more users than the file.
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "atomic_file.h"
#include "faultline/error.h"
#include "faultline/snapshot.h"
#include "faultline/working_set.h"
#include "snapshot_test_util.h"
#include "test_util.h"

using namespace faultline;
using namespace faultline::test;
using Catch::Contains;

namespace {

// Sets the process umask for one scope (tests run one at a time).
struct UmaskGuard {
  mode_t old;
  explicit UmaskGuard(mode_t m) : old(::umask(m)) {}
  ~UmaskGuard() { ::umask(old); }
};

mode_t mode_of(const std::string& path) {
  struct stat st;
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

std::vector<unsigned char> bytes_of(const std::string& s) { return {s.begin(), s.end()}; }

}  // namespace

TEST_CASE("AtomicFile replaces the file only on commit and never leaves its temporary file", "[atomicfile]") {
  TempDir dir;
  const std::string path = dir.file("f");
  write_bytes(path, bytes_of("old"));

  SECTION("commit replaces the file") {
    detail::AtomicFile f(path, "test file " + path);
    REQUIRE(f.temp_path().rfind(path + ".tmp.", 0) == 0);
    f.append("xyz!", 4);
    f.write_at(0, "ab", 2);
    REQUIRE(read_bytes(path) == bytes_of("old"));  // untouched until commit
    REQUIRE(dir.entries() == 2);
    f.commit();
    REQUIRE(read_bytes(path) == bytes_of("abz!"));
  }
  SECTION("no commit: the temporary file goes, the old file stays") {
    {
      detail::AtomicFile f(path, "test file " + path);
      f.append("new", 3);
      REQUIRE(std::filesystem::exists(f.temp_path()));
    }
    REQUIRE(read_bytes(path) == bytes_of("old"));
  }
  SECTION("a failed rename (the name is a directory) removes the temporary file") {
    const std::string d = dir.file("d");
    std::filesystem::create_directory(d);
    write_bytes(d + "/inside", bytes_of("x"));
    std::string temp;
    {
      detail::AtomicFile f(d, "test file " + d);
      temp = f.temp_path();
      f.append("new", 3);
      REQUIRE_THROWS_WITH(f.commit(), Contains("cannot write test file " + d) && Contains("rename " + temp));
    }
    REQUIRE_FALSE(std::filesystem::exists(temp));
    REQUIRE(read_bytes(d + "/inside") == bytes_of("x"));
    std::filesystem::remove_all(d);
  }
  SECTION("a missing directory is named") {
    REQUIRE_THROWS_WITH(detail::AtomicFile(dir.file("no/such/f"), "test file"),
                        Contains("cannot create a temporary file for test file in " + dir.file("no/such")));
  }
  SECTION("temporary names differ") {
    detail::AtomicFile a(path, "a"), b(path, "b");
    REQUIRE(a.temp_path() != b.temp_path());
    REQUIRE(dir.entries() == 3);
  }
  CHECK(dir.entries() == 1);  // the file alone: no temporary file left
}

TEST_CASE("a working-set save that fails half-way leaves no temporary file", "[atomicfile][workingset][fork]") {
  TempDir dir;
  const std::string path = dir.file("ws");
  WorkingSet ws{65536, uint64_t{1} << 40, {}};
  for (uint64_t i = 0; i < 200000; ++i) ws.offsets.push_back(i * 65536);  // 1.6 MB of offsets
  // A file-size limit makes the write fail (EFBIG), as a full disk would.
  int status = run_in_child([&] {
    signal(SIGXFSZ, SIG_IGN);
    rlimit lim{1 << 20, 1 << 20};
    if (setrlimit(RLIMIT_FSIZE, &lim) != 0) _exit(4);
    try {
      save_working_set(path, ws);
    } catch (const Error& e) {
      if (std::string(e.what()).find("cannot write working set " + path) != std::string::npos &&
          e.sys_errno() == EFBIG)
        _exit(0);
      std::fprintf(stderr, "unexpected error: %s\n", e.what());
    }
    _exit(5);
  });
  REQUIRE(status == 0);
  REQUIRE(dir.entries() == 0);
}

TEST_CASE("snapshots and working sets follow the umask; a snapshot is never wider than its input", "[atomicfile][snapshot][workingset]") {
  TempDir dir;
  const std::vector<std::byte> data = pattern(100 * 1024, 3);
  const std::string input = dir.file("input");
  write_bytes(input, std::vector<unsigned char>(reinterpret_cast<const unsigned char*>(data.data()),
                                                reinterpret_cast<const unsigned char*>(data.data()) + data.size()));
  const WorkingSet ws{65536, 1 << 20, {0, 65536}};

  SECTION("umask 022: 0644, as for any new file") {
    UmaskGuard u(022);
    REQUIRE(::chmod(input.c_str(), 0666) == 0);
    write_snapshot(data, dir.file("mem"));
    write_snapshot_from_file(input, dir.file("file"));
    save_working_set(dir.file("ws"), ws);
    CHECK(mode_of(dir.file("mem")) == 0644);
    CHECK(mode_of(dir.file("file")) == 0644);
    CHECK(mode_of(dir.file("ws")) == 0644);
  }
  SECTION("umask 077: 0600") {
    UmaskGuard u(077);
    REQUIRE(::chmod(input.c_str(), 0644) == 0);
    write_snapshot(data, dir.file("mem"));
    write_snapshot_from_file(input, dir.file("file"));
    save_working_set(dir.file("ws"), ws);
    CHECK(mode_of(dir.file("mem")) == 0600);
    CHECK(mode_of(dir.file("file")) == 0600);
    CHECK(mode_of(dir.file("ws")) == 0600);
  }
  SECTION("an input readable by its owner only gives a snapshot readable by its owner only") {
    UmaskGuard u(022);
    REQUIRE(::chmod(input.c_str(), 0600) == 0);
    write_snapshot_from_file(input, dir.file("file"));
    CHECK(mode_of(dir.file("file")) == 0600);
    REQUIRE(::chmod(input.c_str(), 0640) == 0);
    write_snapshot_from_file(input, dir.file("file"));  // replaces it: the new mode, not the old file's
    CHECK(mode_of(dir.file("file")) == 0640);
    REQUIRE(::chmod(input.c_str(), 0444) == 0);  // read-only stays read-only, execute bits never come in
    write_snapshot_from_file(input, dir.file("file"));
    CHECK(mode_of(dir.file("file")) == 0444);
    REQUIRE(::chmod(input.c_str(), 0755) == 0);
    write_snapshot_from_file(input, dir.file("file"));
    CHECK(mode_of(dir.file("file")) == 0644);
  }
  SECTION("umask 027 and a 0664 input: 0640") {
    UmaskGuard u(027);
    REQUIRE(::chmod(input.c_str(), 0664) == 0);
    write_snapshot_from_file(input, dir.file("file"));
    CHECK(mode_of(dir.file("file")) == 0640);
  }
}

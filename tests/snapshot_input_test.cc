// SPDX-License-Identifier: Apache-2.0
// write_snapshot_from_file() and its input: a file that changes while it is
// read is refused (never a torn image that verifies); what is not a regular
// file (or block device) is refused without blocking.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <thread>

#include "faultline/error.h"
#include "faultline/snapshot.h"
#include "snapshot_test_util.h"
#include "test_util.h"
#include "unique_fd.h"

using namespace faultline;
using namespace faultline::test;
using Catch::Contains;

namespace {

constexpr size_t kKiB = 1024, kMiB = 1024 * 1024;

// 4 MiB in 1024 chunks of 4 KiB: the progress callback first runs after 64
// chunks, long before the last ones are read.
SnapshotWriteOptions small_chunks() {
  SnapshotWriteOptions o;
  o.chunk_size = 4 * kKiB;
  o.threads = 2;
  o.dictionary_bytes = 0;
  return o;
}

// Runs write_snapshot_from_file() while `writer` changes the input from
// another thread, over and over until the write returns. The first progress
// callback (on the writing thread, in the middle of the read) waits until the
// writer has changed the file at least once, so the change always falls
// inside the read. Returns the error's message ("" if none).
// `writer` returns false if its change failed (checked here, not on its thread).
std::string snapshot_while_changing(const std::string& input, const std::string& output,
                                    const std::function<bool(int fd)>& writer) {
  std::atomic<bool> started{false}, done{false}, writer_failed{false};
  std::atomic<int> changes{0};
  std::thread t([&] {
    detail::UniqueFd fd(::open(input.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) writer_failed = true;
    wait_until([&] { return started || done; });
    while (fd && !done) {
      if (!writer(fd.get())) writer_failed = true;
      changes++;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  SnapshotWriteOptions o = small_chunks();
  bool called = false, saw_change = false;
  o.progress = [&](uint64_t, uint64_t) {
    if (called) return;
    called = true;
    started = true;
    saw_change = wait_until([&] { return changes > 0; });
  };
  std::string message;
  try {
    write_snapshot_from_file(input, output, o);
  } catch (const Error& e) {
    message = e.what();
  }
  done = true;
  t.join();
  REQUIRE_FALSE(writer_failed);
  REQUIRE(called);
  REQUIRE(saw_change);
  return message;
}

}  // namespace

TEST_CASE("a file that changes while it is snapshotted is refused and nothing is written", "[snapshot][errors]") {
  TempDir dir;
  const std::string input = dir.file("input"), output = dir.file("out.flsnap");
  const auto data = pattern(4 * kMiB, 5);
  write_bytes(input, std::vector<unsigned char>(reinterpret_cast<const unsigned char*>(data.data()),
                                                reinterpret_cast<const unsigned char*>(data.data()) + data.size()));
  // An older snapshot under the output name stays as it was.
  const auto old = pattern(100 * kKiB, 6);
  write_snapshot(old, output);
  const auto old_bytes = read_bytes(output);

  std::string message;
  SECTION("overwritten in place: same size, new bytes at the end") {
    const auto fresh = pattern(4 * kKiB, 7);
    message = snapshot_while_changing(input, output, [&](int fd) {
      return ::pwrite(fd, fresh.data(), fresh.size(), 4 * kMiB - fresh.size()) == static_cast<ssize_t>(fresh.size());
    });
    CHECK_THAT(message, Contains("mtime changed"));
    CHECK(std::filesystem::file_size(input) == 4 * kMiB);
  }
  SECTION("growing: appended to while it is read") {
    const auto more = pattern(4 * kKiB, 8);
    message = snapshot_while_changing(input, output, [&](int fd) {
      struct stat st;
      return ::fstat(fd, &st) == 0 &&
             ::pwrite(fd, more.data(), more.size(), st.st_size) == static_cast<ssize_t>(more.size());
    });
    CHECK_THAT(message, Contains("size 4194304 -> "));
  }
  SECTION("shrinking: truncated while it is read") {
    message = snapshot_while_changing(input, output, [](int fd) { return ::ftruncate(fd, 1 * kMiB) == 0; });
    CHECK_THAT(message, Contains("size 4194304 -> 1048576 bytes"));
  }
  CHECK_THAT(message, Contains("snapshot input " + input + " changed while it was being read") &&
                          Contains("nothing written to " + output));
  CHECK((read_bytes(output) == old_bytes));  // the old snapshot is untouched (not expanded: 4 MiB)
  CHECK(dir.entries() == 2);               // input and output: no temporary file left
}

TEST_CASE("a FIFO, a directory or a character device is refused naming it, without blocking", "[snapshot][errors][fork]") {
  TempDir dir;
  const std::string fifo = dir.file("fifo"), out = dir.file("out");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  // In a child: a regression would block in open() until it is killed.
  auto refused = [&](const std::function<void()>& call, const std::string& message) {
    return run_in_child(
        [&] {
          try {
            call();
          } catch (const Error& e) {
            check(std::string(e.what()).find(message) != std::string::npos, e.what());
            _exit(0);
          }
          check(false, "no error");
        },
        20000);
  };
  CHECK(refused([&] { write_snapshot_from_file(fifo, out); },
                "snapshot input " + fifo + " is a FIFO, not a regular file or block device") == 0);
  CHECK(refused([&] { SnapshotReader::open(fifo); }, "snapshot " + fifo + " is a FIFO, not a regular file") == 0);
  CHECK_THROWS_WITH(write_snapshot_from_file(dir.path, out),
                    Contains("snapshot input " + dir.path + " is a directory, not a regular file or block device"));
  CHECK_THROWS_WITH(write_snapshot_from_file("/dev/null", out),
                    Contains("snapshot input /dev/null is a character device"));
  CHECK_THROWS_WITH(SnapshotReader::open("/dev/null"), Contains("snapshot /dev/null is a character device"));
  CHECK(dir.entries() == 1);  // the FIFO: no output, no temporary file
}

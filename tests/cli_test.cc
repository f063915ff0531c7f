// SPDX-License-Identifier: Apache-2.0
// The shared command-line helper (tools/cli/cli.h): size parsing, size
// options with ranges, the power-of-two check, required subcommands, and
// run()'s exit statuses and messages.
#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "cli.h"

using namespace faultline;
using Catch::Contains;

namespace {

uint64_t size_of(const std::string& text) {
  uint64_t v = 12345;
  INFO(text);
  REQUIRE(cli::parse_size(text, v));
  return v;
}

bool refused(const std::string& text) {
  uint64_t v = 12345;
  const bool ok = cli::parse_size(text, v);
  if (!ok) REQUIRE(v == 12345);  // untouched
  return !ok;
}

// Runs cli::run() on `args` (argv[0] included) with stderr captured.
struct RunResult {
  int status;
  std::string err;
};
RunResult run_captured(CLI::App& app, std::vector<std::string> args, const std::function<int()>& body) {
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  char path[] = "/tmp/faultline-cli-test-XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  std::fflush(stderr);
  const int saved = dup(STDERR_FILENO);
  dup2(fd, STDERR_FILENO);
  const int status = cli::run(app, static_cast<int>(args.size()), argv.data(), body);
  std::fflush(stderr);
  dup2(saved, STDERR_FILENO);
  close(saved);
  close(fd);
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  unlink(path);
  return {status, text.str()};
}

}  // namespace

TEST_CASE("parse_size: plain numbers and K/M/G/T suffixes, powers of 1024", "[cli]") {
  CHECK(size_of("0") == 0);
  CHECK(size_of("4096") == 4096);
  CHECK(size_of("64K") == 64 * 1024);
  CHECK(size_of("2M") == 2 * 1024 * 1024);
  CHECK(size_of("3G") == uint64_t{3} << 30);
  CHECK(size_of("5T") == uint64_t{5} << 40);
  CHECK(size_of("007K") == 7 * 1024);
}

TEST_CASE("parse_size: suffixes in any case, with iB or B", "[cli]") {
  for (const char* s : {"64K", "64k", "64KiB", "64kib", "64KIB", "64kIb", "64KB", "64kb", "64Kb"})
    CHECK(size_of(s) == 64 * 1024);
  CHECK(size_of("1GiB") == uint64_t{1} << 30);
  CHECK(size_of("1mb") == uint64_t{1} << 20);
  CHECK(size_of("2tib") == uint64_t{2} << 40);
}

TEST_CASE("parse_size: anything else is refused, the output untouched", "[cli]") {
  for (const char* s : {"", "K", "iB", "-1", "+1", " 1", "1 ", "1 K", "1.5M", "0x10", "64Q", "64KiBs", "64KK", "64iB",
                        "64B", "64Kib2", "1e3", "64KiB ", "M64"})
    CHECK(refused(s));
}

TEST_CASE("parse_size: overflow is refused, the largest values are not", "[cli]") {
  CHECK(size_of("18446744073709551615") == UINT64_MAX);
  CHECK(refused("18446744073709551616"));
  CHECK(refused("99999999999999999999999"));
  CHECK(size_of("16777215T") == uint64_t{16777215} << 40);
  CHECK(refused("16777216T"));  // 2^64
  CHECK(size_of("17179869183G") == uint64_t{17179869183} << 30);
  CHECK(refused("17179869184G"));
  CHECK(refused("18014398509481984K"));  // 2^54 K = 2^64
}

TEST_CASE("add_size: values, ranges and messages naming the option", "[cli]") {
  CLI::App app("test", "prog");
  uint32_t chunk = 0;
  uint64_t big = 0;
  cli::add_size(app, "--chunk", chunk, "a chunk size", 4096, 4u << 20)->check(cli::power_of_two());
  cli::add_size(app, "--big", big, "any size");
  auto parse = [&](const std::string& line) {
    chunk = 0;
    big = 0;
    app.parse(line, false);
  };
  parse("--chunk 64K --big 1T");
  CHECK(chunk == 64 * 1024);
  CHECK(big == uint64_t{1} << 40);
  parse("--chunk=4096");
  CHECK(chunk == 4096);
  parse("--chunk 4MiB");
  CHECK(chunk == 4u << 20);
  parse("--big 18446744073709551615");
  CHECK(big == UINT64_MAX);

  CHECK_THROWS_WITH(parse("--chunk 2K"), Contains("--chunk") && Contains("must be from 4096 to 4194304 bytes, got '2K'"));
  CHECK_THROWS_WITH(parse("--chunk 8M"), Contains("must be from 4096 to 4194304 bytes, got '8M'"));
  CHECK_THROWS_WITH(parse("--chunk 12K"), Contains("--chunk") && Contains("must be a power of two, got '12K'"));
  CHECK_THROWS_WITH(parse("--chunk 64Q"),
                    Contains("--chunk") && Contains("expected a size such as 4096, 64K, 2M or 1G, got '64Q'"));
  CHECK_THROWS_WITH(parse("--big 16777216T"), Contains("--big") && Contains("got '16777216T'"));
  CHECK_THROWS_AS(parse("--chunk"), CLI::ParseError);

  // The default upper bound is the destination type's largest value.
  CLI::App small("test", "prog");
  uint32_t u32 = 0;
  cli::add_size(small, "--n", u32, "a 32-bit size");
  small.parse("--n 4294967295", false);
  CHECK(u32 == UINT32_MAX);
  CHECK_THROWS_WITH(small.parse("--n 4G", false), Contains("must be from 0 to 4294967295 bytes, got '4G'"));
}

TEST_CASE("run: exit status 0, 1 for a faultline::Error, 2 for a usage error, naming the subcommand", "[cli]") {
  CLI::App app("test", "prog");
  uint32_t n = 0;
  CLI::App* sub = app.add_subcommand("sub", "a subcommand");
  cli::add_size(*sub, "--n", n, "a size", 1, 100);
  app.add_subcommand("other", "another");
  cli::require_subcommand(app, "thing");
  int ran = 0;
  auto body = [&] {
    ++ran;
    if (n == 99) throw Error("ninety-nine is bad");
    return 0;
  };

  RunResult r = run_captured(app, {"prog", "sub", "--n", "5"}, body);
  CHECK(r.status == 0);
  CHECK(n == 5);
  CHECK(r.err.empty());

  r = run_captured(app, {"prog", "sub", "--n", "99"}, body);
  CHECK(r.status == 1);
  CHECK(r.err == "prog sub: ninety-nine is bad\n");

  r = run_captured(app, {"prog", "sub", "--n", "500"}, body);
  CHECK(r.status == 2);
  CHECK_THAT(r.err, Contains("prog sub: --n: must be from 1 to 100 bytes, got '500'") &&
                        Contains("Run with --help for more information."));

  r = run_captured(app, {"prog", "frob"}, body);
  CHECK(r.status == 2);
  CHECK_THAT(r.err, Contains("prog: unknown thing 'frob' (things: sub, other)"));

  r = run_captured(app, {"prog", "--frob"}, body);
  CHECK(r.status == 2);
  CHECK_THAT(r.err, Contains("prog: unknown option '--frob'"));

  r = run_captured(app, {"prog"}, body);
  CHECK(r.status == 2);
  CHECK_THAT(r.err, Contains("prog: a thing (one of: sub, other) is required"));
  CHECK(ran == 2);  // usage errors never reach the body
}

// SPDX-License-Identifier: Apache-2.0
// The stages of a read in flight (runtime/read_op.h): the transition table
// is the state diagram in docs/design.md, edge for edge, and the debug and
// sanitizer builds stop a transition the loop never makes.
#include <signal.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <utility>

#include "read_op.h"
#include "test_util.h"

using faultline::detail::ReadOp;
using Stage = ReadOp::Stage;

namespace {

constexpr Stage kStages[] = {Stage::kFree,     Stage::kQueued,   Stage::kReading,   Stage::kPlacing,
                             Stage::kHeld,     Stage::kDeferred, Stage::kInstalled, Stage::kPoisoned};

// The edges of the mermaid diagram under "### A read in flight".
std::set<std::pair<std::string, std::string>> diagram_edges() {
  std::ifstream in(std::string(FAULTLINE_SOURCE_DIR) + "/docs/design.md");
  REQUIRE(in);
  std::stringstream text;
  text << in.rdbuf();
  const std::string doc = text.str();
  size_t section = doc.find("### A read in flight");
  REQUIRE(section != std::string::npos);
  size_t open = doc.find("```mermaid", section);
  REQUIRE(open != std::string::npos);
  size_t close = doc.find("```", open + 3);
  REQUIRE(close != std::string::npos);
  std::istringstream block(doc.substr(open, close - open));
  std::set<std::pair<std::string, std::string>> edges;
  const std::regex edge(R"(^\s*(\w+)\s*-->\s*(\w+)\s*(:.*)?$)");
  std::string line;
  std::smatch m;
  while (std::getline(block, line))
    if (std::regex_match(line, m, edge)) edges.emplace(m[1], m[2]);
  return edges;
}

}  // namespace

TEST_CASE("a read's transitions are the ones docs/design.md draws", "[read_op]") {
  auto drawn = diagram_edges();
  std::set<std::string> names;
  for (Stage s : kStages) names.insert(ReadOp::stage_name(s));
  for (const auto& [from, to] : drawn) {
    INFO(from << " --> " << to);
    CHECK(names.count(from) == 1);  // every state drawn is a Stage
    CHECK(names.count(to) == 1);
  }
  size_t allowed = 0;
  for (Stage from : kStages)
    for (Stage to : kStages) {
      bool in_table = ReadOp::may_advance(from, to);
      bool in_diagram = drawn.count({ReadOp::stage_name(from), ReadOp::stage_name(to)}) == 1;
      INFO(ReadOp::stage_name(from) << " --> " << ReadOp::stage_name(to));
      CHECK(in_table == in_diagram);
      allowed += in_table;
    }
  CHECK(allowed == drawn.size());
  // Every stage is reached and left: no stage is a dead end or unreachable.
  for (Stage s : kStages) {
    bool in = false, out = false;
    for (Stage t : kStages) {
      in |= ReadOp::may_advance(t, s);
      out |= ReadOp::may_advance(s, t);
    }
    INFO(ReadOp::stage_name(s));
    CHECK(in);
    CHECK(out);
  }
}

TEST_CASE("a read follows its stages from free back to free", "[read_op]") {
  ReadOp op;
  CHECK(op.stage == Stage::kFree);
  for (Stage s : {Stage::kQueued, Stage::kReading, Stage::kQueued, Stage::kReading, Stage::kPlacing, Stage::kHeld,
                  Stage::kPlacing, Stage::kDeferred, Stage::kPlacing, Stage::kInstalled, Stage::kFree}) {
    op.advance(s);
    op.expect(s);
    CHECK(op.stage == s);
  }
}

#if FAULTLINE_CHECK_THREADS
TEST_CASE("debug builds stop a read that skips a stage", "[read_op][fork]") {
  using faultline::test::run_in_child;
  // Installed without being read, placed, or queued.
  CHECK(run_in_child([] {
          ReadOp op;
          op.chunk = 7;
          op.advance(Stage::kInstalled);
        }) == SIGABRT);
  // A completion for a read that was never handed to a backend.
  CHECK(run_in_child([] {
          ReadOp op;
          op.advance(Stage::kQueued);
          op.expect(Stage::kReading);
        }) == SIGABRT);
  // The same steps in order pass.
  CHECK(run_in_child([] {
          ReadOp op;
          op.advance(Stage::kQueued);
          op.advance(Stage::kReading);
          op.expect(Stage::kReading);
          op.advance(Stage::kPoisoned);
          op.advance(Stage::kFree);
        }) == 0);
}
#endif

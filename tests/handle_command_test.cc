// SPDX-License-Identifier: Apache-2.0
// `faultline handle` end to end: the real binary against the test VMM
// (fake_vmm.cc, Firecracker's side of the protocol). Every byte the VMM's
// threads read is checked against the image; the handler must exit 0 when
// the VMM has gone. Then the handshakes it must refuse (malformed JSON, no
// descriptor, one that is not a userfaultfd, overlapping mappings, a
// mapping beyond the image), each with its exit status and message, the
// guest's SIGBUS after such a refusal, no VMM at all, and a live socket;
// and the VMM's events: a balloon (MADV_DONTNEED), mremap and fork.
// Every wait is bounded.
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "child_process.h"
#include "faultline/snapshot.h"
#include "faultline/working_set.h"
#include "test_util.h"

#if defined(FAULTLINE_CLI_PATH) && defined(FAULTLINE_TEST_VMM_PATH)

using namespace faultline;
using namespace faultline::test;

namespace {

constexpr size_t kImageBytes = 6 * 1024 * 1024 + 5 * 4096;  // (not a whole number of chunks)

// A guest memory file: data, then a run of zeros (ZEROPAGE), then data.
std::vector<std::byte> guest_image() {
  std::vector<std::byte> bytes = pattern(kImageBytes, 12);
  std::fill(bytes.begin() + 2 * 1024 * 1024, bytes.begin() + 3 * 1024 * 1024, std::byte{0});
  return bytes;
}

struct Files {
  TempFile raw{guest_image()};
  std::string socket = raw.path() + ".sock";
  std::string snapshot = raw.path() + ".flz";
  std::string ws = raw.path() + ".ws";
  ~Files() {
    for (const std::string& p : {socket, socket + ".lock", snapshot, ws}) ::unlink(p.c_str());
  }
};

ChildProcess handler(const std::vector<std::string>& args) { return ChildProcess(FAULTLINE_CLI_PATH, args); }

// What an exited child printed on stdout.
std::string all_output(ChildProcess& p) {
  std::string out;
  for (std::string line; !(line = p.read_line(2000)).empty();) out += line + "\n";
  return out;
}

ChildProcess vmm(const std::string& mode, const Files& f, int regions, int threads, const std::string& spelling) {
  return ChildProcess(FAULTLINE_TEST_VMM_PATH,
                      {mode, f.socket, f.raw.path(), std::to_string(regions), std::to_string(threads), spelling});
}

// Runs a good restore; returns the handler's stderr.
std::string restore(const Files& f, std::vector<std::string> args, const std::string& mode, int regions,
                    const std::string& spelling) {
  args.insert(args.begin(), "handle");
  args.insert(args.end(), {"--socket", f.socket, "--accept-timeout", "20"});
  ChildProcess h = handler(args);
  ChildProcess v = vmm(mode, f, regions, 4, spelling);
  int vmm_status = v.wait(60000);
  INFO("VMM stderr: " << v.stderr_text());
  INFO("handler stderr: " << h.stderr_text());
  CHECK(vmm_status == 0);
  CHECK(h.wait(30000) == 0);  // the VMM has gone: exit 0
  std::string err = h.stderr_text();
  CHECK(err.find("the VMM has gone") != std::string::npos);
  return err;
}

// A restore with the test VMM in an event MODE (balloon, remap, fork), 4 KiB
// fills: every second page read before the event leaves the pages between
// them unloaded, so each event meets placed and missing pages.
struct EventRun {
  int vmm_status = -1, handler_status = -1;  // (the handler's: -1 if the VMM failed, then it is killed)
  std::string out;  // the VMM's stdout
  std::string log;  // everything both printed, for INFO
};
EventRun run_event_mode(const Files& f, const std::string& mode, int regions = 2) {
  ChildProcess h = handler({"handle", f.raw.path(), "--fill-size", "4K", "--socket", f.socket, "--accept-timeout", "20"});
  ChildProcess v = vmm(mode, f, regions, 4, "both");
  EventRun r;
  r.vmm_status = v.wait(60000);
  r.out = all_output(v);
  if (r.vmm_status == 0) r.handler_status = h.wait(30000);
  r.log = "VMM: " + r.out + v.stderr_text() + "\nhandler: " + h.stderr_text();
  return r;
}

}  // namespace

TEST_CASE("faultline handle serves a VMM's guest memory, every byte checked, and exits 0 when it goes",
          "[handle][cli]") {
  Files f;
  SECTION("a raw image, page_size, three mappings") { restore(f, {f.raw.path()}, "ok", 3, "page_size"); }
  SECTION("a raw image, the older page_size_kib only") { restore(f, {f.raw.path()}, "ok", 2, "page_size_kib"); }
  SECTION("a snapshot (told apart by content), both spellings, as Firecracker sends") {
    write_snapshot_from_file(f.raw.path(), f.snapshot);
    restore(f, {f.snapshot}, "ok", 2, "both");
  }
  SECTION("a second uffd on the same connection, its faults arriving before its mappings") {
    restore(f, {f.raw.path(), "--fill-size", "4K"}, "two-uffds", 4, "page_size");
  }
  SECTION("--drain") { restore(f, {f.raw.path(), "--drain"}, "ok", 2, "both"); }
  SECTION("a working set recorded, then prefetched") {
    restore(f, {f.raw.path(), "--working-set-record", f.ws}, "ok", 2, "both");
    WorkingSet ws = load_working_set(f.ws);
    CHECK(ws.region_length == kImageBytes);
    CHECK(ws.fill_size == 64 * 1024);
    // The VMM touches every page: every 64 KiB chunk of the image is
    // recorded (as image offsets), each once.
    std::vector<uint64_t> sorted = ws.offsets;
    std::sort(sorted.begin(), sorted.end());
    CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());
    CHECK(sorted.size() == (kImageBytes + 65535) / 65536);
    CHECK(sorted.back() == (kImageBytes - 1) / 65536 * 65536);
    std::string err = restore(f, {f.raw.path(), "--working-set", f.ws}, "ok", 2, "both");
    CHECK(err.find("(0 prefetched chunks)") == std::string::npos);
  }
}

TEST_CASE("faultline handle follows the VMM's balloon and mremap, every byte checked", "[handle][cli][events]") {
  Files f;
  SECTION("balloon: MADV_DONTNEED'd pages read zeros, never image data, and take writes") {
    EventRun r = run_event_mode(f, "balloon");
    INFO(r.log);
    CHECK(r.vmm_status == 0);
    CHECK(r.out.find("(the balloon reads zeros)") != std::string::npos);
    CHECK(r.handler_status == 0);
  }
  SECTION("remap: a guest region moved with mremap is served at its new address") {
    EventRun r = run_event_mode(f, "remap");
    INFO(r.log);
    CHECK(r.vmm_status == 0);
    CHECK(r.out.find("remap checked") != std::string::npos);
    CHECK(r.handler_status == 0);
  }
}

TEST_CASE("faultline handle serves the VMM's forked child on its own uffd, then the parent", "[handle][cli][events]") {
  Files f;
  EventRun r = run_event_mode(f, "fork");
  INFO(r.log);
  if (r.vmm_status == 77) {
    WARN(r.out);  // "SKIPPED: ..."
    return;
  }
  CHECK(r.vmm_status == 0);
  // Half the first region and all of the second were never loaded before
  // the fork: the child got them only through its own uffd.
  CHECK(r.out.find("child: fork checked") != std::string::npos);
  CHECK(r.handler_status == 0);
}

TEST_CASE("faultline handle serves hugetlbfs guest memory in whole 2 MiB pages", "[handle][cli][huge]") {
  HugePages pool(4);  // (the 6 MiB guest, and one more)
  if (!pool.ok()) {
    WARN("SKIPPED: " << pool.why());
    return;
  }
  Files f;
  SECTION("two mappings, read by four threads, every byte checked") {
    // (--fill-size 4K: a huge mapping is still served in whole pages, or
    // the VMM's hugetlb memory would refuse every placement.)
    std::string err = restore(f, {f.raw.path(), "--fill-size", "4K"}, "huge", 2, "both");
    size_t at = err.find(" bytes placed");
    REQUIRE(at != std::string::npos);
    uint64_t placed = std::stoull(err.substr(err.rfind(' ', at - 1) + 1));
    CHECK(placed >= 6 * 1024 * 1024);
    CHECK(placed % (2 * 1024 * 1024) == 0);
  }
  SECTION("a balloon: the ballooned huge page reads zeros, then takes writes") {
    EventRun r = run_event_mode(f, "huge-balloon", 1);
    INFO(r.log);
    CHECK(r.vmm_status == 0);
    CHECK(r.out.find("huge-balloon checked") != std::string::npos);
    CHECK(r.out.find("(the balloon reads zeros)") != std::string::npos);
    CHECK(r.handler_status == 0);
  }
}

TEST_CASE("faultline handle refuses a bad handshake with a clear error, never hangs", "[handle][cli]") {
  Files f;
  struct Case {
    const char* mode;
    const char* message;
  };
  const Case cases[] = {
      {"bad-json", "the VMM's message is not valid JSON"},
      {"no-fd", "the VMM's message carries no file descriptor"},
      {"wrong-fd", "is not a userfaultfd (it is /dev/null)"},
      {"overlap", "mappings overlap: [0x"},
      {"beyond", "of the image is beyond its end (" },
  };
  for (const Case& c : cases) {
    DYNAMIC_SECTION(c.mode) {
      ChildProcess h = handler({"handle", f.raw.path(), "--socket", f.socket, "--accept-timeout", "20"});
      ChildProcess v = vmm(c.mode, f, 2, 1, "both");
      int status = h.wait(30000);
      std::string err = h.stderr_text();
      INFO("handler stderr: " << err);
      CHECK(status == 1);
      CHECK(err.find(c.message) != std::string::npos);
      CHECK(v.wait(30000) == 0);  // it saw the hang-up
    }
  }
  for (const char* mode : {"overlap-touch", "bad-json-touch"}) {
    DYNAMIC_SECTION("after a refusal (" << mode << ") the guest's touch gets SIGBUS, not a hang") {
      ChildProcess h = handler({"handle", f.raw.path(), "--socket", f.socket, "--accept-timeout", "20"});
      ChildProcess v = vmm(mode, f, 2, 1, "both");
      CHECK(h.wait(30000) == 1);
      INFO("VMM stderr: " << v.stderr_text());
      CHECK(v.wait(30000) == 0);
      CHECK(v.read_line() == "SIGBUS as expected");
    }
  }
}

TEST_CASE("faultline handle: no VMM, a live socket, --help", "[handle][cli]") {
  Files f;
  SECTION("no VMM connects: a timeout error") {
    ChildProcess h = handler({"handle", f.raw.path(), "--socket", f.socket, "--accept-timeout", "1"});
    CHECK(h.wait(15000) == 1);
    CHECK(h.stderr_text().find("no VMM connected to " + f.socket + " within 1 s (--accept-timeout)") !=
          std::string::npos);
    CHECK(access(f.socket.c_str(), F_OK) != 0);  // its socket file is removed
  }
  SECTION("a socket another handler listens on is refused, and that handler still serves its VMM") {
    ChildProcess first = handler({"handle", f.raw.path(), "--socket", f.socket, "--accept-timeout", "20"});
    REQUIRE(wait_until([&] { return first.stderr_text().find("listening on") != std::string::npos; }, 10000));
    ChildProcess second = handler({"handle", f.raw.path(), "--socket", f.socket, "--accept-timeout", "20"});
    CHECK(second.wait(15000) == 1);
    CHECK(second.stderr_text().find("is in use by a running server") != std::string::npos);
    ChildProcess v = vmm("ok", f, 1, 2, "both");
    CHECK(v.wait(60000) == 0);
    CHECK(first.wait(30000) == 0);
  }
  SECTION("missing IMAGE and --socket; --help documents the protocol") {
    ChildProcess bad = handler({"handle", "--socket", f.socket});
    CHECK(bad.wait(10000) == 2);
    CHECK(bad.stderr_text().find("missing IMAGE (or --remote ADDRESS)") != std::string::npos);
    ChildProcess help = handler({"handle", "--help"});
    std::string text;
    for (int i = 0; i < 200; ++i) text += help.read_line(2000) + "\n";  // ("" at EOF: at once)
    CHECK(help.wait(10000) == 0);
    for (const char* s : {"base_host_virt_addr", "page_size_kib", "SCM_RIGHTS", "--working-set-record", "--remote",
                          "--accept-timeout", "SIGBUS"})
      CHECK(text.find(s) != std::string::npos);
  }
}

#endif

// SPDX-License-Identifier: Apache-2.0
// live_migration: a running workload moved to another process.
//
// The workload is an array of counters in a region (1 GiB by default):
// writer threads stamp tagged words into a 5% hot set, each writer its own
// word of every hot page, and remember the last value each write left (the
// write is "acknowledged" once remembered). The rest of the region holds a
// pattern. The source migrates the region with faultline/migration.h; the
// state blob carries the writers' record. The destination carries on with
// the workload at once and checks, on each writer's first touch of a hot
// page and at the end for every word, that nothing acknowledged before the
// stop is lost, and that the pattern is intact. The source prints the
// migration's metrics.
//
//   live_migration --precopy                  # forks the destination, 127.0.0.1
//   live_migration --postcopy --size 256M
//   live_migration --hybrid --json
//   live_migration --listen 0.0.0.0:7000      # destination only (another host)
//   live_migration --connect HOST:7000        # source only
//
// Exit status: 0 no lost writes and every byte right, 1 otherwise or a
// failure, 2 bad arguments.
#include <faultline/faultline.h>
#include <faultline/memory_backend.h>
#include <faultline/migration.h>

#include <cli.h>

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "sample_util.h"

namespace {

using faultline::Error;
constexpr uint64_t kPage = 4096;
constexpr uint64_t kWords = kPage / 8;

struct Args {
  faultline::MigrationMode mode = faultline::MigrationMode::kPrecopy;
  uint64_t size = 1ull << 30;
  int writers = 2;
  double hot_percent = 5;
  uint64_t rate = 0;        // page writes per second, all writers; 0: as fast as they go
  uint64_t run_ms = 1000;   // the workload's time on each side
  uint64_t fill = 16 * 1024;
  uint64_t downtime_ms = 20;
  std::string listen, connect, secret_file;
  bool json = false;
};

uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Word i of the region before any write.
uint64_t initial(uint64_t i) { return mix64(i); }
uint64_t tag(uint64_t seq, int writer) { return seq << 8 | static_cast<uint64_t>(writer); }

// The workload over one region: which pages are hot, the writers, and the
// last value each writer left in each hot page.
class Workload {
 public:
  Workload(std::byte* data, uint64_t size, const Args& a) : words_(reinterpret_cast<std::atomic<uint64_t>*>(data)), a_(a) {
    pages_ = size / kPage;
    hot_ = std::max<uint64_t>(1, static_cast<uint64_t>(static_cast<double>(pages_) * a.hot_percent / 100));
    if (static_cast<uint64_t>(a.writers) > kWords) throw Error("--writers: at most 512");
    seq_.assign(static_cast<size_t>(a.writers), std::vector<uint64_t>(hot_, 0));
  }
  uint64_t hot_page(uint64_t h) const { return h * (pages_ / hot_); }
  uint64_t hot_pages() const { return hot_; }

  void fill() {
    for (uint64_t i = 0; i < pages_ * kWords; ++i) words_[i].store(initial(i), std::memory_order_relaxed);
  }

  // The record as a blob, and back (destination).
  std::vector<std::byte> state() const {
    std::vector<std::byte> s(16 + seq_.size() * hot_ * 8);
    uint64_t head[2] = {seq_.size(), hot_};
    std::memcpy(s.data(), head, 16);
    for (size_t w = 0; w < seq_.size(); ++w) std::memcpy(s.data() + 16 + w * hot_ * 8, seq_[w].data(), hot_ * 8);
    return s;
  }
  void load_state(const std::vector<std::byte>& s) {
    uint64_t head[2];
    if (s.size() < 16) throw Error("state blob of " + std::to_string(s.size()) + " bytes");
    std::memcpy(head, s.data(), 16);
    if (head[0] != seq_.size() || head[1] != hot_ || s.size() != 16 + head[0] * head[1] * 8)
      throw Error("state blob for " + std::to_string(head[0]) + " writers and " + std::to_string(head[1]) +
                  " hot pages; this side has " + std::to_string(seq_.size()) + " and " + std::to_string(hot_));
    for (size_t w = 0; w < seq_.size(); ++w) std::memcpy(seq_[w].data(), s.data() + 16 + w * hot_ * 8, hot_ * 8);
    check_first_ = true;
  }

  void start() {
    pause_ = false;
    for (int w = 0; w < a_.writers; ++w) threads_.emplace_back([this, w] { write_loop(w); });
  }
  // The stop callback: every writer parked, its last write acknowledged.
  void pause() {
    pause_ = true;
    while (parked_.load() != static_cast<int>(threads_.size())) std::this_thread::yield();
  }
  void resume() {
    pause_ = false;
    pause_.notify_all();
  }
  void finish() {
    quit_ = true;
    resume();
    for (auto& t : threads_) t.join();
    threads_.clear();
  }
  uint64_t writes() const { return writes_.load(); }
  uint64_t lost() const { return lost_.load(); }

  // Every word: the pattern, or a hot word's last acknowledged value.
  uint64_t verify() const {
    uint64_t bad = 0;
    for (uint64_t h = 0, p = 0; p < pages_; ++p) {
      bool hot = h < hot_ && hot_page(h) == p;
      for (uint64_t i = 0; i < kWords; ++i) {
        uint64_t want = initial(p * kWords + i);
        if (hot && i < seq_.size() && seq_[i][h] != 0) want = tag(seq_[i][h], static_cast<int>(i));
        if (words_[p * kWords + i].load(std::memory_order_relaxed) != want) bad++;
      }
      if (hot) h++;
    }
    return bad;
  }

 private:
  void write_loop(int w) {
    std::mt19937_64 rng(static_cast<uint64_t>(w) * 7919 + 1);
    std::vector<bool> touched(check_first_ ? hot_ : 0);
    std::vector<uint64_t>& seq = seq_[static_cast<size_t>(w)];
    uint64_t next = 0;
    for (uint64_t s : seq) next = std::max(next, s);
    const double per_writer = a_.rate ? static_cast<double>(a_.rate) / a_.writers : 0;
    auto t0 = std::chrono::steady_clock::now();
    uint64_t mine = 0;
    while (!quit_) {
      if (pause_) {
        parked_++;
        // Asleep, not spinning: a stopped source leaves the CPUs to the push.
        while (pause_ && !quit_) pause_.wait(true);
        parked_--;
        continue;
      }
      uint64_t h = rng() % hot_;
      std::atomic<uint64_t>& word = words_[hot_page(h) * kWords + static_cast<uint64_t>(w)];
      if (check_first_ && !touched[h]) {
        // The first write here since the migration: what is there must be
        // the last write acknowledged before the stop.
        touched[h] = true;
        uint64_t want = seq[h] ? tag(seq[h], w) : initial(hot_page(h) * kWords + static_cast<uint64_t>(w));
        if (word.load(std::memory_order_relaxed) != want) lost_++;
      }
      word.store(tag(++next, w), std::memory_order_relaxed);
      seq[h] = next;  // acknowledged
      writes_.fetch_add(1, std::memory_order_relaxed);
      if (per_writer > 0 && (++mine & 255) == 0) {
        auto due = t0 + std::chrono::duration<double>(static_cast<double>(mine) / per_writer);
        std::this_thread::sleep_until(std::chrono::time_point_cast<std::chrono::steady_clock::duration>(due));
      }
    }
  }

  std::atomic<uint64_t>* words_;
  const Args& a_;
  uint64_t pages_ = 0, hot_ = 0;
  std::vector<std::vector<uint64_t>> seq_;  // [writer][hot page]: last value acknowledged
  std::vector<std::thread> threads_;
  std::atomic<bool> pause_{false}, quit_{false};
  std::atomic<int> parked_{0};
  std::atomic<uint64_t> writes_{0}, lost_{0};
  bool check_first_ = false;
};

// This process's peak resident memory (VmHWM): the destination's, which
// holds the region and what the push delivered ahead of the runtime.
double peak_rss_mb() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmHWM:", 0) == 0) return std::stod(line.substr(6)) / 1024.0;
  return -1;
}

faultline::MigrationOptions migration_options(const Args& a) {
  faultline::MigrationOptions o;
  o.mode = a.mode;
  o.downtime_limit = std::chrono::milliseconds(a.downtime_ms);
  o.dest_region.fill_size = static_cast<uint32_t>(a.fill);
  if (!a.secret_file.empty()) {
    std::ifstream f(a.secret_file);
    if (!f) throw Error("--secret-file: cannot read " + a.secret_file);
    std::stringstream ss;
    ss << f.rdbuf();
    o.secret = ss.str();
  }
  return o;
}

void print_metrics(const faultline::MigrationMetrics& m, const Args& a) {
  if (a.json) {
    std::printf("%s\n", m.to_json().c_str());
    return;
  }
  std::printf("source: %s migration of %s\n", faultline::migration_mode_name(m.mode), sample::human_bytes(static_cast<double>(a.size)).c_str());
  std::printf("  setup %s, total %s, downtime (stop to resume) %s\n", sample::human_ns(m.setup_ns).c_str(),
              sample::human_ns(m.total_ns).c_str(), sample::human_ns(m.downtime_ns).c_str());
  std::printf("  sent %s (%llu pages)", sample::human_bytes(static_cast<double>(m.bytes_sent)).c_str(),
              static_cast<unsigned long long>(m.pages_sent));
  if (!m.rounds.empty()) std::printf(" at %s/s in the rounds", sample::human_bytes(m.bandwidth_bytes_per_s).c_str());
  std::printf("\n");
  for (size_t i = 0; i < m.rounds.size(); ++i)
    std::printf("  round %zu: %llu pages (%llu zero), %s in %s, dirty rate %.0f pages/s\n", i,
                static_cast<unsigned long long>(m.rounds[i].pages), static_cast<unsigned long long>(m.rounds[i].zero_pages),
                sample::human_bytes(static_cast<double>(m.rounds[i].bytes)).c_str(),
                sample::human_ns(m.rounds[i].duration_ns).c_str(), m.rounds[i].dirty_pages_per_s);
  std::printf("  after the stop: %llu pages %s\n", static_cast<unsigned long long>(m.final_pages),
              m.mode == faultline::MigrationMode::kPrecopy ? "sent" : "stale");
  if (m.mode != faultline::MigrationMode::kPrecopy)
    std::printf("  post-copy: %s; %llu pages pushed, %llu requested in %llu faults: p50 %s, p99 %s, max %s; blocked %s\n",
                sample::human_ns(m.postcopy_ns).c_str(), static_cast<unsigned long long>(m.pages_pushed),
                static_cast<unsigned long long>(m.pages_requested), static_cast<unsigned long long>(m.requests),
                sample::human_ns(m.request_p50_ns).c_str(), sample::human_ns(m.request_p99_ns).c_str(),
                sample::human_ns(m.request_max_ns).c_str(), sample::human_ns(m.blocked_ns).c_str());
}

// The destination: accept, carry on with the workload, check. Returns the
// exit status.
int destination(faultline::MigrationListener& listener, const Args& a) {
  faultline::Runtime rt;
  faultline::IncomingMigration in = listener.accept(rt, std::chrono::minutes(10));
  faultline::Region& r = in.regions().at(0);
  Workload w(r.data(), r.size(), a);
  w.load_state(in.state());
  w.start();  // at once: in post-copy the writers' faults fetch their pages
  std::this_thread::sleep_for(std::chrono::milliseconds(a.run_ms));
  w.finish();
  faultline::MigrationMetrics m = in.wait();
  uint64_t bad = w.verify();
  if (a.json)  // (one line, beside the source's: faultline-bench's migrate reads both)
    std::printf("{\"destination\": {\"writes\": %llu, \"lost_writes\": %llu, \"wrong_words\": %llu, \"words\": %llu, "
                "\"peak_rss_mb\": %.1f}}\n",
                static_cast<unsigned long long>(w.writes()), static_cast<unsigned long long>(w.lost()),
                static_cast<unsigned long long>(bad), static_cast<unsigned long long>(r.size() / 8), peak_rss_mb());
  else
    std::printf("destination: resumed, %llu writes after the migration; lost writes %llu; wrong words %llu of %llu\n",
                static_cast<unsigned long long>(w.writes()), static_cast<unsigned long long>(w.lost()),
                static_cast<unsigned long long>(bad), static_cast<unsigned long long>(r.size() / 8));
  if (m.mode != faultline::MigrationMode::kPrecopy && !a.json)
    std::printf("destination: every page there %s after the resume\n", sample::human_ns(m.postcopy_ns).c_str());
  std::fflush(stdout);
  return w.lost() == 0 && bad == 0 ? 0 : 1;
}

int source(const std::string& address, const Args& a) {
  faultline::Runtime rt;
  faultline::RegionOptions o;
  o.writable = true;
  o.track_dirty = true;
  o.length = a.size;
  o.fill_size = 2 * 1024 * 1024;
  faultline::Region r = rt.map(std::make_shared<faultline::MemoryBackend>(std::vector<std::byte>(kPage)), o);
  Workload w(r.data(), r.size(), a);
  w.fill();
  w.start();
  std::this_thread::sleep_for(std::chrono::milliseconds(a.run_ms / 2));
  faultline::MigrationHooks hooks;
  hooks.stop = [&] { w.pause(); };
  hooks.state = [&] { return w.state(); };
  hooks.resume = [&] { w.resume(); };
  faultline::Region* regions[] = {&r};
  faultline::MigrationMetrics m;
  try {
    m = faultline::migrate_out(regions, address, hooks, migration_options(a));
  } catch (...) {
    w.finish();
    throw;
  }
  uint64_t writes = w.writes();
  w.finish();
  std::printf("source: %llu writes before the stop\n", static_cast<unsigned long long>(writes));
  print_metrics(m, a);
  return 0;
}

int run(const Args& a) {
  if (!a.listen.empty()) {
    faultline::MigrationListener listener(a.listen, migration_options(a));
    std::printf("destination: listening on %s\n", listener.endpoint().c_str());
    std::fflush(stdout);
    return destination(listener, a);
  }
  if (!a.connect.empty()) return source(a.connect, a);
  // Both sides: the destination is a child, forked before any thread.
  faultline::MigrationListener listener("127.0.0.1:0", migration_options(a));
  std::fflush(stdout);
  pid_t child = fork();
  if (child < 0) faultline::throw_errno("fork", errno);
  if (child == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    int status = 1;
    try {
      status = destination(listener, a);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "live_migration destination: %s\n", e.what());
    }
    std::fflush(stdout);
    _exit(status);
  }
  int status = 1;
  try {
    status = source(listener.endpoint(), a);
  } catch (...) {
    kill(child, SIGTERM);
    waitpid(child, nullptr, 0);
    throw;
  }
  std::fflush(stdout);
  int child_status = 0;
  waitpid(child, &child_status, 0);
  bool child_ok = WIFEXITED(child_status) && WEXITSTATUS(child_status) == 0;
  std::printf("%s\n", child_ok ? "OK: no lost writes, every byte right" : "FAILED: see the destination's lines");
  return status == 0 && child_ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  namespace cli = faultline::cli;
  Args a;
  CLI::App app("live_migration: a running workload (writers on a hot set) migrated to a second process,\n"
               "which carries on and checks that no acknowledged write is lost");
  cli::add_version(app, "live_migration");
  auto* modes = app.add_option_group("mode");
  modes->add_flag_callback("--precopy", [&] { a.mode = faultline::MigrationMode::kPrecopy; }, "pre-copy (default)");
  modes->add_flag_callback("--postcopy", [&] { a.mode = faultline::MigrationMode::kPostcopy; }, "post-copy");
  modes->add_flag_callback("--hybrid", [&] { a.mode = faultline::MigrationMode::kHybrid; },
                           "pre-copy rounds, then post-copy");
  modes->require_option(0, 1);
  cli::add_size(app, "--size", a.size, "region size, a multiple of 4K (default 1G)", 1 << 20, 1ull << 40)
      ->check(cli::multiple_of(4096));
  app.add_option("--writers", a.writers, "writer threads (default 2)")->check(CLI::Range(1, 64));
  app.add_option("--hot", a.hot_percent, "hot set, percent of the pages (default 5)")->check(CLI::Range(0.001, 100.0));
  app.add_option("--rate", a.rate, "page writes per second, all writers (default 0:\nas fast as they go)");
  app.add_option("--run-ms", a.run_ms, "workload time before the migration (half) and\nafter it (default 1000)")
      ->check(CLI::Range(0, 600000));
  cli::add_size(app, "--fill", a.fill, "destination fill_size: what a post-copy fault\nfetches (default 16K)", 4096,
                2 << 20)
      ->check(cli::power_of_two());
  app.add_option("--downtime-ms", a.downtime_ms, "pre-copy downtime limit (default 20)")->check(CLI::Range(0, 100000));
  app.add_option("--listen", a.listen, "be the destination only, listening here\n(HOST:PORT or unix:/path)");
  app.add_option("--connect", a.connect, "be the source only, migrating to this address");
  app.add_option("--secret-file", a.secret_file, "shared secret (both sides)")->type_name("FILE");
  app.add_flag("--json", a.json, "the source's metrics and the destination's check as JSON\nlines (other lines are text)");
  return cli::run(app, argc, argv, [&] { return run(a); });
}

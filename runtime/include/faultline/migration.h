// SPDX-License-Identifier: Apache-2.0
// Live migration: moves the contents of writable, dirty-tracked regions from
// a running source process to a destination, which resumes with them
// (docs/migration.md: design, protocol, metrics).
//
// The source calls migrate_out() with its regions and three callbacks; the
// destination binds a MigrationListener and calls accept(), which returns at
// the switch-over with regions holding the source's bytes (or, in post-copy,
// fetching them on first touch) and the application's state blob.
//
//   pre-copy   every page, then rounds of the pages written since the last
//              round, until the rest fits the downtime limit; then stop, the
//              last pages and the state; the destination resumes.
//   post-copy  stop at once, send the state; the destination resumes and its
//              faults fetch pages from the source on an urgent connection
//              of their own, while the source pushes the rest.
//   hybrid     pre-copy rounds, then post-copy for what is still stale.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "faultline/options.h"
#include "faultline/region.h"

namespace faultline {

class Runtime;

enum class MigrationMode { kPrecopy, kPostcopy, kHybrid };
const char* migration_mode_name(MigrationMode mode);  // "precopy", "postcopy", "hybrid"

struct MigrationOptions {
  MigrationMode mode = MigrationMode::kPrecopy;  // the source's choice; the destination follows it
  // Pre-copy stops the rounds once the pages still dirty can be sent in this
  // time at the bandwidth measured so far.
  std::chrono::milliseconds downtime_limit{20};
  // Pre-copy: the switch-over happens after this many rounds even if the
  // rest does not fit downtime_limit (round 0 sends every page). Hybrid:
  // the rounds before post-copy takes over (at least 1). 1..1000.
  uint32_t max_rounds = 30;
  uint32_t hybrid_rounds = 2;
  // Both sides must have the same one (empty: none). HMAC-SHA256 challenge
  // and response on the migration stream and on the urgent lane; the
  // secret never crosses the wire. No encryption.
  std::string secret;
  // Any one wait for the peer (connect, handshake, a frame, room in the
  // socket) longer than this fails the migration.
  std::chrono::milliseconds deadline{10000};
  // Post-copy: a destination fault whose page the source does not deliver
  // within this time gets SIGBUS (the urgent lane reconnects meanwhile).
  // Also how long, after the migration stream breaks, the source tries to
  // reconnect it and the destination waits for that (post-copy recovery).
  std::chrono::milliseconds postcopy_deadline{10000};
  // Source, post-copy and hybrid: where the urgent lane (a page server over
  // the source's regions) listens. Empty: the local address of the
  // migration connection, port 0 (TCP), or the destination's socket path
  // with ".urgent" appended (Unix).
  std::string urgent_listen;
  // Destination: options of the regions it maps (offset, length and
  // writable are set by the migration). fill_size is the unit a post-copy
  // fault fetches.
  RegionOptions dest_region = {};
  // Destination: the largest state blob, and the most bytes of regions, it
  // accepts from a source (it keeps one byte of state per page).
  uint64_t max_state_bytes = 64u << 20;
  uint64_t max_bytes = uint64_t{1} << 40;
};

// One pre-copy round, as the source sent it.
struct MigrationRound {
  uint64_t pages = 0;       // pages sent (data and zero)
  uint64_t zero_pages = 0;  // of which all zero (sent as a length, not bytes)
  uint64_t bytes = 0;       // bytes on the wire
  uint64_t duration_ns = 0;
  // Pages written during the round (what the next round takes), per second.
  double dirty_pages_per_s = 0;
};

// The figures of one migration (QEMU's query-migrate), plain data. The
// source's include the destination's post-copy figures, sent back at the end.
struct MigrationMetrics {
  MigrationMode mode = MigrationMode::kPrecopy;
  uint64_t setup_ns = 0;     // connect and handshake
  uint64_t total_ns = 0;     // start of the call to the end of the migration
  uint64_t downtime_ns = 0;  // stop callback called to the destination resumed (source's clock)
  std::vector<MigrationRound> rounds;  // pre-copy rounds (not the final, stopped one)
  uint64_t final_pages = 0;  // pages sent after the stop (pre-copy) or listed stale (post-copy)
  uint64_t bytes_sent = 0;   // every byte the source wrote on both connections
  uint64_t pages_sent = 0;
  double bandwidth_bytes_per_s = 0;  // measured during the rounds
  // Post-copy (and hybrid) only.
  uint64_t postcopy_ns = 0;       // resumed to every page at the destination
  uint64_t pages_pushed = 0;      // by the background push
  uint64_t pages_requested = 0;   // fetched by faults on the urgent lane
  uint64_t requests = 0;          // urgent reads (each one fill_size chunk)
  uint64_t request_p50_ns = 0;    // urgent read latency at the destination
  uint64_t request_p99_ns = 0;
  uint64_t request_max_ns = 0;
  // Time threads were blocked on faults in the regions after the resume,
  // summed over the threads (each fault message is one thread's wait, from
  // the message read to the wake): QEMU's postcopy-blocktime.
  uint64_t blocked_ns = 0;
  // Times the migration stream broke after the resume and was reconnected
  // (post-copy recovery); the source's and the destination's count.
  uint64_t recoveries = 0;

  std::string to_json() const;
};

// What the source application provides.
struct MigrationHooks {
  // Pauses every writer of the regions ("stop the vCPUs"); when it returns
  // nothing writes them until resume() (or ever, after a migration that
  // succeeded). Required.
  std::function<void()> stop;
  // Called after stop(): the application state to carry over. May be empty.
  std::function<std::vector<std::byte>()> state;
  // Called if the migration fails after stop() while the source still holds
  // everything (pre-copy, before the destination resumed): writers may go on.
  std::function<void()> resume;
};

// Migrates `regions` to the destination listening at `destination`
// ("HOST:PORT" or "unix:/path"). Each region must be writable and tracked
// (RegionOptions::track_dirty, not write_back); their dirty logs belong to
// the migration during the call. Returns once the destination has every
// page (post-copy included). Throws Error naming the problem: refused,
// timeout, wrong secret, a peer that breaks the protocol. Before the stop
// the source is untouched by a failure; see docs/migration.md for after.
MigrationMetrics migrate_out(std::span<Region* const> regions, const std::string& destination,
                             const MigrationHooks& hooks, const MigrationOptions& options = {});

// The destination's side of one migration in progress, from accept(): the
// regions (already resumable) and the state. In post-copy a thread keeps
// receiving pushed pages until wait() says all are there.
class IncomingMigration {
 public:
  IncomingMigration();
  IncomingMigration(IncomingMigration&&) noexcept;
  IncomingMigration& operator=(IncomingMigration&&) noexcept;
  // Stops receiving (pages not yet there then get SIGBUS when touched, after
  // postcopy_deadline if the source is still up: call wait() first).
  ~IncomingMigration();

  std::vector<Region>& regions();  // in the source's order, same sizes
  const std::vector<std::byte>& state() const;
  // Blocks until every page is at the destination and the source is told;
  // returns the metrics (the destination's view: downtime and rounds are the
  // source's to measure). Throws Error if the migration failed after the
  // resume. Call once.
  MigrationMetrics wait();

  class Impl;

 private:
  friend class MigrationListener;
  std::unique_ptr<Impl> impl_;
};

// A bound destination address. The source may connect as soon as it exists.
class MigrationListener {
 public:
  // "HOST:PORT" (port 0: any free one) or "unix:/path". Throws Error.
  MigrationListener(const std::string& listen, MigrationOptions options = {});
  ~MigrationListener();
  MigrationListener(const MigrationListener&) = delete;
  MigrationListener& operator=(const MigrationListener&) = delete;

  std::string endpoint() const;  // the bound address, port resolved
  // Waits up to `timeout` for a source, runs the migration up to the
  // switch-over and returns with the regions mapped in `runtime`, holding the
  // source's bytes as of its stop. Throws Error (timeout, a source with the
  // wrong secret, a broken stream); the listener can accept again after.
  // A post-copy migration keeps the listening socket open (even past the
  // listener's destruction) until it ends: if its stream breaks, its
  // source reconnects there (post-copy recovery, docs/migration.md).
  IncomingMigration accept(Runtime& runtime, std::chrono::milliseconds timeout = std::chrono::minutes(1));

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace faultline

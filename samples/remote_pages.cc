// SPDX-License-Identifier: Apache-2.0
// remote_pages: one process serves memory, another maps it lazily over a
// socket and queries it.
//
// By default the sample forks a server process that generates a table of
// sorted records in its own memory and serves that memory with a PageServer
// (over MemoryBackend::borrow: a region of a running process, served through
// the library API). The parent connects with connect_remote(), maps the
// table with a faultline Region and runs a query on it: point lookups by
// binary search, then a range scan. Every record it reads is checked against
// the generator. It prints the fault latency (p50/p99), the traffic (bytes
// and requests, from both ends) and the time.
//
//   remote_pages                        # server child on 127.0.0.1:0, 256 MiB table
//   remote_pages --snapshot FILE        # the child writes the table as a zstd
//                                       # snapshot and serves that instead
//   remote_pages --write FILE           # write the same table to FILE, then:
//   faultline serve FILE --listen 127.0.0.1:0 &
//   remote_pages --connect 127.0.0.1:PORT
//
// Exit status: 0 every record was right, 1 a wrong record or a failure,
// 2 bad arguments.
#include <faultline/faultline.h>
#include <faultline/memory_backend.h>
#include <faultline/page_server.h>
#include <faultline/remote_backend.h>
#include <faultline/snapshot.h>
#include <faultline/zstd_snapshot_backend.h>

#include <cli.h>

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "sample_util.h"

namespace {

// ---------------------------------------------------------------------------
// The table: record i holds key 2i+1 (sorted; even keys are absent), six
// value words derived from i, and a checksum word.
struct Record {
  uint64_t key;
  uint64_t value[6];
  uint64_t check;
};
static_assert(sizeof(Record) == 64);

uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

Record make_record(uint64_t i) {
  Record r{};
  r.key = 2 * i + 1;
  uint64_t c = r.key;
  for (int w = 0; w < 6; ++w) {
    r.value[w] = mix64(i * 8 + static_cast<uint64_t>(w));
    c = mix64(c ^ r.value[w]);
  }
  r.check = c;
  return r;
}

bool record_ok(const Record& got, uint64_t i) {
  const Record want = make_record(i);
  return std::memcmp(&got, &want, sizeof want) == 0;
}

void fill_table(Record* table, uint64_t count) {
  for (uint64_t i = 0; i < count; ++i) table[i] = make_record(i);
}

// ---------------------------------------------------------------------------
struct Args {
  uint64_t size = 256ull << 20;
  uint64_t lookups = 20;  // with the scan, about 7% of the default table crosses the socket
  uint64_t scan_bytes = 4ull << 20;
  uint32_t fill = 64 * 1024;
  std::string listen = "127.0.0.1:0";
  std::string connect;      // client only: an existing server
  std::string write_file;   // only write the table to this file
  std::string secret_file;
  std::string snapshot;     // the server child serves the table from this snapshot
};

std::string read_secret(const std::string& path) {
  if (path.empty()) return "";
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw faultline::Error("--secret-file " + path + ": " + std::strerror(errno), errno);
  std::string s;
  char buf[256];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  std::fclose(f);
  if (!s.empty() && s.back() == '\n') s.pop_back();
  if (s.empty()) throw faultline::Error("--secret-file " + path + ": empty");
  return s;
}

int write_table(const Args& a) {
  const uint64_t count = a.size / sizeof(Record);
  FILE* f = std::fopen(a.write_file.c_str(), "wb");
  if (!f) faultline::throw_errno("cannot create " + a.write_file, errno);
  std::vector<Record> block(4096);
  bool ok = true;
  for (uint64_t i = 0; ok && i < count; i += block.size()) {
    const uint64_t n = std::min<uint64_t>(block.size(), count - i);
    for (uint64_t j = 0; j < n; ++j) block[j] = make_record(i + j);
    ok = std::fwrite(block.data(), sizeof(Record), n, f) == n;
  }
  const int err = errno;
  if (std::fclose(f) != 0 || !ok) faultline::throw_errno("writing " + a.write_file, ok ? errno : err);
  std::printf("wrote %llu records (%llu bytes) to %s\n", static_cast<unsigned long long>(count),
              static_cast<unsigned long long>(count * sizeof(Record)), a.write_file.c_str());
  return 0;
}

// ---------------------------------------------------------------------------
// The server child. Talks to the parent over two pipes: it reports its
// endpoint (or an error), serves until the parent closes `control`, then
// reports the server's statistics.
struct ServerChild {
  pid_t pid = -1;
  int control = -1;
  int report = -1;
};

void write_str(int fd, const std::string& s) {
  size_t done = 0;
  while (done < s.size()) {
    ssize_t n = ::write(fd, s.data() + done, s.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

bool read_line(int fd, std::string& line) {
  line.clear();
  char c;
  for (;;) {
    ssize_t n = ::read(fd, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return !line.empty();
    if (c == '\n') return true;
    line.push_back(c);
  }
}

[[noreturn]] void run_server_child(const Args& a, const std::string& secret, int control, int report) {
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  signal(SIGPIPE, SIG_IGN);
  try {
    // The memory being served: this process's own, generated here. Any live
    // buffer can be served this way; it must stay unchanged while served.
    const uint64_t count = a.size / sizeof(Record);
    void* mem = mmap(nullptr, a.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) throw faultline::Error(std::string("mmap of the table: ") + std::strerror(errno), errno);
    fill_table(static_cast<Record*>(mem), count);
    const std::span<const std::byte> table(static_cast<std::byte*>(mem), a.size);
    std::shared_ptr<faultline::Backend> source;
    if (a.snapshot.empty()) {
      source = faultline::MemoryBackend::borrow(table);
    } else {
      faultline::write_snapshot(table, a.snapshot);
      munmap(mem, a.size);
      source = faultline::open_zstd_snapshot(a.snapshot);
    }

    faultline::PageServerOptions options;
    options.listen = {a.listen};
    options.secret = secret;
    options.log = [](faultline::LogLevel, std::string_view line) {
      std::fprintf(stderr, "  [server] %.*s\n", static_cast<int>(line.size()), line.data());
    };
    faultline::PageServer server(source, options);
    write_str(report, "ENDPOINT " + server.endpoints().at(0) + "\n");
    char c;
    for (;;) {
      const ssize_t n = ::read(control, &c, 1);
      if (n == 0 || (n < 0 && errno != EINTR)) break;
    }
    server.stop();
    const faultline::PageServerStats s = server.stats();
    write_str(report, "STATS " + std::to_string(s.requests) + " " + std::to_string(s.bytes_sent) + " " +
                          std::to_string(s.protocol_errors) + "\n");
    _exit(0);
  } catch (const std::exception& e) {
    write_str(report, std::string("ERROR ") + e.what() + "\n");
    _exit(1);
  }
}

// Forks the server child (before this process starts any thread) and returns
// its endpoint.
std::string start_server_child(const Args& a, const std::string& secret, ServerChild& child) {
  int control[2], report[2];
  if (pipe2(control, O_CLOEXEC) != 0 || pipe2(report, O_CLOEXEC) != 0)
    throw faultline::Error(std::string("pipe: ") + std::strerror(errno), errno);
  std::fflush(stdout);
  child.pid = fork();
  if (child.pid < 0) throw faultline::Error(std::string("fork: ") + std::strerror(errno), errno);
  if (child.pid == 0) {
    ::close(control[1]);
    ::close(report[0]);
    run_server_child(a, secret, control[0], report[1]);
  }
  ::close(control[0]);
  ::close(report[1]);
  child.control = control[1];
  child.report = report[0];
  std::string line;
  if (!read_line(child.report, line)) throw faultline::Error("the server child exited before it was ready");
  if (line.rfind("ERROR ", 0) == 0) throw faultline::Error("server child: " + line.substr(6));
  return line.substr(std::strlen("ENDPOINT "));
}

struct ServerTraffic {
  bool known = false;
  uint64_t requests = 0, bytes_sent = 0, protocol_errors = 0;
};

ServerTraffic stop_server_child(ServerChild& child) {
  ServerTraffic t;
  if (child.pid < 0) return t;
  ::close(child.control);
  std::string line;
  while (read_line(child.report, line)) {
    unsigned long long r = 0, b = 0, e = 0;
    if (std::sscanf(line.c_str(), "STATS %llu %llu %llu", &r, &b, &e) == 3) {
      t = {true, r, b, e};
    }
  }
  ::close(child.report);
  int status = 0;
  while (waitpid(child.pid, &status, 0) < 0 && errno == EINTR) {
  }
  child.pid = -1;
  return t;
}

// ---------------------------------------------------------------------------
// The query.
struct QueryResult {
  uint64_t found = 0, absent = 0, wrong = 0, scanned = 0;
  std::vector<uint64_t> lookup_ns;
  double lookups_s = 0, scan_s = 0;
};

// Binary search for `key`; returns the record index or count if absent.
uint64_t find_key(const Record* table, uint64_t count, uint64_t key) {
  uint64_t lo = 0, hi = count;
  while (lo < hi) {
    const uint64_t mid = lo + (hi - lo) / 2;
    const uint64_t k = table[mid].key;
    if (k == key) return mid;
    if (k < key) lo = mid + 1;
    else hi = mid;
  }
  return count;
}

QueryResult run_query(const Record* table, uint64_t count, const Args& a) {
  QueryResult q;
  q.lookup_ns.reserve(a.lookups);
  uint64_t seed = 0x5eed;
  const uint64_t t0 = sample::now_ns();
  for (uint64_t n = 0; n < a.lookups; ++n) {
    const uint64_t key = mix64(seed++) % (2 * count + 1);  // odd keys exist, even ones do not
    const uint64_t s = sample::now_ns();
    const uint64_t i = find_key(table, count, key);
    q.lookup_ns.push_back(sample::now_ns() - s);
    if (key % 2 == 1) {
      if (i == count || !record_ok(table[i], (key - 1) / 2)) ++q.wrong;
      else ++q.found;
    } else {
      if (i != count) ++q.wrong;
      else ++q.absent;
    }
  }
  const uint64_t t1 = sample::now_ns();
  // Range scan from the middle of the table: read-ahead streams it in.
  const uint64_t first = count / 2;
  const uint64_t last = std::min(count, first + a.scan_bytes / sizeof(Record));
  for (uint64_t i = first; i < last; ++i) {
    if (!record_ok(table[i], i)) ++q.wrong;
    ++q.scanned;
  }
  const uint64_t t2 = sample::now_ns();
  q.lookups_s = static_cast<double>(t1 - t0) * 1e-9;
  q.scan_s = static_cast<double>(t2 - t1) * 1e-9;
  return q;
}

double us(uint64_t ns) { return static_cast<double>(ns) / 1000.0; }

int run(const Args& a) {
  if (!a.write_file.empty()) return write_table(a);
  const std::string secret = read_secret(a.secret_file);
  ServerChild child;
  std::string address = a.connect;
  if (address.empty()) {
    if (a.snapshot.empty())
      std::printf("server child: generating %llu MiB of records in its memory and serving them...\n",
                  static_cast<unsigned long long>(a.size >> 20));
    else
      std::printf("server child: writing %llu MiB of records as the snapshot %s and serving it...\n",
                  static_cast<unsigned long long>(a.size >> 20), a.snapshot.c_str());
    address = start_server_child(a, secret, child);  // before any thread of ours
    std::printf("server child: pid %d, listening on %s\n", static_cast<int>(child.pid), address.c_str());
  }

  QueryResult q;
  faultline::StatsSnapshot st;
  uint64_t count = 0;
  {
    faultline::RemoteOptions ro;
    ro.address = address;
    ro.secret = secret;
    const uint64_t c0 = sample::now_ns();
    std::shared_ptr<faultline::Backend> remote = faultline::connect_remote(ro);
    const double connect_ms = static_cast<double>(sample::now_ns() - c0) * 1e-6;
    count = remote->size() / sizeof(Record);
    if (count == 0) throw faultline::Error("the server at " + address + " serves fewer than 64 bytes");
    std::printf("client: connected to %s in %.2f ms (%s, %llu bytes, %llu records)\n", address.c_str(), connect_ms,
                remote->name().c_str(), static_cast<unsigned long long>(remote->size()),
                static_cast<unsigned long long>(count));

    faultline::Runtime runtime;
    faultline::RegionOptions ro2;
    ro2.fill_size = a.fill;
    faultline::Region region = runtime.map(remote, ro2);
    q = run_query(reinterpret_cast<const Record*>(region.data()), count, a);
    st = region.stats();
  }
  const ServerTraffic traffic = stop_server_child(child);

  std::printf("\nquery: %llu lookups (%llu found, %llu absent) in %.3f s: per lookup p50 %.1f us, p99 %.1f us\n",
              static_cast<unsigned long long>(a.lookups), static_cast<unsigned long long>(q.found),
              static_cast<unsigned long long>(q.absent), q.lookups_s, us(sample::quantile(q.lookup_ns, 0.5)),
              us(sample::quantile(q.lookup_ns, 0.99)));
  std::printf("       range scan of %llu records (%.0f MiB) in %.3f s: %.2f GB/s\n",
              static_cast<unsigned long long>(q.scanned), static_cast<double>(q.scanned * sizeof(Record)) / (1 << 20),
              q.scan_s, q.scan_s > 0 ? static_cast<double>(q.scanned * sizeof(Record)) / q.scan_s / 1e9 : 0.0);
  std::printf("faults: %llu, service time (fault read to wake) p50 %.1f us, p99 %.1f us, max %.1f us\n",
              static_cast<unsigned long long>(st.faults), static_cast<double>(st.latency_p50_ns) / 1000.0,
              static_cast<double>(st.latency_p99_ns) / 1000.0, static_cast<double>(st.latency_max_ns) / 1000.0);
  std::printf("traffic: client received %.1f MiB (%llu read-ahead chunks, %llu hits)\n",
              static_cast<double>(st.bytes_read) / (1 << 20), static_cast<unsigned long long>(st.readahead_chunks),
              static_cast<unsigned long long>(st.readahead_hits));
  if (traffic.known)
    std::printf("         server answered %llu requests, sent %.1f MiB, %llu protocol errors\n",
                static_cast<unsigned long long>(traffic.requests), static_cast<double>(traffic.bytes_sent) / (1 << 20),
                static_cast<unsigned long long>(traffic.protocol_errors));
  if (st.errors != 0 || q.wrong != 0) {
    std::printf("FAILED: %llu wrong records, %llu chunks the runtime could not serve\n",
                static_cast<unsigned long long>(q.wrong), static_cast<unsigned long long>(st.errors));
    return 1;
  }
  const uint64_t table_bytes = count * sizeof(Record);
  std::printf("laziness: fetched %llu of the table's %llu bytes (%s, %s of %s)%s\n",
              static_cast<unsigned long long>(st.bytes_read), static_cast<unsigned long long>(table_bytes),
              sample::percent(st.bytes_read, table_bytes).c_str(), sample::human_bytes(st.bytes_read).c_str(),
              sample::human_bytes(table_bytes).c_str(),
              st.bytes_read < table_bytes ? "; the rest never crossed the socket" : "");
  std::printf("every record checked: ok\n");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  namespace cli = faultline::cli;
  Args a;
  CLI::App app(
      "Forks a page server that generates a table of 64-byte records in its memory\n"
      "and serves it; maps the table over a socket with faultline and queries a few\n"
      "percent of it (binary-search point lookups, then a range scan), checking every\n"
      "record. Prints fault latency, traffic and time, and how much of the table\n"
      "crossed the socket: only the chunks the query touched.",
      "remote_pages");
  app.footer("Exit status: 0 every record right; 1 a wrong record or a failure; 2 bad arguments.");
  cli::add_version(app, "remote_pages");
  cli::add_size(app, "--size", a.size, "table size, a multiple of 4K up to 64G\n(default 256M)", 4096, 64ull << 30)
      ->check(cli::multiple_of(4096));
  app.add_option("--lookups", a.lookups, "point lookups (default 20)")
      ->check(CLI::Range(0, 100'000'000).description(""))
      ->type_name("N");
  cli::add_size(app, "--scan", a.scan_bytes, "bytes of the range scan (default 4M)");
  cli::add_size(app, "--fill", a.fill, "RegionOptions.fill_size, a power of two from\n4K to 2M (default 64K)", 4096,
                2u << 20)
      ->check(cli::power_of_two());
  app.add_option("--listen", a.listen,
                 "where the server child listens (default\n127.0.0.1:0; unix:/path for a Unix socket)")
      ->type_name("ADDR");
  app.add_option("--connect", a.connect,
                 "no server child: query a running server (e.g.\n"
                 "`faultline serve FILE` of a file written with\n--write)")
      ->type_name("ADDR");
  app.add_option("--secret-file", a.secret_file, "shared secret for the server child or --connect")->type_name("FILE");
  app.add_option("--snapshot", a.snapshot,
                 "the server child writes the table as a compressed\n"
                 "snapshot to FILE and serves it from there\n"
                 "(decompressing the chunks clients ask for)")
      ->type_name("FILE");
  app.add_option("--write", a.write_file, "only write the table (--size bytes) to FILE and\nexit")->type_name("FILE");
  return cli::run(app, argc, argv, [&] { return run(a); });
}

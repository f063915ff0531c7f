// SPDX-License-Identifier: Apache-2.0
// What the runs need before the first one: the dataset file, the page
// server process (faultline-remote*), nginx (faultline-http*), the zstd snapshots, the in-memory
// copy, a cache drop; and the header that tells the reader what was set up.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "nginx_server.h"

#include "results.h"
#include "session.h"

namespace fbench {

// What prepare() started or mapped; the destructor unmaps the in-memory
// copy and stops nginx (removing its directory). The page server process is
// stopped by stop_remote() (its statistics go in the report).
struct Prepared {
  Prepared() = default;
  Prepared(const Prepared&) = delete;
  Prepared& operator=(const Prepared&) = delete;
  ~Prepared();

  bool any_remote = false;
  bool any_cold = false;
  RemoteServerProcess remote_server;
  std::string remote_error;  // "" if the server runs (any_remote)
  std::unique_ptr<faultline::tools::NginxServer> nginx;  // faultline-http*, or nullptr
  std::string http_error;  // "" if nginx runs (when a faultline-http case is selected)
  std::byte* mem = nullptr;  // load_dataset()'s copy, or nullptr
  size_t mem_size = 0;
};

// Sets b up for `cases` (b.o parsed, b.o.dir existing). Must run while this
// process has one thread (the page server is forked). Cases that cannot run
// here (faultline-http without nginx) are removed from `cases` and listed in
// b.skipped. Throws faultline::Error (or std::exception from the helpers)
// on failure.
void prepare(Bench& b, std::vector<Case>& cases, Prepared& p);
// Stops the page server, if started; returns its statistics line or "".
std::string stop_remote(Prepared& p);
// The lines on standard output before the first run.
void print_header(const Bench& b, const Prepared& p, size_t ncases);

}  // namespace fbench

// SPDX-License-Identifier: Apache-2.0
// A Backend whose bytes come from a PageServer (page_server.h) over TCP or a
// Unix socket, with the wire protocol of docs/protocol.md.
//
// Many reads are in flight on one connection, tagged by id and completed in
// any order; adjacent reads are merged into one request; demand faults
// (ReadRequest::urgent) are sent ahead of read-ahead and prefetch. If the
// server goes away the backend reconnects with backoff and sends the pending
// reads again. A read not served within `deadline` of its submission
// completes with -ETIMEDOUT, which the runtime turns into SIGBUS for the
// faulting access: never a hang. A server that sends malformed or wrong data
// (bad checksum, wrong length, unknown id) is disconnected; the worst it can
// cause is SIGBUS on the pages that were asked of it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "faultline/backend.h"

namespace faultline {

struct RemoteOptions {
  std::string address;  // as in PageServerOptions::listen: "HOST:PORT" or "unix:/path"
  std::string secret;   // must match the server's (empty: none)
  // A read not served within this time of its submission completes with
  // -ETIMEDOUT (the runtime poisons: SIGBUS). Also bounds connect_remote().
  std::chrono::milliseconds deadline{10000};
  uint32_t queue_depth = 64;  // reads in flight, 1..4096
  // After sending a demand read, the fault-loop thread polls the socket
  // this long for the answer before it goes back to epoll: a page fault
  // over loopback is then served without a wake-up. 0: never poll.
  std::chrono::microseconds busy_poll{50};
};

// Connects and authenticates at once and learns the object's size from the
// server. Throws Error naming the address and the problem (refused, wrong
// secret, protocol version, timeout, ...).
std::shared_ptr<Backend> connect_remote(const RemoteOptions& options);

}  // namespace faultline

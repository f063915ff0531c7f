// SPDX-License-Identifier: Apache-2.0
// SpinPolicy: when a busy-poll for a peer's answer is worth its CPU. Shared
// by the remote backend, the page server and the HTTP backend's demand lane.
#pragma once

namespace faultline {

// Whether busy-polling pays off, for a peer. Polling for an answer (or
// the next request) saves a wake-up when it comes within the window; on a
// loaded machine it only burns CPU the peer needs. Each poll that catches
// something earns credit, each that times out halves it; with no credit
// the caller sleeps, and polls again every 64th time to see whether things
// changed.
class SpinPolicy {
 public:
  bool should_spin() {
    if (credit_ > 0) return true;
    if (++skipped_ < 64) return false;
    skipped_ = 0;
    return true;
  }
  void hit() { credit_ = credit_ < 16 ? credit_ + 1 : 16; }
  void miss() { credit_ /= 2; }

 private:
  int credit_ = 4;
  int skipped_ = 0;
};

}  // namespace faultline

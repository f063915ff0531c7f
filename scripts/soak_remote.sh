#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Soak test of the page server, outside the normal test suite:
# one `faultline serve` process, 16 client processes faulting at random over
# loopback TCP for 60 seconds, every byte they read checked against the
# dataset. Prints the errors and wrong bytes; exits non-zero on any.
#   scripts/soak_remote.sh [--clients N] [--seconds S] [--size SIZE] [--dir DIR]
# Environment: BUILD (build directory, default build-soak), JOBS (default 2).
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
build=${BUILD:-build-soak}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DFAULTLINE_BUILD_TESTS=OFF -DFAULTLINE_BUILD_SAMPLES=OFF >/dev/null
cmake --build "$build" -j"${JOBS:-2}" --target faultline-soak-remote faultline-cli
echo "load: $(uptime)"
status=0
"$build/bench/faultline-soak-remote" --serve-binary "$build/tools/faultline" "$@" || status=$?
echo "load: $(uptime)"
exit $status

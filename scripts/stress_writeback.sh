#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The 60-second write-back stress (not part of scripts/test.sh): writer
# threads, evictions under a memory budget four times smaller than the data,
# and flushes race on one write-back region; then every byte of the file is
# compared with the writers' shadow copy. Exits non-zero on any lost or
# wrong byte. Needs userfaultfd (root here) and Linux 6.8+ (WP_ASYNC, MOVE).
# Extra arguments go to the program: --seconds N --data SIZE --budget SIZE
# --writers N --fill SIZE --file PATH (defaults 60, 256M, 64M, 4, 64K,
# /var/tmp/faultline-stress-writeback.dat; sizes as everywhere: 64K, 2MiB...).
set -euo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"${JOBS:-2}" --target faultline-stress-writeback >/dev/null
echo "load: $(uptime)"
exec ./build/bench/faultline-stress-writeback "$@"

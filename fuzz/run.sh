#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# run.sh FUZZER CORPUS WORKDIR SECONDS: a bounded libFuzzer run (ctest).
# The checked-in corpus is read, never written; new inputs and any crash
# artifact go to WORKDIR. Fails if the fuzzer finds a crash, leak or timeout.
set -euo pipefail
fuzzer=$1 corpus=$2 work=$3 seconds=$4
[[ -d $corpus ]] || { echo "run.sh: corpus directory $corpus is missing" >&2; exit 1; }
mkdir -p "$work/new"
exec "$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$work/" "$work/new" "$corpus"

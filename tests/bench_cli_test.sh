#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# faultline-bench's command line and JSON report, run by ctest (test name
# bench_cli). Usage: bench_cli_test.sh PATH_TO_FAULTLINE_BENCH PATH_TO_REPORT_PY
#
# --version and --help exit 0 with the version and the options; bad options,
# values and sizes exit 2 naming the option and the text; a tiny real run
# (4 MiB, one repeat, warm, memory-backed and mmap configurations, plus the
# 1 TiB reserve) writes JSON with every top-level key, the runtime's snapshot
# embedded as an object, and bench/report.py reads it. Nothing is timed.
set -uo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 PATH_TO_FAULTLINE_BENCH PATH_TO_REPORT_PY" >&2
  exit 2
fi
bench=$(readlink -f "$1")
report=$(readlink -f "$2")
tmp=$(mktemp -d "${TMPDIR:-/tmp}/faultline-bench-cli.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failures=0

# fail, run, expect_in
source "$(dirname "${BASH_SOURCE[0]}")/cli_test_lib.sh"
# usage_error NEEDLE ARGS...: exit 2, the message on stderr contains NEEDLE,
# nothing on stdout (no run started).
usage_error() {
  local needle=$1
  shift
  run 2 "$bench" --dir "$tmp/never" "$@" || return
  expect_in "stderr of '$*'" "$err" "$needle"
  [[ -z $out ]] || fail "'$*' printed on stdout: $out"
  [[ ! -e $tmp/never ]] || fail "'$*' created --dir"
}

run 0 "$bench" --version && expect_in "--version" "$out" "faultline-bench "
[[ $out =~ ^faultline-bench\ [0-9]+\.[0-9]+ ]] || fail "--version prints '$out'"
if run 0 "$bench" --help; then
  for opt in --size --dir --repeat --quick --workloads --configs --caches --custom --pin --json --threads \
    --zstd-workers --zipf-s --seed --timeout --verbose --version "budget-zipf" "write-flush"; do
    expect_in "--help" "$out" "$opt"
  done
fi

usage_error "--bogus" --bogus
usage_error "--size: expected a size such as 4096, 64K, 2M or 1G, got '4X'" --size 4X
usage_error "--size: must be from 4194304" --size 1M
usage_error "--size: must be a multiple of 4096, got '4194305'" --size 4194305
usage_error "--size: must be from" --size 2T
usage_error "--repeat" --repeat 0
usage_error "--workloads: unknown workload 'nope'" --workloads seq,nope
usage_error "--configs: unknown configuration 'nope'" --configs mmap,nope
usage_error "--caches: expected cold and/or warm, got 'hot'" --caches hot
usage_error "--custom: qd must be 1..4096, got '0'" --custom qd=0
usage_error "--custom: fill: expected a size" --custom fill=1Q
usage_error "--custom: unknown key 'depth'" --custom depth=1
usage_error "--pin: expected none, same or split, got 'half'" --pin half
usage_error "--zipf-s: expected a number in (0, 10), got '0'" --zipf-s 0
usage_error "--seed: not a 64-bit unsigned integer: '-1'" --seed -1
usage_error "--threads" --threads 0
usage_error "--timeout" --timeout 0
usage_error "quick was given a disallowed flag override" --quick=1
usage_error "--json" --json=
usage_error "--size: too small for 256 threads" --size 4M --threads 256
usage_error "nothing to run" --workloads copy --configs mmap

# A tiny real run. Warm only: dropping the page cache would disturb the
# machine (and needs root).
json=$tmp/results.json
if run 0 "$bench" --size 4M --repeat 1 --caches warm --configs faultline-memory,mmap \
  --workloads seq,rand,reserve --dir "$tmp/data" --json="$json"; then
  expect_in "stdout of the run" "$out" "wrote $json"
  python3 - "$json" <<'PY' || fail "the JSON report is not what it should be (above)"
import json, sys
d = json.load(open(sys.argv[1]))
assert list(d) == ["machine", "params", "results", "reserve", "targets"], list(d)
p = d["params"]
assert p["size"] == 4 << 20 and p["repeat"] == 1 and p["quick"] is False and p["seed"] == 1, p
got = sorted((r["workload"], r["config"], r["cache"]) for r in d["results"])
want = sorted((w, c, "warm") for w in ("seq", "rand") for c in ("faultline-memory", "mmap"))
assert got == want, got
for r in d["results"]:
    assert r["ok"] is True and r["errors"] == [], r
    assert r["repeats"] == 1 and len(r["seconds_all"]) == 1, r
    assert r["bytes"] == (4 << 20 if r["workload"] == "seq" else r["accesses"] * 4096), r
    if r["config"] == "faultline-memory":
        snap = r["runtime"]["snapshot_of_median_run"]
        assert isinstance(snap, dict) and snap, r["runtime"]
        assert r["rss_check"]["ok"] is True, r
    else:
        assert r["runtime"] is None, r
assert sorted(x["config"] for x in d["reserve"]) == ["faultline-memory", "mmap"], d["reserve"]
assert all(x["length_bytes"] == 1 << 40 and x["zeros_ok"] is True for x in d["reserve"]), d["reserve"]
assert d["targets"] and all(set(t) == {"name", "value", "threshold", "met", "detail"} for t in d["targets"])
PY
  if run 0 python3 "$report" "$json"; then
    expect_in "report.py" "$out" "| faultline-memory | warm |"
    expect_in "report.py" "$out" "**targets**"
  fi
fi

# A --json file that cannot be written: exit 1 naming it, after the run.
run 1 "$bench" --size 4M --repeat 1 --caches warm --configs mmap --workloads seq --dir "$tmp/data" \
  --json "$tmp/no/such/dir/r.json" && expect_in "stderr" "$err" "cannot write --json $tmp/no/such/dir/r.json"

if [[ $failures -ne 0 ]]; then
  echo "$failures failure(s)" >&2
  exit 1
fi
echo "bench_cli: all checks passed"

#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# faultline-bench's command line and JSON report, run by ctest (test name
# bench_cli). Usage: bench_cli_test.sh PATH_TO_FAULTLINE_BENCH PATH_TO_REPORT_PY
# PATH_TO_LOOPBACK_PROBE PATH_TO_STRESS_WRITEBACK
#
# --version and --help exit 0 with the version and the options; bad options,
# values and sizes exit 2 naming the option and the text; a tiny real run
# (4 MiB, one repeat, warm, memory-backed and mmap configurations, plus the
# 1 TiB reserve) writes JSON with every top-level key, the runtime's snapshot
# embedded as an object, and bench/report.py reads it. The two bench helpers
# (faultline-loopback-probe, faultline-stress-writeback): --help, --version,
# usage errors (exit 2, named) and a short real run each. Nothing is timed.
set -uo pipefail

if [[ $# -ne 4 ]]; then
  echo "usage: $0 PATH_TO_FAULTLINE_BENCH PATH_TO_REPORT_PY PATH_TO_LOOPBACK_PROBE PATH_TO_STRESS_WRITEBACK" >&2
  exit 2
fi
bench=$(readlink -f "$1")
report=$(readlink -f "$2")
probe=$(readlink -f "$3")
stress=$(readlink -f "$4")
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
assert list(d) == ["machine", "params", "results", "reserve", "targets", "skipped"], list(d)
assert d["skipped"] == [], d["skipped"]
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

# faultline-http*: a real nginx on loopback (its directory under $TMPDIR)
# serving the dataset and the VM image's snapshot; every sum checked, nginx
# gone and its directory removed at the end. Without nginx
# (FAULTLINE_NGINX naming nothing) they are skipped, and said so.
json=$tmp/http.json
mkdir -p "$tmp/nginx-tmp"
if run 0 env TMPDIR="$tmp/nginx-tmp" "$bench" --size 4M --repeat 1 --configs faultline-http,faultline-http-4k \
  --workloads seq,rand,mt-rand,restore --dir "$tmp/data" --json="$json"; then
  expect_in "faultline-http run" "$out" "nginx: http://127.0.0.1:"
  python3 - "$json" <<'PY' || fail "the faultline-http JSON report is not what it should be (above)"
import json, sys
d = json.load(open(sys.argv[1]))
got = sorted((r["workload"], r["config"]) for r in d["results"])
want = sorted([("seq", "faultline-http"), ("rand", "faultline-http"), ("mt-rand", "faultline-http"),
               ("restore", "faultline-http"), ("rand", "faultline-http-4k"), ("mt-rand", "faultline-http-4k")])
assert got == want, got
for r in d["results"]:
    assert r["ok"] is True and r["errors"] == [], r
assert d["skipped"] == [], d["skipped"]
PY
  left=$(ls -A "$tmp/nginx-tmp")
  [[ -z $left ]] || fail "faultline-bench left nginx's files behind: $left"
fi
if run 0 env FAULTLINE_NGINX="$tmp/no-nginx" "$bench" --size 4M --repeat 1 --configs faultline-http,faultline-remote \
  --workloads seq --dir "$tmp/data" --json="$tmp/skip.json"; then
  expect_in "faultline-http without nginx" "$out" "SKIPPED faultline-http: nginx is not installed (no $tmp/no-nginx"
  python3 - "$tmp/skip.json" <<'PY' || fail "the JSON report of a skipped faultline-http is not what it should be (above)"
import json, sys
d = json.load(open(sys.argv[1]))
assert [s["config"] for s in d["skipped"]] == ["faultline-http"], d["skipped"]
assert "nginx is not installed" in d["skipped"][0]["reason"], d["skipped"]
assert [(r["workload"], r["config"], r["ok"]) for r in d["results"]] == [("seq", "faultline-remote", True)], d["results"]
t = [t for t in d["targets"] if t["name"].startswith("faultline-http seq")]
assert len(t) == 1 and t[0]["met"] is None and t[0]["detail"].startswith("not measured: faultline-http skipped"), t
PY
fi

# vm-restore: a VMM process and its handler (the fc-example one, faultline
# handle) per run; every sum checked (by the VMM), first_access_us reported,
# nothing left in --dir but the image, its snapshot and the working sets.
json=$tmp/vm.json
if run 0 "$bench" --size 4M --repeat 1 --workloads vm-restore --dir "$tmp/vm" --json="$json"; then
  expect_in "vm-restore run" "$out" "working sets recorded in"
  python3 - "$json" <<'PY' || fail "the vm-restore JSON report is not what it should be (above)"
import json, sys
d = json.load(open(sys.argv[1]))
got = sorted((r["config"], r["cache"]) for r in d["results"])
want = sorted((c, cache) for c in ["fc-example", "fc-file", "handle", "handle-ws", "handle-zstd-ws"]
              for cache in ["cold", "warm"])
assert got == want, got
for r in d["results"]:
    assert r["workload"] == "vm-restore" and r["ok"] is True and r["errors"] == [], r
    assert r["seconds"] > 0 and 0 < r["first_access_us"] < r["seconds"] * 1e6, r
names = [t["name"] for t in d["targets"] if t["name"].startswith("vm-restore")]
assert len(names) == 5, names
PY
  left=$(cd "$tmp/vm" && ls | grep -v -E '^(vm-image-v1-4194304(\.raw|-dict\.flsnap|\.raw\.handle\.ws|-dict\.flsnap\.handle\.ws|-dict\.flsnap\.ws|-dict\.zstd3-size)|faultline-bench-4194304\.dat)$' || true)
  [[ -z $left ]] || fail "faultline-bench vm-restore left files behind in --dir: $left"
fi

# migrate: samples/live_migration per run, its metrics and the
# destination's check in the JSON, every field the issue names; nothing left
# in --dir but the dataset file.
json=$tmp/migrate.json
if run 0 "$bench" --size 16M --repeat 1 --workloads migrate --dir "$tmp/mig" --json="$json"; then
  expect_in "migrate table" "$out" "migrate (samples/live_migration over loopback TCP"
  python3 - "$json" <<'PY' || fail "the migrate JSON report is not what it should be (above)"
import json, math, sys
d = json.load(open(sys.argv[1]))
got = sorted(r["config"] for r in d["results"])
assert got == ["migrate-hybrid", "migrate-postcopy", "migrate-precopy"], got
for r in d["results"]:
    assert r["workload"] == "migrate" and r["ok"] is True and r["errors"] == [], r
    assert r["lost_writes"] == 0 and r["wrong_words"] == 0, r
    assert r["total_s"] > 0 and r["downtime_ms"] > 0 and r["bytes_sent"] >= 16 << 20, r
    post = r["config"] != "migrate-precopy"
    assert (r["request_p50_us"] is not None) == post and (r["blocked_ms"] is not None) == post, r
    # (hybrid: at most 2 pre-copy rounds, fewer if what is left already fits the downtime)
    lo, hi = {"migrate-precopy": (1, 30), "migrate-postcopy": (0, 0), "migrate-hybrid": (1, 2)}[r["config"]]
    assert lo <= r["rounds"] <= hi, r
names = [t["name"] for t in d["targets"] if t["name"].startswith("migrate")]
assert len(names) == 9, names
lost = [t for t in d["targets"] if "lost_writes" in t["name"]]
assert all(t["met"] is True for t in lost), lost
PY
  left=$(cd "$tmp/mig" && ls | grep -v -E '^faultline-bench-16777216\.dat$' || true)
  [[ -z $left ]] || fail "faultline-bench migrate left files behind in --dir: $left"
fi

# live-snapshot: the three configurations, the issue's fields, nothing left
# in --dir but the dataset file.
json=$tmp/live.json
if run 0 "$bench" --size 16M --repeat 1 --workloads live-snapshot --dir "$tmp/live" --json="$json"; then
  expect_in "live-snapshot table" "$out" "live-snapshot (medians; max stall the longest of any run)"
  python3 - "$json" <<'PY' || fail "the live-snapshot JSON report is not what it should be (above)"
import json, sys
d = json.load(open(sys.argv[1]))
got = sorted(r["config"] for r in d["results"])
assert got == ["snapshot-incremental", "snapshot-live", "snapshot-stop"], got
for r in d["results"]:
    assert r["workload"] == "live-snapshot" and r["ok"] is True and r["errors"] == [], r
    assert r["seconds"] > 0 and r["bytes"] > 0 and r["max_stall_ms"] > 0 and r["writer_rate_ratio"] >= 0, r
    assert (r["dirty_bytes"] is not None) == (r["config"] == "snapshot-incremental"), r
# stop parks the writers for the whole snapshot; the child stores far less than a full image
by = {r["config"]: r for r in d["results"]}
assert by["snapshot-stop"]["writer_rate_ratio"] < 0.1, by["snapshot-stop"]
assert by["snapshot-incremental"]["bytes"] < by["snapshot-live"]["bytes"] / 2, by
names = [t["name"] for t in d["targets"] if t["name"].startswith("snapshot-")]
assert len(names) == 5, names
PY
  left=$(cd "$tmp/live" && ls | grep -v -E '^faultline-bench-16777216\.dat$' || true)
  [[ -z $left ]] || fail "faultline-bench live-snapshot left files behind in --dir: $left"
fi

# A --json file that cannot be written: exit 1 naming it, after the run.
run 1 "$bench" --size 4M --repeat 1 --caches warm --configs mmap --workloads seq --dir "$tmp/data" \
  --json "$tmp/no/such/dir/r.json" && expect_in "stderr" "$err" "cannot write --json $tmp/no/such/dir/r.json"

# faultline-loopback-probe.
run 0 "$probe" --version && [[ $out =~ ^faultline-loopback-probe\ [0-9]+\.[0-9]+ ]] ||
  fail "loopback probe --version prints '$out'"
if run 0 "$probe" --help; then
  for opt in --seconds --version "Unix-socket"; do expect_in "loopback probe --help" "$out" "$opt"; done
fi
# probe_error NEEDLE ARGS...: exit 2, NEEDLE on stderr, nothing measured.
probe_error() {
  local needle=$1
  shift
  run 2 "$probe" "$@" || return
  expect_in "loopback probe stderr of '$*'" "$err" "$needle"
  [[ -z $out ]] || fail "loopback probe '$*' printed on stdout: $out"
}
probe_error "--bogus" --bogus
probe_error "--seconds: expected a number of seconds more than 0 and at most 60, got '0'" --seconds 0
probe_error "--seconds: expected a number of seconds more than 0 and at most 60, got '61'" --seconds 61
probe_error "--seconds: expected a number of seconds more than 0 and at most 60, got '-1'" --seconds -1
probe_error "--seconds: expected a number of seconds more than 0 and at most 60, got 'abc'" --seconds abc
probe_error "--seconds" --seconds
probe_error "The following argument was not expected: extra" extra
# A short real run: one line per transport.
if run 0 "$probe" --seconds 0.05; then
  expect_in "loopback probe output" "$out" "tcp 127.0.0.1  stream"
  expect_in "loopback probe output" "$out" "unix           stream"
  [[ $(grep -c "round trips)" <<<"$out") -eq 2 ]] || fail "loopback probe printed: $out"
fi

# faultline-stress-writeback.
run 0 "$stress" --version && [[ $out =~ ^faultline-stress-writeback\ [0-9]+\.[0-9]+ ]] ||
  fail "stress --version prints '$out'"
if run 0 "$stress" --help; then
  for opt in --seconds --data --budget --writers --fill --file --version; do
    expect_in "stress --help" "$out" "$opt"
  done
fi
# stress_error NEEDLE ARGS...: exit 2, NEEDLE on stderr, no file written.
stress_error() {
  local needle=$1
  shift
  run 2 "$stress" --file "$tmp/never.dat" "$@" || return
  expect_in "stress stderr of '$*'" "$err" "$needle"
  [[ -z $out ]] || fail "stress '$*' printed on stdout: $out"
  [[ ! -e $tmp/never.dat ]] || fail "stress '$*' created --file"
}
stress_error "--bogus" --bogus
stress_error "--data: expected a size such as 4096, 64K, 2M or 1G, got '4X'" --data 4X
stress_error "--data: must be from 4194304" --data 1M
stress_error "--data: must be a multiple of 4096, got '4194305'" --data 4194305
stress_error "--budget: must be below --data (268435456 bytes), got 268435456" --budget 256M
stress_error "--budget: must hold at least 4 fills (4 x --fill 65536 bytes), got 131072" --budget 128K
stress_error "--fill: must be a power of two, got '12K'" --fill 12K
stress_error "--fill: must be from 4096 to 2097152" --fill 4M
stress_error "--writers" --writers 0
stress_error "--writers" --writers 65
stress_error "--seconds" --seconds 0
stress_error "--file" --file
# A short real run with suffixed sizes: every byte compared, file removed.
if run 0 "$stress" --seconds 1 --data 4MiB --budget 1M --fill 16k --writers 2 --file "$tmp/stress.dat"; then
  expect_in "stress output" "$out" "stress: 4 MiB write-back region, budget 1 MiB, 2 writers, fill 16 KiB, 1 s"
  expect_in "stress output" "$out" "compared 4194304 bytes with the shadow copy: 0 lost or wrong"
  [[ ! -e $tmp/stress.dat ]] || fail "stress left its file behind after a clean run"
fi

if [[ $failures -ne 0 ]]; then
  echo "$failures failure(s)" >&2
  exit 1
fi
echo "bench_cli: all checks passed"

#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# bench/report.py --plots on a real result, run by ctest (test name
# bench_report). Usage: bench_report_test.sh FAULTLINE_BENCH PYTHON3 REPORT_PY
# (PYTHON3: an interpreter with matplotlib).
#
# A tiny real run (4 MiB, two repeats, warm: seq, rand and restore on the
# memory backend, mmap and two zstd restores) writes JSON; report.py draws
# it, and every PNG it names must be a whole PNG image (signature, IHDR of a
# plausible size, IEND) of more than a few KiB. Files that are not results
# (cut short, a field missing or of the wrong type, not an object) must be
# refused naming the file and the field, exit 1, no PNG written. Nothing is
# timed.
set -uo pipefail

if [[ $# -ne 3 ]]; then
  echo "usage: $0 FAULTLINE_BENCH PYTHON3 REPORT_PY" >&2
  exit 2
fi
bench=$(readlink -f "$1")
python=$2
report=$(readlink -f "$3")
tmp=$(mktemp -d "${TMPDIR:-/tmp}/faultline-bench-report.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failures=0

# fail, run, expect_in
source "$(dirname "${BASH_SOURCE[0]}")/cli_test_lib.sh"

# check_png FILE: a complete PNG: signature, IHDR first with a width and
# height of 400-3000 and 200-3000 pixels, IEND last, and more than 4 KiB (an empty
# canvas of that size compresses to less).
check_png() {
  local f=$1 size sig ihdr w h tail
  [[ -f $f ]] || { fail "$f was not written"; return; }
  size=$(stat -c %s "$f")
  ((size > 4096)) || fail "$f has only $size bytes"
  sig=$(od -An -tx1 -N8 "$f" | tr -d ' \n')
  [[ $sig == 89504e470d0a1a0a ]] || fail "$f does not start with the PNG signature: $sig"
  ihdr=$(od -An -c -j12 -N4 "$f" | tr -d ' \n')
  [[ $ihdr == IHDR ]] || fail "$f: the first chunk is '$ihdr', not IHDR"
  w=$((16#$(od -An -tx1 -j16 -N4 "$f" | tr -d ' \n')))
  h=$((16#$(od -An -tx1 -j20 -N4 "$f" | tr -d ' \n')))
  ((w >= 400 && w <= 3000 && h >= 200 && h <= 3000)) || fail "$f is ${w}x${h} pixels"
  tail=$(tail -c 8 "$f" | od -An -c -N4 | tr -d ' \n')
  [[ $tail == IEND ]] || fail "$f does not end with IEND (cut short?)"
}

json=$tmp/tiny.json
if ! run 0 "$bench" --size 4M --repeat 2 --caches warm --configs faultline-memory,mmap,zstd-lazy,zstd-lazy-ws \
  --workloads seq,rand,restore --dir "$tmp/data" --json="$json"; then
  echo "$failures failure(s)" >&2
  exit 1
fi

plots=$tmp/plots
if run 0 "$python" "$report" --plots "$plots" "$json"; then
  want="tiny-throughput-seq tiny-throughput-rand tiny-latency-rand tiny-restore tiny-targets"
  for name in $want; do
    expect_in "report.py's list of files" "$out" "$plots/$name.png"
    check_png "$plots/$name.png"
  done
  # Nothing else: the restore workload has its own plot, not a throughput one.
  got=$(cd "$plots" && ls | sort | tr '\n' ' ')
  expected=$(for name in $want; do echo "$name.png"; done | sort | tr '\n' ' ')
  [[ $got == "$expected" ]] || fail "report.py wrote '$got', expected '$expected'"
  [[ $(wc -l <<<"$out") -eq 5 ]] || fail "report.py printed more than the five files: $out"
fi

# not_a_result NAME NEEDLE: report.py refuses $tmp/NAME, exit 1, naming it
# and NEEDLE (the field), and writes no plot.
not_a_result() {
  local f=$tmp/$1 needle=$2
  run 1 "$python" "$report" --plots "$tmp/bad-plots" "$f" || return
  expect_in "stderr for $1" "$err" "report.py: $f: not a faultline-bench result: $needle"
  [[ $err != *Traceback* ]] || fail "report.py crashed on $1: $err"
  [[ -z $out ]] || fail "report.py printed for $1: $out"
  [[ ! -e $tmp/bad-plots ]] || fail "report.py created the plot directory for $1"
}
# Cut short: the first half of the real file.
head -c "$(($(stat -c %s "$json") / 2))" "$json" >"$tmp/cut.json"
not_a_result cut.json "not JSON: line "
# A field missing, a field of the wrong type, a list instead of an object.
"$python" - "$json" "$tmp" <<'PY' || fail "could not write the malformed files"
import json, sys
src, out = sys.argv[1], sys.argv[2]
d = json.load(open(src))
del d["results"][1]["seconds_all"]
json.dump(d, open(out + "/missing.json", "w"))
d = json.load(open(src))
d["targets"][0]["value"] = "fast"
json.dump(d, open(out + "/wrong-type.json", "w"))
json.dump(d["results"], open(out + "/list.json", "w"))
PY
not_a_result missing.json "results[1]: missing field 'seconds_all'"
not_a_result wrong-type.json "targets[0].value: expected a number or null, got \"fast\""
not_a_result list.json "expected a JSON object with 'machine', 'params', 'results' and 'targets', got list"
# A file that is not there is a different error, exit 1 too.
run 1 "$python" "$report" --plots "$tmp/bad-plots" "$tmp/none.json" &&
  expect_in "stderr for a missing file" "$err" "report.py: $tmp/none.json: cannot read: No such file or directory"
# Usage errors: exit 2.
run 2 "$python" "$report" --plots "$tmp/bad-plots" && expect_in "stderr without a file" "$err" "RESULTS.json"

if [[ $failures -ne 0 ]]; then
  echo "$failures failure(s)" >&2
  exit 1
fi
echo "bench_report: plots drawn and checked, bad files refused"

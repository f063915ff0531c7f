#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# preload_test.sh LIBFAULTLINE_PRELOAD PRELOAD_PROBE [SANITIZER_RUNTIME]: libfaultline-preload.so
# under real, unmodified programs (Debian's sqlite3 and python3 with numpy)
# and under preload-probe for the calls those do not make. Every output is
# compared with a run of the same program without the shim, and
# FAULTLINE_STATS shows what was served. SANITIZER_RUNTIME (an ASan build's
# libasan.so) is preloaded first, as ASan requires, with leak detection off:
# the leaks at exit would be the programs' own.
set -uo pipefail
lib=$1
probe=$2
if [[ -n ${3:-} ]]; then
  lib="$3 $lib"
  export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0  # last one wins: scripts/test.sh exports detect_leaks=1
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Debian's interpreter explicitly: a python3 first on PATH (pyenv) may lack numpy.
py=/usr/bin/python3
tmp=$(cd "$(mktemp -d)" && pwd -P)  # the shim matches resolved paths
trap 'rm -rf "$tmp"' EXIT
failures=0
source "$here/../../tests/cli_test_lib.sh"

# shim GLOB CMD...: CMD under the shim, stats in $tmp/stats.json.
shim() {
  local glob=$1
  shift
  rm -f "$tmp/stats.json"
  env LD_PRELOAD="$lib" FAULTLINE_PRELOAD="$glob" FAULTLINE_STATS="$tmp/stats.json" "$@"
}

# stats PATH: "REGIONS FAULTS UNMAPPED FALLBACKS SKIP_REASONS" for PATH in $tmp/stats.json.
stats() {
  "$py" - "$tmp/stats.json" "$1" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
rs = [r for r in j["regions"] if r["path"] == sys.argv[2]]
skips = [s["reason"].replace(" ", "_") for s in j["skipped"] if s["path"] == sys.argv[2]]
print(len(rs), sum(r["stats"]["faults"] for r in rs), sum(not r["mapped"] for r in rs), j["fallbacks"],
      ",".join(skips) or "-")
EOF
}

# same WHAT WANT GOT: outputs of runs with and without the shim agree.
same() {
  if [[ $2 != "$3" ]]; then fail "$1: output differs with the shim: '$3', without: '$2'"; fi
}
# no_stderr WHAT: the shim said nothing.
no_stderr() {
  if [[ -n $err ]]; then fail "$1: unexpected stderr: $err"; fi
}
# expect_stats WHAT PATH PATTERN: stats PATH matches the extended regex.
expect_stats() {
  local got
  got=$(stats "$2")
  if [[ ! $got =~ $3 ]]; then fail "$1: stats for $2 are '$got', expected /$3/"; fi
}

# ---- sqlite3 --------------------------------------------------------------
if ! command -v sqlite3 >/dev/null; then
  fail "sqlite3 is not installed (Debian: sqlite3)"
else
  db=$tmp/bench.db
  sqlite3 "$db" "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, n INTEGER);
    WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 60000)
    INSERT INTO t SELECT i, hex(randomblob(40)), i * 7 % 1000 FROM c;
    CREATE INDEX t_n ON t(n);" || fail "creating $db"
  size=$(stat -c %s "$db")
  if ((size < 4 * 1024 * 1024)); then fail "$db is only $size bytes"; fi
  query="PRAGMA mmap_size=268435456;
    SELECT count(*), sum(n), sum(length(v)), min(v), max(v) FROM t;
    SELECT id, v FROM t WHERE id IN (1, 30000, 59999);
    SELECT n, count(*), min(id) FROM t WHERE n BETWEEN 10 AND 14 GROUP BY n;"
  run 0 sqlite3 -readonly "$db" "$query" && want=$out

  # Under timeout: a wrapper that maps nothing must not replace the program's stats.
  run 0 shim "$tmp/*.db" timeout 300 sqlite3 -readonly "$db" "$query" && {
    same "sqlite3" "$want" "$out"
    no_stderr "sqlite3"
    expect_stats "sqlite3" "$db" '^[1-9][0-9]* [1-9][0-9]* [0-9]+ 0 -$'
  }
  # Read-write, sqlite3 writes with pwrite(2) and reads the mapping: not intercepted.
  run 0 shim "$tmp/*.db" sqlite3 "$db" "$query" && {
    same "sqlite3, read-write" "$want" "$out"
    expect_stats "sqlite3, read-write" "$db" '^0 0 0 0 the_descriptor_is_open_for_writing'
  }
  run 0 shim "$tmp/*.nothing" sqlite3 -readonly "$db" "$query" && {
    same "sqlite3, glob not matching" "$want" "$out"
    expect_stats "sqlite3, glob not matching" "$db" '^0 0 0 0 does_not_match_FAULTLINE_PRELOAD'
  }
  run 0 shim "$db" env FAULTLINE_PRELOAD_MIN=1G sqlite3 -readonly "$db" "$query" && {
    same "sqlite3, below the minimum" "$want" "$out"
    expect_stats "sqlite3, below the minimum" "$db" '^0 0 0 0 shorter_than_FAULTLINE_PRELOAD_MIN'
  }
  run 0 shim "$db" env FAULTLINE_PRELOAD_MIN=12Q sqlite3 -readonly "$db" "$query" && {
    same "sqlite3, bad FAULTLINE_PRELOAD_MIN" "$want" "$out"
    expect_in "stderr for FAULTLINE_PRELOAD_MIN=12Q" "$err" \
      "faultline-preload: FAULTLINE_PRELOAD_MIN = '12Q': expected a size such as 4096, 64K, 2M or 1G; intercepting nothing"
  }
fi

# ---- python3 and numpy ----------------------------------------------------
if ! "$py" -c "import numpy" 2>/dev/null; then
  fail "$py cannot import numpy (Debian: python3-numpy)"
else
  npy=$tmp/table.npy
  run 0 "$py" "$here/npy_checksum.py" create "$npy"
  run 0 "$py" "$here/npy_checksum.py" sum "$npy" && want=$out
  expect_in "numpy without the shim" "$want" "shape (1536, 4096)"
  run 0 shim "$tmp/*.npy" "$py" "$here/npy_checksum.py" sum "$npy" && {
    same "numpy.load(mmap_mode='r')" "$want" "$out"
    no_stderr "numpy.load(mmap_mode='r')"
    expect_stats "numpy.load(mmap_mode='r')" "$npy" '^1 [1-9][0-9]* [01] 0 -$'
  }
  run 0 shim "$tmp/*.npy" "$py" "$here/npy_checksum.py" fork "$npy" && {
    no_stderr "numpy after os.fork()"
    expect_in "numpy, the child of os.fork()" "$out" "child $want"
    expect_in "numpy, the parent after os.fork()" "$out" "parent $want"
    expect_stats "numpy after os.fork()" "$npy" '^1 [1-9][0-9]* [01] 0 -$'
  }
fi

# ---- preload-probe: munmap, mremap, madvise, fork, SIGBUS, fallback -------
bin=$tmp/data.bin
head -c 5000000 /dev/urandom >"$bin"  # not a whole number of pages
for mode in read partial mremap madvise fork; do
  run 0 "$probe" "$mode" "$bin" && want=$out
  run 0 shim "$tmp/*.bin" "$probe" "$mode" "$bin" && {
    same "probe $mode" "$want" "$out"
    no_stderr "probe $mode"
    case $mode in
      partial | mremap) expect_stats "probe $mode" "$bin" '^1 [1-9][0-9]* 1 0 -$' ;;
      *) expect_stats "probe $mode" "$bin" '^1 [1-9][0-9]* 0 0 -$' ;;
    esac
  }
done
# Threads mapping and unmapping at once, from the first mapping (which creates the runtime) on.
run 0 "$probe" threads "$bin" && want=$out
run 0 shim "$tmp/*.bin" "$probe" threads "$bin" && {
  same "probe threads" "$want" "$out"
  no_stderr "probe threads"
  expect_stats "probe threads" "$bin" '^80 [1-9][0-9]* 80 0 -$'
}
# 8 MiB from offset 1 MiB of a 4.8 MiB file: the pages past its last page raise SIGBUS.
run 0 "$probe" offset "$bin" 1048576 8388608 && want=$out
expect_in "probe offset without the shim" "$want" "ok offset 1048576: 3952640 bytes read, 1083 pages raise SIGBUS"
run 0 shim "$tmp/*.bin" "$probe" offset "$bin" 1048576 8388608 && {
  same "probe offset" "$want" "$out"
  expect_stats "probe offset" "$bin" '^1 [1-9][0-9]* 0 0 -$'
}
# 1.5 MiB and 100 bytes: the last page is the file's, whole, as the page cache shows it.
run 0 "$probe" offset "$bin" 0 1572964 && want=$out
expect_in "probe offset 0 without the shim" "$want" "ok offset 0: 1576960 bytes read, 0 pages raise SIGBUS"
run 0 shim "$tmp/*.bin" "$probe" offset "$bin" 0 1572964 && {
  same "probe offset 0" "$want" "$out"
  expect_stats "probe offset 0" "$bin" '^1 [1-9][0-9]* 0 0 -$'
}
# No descriptor left for the runtime: the real mmap, one line on stderr.
# Not under a sanitizer runtime, whose own checks need descriptors (UBSan's
# vptr check tests memory through a pipe, and reports a false error without one).
if [[ -n ${3:-} ]]; then
  echo "preload_test.sh: the no-descriptor fallback case is not run under $3"
elif run 0 shim "$tmp/*.bin" "$probe" emfile "$bin"; then
  expect_in "probe emfile" "$out" "ok emfile: read 5000000 bytes"
  lines=$(printf '%s\n' "$err" | grep -c .)
  if [[ $lines -ne 1 ]]; then fail "probe emfile: $lines lines on stderr, expected 1: $err"; fi
  expect_in "probe emfile stderr" "$err" "faultline-preload: $bin: cannot open a userfaultfd"
  expect_in "probe emfile stderr" "$err" "Too many open files; mapped without faultline"
  expect_stats "probe emfile" "$bin" '^0 0 0 1 -$'
fi
# Without FAULTLINE_PRELOAD the shim does nothing, and writes no statistics.
rm -f "$tmp/stats.json"
run 0 env LD_PRELOAD="$lib" FAULTLINE_STATS="$tmp/stats.json" "$probe" read "$bin"
no_stderr "probe without FAULTLINE_PRELOAD"
if [[ -e $tmp/stats.json ]]; then fail "statistics written without FAULTLINE_PRELOAD"; fi

if ((failures)); then
  echo "$failures failure(s)" >&2
  exit 1
fi
echo "preload tests passed"

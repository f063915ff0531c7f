#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# End-to-end test of `faultline snapshot create|inspect|verify`, run by ctest
# (test name snapshot_cli). Usage: snapshot_cli_test.sh PATH_TO_FAULTLINE
#
# Creates a snapshot of a generated file (text, a zero run, random bytes, an
# odd total size), inspects and verifies it, then checks the failures: a
# corrupted copy fails verify with exit status 1 naming the file and chunk, a
# truncated copy and a missing file fail inspect naming the file, bad options
# exit 2 naming the option, and every subcommand has --help; so do the top
# level's --help, --version, help and unknown commands. The progress bar
# must appear on a terminal (faked with script(1)) and nowhere else. Writing
# to a full device exits 1 with the error.
set -uo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 PATH_TO_FAULTLINE" >&2
  exit 2
fi
fl=$(readlink -f "$1")
tmp=$(mktemp -d "${TMPDIR:-/tmp}/faultline-snapshot-cli.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failures=0

# fail, run, expect_in
source "$(dirname "${BASH_SOURCE[0]}")/cli_test_lib.sh"

# Input: 1,000,000 bytes of text, 2,000,000 zero bytes (at least 29 whole
# 64 KiB chunks), 2,000,123 random bytes: 5,000,123 bytes, 77 chunks of 64 KiB.
input=$tmp/input.bin
{
  yes "faultline snapshot command-line test: compressible line" | head -c 1000000
  head -c 2000000 /dev/zero
  head -c 2000123 /dev/urandom
} >"$input"
size=$(stat -c %s "$input")
[[ $size -eq 5000123 ]] || fail "generated input has $size bytes"

snap=$tmp/input.flsnap
if run 0 "$fl" snapshot create "$input" "$snap" --chunk-size 64K --level 3 --threads 2; then
  expect_in "create stdout" "$out" "$snap"
  expect_in "create stdout" "$out" "77 chunks"
  [[ -z $err ]] || fail "create wrote to stderr without a terminal (progress bar?): $err"
fi
[[ -f $snap ]] || fail "create did not write $snap"
leftovers=$(ls "$tmp" | grep -v -e '^input.bin$' -e '^input.flsnap$' -e '^out$' -e '^err$')
[[ -z $leftovers ]] || fail "create left files behind: $leftovers"

if run 0 "$fl" snapshot inspect "$snap"; then
  expect_in "inspect" "$out" "chunk size:        65536"
  expect_in "inspect" "$out" "uncompressed size: 5000123"
  expect_in "inspect" "$out" "chunks:            77"
  zero=$(sed -n 's/^zero chunks: *\([0-9]*\).*/\1/p' <<<"$out")
  [[ -n $zero && $zero -ge 29 && $zero -le 31 ]] || fail "inspect: expected 29..31 zero chunks, got '$zero': $out"
  expect_in "inspect" "$out" "compression ratio:"
  fbytes=$(sed -n 's/^file bytes: *\([0-9]*\).*/\1/p' <<<"$out")
  [[ $fbytes -eq $(stat -c %s "$snap") ]] || fail "inspect: file bytes '$fbytes' is not the file's size"
fi

if run 0 "$fl" snapshot verify "$snap" --threads 2; then
  expect_in "verify stdout" "$out" "ok: 77 chunks"
fi

# Without a dictionary: no flag, no dictionary bytes, still verifies.
if run 0 "$fl" snapshot create "$input" "$tmp/nodict.flsnap" --dictionary 0; then
  if run 0 "$fl" snapshot inspect "$tmp/nodict.flsnap"; then
    expect_in "inspect (--dictionary 0)" "$out" "dictionary bytes:  0"
    expect_in "inspect (--dictionary 0)" "$out" "flags:             0x0"
  fi
  run 0 "$fl" snapshot verify "$tmp/nodict.flsnap" || true
fi
rm -f "$tmp/nodict.flsnap"
if run 2 "$fl" snapshot create "$input" "$tmp/y.flsnap" --dictionary 2M; then
  expect_in "create stderr (bad dictionary)" "$err" "--dictionary"
fi

# Other chunk sizes and levels round-trip through verify too.
for cs in 4K 1M 4M; do
  if run 0 "$fl" snapshot create "$input" "$tmp/cs.flsnap" --chunk-size=$cs --level=1; then
    run 0 "$fl" snapshot verify "$tmp/cs.flsnap" || true
  fi
done
rm -f "$tmp/cs.flsnap"

# A corrupted copy: one byte flipped in the middle of the file, which lies in
# the random part's compressed chunks.
bad=$tmp/corrupt.flsnap
cp "$snap" "$bad"
fsize=$(stat -c %s "$bad")
pos=$((fsize / 2))
orig=$(od -An -tu1 -j "$pos" -N1 "$bad" | tr -d ' ')
printf "$(printf '\\%03o' $(((orig + 1) % 256)))" | dd of="$bad" bs=1 seek="$pos" conv=notrunc status=none
cmp -s "$snap" "$bad" && fail "corruption did not change the file"
if run 1 "$fl" snapshot verify "$bad"; then
  expect_in "verify stderr (corrupt)" "$err" "$bad"
  expect_in "verify stderr (corrupt)" "$err" "chunk "
  expect_in "verify stderr (corrupt)" "$err" "FAILED: 1 of 77 chunks bad"
fi

# Truncated copies fail at open, naming the file.
for keep in 0 10 100 $((fsize - 1)); do
  head -c "$keep" "$snap" >"$tmp/trunc.flsnap"
  if run 1 "$fl" snapshot inspect "$tmp/trunc.flsnap"; then
    expect_in "inspect stderr (truncated to $keep)" "$err" "$tmp/trunc.flsnap"
  fi
  run 1 "$fl" snapshot verify "$tmp/trunc.flsnap" || true
done
# Not a snapshot at all.
if run 1 "$fl" snapshot inspect "$input"; then
  expect_in "inspect stderr (not a snapshot)" "$err" "$input"
fi

# Missing files.
if run 1 "$fl" snapshot inspect "$tmp/no-such.flsnap"; then
  expect_in "inspect stderr (missing)" "$err" "$tmp/no-such.flsnap"
fi
if run 1 "$fl" snapshot create "$tmp/no-such-input" "$tmp/x.flsnap"; then
  expect_in "create stderr (missing input)" "$err" "$tmp/no-such-input"
fi
[[ ! -e $tmp/x.flsnap ]] || fail "create of a missing input left $tmp/x.flsnap"
if run 1 "$fl" snapshot create "$input" "$tmp/no-such-dir/x.flsnap"; then
  expect_in "create stderr (missing output dir)" "$err" "$tmp/no-such-dir"
fi

# Usage errors: exit 2, naming the option.
if run 2 "$fl" snapshot create "$input" "$tmp/y.flsnap" --chunk-size 3000; then
  expect_in "create stderr (bad chunk size)" "$err" "--chunk-size"
fi
if run 2 "$fl" snapshot create "$input" "$tmp/y.flsnap" --level 0; then
  expect_in "create stderr (bad level)" "$err" "--level"
fi
if run 2 "$fl" snapshot create "$input" "$tmp/y.flsnap" --threads; then
  expect_in "create stderr (missing value)" "$err" "--threads"
fi
run 2 "$fl" snapshot inspect || true
run 2 "$fl" snapshot verify "$snap" --bogus || true

# Usage errors name the problem.
if run 2 "$fl" snapshot create "$input" "$tmp/y.flsnap" --chunk-size 3000; then
  expect_in "create stderr (chunk size not a power of two)" "$err" "--chunk-size: must be a power of two, got '3000'"
fi
if run 2 "$fl" snapshot create "$input" "$tmp/y.flsnap" --chunk-size 8M; then
  expect_in "create stderr (chunk size too large)" "$err" "--chunk-size: must be from 4096 to 4194304 bytes, got '8M'"
fi
if run 2 "$fl" snapshot create "$input" "$tmp/y.flsnap" --chunk-size 64Q; then
  expect_in "create stderr (bad suffix)" "$err" "expected a size such as 4096, 64K, 2M or 1G, got '64Q'"
fi
if run 2 "$fl" snapshot create "$input" "$tmp/y.flsnap" --threads 1025; then
  expect_in "create stderr (too many threads)" "$err" "--threads"
fi
if run 2 "$fl" snapshot create "$input" "$input"; then
  expect_in "create stderr (same file)" "$err" "INPUT and OUTPUT are the same file: '$input'"
fi
if run 2 "$fl" snapshot create "$input"; then
  expect_in "create stderr (no OUTPUT)" "$err" "OUTPUT is required"
fi
if run 2 "$fl" snapshot create "$input" "$tmp/y.flsnap" extra; then
  expect_in "create stderr (extra argument)" "$err" "extra"
fi
if run 2 "$fl" snapshot frobnicate; then
  expect_in "snapshot stderr (unknown subcommand)" "$err" "unknown subcommand 'frobnicate' (subcommands: create, inspect, verify, flatten)"
fi
if run 2 "$fl" snapshot; then
  expect_in "snapshot stderr (no subcommand)" "$err" "create, inspect, verify"
fi
[[ ! -e $tmp/y.flsnap ]] || fail "a usage error wrote $tmp/y.flsnap"
# Sizes take K/M/G with an optional iB or B, in any case, like every faultline program.
for cs in 64k 64KiB 64kb 65536; do
  if run 0 "$fl" snapshot create "$input" "$tmp/s.flsnap" --chunk-size "$cs" --level 1; then
    run 0 "$fl" snapshot inspect "$tmp/s.flsnap" && expect_in "inspect (--chunk-size $cs)" "$out" "chunk size:        65536"
  fi
done
rm -f "$tmp/s.flsnap"

# --help everywhere, on stdout, exit 0, describing every option.
for sub in "" create inspect verify; do
  if run 0 "$fl" snapshot $sub --help; then
    expect_in "snapshot $sub --help" "$out" "Usage: faultline snapshot"
    [[ -z $err ]] || fail "snapshot $sub --help wrote to stderr: $err"
  fi
done
run 0 "$fl" snapshot create --help
for opt in INPUT OUTPUT --chunk-size --level --threads --dictionary "Exit status"; do
  expect_in "snapshot create --help" "$out" "$opt"
done
run 0 "$fl" snapshot verify --help
for opt in FILE --threads "Exit status"; do
  expect_in "snapshot verify --help" "$out" "$opt"
done

# The top level: the command list, --version, help, unknown commands.
for args in --help -h help; do
  if run 0 "$fl" $args; then
    expect_in "faultline $args" "$out" "Usage: faultline"
    expect_in "faultline $args" "$out" "snapshot"
    expect_in "faultline $args" "$out" "serve"
  fi
done
if run 0 "$fl" --version; then
  [[ $out == "faultline 0.2.0" ]] || fail "faultline --version printed '$out', expected 'faultline 0.2.0'"
fi
if run 0 "$fl" help snapshot; then
  expect_in "faultline help snapshot" "$out" "Usage: faultline snapshot"
fi
if run 2 "$fl" help frobnicate; then
  expect_in "faultline help frobnicate" "$err" "unknown command 'frobnicate'"
fi
if run 2 "$fl" frobnicate; then
  expect_in "faultline frobnicate" "$err" "faultline: unknown command 'frobnicate' (commands: handle, serve, snapshot, help)"
fi
if run 2 "$fl"; then
  expect_in "faultline (no command)" "$err" "serve, snapshot, help"
fi
if run 0 "$fl" serve --help; then
  expect_in "faultline serve --help" "$out" "faultline serve"
fi

# Output that cannot be written (a full device) fails the command: a cut
# report must not exit 0.
if [[ -w /dev/full ]]; then
  for cmd in "snapshot inspect $snap" "snapshot verify $snap" "--help" "--version" "snapshot create --help"; do
    # shellcheck disable=SC2086
    "$fl" $cmd >/dev/full 2>"$tmp/err"
    got=$?
    [[ $got -eq 1 ]] || fail "'faultline $cmd >/dev/full' exited $got, expected 1"
    grep -q "cannot write to standard output.*; the output is incomplete" "$tmp/err" ||
      fail "'faultline $cmd >/dev/full' stderr lacks the write error: $(cat "$tmp/err")"
  done
else
  echo "note: /dev/full not writable; output-error checks skipped"
fi

# Progress bar: drawn on a terminal, not into a pipe (checked above).
if command -v script >/dev/null; then
  script -qec "'$fl' snapshot verify '$snap' --threads 1" /dev/null >"$tmp/tty" 2>&1
  grep -q 'verify \[' "$tmp/tty" || fail "no progress bar on a terminal: $(cat "$tmp/tty")"
else
  echo "note: script(1) not found; progress-bar-on-a-terminal check skipped"
fi

if [[ $failures -ne 0 ]]; then
  echo "snapshot_cli: $failures check(s) failed" >&2
  exit 1
fi
echo "snapshot_cli: all checks passed"

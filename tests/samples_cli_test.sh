#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The samples' command lines, run by ctest (test name samples_cli). Usage:
# samples_cli_test.sh LAZY_DATASET REMOTE_PAGES SNAPSHOT_RESTORE WITH_NGINX
#
# Each sample: --help and --version exit 0; an unknown option and a bad value
# exit 2 naming the option. Then a small run of each: lazy_dataset verifies
# every record it reads (and a corrupted record fails it, exit 1, named);
# snapshot_restore restores cold and warm without root, cold meaning only
# the snapshot file's pages were evicted, and restores the same snapshot
# over HTTP from a real nginx (WITH_NGINX, tools/nginx/with_nginx.cc);
# remote_pages with its defaults
# fetches only a small part of the table, and says how much.
set -uo pipefail

if [[ $# -ne 4 ]]; then
  echo "usage: $0 LAZY_DATASET REMOTE_PAGES SNAPSHOT_RESTORE WITH_NGINX" >&2
  exit 2
fi
lazy=$(readlink -f "$1")
remote=$(readlink -f "$2")
restore=$(readlink -f "$3")
with_nginx=$(readlink -f "$4")
tmp=$(mktemp -d "${TMPDIR:-/tmp}/faultline-samples-cli.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failures=0

# fail, run, expect_in
source "$(dirname "${BASH_SOURCE[0]}")/cli_test_lib.sh"
expect_not_in() {  # expect_not_in WHAT TEXT NEEDLE
  if [[ $2 == *"$3"* ]]; then
    fail "$1 contains '$3': $2"
  fi
}

for prog in "$lazy" "$remote" "$restore"; do
  name=$(basename "$prog")
  run 0 "$prog" --help && expect_in "$name --help" "$out" "Usage: $name [OPTIONS]"
  expect_in "$name --help" "$out" "Exit status:"
  run 0 "$prog" --version && expect_in "$name --version" "$out" "$name "
  run 2 "$prog" --no-such-option && expect_in "$name --no-such-option stderr" "$err" "--no-such-option"
  expect_in "$name --no-such-option stderr" "$err" "Run with --help"
  run 2 "$prog" --size 12Q && expect_in "$name --size 12Q stderr" "$err" "--size: expected a size such as"
  expect_in "$name --size 12Q stderr" "$err" "'12Q'"
done

# lazy_dataset: a 1 MiB data set, both runs, every record verified.
run 0 "$lazy" --size 1M --dir "$tmp/ld" --lookups 500 --scans 2 --scan-records 100
expect_in "lazy_dataset" "$out" "result: OK, every record verified in every run"
expect_in "lazy_dataset" "$out" "records-1048576.dat's pages evicted from the page cache first"
expect_not_in "lazy_dataset" "$out" "drop_caches first"
data=$tmp/ld/records-1048576.dat
[[ $(stat -c %s "$data") -eq 1048576 ]] || fail "lazy_dataset made $(stat -c %s "$data") bytes, not 1048576"
run 0 "$lazy" --size 1M --dir "$tmp/ld" --lookups 10 --only mmap && expect_in "lazy_dataset reuse" "$out" "(reused)"
# One flipped byte in record 100: a scan over every record finds it, in both runs.
cp "$data" "$tmp/bad.dat"
printf '\x5a' | dd of="$tmp/bad.dat" bs=1 seek=$((100 * 256 + 40)) conv=notrunc status=none
run 1 "$lazy" "$tmp/bad.dat" --lookups 0 --scans 1 --scan-records 4096
expect_in "lazy_dataset corrupted" "$out" "FAIL (faultline): 1 of 4095 records failed verification; first: record 100 (offset 25600): checksum mismatch"
expect_in "lazy_dataset corrupted" "$out" "FAIL (mmap): 1 of 4095 records"
expect_in "lazy_dataset corrupted" "$out" "result: FAIL"
# Bad arguments: a file that is not a data set, options that do not apply.
head -c 4096 /dev/zero >"$tmp/zero.dat"
run 2 "$lazy" "$tmp/zero.dat" && expect_in "lazy_dataset zero file" "$err" "zero.dat: not a lazy_dataset file"
run 2 "$lazy" "$data" --size 1M && expect_in "lazy_dataset FILE --size" "$err" "--size: applies only to a generated data set"
run 2 "$lazy" --fill-size 3K && expect_in "lazy_dataset --fill-size" "$err" "--fill-size: must be a power of two, got '3K'"
run 2 "$lazy" --only both && expect_in "lazy_dataset --only" "$err" "--only"
run 2 "$lazy" --lookups 0 --scans 0 && expect_in "lazy_dataset nothing" "$err" "nothing to do"

# snapshot_restore: an 8 MiB image, cold (the file's pages evicted, no root
# needed) and warm, every page checked.
run 0 "$restore" --size 8M --dir "$tmp/sr"
expect_in "snapshot_restore" "$out" ".flsnap's pages evicted from the page cache first"
for mode in eager lazy lazy-ws; do
  for cache in cold warm; do
    line=$(grep -E "^$mode +$cache " <<<"$out")
    [[ $line == *" ok" ]] || fail "snapshot_restore: no '$mode $cache ... ok' row: $out"
  done
done
run 2 "$restore" --cold --cache warm && expect_in "snapshot_restore --cold --cache warm" "$err" "--cold: needs cold runs"
run 2 "$restore" --size 3000K && expect_in "snapshot_restore --size" "$err" "must be a multiple of 1048576, got"
run 2 "$restore" --cache hot && expect_in "snapshot_restore --cache" "$err" "--cache"

# snapshot_restore --snapshot URL: the same snapshot served by a private nginx
# on loopback, restored eagerly and lazily over HTTP, every page checked
# (warm only); a URL with nothing there fails naming it (exit 1).
snapfile=$(cd "$tmp/sr" && ls vm-image-v1-*.flsnap)
if [[ ! -x /usr/sbin/nginx ]]; then
  echo "samples_cli: SKIPPED the HTTP restore: nginx is not installed (Debian: nginx-light)"
elif run 0 "$with_nginx" "$tmp/sr" -- "$restore" --snapshot "{url}/$snapfile" --dir "$tmp/sr-http"; then
  expect_in "snapshot_restore --snapshot URL" "$out" "over HTTP: the server's cache is its own"
  for mode in eager lazy lazy-ws; do
    line=$(grep -E "^$mode +warm " <<<"$out")
    [[ $line == *" ok" ]] || fail "snapshot_restore --snapshot URL: no '$mode warm ... ok' row: $out"
  done
  grep -qE "^[a-z-]+ +cold " <<<"$out" && fail "snapshot_restore --snapshot URL ran a cold restore: $out"
  [[ -s $tmp/sr-http/$snapfile.ws ]] || fail "snapshot_restore --snapshot URL saved no working set in --dir"
  run 1 "$with_nginx" "$tmp/sr" -- "$restore" --snapshot "{url}/missing.flsnap" --dir "$tmp/sr-http" &&
    expect_in "snapshot_restore --snapshot (no such URL)" "$err" "missing.flsnap"
  expect_in "snapshot_restore --snapshot (no such URL)" "$err" "404"
fi
run 2 "$restore" --snapshot http://127.0.0.1:9/x.flsnap --cache cold &&
  expect_in "snapshot_restore --snapshot URL --cache cold" "$err" "--cache: cold does not apply to a URL"

# remote_pages with its defaults: the query fetches a small part of the table.
run 0 "$remote"
expect_in "remote_pages" "$out" "every record checked: ok"
if [[ $out =~ laziness:\ fetched\ ([0-9]+)\ of\ the\ table\'s\ ([0-9]+)\ bytes ]]; then
  fetched=${BASH_REMATCH[1]}
  table=${BASH_REMATCH[2]}
  ((fetched > 0 && fetched * 4 < table)) || fail "remote_pages fetched $fetched of $table bytes: not lazy"
else
  fail "remote_pages does not report what it fetched: $out"
fi
run 2 "$remote" --size 5000 && expect_in "remote_pages --size" "$err" "must be a multiple of 4096, got"
run 1 "$remote" --write "$tmp/no/such/dir/t" && expect_in "remote_pages --write" "$err" "cannot create $tmp/no/such/dir/t"

if [[ $failures -ne 0 ]]; then
  echo "samples_cli: $failures check(s) failed" >&2
  exit 1
fi
echo "samples_cli: all checks passed"

#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# `faultline snapshot create` and its input, end to end (ctest name
# snapshot_input_cli). Usage: snapshot_input_cli_test.sh PATH_TO_FAULTLINE
#
# An input that grows, shrinks or is overwritten while create reads it fails
# with exit status 1 naming it, and leaves neither an output nor a temporary
# file. The snapshot's mode follows the umask and never exceeds the input's.
# A FIFO, a directory or a character device is refused without blocking; a
# block device is snapshotted whole.
set -uo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 PATH_TO_FAULTLINE" >&2
  exit 2
fi
fl=$(readlink -f "$1")
tmp=$(mktemp -d "${TMPDIR:-/tmp}/faultline-snapshot-input.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failures=0

fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}
expect_in() {  # expect_in WHAT TEXT NEEDLE
  if [[ $2 != *"$3"* ]]; then
    fail "$1 does not contain '$3': $2"
  fi
}
expect_only() {  # expect_only FILE...: the test directory holds exactly these names
  local want got
  want=$(printf '%s\n' "$@" | sort)
  got=$(ls -A "$tmp" | sort)
  [[ $got == "$want" ]] || fail "expected only {$(echo $want)} in the test directory, found {$(echo $got)}"
}

# The state letter of process $1 (R, S, T, Z, ...), empty once it is gone.
proc_state() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  echo "${stat%% *}"
}
# Whether every thread of process $1 has stopped; waits up to 10 s.
all_stopped() {
  local t s
  for ((i = 0; i < 10000; i++)); do
    s=T
    for t in /proc/"$1"/task/*/stat; do
      local st
      st=$(cat "$t" 2>/dev/null) || continue
      st=${st##*) }
      st=${st%% *}
      [[ $st == T || $st == t ]] || s=$st
    done
    [[ $s == T ]] && return 0
    [[ $(proc_state "$1") == Z || -z $(proc_state "$1") ]] && return 1
    sleep 0.001
  done
  return 1
}

# change_during_create HOW: runs create on an input that takes it a while
# (random bytes at level 19, one thread) and stops it (SIGSTOP) until it is
# caught in the middle of its read: its temporary output exists (so it has
# looked at the input) and it has read fewer bytes than the input holds (so
# it has not looked again). Then changes the input (HOW: grow, shrink,
# overwrite) and lets it go on. Each attempt either catches it or is thrown
# away, so the outcome never depends on timing; a machine so fast that
# create escapes gets a twice larger input, up to four times.
change_during_create() {
  local how=$1 in=$tmp/race.bin out=$tmp/race.flsnap mib=4 caught=0 rc size pid
  for attempt in 1 2 3 4; do
    size=$((mib << 20))
    head -c "$size" /dev/urandom >"$in"
    "$fl" snapshot create "$in" "$out" --level 19 --threads 1 --dictionary 0 --chunk-size 4K \
      >"$tmp/race.out" 2>"$tmp/race.err" &
    pid=$!
    while [[ -n $(proc_state $pid) && $(proc_state $pid) != Z ]]; do
      kill -STOP $pid 2>/dev/null || break
      if all_stopped $pid && compgen -G "$out.tmp.*" >/dev/null; then
        local rchar
        rchar=$(sed -n 's/^rchar: //p' "/proc/$pid/io" 2>/dev/null)
        if [[ -n $rchar ]] && ((rchar < size)); then
          case $how in
            grow) head -c 4096 /dev/urandom >>"$in" ;;
            shrink) truncate -s $((size / 2)) "$in" ;;
            overwrite) head -c 4096 /dev/urandom | dd of="$in" bs=4096 seek=$((size / 4096 - 1)) conv=notrunc status=none ;;
          esac
          caught=1
          kill -CONT $pid
          break
        fi
      fi
      kill -CONT $pid 2>/dev/null
      sleep 0.005
    done
    wait $pid
    rc=$?
    ((caught)) && break
    rm -f "$out"
    mib=$((mib * 2))
  done
  if ((!caught)); then
    fail "$how: create finished every time before it could be stopped in the middle of its read"
    return
  fi
  local err
  err=$(cat "$tmp/race.err")
  [[ $rc -eq 1 ]] || fail "$how: create of a changing input exited $rc, expected 1; stderr: $err"
  expect_in "$how: create stderr" "$err" "snapshot input $in changed while it was being read"
  expect_in "$how: create stderr" "$err" "nothing written"
  case $how in
    grow) expect_in "$how: create stderr" "$err" "size $size -> $((size + 4096)) bytes" ;;
    shrink) expect_in "$how: create stderr" "$err" "size $size -> $((size / 2)) bytes" ;;
    overwrite) expect_in "$how: create stderr" "$err" "mtime changed" ;;
  esac
  [[ -s $tmp/race.out ]] && fail "$how: create printed a summary: $(cat "$tmp/race.out")"
  expect_only race.bin race.out race.err
  rm -f "$in" "$tmp/race.out" "$tmp/race.err"
}

for how in grow shrink overwrite; do
  change_during_create $how
done

# Modes: the snapshot follows the umask and is never readable by more users
# than its input. mode_check UMASK INPUT_MODE EXPECTED_MODE
mode_check() {
  head -c 100000 /dev/urandom >"$tmp/m.bin"
  chmod "$2" "$tmp/m.bin"
  (umask "$1" && "$fl" snapshot create "$tmp/m.bin" "$tmp/m.flsnap" >/dev/null) || fail "create (umask $1, input $2) failed"
  local got
  got=$(stat -c %a "$tmp/m.flsnap")
  [[ $got == "$3" ]] || fail "create with umask $1 of an input with mode $2 gave mode $got, expected $3"
  rm -f "$tmp/m.bin" "$tmp/m.flsnap"
}
mode_check 022 644 644
mode_check 077 644 600
mode_check 022 600 600
mode_check 027 664 640
mode_check 000 755 644
mode_check 000 666 666

# Not a regular file: refused at once, naming the file and what it is (a
# FIFO used to block create, inspect and verify forever).
mkfifo "$tmp/fifo"
for cmd in "snapshot create $tmp/fifo $tmp/f.flsnap" "snapshot inspect $tmp/fifo" "snapshot verify $tmp/fifo"; do
  timeout 20 "$fl" $cmd >"$tmp/o" 2>"$tmp/e"
  rc=$?
  [[ $rc -eq 1 ]] || fail "'faultline $cmd' on a FIFO exited $rc, expected 1 (124: it blocked); stderr: $(cat "$tmp/e")"
  expect_in "'faultline $cmd' stderr" "$(cat "$tmp/e")" "$tmp/fifo is a FIFO, not a regular file"
done
timeout 20 "$fl" snapshot create "$tmp" "$tmp/f.flsnap" >"$tmp/o" 2>"$tmp/e"
[[ $? -eq 1 ]] || fail "create of a directory did not exit 1"
expect_in "create of a directory" "$(cat "$tmp/e")" "$tmp is a directory, not a regular file or block device"
timeout 20 "$fl" snapshot create /dev/zero "$tmp/f.flsnap" >"$tmp/o" 2>"$tmp/e"
[[ $? -eq 1 ]] || fail "create of /dev/zero did not exit 1"
expect_in "create of /dev/zero" "$(cat "$tmp/e")" "/dev/zero is a character device"
rm -f "$tmp/o" "$tmp/e" "$tmp/fifo"
expect_only

# A block device is snapshotted whole (a loop device over a file, where
# losetup works: root, and loop devices in this container).
loopdev=
if [[ $(id -u) -eq 0 ]] && command -v losetup >/dev/null; then
  head -c 1000000 /dev/urandom >"$tmp/disk.img"
  head -c 1097152 /dev/zero >>"$tmp/disk.img"  # 2 MiB in all
  loopdev=$(losetup --find --show "$tmp/disk.img" 2>/dev/null) || loopdev=
fi
if [[ -n $loopdev ]]; then
  trap 'losetup -d "$loopdev"; rm -rf "$tmp"' EXIT
  if "$fl" snapshot create "$loopdev" "$tmp/disk.flsnap" --chunk-size 64K >"$tmp/o" 2>"$tmp/e"; then
    out=$("$fl" snapshot inspect "$tmp/disk.flsnap")
    expect_in "inspect of a block device's snapshot" "$out" "uncompressed size: 2097152"
    expect_in "inspect of a block device's snapshot" "$out" "zero chunks:       16"
    "$fl" snapshot verify "$tmp/disk.flsnap" >/dev/null || fail "verify of a block device's snapshot failed"
  else
    fail "create of block device $loopdev failed: $(cat "$tmp/e")"
  fi
  losetup -d "$loopdev"
  trap 'rm -rf "$tmp"' EXIT
else
  echo "note: no loop device (needs root and losetup); block-device input not checked"
fi

if [[ $failures -ne 0 ]]; then
  echo "snapshot_input_cli: $failures check(s) failed" >&2
  exit 1
fi
echo "snapshot_input_cli: all checks passed"

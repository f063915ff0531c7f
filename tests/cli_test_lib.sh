# SPDX-License-Identifier: Apache-2.0
# Helpers shared by the command-line shell tests (sourced, not run). The
# sourcing script sets $tmp (a scratch directory) and failures=0 first.

fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

# run EXPECTED_STATUS CMD...: runs CMD, keeps stdout/stderr in $out/$err.
run() {
  local want=$1
  shift
  "$@" >"$tmp/out" 2>"$tmp/err"
  local got=$?
  out=$(cat "$tmp/out")
  err=$(cat "$tmp/err")
  if [[ $got -ne $want ]]; then
    fail "'$*' exited $got, expected $want; stdout: $out; stderr: $err"
    return 1
  fi
  return 0
}
expect_in() {  # expect_in WHAT TEXT NEEDLE
  if [[ $2 != *"$3"* ]]; then
    fail "$1 does not contain '$3': $2"
  fi
}

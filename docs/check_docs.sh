#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the API reference and the man pages and checks them (ctest
# docs_build). Usage: check_docs.sh BUILD_DIR DOCS_OUT_DIR
set -uo pipefail
build=$1
out=$2
failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

rm -f "$out/doxygen-warnings.log"
cmake --build "$build" --target docs >"$out/build.log" 2>&1 || fail "building the docs failed: $(tail -20 "$out/build.log")"
[[ -s $out/doxygen-warnings.log ]] && fail "Doxygen warnings: $(cat "$out/doxygen-warnings.log")"

# The reference carries the headers' comments (through doxygen_filter.sh).
html=$out/api/html
grep -q "Reserves address space" "$html/classfaultline_1_1Runtime.html" 2>/dev/null ||
  fail "Runtime's page lacks map()'s comment"
grep -q "0: no budget" "$html/structfaultline_1_1MemoryBudget.html" 2>/dev/null ||
  fail "MemoryBudget's page lacks the members' trailing comments"
grep -q "Where the library" "$html/log_8h.html" 2>/dev/null || fail "log.h's page lacks the file comment"
for h in backend foreign file_backend page_server remote_backend snapshot zstd_snapshot_backend; do
  [[ -f $html/${h//_/__}_8h.html ]] || fail "no reference page for $h.h"  # (Doxygen doubles underscores)
done

# A man page per command, from its --help.
for page in faultline faultline-snapshot faultline-snapshot-create faultline-snapshot-inspect \
  faultline-snapshot-verify faultline-snapshot-flatten faultline-serve faultline-handle; do
  f=$out/man/$page.1
  if [[ ! -s $f ]]; then
    fail "no man page $page.1"
    continue
  fi
  grep -q '^\.SH DESCRIPTION' "$f" || fail "$page.1 has no DESCRIPTION"
  man -l "$f" >/dev/null 2>&1 || [[ ! -x $(command -v man) ]] || fail "man cannot render $page.1"
done
grep -q -- '\\-\\-chunk\\-size' "$out/man/faultline-snapshot-create.1" || fail "faultline-snapshot-create.1 lacks --chunk-size"

if [[ $failures -ne 0 ]]; then
  echo "docs_build: $failures check(s) failed" >&2
  exit 1
fi
echo "docs_build: API reference and man pages built and checked"

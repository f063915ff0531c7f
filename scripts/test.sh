#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The project's test command:
#   1. Release build in build/, all tests with ctest; when run as root, the
#      same tests again as an unprivileged user (faultline-test, created if
#      missing), where the runtime falls back to UFFD_USER_MODE_ONLY;
#   2. ASan+UBSan build in build-asan/ (no bench, no samples), same tests;
#   3. TSan build in build-tsan/, every test that does not fork;
#   (2 and 3 build with -O1 -g1: line numbers for the reports at ~60% of
#   the compile time of -O2 -g; the unprivileged pass, 2 and 3 leave out
#   the tests labelled "packaging", which check what is installed;)
#   4. libFuzzer build in build-fuzz/ (clang), each fuzzer for a bounded
#      time over its checked-in corpus.
# Exits non-zero if a build or any test fails. Works from any directory.
# Environment: JOBS (build parallelism, default $(nproc)),
#              CTEST_JOBS (default 2), SKIP_ASAN=1 / SKIP_TSAN=1 / SKIP_FUZZ=1 skip steps 2 / 3 / 4,
#              SKIP_UNPRIVILEGED=1 skips the second pass of step 1,
#              FAULTLINE_TEST_USER (its user, default faultline-test),
#              FUZZ_SECONDS (per fuzzer, default 20).
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."
root=$PWD
jobs=${JOBS:-$(nproc)}
ctest_jobs=${CTEST_JOBS:-2}

failed=()
names=()
declare -A counts=()

# run_ctest NAME DIR [COMMAND PREFIX...]: runs ctest in DIR (under the
# prefix, e.g. runuser), with the extra ctest arguments in $ctest_args,
# remembers "passed failed skipped".
ctest_args=()
run_ctest() {
  local name=$1 dir=$2 log rc=0
  shift 2
  log=$(mktemp)
  (cd "$dir" && "$@" ctest --output-on-failure --no-tests=error -j"$ctest_jobs" "${ctest_args[@]}") 2>&1 | tee "$log" || rc=$?
  local line total bad skipped
  line=$(grep -Eo '[0-9]+ tests? failed out of [0-9]+' "$log" | tail -1 || true)
  skipped=$(grep -Ec '\*\*\*Skipped|Not Run' "$log" || true)
  if [[ -n $line ]]; then
    bad=${line%% *}
    total=${line##* }
    counts[$name]="$((total - bad - skipped)) $bad $skipped"
  else
    counts[$name]="0 0 0"
  fi
  if ((skipped)); then
    echo "why they were skipped (from their output):"
    awk '/^[0-9]+\/[0-9]+ Testing: / { sub(/^[0-9]+\/[0-9]+ Testing: /, ""); test = $0 }
         /SKIPPED:/ && !/Regex=/ { sub(/^ */, ""); print "  " test ": " $0 }' \
      "$dir/Testing/Temporary/LastTest.log"
  fi
  rm -f "$log"
  names+=("$name")
  if [[ $rc -ne 0 ]]; then
    failed+=("$name tests")
  fi
}

# A section's title, with the minutes since the start (where the time goes).
started=$SECONDS
section() { printf '\n==== %s ==== (at %d:%02d)\n' "$*" $(((SECONDS - started) / 60)) $(((SECONDS - started) % 60)); }

section "Release build (build/)"
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$root/build" -j"$jobs"
section "Release tests"
run_ctest release "$root/build"

# unprivileged_pass: the Release tests again as a user without privilege:
# /dev/userfaultfd is root's and vm.unprivileged_userfaultfd is usually 0,
# so the runtime opens its userfaultfd with UFFD_USER_MODE_ONLY. Tests that
# need privilege report themselves as skipped.
unprivileged_pass() {
  local user=${FAULTLINE_TEST_USER:-faultline-test} home d
  section "Release tests as unprivileged user $user"
  if ! id -u "$user" >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
  fi
  # The user must reach the tree (search permission on every ancestor).
  d=$root
  while [[ $d != / ]]; do
    if ! runuser -u "$user" -- test -x "$d"; then
      echo "giving others search permission (o+x) on $d so that $user reaches the tree"
      chmod o+x "$d"
    fi
    d=$(dirname "$d")
  done
  if ! runuser -u "$user" -- test -r "$root/CMakeLists.txt"; then
    echo "$user cannot read the source tree $root (cloned with a restrictive umask?)" >&2
    failed+=("unprivileged tests")
    return
  fi
  home=$(mktemp -d)
  chown "$user" "$home"
  chown -R "$user" "$root/build"
  run_ctest unprivileged "$root/build" runuser -u "$user" -- env HOME="$home"
  chown -R --reference="$root" "$root/build"
  rm -rf "$home"
}
ctest_args=(-LE packaging)
if [[ $(id -u) -eq 0 && ${SKIP_UNPRIVILEGED:-0} != 1 ]]; then
  unprivileged_pass
fi

# sanitized NAME SANITIZER TITLE: builds in build-NAME with that sanitizer
# (no bench, no samples) and runs the tests there.
sanitized() {
  local name=$1 sanitizer=$2 title=$3 dir="$root/build-$1"
  section "$title build (build-$name/)"
  if cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" \
       -DFAULTLINE_SANITIZE="$sanitizer" -DFAULTLINE_BUILD_BENCH=OFF -DFAULTLINE_BUILD_SAMPLES=OFF &&
     cmake --build "$dir" -j"$jobs"; then
    section "$title tests"
    run_ctest "$name" "$dir"
  else
    failed+=("$title build")
  fi
}

if [[ ${SKIP_ASAN:-0} != 1 ]]; then
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
  sanitized asan address "ASan+UBSan"
fi
if [[ ${SKIP_TSAN:-0} != 1 ]]; then
  # The concurrent parts: tests that fork or measure memory limits skip under TSan.
  export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}
  sanitized tsan thread "TSan"
fi

if [[ ${SKIP_FUZZ:-0} != 1 ]] && compgen -G "$root/fuzz/*_fuzz.cc" >/dev/null; then
  section "libFuzzer build (build-fuzz/)"
  if CC=clang CXX=clang++ cmake -S "$root" -B "$root/build-fuzz" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
       -DFAULTLINE_BUILD_FUZZERS=ON -DFAULTLINE_FUZZ_SECONDS="${FUZZ_SECONDS:-20}" &&
     cmake --build "$root/build-fuzz" -j"$jobs" --target fuzzers; then
    section "Fuzzing"
    run_ctest fuzz "$root/build-fuzz"
  else
    failed+=("libFuzzer build")
  fi
fi

section "Summary"
passed=0 nfail=0 nskip=0
for name in "${names[@]}"; do
  read -r p f k <<<"${counts[$name]}"
  echo "$name: $p passed, $f failed, $k skipped"
  passed=$((passed + p))
  nfail=$((nfail + f))
  nskip=$((nskip + k))
done
if ((${#failed[@]})); then
  echo "FAILED: ${failed[*]}"
fi
echo "total: $passed passed, $nfail failed, $nskip skipped"
((${#failed[@]} == 0))

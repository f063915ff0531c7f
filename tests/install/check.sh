#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Install check: installs a configured faultline build into a temporary
# prefix, then configures, builds and runs the consumer project beside this
# script against it (find_package(faultline) + faultline::faultline).
#
# Usage: tests/install/check.sh BUILD_DIR
# The consumer is built with the build dir's compiler and build type, and
# with its sanitizer flags (FAULTLINE_SANITIZE), which the installed static
# library needs at link time. KEEP_TMP=1 keeps the temporary directory.
set -euo pipefail

here=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
if [[ $# -ne 1 ]]; then
  echo "usage: $0 BUILD_DIR" >&2
  exit 2
fi
build=$(readlink -f "$1")
if [[ ! -f $build/CMakeCache.txt ]]; then
  echo "check.sh: $1 is not a configured CMake build directory" >&2
  exit 2
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/faultline-install-check.XXXXXX")
if [[ ${KEEP_TMP:-0} == 1 ]]; then
  echo "check.sh: keeping $tmp"
else
  trap 'rm -rf "$tmp"' EXIT
fi

cache() { sed -n "s/^$1:[A-Z_]*=//p" "$build/CMakeCache.txt" | head -n 1; }
cxx=$(cache CMAKE_CXX_COMPILER)
build_type=$(cache CMAKE_BUILD_TYPE)
case $(cache FAULTLINE_SANITIZE) in
  address) san="-fsanitize=address,undefined" ;;
  thread) san="-fsanitize=thread" ;;
  *) san="" ;;
esac

# The library must be built before it can be installed (a no-op when it is).
cmake --build "$build" --target faultline
if [[ $(cache FAULTLINE_BUILD_PYTHON) == ON ]]; then
  cmake --build "$build" --target faultline-python
fi
cmake --install "$build" --prefix "$tmp/prefix"

# The Python module, where FAULTLINE_PYTHON_INSTALL_DIR says, importable.
if [[ $(cache FAULTLINE_BUILD_PYTHON) == ON ]]; then
  site=$tmp/prefix/$(cache FAULTLINE_PYTHON_INSTALL_DIR)
  where=$(cd "$tmp" && PYTHONPATH=$site "$(cache Python3_EXECUTABLE)" -c 'import faultline; print(faultline.__file__)')
  if [[ $where != "$site/"* ]]; then
    echo "check.sh: FAIL: the Python module imported from '$where', not from $site" >&2
    exit 1
  fi
fi

cmake -S "$here" -B "$tmp/build" \
  -DCMAKE_PREFIX_PATH="$tmp/prefix" \
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF \
  ${cxx:+-DCMAKE_CXX_COMPILER="$cxx"} \
  ${build_type:+-DCMAKE_BUILD_TYPE="$build_type"} \
  ${san:+-DCMAKE_CXX_FLAGS="$san" -DCMAKE_EXE_LINKER_FLAGS="$san"}

found=$(sed -n 's/^faultline_DIR:[A-Z_]*=//p' "$tmp/build/CMakeCache.txt")
if [[ $found != "$tmp/prefix/"* ]]; then
  echo "check.sh: FAIL: find_package(faultline) found '$found', not the install in $tmp/prefix" >&2
  exit 1
fi

cmake --build "$tmp/build" -j2
"$tmp/build/app"

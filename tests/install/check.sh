#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Install check: installs a configured faultline build into a temporary
# prefix, checks what was installed (shared libraries' SONAMEs and links,
# headers free of private dependencies, pkg-config files) and builds and runs
# the consumer program beside this script (main.cc: maps a file, a snapshot
# and a page server's bytes, checks bytes and fault counts) five ways:
#   cmake-shared       find_package(faultline), faultline::faultline, with
#                      Boost, OpenSSL, PkgConfig, CLI11, nlohmann_json made unfindable
#   cmake-static       find_package(faultline COMPONENTS static), faultline::faultline_static
#   cmake-core-static  find_package(faultline COMPONENTS core static), OpenSSL unfindable
#   pc-shared          c++ main.cc $(pkg-config --cflags --libs faultline)
#   pc-static          c++ main.cc $(pkg-config --cflags faultline) -Wl,-Bstatic $(pkg-config --static --libs faultline) -Wl,-Bdynamic
# and checks with readelf that each program links the libraries it should.
#
# Usage: tests/install/check.sh BUILD_DIR
# The consumers are built with the build dir's compiler and build type, and
# with its sanitizer flags (FAULTLINE_SANITIZE), which the installed libraries
# need at link time. KEEP_TMP=1 keeps the temporary directory.
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

fail() {
  echo "check.sh: FAIL: $*" >&2
  exit 1
}
cache() { sed -n "s/^$1:[A-Z_]*=//p" "$build/CMakeCache.txt" | head -n 1; }
cxx=$(cache CMAKE_CXX_COMPILER)
build_type=$(cache CMAKE_BUILD_TYPE)
version=$(cache CMAKE_PROJECT_VERSION)
case $(cache FAULTLINE_SANITIZE) in
  address) san="-fsanitize=address,undefined" ;;
  thread) san="-fsanitize=thread" ;;
  *) san="" ;;
esac

# The libraries must be built before they can be installed (a no-op when they are).
cmake --build "$build" --target faultline_{core,snapshot,remote}_{static,shared} >"$tmp/build.log" 2>&1 ||
  { cat "$tmp/build.log" >&2; fail "building the libraries in $build failed"; }
prefix=$tmp/prefix
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log"
libdir=$prefix/$(cache CMAKE_INSTALL_LIBDIR)

# Shared libraries: before 1.0 the SONAME carries MAJOR.MINOR (0.2.0 -> .so.0.2).
IFS=. read -r major minor _ <<<"$version"
if [[ $major == 0 ]]; then soversion=$major.$minor; else soversion=$major; fi
parts=(core snapshot remote)
for part in "${parts[@]}"; do
  lib=libfaultline-$part
  [[ -f $libdir/$lib.so.$version && ! -L $libdir/$lib.so.$version ]] || fail "$libdir/$lib.so.$version is not installed"
  [[ -f $libdir/$lib.a ]] || fail "$libdir/$lib.a is not installed"
  soname=$(readelf -d "$libdir/$lib.so.$version" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
  [[ $soname == "$lib.so.$soversion" ]] || fail "$lib.so.$version has SONAME '$soname', expected $lib.so.$soversion"
  [[ $(readlink "$libdir/$lib.so.$soversion") == "$lib.so.$version" ]] || fail "$lib.so.$soversion does not link to $lib.so.$version"
  [[ $(readlink "$libdir/$lib.so") == "$lib.so.$soversion" ]] || fail "$lib.so does not link to $lib.so.$soversion"
done
echo "check.sh: shared libraries libfaultline-{core,snapshot,remote}.so.$version, SONAME .so.$soversion"

# Public headers: none may pull in a dependency's headers (Boost, OpenSSL,
# zstd, liburing, CLI11, nlohmann-json stay inside the library and tools).
if grep -nE '#include *[<"](boost/|openssl/|zstd|liburing|CLI/|nlohmann/)' "$prefix/include/faultline/"*.h; then
  fail "an installed public header includes a dependency's header (above)"
fi
for h in "$prefix/include/faultline/"*.h; do
  name=$(basename "$h")
  [[ $name == faultline.h ]] && continue
  grep -q "#include \"faultline/$name\"" "$prefix/include/faultline/faultline.h" ||
    fail "faultline/faultline.h does not include faultline/$name"
done

# needed PROGRAM: the shared libraries PROGRAM links, one a line.
needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }

# run NAME PROGRAM: runs PROGRAM on a directory of its own.
run() {
  mkdir -p "$tmp/run-$1"
  echo "check.sh: $1:"
  "$2" "$tmp/run-$1" || fail "$1: the program failed"
}

# cmake_consumer NAME KIND [CMAKE ARGS...]: configures, builds and runs the
# consumer project with CONSUMER=KIND.
cmake_consumer() {
  local name=$1 kind=$2 dir=$tmp/$1
  shift 2
  cmake -S "$here" -B "$dir" -DCONSUMER="$kind" \
    -DCMAKE_PREFIX_PATH="$prefix" \
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF \
    ${cxx:+-DCMAKE_CXX_COMPILER="$cxx"} \
    ${build_type:+-DCMAKE_BUILD_TYPE="$build_type"} \
    ${san:+-DCMAKE_CXX_FLAGS="$san" -DCMAKE_EXE_LINKER_FLAGS="$san"} \
    "$@" >"$dir.log" 2>&1 || { cat "$dir.log" >&2; fail "$name: configuring the consumer failed"; }
  local found
  found=$(sed -n 's/^faultline_DIR:[A-Z_]*=//p' "$dir/CMakeCache.txt")
  [[ $found == "$prefix/"* ]] || fail "$name: find_package(faultline) found '$found', not the install in $prefix"
  cmake --build "$dir" -j2 >>"$dir.log" 2>&1 || { cat "$dir.log" >&2; fail "$name: building the consumer failed"; }
  run "$name" "$dir/app"
}

# A shared-library user needs none of the build's dependencies.
no_deps=()
for pkg in Boost OpenSSL PkgConfig CLI11 nlohmann_json ZLIB; do
  no_deps+=("-DCMAKE_DISABLE_FIND_PACKAGE_$pkg=ON")
done
cmake_consumer cmake-shared shared "${no_deps[@]}"
for part in "${parts[@]}"; do
  needed "$tmp/cmake-shared/app" | grep -qx "libfaultline-$part.so.$soversion" ||
    fail "cmake-shared: app does not link libfaultline-$part.so.$soversion: $(needed "$tmp/cmake-shared/app" | tr '\n' ' ')"
done

cmake_consumer cmake-static static
cmake_consumer cmake-core-static core-static -DCMAKE_DISABLE_FIND_PACKAGE_OpenSSL=ON
for name in cmake-static cmake-core-static; do
  if needed "$tmp/$name/app" | grep -E '^libfaultline'; then
    fail "$name: app links a shared libfaultline (above), expected the static libraries"
  fi
done

# pkg-config, with nothing but a compiler command line.
export PKG_CONFIG_PATH=$libdir/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
[[ $(pkg-config --modversion faultline) == "$version" ]] || fail "pkg-config --modversion faultline is not $version"
for part in "${parts[@]}"; do
  [[ $(pkg-config --modversion "faultline-$part") == "$version" ]] || fail "pkg-config faultline-$part is not $version"
done
static_libs=$(pkg-config --static --libs faultline)
for lib in -lfaultline-core -lfaultline-snapshot -lfaultline-remote -luring -lzstd -lcrypto; do
  [[ " $static_libs " == *" $lib "* ]] || fail "pkg-config --static --libs faultline lacks $lib: $static_libs"
done
[[ " $(pkg-config --libs faultline) " != *" -lcrypto "* ]] || fail "pkg-config --libs faultline (shared) lists libcrypto"
[[ " $(pkg-config --static --libs faultline-core) " != *" -lzstd "* ]] || fail "faultline-core.pc lists libzstd"
cxxflags=(-std=c++20 -Wall -Wextra -O2 ${san:+"$san"})
# shellcheck disable=SC2046  # pkg-config output is meant to be split
"$cxx" "${cxxflags[@]}" "$here/main.cc" -o "$tmp/pc-shared" $(pkg-config --cflags --libs faultline) ||
  fail "pc-shared: compiling with pkg-config --cflags --libs faultline failed"
for part in "${parts[@]}"; do
  needed "$tmp/pc-shared" | grep -qx "libfaultline-$part.so.$soversion" || fail "pc-shared: does not link libfaultline-$part.so.$soversion"
done
LD_LIBRARY_PATH=$libdir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} run pc-shared "$tmp/pc-shared"
# shellcheck disable=SC2046
"$cxx" "${cxxflags[@]}" "$here/main.cc" -o "$tmp/pc-static" $(pkg-config --cflags faultline) \
  -Wl,-Bstatic $(pkg-config --static --libs faultline) -Wl,-Bdynamic ||
  fail "pc-static: compiling with pkg-config --static --libs faultline failed"
if needed "$tmp/pc-static" | grep -E '^(libfaultline|liburing|libzstd|libcrypto)'; then
  fail "pc-static: links shared libraries (above) it should have linked statically"
fi
run pc-static "$tmp/pc-static"

# Man pages, when the build made them (help2man found).
if [[ -n $(cache FAULTLINE_HELP2MAN) && $(cache FAULTLINE_HELP2MAN) != *NOTFOUND ]]; then
  for page in faultline faultline-serve faultline-snapshot faultline-bench; do
    [[ -s $prefix/share/man/man1/$page.1 ]] || fail "man page $page.1 is not installed in $prefix/share/man/man1"
  done
  echo "check.sh: man pages installed"
fi
echo "check.sh: ok"

#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Install check: installs a configured faultline build into a temporary
# prefix, checks what was installed (shared libraries' SONAMEs and links,
# headers free of private dependencies, the CMake package and pkg-config
# files, the installed programs) and builds and runs
# the consumer program beside this script (main.cc: maps a file, a snapshot
# and a page server's bytes, checks bytes and fault counts) five ways:
#   cmake-shared       find_package(faultline), faultline::faultline, with
#                      Boost, OpenSSL, PkgConfig, CLI11, nlohmann_json made unfindable
#                      and no header of a dependency reached by the compile
#   cmake-static       find_package(faultline COMPONENTS static), faultline::faultline_static
#   cmake-core-static  find_package(faultline COMPONENTS core static), OpenSSL unfindable
#   pc-shared          c++ main.cc $(pkg-config --cflags --libs faultline)
#   pc-static          c++ main.cc $(pkg-config --cflags faultline) -Wl,-Bstatic $(pkg-config --static --libs faultline) -Wl,-Bdynamic
# and checks with readelf that each program links the libraries it should
# (shared programs run from the install, through the RUNPATH CMake gives
# them or LD_LIBRARY_PATH for the pkg-config one).
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

# What is installed must be built first (a no-op when it is): the libraries
# and the programs the build has.
targets=(faultline_{core,snapshot,remote}_{static,shared})
[[ $(cache FAULTLINE_BUILD_TOOLS) == ON ]] && targets+=(faultline-cli)
[[ $(cache FAULTLINE_BUILD_BENCH) == ON ]] && targets+=(faultline-bench)
[[ $(cache FAULTLINE_BUILD_PYTHON) == ON ]] && targets+=(faultline-python)
cmake --build "$build" --target "${targets[@]}" >"$tmp/build.log" 2>&1 ||
  { cat "$tmp/build.log" >&2; fail "building the libraries in $build failed"; }
prefix=$tmp/prefix
cmake --install "$build" --prefix "$prefix" >"$tmp/install.log"
libdir=$prefix/$(cache CMAKE_INSTALL_LIBDIR)

# The Python module, where FAULTLINE_PYTHON_INSTALL_DIR says, importable.
if [[ $(cache FAULTLINE_BUILD_PYTHON) == ON ]]; then
  site=$prefix/$(cache FAULTLINE_PYTHON_INSTALL_DIR)
  py=$(cache Python3_EXECUTABLE)
  [[ -n $py ]] || py=$(cache _Python3_EXECUTABLE)  # (a build dir configured by an older CMakeLists)
  where=$(cd "$tmp" && PYTHONPATH=$site "$py" -c 'import faultline; print(faultline.__file__)')
  [[ $where == "$site/"* ]] || fail "the Python module imported from '$where', not from $site"
fi

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

# needed FILE: the shared libraries FILE links (DT_NEEDED), one a line.
needed() { readelf -d "$1" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'; }
# links FILE LIB: FILE has a DT_NEEDED entry LIB.so.<anything>.
links() { needed "$1" | grep -q "^$2\.so\."; }
# Each part links its own dependencies and no other part's.
so() { echo "$libdir/libfaultline-$1.so.$version"; }
links "$(so core)" liburing || fail "libfaultline-core does not link liburing"
links "$(so snapshot)" libzstd || fail "libfaultline-snapshot does not link libzstd"
links "$(so snapshot)" libcrypto || fail "libfaultline-snapshot does not link libcrypto (SHA-256 layer ids)"
links "$(so remote)" libcrypto || fail "libfaultline-remote does not link libcrypto"
for part in snapshot remote; do
  links "$(so "$part")" libfaultline-core || fail "libfaultline-$part does not link libfaultline-core"
done
for bad in "core libzstd" "core libcrypto" "core libfaultline-snapshot" "core libfaultline-remote" \
  "remote libzstd"; do
  read -r part lib <<<"$bad"
  ! links "$(so "$part")" "$lib" || fail "libfaultline-$part links $lib, which is another part's dependency"
done

# The CMake package: the shared targets (faultline-targets.cmake, always
# loaded) name no dependency's target, and the config looks one up only
# under the `static` component.
cmakedir=$libdir/cmake/faultline
if grep -nE '(PkgConfig|OpenSSL|Boost|ZSTD|zstd)::' "$cmakedir/faultline-targets.cmake"; then
  fail "the shared targets (faultline-targets.cmake) refer to a dependency's target (above)"
fi
awk '/^if\(_faultline_static\)/ { inside = 1 } !inside && !/^ *#/ && /find_dependency|pkg_check_modules|find_package/' \
  "$cmakedir/faultlineConfig.cmake" | grep -v 'find_dependency(Threads)' &&
  fail "faultlineConfig.cmake looks up a dependency outside the static component (above)"

# The installed programs run, statically linked to libfaultline.
if [[ -x $prefix/bin/faultline ]]; then
  "$prefix/bin/faultline" --version | grep -qF "$version" || fail "faultline --version does not print $version"
fi
if [[ -x $prefix/bin/faultline-bench ]]; then
  "$prefix/bin/faultline-bench" --help >/dev/null || fail "faultline-bench --help failed"
fi
for prog in faultline faultline-bench; do
  [[ -x $prefix/bin/$prog ]] || continue
  if needed "$prefix/bin/$prog" | grep -E '^libfaultline'; then
    fail "the installed $prog links a shared libfaultline (above)"
  fi
done

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

# no_dependency_headers NAME DEPFILE...: the compiles that wrote DEPFILEs
# (gcc -MD) read no header of a library dependency: an application sees
# only faultline's headers and the standard library.
no_dependency_headers() {
  local name=$1
  shift
  [[ $# -gt 0 ]] || fail "$name: no dependency file to check"
  if grep -hoE '[^ ]*(/(boost|openssl|CLI|nlohmann|liburing)/|/zstd(_errors)?\.h|/liburing\.h)[^ ]*' "$@" | sort -u | grep .; then
    fail "$name: compiling against faultline read a dependency's headers (above)"
  fi
}

# A shared-library user needs none of the build's dependencies.
no_deps=()
for pkg in Boost OpenSSL PkgConfig CLI11 nlohmann_json ZLIB; do
  no_deps+=("-DCMAKE_DISABLE_FIND_PACKAGE_$pkg=ON")
done
cmake_consumer cmake-shared shared "${no_deps[@]}"
mapfile -t depfiles < <(find "$tmp/cmake-shared/CMakeFiles" -name '*.o.d')
no_dependency_headers cmake-shared "${depfiles[@]}"
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
"$cxx" "${cxxflags[@]}" -MD -MF "$tmp/pc-shared.d" "$here/main.cc" -o "$tmp/pc-shared" $(pkg-config --cflags --libs faultline) ||
  fail "pc-shared: compiling with pkg-config --cflags --libs faultline failed"
no_dependency_headers pc-shared "$tmp/pc-shared.d"
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

echo "check.sh: ok"

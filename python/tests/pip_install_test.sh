#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# pip_install_test.sh PYTHON SOURCE_DIR: `pip install --no-build-isolation`
# of a copy of the source tree into a temporary --target, with nothing but
# the system's packages (--no-index: no download is even tried), then the
# installed module maps a file and reads it back. Exit 77 (ctest: skipped)
# if PYTHON has no pip.
set -uo pipefail
py=$1
src=$2
if ! "$py" -m pip --version >/dev/null 2>&1; then
  echo "SKIP: $py has no pip (Debian: python3-pip); pip install of the source tree not tested"
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The tracked files (and new ones not ignored), not the build trees.
mkdir "$tmp/src"
if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
  (cd "$src" && git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf -) | tar -C "$tmp/src" -xf -
else
  tar -C "$src" --exclude='./build*' --exclude=./out -cf - . | tar -C "$tmp/src" -xf -
fi

export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}
# ccache where its cache is writable (not for a user without a home).
if command -v ccache >/dev/null && cache=$(ccache -k cache_dir 2>/dev/null) &&
  mkdir -p "$cache" 2>/dev/null && [[ -w $cache ]]; then
  # Paths relative to $tmp: the next run of this test hits the cache.
  export CMAKE_CXX_COMPILER_LAUNCHER=ccache CCACHE_BASEDIR=$tmp CCACHE_NOHASHDIR=1
fi
if ! "$py" -m pip install --no-build-isolation --no-deps --no-index --no-cache-dir --target "$tmp/site" "$tmp/src" >"$tmp/pip.log" 2>&1; then
  echo "FAIL: pip install of the source tree failed:" >&2
  tail -40 "$tmp/pip.log" >&2
  exit 1
fi

head -c 3000000 /dev/urandom >"$tmp/data.bin"
cd "$tmp"  # not the source tree: the module must come from site/
PYTHONPATH=$tmp/site "$py" - "$tmp/site" "$tmp/data.bin" "$tmp/src/CMakeLists.txt" <<'PY'
import os, re, sys
site, data, cmakelists = sys.argv[1:]
import faultline
if not faultline.__file__.startswith(site + os.sep):
    sys.exit("FAIL: faultline imported from %s, not from %s" % (faultline.__file__, site))
version = re.search(r"project\(faultline VERSION ([0-9.]+)", open(cmakelists).read()).group(1)
if faultline.__version__ != version:
    sys.exit("FAIL: faultline.__version__ is %s, CMakeLists.txt says %s" % (faultline.__version__, version))
if not os.path.isdir(os.path.join(site, "faultline-%s.dist-info" % version)):
    sys.exit("FAIL: no faultline-%s.dist-info in %s: %s" % (version, site, os.listdir(site)))
with faultline.Runtime().map_file(data) as region:
    view = memoryview(region)
    same = view.tobytes() == open(data, "rb").read()
    faults = region.stats()["faults"]
    view.release()
if not same:
    sys.exit("FAIL: the installed module's region differs from the file")
if faults == 0:
    sys.exit("FAIL: the region was read without a fault")
print("pip-installed faultline %s from %s: %d bytes read in %d faults" % (version, site, os.path.getsize(data), faults))
PY

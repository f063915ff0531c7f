#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds faultline (Release, in build/) and runs the lazy_dataset sample with
# its defaults: a 1 GiB data set in $TMPDIR/faultline-lazy-dataset (generated
# on the first run, reused afterwards), queried through faultline and through
# plain mmap. Extra arguments go to lazy_dataset (try --help).
#
# Before each run the sample evicts the data file's pages from the page cache
# (posix_fadvise DONTNEED): both runs start cold, and nothing else on the
# machine is disturbed. `scripts/demo.sh --cold` drops the whole page cache
# instead (root). Installs missing build dependencies with apt-get (needs
# root). As root faultline can open /dev/userfaultfd; without root it runs in
# user-mode-only userfaultfd mode.
set -euo pipefail

cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

packages=(build-essential cmake pkg-config liburing-dev libzstd-dev libboost-dev libssl-dev catch2 libcli11-dev
  nlohmann-json3-dev zstd)
missing=()
for p in "${packages[@]}"; do
  status=$(dpkg -s "$p" 2>/dev/null || true)
  if [[ $status != *"Status: install ok installed"* ]]; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "demo.sh: missing packages: ${missing[*]}" >&2
    echo "demo.sh: installing them needs root; run this script as root, or first:" >&2
    echo "    sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "demo.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}"
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DFAULTLINE_BUILD_SAMPLES=ON
cmake --build build -j"$(nproc)" --target lazy_dataset

exec build/samples/lazy_dataset "$@"

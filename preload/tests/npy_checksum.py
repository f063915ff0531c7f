# SPDX-License-Identifier: Apache-2.0
"""npy_checksum.py MODE PATH: what a numpy user does with a large .npy file.

create PATH   writes a float64 array of 48 MiB (deterministic values)
sum PATH      numpy.load(PATH, mmap_mode='r'), then checksums of all of it
              and of a strided sample (the same output with or without the
              preload shim, which the test compares)
fork PATH     as sum, in a child of os.fork() after the parent read half
"""
import hashlib
import os
import sys

import numpy as np

ROWS, COLS = 1536, 4096  # 48 MiB of float64


def report(a):
    digest = hashlib.sha256(memoryview(np.ascontiguousarray(a)).cast("B")).hexdigest()
    return "shape %s sum %.6f sample %.6f sha256 %s" % (a.shape, float(a.sum()), float(a[::7, ::13].sum()), digest)


def main():
    mode, path = sys.argv[1], sys.argv[2]
    if mode == "create":
        a = np.arange(ROWS * COLS, dtype=np.float64).reshape(ROWS, COLS)
        np.save(path, np.sin(a) * 1000.0)
        return
    a = np.load(path, mmap_mode="r")
    if not isinstance(a, np.memmap):
        sys.exit("numpy.load did not return a memmap")
    if mode == "sum":
        print(report(a))
    elif mode == "fork":
        half = float(a[: ROWS // 2].sum())
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            print("child", report(a), flush=True)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            sys.exit("the child failed: status %d" % status)
        print("parent", report(a), "half %.6f" % half)
    else:
        sys.exit("unknown mode " + mode)


main()

#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
# python_dataset: a file of fixed-size records, larger than what is read,
# mapped with faultline and viewed as a numpy record array. Only the pages
# the slices touch are loaded.
#
# usage: python_dataset.py [FILE]   (without FILE: writes a 64 MiB one in a
#                                    new directory under $TMPDIR, removed after)
import os
import sys
import tempfile

import numpy as np

import faultline

RECORD = np.dtype([("id", "<u8"), ("values", "<f4", 62)])  # 256 bytes


def make_dataset(path, count):
    ids = np.arange(count, dtype=np.uint64)
    records = np.zeros(count, dtype=RECORD)
    records["id"] = ids
    records["values"] = (ids[:, None] % 1000).astype(np.float32)
    records.tofile(path)


def main():
    if len(sys.argv) > 1:
        show(sys.argv[1])
        return
    # A directory of our own: a fixed name in /tmp could be another user's file.
    with tempfile.TemporaryDirectory(prefix="faultline-python-dataset-") as tmp:
        path = os.path.join(tmp, "records.bin")
        make_dataset(path, 256 * 1024)  # 64 MiB
        show(path)


def show(path):
    size = os.path.getsize(path)

    runtime = faultline.Runtime()
    with runtime.map_file(path, fill_size=64 * 1024) as region:
        records = np.frombuffer(region, dtype=RECORD, count=size // RECORD.itemsize)
        for start in (0, len(records) // 2, len(records) - 100):
            batch = records[start : start + 100]
            assert (batch["id"] == np.arange(start, start + 100)).all(), "wrong record"
            print(f"records {start}..{start + 99}: mean value {batch['values'].mean():.2f}")
        del records, batch  # views must go before the region closes

        stats = region.stats()
        print(f"file {size >> 20} MiB, loaded {stats['bytes_read'] >> 10} KiB "
              f"in {stats['faults']} faults ({100 * stats['bytes_read'] / size:.2f}%)")


if __name__ == "__main__":
    main()

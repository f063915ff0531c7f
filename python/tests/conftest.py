# SPDX-License-Identifier: Apache-2.0
# Shared fixtures of the Python tests: a runtime, a data file with a
# deterministic pattern, and polling for the statistics (a fault is counted
# just after its thread is woken, so a count may lag for a moment).
import time

import numpy as np
import pytest

import faultline

# 6 MiB and a bit: the tail is not a whole page.
DATA_SIZE = 6 * 1024 * 1024 + 1234


def pattern(size):
    """Bytes whose every 8-byte word differs from the next: misplaced chunks show."""
    words = np.arange((size + 7) // 8, dtype=np.uint64)
    words = (words * np.uint64(0x9E3779B97F4A7C15)) ^ (words >> np.uint64(3))
    return words.view(np.uint8)[:size].copy()


def wait_for(predicate, timeout=60.0):
    """Polls predicate() until it is true; fails after a generous timeout."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition not met within %.0f s" % timeout)
        time.sleep(0.01)


@pytest.fixture
def runtime():
    return faultline.Runtime()


@pytest.fixture(scope="session")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "pattern.bin"
    pattern(DATA_SIZE).tofile(path)
    return path


@pytest.fixture(scope="session")
def expected(data_file):
    return np.fromfile(data_file, dtype=np.uint8)

# SPDX-License-Identifier: Apache-2.0
# Python threads touching one region at once: every sum must be the file's,
# with and without a memory budget forcing evictions and refaults while
# they read.
import threading

import numpy as np
import pytest

from conftest import wait_for


@pytest.mark.parametrize("budget", [0, 1024 * 1024])
def test_threads_sum_one_region(runtime, data_file, expected, budget):
    fill = 64 * 1024
    words = expected[: len(expected) // 8 * 8].view(np.uint64)
    chunk_words = fill // 8
    chunks = len(words) // chunk_words
    want = [int(words[i * chunk_words : (i + 1) * chunk_words].sum()) for i in range(chunks)]

    with runtime.map_file(str(data_file), fill_size=fill, budget_bytes=budget) as region:
        view = np.frombuffer(region, dtype=np.uint64, count=len(words))
        errors = []

        def reader(seed):
            order = np.random.default_rng(seed).permutation(chunks)
            for _ in range(3):
                for i in order:
                    got = int(view[i * chunk_words : (i + 1) * chunk_words].sum())
                    if got != want[i]:
                        errors.append((seed, int(i), got, want[i]))

        threads = [threading.Thread(target=reader, args=(seed,)) for seed in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        stats = region.stats()
        if budget:
            wait_for(lambda: region.stats()["evicted_chunks"] > 0)
            assert stats["resident_bytes"] <= budget  # a placement above the budget waits for evictions
        else:
            assert stats["evicted_chunks"] == 0
        del view

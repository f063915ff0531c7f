# SPDX-License-Identifier: Apache-2.0
# Region.take_dirty(): the pages written since the previous call, as
# (offset, length) tuples (faultline/dirty_log.h).
import shutil

import numpy as np
import pytest

import faultline

from conftest import DATA_SIZE

PAGE = 4096


def need_wp_async(runtime):
    if "WP_ASYNC" not in runtime.mode:
        pytest.fail("dirty tracking needs WP_ASYNC (Linux 6.7+); mode: " + runtime.mode)


def test_take_dirty_reports_written_pages_once(runtime, data_file, expected):
    need_wp_async(runtime)
    with runtime.map_file(str(data_file), writable=True, track_dirty=True) as region:
        view = np.frombuffer(region, dtype=np.uint8)
        assert region.take_dirty() == []
        np.testing.assert_array_equal(view[: 8 * PAGE], expected[: 8 * PAGE])  # reads dirty nothing
        assert region.take_dirty() == []
        last = (DATA_SIZE - 1) // PAGE * PAGE
        view[10] = 1                 # page 0
        view[5 * PAGE + 7] = 2       # pages 5 and 6: one run
        view[7 * PAGE - 1] = 3
        view[DATA_SIZE - 1] = 4      # the last page, which the region's length cuts short
        assert region.take_dirty() == [(0, PAGE), (5 * PAGE, 2 * PAGE), (last, DATA_SIZE - last)]
        assert region.take_dirty() == []
        view[6 * PAGE] = 5
        assert region.take_dirty() == [(6 * PAGE, PAGE)]
        # The writes are in memory, the rest is the file's.
        assert (view[10], view[5 * PAGE + 7], view[6 * PAGE], view[DATA_SIZE - 1]) == (1, 2, 5, 4)
        np.testing.assert_array_equal(view[PAGE : 5 * PAGE], expected[PAGE : 5 * PAGE])
        del view


def test_take_dirty_errors(runtime, data_file, tmp_path):
    need_wp_async(runtime)
    with runtime.map_file(str(data_file)) as region:
        with pytest.raises(faultline.Error, match="mapped without RegionOptions.track_dirty"):
            region.take_dirty()
    copy = tmp_path / "copy.bin"
    shutil.copyfile(data_file, copy)
    with runtime.map_file(str(copy), writable=True, write_back=True) as region:
        with pytest.raises(faultline.Error, match="write-back region; its dirty log belongs to flush"):
            region.take_dirty()
    with pytest.raises(faultline.Error, match="track_dirty = true needs RegionOptions.writable = true"):
        runtime.map_file(str(data_file), track_dirty=True)
    region = runtime.map_file(str(data_file), writable=True, track_dirty=True)
    region.close()
    with pytest.raises(ValueError, match="closed"):
        region.take_dirty()

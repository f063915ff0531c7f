# SPDX-License-Identifier: Apache-2.0
# A Region mapped from a file: contents, options, errors, the calls around
# it and the lifetime of its buffer views.
import ctypes
import gc
import shutil

import numpy as np
import pytest

import faultline
from conftest import DATA_SIZE, wait_for


def test_contents_match_the_file_byte_for_byte(runtime, data_file, expected):
    with runtime.map_file(str(data_file)) as region:
        assert len(region) == DATA_SIZE
        view = np.frombuffer(region, dtype=np.uint8)
        assert not view.flags.writeable
        np.testing.assert_array_equal(view, expected)
        # Typed views see the same bytes: zero-copy, not a copy per dtype.
        words = np.frombuffer(region, dtype=np.uint64, count=DATA_SIZE // 8)
        np.testing.assert_array_equal(words, expected[: DATA_SIZE // 8 * 8].view(np.uint64))
        del view, words


def test_offset_and_length(runtime, data_file, expected):
    with runtime.map_file(str(data_file), offset=65536, length=100000) as region:
        assert len(region) == 100000
        with memoryview(region) as view:
            assert view.readonly and view.nbytes == 100000
            assert bytes(view) == expected[65536 : 65536 + 100000].tobytes()


def test_fill_size_shows_in_stats(runtime, data_file):
    for fill in (4096, 256 * 1024):
        with runtime.map_file(str(data_file), fill_size=fill, readahead=False) as region:
            with memoryview(region) as view:
                view[fill * 3 + 17]  # one byte: one fault, one fill
            # faults is counted before the bytes: wait for both.
            wait_for(lambda: region.stats()["faults"] >= 1 and region.stats()["bytes_installed"] >= fill)
            # The kernel may deliver one access's fault twice (a retried
            # fault on a loaded machine): the fill is what must be single.
            assert 1 <= region.stats()["faults"] <= 2
            stats = region.stats()
            assert stats["bytes_installed"] == fill
            assert stats["bytes_read"] == fill
            assert stats["resident_bytes"] == fill


def test_stats_dict_has_every_counter(runtime, data_file):
    with runtime.map_file(str(data_file)) as region:
        keys = list(region.stats())
    assert keys == [
        "faults", "pages_installed", "bytes_installed", "bytes_read", "zero_pages",
        "readahead_chunks", "readahead_hits", "readahead_bytes", "readahead_used_bytes",
        "readahead_wasted_bytes", "prefetch_chunks", "prefetch_hits", "raised_reads", "retries",
        "errors", "resident_bytes", "evicted_chunks", "evicted_bytes", "refaults",
        "removes", "unmaps", "remaps", "forks", "wait_ns",
        "latency_count", "latency_p50_ns", "latency_p90_ns", "latency_p99_ns", "latency_max_ns",
    ]
    assert list(runtime.stats()) == keys
    assert all(isinstance(v, int) for v in runtime.stats().values())


def test_bad_options_raise_the_librarys_message(runtime, data_file):
    with pytest.raises(faultline.Error, match=r"RegionOptions\.fill_size = 1000: must be a power of two"):
        runtime.map_file(str(data_file), fill_size=1000)
    with pytest.raises(faultline.Error, match=r"RegionOptions\.offset"):
        runtime.map_file(str(data_file), offset=DATA_SIZE + 4096)
    with pytest.raises(ValueError, match="eviction must be 'adaptive' or 'fifo', not 'lru'"):
        runtime.map_file(str(data_file), eviction="lru")
    with pytest.raises(TypeError, match="unknown keyword arguments bogus, fill"):
        runtime.map_file(str(data_file), bogus=1, fill=2)
    with pytest.raises(TypeError, match="fill_size must be a non-negative int in range, not int -1"):
        runtime.map_file(str(data_file), fill_size=-1)
    with pytest.raises(TypeError, match="readahead must be a bool, not str 'yes'"):
        runtime.map_file(str(data_file), readahead="yes")
    with pytest.raises(TypeError, match=r"faultline\.Runtime\(\): unknown keyword argument staging"):
        faultline.Runtime(staging=1)
    with pytest.raises(faultline.Error, match="RuntimeOptions.read_retries = -1: must be >= 0"):
        faultline.Runtime(read_retries=-1)


def test_missing_file_raises_with_path_and_errno(runtime, tmp_path):
    missing = tmp_path / "missing.bin"
    with pytest.raises(faultline.Error, match=str(missing)) as info:
        runtime.map_file(str(missing))
    assert info.value.errno == 2  # ENOENT


def test_writable_region_keeps_writes_in_memory(runtime, data_file, expected):
    with runtime.map_file(str(data_file), writable=True) as region:
        view = np.frombuffer(region, dtype=np.uint8)
        assert view.flags.writeable
        view[:4096] = 7
        assert (view[:4096] == 7).all()
        np.testing.assert_array_equal(view[4096:], expected[4096:])
        del view
    np.testing.assert_array_equal(np.fromfile(data_file, dtype=np.uint8), expected)


def test_read_only_region_refuses_a_writable_view(runtime, data_file):
    with runtime.map_file(str(data_file)) as region:
        with pytest.raises(TypeError, match="not writable"):
            (ctypes.c_char * 4096).from_buffer(region)  # asks for a writable buffer
        with memoryview(region) as view:
            with pytest.raises(TypeError, match="read-only"):
                view[0] = 1
        with pytest.raises(ValueError, match="WRITEABLE"):
            np.frombuffer(region, dtype=np.uint8).setflags(write=True)


def test_write_back_flush_writes_the_file(runtime, data_file, expected, tmp_path):
    if "WP_ASYNC" not in runtime.mode:
        pytest.fail("write-back needs WP_ASYNC (Linux 6.7+); mode: " + runtime.mode)
    copy = tmp_path / "copy.bin"
    shutil.copyfile(data_file, copy)
    with runtime.map_file(str(copy), writable=True, write_back=True) as region:
        view = np.frombuffer(region, dtype=np.uint8)
        view[100000:100010] = np.arange(10, dtype=np.uint8)
        region.flush()
        on_disk = np.fromfile(copy, dtype=np.uint8)
        assert list(on_disk[100000:100010]) == list(range(10))
        np.testing.assert_array_equal(on_disk[:100000], expected[:100000])
        del view
    with pytest.raises(faultline.Error, match="write_back"):
        with runtime.map_file(str(data_file)) as region:
            region.flush()


def test_prefetch_drain_and_touched_chunks(runtime, data_file, expected):
    fill = 64 * 1024
    with runtime.map_file(str(data_file), fill_size=fill, record_touches=True) as region:
        with memoryview(region) as view:
            view[5 * fill], view[2 * fill + 1], view[5 * fill + 2]
        assert region.touched_chunks() == [5 * fill, 2 * fill]
        region.prefetch(10 * fill, 2 * fill)
        region.prefetch_chunks([20 * fill, 30 * fill])
        wait_for(lambda: region.stats()["prefetch_chunks"] >= 4)
        with pytest.raises(faultline.Error, match=r"offsets\[1\] = \d+ is past the end of the region"):
            region.prefetch_chunks([0, DATA_SIZE + fill])
        region.drain()
        whole = DATA_SIZE // 4096 * 4096
        wait_for(lambda: region.stats()["resident_bytes"] >= whole)
        faults = region.stats()["faults"]
        np.testing.assert_array_equal(np.frombuffer(region, dtype=np.uint8), expected)
        assert region.stats()["faults"] == faults  # all there already: no fault
    with runtime.map_file(str(data_file)) as region:
        with pytest.raises(faultline.Error, match="record_touches"):
            region.touched_chunks()


def test_close_with_views_raises_and_views_stay_valid(runtime, data_file, expected):
    region = runtime.map_file(str(data_file))
    view = np.frombuffer(region, dtype=np.uint8)
    with pytest.raises(BufferError, match="1 buffer view"):
        region.close()
    assert not region.closed
    np.testing.assert_array_equal(view, expected)  # still mapped, still right
    del view
    region.close()
    assert region.closed and len(region) == 0
    region.close()  # twice is fine
    with pytest.raises(BufferError, match="closed"):
        memoryview(region)
    with pytest.raises(ValueError, match="closed"):
        region.stats()
    with pytest.raises(ValueError, match="closed"):
        region.prefetch(0, 4096)


def test_context_manager_exit_with_a_live_view_raises(runtime, data_file, expected):
    with pytest.raises(BufferError):
        with runtime.map_file(str(data_file)) as region:
            view = np.frombuffer(region, dtype=np.uint8)
    np.testing.assert_array_equal(view, expected)  # the region stays open
    del view
    region.close()


def test_a_view_keeps_its_region_and_runtime_alive(data_file, expected):
    view = np.frombuffer(faultline.Runtime().map_file(str(data_file)), dtype=np.uint8)
    gc.collect()  # no Python reference to the region or the runtime is left
    np.testing.assert_array_equal(view, expected)
    del view
    gc.collect()

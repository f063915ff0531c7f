# SPDX-License-Identifier: Apache-2.0
# Regions from a zstd snapshot and from a `faultline serve` process.
import os
import signal
import subprocess

import numpy as np
import pytest

import faultline


def test_snapshot_round_trip(runtime, data_file, expected, tmp_path):
    snapshot = tmp_path / "pattern.flsnap"
    faultline.write_snapshot(str(data_file), str(snapshot), chunk_size=128 * 1024)
    with runtime.map_snapshot(str(snapshot), fill_size=128 * 1024) as region:
        assert len(region) == len(expected)
        view = np.frombuffer(region, dtype=np.uint8)
        np.testing.assert_array_equal(view, expected)
        del view


def test_snapshot_errors_name_the_file(runtime, data_file, tmp_path):
    with pytest.raises(faultline.Error, match=str(data_file)):
        runtime.map_snapshot(str(data_file))  # not a snapshot
    with pytest.raises(faultline.Error, match="chunk_size"):
        faultline.write_snapshot(str(data_file), str(tmp_path / "x"), chunk_size=1000)
    assert not (tmp_path / "x").exists()


class Server:
    """`faultline serve` on a free port, stopped with SIGTERM."""

    def __init__(self, cli, path, *args):
        self.process = subprocess.Popen(
            [cli, "serve", "--listen", "127.0.0.1:0", *args, str(path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.address = self.process.stdout.readline().strip()  # printed once bound
        if not self.address:
            self.process.wait(timeout=60)
            pytest.fail("faultline serve failed: " + self.process.stderr.read())

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        _, err = self.process.communicate(timeout=60)
        assert self.process.returncode == 0, err
        return err


@pytest.fixture
def cli():
    path = os.environ.get("FAULTLINE_CLI")
    if not path:
        pytest.skip("FAULTLINE_CLI (the faultline binary) not set: ctest sets it when the tools are built")
    return path


def test_remote_region_matches_the_file(runtime, cli, data_file, expected):
    server = Server(cli, data_file)
    try:
        with runtime.connect(server.address, fill_size=256 * 1024) as region:
            assert len(region) == len(expected)
            view = np.frombuffer(region, dtype=np.uint8)
            np.testing.assert_array_equal(view, expected)
            del view
    finally:
        err = server.stop()
    assert "stopped: 1 connections" in err, err


def test_remote_secret(runtime, cli, data_file, expected, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("open sesame\n")
    server = Server(cli, data_file, "--secret-file", str(secret))
    try:
        with pytest.raises(faultline.Error, match=server.address):
            runtime.connect(server.address, secret="wrong")
        with pytest.raises(faultline.Error, match=server.address):
            runtime.connect(server.address)
        with runtime.connect(server.address, secret="open sesame", offset=4096, length=8192) as region:
            with memoryview(region) as view:
                assert bytes(view) == expected[4096:12288].tobytes()
        with pytest.raises(TypeError, match="unknown keyword argument secrett"):
            runtime.connect(server.address, secrett="open sesame")
    finally:
        server.stop()

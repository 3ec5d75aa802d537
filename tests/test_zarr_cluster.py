"""Zarr stores on a Dask cluster (``--scheduler``): the workers read the chunks
their bands touch and write their own chunks of a Zarr output; a worker that
dies while it runs a band has that band redone.

The cluster is a ``distributed.LocalCluster`` of two nanny-managed worker
processes in this test process; ``kernelcli`` runs as its own process and
connects to it like any client.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")
tifffile = pytest.importorskip("tifffile")

from distributed import Client, LocalCluster  # noqa: E402
from distributed.diagnostics.plugin import WorkerPlugin  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    """``(address, client)`` of two worker processes, one thread each, under nannies."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      host="127.0.0.1") as local, Client(local) as client:
        client.wait_for_workers(2, timeout=60)
        yield local.scheduler_address, client


@pytest.fixture
def kcli(run_installed):
    return lambda *args, **kw: run_installed(list(args), timeout=300, **kw)


def store(path, x, chunks, fmt=3):
    array = zarr.create_array(store=str(path), shape=x.shape, dtype=x.dtype, chunks=chunks + x.shape[2:],
                              zarr_format=fmt)
    array[...] = x
    return path


class DieInTheFirstBand(WorkerPlugin):
    """Ends its worker process the first time a band task starts running on
    any worker (a marker file makes it once): as if the machine lost it."""

    name = "kernelcli-test-die-once"

    def __init__(self, marker: str):
        self.marker = marker

    def transition(self, key, start, finish, **kwargs):
        if finish == "executing" and str(key).startswith("serial-"):
            try:
                fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            os._exit(1)


def test_zarr_in_and_out_on_the_cluster_equal_the_local_run(cluster, tmp_path, kcli):
    """Tasks carry the store paths and their rows; each writes its band's chunks."""
    address, _ = cluster
    x = np.random.default_rng(5).integers(0, 256, (70, 45, 3)).astype(np.uint8)
    store(tmp_path / "in.zarr", x, (16, 16), 2)
    args = ["apply", "emboss", tmp_path / "in.zarr", None, "--pad-mode", "reflect", "--tile-rows", "9",
            "--relu", "--stride", "2"]
    for out in ("local.zarr", "local.tif", "local.npy"):
        proc = kcli(*[tmp_path / out if a is None else a for a in args])
        assert proc.returncode == 0, proc.stderr
    for out in ("remote.zarr", "remote.tif", "remote.npy"):
        proc = kcli(*[tmp_path / out if a is None else a for a in args], "--scheduler", address)
        assert proc.returncode == 0, proc.stderr
        assert b"4 bands of 9 rows on the cluster, 35x23x3" in proc.stderr, proc.stderr
    remote = zarr.open_array(store=str(tmp_path / "remote.zarr"), mode="r")
    assert remote.metadata.zarr_format == 2 and remote.chunks == (9, 23, 3)
    assert np.array_equal(remote[...], zarr.open_array(store=str(tmp_path / "local.zarr"), mode="r")[...])
    assert np.array_equal(remote[...], tifffile.imread(tmp_path / "local.tif"))
    assert np.array_equal(tifffile.imread(tmp_path / "remote.tif"), tifffile.imread(tmp_path / "local.tif"))
    assert (tmp_path / "remote.npy").read_bytes() == (tmp_path / "local.npy").read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


@pytest.mark.parametrize("out", ["out.zarr", "out.tif"])
def test_a_worker_that_dies_in_a_band_has_its_band_redone(cluster, tmp_path, kcli, out):
    """The first band task to start on the cluster kills its worker process
    (a plugin of this test, not of kernelcli); the scheduler gives the band to
    a worker again (the nanny restarts the dead one) and the output is the
    local run's."""
    import cloudpickle

    address, client = cluster
    x = np.random.default_rng(8).integers(0, 256, (60, 40)).astype(np.uint8)
    src = tmp_path / "in.zarr"
    store(src, x, (8, 40))
    if out.endswith(".tif"):  # a TIFF input on the cluster into a TIFF written in order by kernelcli
        tifffile.imwrite(tmp_path / "in.tif", x, tile=(16, 16), compression="zlib")
        src = tmp_path / "in.tif"
    args = ["apply", "gaussian:1.5", src, None, "--tile-rows", "8"]
    local = kcli(*[tmp_path / f"local-{out}" if a is None else a for a in args])
    assert local.returncode == 0, local.stderr
    marker = tmp_path / "died"
    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this file
    try:
        client.register_plugin(DieInTheFirstBand(str(marker)))
        remote = kcli(*[tmp_path / out if a is None else a for a in args], "--scheduler", address)
    finally:
        client.unregister_worker_plugin(DieInTheFirstBand.name)
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert marker.exists(), "no worker died: the test tested nothing"
    assert remote.returncode == 0, remote.stderr
    assert b"8 bands of 8 rows on the cluster" in remote.stderr
    if out.endswith(".zarr"):
        got = zarr.open_array(store=str(tmp_path / out), mode="r")[...]
        want = zarr.open_array(store=str(tmp_path / f"local-{out}"), mode="r")[...]
    else:
        got, want = tifffile.imread(tmp_path / out), tifffile.imread(tmp_path / f"local-{out}")
    assert np.array_equal(got, want)
    client.wait_for_workers(2, timeout=60)  # the nanny has restarted the dead one

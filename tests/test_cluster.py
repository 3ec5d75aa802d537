"""``--scheduler``: a real ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

DASK = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
WORKER = [sys.executable, "-m", "distributed.cli.dask_worker"]


@pytest.fixture
def kcli(run_installed):
    """``kcli("apply", ...)``: the installed command (see conftest.run_installed)."""
    return lambda *args, **kwargs: run_installed(list(args), **kwargs)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Yields the scheduler file; the address is inside it."""
    folder = tmp_path_factory.mktemp("cluster")
    sched_file = folder / "scheduler.json"
    common = dict(cwd=folder, stdin=subprocess.DEVNULL, start_new_session=True)
    logs = [open(folder / f"{name}.log", "wb") for name in ("scheduler", "w1", "w2")]
    procs = [subprocess.Popen(DASK + ["--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                      "--scheduler-file", str(sched_file)],
                              stdout=logs[0], stderr=subprocess.STDOUT, **common)]
    try:
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sched_file.exists(), (folder / "scheduler.log").read_text()
        for log in logs[1:]:
            procs.append(subprocess.Popen(WORKER + ["--scheduler-file", str(sched_file), "--nthreads", "1",
                                                    "--no-dashboard", "--host", "127.0.0.1"],
                                          stdout=log, stderr=subprocess.STDOUT, **common))
        from distributed import Client

        with Client(scheduler_file=str(sched_file), timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        yield sched_file
    finally:
        for p in reversed(procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        for log in logs:
            log.close()


@pytest.fixture
def tree(tmp_path, samples):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    for name in ("photo.jpg", "gray.png", "rgba.png", "gray16.tif"):
        shutil.copy(samples / name, src / name)
    shutil.copy(samples / "photo.png", src / "sub" / "PHOTO.PNG")
    shutil.copy(samples / "example-5x5.npy", src / "sub" / "m.npy")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    return src


def files(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("by", ["file", "address"])
def test_folder_on_the_cluster_equals_the_local_run(cluster, tree, tmp_path, by, kcli):
    where = str(cluster) if by == "file" else json.loads(cluster.read_text())["address"]
    args = ["apply", "sharpen", tree, None, "--recursive", "--relu"]
    local = kcli(*[tmp_path / "local" if a is None else a for a in args])
    remote = kcli(*[tmp_path / "remote" if a is None else a for a in args], "--scheduler", where)
    assert local.returncode == remote.returncode == 1  # the broken file
    for proc in (local, remote):
        err = proc.stderr.decode()
        assert "kernelcli: failed: " in err and "broken.png" in err and "Traceback" not in err
        assert "6 done, 0 skipped, 1 failed" in err
    assert files(tmp_path / "local") == files(tmp_path / "remote")
    assert len(files(tmp_path / "remote")) == 6
    assert not list((tmp_path / "remote").rglob("*.part"))


def test_relative_paths_are_resolved_for_the_workers(cluster, tree, tmp_path, kcli):
    """Workers run in their own folder; kernelcli sends absolute paths."""
    proc = kcli("apply", "box:3", "in", "out", "--scheduler", cluster, "--glob", "*.png", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr  # broken.png
    assert b"failed: in/broken.png: " in proc.stderr
    assert sorted(files(tmp_path / "out")) == ["gray.png", "rgba.png"]


def test_skip_existing_on_the_cluster(cluster, tree, tmp_path, kcli):
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    (out / "gray.png").write_bytes(b"keep me")
    proc = kcli("apply", "box:3", tree, out, "-r", "--skip-existing", "--scheduler", cluster)
    assert b"5 done, 1 skipped, 1 failed" in proc.stderr
    assert (out / "gray.png").read_bytes() == b"keep me"


def test_large_npy_bands_on_the_cluster_equal_the_local_run(cluster, tmp_path, kcli):
    x = np.random.default_rng(3).uniform(0, 255, (300, 120, 3)).astype(np.float32)
    np.save(tmp_path / "big.npy", x)
    args = ["apply", "gaussian:2", tmp_path / "big.npy", None, "--stride", "2", "--pad-mode", "wrap",
            "--relu", "--pool", "avg"]
    local = kcli(*[tmp_path / "local.npy" if a is None else a for a in args])
    remote = kcli(*[tmp_path / "remote.npy" if a is None else a for a in args], "--tile-rows", "7",
                  "--scheduler", cluster)
    assert local.returncode == 0 and remote.returncode == 0, remote.stderr
    assert b"11 bands of 7 rows on the cluster, 75x30x3" in remote.stderr
    assert (tmp_path / "local.npy").read_bytes() == (tmp_path / "remote.npy").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.npy", "local.npy", "remote.npy"]


def test_unreachable_scheduler_is_a_clear_error_in_bounded_time(tree, tmp_path, kcli):
    started = time.monotonic()
    proc = kcli("apply", "box:3", tree, tmp_path / "out", "--scheduler", "tcp://127.0.0.1:9",
                "--scheduler-timeout", "3")
    elapsed = time.monotonic() - started
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert err.startswith("kernelcli: error: cannot reach the Dask scheduler at tcp://127.0.0.1:9 within 3 s")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert elapsed < 30  # 3 s to connect, plus start-up on a busy machine
    assert not (tmp_path / "out").exists()  # nothing is created before the cluster answers


@pytest.mark.parametrize("where, code, words", [
    ("not-an-address", 2, "neither a scheduler file nor an address"),
    ("{bad_file}", 1, "scheduler.json: not a Dask scheduler file"),
])
def test_bad_scheduler_values(tree, tmp_path, where, code, words, kcli):
    bad_file = tmp_path / "scheduler.json"
    bad_file.write_text("{not json")
    proc = kcli("apply", "box:3", tree, tmp_path / "out", "--scheduler", where.format(bad_file=bad_file),
                "--scheduler-timeout", "3")
    assert proc.returncode == code, proc.stderr
    assert words in proc.stderr.decode() and b"Traceback" not in proc.stderr

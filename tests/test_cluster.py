"""``--scheduler``: a real ``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
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


def test_tiff_bands_on_the_cluster_equal_the_local_run(cluster, tmp_path, kcli):
    """Tasks carry the TIFF's path and their rows; the client writes the tiles in order."""
    tifffile = pytest.importorskip("tifffile")
    x = np.random.default_rng(4).integers(0, 256, (90, 70, 3)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", x, photometric="rgb", tile=(16, 16), compression="zlib")
    args = ["apply", "emboss", tmp_path / "in.tif", None, "--pad-mode", "reflect", "--tile-rows", "16"]
    local = kcli(*[tmp_path / "local.tif" if a is None else a for a in args], "--tiff-tile", "16",
                 "--tiff-compression", "deflate")
    remote = kcli(*[tmp_path / "remote.tif" if a is None else a for a in args], "--tiff-tile", "16",
                  "--tiff-compression", "deflate", "--scheduler", cluster)
    remote_npy = kcli(*[tmp_path / "remote.npy" if a is None else a for a in args], "--scheduler", cluster)
    local_npy = kcli(*[tmp_path / "local.npy" if a is None else a for a in args])
    for proc in (local, remote, remote_npy, local_npy):
        assert proc.returncode == 0, proc.stderr
    assert b"6 bands of 16 rows on the cluster, 90x70x3" in remote.stderr
    assert np.array_equal(tifffile.imread(tmp_path / "remote.tif"), tifffile.imread(tmp_path / "local.tif"))
    assert (tmp_path / "local.npy").read_bytes() == (tmp_path / "remote.npy").read_bytes()


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


def test_a_server_that_never_answers_is_a_clear_error_in_bounded_time(tree, tmp_path, kcli):
    """A listening socket that accepts and stays silent (a plain HTTP server, say):
    --scheduler-timeout bounds the handshake too."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    address = f"tcp://127.0.0.1:{server.getsockname()[1]}"
    try:
        proc = kcli("apply", "box:3", tree, tmp_path / "out", "--scheduler", address, "--scheduler-timeout", "3",
                    timeout=60)
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()
    assert accepted, "the command never connected"
    assert proc.returncode == 1, proc.stderr
    err = proc.stderr.decode()
    assert err.startswith(f"kernelcli: error: cannot reach the Dask scheduler at {address} within 3 s")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_a_scheduler_lost_mid_run_fails_the_files_quietly(tree, tmp_path, kcli):
    """The scheduler killed while the run waits on it: each file is reported on
    one line, the summary ends the run, and no Dask log or traceback follows."""
    folder = tmp_path / "lost"
    folder.mkdir()
    sched_file = folder / "scheduler.json"
    common = dict(cwd=folder, stdin=subprocess.DEVNULL, start_new_session=True)
    with open(folder / "scheduler.log", "wb") as slog, open(folder / "worker.log", "wb") as wlog:
        scheduler = subprocess.Popen(DASK + ["--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                             "--scheduler-file", str(sched_file)],
                                     stdout=slog, stderr=subprocess.STDOUT, **common)
        worker = None
        command = None
        try:
            deadline = time.monotonic() + 60
            while not sched_file.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            worker = subprocess.Popen(WORKER + ["--scheduler-file", str(sched_file), "--nthreads", "1",
                                                "--no-dashboard", "--host", "127.0.0.1"],
                                      stdout=wlog, stderr=subprocess.STDOUT, **common)
            from distributed import Client

            with Client(scheduler_file=str(sched_file), timeout=30) as client:
                client.wait_for_workers(1, timeout=60)
            os.killpg(worker.pid, signal.SIGSTOP)  # the files wait on the cluster
            env = dict(os.environ)
            env.pop("KERNELCLI_DEBUG", None)
            command = subprocess.Popen([shutil.which("kernelcli") or "kernelcli", "apply", "box:3", str(tree),
                                        str(tmp_path / "out"), "--recursive", "--scheduler", str(sched_file)],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                       env=env)
            log = folder / "scheduler.log"
            connections = log.read_text().count("Receive client connection")  # the test's own client
            deadline = time.monotonic() + 60
            while log.read_text().count("Receive client connection") <= connections:
                assert time.monotonic() < deadline and command.poll() is None, command.communicate()
                time.sleep(0.05)
            os.killpg(scheduler.pid, signal.SIGKILL)
            _, err = command.communicate(timeout=120)
        finally:
            if command is not None and command.poll() is None:
                command.kill()
                command.communicate()
            for proc in (worker, scheduler):  # each leads a process group of its own
                if proc is not None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    text = err.decode()
    assert command.returncode == 1, text
    lines = text.splitlines()
    assert all(line.startswith("kernelcli: ") for line in lines), text
    assert "Traceback" not in text and "ERROR" not in text
    failed = [line for line in lines if line.startswith("kernelcli: failed: ")]
    assert len(failed) == 7 and all("the cluster could not run it: " in line for line in failed), text
    assert lines[-1].startswith("kernelcli: 0 done, 0 skipped, 7 failed")

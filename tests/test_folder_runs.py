"""Folder runs under stress: signals, stuck and killed workers, colliding
outputs, outputs that cannot be created, and folders with nothing to do.

Every test runs the installed command. Runs are held mid-way by stopping
their worker processes (see ``tests/processes.py``), never by timing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .processes import command, group, kill_group, start, unread_input, wait_for_children, wait_until_gone


def kcli(*args, timeout=300):
    env = dict(os.environ)
    env.pop("KERNELCLI_DEBUG", None)
    return subprocess.run(command() + [str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, timeout=timeout, env=env)


@pytest.fixture
def pictures(tmp_path):
    """Six small PNGs."""
    src = tmp_path / "pictures"
    src.mkdir()
    rng = np.random.default_rng(7)
    base = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    for i in range(6):
        Image.fromarray(np.roll(base, 3 * i, axis=1)).save(src / f"p{i}.png")
    return src


def only_our_lines(err: bytes) -> None:
    """Everything on stderr is kernelcli's own one-line messages."""
    text = err.decode(errors="replace")
    assert text, "nothing on stderr"
    for line in text.splitlines():
        assert line.startswith("kernelcli: "), text
    for noise in ("Traceback", "Exception", "EOFError", "semaphore", "internal error"):
        assert noise not in text, text


def no_temporaries(folder: Path) -> None:
    assert [p.name for p in folder.rglob("*") if p.name.endswith(".part")] == []


# --------------------------------------------------------------------------
# signals


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_a_run_whose_workers_are_stuck(pictures, tmp_path, sig, status):
    out = tmp_path / "out"
    proc = start(["apply", "gaussian:2", pictures, out, "--jobs", "2"])
    try:
        workers = wait_for_children(proc, 2)
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)  # stuck: neither finishing nor answering SIGTERM
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        kill_group(proc)
    assert proc.returncode == status, err
    only_our_lines(err)
    assert b"kernelcli: interrupted: " in err
    assert wait_until_gone(workers) == [] and group(proc.pid) == []
    no_temporaries(out)
    assert len(list(out.glob("*.png"))) < 6  # queued files were not processed


def _terminated(pictures, tmp_path, workers_to_wait_for: int, terminate) -> None:
    """Start a folder run, wait for that many workers, ``terminate(proc,
    workers)``; the run must end with 143, only its own lines on stderr, no
    process and no temporary file left."""
    out = tmp_path / "out"
    proc = start(["apply", "gaussian:2", pictures, out, "--jobs", "2"])
    try:
        workers = wait_for_children(proc, workers_to_wait_for)
        terminate(proc, workers)
        _, err = proc.communicate(timeout=60)
    finally:
        kill_group(proc)
    assert proc.returncode == 143, err
    only_our_lines(err)
    assert wait_until_gone(workers) == [] and group(proc.pid) == []
    no_temporaries(out)


def test_sigterm_to_the_whole_process_group_leaves_no_process(pictures, tmp_path):
    """What ``timeout 10 kernelcli ...`` does: SIGTERM to the command and its workers."""
    def terminate(proc, workers):
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        os.killpg(proc.pid, signal.SIGTERM)

    _terminated(pictures, tmp_path, 2, terminate)


def test_sigterm_while_workers_start_prints_no_traceback(pictures, tmp_path):
    _terminated(pictures, tmp_path, 1, lambda proc, workers: proc.send_signal(signal.SIGTERM))


def test_workers_do_not_outlive_a_killed_command(pictures, tmp_path):
    """SIGKILL cannot be caught: the kernel tells the workers (SIGTERM) instead."""
    out = tmp_path / "out"
    proc = start(["apply", "gaussian:2", pictures, out, "--jobs", "2"])
    try:
        workers = wait_for_children(proc, 2)
        proc.kill()
        proc.communicate(timeout=60)
        assert wait_until_gone(workers, timeout=60) == []
    finally:
        kill_group(proc)
    no_temporaries(out)


# --------------------------------------------------------------------------
# a worker killed (the OOM killer, kill -9)


def test_a_killed_worker_fails_its_file_and_the_run_goes_on(pictures, tmp_path):
    out = tmp_path / "out"
    proc = start(["apply", "gaussian:2", pictures, out, "--jobs", "2"])
    try:
        victim = None
        while victim is None:
            workers = wait_for_children(proc, 2)
            for pid in workers:
                os.kill(pid, signal.SIGSTOP)
            # A stopped worker with a task still unread in its pipe holds that file.
            holding = [pid for pid in workers if unread_input(pid) > 0]
            if holding:
                victim = holding[0]
                os.kill(victim, signal.SIGKILL)
            for pid in workers:
                if pid != victim:
                    os.kill(pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=240)
    finally:
        kill_group(proc)
    text = err.decode()
    assert proc.returncode == 1, text
    only_our_lines(err)
    failed = [line for line in text.splitlines() if line.startswith("kernelcli: failed: ")]
    assert len(failed) == 1 and failed[0].endswith(": worker died (killed by SIGKILL, signal 9)"), text
    name = Path(failed[0].split(": ")[2]).name
    assert "kernelcli: 5 done, 0 skipped, 1 failed" in text
    assert sorted(p.name for p in out.iterdir()) == sorted(f"p{i}.png" for i in range(6) if f"p{i}.png" != name)
    assert group(proc.pid) == []
    r = kcli("apply", "gaussian:2", pictures, out, "--jobs", "2", "--skip-existing")
    assert r.returncode == 0 and b"1 done, 5 skipped, 0 failed" in r.stderr, r.stderr
    single = tmp_path / "single.png"
    assert kcli("apply", "gaussian:2", pictures / name, single).returncode == 0
    assert (out / name).read_bytes() == single.read_bytes()


# --------------------------------------------------------------------------
# outputs that would overwrite each other


def test_outputs_with_the_same_name_are_refused_before_any_work(tmp_path, samples):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(samples / "gray.png", src / "a.png")
    shutil.copy(samples / "rgba.png", src / "a.PNG")
    shutil.copy(samples / "photo.jpg", src / "a.jpg")
    shutil.copy(samples / "photo.jpg", src / "b.jpg")
    r = kcli("apply", "box", src, tmp_path / "out", "--format", "png")
    assert r.returncode == 2, r.stderr
    only_our_lines(r.stderr)
    err = r.stderr.decode()
    assert all(str(src / n) in err for n in ("a.png", "a.PNG", "a.jpg")) and "b.jpg" not in err
    assert str(tmp_path / "out" / "a.png") in err or str(tmp_path / "out" / "a.PNG") in err
    assert not (tmp_path / "out").exists()


def test_names_that_differ_only_in_case_collide(tmp_path, samples):
    """They would overwrite each other on a case-insensitive file system."""
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    shutil.copy(samples / "gray.png", src / "sub" / "Photo.png")
    shutil.copy(samples / "gray.png", src / "sub" / "photo.PNG")
    r = kcli("apply", "box", src, tmp_path / "out", "--recursive")
    assert r.returncode == 2 and b"Photo.png" in r.stderr and b"photo.PNG" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------
# outputs that cannot be created


def test_a_file_in_the_way_of_an_output_folder_fails_that_file(tmp_path, samples):
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    shutil.copy(samples / "gray.png", src / "top.png")
    shutil.copy(samples / "gray.png", src / "sub" / "x.png")
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").write_text("a file, not a folder")
    r = kcli("apply", "box", src, out, "--recursive", "--jobs", "1")
    assert r.returncode == 1
    only_our_lines(r.stderr)
    assert (f"kernelcli: failed: {src / 'sub' / 'x.png'}: cannot create the output folder {out / 'sub'}: "
            f"File exists").encode() in r.stderr, r.stderr
    assert b"1 done, 0 skipped, 1 failed" in r.stderr
    assert (out / "top.png").exists() and (out / "sub").read_text() == "a file, not a folder"


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_an_output_folder_where_nothing_can_be_written(tmp_path, samples, jobs):
    """/proc takes no new files or folders, even from root."""
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    shutil.copy(samples / "gray.png", src / "top.png")
    shutil.copy(samples / "gray.png", src / "sub" / "x.png")
    r = kcli("apply", "box", src, "/proc", "--recursive", "--jobs", jobs)
    assert r.returncode == 1
    only_our_lines(r.stderr)
    err = r.stderr.decode()
    assert f"kernelcli: failed: {src / 'sub' / 'x.png'}: cannot create the output folder /proc/sub: " in err
    assert f"kernelcli: failed: {src / 'top.png'}: /proc/top.png: cannot write in /proc: " in err
    assert "0 done, 0 skipped, 2 failed" in err
    r = kcli("apply", "box", src, f"/proc/kernelcli-{os.getpid()}/out")
    assert r.returncode == 1
    only_our_lines(r.stderr)
    assert f"kernelcli: error: /proc/kernelcli-{os.getpid()}/out: cannot create the output folder: ".encode() \
        in r.stderr


# --------------------------------------------------------------------------
# nothing to do


def test_output_folder_equal_to_input_folder_is_a_usage_error(tmp_path, samples):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(samples / "gray.png", src / "a.png")
    before = (src / "a.png").read_bytes()
    for output in (src, tmp_path / "in" / ".." / "in"):
        r = kcli("apply", "sharpen", src, output)
        assert r.returncode == 2, r.stderr
        only_our_lines(r.stderr)
        assert b"is the input folder" in r.stderr
    assert sorted(os.listdir(src)) == ["a.png"] and (src / "a.png").read_bytes() == before


def test_a_folder_with_no_images_is_an_error(tmp_path, samples):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    r = kcli("apply", "sharpen", empty, tmp_path / "out")
    assert r.returncode == 1
    only_our_lines(r.stderr)
    assert f"kernelcli: error: {empty}: no images in this folder (".encode() in r.stderr
    assert not (tmp_path / "out").exists()


def test_a_glob_that_matches_nothing_is_an_error(tmp_path, samples):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(samples / "gray.png", src / "a.png")
    r = kcli("apply", "sharpen", src, tmp_path / "out", "--glob", "*.gif", "-r")
    assert r.returncode == 1
    only_our_lines(r.stderr)
    assert f"kernelcli: error: {src}: no image matches --glob '*.gif'".encode() in r.stderr
    assert not (tmp_path / "out").exists()


def test_everything_skipped_is_not_an_error(tmp_path, samples):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(samples / "gray.png", src / "a.png")
    out = tmp_path / "out"
    assert kcli("apply", "box", src, out).returncode == 0
    r = kcli("apply", "box", src, out, "--skip-existing")
    assert r.returncode == 0 and b"0 done, 1 skipped, 0 failed" in r.stderr, r.stderr

"""Folders: `kernelcli apply KERNEL INDIR OUTDIR` on a real tree of mixed files."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kernelcli.run.batch import find_inputs

from .processes import group, kill_group, start, wait_for_children, wait_until_gone

KCLI = shutil.which("kernelcli") or "kernelcli"


def kcli(*args, timeout=300, **kw):
    env = dict(os.environ)
    env.pop("KERNELCLI_DEBUG", None)
    return subprocess.run([KCLI, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=subprocess.DEVNULL, timeout=timeout, env=env, **kw)


@pytest.fixture
def tree(tmp_path, samples):
    """in/: PNG, JPEG, 16-bit TIFF, RGBA, gray, .npy, a broken file, a text file, subfolders."""
    src = tmp_path / "in"
    (src / "sub" / "deeper").mkdir(parents=True)
    for name in ("photo.jpg", "gray.png", "rgba.png", "gray16.tif"):
        shutil.copy(samples / name, src / name)
    shutil.copy(samples / "photo.png", src / "sub" / "PHOTO.PNG")
    shutil.copy(samples / "example-5x5.npy", src / "sub" / "deeper" / "m.npy")
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (src / "notes.txt").write_text("not an image")
    return src


def files_under(root: Path) -> set:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def test_mixed_tree_recursive(tree, tmp_path):
    out = tmp_path / "out"
    r = kcli("apply", "sharpen", tree, out, "--recursive", "--jobs", "2")
    assert r.returncode == 1  # one broken file
    err = r.stderr.decode()
    assert "broken.png" in err and "cannot decode image: broken PNG file" in err and "Traceback" not in err
    assert "6 done, 0 skipped, 1 failed" in err and "megapixels/s" in err
    assert files_under(out) == {"photo.jpg", "gray.png", "rgba.png", "gray16.tif", "sub/PHOTO.PNG",
                                "sub/deeper/m.npy"}
    modes = {n: Image.open(out / n).mode for n in ("photo.jpg", "gray.png", "rgba.png", "gray16.tif")}
    assert modes == {"photo.jpg": "RGB", "gray.png": "L", "rgba.png": "RGBA", "gray16.tif": "I;16"}
    assert Image.open(out / "photo.jpg").format == "JPEG"
    # ICC profile and DPI are carried over
    assert Image.open(out / "gray.png").info.get("icc_profile") == Image.open(tree / "gray.png").info["icc_profile"]
    assert Image.open(out / "gray16.tif").info.get("dpi") == Image.open(tree / "gray16.tif").info.get("dpi")
    assert not [p for p in out.rglob("*") if p.name.endswith(".part")]


def test_each_output_equals_single_file_apply_whatever_jobs(tree, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    args = ("edge", "--relu", "--pool", "max", "--recursive", "--glob", "*.png")
    kcli("apply", args[0], tree, one, *args[1:], "--jobs", "1")
    kcli("apply", args[0], tree, two, *args[1:], "--jobs", "2")
    assert files_under(one) == files_under(two) == {"gray.png", "rgba.png", "sub/PHOTO.PNG"}
    for name in files_under(one):
        single = tmp_path / f"single-{Path(name).name}"
        assert kcli("apply", "edge", tree / name, single, "--relu", "--pool", "max").returncode == 0
        assert (one / name).read_bytes() == (two / name).read_bytes() == single.read_bytes()


def test_top_level_only_without_recursive_and_format_option(tree, tmp_path):
    out = tmp_path / "out"
    r = kcli("apply", "box", tree, out, "--format", "png", "--quiet")
    assert r.returncode == 1 and b"done" not in r.stderr  # --quiet: no summary
    assert files_under(out) == {"photo.png", "gray.png", "rgba.png", "gray16.png"}
    assert Image.open(out / "gray16.png").mode == "I;16"


def test_outdir_inside_indir_is_never_input(tree):
    out = tree / "out"
    assert kcli("apply", "box", tree, out, "-r", "--glob", "*.png").returncode == 1
    first = files_under(out)
    assert kcli("apply", "box", tree, out, "-r", "--glob", "*.png").returncode == 1
    assert files_under(out) == first and not any(n.startswith("out/") for n in first)
    assert all(not str(p).startswith("out") for p in find_inputs(tree, out, recursive=True))


def test_file_like_output_for_a_folder_is_a_usage_error(tree, tmp_path):
    r = kcli("apply", "box", tree, tmp_path / "result.png")
    assert r.returncode == 2 and b"folder" in r.stderr
    assert not (tmp_path / "result.png").exists()
    r = kcli("apply", "box", tree / "gray.png", tmp_path / "x.png", "--jobs", "2")
    assert r.returncode == 2 and b"folder INPUT" in r.stderr


def test_skip_existing_resumes(tree, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "gray.png").write_bytes(b"keep me")
    r = kcli("apply", "box", tree, out, "--skip-existing", "--glob", "*.png")
    assert "1 done, 1 skipped, 1 failed" in r.stderr.decode()
    assert (out / "gray.png").read_bytes() == b"keep me"


def test_symlink_loop_does_not_hang(tree, tmp_path):
    os.symlink(tree, tree / "sub" / "loop")
    found = find_inputs(tree, tmp_path / "out", recursive=True)
    assert len(found) == len(set(found)) and len(found) < 20


@pytest.fixture
def many(tmp_path):
    """24 small PNGs."""
    src = tmp_path / "many"
    src.mkdir()
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    for i in range(24):
        Image.fromarray(np.roll(base, i, axis=1)).save(src / f"img{i:02d}.png", compress_level=1)
    return src


def test_sigint_stops_cleanly_and_a_resumed_run_completes(many, tmp_path):
    """The run is held mid-way by stopping its workers (SIGSTOP): they can neither
    finish nor answer SIGTERM, so the command must stop them itself."""
    out = tmp_path / "out"
    proc = start(["apply", "gaussian:3", many, out, "--jobs", "2"])
    try:
        workers = wait_for_children(proc, 2)
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        kill_group(proc)
    assert proc.returncode == 130, err.decode()
    assert b"interrupted: " in err and b"done" in err and b"Traceback" not in err
    assert wait_until_gone(workers) == [] and group(proc.pid) == []  # no worker left behind
    leftovers = [p.name for p in out.iterdir() if not p.name.endswith(".png")]
    assert leftovers == []  # no temporary files
    written = sorted(out.glob("*.png"))
    assert len(written) < 24
    for p in written:  # every output is complete
        Image.open(p).load()
    r = kcli("apply", "gaussian:3", many, out, "--jobs", "2", "--skip-existing")
    assert r.returncode == 0
    assert f"{24 - len(written)} done, {len(written)} skipped, 0 failed" in r.stderr.decode()
    for name in ("img00.png", "img23.png"):
        reference = tmp_path / f"ref-{name}"
        kcli("apply", "gaussian:3", many / name, reference)
        assert (out / name).read_bytes() == reference.read_bytes()


def test_a_failing_file_leaves_no_empty_output_folder(tmp_path, run_cli):
    src = tmp_path / "in"
    (src / "deep" / "er").mkdir(parents=True)
    (src / "deep" / "er" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    Image.new("RGB", (8, 6), (10, 20, 30)).save(src / "ok.png")
    r = run_cli(["apply", "box", src, tmp_path / "out", "--recursive"])
    assert r.exit_code == 1
    assert (tmp_path / "out" / "ok.png").exists()
    assert not (tmp_path / "out" / "deep").exists()

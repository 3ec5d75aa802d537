"""Several inputs, file lists, dry runs, JSON summaries and output names,
through the installed command (and a real ``find -print0 |`` pipe)."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from .reference import correlate_ref, same_pads

SHARPEN = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=np.float64)


def _gray(path, shape, seed):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
    Image.fromarray(pixels, "L").save(path)
    return pixels.astype(np.float64)


def _expected(pixels):
    """sharpen, same padding, zeros around, as float32 .npy holds it."""
    return correlate_ref(pixels, SHARPEN, pads=same_pads((3, 3))).astype(np.float32)


@pytest.fixture
def pictures(tmp_path):
    """a.png, b.png, sub/c.png (with its pixels), all small."""
    (tmp_path / "sub").mkdir()
    pixels = {}
    for name, shape, seed in (("a.png", (7, 9), 1), ("b.png", (6, 5), 2), ("sub/c.png", (8, 8), 3)):
        pixels[name] = _gray(tmp_path / name, shape, seed)
    return tmp_path, pixels


def test_several_files_and_a_folder_into_one_folder(run_installed, pictures):
    root, pixels = pictures
    got = run_installed(["conv", "sharpen", "a.png", "b.png", "sub", "-o", "out", "--format", "npy", "-j", "2"],
                        cwd=root)
    assert got.returncode == 0, got.stderr
    assert b"3 done, 0 skipped, 0 failed" in got.stderr
    for name, out in (("a.png", "a.npy"), ("b.png", "b.npy"), ("sub/c.png", "c.npy")):
        np.testing.assert_array_equal(np.load(root / "out" / out), _expected(pixels[name]))


def test_three_paths_without_an_output_folder_are_refused(run_installed, pictures):
    root, _ = pictures
    got = run_installed(["apply", "sharpen", "a.png", "b.png", "c.png"], cwd=root)
    assert got.returncode == 2
    assert b"several INPUTs need -o/--output DIR" in got.stderr


def test_two_inputs_with_one_output_name_are_refused_before_any_work(run_installed, pictures):
    root, _ = pictures
    shutil.copy(root / "a.png", root / "sub" / "a.png")
    got = run_installed(["apply", "sharpen", "a.png", "sub/a.png", "-o", "out"], cwd=root)
    assert got.returncode == 2
    assert b"a.png and sub/a.png would be written to the same output, out/a.png" in got.stderr
    assert not (root / "out").exists()


def test_find_print0_pipe_with_awkward_names(run_installed, tmp_path):
    """NUL-separated names survive spaces and newlines, as find -print0 gives them."""
    src = tmp_path / "in"
    src.mkdir()
    names = ["plain.png", "with space.png", "new\nline.png"]
    pixels = {name: _gray(src / name, (5, 6), i) for i, name in enumerate(names)}
    command = shutil.which("kernelcli") or "kernelcli"
    got = subprocess.run(f"find in -name '*.png' -print0 | '{command}' conv sharpen --files-from - -0 "
                         f"-o out --format npy", shell=True, cwd=tmp_path, capture_output=True, timeout=120)
    assert got.returncode == 0, got.stderr
    for name in names:
        np.testing.assert_array_equal(np.load(tmp_path / "out" / (name[:-4] + ".npy")), _expected(pixels[name]))


def test_files_from_a_list_file_one_path_a_line(run_installed, pictures):
    root, pixels = pictures
    (root / "list.txt").write_text("a.png\r\n\nsub/c.png\n")
    got = run_installed(["conv", "sharpen", "--files-from", "list.txt", "-o", "out", "-f", "npy"], cwd=root)
    assert got.returncode == 0, got.stderr
    assert sorted(p.name for p in (root / "out").iterdir()) == ["a.npy", "c.npy"]
    np.testing.assert_array_equal(np.load(root / "out" / "c.npy"), _expected(pixels["sub/c.png"]))


def _size(n, k, stride, pool):
    """Output size by the articles' rule, then pooling (window 2, stride 2)."""
    pad = (k - 1) // 2 + k // 2
    out = (n + pad - k) // stride + 1
    return (out - 2) // 2 + 1 if pool else out


def test_dry_run_shows_names_sizes_and_skips_and_writes_nothing(run_installed, pictures):
    root, _ = pictures
    (root / "done").mkdir()
    (root / "done" / "b.png").write_bytes(b"already there")
    got = run_installed(["apply", "box:5", "a.png", "b.png", "sub", "-o", "done/deeper", "--stride", "2",
                         "--pool", "max", "--dry-run", "--json"], cwd=root)
    assert got.returncode == 0, got.stderr
    plan = json.loads(got.stdout)
    assert [f["output"] for f in plan["files"]] == ["done/deeper/a.png", "done/deeper/b.png", "done/deeper/c.png"]
    assert [(f["width"], f["height"]) for f in plan["files"]] == [
        (_size(9, 5, 2, True), _size(7, 5, 2, True)), (_size(5, 5, 2, True), _size(6, 5, 2, True)),
        (_size(8, 5, 2, True), _size(8, 5, 2, True))]
    assert not (root / "done" / "deeper").exists()
    got = run_installed(["apply", "sharpen", "a.png", "b.png", "-o", "done", "--skip-existing", "--dry-run"],
                        cwd=root)
    assert got.returncode == 0, got.stderr
    assert got.stdout.decode().splitlines() == ["a.png -> done/a.png  9x7",
                                                "b.png -> done/b.png  skipped (the output exists)"]
    assert sorted(p.name for p in (root / "done").iterdir()) == ["b.png"]


def test_json_summary_is_all_of_stdout_and_names_the_failures(run_installed, pictures):
    root, pixels = pictures
    (root / "bad.png").write_bytes(b"not a picture")
    got = run_installed(["apply", "sharpen", "a.png", "bad.png", "-o", "out", "--json", "-f", "npy"], cwd=root)
    assert got.returncode == 1
    summary = json.loads(got.stdout)  # nothing but the JSON on stdout
    assert (summary["done"], summary["skipped"], summary["failed"]) == (1, 0, 1)
    assert summary["failures"][0]["path"] == "bad.png"
    assert "not a recognised image" in summary["failures"][0]["message"]
    assert summary["megapixels"] == pytest.approx(7 * 9 / 1e6, abs=1e-3)
    assert summary["seconds"] >= 0 and not summary["interrupted"]
    assert b"failed: bad.png" in got.stderr
    np.testing.assert_array_equal(np.load(root / "out" / "a.npy"), _expected(pixels["a.png"]))


def test_suffix_and_name_templates_write_beside_the_input_or_into_the_folder(run_installed, pictures):
    root, pixels = pictures
    got = run_installed(["conv", "sharpen", "a.png", "sub/c.png", "--suffix", "-sharp", "-f", "npy"], cwd=root)
    assert got.returncode == 0, got.stderr
    np.testing.assert_array_equal(np.load(root / "a-sharp.npy"), _expected(pixels["a.png"]))
    assert (root / "sub" / "c-sharp.npy").is_file()
    got = run_installed(["apply", "edge,sharpen", "sub/c.png", "-o", "out", "-f", "npy",
                         "--name", "{parent}/{stem}-{kernel}.{ext}"], cwd=root)
    assert got.returncode == 0, got.stderr
    assert np.load(root / "out" / "sub" / "c-edge+sharpen.npy").shape == (8, 8, 2)


def test_an_output_that_would_replace_its_input_needs_in_place(run_installed, pictures):
    root, pixels = pictures
    before = (root / "a.png").read_bytes()
    got = run_installed(["apply", "sharpen", "a.png", "--name", "{stem}.{ext}"], cwd=root)
    assert got.returncode == 2
    assert b"the output of a.png would replace it" in got.stderr
    assert (root / "a.png").read_bytes() == before
    got = run_installed(["apply", "sharpen", "a.png", "--in-place"], cwd=root)
    assert got.returncode == 0, got.stderr
    expected = np.clip(np.floor(_expected(pixels["a.png"]).astype(np.float64) + 0.5), 0, 255)
    np.testing.assert_array_equal(np.asarray(Image.open(root / "a.png")), expected.astype(np.uint8))


def test_a_template_with_an_unknown_field_is_refused(run_installed, pictures):
    root, _ = pictures
    got = run_installed(["apply", "sharpen", "a.png", "-o", "out", "--name", "{name}.png"], cwd=root)
    assert got.returncode == 2
    assert b"unknown field {name}" in got.stderr
    assert not (root / "out").exists()


@pytest.mark.parametrize("kernel, extra, label", [
    ("sobel", ["--combine", "magnitude"], "sobel"),
    ("edge,kirsch", [], "edge+kirsch"),
    ("sobel-y,sobel-x", [], "sobel-y+sobel-x"),
    ("edge-diagonal", ["--rotate", "45", "--combine", "max"], "edge-diagonal"),
    ("sobel,edge", ["--rotate", "90", "--rotations", "2"], "sobel+edge"),
])
def test_kernel_field_names_a_bank_as_typed(run_installed, pictures, kernel, extra, label):
    root, _ = pictures
    got = run_installed(["apply", kernel, "a.png", "-o", "out", "--name", "{stem}-{kernel}.png", "--dry-run",
                         *extra], cwd=root)
    assert got.returncode == 0, got.stderr
    assert got.stdout.decode().split()[:3] == ["a.png", "->", f"out/a-{label}.png"]


@pytest.mark.parametrize("command", ["apply", "conv"])
@pytest.mark.parametrize("option", [["--recursive"], ["--glob", "*.png"], ["--jobs", "2"], ["--skip-existing"]])
def test_folder_options_with_one_file_are_a_usage_error(run_cli, pictures, command, option):
    root, _ = pictures
    got = run_cli([command, "sharpen", root / "a.png", root / "out.png", *option])
    assert got.exit_code == 2
    assert "need a folder INPUT or several inputs (-o DIR)" in got.output
    assert not (root / "out.png").exists()


def test_an_empty_file_list_and_a_missing_output_are_usage_errors_in_the_errors_page(run_installed, pictures):
    from pathlib import Path

    root, _ = pictures
    (root / "list.txt").write_bytes(b"")
    errors = (Path(__file__).parent.parent / "docs" / "errors.md").read_text(encoding="utf-8")
    for args, message in ((["--files-from", "list.txt", "-o", "out"], "no INPUT given (--files-from list.txt lists none)"),
                          (["a.png"], "Missing argument 'OUTPUT' (or give -o DIR, --suffix or --name)")):
        got = run_installed(["apply", "edge", *args], cwd=root)
        assert got.returncode == 2 and message in got.stderr.decode()
        assert message in errors
    assert not (root / "out").exists()


@pytest.mark.parametrize("args, message", [
    (["a.png", "-", "-o", "out"], "- (stdin) is one stream, not a file among several inputs"),
    (["a.png", "b.png", "-o", "out", "-0"], "-0/--null describes a --files-from list; give --files-from too"),
    (["a.png", "--suffix", "-x", "--name", "{stem}.png"], "--suffix and --name both name the outputs; give one"),
    (["b.png", "-o", "a.png"], "-o/--output takes a folder (created if missing), not 'a.png'"),
    (["a.png", "ax.png", "--suffix", "x"], "the output of a.png, ax.png, would replace the input ax.png"),
    (["a.png", "out.png", "--json"], None),  # INPUT OUTPUT with --json: allowed (the check below is for -)
    (["a.png", "-", "--json"], "--json needs an INPUT and OUTPUT that are files, not - (stdin or stdout)"),
    (["a.png", "-", "--dry-run"], "--dry-run needs an INPUT and OUTPUT that are files"),
    (["a.png", "--name", ""], "--name '' gives no file name"),
    (["a.png", "--name", "{stem.png"], "(write {{ and }} for braces)"),
])
def test_refusals_of_several_inputs_and_names(run_cli, pictures, monkeypatch, args, message):
    root, _ = pictures
    shutil.copy(root / "a.png", root / "ax.png")
    monkeypatch.chdir(root)
    before = sorted(p.name for p in root.iterdir())
    got = run_cli(["apply", "edge", *args])
    if message is None:
        assert got.exit_code == 0, got.output
        return
    assert got.exit_code == 2, got.output
    assert message in got.output
    assert sorted(p.name for p in root.iterdir()) == before  # nothing written, no folder made

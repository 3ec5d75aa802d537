"""The ``kernelcli`` command, in-process (CliRunner) and as the installed console script."""

from __future__ import annotations

import io
import os
import subprocess
from dataclasses import dataclass

import click
import numpy as np
import pytest
from PIL import Image

from kernelcli import engine, stages
from kernelcli.cli import cli
from kernelcli.io.inputs import read_image
from kernelcli.kernels import library

from .terminal import run_on_a_terminal

WORKED_EXAMPLE = [[4, 3, 4], [2, 4, 3], [2, 3, 4]]
SAMPLE_NAMES = ["photo.jpg", "photo.png", "gray.png", "rgba.png", "gray16.png", "gray16.tif",
                "example-5x5.npy"]
MAGIC = {
    "png": (b"\x89PNG\r\n\x1a\n",),
    "jpg": (b"\xff\xd8\xff",),
    "tif": (b"II*\x00", b"MM\x00*"),
    "bmp": (b"BM",),
    "npy": (b"\x93NUMPY",),
}


@dataclass
class Outcome:
    code: int
    stdout: bytes
    stderr: str


@pytest.fixture(params=["runner", "installed"])
def kcli(request, run_cli, run_installed):
    """Run kernelcli in-process or as a real process; same Outcome either way."""
    if request.param == "runner":
        def run(args, input=None):
            r = run_cli(args, input=input)
            assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
            return Outcome(r.exit_code, r.stdout_bytes, r.stderr)
    else:
        def run(args, input=None):
            p = run_installed(args, input=input)
            return Outcome(p.returncode, p.stdout, p.stderr.decode("utf-8", "replace"))
    return run


def ok(result):
    """Assert a CliRunner run succeeded and return it."""
    assert result.exit_code == 0, (result.exit_code, result.stderr, result.exception)
    return result


def load_npy(path_or_bytes):
    if isinstance(path_or_bytes, (bytes, bytearray)):
        return np.load(io.BytesIO(path_or_bytes), allow_pickle=False)
    return np.load(path_or_bytes, allow_pickle=False)


def pixels(path):
    with Image.open(path) as im:
        return np.asarray(im)


def assert_one_error_line(stderr: str, *fragments):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("kernelcli: error:"), stderr
    assert "Traceback" not in stderr
    for f in fragments:
        assert f in lines[0], (f, stderr)


# --------------------------------------------------------------------------
# the basic run


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_apply_sharpen_on_every_sample_keeps_mode_and_size(run_cli, samples, tmp_path, name):
    src = samples / name
    out = tmp_path / f"out{src.suffix}"
    r = ok(run_cli(["apply", "sharpen", src, out]))
    assert r.stdout_bytes == b""
    assert out.is_file()
    if src.suffix == ".npy":
        assert load_npy(out).shape == load_npy(src).shape
        return
    with Image.open(src) as a, Image.open(out) as b:
        assert b.format == a.format
        assert b.mode == a.mode
        assert b.size == a.size
    # lossless formats hold exactly the filtered, rounded and clipped values
    pic = read_image(src)
    if src.suffix != ".jpg" and not pic.has_alpha:
        expected = np.clip(np.floor(engine.convolve(pic.pixels, "sharpen") + 0.5), 0, pic.max_value)
        assert np.array_equal(read_image(out).pixels, expected)
    if pic.has_alpha:  # alpha is kept as it is
        assert np.array_equal(read_image(out).pixels[..., 3], pic.pixels[..., 3])


def test_apply_installed_command_writes_a_file(run_installed, samples, tmp_path):
    out = tmp_path / "out.png"
    p = run_installed(["apply", "sharpen", samples / "gray.png", out])
    assert p.returncode == 0, p.stderr
    assert p.stdout == b""
    with Image.open(out) as im:
        assert im.mode == "L" and im.size == (256, 170)


@pytest.mark.parametrize("ext", ["png", "jpg", "tif", "bmp", "webp", "npy"])
def test_output_format_from_extension(run_cli, samples, tmp_path, ext):
    out = tmp_path / f"out.{ext}"
    ok(run_cli(["apply", "sharpen", samples / "gray.png", out]))
    data = out.read_bytes()
    if ext == "webp":
        assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    else:
        assert data.startswith(MAGIC[ext]), data[:12]
    if ext == "npy":
        assert load_npy(out).shape == (170, 256)
    else:
        with Image.open(out) as im:
            assert im.size == (256, 170)
    assert sorted(os.listdir(tmp_path)) == [f"out.{ext}"]


def test_format_option_overrides_the_extension(run_cli, samples, tmp_path):
    out = tmp_path / "out.npy"
    ok(run_cli(["apply", "sharpen", samples / "gray.png", out, "--format", "png"]))
    assert out.read_bytes().startswith(MAGIC["png"][0])


def test_uppercase_extension(run_cli, samples, tmp_path):
    out = tmp_path / "OUT.PNG"
    ok(run_cli(["apply", "sharpen", samples / "gray.png", out]))
    assert out.read_bytes().startswith(MAGIC["png"][0])


# --------------------------------------------------------------------------
# stdin and stdout


def test_stdin_to_stdout_npy(kcli, samples):
    data = (samples / "gray.png").read_bytes()
    r = kcli(["apply", "sharpen", "-", "-"], input=data)
    assert r.code == 0, r.stderr
    arr = load_npy(r.stdout)
    assert arr.dtype == np.float32
    assert np.array_equal(arr, engine.convolve(read_image(samples / "gray.png").pixels, "sharpen"))


def test_stdout_png_with_format(kcli, samples):
    r = kcli(["apply", "sharpen", samples / "gray.png", "-", "--format", "png"])
    assert r.code == 0, r.stderr
    assert r.stdout.startswith(b"\x89PNG")
    with Image.open(io.BytesIO(r.stdout)) as im:
        assert im.mode == "L" and im.size == (256, 170)


def test_stdin_npy_to_file(run_cli, samples, tmp_path):
    out = tmp_path / "o.npy"
    ok(run_cli(["apply", "1,0,1;0,1,0;1,0,1", "-", out, "--padding", "valid"],
               input=(samples / "example-5x5.npy").read_bytes()))
    assert load_npy(out).tolist() == WORKED_EXAMPLE


# --------------------------------------------------------------------------
# the worked example


def test_worked_example_inline(kcli, samples, tmp_path):
    out = tmp_path / "out.npy"
    r = kcli(["apply", "1,0,1;0,1,0;1,0,1", samples / "example-5x5.npy", out, "--padding", "valid"])
    assert r.code == 0, r.stderr
    assert load_npy(out).tolist() == WORKED_EXAMPLE


def test_worked_example_filter_file(kcli, samples, tmp_path):
    out = tmp_path / "out.npy"
    r = kcli(["apply", samples / "example-filter.txt", samples / "example-5x5.npy", out,
              "--padding", "valid"])
    assert r.code == 0, r.stderr
    assert load_npy(out).tolist() == WORKED_EXAMPLE


# --------------------------------------------------------------------------
# every apply option changes the output


@pytest.fixture
def npy_run(run_cli, tmp_path):
    counter = iter(range(10_000))

    def run(kernel, src, *options):
        out = tmp_path / f"run{next(counter)}.npy"
        ok(run_cli(["apply", kernel, src, out, *options]))
        return load_npy(out)

    return run


@pytest.fixture(scope="module")
def gray_px(samples):
    return read_image(samples / "gray.png").pixels


def test_stride_2_halves_the_shape(npy_run, samples, gray_px):
    base = npy_run("sharpen", samples / "gray.png")
    out = npy_run("sharpen", samples / "gray.png", "--stride", "2")
    assert base.shape == (170, 256)
    assert out.shape == (85, 128)
    assert np.array_equal(out, base[::2, ::2])
    assert npy_run("sharpen", samples / "gray.png", "--stride", "2,1").shape == (85, 256)


def test_padding_changes_the_shape(npy_run, samples, gray_px):
    src = samples / "gray.png"
    base = npy_run("sharpen", src)
    assert npy_run("sharpen", src, "--padding", "valid").shape == (168, 254)
    assert npy_run("sharpen", src, "--padding", "full").shape == (172, 258)
    assert npy_run("sharpen", src, "-p", "2").shape == (172, 258)
    assert npy_run("sharpen", src, "--padding", "2,0").shape == (172, 254)
    assert np.array_equal(npy_run("sharpen", src, "--padding", "valid"), base[1:-1, 1:-1])
    # one pixel each side is what 'same' means for a 3x3 kernel
    assert np.array_equal(npy_run("sharpen", src, "--padding", "1"), base)
    # ... but not for a 5x5 kernel
    assert npy_run("gaussian-5x5", src, "--padding", "1").shape == (168, 254)


def test_pad_mode_changes_only_the_border(npy_run, samples, gray_px):
    src = samples / "gray.png"
    zero = npy_run("sharpen", src)
    for mode in ("reflect", "reflect101", "edge", "wrap"):
        other = npy_run("sharpen", src, "--pad-mode", mode)
        assert np.array_equal(other[1:-1, 1:-1], zero[1:-1, 1:-1])
        assert not np.array_equal(other[0], zero[0])
        assert np.array_equal(other, engine.convolve(gray_px, "sharpen", pad_mode=mode))


def test_dilation(npy_run, samples, gray_px):
    base = npy_run("sharpen", samples / "gray.png")
    out = npy_run("sharpen", samples / "gray.png", "--dilation", "2")
    assert out.shape == base.shape
    assert not np.array_equal(out, base)
    assert np.array_equal(out, engine.convolve(gray_px, "sharpen", dilation=2))


def test_flip_with_an_asymmetric_kernel(npy_run, samples, gray_px):
    base = npy_run("sobel-x", samples / "gray.png")
    flipped = npy_run("sobel-x", samples / "gray.png", "--flip")
    assert not np.array_equal(flipped, base)
    assert np.array_equal(flipped, -base)  # sobel-x flipped is -sobel-x


def test_normalize(npy_run, samples, gray_px):
    spec = "1,2,1;2,4,2;1,2,1"
    base = npy_run(spec, samples / "gray.png")
    out = npy_run(spec, samples / "gray.png", "--normalize")
    assert np.allclose(out, base / 16, rtol=1e-6, atol=1e-4)
    assert np.allclose(out, engine.convolve(gray_px, "gaussian"), rtol=1e-6, atol=1e-4)


def test_normalize_zero_sum_kernel_prints_a_note(run_cli, samples, tmp_path):
    r = ok(run_cli(["apply", "edge", samples / "gray.png", tmp_path / "o.npy", "--normalize"]))
    assert "kernelcli: note:" in r.stderr and "sum" in r.stderr
    r = ok(run_cli(["-q", "apply", "edge", samples / "gray.png", tmp_path / "o.npy", "--normalize"]))
    assert r.stderr == ""


def test_gray(npy_run, samples):
    src = samples / "photo.png"
    base = npy_run("sharpen", src)
    out = npy_run("sharpen", src, "--gray")
    assert base.shape == (300, 451, 3)
    assert out.shape == (300, 451)
    pic = read_image(src)
    assert np.array_equal(out, engine.convolve(stages.to_gray(pic).pixels, "sharpen"))


def test_gray_writes_a_gray_image(run_cli, samples, tmp_path):
    ok(run_cli(["apply", "sharpen", samples / "photo.png", tmp_path / "g.png", "--gray"]))
    ok(run_cli(["apply", "sharpen", samples / "rgba.png", tmp_path / "ga.png", "--gray"]))
    with Image.open(tmp_path / "g.png") as a, Image.open(tmp_path / "ga.png") as b:
        assert a.mode == "L"
        assert b.mode == "LA"


def test_alpha_modes(npy_run, samples):
    src = samples / "rgba.png"
    pic = read_image(src)
    keep = npy_run("box", src)
    pre = npy_run("box", src, "--alpha", "premultiply")
    filt = npy_run("box", src, "--alpha", "filter")
    assert keep.shape == pre.shape == filt.shape == (170, 256, 4)
    assert np.array_equal(keep[..., 3], pic.pixels[..., 3])
    assert np.array_equal(filt, engine.convolve(pic.pixels, "box"))
    assert not np.array_equal(pre, keep)
    assert not np.array_equal(filt, keep)
    assert not np.array_equal(pre[..., :3], keep[..., :3])


def test_relu(npy_run, samples, gray_px):
    base = npy_run("edge", samples / "gray.png")
    out = npy_run("edge", samples / "gray.png", "--relu")
    assert base.min() < 0
    assert out.min() == 0
    assert np.array_equal(out, np.maximum(base, 0))


@pytest.mark.parametrize("kind", ["max", "avg", "sum"])
def test_pool(npy_run, samples, kind):
    src = samples / "gray.png"
    base = npy_run("edge", src)
    out = npy_run("edge", src, "--pool", kind)
    assert out.shape == (85, 128)
    assert np.array_equal(out, engine.pool(base, kind, 2))
    sized = npy_run("edge", src, "--pool", kind, "--pool-size", "3", "--pool-stride", "2")
    assert sized.shape == ((170 - 3) // 2 + 1, (256 - 3) // 2 + 1)
    assert np.array_equal(sized, engine.pool(base, kind, 3, 2))
    relu_pooled = npy_run("edge", src, "--relu", "--pool", kind, "--pool-size", "3,2")
    assert np.array_equal(relu_pooled, engine.pool(np.maximum(base, 0), kind, (3, 2)))


def test_pool_size_without_pool_is_refused(run_cli, samples, tmp_path):
    r = run_cli(["apply", "edge", samples / "gray.png", tmp_path / "o.png", "--pool-size", "3"])
    assert r.exit_code == 2
    assert_one_error_line(r.stderr, "--pool")
    assert os.listdir(tmp_path) == []


def test_scaling_and_offset(run_cli, samples, tmp_path, gray_px):
    src = samples / "gray.png"
    raw = engine.convolve(gray_px, "edge").astype(np.float64)

    def run(name, *options):
        out = tmp_path / name
        ok(run_cli(["apply", "edge", src, out, *options]))
        return pixels(out).astype(np.int64)

    def round_clip(v):
        return np.clip(np.floor(v + 0.5), 0, 255).astype(np.int64)

    clip = run("clip.png")
    absolute = run("abs.png", "--scaling", "abs")
    stretch = run("stretch.png", "--scaling", "stretch")
    offset = run("offset.png", "--offset", "128")
    assert np.array_equal(clip, round_clip(raw))
    assert np.array_equal(absolute, round_clip(np.abs(raw)))
    assert stretch.min() == 0 and stretch.max() == 255
    expected_stretch = round_clip((raw - raw.min()) * (255 / (raw.max() - raw.min())))
    assert np.abs(stretch - expected_stretch).max() <= 1
    assert np.array_equal(offset, round_clip(raw + 128))
    for other in (absolute, stretch, offset):
        assert not np.array_equal(other, clip)


def test_quality_changes_the_file_size(run_cli, samples, tmp_path):
    src = samples / "photo.png"
    for ext in ("jpg", "webp"):
        ok(run_cli(["apply", "box", src, tmp_path / f"default.{ext}"]))
        ok(run_cli(["apply", "box", src, tmp_path / f"low.{ext}", "--quality", "10"]))
        assert (tmp_path / f"low.{ext}").stat().st_size < (tmp_path / f"default.{ext}").stat().st_size


@pytest.mark.parametrize("kernel", ["box:5", "sharpen"])
def test_png_level_changes_size_not_pixels(run_cli, samples, tmp_path, kernel):
    src = samples / "photo.png"
    for level in ("0", "1", "9"):
        ok(run_cli(["apply", kernel, src, tmp_path / f"l{level}.png", "--png-level", level]))
    ok(run_cli(["apply", kernel, src, tmp_path / "default.png"]))
    sizes = {lv: (tmp_path / f"l{lv}.png").stat().st_size for lv in "019"}
    if kernel == "box:5":  # a smooth result: every level compresses it further
        assert sizes["9"] < sizes["1"] < sizes["0"]
    else:  # a noisy one: Huffman coding alone is best, at any level but 0
        assert sizes["9"] <= sizes["1"] < sizes["0"]
    assert (tmp_path / "default.png").read_bytes() == (tmp_path / "l1.png").read_bytes()
    pixels = [np.asarray(Image.open(tmp_path / f"l{lv}.png")) for lv in "019"]
    assert all(np.array_equal(p, pixels[0]) for p in pixels)
    assert run_cli(["apply", "box", src, tmp_path / "x.png", "--png-level", "10"]).exit_code == 2


def test_quality_out_of_range_is_refused(run_cli, samples, tmp_path):
    r = run_cli(["apply", "box", samples / "gray.png", tmp_path / "o.jpg", "--quality", "0"])
    assert r.exit_code == 2
    assert_one_error_line(r.stderr)
    assert os.listdir(tmp_path) == []


def test_alpha_dropped_note_and_quiet(run_cli, samples, tmp_path):
    r = ok(run_cli(["apply", "box", samples / "rgba.png", tmp_path / "o.jpg"]))
    assert "kernelcli: note:" in r.stderr and "alpha" in r.stderr
    r = ok(run_cli(["--quiet", "apply", "box", samples / "rgba.png", tmp_path / "o2.jpg"]))
    assert r.stderr == ""


def test_max_pixels_option(run_cli, samples, tmp_path):
    r = run_cli(["apply", "box", samples / "gray.png", tmp_path / "o.png", "--max-pixels", "1000"])
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, "--max-pixels")
    assert os.listdir(tmp_path) == []
    ok(run_cli(["apply", "box", samples / "gray.png", tmp_path / "o.png", "--max-pixels", "43520"]))


def test_kernel_forms(npy_run, samples, gray_px):
    src = samples / "gray.png"
    box = npy_run("box", src)
    assert np.allclose(npy_run("box:3", src), box, atol=1e-4)
    assert np.allclose(npy_run("3x3: 1,1,1 1,1,1 1,1,1", src), box * 9, rtol=1e-6, atol=1e-3)
    assert npy_run("box:5,3", src).shape == (170, 256)
    assert np.allclose(npy_run("gaussian:1", src), engine.convolve(gray_px, "gaussian:1"))


# --------------------------------------------------------------------------
# kernels


def test_kernels_lists_every_name_with_its_description(run_cli):
    r = ok(run_cli(["kernels"]))
    lines = r.stdout.splitlines()
    lib = library()
    assert len(lib) >= 10
    for name, k in lib.items():
        assert k.description, name
        matching = [l for l in lines if l.split() and l.split()[0] == name]
        assert len(matching) == 1, name
        assert k.description in matching[0]
        assert f"{k.shape[0]}x{k.shape[1]}" in matching[0]


def test_kernels_show_gaussian(run_cli):
    r = ok(run_cli(["kernels", "show", "gaussian"]))
    lines = [l.strip() for l in r.stdout.splitlines()]
    assert "scale: 1/16" in lines
    rows = [l.split() for l in lines if l and all(t.lstrip("-").isdigit() for t in l.split())]
    assert rows == [["1", "2", "1"], ["2", "4", "2"], ["1", "2", "1"]]


def test_kernels_show_accepts_any_spec(run_cli, samples):
    r = ok(run_cli(["kernels", "show", samples / "example-filter.txt"]))
    assert "1 0 1" in r.stdout and "0 1 0" in r.stdout
    r = ok(run_cli(["kernels", "show", "1,2;3,4"]))
    assert "1 2" in r.stdout and "3 4" in r.stdout


def test_kernels_show_unknown_name(run_cli):
    r = run_cli(["kernels", "show", "gausian"])
    assert r.exit_code == 2
    assert_one_error_line(r.stderr, "gaussian")


# --------------------------------------------------------------------------
# errors


def _ragged(tmp_path):
    path = tmp_path / "ragged.txt"
    path.write_text("# ragged\n1 2 3\n4 5\n7 8 9\n")
    return path


def _noise(tmp_path):
    path = tmp_path / "noise.png"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 2048, dtype=np.uint8).tobytes())
    return path


ERROR_CASES = {
    # id: (args builder(samples, inputs dir, out dir), exit code, fragments of the message)
    "missing-input": (lambda s, d, o: ["apply", "sharpen", d / "missing.png", o / "out.png"], 1,
                      ["missing.png"]),
    "corrupt-input": (lambda s, d, o: ["apply", "sharpen", _noise(d), o / "out.png"], 1, ["noise.png"]),
    "unknown-kernel": (lambda s, d, o: ["apply", "sharpn", s / "gray.png", o / "out.png"], 2, ["sharpen"]),
    "stride-0": (lambda s, d, o: ["apply", "sharpen", s / "gray.png", o / "out.png", "--stride", "0"], 2,
                 ["--stride"]),
    "pool-median": (lambda s, d, o: ["apply", "sharpen", s / "gray.png", o / "out.png", "--pool", "median"],
                    2, ["median"]),
    "unknown-extension": (lambda s, d, o: ["apply", "sharpen", s / "gray.png", o / "out.xyz"], 2,
                          ["out.xyz"]),
    "kernel-too-large": (lambda s, d, o: ["apply", "box:7", s / "example-5x5.npy", o / "out.npy",
                                          "--padding", "valid"], 2, ["7x7"]),
    "missing-output-folder": (lambda s, d, o: ["apply", "sharpen", s / "gray.png", o / "no" / "out.png"], 1,
                              ["does not exist"]),
    "pool-window-too-large": (lambda s, d, o: ["apply", "box", s / "example-5x5.npy", o / "out.npy",
                                               "--pool", "max", "--pool-size", "10"], 2, ["10x10"]),
    "negative-padding": (lambda s, d, o: ["apply", "box", s / "gray.png", o / "out.png", "--padding", "-1"], 2,
                         ["--padding"]),
    "dilation-0": (lambda s, d, o: ["apply", "box", s / "gray.png", o / "out.png", "--dilation", "0"], 2,
                   ["--dilation"]),
    "ragged-kernel-file": (lambda s, d, o: ["apply", _ragged(d), s / "gray.png", o / "out.png"], 2,
                           ["ragged.txt", "line"]),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_errors_are_one_line_with_the_right_status(kcli, samples, tmp_path, case):
    build, code, fragments = ERROR_CASES[case]
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    r = kcli(build(samples, inputs, outputs))
    assert r.code == code, r.stderr
    assert_one_error_line(r.stderr, *fragments)
    assert r.stdout == b""
    assert os.listdir(outputs) == []


def test_in_place_overwrite(run_cli, samples, tmp_path):
    target = tmp_path / "x.png"
    target.write_bytes((samples / "gray.png").read_bytes())
    ok(run_cli(["apply", "sharpen", target, target]))
    expected = np.clip(np.floor(engine.convolve(read_image(samples / "gray.png").pixels, "sharpen") + 0.5), 0, 255)
    assert np.array_equal(read_image(target).pixels, expected)
    assert os.listdir(tmp_path) == ["x.png"]


def test_ragged_kernel_file_names_the_line(run_cli, samples, tmp_path):
    r = run_cli(["apply", _ragged(tmp_path), samples / "gray.png", tmp_path / "o.png"])
    assert r.exit_code == 2
    assert "line 3" in r.stderr


def test_internal_errors_are_one_line_too(run_cli, samples, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("synthetic failure")

    monkeypatch.setattr(stages, "apply", boom)
    r = run_cli(["apply", "sharpen", samples / "gray.png", tmp_path / "o.png"])
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, "internal error", "synthetic failure", "--debug")
    assert os.listdir(tmp_path) == []


def test_existing_output_survives_a_failed_run(run_cli, samples, tmp_path):
    out = tmp_path / "out.png"
    out.write_bytes(b"previous")
    r = run_cli(["apply", "sharpen", _noise(tmp_path), out])
    assert r.exit_code == 1
    assert out.read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["noise.png", "out.png"]


def test_empty_stdin_is_refused(run_cli, tmp_path):
    r = run_cli(["apply", "sharpen", "-", tmp_path / "o.png"], input=b"")
    assert r.exit_code == 1
    assert_one_error_line(r.stderr, "<stdin>")
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------
# help


def _all_commands(command, path=()):
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from _all_commands(sub, path + (name,))


@pytest.mark.parametrize("path", [p for p, _ in _all_commands(cli)], ids=lambda p: " ".join(p) or "kernelcli")
def test_help_of_every_command(run_cli, path):
    command = dict(_all_commands(cli))[path]
    assert (command.help or "").strip(), path
    for flag in ("--help", "-h"):
        r = run_cli([*path, flag])
        assert r.exit_code == 0, r.stderr
        assert "Usage:" in r.stdout
        assert r.stderr == ""
        assert "None" not in r.stdout  # click writes an unbounded number range as x<=None
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert (param.help or "").strip(), (path, param.name)


def test_group_help_lists_the_commands(run_cli):
    r = ok(run_cli(["--help"]))
    assert "apply" in r.stdout and "kernels" in r.stdout


def test_installed_help(run_installed):
    p = run_installed(["--help"])
    assert p.returncode == 0
    assert b"Usage:" in p.stdout


def test_version(run_cli):
    r = ok(run_cli(["--version"]))
    assert r.stdout.startswith("kernelcli ")


# --------------------------------------------------------------------------
# binary data to a terminal


def test_binary_to_a_terminal_is_refused(samples, tmp_path):
    status, received, _, err = run_on_a_terminal(["apply", "sharpen", samples / "gray.png", "-"], tmp_path,
                                                 stream="stdout", timeout=60)
    assert status != 0
    assert b"terminal" in err
    assert err.decode().startswith("kernelcli: error:")
    assert b"NUMPY" not in received
    assert os.listdir(tmp_path) == []


def test_stdin_terminal_is_refused(samples, tmp_path):
    status, _, _, err = run_on_a_terminal(["apply", "sharpen", "-", tmp_path / "o.png"], tmp_path, stream="stdin",
                                          timeout=60)
    assert status == 2
    assert_one_error_line(err.decode(), "terminal")
    assert os.listdir(tmp_path) == []


def test_closed_stdout_pipe_exits_quietly(samples):
    import shutil

    exe = shutil.which("kernelcli")
    if exe is None:
        pytest.skip("kernelcli is not on PATH")
    # photo.png as .npy is ~1.6 MB: far more than a pipe buffer, so the write hits EPIPE
    p = subprocess.Popen([exe, "apply", "sharpen", str(samples / "photo.png"), "-"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = p.stdout.read(10)
    p.stdout.close()
    err = p.stderr.read()
    p.stderr.close()
    p.wait(timeout=60)
    assert head.startswith(b"\x93NUMPY")
    assert p.returncode == 0
    assert b"Traceback" not in err and b"error" not in err


def test_16_bit_through_npy_and_back(run_cli, samples, tmp_path):
    ok(run_cli(["apply", "identity", samples / "gray16.png", tmp_path / "mid.npy"]))
    ok(run_cli(["apply", "identity", tmp_path / "mid.npy", tmp_path / "back.png"]))
    with Image.open(tmp_path / "back.png") as im:
        assert im.mode.startswith("I;16") or im.mode == "I"
    assert np.array_equal(read_image(tmp_path / "back.png").pixels, read_image(samples / "gray16.png").pixels)


def test_16_bit_stretch_uses_the_16_bit_range(run_cli, samples, tmp_path):
    ok(run_cli(["apply", "edge", samples / "gray16.png", tmp_path / "s.png", "--scaling", "stretch"]))
    px = read_image(tmp_path / "s.png")
    assert px.mode == "I;16"
    assert px.pixels.min() == 0 and px.pixels.max() == 65535


@pytest.mark.parametrize("args", [["--help"], ["apply", "--help"], ["kernels"]])
def test_commands_that_compute_nothing_import_neither_numpy_nor_numba(args, tmp_path):
    import subprocess
    import sys

    code = ("import sys; from kernelcli.cli import cli; "
            f"rc = cli.main({args!r}, standalone_mode=False); "
            "print(rc, 'numpy' in sys.modules, 'numba' in sys.modules, 'PIL' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.stdout.split()[-3:] == ["False", "False", "False"], out.stdout + out.stderr


@pytest.mark.parametrize("name, out", [("photo.png", "out.png"), ("photo.jpg", "out.png"), ("photo.jpg", "out.jpg"),
                                       ("photo.png", "out.jpg")])
def test_apply_on_one_picture_imports_only_what_it_uses(samples, tmp_path, name, out):
    # Numba (its loops are not needed for a sharpen), the kernel library's
    # "did you mean" matcher, the .npy metadata's json and base64, and
    # Pillow's plugins for formats that are neither read nor written
    import subprocess
    import sys

    unused = ("numba", "difflib", "json", "base64", "PIL.BmpImagePlugin", "PIL.GifImagePlugin",
              "PIL.PpmImagePlugin") + (("PIL.PngImagePlugin",) if name.endswith(".jpg") else ())
    code = ("import sys; before = set(sys.modules); from kernelcli.cli import cli; "
            f"rc = cli.main(['apply', 'sharpen', {str(samples / name)!r}, {out!r}], standalone_mode=False); "
            f"print(rc or 0, sorted(m for m in {unused!r} if m in sys.modules and m not in before))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.stdout.strip() == "0 []", result.stdout + result.stderr
    assert (tmp_path / out).exists()


_REUSE_PROBE = """
import resource, sys
import numpy as np
from kernelcli._process import reuse_freed_memory

if sys.argv[1] == "on":
    reuse_freed_memory()


def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def bands():  # buffers of a few MB, allocated and freed again, as bands do
    for mb in (3, 5, 2, 7):
        a = np.ones(mb * 2**20, np.uint8)
        b = np.ones(2**20, np.uint8)
        del a, b


bands()
before = faults()
for _ in range(10):
    bands()
print(faults() - before)
"""


@pytest.mark.skipif(__import__("platform").libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_freed_buffers_are_reused_without_page_faults():
    import sys

    def page_faults(setting):
        proc = subprocess.run([sys.executable, "-c", _REUSE_PROBE, setting], capture_output=True, text=True,
                              check=True)
        return int(proc.stdout)

    # 40 allocations of 1-7 MB after the first round: with the setting they
    # reuse the same memory; without it, glibc here returned the 5 MB ones
    # to the system each time (about 1280 page faults).
    on, off = page_faults("on"), page_faults("off")
    assert on < 64, (on, off)


# --------------------------------------------------------------------------
# the command's process ends without the interpreter's teardown (_process.exit_now)

_ENDING = """
import atexit, sys, threading
atexit.register(lambda: open({marker!r}, "w").close())  # runs only on the ordinary exit
if {busy}:  # a thread that is not a daemon, still running: the ordinary exit waits for it
    # (it ends when the main thread does, however long the command takes)
    threading.Thread(target=threading.main_thread().join).start()
sys.argv = ["kernelcli"] + {args!r}
from kernelcli.cli import main
main()
"""


@pytest.mark.parametrize("args, status", [
    (["apply", "sharpen", "{photo}", "-"], 0),
    (["apply", "no-such-kernel", "{photo}", "{out}"], 2),
    (["apply", "sharpen", "{missing}", "{out}"], 1),
])
@pytest.mark.parametrize("busy", [False, True])
def test_the_command_ends_at_once_unless_a_thread_still_runs(tmp_path, samples, args, status, busy):
    import sys

    marker = tmp_path / "atexit-ran"
    names = {"photo": str(samples / "photo.png"), "out": str(tmp_path / "o.png"),
             "missing": str(tmp_path / "missing.png")}
    args = [a.format(**names) for a in args]
    got = subprocess.run([sys.executable, "-c", _ENDING.format(marker=str(marker), busy=busy, args=args)],
                         capture_output=True, timeout=120,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"})
    assert got.returncode == status, got.stderr
    assert marker.exists() == busy
    if status == 0:  # everything written to stdout arrived: the whole .npy
        with Image.open(samples / "photo.png") as photo:
            assert np.load(io.BytesIO(got.stdout)).shape[:2] == photo.size[::-1]
    else:
        assert got.stderr.decode().startswith("kernelcli: ") or b"Error" in got.stderr


def test_exit_now_keeps_sys_exit_codes(tmp_path):
    import sys

    for code, status, err in (("None", 0, ""), ("3", 3, ""), ("'kernelcli: broken'", 1, "kernelcli: broken\n")):
        got = subprocess.run([sys.executable, "-c", f"from kernelcli._process import exit_now; exit_now({code})"],
                             capture_output=True, text=True, timeout=60)
        assert (got.returncode, got.stderr) == (status, err)


def test_exit_now_flushes_what_is_still_buffered():
    import sys

    got = subprocess.run([sys.executable, "-c", "import sys; from kernelcli._process import exit_now; "
                          "print('on stdout', end=''); exit_now(0)"],
                         capture_output=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"})  # buffered
    assert (got.returncode, got.stdout) == (0, b"on stdout")

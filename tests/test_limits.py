"""Option values that would take unbounded memory, absurd or non-finite numbers.

Every case runs the installed ``kernelcli`` in its own process, under an
address-space limit (RLIMIT_AS) and a timeout, so that a regression that
tries to allocate tens of gigabytes fails the test instead of exhausting the
machine. Checked: the exit status (1: the work cannot fit, 2: a usage error),
a one-line ``kernelcli: error: ...`` that names the option and, for memory,
the size it would need; no traceback, no "internal error", no output or
temporary file left behind.
"""

from __future__ import annotations

import atexit
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from PIL import Image

from .reference import png_pixels

SAMPLES = Path(__file__).parent.parent / "samples"
PHOTO = SAMPLES / "photo.png"  # 451x300 RGB
EXAMPLE = SAMPLES / "example-5x5.npy"

#: The address space each command may map: Numba and LLVM take 1-2 GiB of
#: it when they load; every case here that works needs far less than the rest.
LIMIT = 4 * 2**30
#: Seconds a case may take before the test fails (a normal run takes well under one).
TIMEOUT = 120

if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):
    _storage = tempfile.mkdtemp(prefix="kernelcli-hypothesis-")
    atexit.register(shutil.rmtree, _storage, ignore_errors=True)
    set_hypothesis_home_dir(_storage)


def _command() -> list[str]:
    exe = shutil.which("kernelcli")
    return [exe] if exe else [sys.executable, "-m", "kernelcli"]


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


def run(args, cwd=None, timeout=TIMEOUT) -> subprocess.CompletedProcess:
    """The installed command with ``args`` under :data:`LIMIT` and ``timeout``."""
    env = dict(os.environ)
    env.pop("KERNELCLI_DEBUG", None)
    return subprocess.run(_command() + [str(a) for a in args], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout,
                          preexec_fn=_limit_memory)


def error_line(proc, code: int) -> str:
    """``proc`` failed with ``code`` and one clean error line; returns it."""
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == code, (proc.returncode, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("kernelcli: error: "), err
    assert "Traceback" not in err and "internal error" not in err, err
    return lines[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


# --------------------------------------------------------------------------
# sizes that would not fit: refused with the figure, before the memory is taken

NEEDS = re.compile(r"needs [\d.]+ GiB of memory but only [\d.]+ GiB is available")


@pytest.mark.parametrize("options, names", [
    (["--dilation", "1000000000"], ["dilation 1000000000"]),
    (["--padding", "1000000000"], ["padding 1000000000"]),
    (["--padding", "1000000000", "--stride", "1000000000"], ["padding 1000000000"]),
    (["--dilation", "100000000"], ["dilation 100000000"]),
    (["--padding", "100000"], ["200298x200449x3"]),
])
def test_apply_refuses_sizes_that_cannot_fit(tmp_path, options, names):
    proc = run(["apply", "sharpen", PHOTO, tmp_path / "o.png", *options])
    line = error_line(proc, 1)
    assert NEEDS.search(line), line
    for name in names:
        assert name in line
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("command", [["conv", "sharpen"], ["apply", "sharpen"]])
def test_npy_output_refuses_a_huge_dilation_too(tmp_path, command):
    proc = run([*command, PHOTO, tmp_path / "o.npy", "--dilation", "100000000"])
    assert "dilation 100000000" in error_line(proc, 1)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("ext, mode", [("png", "zero"), ("npy", "zero"), ("npy", "reflect")])
def test_a_dilation_far_beyond_the_image_is_computed_in_bounded_memory(tmp_path, ext, mode):
    """Every tap but the centre reads padding: with zeros, sharpen is its
    centre weight alone. (Bands of rows would gather 20 million padded rows:
    101 GiB for this picture; the whole picture only indexes them.)"""
    out = tmp_path / f"o.{ext}"
    proc = run(["apply", "sharpen", PHOTO, out, "--dilation", "10000000", "--pad-mode", mode])
    assert proc.returncode == 0, proc.stderr
    if mode == "zero":
        run(["apply", "0,0,0;0,5,0;0,0,0", PHOTO, tmp_path / f"centre.{ext}"])
        assert (tmp_path / f"centre.{ext}").read_bytes() == out.read_bytes()


def test_a_band_that_cannot_fit_is_refused_with_its_size(tmp_path):
    wide = tmp_path / "wide.npy"
    np.save(wide, np.ones((4, 100_000), np.float32))
    column = "1;2;1"  # its outer taps, 10000 rows away, read zero padding
    proc = run(["apply", column, wide, tmp_path / "o.npy", "--tile-rows", "1", "--dilation", "10000"])
    line = error_line(proc, 1)
    assert NEEDS.search(line) and "a band of 20001 input rows" in line and "dilation 10000" in line
    assert leftovers(tmp_path) == ["wide.npy"]
    proc = run(["apply", column, wide, tmp_path / "o.npy", "--dilation", "10000"])  # whole: it fits
    assert proc.returncode == 0, proc.stderr
    assert np.array_equal(np.load(tmp_path / "o.npy"), np.full((4, 100_000), 2, np.float32))


def test_a_huge_stride_that_fits_gives_one_pixel(tmp_path):
    for args in (["apply", "sharpen", PHOTO, tmp_path / "a.npy", "--stride", "2147483647"],
                 ["pool", "max", PHOTO, tmp_path / "p.npy", "--stride", "2147483647"]):
        proc = run(args)
        assert proc.returncode == 0, proc.stderr
    assert np.load(tmp_path / "a.npy").shape == (1, 1, 3)
    assert np.load(tmp_path / "p.npy").shape == (1, 1, 3)


# --------------------------------------------------------------------------
# numbers beyond any size: usage errors naming the option

HUGE = "99999999999999999999999"


@pytest.mark.parametrize("args, option", [
    (["apply", "sharpen", PHOTO, "{out}", "--stride", HUGE], "--stride"),
    (["conv", "sharpen", PHOTO, "{out}", "--stride", HUGE], "--stride"),
    (["explain", "box", EXAMPLE, "--stride", HUGE], "--stride"),
    (["apply", "sharpen", PHOTO, "{out}", "--dilation", "99999999999999999999"], "--dilation"),
    (["apply", "sharpen", PHOTO, "{out}", "--padding", "99999999999999999999"], "--padding"),
    (["explain", "box", EXAMPLE, "--padding", "99999999999999999999"], "--padding"),
    (["apply", "sharpen", PHOTO, "{out}", "--padding", "3," + HUGE], "--padding"),
    (["apply", "sharpen", PHOTO, "{out}", "--pool", "max", "--pool-size", HUGE], "--pool-size"),
    (["pool", "max", PHOTO, "{out}", "--size", HUGE], "--size"),
    (["pool", "max", PHOTO, "{out}", "--stride", HUGE], "--stride"),
    (["apply", "sharpen", EXAMPLE, "{npy}", "--tile-rows", HUGE], "--tile-rows"),
    (["montage", PHOTO, "{out}", "--columns", HUGE], "--columns"),
    (["apply", "sharpen", PHOTO, "{out}", "--max-pixels", HUGE], "--max-pixels"),
])
def test_absurd_integers_are_usage_errors(tmp_path, args, option):
    out = {"{out}": tmp_path / "o.png", "{npy}": tmp_path / "o.npy"}
    proc = run([out.get(a, a) for a in args])
    line = error_line(proc, 2)
    assert option in line and ("at most" in line or "not in the range" in line)
    assert leftovers(tmp_path) == []


def test_absurd_jobs_is_a_usage_error(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(PHOTO, folder)
    proc = run(["apply", "box", folder, tmp_path / "out", "--jobs", HUGE])
    assert "--jobs" in error_line(proc, 2)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999"])
@pytest.mark.parametrize("args, option", [
    (["apply", "sharpen", PHOTO, "{out}", "--offset"], "--offset"),
    (["conv", "sharpen", PHOTO, "{out}", "--offset"], "--offset"),
    (["relu", EXAMPLE, "{out}", "--leaky"], "--leaky"),
    (["pool", "max", PHOTO, "{out}", "--offset"], "--offset"),
    (["apply", "sharpen", EXAMPLE, "{npy}", "--tile-rows", "2", "--scheduler", "tcp://127.0.0.1:9",
      "--scheduler-timeout"], "--scheduler-timeout"),
])
def test_non_finite_numbers_are_usage_errors(tmp_path, args, option, value):
    out = {"{out}": tmp_path / "o.png", "{npy}": tmp_path / "o.npy"}
    proc = run([out.get(a, a) for a in args] + [value])
    line = error_line(proc, 2)
    assert option in line and "not a finite number" in line
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------
# montage


def test_montage_columns_are_capped_at_the_number_of_maps(tmp_path):
    for columns in ("3", "10", "100000"):
        proc = run(["montage", PHOTO, tmp_path / f"m{columns}.png", "--columns", columns])
        assert proc.returncode == 0, proc.stderr
    three = np.asarray(Image.open(tmp_path / "m3.png"))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "m10.png")), three)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "m100000.png")), three)


def test_montage_sheet_obeys_max_pixels(tmp_path):
    proc = run(["montage", PHOTO, tmp_path / "m.png", "--scale", "64"])
    line = error_line(proc, 2)
    assert "--scale 64" in line and "--max-pixels" in line and "178,956,970" in line
    assert leftovers(tmp_path) == []


def test_montage_sheet_memory_is_checked_before_drawing(tmp_path):
    proc = run(["montage", PHOTO, tmp_path / "m.png", "--scale", "64", "--max-pixels", str(10**12)])
    line = error_line(proc, 1)
    assert NEEDS.search(line) and "--scale 64" in line
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------
# explain


def test_explain_limits_the_padded_input(tmp_path):
    proc = run(["explain", "box", "1,2;3,4", "--padding", "3000"], timeout=60)
    line = error_line(proc, 2)
    assert "6002x6002" in line and "--padding" in line


def test_explain_shows_nan_and_overflow(tmp_path):
    arr = np.ones((5, 5), np.float32)
    arr[2, 2] = np.nan
    np.save(tmp_path / "nan5.npy", arr)
    proc = run(["explain", "box", tmp_path / "nan5.npy"])
    assert proc.returncode == 0, proc.stderr
    assert "nan nan nan" in proc.stdout.decode() and "(nan: the window read a NaN" in proc.stdout.decode()
    proc = run(["explain", "1e38,1e38;1e38,1e38", "1e38,1e38;1e38,1e38"])
    assert proc.returncode == 0, proc.stderr
    assert "feature map (1x1):\n  inf\n  (inf: the sum is beyond float32's range" in proc.stdout.decode()


# --------------------------------------------------------------------------
# worker processes


def test_jobs_beyond_the_machine_are_lowered_with_a_note(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("L", (8, 8), 100).save(folder / name)
    proc = run(["apply", "box", folder, tmp_path / "out", "--jobs", "1000"])
    assert proc.returncode == 0, proc.stderr
    found = re.search(r"note: --jobs 1000 .* running (\d+) worker processes", proc.stderr.decode())
    assert found, proc.stderr
    assert 1 <= int(found.group(1)) <= 2 * len(os.sched_getaffinity(0))
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "b.png"]


# --------------------------------------------------------------------------
# kernel text settings


@pytest.mark.parametrize("text, words", [
    ("scale: 0\n1 1\n1 1\n", ["line 1", "scale must not be 0"]),
    ("scale: 1/2\n1 1\nscale: 1/4\n1 1\n", ["line 3", "scale is set twice", "line 1"]),
])
def test_text_kernel_scale_mistakes(tmp_path, text, words):
    kernel = tmp_path / "k.txt"
    kernel.write_text(text)
    proc = run(["apply", kernel, PHOTO, tmp_path / "o.png"])
    line = error_line(proc, 2)
    for word in words:
        assert word in line
    assert not (tmp_path / "o.png").exists()


# --------------------------------------------------------------------------
# 16-bit arrays


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_uint16_npy_is_written_as_16_bit(tmp_path, ext):
    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    np.save(tmp_path / "ramp.npy", ramp)
    proc = run(["conv", "identity", tmp_path / "ramp.npy", tmp_path / f"o.{ext}"])
    assert proc.returncode == 0, proc.stderr
    with Image.open(tmp_path / f"o.{ext}") as img:
        assert img.mode == "I;16"
        assert np.array_equal(np.asarray(img), ramp)


def test_uint16_colour_npy_is_written_as_16_bit_colour(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 65536, (16, 20, 3)).astype(np.uint16)
    np.save(tmp_path / "rgb.npy", rgb)
    proc = run(["conv", "identity", tmp_path / "rgb.npy", tmp_path / "o.png"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b""
    assert np.array_equal(png_pixels((tmp_path / "o.png").read_bytes()), rgb)
    proc = run(["conv", "identity", tmp_path / "rgb.npy", tmp_path / "o.jpg"])
    assert "JPEG cannot store 16-bit pixels; written as 8-bit" in proc.stderr.decode()


# --------------------------------------------------------------------------
# any number, anywhere: never a crash, never a leftover

EXTREMES = ["nan", "-nan", "inf", "-inf", "+inf", "1e999", "-1e999", "1e308", "-1e308", "5e-324", "-0",
            "0", "-1", "2147483647", "2147483648", "-2147483649", "9223372036854775807",
            "9223372036854775808", "99999999999999999999999", "1" + "0" * 60, "1e38", "3.5", "0x10", ""]
NUMBERS = st.one_of(
    st.sampled_from(EXTREMES),
    st.integers(1, 64).map(str),
    st.integers(10**6, 2**80).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
PAIRS = st.one_of(NUMBERS, st.tuples(NUMBERS, NUMBERS).map(",".join))

LIMITS = settings(
    max_examples=12,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)

#: For each command: its arguments ({in}: a small RGB input, {gray}: a gray one, {out}: the output)
#: and its numeric options with the values Hypothesis draws for them.
FAMILIES = {
    "apply": (["apply", "sharpen", "{in}", "{out}"],
              {"--stride": PAIRS, "--padding": PAIRS, "--dilation": PAIRS, "--offset": NUMBERS,
               "--quality": NUMBERS, "--png-level": NUMBERS, "--max-pixels": NUMBERS}),
    "apply-pool": (["apply", "sharpen", "{in}", "{out}", "--pool", "max"],
                   {"--pool-size": PAIRS, "--pool-stride": PAIRS}),
    "conv": (["conv", "box", "{in}", "{npy}"],
             {"--stride": PAIRS, "--padding": PAIRS, "--dilation": PAIRS, "--offset": NUMBERS}),
    "relu": (["relu", "{in}", "{out}"], {"--leaky": NUMBERS, "--offset": NUMBERS}),
    "pool": (["pool", "avg", "{in}", "{out}"], {"--size": PAIRS, "--stride": PAIRS, "--offset": NUMBERS}),
    "pool-stream": (["pool", "max", "{in.npy}", "{npy}"], {"--size": PAIRS, "--stride": PAIRS}),
    "montage": (["montage", "{in}", "{out}"], {"--columns": NUMBERS, "--scale": NUMBERS, "--max-pixels": NUMBERS}),
    "explain": (["explain", "box", "{gray}", "--pool", "max"],
                {"--stride": PAIRS, "--padding": PAIRS, "--pool-size": PAIRS, "--pool-stride": PAIRS}),
}
CASES = [(family, option) for family in sorted(FAMILIES) for option in sorted(FAMILIES[family][1])]


@pytest.mark.parametrize("family, option", CASES)
def test_extreme_numbers_never_crash(family, option):
    """One option at a time (others at their defaults, so that the drawn value
    is the one tried): a few fixed extremes, then :data:`LIMITS` drawn values."""
    @LIMITS
    @given(value=FAMILIES[family][1][option])
    @example(value="nan")
    @example(value="-inf")
    @example(value="0")
    @example(value="2147483648")
    @example(value=HUGE)
    @example(value="3," + HUGE)
    def check(value):
        with tempfile.TemporaryDirectory(prefix="kernelcli-limits-") as folder:
            folder = Path(folder)
            small = folder / "in.png"
            Image.fromarray(np.arange(7 * 6 * 3, dtype=np.uint8).reshape(7, 6, 3)).save(small)
            gray = folder / "gray.png"
            Image.fromarray(np.arange(7 * 6, dtype=np.uint8).reshape(7, 6)).save(gray)
            array = folder / "in.npy"  # (a .npy into a .npy streams a band of rows at a time)
            np.save(array, np.arange(9 * 8 * 3, dtype=np.float32).reshape(9, 8, 3))
            before = set(os.listdir(folder))
            files = {"{in}": small, "{gray}": gray, "{in.npy}": array, "{out}": folder / "out.png",
                     "{npy}": folder / "out.npy"}
            args = [files.get(a, a) for a in FAMILIES[family][0]] + [f"{option}={value}"]
            proc = run(args, timeout=TIMEOUT)
            err = proc.stderr.decode("utf-8", "replace")
            assert proc.returncode in (0, 1, 2), (args, proc.returncode, err)
            assert "Traceback" not in err and "internal error" not in err, (args, err)
            made = set(os.listdir(folder)) - before
            if proc.returncode:
                lines = err.splitlines()
                assert len(lines) == 1 and lines[0].startswith("kernelcli: error: "), (args, err)
                assert not made, (args, made)
            else:
                assert all(not name.startswith(".") and not name.endswith(".part") for name in made), (args, made)

    check()


# --------------------------------------------------------------------------
# the library refuses the same values


@pytest.mark.parametrize("options", [{"stride": 10**30}, {"dilation": (1, 2**31)}, {"padding": 10**20},
                                     {"padding": ((0, 2**40), (0, 0))}])
def test_the_engine_refuses_sizes_beyond_its_arithmetic(options):
    from kernelcli import engine
    from kernelcli.errors import UsageError

    with pytest.raises(UsageError, match="at most 2147483647"):
        engine.convolve(np.ones((5, 5), np.float32), "box", **options)


def test_large_index_maps_are_not_kept():
    from kernelcli import engine
    from kernelcli.engine import shapes

    shapes._source_index.cache_clear()
    engine.source_index(10, (engine.CACHE_INDEX_UP_TO, 0), "zero")
    assert shapes._source_index.cache_info().currsize == 0
    engine.source_index(10, (3, 3), "zero")
    assert shapes._source_index.cache_info().currsize == 1

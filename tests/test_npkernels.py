"""The NumPy kernels (used for small images before Numba is loaded) give the
jitted kernels' numbers bit for bit, over every geometry and pad mode."""

from __future__ import annotations

import numpy as np
import pytest

from kernelcli import engine
from kernelcli.engine import _jit, _npkernels, backends
from kernelcli.errors import UsageError

RNG = np.random.default_rng(11)
SHAPES = [(1, 9, 1), (9, 1, 3), (7, 8, 1), (13, 11, 3), (5, 6, 4), (20, 17, 2)]
KERNELS = [(1, 1), (3, 3), (2, 4), (5, 3), (7, 7)]
STEPS = [(1, 1, 1, 1), (2, 1, 1, 2), (3, 2, 2, 1)]  # sy, sx, dy, dx


def _image(h, w, c):
    x = RNG.standard_normal((h, w * c)).astype(np.float32)
    x[RNG.random(x.shape) < 0.05] = 0.0
    return x


def _both(name, *args, shape):
    a = np.empty(shape, np.float32)
    b = np.full(shape, 7.0, np.float32)  # every value must be overwritten
    getattr(_jit, name)(*args, a)
    getattr(_npkernels, name)(*args, b)
    return a, b


@pytest.mark.parametrize("h, w, c", SHAPES)
@pytest.mark.parametrize("kh, kw", KERNELS)
def test_correlation_is_bit_identical(h, w, c, kh, kw):
    x = _image(h, w, c)
    k = RNG.standard_normal((kh, kw)).astype(np.float32)
    k[RNG.random(k.shape) < 0.2] = 0.0
    kd = RNG.standard_normal((kh, kw, c)).astype(np.float32)
    checked = 0
    for sy, sx, dy, dx in STEPS:
        for padding in ["same", "valid", "full", (0, 3)]:
            for mode in engine.PAD_MODES:
                try:
                    pads, (oh, ow) = engine.geometry((h, w), (kh, kw), (sy, sx), padding, (dy, dx))
                except UsageError:
                    continue
                rm = engine.source_index(h, pads[0], mode)
                cm = engine.source_index(w, pads[1], mode)
                args = (x, c, k, rm, cm, pads[1][0], sy, sx, dy, dx)
                a, b = _both("correlate_rows", *args, shape=(oh, ow * c))
                assert np.array_equal(a, b), (sy, sx, dy, dx, padding, mode)
                args = (x, c, kd, rm, cm, pads[1][0], sy, sx, dy, dx)
                a, b = _both("correlate_depth", *args, shape=(oh, ow))
                assert np.array_equal(a, b), ("depth", sy, sx, dy, dx, padding, mode)
                checked += 1
    assert checked > 0


@pytest.mark.parametrize("h, w, c", SHAPES)
@pytest.mark.parametrize("kind", [0, 1, 2])
def test_pooling_is_bit_identical_nan_included(h, w, c, kind):
    x = _image(h, w, c)
    x[0, 0] = np.nan
    for ph, pw, sy, sx in [(1, 1, 1, 1), (2, 2, 2, 2), (3, 2, 1, 2), (1, 3, 2, 1)]:
        if ph > h or pw > w:
            continue
        oh, ow = (h - ph) // sy + 1, (w - pw) // sx + 1
        a, b = _both("pool_rows", x, c, kind, ph, pw, sy, sx, shape=(oh, ow * c))
        assert np.array_equal(a, b, equal_nan=True), (ph, pw, sy, sx)


def test_infinities_spread_the_same_way():
    x = _image(9, 10, 1)
    x[4, 5] = np.inf
    x[2, 2] = -np.inf
    k = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], np.float32)
    rm = engine.source_index(9, (1, 1), "reflect")
    cm = engine.source_index(10, (1, 1), "reflect")
    a, b = _both("correlate_rows", x, 1, k, rm, cm, 1, 1, 1, 1, 1, shape=(9, 10))
    assert np.array_equal(a, b, equal_nan=True)


@pytest.mark.parametrize("kernel", ["sharpen", "box:7", "gaussian:2", "2,0,1;0,0,3", "edge"])
@pytest.mark.parametrize("pad_mode", ["zero", "reflect", "wrap"])
def test_engine_gives_the_same_bits_on_either_backend(monkeypatch, kernel, pad_mode):
    """Through the public engine, direct and separable paths and pooling alike."""
    x = RNG.uniform(0, 255, (23, 19, 3)).astype(np.float32)
    results = []
    for module in (_jit, _npkernels):
        monkeypatch.setattr(backends, "backend", lambda work, m=module: m)
        y = engine.convolve(x, kernel, stride=(1, 2), pad_mode=pad_mode)
        results.append((y, engine.pool(y, "avg", 2), engine.pool(y, "max", (2, 3), 1)))
    for a, b in zip(*results):
        assert np.array_equal(a, b)


def test_numpy_backend_only_while_numba_is_not_loaded(monkeypatch):
    import sys

    assert backends.backend(10) is _jit  # Numba is loaded in this test process
    monkeypatch.delitem(sys.modules, "numba")
    assert backends.backend(10) is _npkernels
    assert backends.backend(backends.NUMPY_MAX_WORK + 1) is _jit


def test_a_small_image_command_never_loads_numba(samples, tmp_path):
    import subprocess
    import sys

    code = ("import sys; from kernelcli.cli import cli; "
            f"rc = cli.main(['apply', 'sharpen', {str(samples / 'photo.png')!r}, {str(tmp_path / 'o.png')!r}, "
            "'--relu', '--pool', 'max'], standalone_mode=False); "
            "print(rc, 'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() in (["0", "False"], ["None", "False"]), out.stderr
    assert (tmp_path / "o.png").exists()


@pytest.mark.parametrize("limit, loaded", [(None, "False"), (1000, "True")])
def test_bands_load_numba_once_for_an_image_whose_total_work_is_large(samples, tmp_path, limit, loaded):
    """The choice is made for the whole image (every band is small)."""
    import subprocess
    import sys

    code = ("import sys; from kernelcli import engine, stages; from kernelcli.engine import plan; from kernelcli.run import bands; from kernelcli.io import inputs, pixels; "
            + (f"plan.NUMPY_MAX_BANDED_WORK = {limit}; " if limit else "")
            + f"picture = inputs.read_image({str(samples / 'photo.png')!r}, integers=True); "
            "conv, _ = stages.make_conv('box:3'); "
            "out = bands.apply_in_bands(picture, conv, convert=lambda b: pixels.to_array(b, 'PNG'), tile_rows=16); "
            "print(out.shape == picture.pixels.shape, 'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["True", loaded], out.stderr


@pytest.mark.parametrize("nan", [False, True])
def test_a_kernel_run_by_fft_never_loads_numba(nan):
    """FFTs need no Numba; tiles with NaN, recomputed directly, run on the
    NumPy twins (they are small)."""
    import subprocess
    import sys

    code = ("import sys, numpy as np; from kernelcli import engine; "
            "rng = np.random.default_rng(1); x = rng.random((700, 650), dtype=np.float32); "
            + ("x[300, 200] = np.nan; " if nan else "")
            + "k = rng.standard_normal((31, 31)).astype(np.float32); "
            "assert engine.method_for(k, x.shape) == 'fft'; "
            "y = engine.convolve(x, k); "
            "print(int(np.isnan(y).sum()), 'numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == [str(31 * 31 if nan else 0), "False"], out.stderr


def test_multiply_adds_counts_one_dimensional_passes_for_low_rank_kernels():
    from kernelcli.kernels import get_kernels

    gaussian = get_kernels("gaussian:2")[0].array  # rank 1
    kh, kw = gaussian.shape
    assert kh * kw >= engine.SEPARABLE_MIN_TAPS
    assert engine.multiply_adds(gaussian, 100) == 100 * (kh + kw)
    assert engine.multiply_adds(np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]]), 100) == 500  # nonzero taps
    two = np.outer(np.arange(1, 10), np.ones(9)) + np.outer(np.ones(9), np.arange(9) ** 2)  # rank 2
    assert engine.multiply_adds(two, 10) == 10 * 2 * 18
    assert engine.multiply_adds(np.ones((3, 3, 4)), 10) == 10 * 36  # a K x K x C kernel sums every tap


def test_max_pooling_bits_with_signed_zeros_and_two_nan_payloads():
    """Ties of +0 and -0 keep the earlier tap, and of two NaN the later wins,
    in the NumPy twin as in the jitted loop."""
    rng = np.random.default_rng(1)
    x = rng.choice(np.array([0.0, -0.0, 1.0, -1.0, np.nan, 2.0], np.float32), size=(60, 90 * 3))
    x = x.astype(np.float32)
    x.view(np.uint32)[rng.random(x.shape) < 0.05] = 0xFFC12345
    for ph, pw, sy, sx in [(2, 2, 2, 2), (3, 2, 1, 2), (2, 3, 3, 1), (1, 1, 1, 1)]:
        oh, ow = (60 - ph) // sy + 1, (90 - pw) // sx + 1
        a, b = _both("pool_rows", x, 3, 0, ph, pw, sy, sx, shape=(oh, ow * 3))
        assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), (ph, pw, sy, sx)

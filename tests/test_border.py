"""Constant padding with any value (--border-value, ``convolve(..., cval=V)``),
against scipy.ndimage.correlate(mode="constant", cval=V) and a plain loop."""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy import ndimage

from kernelcli import engine
from kernelcli.kernels import get_kernel

from .reference import correlate_ref

RNG = np.random.default_rng(5)
GRAY = (RNG.random((37, 29)) * 255).astype(np.float32)
RGB = (RNG.random((19, 23, 3)) * 255).astype(np.float32)
SQUARE = (RNG.random((64, 64)) * 255).astype(np.float32)


def scipy_correlate(x, k, cval):
    x = np.asarray(x, np.float64)
    k = np.asarray(k, np.float32).astype(np.float64)
    if x.ndim == 3:
        return np.dstack([scipy_correlate(x[..., i], k, cval) for i in range(x.shape[2])])
    return ndimage.correlate(x, k, mode="constant", cval=cval)


def close(got, expected):
    np.testing.assert_allclose(got, expected, rtol=2e-6, atol=2e-6 * np.abs(expected).max())


@pytest.mark.parametrize("kernel, method", [
    (RNG.random((3, 5)) - 0.3, "direct"),
    (np.outer([1, 4, 6, 4, 1], [1, 2, 3, 2, 1]) / 81.0, "separable"),
    (RNG.random((25, 25)), "fft"),
])
@pytest.mark.parametrize("cval", [37.5, -200.0])
def test_border_value_equals_scipy_constant_mode(kernel, method, cval):
    assert engine.method_for(kernel, SQUARE.shape) == method
    close(engine.convolve(SQUARE, kernel, cval=cval), scipy_correlate(SQUARE, kernel, cval))


def test_border_value_on_colour_and_a_depth_kernel():
    k = RNG.random((3, 3)) - 0.5
    close(engine.convolve(RGB, k, cval=9.0), scipy_correlate(RGB, k, 9.0))
    depth = RNG.random((3, 3, 3))
    expected = sum(scipy_correlate(RGB[..., c], depth[..., c], 9.0) for c in range(3))
    close(engine.convolve(RGB, depth, cval=9.0), expected)


@pytest.mark.parametrize("stride, padding, dilation", [(2, "full", 1), ((1, 3), 4, 2), (3, "same", (2, 1))])
def test_border_value_with_stride_padding_and_dilation(stride, padding, dilation):
    k = RNG.random((3, 4)) - 0.5
    from .reference import pads_for

    pads = pads_for(padding, k.shape, dilation)
    padded = np.pad(GRAY.astype(np.float64), pads, constant_values=-12.0)
    expected = correlate_ref(padded, k.astype(np.float32), stride, dilation=dilation)
    close(engine.convolve(GRAY, k, stride, padding, dilation=dilation, cval=-12.0), expected)


def test_the_border_value_belongs_to_pad_mode_zero():
    with pytest.raises(engine.shapes.UsageError, match="pad mode reflect takes none"):
        engine.convolve(GRAY, "box", pad_mode="reflect", cval=1.0)


def test_border_value_through_the_command_in_bands_and_tiles(run_installed, tmp_path):
    from PIL import Image

    src = tmp_path / "in.png"
    Image.fromarray(GRAY.astype(np.uint8)).save(src)
    done = run_installed(["apply", "sharpen", src, tmp_path / "o.png", "--border-value", "255"])
    assert done.returncode == 0, done.stderr
    expected = scipy_correlate(GRAY.astype(np.uint8), np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]]), 255)
    with Image.open(tmp_path / "o.png") as im:
        np.testing.assert_array_equal(np.asarray(im), np.clip(np.round(expected), 0, 255).astype(np.uint8))
    npy = tmp_path / "in.npy"
    np.save(npy, RGB)
    for out, extra in (("whole.npy", []), ("tiles.npy", ["--tile-rows", "3"])):
        done = run_installed(["apply", "gaussian:1.5", npy, tmp_path / out, "--border-value", "-40", "--stride", "2",
                              *extra])
        assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "tiles.npy"), np.load(tmp_path / "whole.npy"))
    from kernelcli.kernels import get_kernel

    close(np.load(tmp_path / "whole.npy"), scipy_correlate(RGB, get_kernel("gaussian:1.5").array, -40)[::2, ::2])


def test_border_value_usage_errors_and_explain(run_installed):
    done = run_installed(["conv", "box", "-", "-", "--pad-mode", "edge", "--border-value", "3"])
    assert done.returncode == 2
    assert b"--border-value is the constant of --pad-mode zero" in done.stderr
    done = run_installed(["explain", "box", "1,2;3,4", "--padding", "1", "--border-value", "10"])
    assert done.returncode == 0, done.stderr
    assert b"border value 10" in done.stdout and b"10 10 10 10" in done.stdout


# --------------------------------------------------------------------------
# the origin: which kernel cell lies over the output pixel


def test_every_origin_equals_scipy_s_under_the_stated_conversion():
    k = RNG.random((4, 5)) - 0.4
    for oy in range(4):
        for ox in range(5):
            expected = ndimage.correlate(GRAY.astype(np.float64), k.astype(np.float32).astype(np.float64),
                                         mode="constant", origin=(oy - 4 // 2, ox - 5 // 2))
            close(engine.convolve(GRAY, k, origin=(oy, ox)), expected)


def test_origin_with_dilation_border_value_and_flip_against_a_plain_loop():
    k = RNG.random((3, 4)) - 0.4
    padded = np.pad(GRAY.astype(np.float64), ((0, 4), (6, 3)), constant_values=7.0)  # cell (0, 2), dilation 2,3
    expected = correlate_ref(padded, k.astype(np.float32), dilation=(2, 3))
    close(engine.convolve(GRAY, k, dilation=(2, 3), origin=(0, 2), cval=7.0), expected)
    # flip: the origin names a cell of the kernel as given, which moves with it
    close(engine.convolve(GRAY, k, origin=(0, 2), flip=True), engine.convolve(GRAY, k[::-1, ::-1], origin=(2, 1)))


def test_origin_through_the_command_bands_tiles_and_imagemagick_strings(run_installed, tmp_path):
    src = tmp_path / "in.npy"
    np.save(src, RGB)
    runs = {"opt.npy": ["1,2,3;4,5,6", "--origin", "1,0"], "im.npy": ["3x2+0+1: 1,2,3 4,5,6"],
            "tiles.npy": ["1,2,3;4,5,6", "--origin", "1,0", "--tile-rows", "2"]}
    for out, args in runs.items():
        done = run_installed(["apply", args[0], src, tmp_path / out, *args[1:]])
        assert done.returncode == 0, done.stderr
    k = np.array([[1, 2, 3], [4, 5, 6]], np.float64)
    expected = np.dstack([ndimage.correlate(RGB[..., c].astype(np.float64), k, mode="constant", origin=(0, -1))
                          for c in range(3)])
    for out in runs:
        close(np.load(tmp_path / out), expected)


def test_origin_errors_and_explain(run_installed):
    done = run_installed(["conv", "box", "-", "-", "--origin", "3,0"])
    assert done.returncode == 2 and b"the origin 3,0 is not a cell of the 3x3 kernel" in done.stderr
    done = run_installed(["conv", "box", "-", "-", "--origin", "0,0", "--padding", "valid"])
    assert done.returncode == 2 and b"an origin goes with padding same" in done.stderr
    done = run_installed(["explain", "box", "1,2,3;4,5,6;7,8,9", "--padding", "same", "--origin", "0,0"])
    assert done.returncode == 0, done.stderr
    assert b"origin: row 0, column 0" in done.stdout and b"padding same (rows 0+2, columns 0+2)" in done.stdout


def test_kept_alpha_and_an_unsharp_threshold_follow_the_origin(run_cli, tmp_path):
    """Alpha moves through the geometry as if filtered by the identity at the
    origin cell, and the threshold compares each output with the input under it."""
    src = tmp_path / "in.npy"
    np.save(src, GRAY)
    assert run_cli(["apply", "unsharp:1,1,0.1", src, tmp_path / "o.npy", "--origin", "0,0"]).exit_code == 0
    got = np.load(tmp_path / "o.npy")
    k = get_kernel("unsharp:1,1,0.1").array.astype(np.float64)
    r = k.shape[0]
    padded = np.pad(GRAY.astype(np.float64), ((0, r - 1), (0, r - 1)))
    sharp = correlate_ref(padded, k)
    expected = np.where(2 * np.abs(sharp - GRAY) < 0.1 * 255, GRAY, sharp)
    close(got, expected)
    from kernelcli import stages
    from kernelcli.io.picture import Picture

    rgba = np.dstack([RGB, (RNG.random(RGB.shape[:2]) * 255).astype(np.float32)])
    conv, _ = stages.make_conv("3x3+0+0: 0,0,0 0,1,0 0,0,0", padding="same")
    out = stages.conv_stage(Picture(rgba, mode="RGBA"), conv)
    np.testing.assert_array_equal(out.pixels[..., 3], np.pad(rgba[..., 3], ((0, 2), (0, 2)))[:19, :23])


@pytest.mark.parametrize("kwargs, message", [
    ({"cval": "white"}, "the border value must be a number, got 'white'"),
    ({"cval": float("nan")}, "the border value must be a finite number"),
    ({"cval": 3.0, "pad_mode": "edge"}, "a border value is the constant of pad mode zero; pad mode edge takes none"),
    ({"origin": (1,)}, "the origin must be a pair of kernel cells (Y, X)"),
    ({"origin": (1.5, 0)}, "the origin must be a pair of kernel cells (Y, X), got (1.5, 0)"),
    ({"origin": (0, 3)}, "the origin 0,3 is not a cell of the 3x3 kernel"),
    ({"origin": (0, 0), "padding": "valid"}, "an origin goes with padding same"),
])
def test_the_api_refuses_bad_border_values_and_origins(kwargs, message):
    from kernelcli.errors import UsageError

    with pytest.raises(UsageError, match=re.escape(message)):
        engine.convolve(GRAY, "box", **kwargs)

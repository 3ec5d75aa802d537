"""kernelcli.engine (convolve, pool, relu) against slow reference implementations.

The reference (tests/reference.py) pads explicitly with np.pad and loops over
output positions in float64; SciPy's ndimage is a second, independent oracle.
"""

from __future__ import annotations

import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference import (  # noqa: E402
    pair, correlate_ref, pads_for, pool_ref, rand_image, rand_kernel, reach_of, relu_ref, same_pads,
)

from kernelcli import engine  # noqa: E402
from kernelcli.engine import ops  # noqa: E402
from kernelcli.errors import KernelcliError, KernelError, UsageError  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"

PAD_MODES = ["zero", "reflect", "reflect101", "edge", "wrap"]

EXAMPLE_IMAGE = [
    [1, 1, 1, 0, 0],
    [0, 1, 1, 1, 0],
    [0, 0, 1, 1, 1],
    [0, 0, 1, 1, 0],
    [0, 1, 1, 0, 0],
]
EXAMPLE_FILTER = [[1, 0, 1], [0, 1, 0], [1, 0, 1]]
EXAMPLE_RESULT = [[4, 3, 4], [2, 4, 3], [2, 3, 4]]


# --------------------------------------------------------------------------
# helpers


def assert_close(got, want, x, k):
    """float32 accumulation vs float64 reference: tolerance scaled to the data."""
    want = np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == np.float32
    magnitude = max(1.0, float(np.abs(np.asarray(x, np.float64)).max()) * float(np.abs(np.asarray(k, np.float64)).sum()))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4 * magnitude)


def fits(shape, kshape, padding, stride, dilation):
    pads = pads_for(padding, kshape, dilation)
    ry, rx = reach_of(kshape, pair(dilation))
    sy, sx = pair(stride)
    oh = math.floor((shape[0] + sum(pads[0]) - ry) / sy) + 1
    ow = math.floor((shape[1] + sum(pads[1]) - rx) / sx) + 1
    return oh >= 1 and ow >= 1


def run_case(shape, kshape, stride, padding, pad_mode, dilation, seed, flip=False):
    x = rand_image(shape, seed)
    k = rand_kernel(kshape, seed)
    got = engine.convolve(x, k, stride=stride, padding=padding, pad_mode=pad_mode,
                          dilation=dilation, flip=flip)
    kref = k[::-1, ::-1] if flip else k
    want = correlate_ref(x, kref, stride=pair(stride), pads=pads_for(padding, kshape, dilation),
                         pad_mode=pad_mode, dilation=pair(dilation))
    assert got.ndim == x.ndim
    assert_close(got, want, x, k)


# --------------------------------------------------------------------------
# the article's worked example


def test_worked_example_exact():
    got = engine.convolve(np.array(EXAMPLE_IMAGE), np.array(EXAMPLE_FILTER), padding="valid")
    assert got.dtype == np.float32
    assert np.array_equal(got, np.array(EXAMPLE_RESULT, dtype=np.float32))


def test_worked_example_inline_spec():
    got = engine.convolve(np.array(EXAMPLE_IMAGE), "1,0,1;0,1,0;1,0,1", padding="valid")
    assert np.array_equal(got, np.array(EXAMPLE_RESULT, dtype=np.float32))


@pytest.mark.parametrize("as_path", [False, True], ids=["str", "Path"])
def test_worked_example_from_sample_files(as_path):
    image = np.load(SAMPLES / "example-5x5.npy")
    assert image.shape == (5, 5)
    spec = SAMPLES / "example-filter.txt"
    got = engine.convolve(image, spec if as_path else str(spec), padding="valid")
    assert np.array_equal(got, np.array(EXAMPLE_RESULT, dtype=np.float32))


def test_worked_example_matches_reference():
    want = correlate_ref(np.array(EXAMPLE_IMAGE), np.array(EXAMPLE_FILTER))
    assert np.array_equal(want, np.array(EXAMPLE_RESULT, dtype=np.float64))


def test_worked_example_same_padding():
    # zero padding, same: the border outputs only see part of the filter
    got = engine.convolve(np.array(EXAMPLE_IMAGE), np.array(EXAMPLE_FILTER), padding="same")
    want = correlate_ref(np.array(EXAMPLE_IMAGE), np.array(EXAMPLE_FILTER), pads=((1, 1), (1, 1)))
    assert np.array_equal(got, want.astype(np.float32))
    assert np.array_equal(got[1:4, 1:4], np.array(EXAMPLE_RESULT, dtype=np.float32))


# --------------------------------------------------------------------------
# output size rule


SIZE_CASES = [
    (n, k, pads, s, d)
    for n in (1, 2, 5, 6, 13)
    for k in (1, 2, 3, 4, 7)
    for pads in ((0, 0), (1, 1), (0, 1), (2, 3))
    for s in (1, 2, 3)
    for d in (1, 2)
]


def test_output_size_rule():
    for n, k, pads, s, d in SIZE_CASES:
        reach = d * (k - 1) + 1
        want = math.floor((n + pads[0] + pads[1] - reach) / s) + 1
        got = engine.output_size(n, k, pads, s, d)
        if want >= 1:
            assert got == want, (n, k, pads, s, d)
        else:
            assert got < 1, (n, k, pads, s, d)


@pytest.mark.parametrize(
    "shape,kshape,stride,padding,dilation",
    [
        ((5, 5), (3, 3), 1, "valid", 1),
        ((5, 5), (3, 3), 2, "valid", 1),
        ((7, 7), (3, 3), 2, 1, 1),
        ((7, 8), (3, 3), 3, 1, 1),
        ((32, 32), (5, 5), 1, "valid", 1),
        ((227, 31), (11, 11), 4, "valid", 1),
        ((10, 9), (4, 2), (2, 1), "same", 1),
        ((10, 9), (4, 2), (3, 2), "full", (2, 1)),
        ((6, 11), (2, 5), 2, (1, 2), 2),
        ((1, 1), (1, 1), 3, 0, 1),
        ((1, 9), (1, 3), (1, 2), "same", 2),
    ],
)
def test_output_shape_follows_rule(shape, kshape, stride, padding, dilation):
    pads = pads_for(padding, kshape, dilation)
    sy, sx = pair(stride)
    dy, dx = pair(dilation)
    oh = (shape[0] + sum(pads[0]) - (dy * (kshape[0] - 1) + 1)) // sy + 1
    ow = (shape[1] + sum(pads[1]) - (dx * (kshape[1] - 1) + 1)) // sx + 1
    got = engine.convolve(np.zeros(shape, np.float32), np.ones(kshape), stride=stride,
                          padding=padding, dilation=dilation)
    assert got.shape == (oh, ow)
    got3 = engine.convolve(np.zeros(shape + (3,), np.float32), np.ones(kshape), stride=stride,
                           padding=padding, dilation=dilation)
    assert got3.shape == (oh, ow, 3)


@pytest.mark.parametrize("kshape", [(1, 1), (2, 2), (3, 3), (4, 4), (2, 5), (5, 2), (7, 6)])
@pytest.mark.parametrize("dilation", [1, 2, (2, 1)])
def test_same_keeps_size_full_grows(kshape, dilation):
    x = np.ones((9, 8), np.float32)
    assert engine.convolve(x, np.ones(kshape), padding="same", dilation=dilation).shape == (9, 8)
    ry, rx = reach_of(kshape, pair(dilation))
    assert engine.convolve(x, np.ones(kshape), padding="full", dilation=dilation).shape == (9 + ry - 1, 8 + rx - 1)
    assert engine.resolve_padding("same", (ry, rx)) == same_pads((ry, rx))


# --------------------------------------------------------------------------
# convolution vs the reference


SHAPES = [
    (1, 1), (1, 7), (7, 1), (1, 2), (2, 1), (2, 2), (5, 5), (6, 8), (9, 4), (8, 13),
    (1, 5, 3), (5, 1, 2), (4, 5, 1), (5, 6, 2), (6, 5, 3), (7, 7, 4), (8, 6, 4),
]

# A) every shape x every pad mode, 3x3 / 2x2 / 3x2 kernel (in turn), same padding, stride 1
CASES_A = [
    (shape, [(3, 3), (2, 2), (3, 2)][i % 3], 1, "same", mode, 1)
    for i, (shape, mode) in enumerate(itertools.product(SHAPES, PAD_MODES))
]

# B) kernel sizes (odd, even, non-square) x padding specs
KSHAPES = [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5), (6, 6), (7, 7),
           (2, 5), (5, 2), (1, 3), (3, 1), (4, 6), (7, 2)]
PADDINGS = ["same", "valid", "full", 0, 1, 2, (1, 2)]
CASES_B = [
    (shape, kshape, 1, padding, "zero", 1)
    for kshape, padding in itertools.product(KSHAPES, PADDINGS)
    for shape in [(11, 13) if kshape[0] % 2 else (10, 9, 3)]
]

# C) strides x dilations x pad modes
STRIDES = [1, 2, 3, (2, 1), (1, 3)]
DILATIONS = [1, 2, (2, 1)]
CASES_C = [
    (shape, kshape, stride, padding, mode, dilation)
    for (stride, dilation, mode), (shape, kshape, padding) in zip(
        itertools.product(STRIDES, DILATIONS, PAD_MODES),
        itertools.cycle([((12, 11), (3, 3), "same"), ((9, 14, 2), (2, 3), "full"),
                         ((13, 10), (3, 4), 2), ((10, 10, 3), (5, 5), "valid"),
                         ((7, 9), (4, 2), (1, 2))]),
    )
]

# D) random combinations of everything, seeded; cases that cannot fit are skipped here
_rng = np.random.default_rng(20240601)
_all_shapes = SHAPES + [(3, 16), (16, 3), (10, 11, 3), (12, 12, 1)]
_all_paddings = PADDINGS
CASES_D = []
while len(CASES_D) < 90:
    shape = _all_shapes[_rng.integers(len(_all_shapes))]
    kshape = (int(_rng.integers(1, 8)), int(_rng.integers(1, 8)))
    stride = [1, 2, 3, (2, 1), (1, 2), (3, 2)][_rng.integers(6)]
    padding = _all_paddings[_rng.integers(len(_all_paddings))]
    mode = PAD_MODES[_rng.integers(len(PAD_MODES))]
    dilation = [1, 2, (2, 1), (1, 3)][_rng.integers(4)]
    if fits(shape, kshape, padding, stride, dilation):
        CASES_D.append((shape, kshape, stride, padding, mode, dilation))

CONV_CASES = CASES_A + CASES_B + CASES_C + CASES_D


def _case_id(case):
    shape, kshape, stride, padding, mode, dilation = case
    return (f"x{'x'.join(map(str, shape))}-k{kshape[0]}x{kshape[1]}-s{stride}-p{padding}-"
            f"{mode}-d{dilation}").replace(" ", "")


@pytest.mark.parametrize("seed,case", [pytest.param(i, c, id=f"{i}-{_case_id(c)}") for i, c in enumerate(CONV_CASES)])
def test_convolve_matches_reference(seed, case):
    shape, kshape, stride, padding, mode, dilation = case
    run_case(shape, kshape, stride, padding, mode, dilation, seed)


FLIP_CASES = [
    ((7, 9), (3, 3), 1, "same", "zero", 1),
    ((7, 9), (2, 2), 1, "same", "reflect", 1),
    ((8, 8, 3), (2, 5), 1, "same", "reflect101", 1),
    ((8, 8, 2), (4, 3), 2, "full", "edge", 1),
    ((10, 6), (3, 2), (2, 1), "valid", "wrap", 1),
    ((11, 12), (3, 3), 1, "same", "zero", 2),
    ((11, 12, 4), (4, 4), 3, (1, 2), "reflect", (2, 1)),
    ((5, 5), (5, 5), 1, "same", "wrap", 1),
    ((1, 9), (1, 4), 1, "same", "edge", 1),
    ((9, 1), (6, 1), 2, 1, "zero", 1),
    ((6, 7), (7, 6), 1, "full", "reflect101", 1),
    ((12, 12, 1), (3, 5), (1, 3), "same", "zero", (1, 2)),
]


@pytest.mark.parametrize("case", FLIP_CASES, ids=[_case_id(c) for c in FLIP_CASES])
def test_flip_is_correlation_with_reversed_kernel(case):
    shape, kshape, stride, padding, mode, dilation = case
    run_case(shape, kshape, stride, padding, mode, dilation, seed=FLIP_CASES.index(case) + 500, flip=True)


def test_flip_differs_from_correlation_for_asymmetric_kernel():
    x = rand_image((6, 6), 1)
    k = np.array([[0, 0, 0], [0, 0, 1], [0, 0, 0]], np.float32)  # shift right / left
    corr = engine.convolve(x, k, padding="same")
    conv = engine.convolve(x, k, padding="same", flip=True)
    assert np.array_equal(corr[:, :-1], x[:, 1:])
    assert np.array_equal(conv[:, 1:], x[:, :-1])


def test_flip_symmetric_kernel_is_noop():
    x = rand_image((7, 8, 3), 2)
    a = engine.convolve(x, "gaussian")
    b = engine.convolve(x, "gaussian", flip=True)
    assert np.array_equal(a, b)


def test_channels_are_independent():
    x = rand_image((9, 10, 3), 3)
    k = rand_kernel((3, 4), 3)
    whole = engine.convolve(x, k, stride=(2, 1), padding="full", pad_mode="reflect", dilation=(1, 2))
    for c in range(3):
        alone = engine.convolve(x[:, :, c], k, stride=(2, 1), padding="full", pad_mode="reflect",
                                dilation=(1, 2))
        assert np.array_equal(whole[:, :, c], alone)


@pytest.mark.parametrize("mode", PAD_MODES)
def test_identity_kernel_leaves_image(mode):
    x = rand_image((6, 7, 3), 4)
    assert np.array_equal(engine.convolve(x, "identity", pad_mode=mode), x)
    assert np.array_equal(engine.convolve(x, np.ones((1, 1))), x)


def test_input_dtypes_and_layouts():
    rng = np.random.default_rng(5)
    u8 = rng.integers(0, 256, size=(9, 11, 3), dtype=np.uint8)
    k = rand_kernel((3, 3), 5)
    want = correlate_ref(u8, k, pads=((1, 1), (1, 1)))
    for x in (u8, u8.astype(np.int64), u8.astype(np.float64), u8.astype(np.uint16)):
        assert_close(engine.convolve(x, k), want, u8, k)
    # non-contiguous views
    f = rand_image((12, 14), 6)
    view = f[::2, ::-1]
    assert_close(engine.convolve(view, k, padding="valid"),
                 correlate_ref(np.array(view), k), view, k)
    t = f.T
    assert_close(engine.convolve(t, k, stride=2), correlate_ref(np.array(t), k, stride=(2, 2),
                                                                 pads=((1, 1), (1, 1))), t, k)
    # bool input
    b = u8[:, :, 0] > 128
    assert np.array_equal(engine.convolve(b, np.ones((1, 1))), b.astype(np.float32))


def test_input_not_modified():
    x = rand_image((7, 7, 2), 7)
    before = x.copy()
    engine.convolve(x, "sharpen", pad_mode="reflect")
    engine.pool(x, "max", 2)
    engine.relu(x)
    assert np.array_equal(x, before)


_OUT_CASES = {  # name: (input shape, kernel shape, stride, the path the cost model takes)
    "direct": ((40, 50), (3, 3), 1, "direct"),
    "direct rgb stride 2": ((41, 50, 3), (3, 3), 2, "direct"),
    "separable rgb": ((40, 50, 3), "box", 1, "separable"),
    "fft": ((160, 170), (31, 31), 1, "fft"),
    "depth": ((40, 50, 3), (5, 5, 3), 1, "direct"),
    "depth fft": ((160, 170, 3), (31, 31, 3), (1, 2), "fft"),
}


@pytest.mark.parametrize("name", sorted(_OUT_CASES))
def test_out_receives_the_same_result(name):
    """convolve(..., out=a) writes every value of the result into ``a`` and
    returns ``a``: the same bits as a new array, on each of the engine's paths."""
    shape, kshape, stride, path = _OUT_CASES[name]
    rng = np.random.default_rng(5)
    x = rng.uniform(-50, 200, shape).astype(np.float32)
    k = np.ones((7, 7), np.float32) / 49 if kshape == "box" else rng.standard_normal(kshape).astype(np.float32)
    assert engine.method_for(k, shape, stride=stride) == path
    want = engine.convolve(x, k, stride=stride, pad_mode="reflect")
    out = np.full(want.shape, np.nan, dtype=np.float32)  # anything left unwritten shows
    got = engine.convolve(x, k, stride=stride, pad_mode="reflect", out=out)
    assert got is out
    assert np.array_equal(out, want)


def test_out_with_a_kernel_offset():
    from kernelcli.kernels import Kernel

    x = rand_image((9, 11), 2)
    k = Kernel("box+10", np.ones((3, 3)), 1 / 9, "9", 10.0, "", "test")
    want = engine.convolve(x, k)
    assert np.array_equal(want, engine.convolve(x, np.ones((3, 3)) / 9) + np.float32(10))
    out = np.zeros_like(want)
    engine.convolve(x, k, out=out)
    assert np.array_equal(out, want)


def test_out_is_checked():
    x = rand_image((8, 9, 3), 4)

    def fails(out, words):
        with pytest.raises(UsageError, match=words):
            engine.convolve(x, "sharpen", out=out)

    fails(np.empty((8, 9), np.float32), r"shape \(8, 9, 3\)")
    fails(np.empty((8, 9, 3), np.float64), "float32")
    fails([[0.0]], "NumPy array")
    fails(np.empty((8, 18, 3), np.float32)[:, ::2], "C-contiguous")
    readonly = np.empty((8, 9, 3), np.float32)
    readonly.flags.writeable = False
    fails(readonly, "writable")
    fails(x, "overlap")
    fails(np.asarray(x)[::-1][::-1], "overlap")
    tall = rand_image((16, 9, 3), 4)
    with pytest.raises(UsageError, match="overlap"):
        engine.convolve(tall[:8], "sharpen", out=tall[4:12])


def test_large_magnitudes_scale_tolerance():
    x = rand_image((20, 20), 8) * 1000
    k = rand_kernel((5, 5), 8)
    assert_close(engine.convolve(x, k, pad_mode="reflect101"),
                 correlate_ref(x, k, pads=((2, 2), (2, 2)), pad_mode="reflect101"), x, k)


# --------------------------------------------------------------------------
# SciPy as an independent oracle


SCIPY_MODE = {"zero": "constant", "reflect": "reflect", "reflect101": "mirror", "edge": "nearest", "wrap": "wrap"}


@pytest.mark.parametrize("mode", PAD_MODES)
@pytest.mark.parametrize("kshape", [(1, 1), (3, 3), (5, 5), (3, 7), (7, 1), (2, 2), (4, 3), (6, 6)])
def test_same_padding_matches_scipy(mode, kshape):
    for channels in (0, 3):
        _same_vs_scipy(mode, kshape, channels)


def _same_vs_scipy(mode, kshape, channels):
    ndimage = pytest.importorskip("scipy.ndimage")
    shape = (13, 15) + ((channels,) if channels else ())
    seed = 900 + 7 * kshape[0] + kshape[1] + channels
    x = rand_image(shape, seed)
    k = rand_kernel(kshape, seed)
    # scipy centres a kernel of K taps at K//2 (+origin); "same" here puts (K-1)//2 before.
    origin = [-1 if s % 2 == 0 else 0 for s in kshape]
    k64 = k.astype(np.float64)
    if channels:
        want = np.stack([ndimage.correlate(x[:, :, c].astype(np.float64), k64, mode=SCIPY_MODE[mode],
                                           cval=0.0, origin=origin) for c in range(channels)], axis=-1)
    else:
        want = ndimage.correlate(x.astype(np.float64), k64, mode=SCIPY_MODE[mode], cval=0.0, origin=origin)
    got = engine.convolve(x, k, padding="same", pad_mode=mode)
    assert_close(got, want, x, k)


@pytest.mark.parametrize("mode", PAD_MODES)
def test_flip_matches_scipy_convolve(mode):
    ndimage = pytest.importorskip("scipy.ndimage")
    x = rand_image((11, 12), 77)
    k = rand_kernel((5, 3), 77)
    want = ndimage.convolve(x.astype(np.float64), k.astype(np.float64), mode=SCIPY_MODE[mode], cval=0.0)
    assert_close(engine.convolve(x, k, flip=True, pad_mode=mode), want, x, k)


def test_valid_and_full_match_scipy_signal():
    signal = pytest.importorskip("scipy.signal")
    x = rand_image((10, 13), 78)
    k = rand_kernel((4, 3), 78)
    x64, k64 = x.astype(np.float64), k.astype(np.float64)
    for padding in ("valid", "full"):
        assert_close(engine.convolve(x, k, padding=padding),
                     signal.correlate2d(x64, k64, mode=padding), x, k)
        assert_close(engine.convolve(x, k, padding=padding, flip=True),
                     signal.convolve2d(x64, k64, mode=padding), x, k)


# --------------------------------------------------------------------------
# pooling

FEATURE_MAP = [[1, 1, 2, 4], [5, 6, 7, 8], [3, 2, 1, 0], [1, 2, 3, 4]]


@pytest.mark.parametrize(
    "kind,want",
    [
        ("max", [[6, 8], [3, 4]]),
        ("avg", [[3.25, 5.25], [2, 2]]),
        ("sum", [[13, 21], [8, 8]]),
    ],
)
def test_pool_example(kind, want):
    got = engine.pool(np.array(FEATURE_MAP), kind, 2, 2)
    assert got.dtype == np.float32
    assert np.array_equal(got, np.array(want, dtype=np.float32))
    # stride defaults to the window size
    assert np.array_equal(engine.pool(np.array(FEATURE_MAP), kind, 2), got)
    assert np.array_equal(got, pool_ref(FEATURE_MAP, kind, 2, 2).astype(np.float32))


def test_pool_default_is_max_2x2():
    assert np.array_equal(engine.pool(np.array(FEATURE_MAP)), np.array([[6, 8], [3, 4]], np.float32))


def test_pool_size3_stride2_drops_remainder():
    x = np.arange(36, dtype=np.float32).reshape(6, 6)
    got = engine.pool(x, "max", 3, 2)
    # windows start at 0 and 2; a third at 4 would need rows 4..6 -> dropped
    assert got.shape == (2, 2)
    assert np.array_equal(got, np.array([[14, 16], [26, 28]], np.float32))
    got = engine.pool(np.arange(35, dtype=np.float32).reshape(5, 7), "sum", 3, 2)
    assert got.shape == (2, 3)
    assert np.array_equal(got, pool_ref(np.arange(35).reshape(5, 7), "sum", 3, 2).astype(np.float32))
    # odd input with 2x2 pooling: last row and column dropped
    got = engine.pool(np.arange(35, dtype=np.float32).reshape(5, 7), "avg", 2)
    assert got.shape == (2, 3)


POOL_SHAPES = [(1, 1), (1, 6), (6, 1), (4, 4), (5, 5), (7, 9), (10, 8), (3, 4, 1), (6, 7, 2), (9, 9, 3), (8, 5, 4)]
POOL_WINDOWS = [(1, None), (2, None), (2, 1), (3, 2), (3, 3), ((2, 3), None), ((3, 1), (1, 2)), (2, (2, 1)), (1, 3)]
POOL_CASES = [
    (shape, size, stride)
    for shape, (size, stride) in itertools.product(POOL_SHAPES, POOL_WINDOWS)
    if pair(size)[0] <= shape[0] and pair(size)[1] <= shape[1]
]


@pytest.mark.parametrize("shape,size,stride", POOL_CASES)
def test_pool_matches_reference(shape, size, stride):
    x = rand_image(shape, POOL_CASES.index((shape, size, stride)) + 3000)
    for kind in ("max", "avg", "sum"):
        got = engine.pool(x, kind, size, stride)
        want = pool_ref(x, kind, size, stride)
        assert got.shape == want.shape and got.dtype == np.float32, kind
        if kind == "max":
            assert np.array_equal(got, want.astype(np.float32))
        else:
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1, np.prod(pair(size))),
                                       err_msg=kind)


def test_pool_max_all_negative():
    x = -np.arange(1, 17, dtype=np.float32).reshape(4, 4)
    assert np.array_equal(engine.pool(x, "max", 2), np.array([[-1, -3], [-9, -11]], np.float32))


# --------------------------------------------------------------------------
# ReLU


def test_relu_negative_values():
    x = np.array([[-3.5, -1, 0], [0.25, 2, -0.0001]], np.float32)
    got = engine.relu(x)
    assert got.dtype == np.float32
    assert np.array_equal(got, np.array([[0, 0, 0], [0.25, 2, 0]], np.float32))
    assert np.all(got >= 0)


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (4, 6, 3)])
@pytest.mark.parametrize("slope", [0.0, 0.1, 0.5])
def test_relu_matches_reference(shape, slope):
    x = rand_image(shape, 4000 + len(shape) + int(slope * 10))
    got = engine.relu(x, slope) if slope else engine.relu(x)
    assert got.shape == x.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, relu_ref(x, slope), rtol=1e-6, atol=1e-7)


def test_relu_integer_input():
    got = engine.relu(np.array([[-2, 3], [0, -1]], dtype=np.int16))
    assert got.dtype == np.float32
    assert np.array_equal(got, np.array([[0, 3], [0, 0]], np.float32))


# --------------------------------------------------------------------------
# errors


def _raises(fn, *words):
    with pytest.raises(KernelcliError) as info:
        fn()
    assert isinstance(info.value, UsageError), type(info.value)
    msg = str(info.value).lower()
    for word in words:
        assert word in msg, (word, msg)
    return msg


X = np.ones((6, 6), np.float32)


@pytest.mark.parametrize("stride", [0, (1, 0), (0, 2), -1])
def test_error_stride_not_positive(stride):
    _raises(lambda: engine.convolve(X, "box", stride=stride), "stride")


def test_error_stride_not_integer():
    _raises(lambda: engine.convolve(X, "box", stride=1.5), "stride")
    _raises(lambda: engine.convolve(X, "box", stride=(1, 2, 3)), "stride")


@pytest.mark.parametrize("dilation", [0, (0, 1)])
def test_error_dilation_not_positive(dilation):
    _raises(lambda: engine.convolve(X, "box", dilation=dilation), "dilation")


@pytest.mark.parametrize("padding", [-1, (1, -1), (-2, 0)])
def test_error_negative_padding(padding):
    _raises(lambda: engine.convolve(X, "box", padding=padding), "padding", "negative")


@pytest.mark.parametrize("padding", ["middle", "", (1, 2, 3), 1.5])
def test_error_bad_padding_word(padding):
    _raises(lambda: engine.convolve(X, "box", padding=padding), "padding")


@pytest.mark.parametrize("mode", ["mirror", "constant", "symmetric", "", "ZERO"])
def test_error_unknown_pad_mode(mode):
    msg = _raises(lambda: engine.convolve(X, "box", pad_mode=mode), "pad mode")
    for known in PAD_MODES:
        assert known in msg


@pytest.mark.parametrize("kind", ["min", "mean", "average", ""])
def test_error_unknown_pool_kind(kind):
    _raises(lambda: engine.pool(X, kind, 2), "pool", "kind", "max")


@pytest.mark.parametrize("size", [7, (7, 1), (1, 7), 100])
def test_error_pool_window_larger_than_input(size):
    _raises(lambda: engine.pool(X, "max", size), "larger")


@pytest.mark.parametrize("size,stride", [(0, None), (2, 0), (2, (1, 0))])
def test_error_pool_size_or_stride_not_positive(size, stride):
    _raises(lambda: engine.pool(X, "max", size, stride), "at least 1")


@pytest.mark.parametrize(
    "shape,kshape,padding,dilation",
    [((6, 6), (7, 7), "valid", 1), ((6, 6), (3, 7), "valid", 1), ((2, 9), (3, 3), "valid", 1),
     ((6, 6), (4, 4), "valid", 2), ((1, 1), (2, 2), 0, 1), ((3, 3), (7, 7), 1, 1)],
)
def test_error_kernel_larger_than_padded_input(shape, kshape, padding, dilation):
    _raises(lambda: engine.convolve(np.ones(shape), np.ones(kshape), padding=padding, dilation=dilation),
            "does not fit")


@pytest.mark.parametrize("bad", [np.ones(5), np.ones((2, 2, 2, 2)), np.ones((0, 4)), np.array([["a"]])])
def test_error_bad_input_array(bad):
    with pytest.raises(UsageError):
        engine.convolve(bad, "box")
    with pytest.raises(UsageError):
        engine.pool(bad, "max", 1)
    with pytest.raises(UsageError):
        engine.relu(bad)


# --------------------------------------------------------------------------
# the low-rank (separable) fast path against the plain reference


def _low_rank_cases():
    rng = np.random.default_rng(7)
    g = np.exp(-((np.arange(15) - 7.0) ** 2) / 8.0)
    rank2 = np.outer(rng.standard_normal(11), rng.standard_normal(11)) + np.outer(rng.standard_normal(11), rng.standard_normal(11))
    return {
        "gaussian15": np.outer(g, g) / np.outer(g, g).sum(),
        "box6x5": np.ones((6, 5)) / 30,
        "rank2-11x11": rank2,
        "box5": np.ones((5, 5)),
    }


@pytest.mark.parametrize("name", sorted(_low_rank_cases()))
@pytest.mark.parametrize("stride,dilation,padding,pad_mode", [
    (1, 1, "same", "zero"), (2, 1, "same", "reflect"), ((1, 3), 1, "valid", "edge"),
    (1, 2, "full", "wrap"), (3, (2, 1), "same", "reflect101"), (2, 1, 3, "zero"),
])
@pytest.mark.parametrize("shape", [(23, 31), (17, 20, 3)])
def test_low_rank_path_matches_reference(name, stride, dilation, padding, pad_mode, shape):
    k = _low_rank_cases()[name].astype(np.float32)
    assert engine.low_rank_factors(k) is not None  # the fast path is really taken
    x = np.random.default_rng(3).uniform(-50, 200, shape).astype(np.float32)
    got = engine.convolve(x, k, stride=stride, padding=padding, pad_mode=pad_mode, dilation=dilation)
    sy, sx = engine.pair(stride, "s")
    dy, dx = engine.pair(dilation, "d")
    reach = (dy * (k.shape[0] - 1) + 1, dx * (k.shape[1] - 1) + 1)
    pads = engine.resolve_padding(padding, reach)
    want = correlate_ref(x.astype(np.float64), k.astype(np.float64), (sy, sx), pads, pad_mode, (dy, dx))
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(x).max() * np.abs(k).sum())


def test_full_rank_kernels_stay_direct():
    k = np.random.default_rng(1).standard_normal((9, 9)).astype(np.float32)
    assert engine.low_rank_factors(k) is None
    assert engine.low_rank_factors(np.ones((3, 3), np.float32)) is None  # too small to pay off


# --------------------------------------------------------------------------
# integer kernels on 8-bit pixels in int16 (correlate_exact)


def _int_kernel(kshape, seed, total=128):
    """Random whole-number weights whose absolute values sum to at most ``total``."""
    rng = np.random.default_rng(seed)
    k = rng.integers(-9, 10, kshape).astype(np.float64)
    k[rng.random(kshape) < 0.2] = 0
    while np.abs(k).sum() > total:
        k = np.trunc(k / 2)
    return k


EXACT_CASES = [c for c in CONV_CASES if c[1][0] * c[1][1] < engine.SEPARABLE_MIN_TAPS]


@pytest.mark.parametrize("seed,case", [pytest.param(i, c, id=f"{i}-{_case_id(c)}")
                                       for i, c in enumerate(EXACT_CASES)])
def test_correlate_exact_equals_reference_and_convolve(seed, case):
    shape, kshape, stride, padding, mode, dilation = case
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, shape).astype(np.uint8)
    k = _int_kernel(kshape, seed)
    flip = seed % 3 == 0
    weights = engine.exact_weights(k, flip=flip)
    assert weights is not None and weights.dtype == np.int16
    got = engine.correlate_exact(x.astype(np.int16), weights, stride, padding, mode, dilation)
    want = correlate_ref(x, k[::-1, ::-1] if flip else k, stride=pair(stride),
                         pads=pads_for(padding, kshape, dilation), pad_mode=mode, dilation=pair(dilation))
    assert got.dtype == np.int16 and got.shape == want.shape
    assert np.array_equal(got, want)
    assert np.array_equal(got, engine.convolve(x, k, stride, padding, mode, dilation, flip=flip))


@pytest.mark.parametrize("sign", [1, -1])
def test_correlate_exact_at_the_int16_limit(sign):
    # |weights| sum to 128: all-255 pixels reach +-32640, the largest sum allowed
    k = sign * np.array([[14, 14, 14], [14, 16, 14], [14, 14, 14]], dtype=np.float64)
    assert np.abs(k).sum() == 128
    x = np.full((6, 7, 3), 255, np.int16)
    got = engine.correlate_exact(x, engine.exact_weights(k), padding="valid")
    assert np.array_equal(got, np.full((4, 5, 3), sign * 32640))
    checker = (np.indices((9, 9)).sum(axis=0) % 2 * 255).astype(np.int16)  # partial sums of mixed sign
    mixed = np.array([[-14, 14, -14], [14, -14, 14], [-14, 14, -14]], dtype=np.float64)
    assert np.array_equal(engine.correlate_exact(checker, engine.exact_weights(mixed), padding="same"),
                          engine.convolve(checker, mixed, padding="same"))


def test_exact_weights_only_where_int16_is_exact_and_cheaper():
    from kernelcli.kernels import Kernel, get_kernels

    sharpen = get_kernels("sharpen")[0]
    assert engine.exact_weights(sharpen).tolist() == [[0, -1, 0], [-1, 5, -1], [0, -1, 0]]
    emboss = get_kernels("emboss")[0]
    assert np.array_equal(engine.exact_weights(emboss, flip=True), emboss.array[::-1, ::-1])
    assert engine.exact_weights(np.full((3, 3), 128 / 9)) is None  # not whole numbers
    assert engine.exact_weights(get_kernels("box:3")[0]) is None  # 1/9 each
    assert engine.exact_weights(np.array([[64, 64, 1]])) is None  # |w| sums to 129
    assert engine.exact_weights(np.array([[64, 64]])) is not None  # 128
    assert engine.exact_weights(np.array([[64, 64]]), top=65535) is None  # 16-bit pixels
    assert engine.exact_weights(np.ones((5, 5))) is None  # 25 cells: convolve may use 1-D passes
    assert engine.exact_weights(Kernel("shifted", np.ones((3, 3)), offset=1.0)) is None
    assert engine.exact_weights(Kernel("deep", np.ones((3, 3, 2)))) is None
    with pytest.raises(TypeError):
        engine.correlate_exact(np.zeros((4, 4), np.float32), engine.exact_weights(sharpen))


def test_a_kernel_array_changed_in_place_is_seen_by_the_next_call():
    # (small kernel arrays are looked up by their contents, never by identity)
    x = rand_image((20, 24), 11)
    k = rand_kernel((3, 3), 12)
    first = engine.convolve(x, k)
    np.testing.assert_allclose(first, correlate_ref(x, k, pads=((1, 1), (1, 1))), rtol=1e-5, atol=1e-4)
    k[1, 1] += 2.0
    second = engine.convolve(x, k)
    np.testing.assert_allclose(second, correlate_ref(x, k, pads=((1, 1), (1, 1))), rtol=1e-5, atol=1e-4)
    assert not np.allclose(first, second)
    flipped = engine.convolve(x, k, flip=True)
    np.testing.assert_allclose(flipped, correlate_ref(x, k[::-1, ::-1], pads=((1, 1), (1, 1))), rtol=1e-5, atol=1e-4)


def test_cached_kernel_weights_come_back_as_copies():
    k = rand_kernel((3, 3), 13)
    _, weights = ops._kernel_weights(k, False)
    weights[...] = 0  # a caller's change must not reach the next call
    _, again = ops._kernel_weights(k, False)
    np.testing.assert_array_equal(again, k)
    with pytest.raises(KernelError):
        ops._kernel_weights(np.array([[1.0, np.nan]]), False)
    with pytest.raises(KernelError):  # errors are not cached away
        ops._kernel_weights(np.array([[1.0, np.nan]]), False)

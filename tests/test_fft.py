"""The FFT path of the engine (kernelcli/_fft.py) against the plain-loop reference.

The FFT path is forced (``engine.plan._choose`` replaced) on small images, with
transform sizes just above the kernel's reach, so that one small image is cut
into many tiles and every tile seam, border and padding stretch is exercised.
Tolerance: float32 transforms, so each output may differ from the float64
reference by 1e-5 of ``sum(|w| * |x|)`` over its own window, plus 1e-6 of the
largest such sum in the result: a transform's rounding error is spread over
its whole tile, so a window that sees only a little of the image (a border
of "full" padding, a dark patch next to a bright one) gets an error of the
size of its neighbours' values, not of its own. Measured on 4096x4096 with a
31x31 kernel: at most ~7e-8 of the window's own sum. Windows that read
nothing but zero padding are exactly 0, as in the direct loop.

The dispatch (``engine.method_for``) is tested by its answer, never by timing.
"""

from __future__ import annotations

import itertools
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from reference import pair, correlate_ref, pads_for, rand_image, rand_kernel, reach_of  # noqa: E402

from kernelcli import engine  # noqa: E402
from kernelcli.engine import _fft, backends, plan  # noqa: E402

PAD_MODES = ["zero", "reflect", "reflect101", "edge", "wrap"]


# --------------------------------------------------------------------------
# helpers


def fits(shape, kshape, padding, stride=1, dilation=1):
    pads = pads_for(padding, kshape, dilation)
    ry, rx = reach_of(kshape, pair(dilation))
    return shape[0] + sum(pads[0]) >= ry and shape[1] + sum(pads[1]) >= rx


def reference(x, k, stride=1, padding="same", pad_mode="zero", dilation=1):
    """(result, window scale): the float64 reference and, per output,
    sum(|w| * |x|) over its window (the same padding: |pad(x)| == pad(|x|))."""
    kshape = k.shape[:2]
    pads = pads_for(padding, kshape, dilation)
    args = dict(stride=pair(stride), pads=pads, pad_mode=pad_mode, dilation=pair(dilation))
    if k.ndim == 3:  # depth kernel: summed over channels
        want = sum(correlate_ref(x[..., i], k[..., i], **args) for i in range(k.shape[2]))
        scale = sum(correlate_ref(np.abs(x[..., i]), np.abs(k[..., i]), **args) for i in range(k.shape[2]))
    else:
        want = correlate_ref(x, k, **args)
        scale = correlate_ref(np.abs(x), np.abs(k), **args)
    return want, scale


def assert_window_close(got, want, scale):
    """|got - want| <= 1e-5 * window's sum(|w||x|) + 1e-6 * the largest one;
    exactly 0 where the window's sum is 0 (nothing but zero padding)."""
    assert got.dtype == np.float32
    assert got.shape == want.shape, (got.shape, want.shape)
    err = np.abs(got.astype(np.float64) - want)
    limit = np.where(scale > 0, 1e-5 * scale + 1e-6 * scale.max(), 0.0)
    worst = np.unravel_index(int(np.argmax(err - limit)), err.shape)
    assert np.all(err <= limit), f"at {worst}: error {err[worst]:.3g} > {limit[worst]:.3g}"


@pytest.fixture
def force_fft(monkeypatch):
    """Make engine.convolve take the FFT path with transforms ``margin``
    larger than the kernel's reach (small tiles: many seams), or the planned
    size when ``margin`` is None. Returns a setter for the margin."""
    state = {"margin": (3, 2), "calls": 0}

    def choose(weights, channels, in_width, pad_left, out_size, stride, dilation, factors, threads=None):
        state["calls"] += 1
        kh, kw = weights.shape[:2]
        reach = (dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1)
        if state["margin"] is None:
            size, _ = _fft.plan(out_size, stride, reach, 2, 2, plan.FFT_TILE, plan.FFT_POINT,
                                plan.FFT_CACHE_POINTS)
        else:
            size = (reach[0] + state["margin"][0], reach[1] + state["margin"][1])
        return "fft", size

    monkeypatch.setattr(plan, "_choose", choose)

    def set_margin(margin):
        state["margin"] = margin
        return state

    return set_margin


# --------------------------------------------------------------------------
# against the reference


KSHAPES = [(3, 3), (4, 4), (2, 5), (5, 2), (1, 4), (6, 3), (7, 7)]
PADDINGS = ["same", "valid", "full", 2, ((0, 3), (4, 1))]


@pytest.mark.parametrize("pad_mode", PAD_MODES)
@pytest.mark.parametrize("padding", PADDINGS, ids=str)
@pytest.mark.parametrize("kshape", KSHAPES, ids=str)
def test_kernel_shapes_paddings_and_modes(force_fft, kshape, padding, pad_mode):
    force_fft((3, 2))
    x = rand_image((13, 11), seed=sum(kshape))
    k = rand_kernel(kshape, seed=len(str(padding)))
    got = engine.convolve(x, k, padding=padding, pad_mode=pad_mode)
    assert_window_close(got, *reference(x, k, padding=padding, pad_mode=pad_mode))


@pytest.mark.parametrize("pad_mode", PAD_MODES)
@pytest.mark.parametrize("dilation", [1, 2, (1, 3)], ids=str)
@pytest.mark.parametrize("stride", [1, 2, (1, 3), (3, 2)], ids=str)
def test_strides_and_dilations(force_fft, stride, dilation, pad_mode):
    force_fft((4, 1))
    x = rand_image((17, 15), seed=3)
    k = rand_kernel((4, 3), seed=4)
    for padding in ("same", "valid", "full"):
        got = engine.convolve(x, k, stride=stride, padding=padding, pad_mode=pad_mode, dilation=dilation)
        assert_window_close(got, *reference(x, k, stride, padding, pad_mode, dilation))


@pytest.mark.parametrize("margin", [(1, 1), (2, 5), (9, 4), (40, 40), None], ids=str)
@pytest.mark.parametrize("pad_mode", PAD_MODES)
def test_tile_sizes(force_fft, margin, pad_mode):
    """From one output per tile to one tile for the whole image (and the planned size)."""
    force_fft(margin)
    x = rand_image((19, 16), seed=5)
    k = rand_kernel((5, 4), seed=6)
    for stride in (1, 2):
        got = engine.convolve(x, k, stride=stride, pad_mode=pad_mode)
        assert_window_close(got, *reference(x, k, stride, "same", pad_mode))


@pytest.mark.parametrize("pad_mode", PAD_MODES)
@pytest.mark.parametrize("stride,dilation", [(1, 1), (2, 1), (1, 2), ((2, 1), (1, 2))], ids=str)
def test_channels_each_get_the_2d_kernel(force_fft, pad_mode, stride, dilation):
    force_fft((3, 4))
    x = rand_image((12, 10, 3), seed=7)
    k = rand_kernel((4, 5), seed=8)
    got = engine.convolve(x, k, stride=stride, pad_mode=pad_mode, dilation=dilation)
    assert got.shape[2] == 3
    assert_window_close(got, *reference(x, k, stride, "same", pad_mode, dilation))


@pytest.mark.parametrize("pad_mode", PAD_MODES)
@pytest.mark.parametrize("channels", [1, 2, 4])
@pytest.mark.parametrize("stride,dilation,padding", [(1, 1, "same"), (2, 1, "valid"), ((1, 2), (2, 1), "full")],
                         ids=str)
def test_depth_kernel_sums_channels(force_fft, pad_mode, channels, stride, dilation, padding):
    force_fft((2, 3))
    x = rand_image((11, 9, channels), seed=9)
    k = rand_kernel((3, 4, channels), seed=10)
    got = engine.convolve(x, k, stride=stride, padding=padding, pad_mode=pad_mode, dilation=dilation)
    assert got.ndim == 2
    assert_window_close(got, *reference(x, k, stride, padding, pad_mode, dilation))


TINY = [
    ((1, 20), (3, 5), "same"),
    ((1, 20), (1, 6), "valid"),
    ((1, 20, 3), (3, 3), "full"),
    ((1, 1), (3, 3), "same"),
    ((1, 1), (4, 2), "full"),
    ((2, 3), (7, 7), "same"),  # padding several times the image: many short runs
    ((3, 2), (9, 8), "full"),
    ((20, 1), (5, 3), "same"),
    ((5, 4, 2), (6, 6), "same"),
]


@pytest.mark.parametrize("pad_mode", PAD_MODES)
@pytest.mark.parametrize("shape,kshape,padding", TINY, ids=str)
@pytest.mark.parametrize("margin", [(1, 2), None], ids=str)
def test_tiny_images_and_one_row(force_fft, shape, kshape, padding, pad_mode, margin):
    force_fft(margin)
    x = rand_image(shape, seed=11)
    k = rand_kernel(kshape, seed=12)
    got = engine.convolve(x, k, padding=padding, pad_mode=pad_mode)
    assert_window_close(got, *reference(x, k, 1, padding, pad_mode))


def test_flip_and_offset_are_applied_around_the_fft(force_fft):
    from kernelcli.kernels import Kernel

    force_fft((2, 2))
    x = rand_image((9, 10), seed=13)
    w = rand_kernel((3, 4), seed=14)
    k = Kernel(name="t", values=w.astype(np.float64), offset=5.0)
    got = engine.convolve(x, k, flip=True, pad_mode="reflect")
    want, scale = reference(x, w[::-1, ::-1].copy(), 1, "same", "reflect")
    assert_window_close(got, want + 5.0, scale + 5.0)


def test_forced_path_is_really_taken(force_fft, monkeypatch):
    state = force_fft((2, 2))
    seen = []
    real = _fft.correlate
    monkeypatch.setattr(_fft, "correlate", lambda *a, **kw: seen.append(a[8]) or real(*a, **kw))
    engine.convolve(rand_image((8, 8), 1), rand_kernel((3, 3), 1))
    assert state["calls"] == 1 and seen == [(5, 5)]


def test_every_tile_gets_written_with_threads(force_fft, monkeypatch):
    """Many tiles over several threads: same bits as one thread (each tile is
    computed independently, whichever thread takes it)."""
    force_fft((1, 2))
    x = rand_image((30, 27, 2), seed=15)
    k = rand_kernel((5, 5), seed=16)
    monkeypatch.setattr(backends, "threads", lambda: 1)
    one = engine.convolve(x, k, pad_mode="wrap")
    monkeypatch.setattr(backends, "threads", lambda: 3)
    three = engine.convolve(x, k, pad_mode="wrap")
    again = engine.convolve(x, k, pad_mode="wrap")
    assert np.array_equal(one, three) and np.array_equal(three, again)
    assert_window_close(three, *reference(x, k, 1, "same", "wrap"))


# --------------------------------------------------------------------------
# non-finite values spread as in the direct loop


@pytest.mark.parametrize("depth", [False, True])
def test_nan_and_inf_spread_only_over_their_windows(force_fft, monkeypatch, depth):
    force_fft((4, 4))
    x = rand_image((20, 18, 2), seed=17)
    x[5, 6, 0] = np.nan
    x[14, 2, 1] = np.inf
    k = rand_kernel((3, 3, 2) if depth else (3, 3), seed=18)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from the transforms
        got = engine.convolve(x, k, pad_mode="reflect")
    monkeypatch.setattr(plan, "_choose", lambda *a, **kw: ("direct", None))
    with np.errstate(invalid="ignore"):
        want = engine.convolve(x, k, pad_mode="reflect")
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(np.isposinf(got), np.isposinf(want))
    assert np.array_equal(np.isneginf(got), np.isneginf(want))
    assert not np.isfinite(got).all()
    fine = np.isfinite(want)
    np.testing.assert_allclose(got[fine], want[fine], rtol=0, atol=1e-4)


def test_overflow_inside_the_transform_falls_back_to_direct(force_fft, monkeypatch):
    """Values near the float32 limit: the transform overflows, the windows do not."""
    force_fft((12, 12))
    redone = []
    real = _fft.correlate

    def spy(*a, **kw):
        out, redo = real(*a, **kw)
        redone.extend(redo)
        return out, redo

    monkeypatch.setattr(_fft, "correlate", spy)
    x = np.full((16, 16), 3e38, np.float32)
    x[::2] = 2e38
    k = np.full((3, 3), 0.01, np.float32)
    got = engine.convolve(x, k)
    assert redone  # the fallback really ran
    assert np.isfinite(got).all()
    assert_window_close(got, *reference(x, k))


# --------------------------------------------------------------------------
# pieces


def test_runs_split_padding_maps():
    assert _fft._runs(np.array([3, 4, 5, 6])) == [(0, 4, 3, 1)]
    assert _fft._runs(np.array([-1, -1, 0, 1, 2, -1])) == [(0, 2, -1, 0), (2, 5, 0, 1), (5, 6, -1, 0)]
    assert _fft._runs(np.array([2, 1, 0, 0, 1, 2])) == [(0, 3, 2, -1), (3, 6, 0, 1)]  # reflect
    assert _fft._runs(np.array([2, 1, 0, 1, 2])) == [(0, 3, 2, -1), (3, 5, 1, 1)]  # reflect101
    assert _fft._runs(np.array([0, 0, 0, 1, 2, 2, 2])) == [(0, 3, 0, 0), (3, 5, 1, 1), (5, 7, 2, 0)]  # edge
    assert _fft._runs(np.array([5, 6, 0, 1])) == [(0, 2, 5, 1), (2, 4, 0, 1)]  # wrap
    for run in _fft._runs(np.array([4, 3, 2, 1, 0, 0, 1])):
        src = np.arange(10)[_fft._span(run)]
        assert len(src) in (1, run[1] - run[0])


@pytest.mark.parametrize("pad_mode", PAD_MODES)
@pytest.mark.parametrize("pads", [(0, 0), (3, 2), (9, 11)], ids=str)
def test_gather_builds_the_padded_tile(pad_mode, pads):
    x = rand_image((7, 6, 2), seed=19)
    rmap = engine.source_index(7, pads, pad_mode)
    cmap = engine.source_index(6, pads[::-1], pad_mode)
    padded = np.zeros((len(rmap), len(cmap), 2), np.float32)
    for i, r in enumerate(rmap):
        for j, c in enumerate(cmap):
            if r >= 0 and c >= 0:
                padded[i, j] = x[r, c]
    for r0, r1, c0, c1 in [(0, len(rmap), 0, len(cmap)), (1, 5, 2, 6), (0, 3, 4, len(cmap))]:
        buf = np.full((2, r1 - r0 + 3, c1 - c0 + 1), np.nan, np.float32)
        rm, cm = rmap[r0:r1], cmap[c0:c1]
        _fft._gather(buf, x, rm, _fft._runs(rm), cm, _fft._runs(cm))
        assert np.array_equal(buf[:, :r1 - r0, :c1 - c0], padded[r0:r1, c0:c1].transpose(2, 0, 1))
        assert not buf[:, r1 - r0:].any() and not buf[:, :, c1 - c0:].any()


def test_plan_covers_the_output_and_fits_the_reach():
    for out_size, stride, reach in [((4096, 4096), (1, 1), (31, 31)), ((1, 50), (1, 2), (3, 31)),
                                    ((7, 300), (3, 1), (40, 9))]:
        (ny, nx), cost = _fft.plan(out_size, stride, reach, 2, 2, plan.FFT_TILE, plan.FFT_POINT,
                                   plan.FFT_CACHE_POINTS)
        assert ny >= reach[0] and nx >= reach[1] and cost > 0
    assert _fft.plan((10, 10), (1, 1), (9000, 3), 2, 2, 1e-4, 1e-9, 1e6) == (None, float("inf"))


# --------------------------------------------------------------------------
# dispatch: which path the cost model picks (no timing)


def _gaussian(n, sigma):
    r = np.arange(n) - (n - 1) / 2
    g = np.exp(-r * r / (2 * sigma * sigma))
    return np.outer(g, g) / g.sum() ** 2


RANDOM31 = np.random.default_rng(31).standard_normal((31, 31)).astype(np.float32)


def test_dispatch_large_random_kernel_on_a_big_image_uses_fft():
    assert engine.method_for(RANDOM31, (4096, 4096)) == "fft"
    assert engine.method_for(RANDOM31, (2048, 2048, 3)) == "fft"
    assert engine.method_for(RANDOM31, (1024, 1024), padding="valid") == "fft"
    depth = np.random.default_rng(3).standard_normal((31, 31, 3)).astype(np.float32)
    assert engine.method_for(depth, (1024, 1024, 3)) == "fft"


def test_dispatch_small_and_separable_kernels():
    assert engine.method_for(np.ones((3, 3)) + np.eye(3), (4096, 4096)) == "direct"
    assert engine.method_for(np.random.default_rng(5).standard_normal((5, 5)), (4096, 4096)) == "direct"
    assert engine.method_for(_gaussian(15, 7 / 3), (4096, 4096)) == "separable"
    assert engine.method_for(_gaussian(31, 5), (4096, 4096)) == "separable"


def test_dispatch_accounts_for_stride_dilation_and_size():
    # a row stride divides the direct loop's work; the FFT still transforms every row
    assert engine.method_for(RANDOM31, (4096, 4096), stride=(16, 1)) == "direct"
    # the FFT sees a dilated kernel's reach (33x33 here), the direct loop its 25 taps
    five = np.random.default_rng(5).standard_normal((5, 5)).astype(np.float32)
    assert engine.method_for(five, (4096, 4096), dilation=8) == "direct"
    assert engine.method_for(np.random.default_rng(5).standard_normal((33, 33)), (4096, 4096)) == "fft"
    # a tiny image: nothing to gain over the FFT's fixed costs
    assert engine.method_for(RANDOM31, (1, 64)) == "direct"
    assert engine.method_for(RANDOM31, (16, 16)) == "direct"
    # the direct loop skips zero weights; the transform cannot
    sparse = np.zeros((31, 31), np.float32)
    sparse[0, 0] = sparse[30, 7] = sparse[12, 30] = 1.0
    assert engine.method_for(sparse, (4096, 4096)) == "direct"


def test_unforced_convolve_dispatches_to_fft(monkeypatch):
    """A kernel the cost model sends to the FFT, on an image small enough to
    check against the direct loop."""
    k = np.random.default_rng(41).standard_normal((41, 41)).astype(np.float32)
    x = rand_image((200, 190), seed=20)
    assert engine.method_for(k, x.shape) == "fft"
    calls = []
    real = _fft.correlate
    monkeypatch.setattr(_fft, "correlate", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    got = engine.convolve(x, k, pad_mode="edge")
    assert calls == [1]
    monkeypatch.setattr(plan, "_choose", lambda *a, **kw: ("direct", None))
    want = engine.convolve(x, k, pad_mode="edge").astype(np.float64)
    scale = engine.convolve(np.abs(x), np.abs(k), pad_mode="edge").astype(np.float64)
    assert np.all(np.abs(got - want) <= 1e-5 * scale)


@pytest.mark.parametrize("kshape,shape", list(itertools.product([(31, 31), (9, 40)], [(300, 280), (64, 3000)])))
def test_method_agrees_with_what_convolve_runs(monkeypatch, kshape, shape):
    k = np.random.default_rng(sum(kshape)).standard_normal(kshape).astype(np.float32)
    expected = engine.method_for(k, shape)
    taken = []
    real = plan._choose
    monkeypatch.setattr(plan, "_choose", lambda *a, **kw: taken.append(real(*a, **kw)[0]) or real(*a, **kw))
    engine.convolve(np.zeros(shape, np.float32), k)
    assert taken == [expected]

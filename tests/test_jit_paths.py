"""kernelcli._jit.correlate_rows, bit for bit, on every path it takes.

The kernel sums each output value as ``0.0 + w*x + w*x + ...`` over the taps
in (ky, kx) order, in float32, skipping zero weights and rows/columns that map
to -1 (no FMA, no reordering). Its row passes sum several taps in registers
over chunks of a row (strided ones per channel), and go pixel by pixel at
the borders; so this compares it with a NumPy version of that definition,
exactly (uint32 views: -0.0 and NaN payloads included).

NaN payloads: when both the running sum and a product are NaN, x86 returns
the first operand; the kernel lets the product's NaN win (what it has always
done), and the reference spells that out with ``np.where``.
"""

from __future__ import annotations

import numpy as np
import pytest

from kernelcli import engine
from kernelcli.engine import _jit

from .reference import kernel_fits

PAD_MODES = ["zero", "reflect", "reflect101", "edge", "wrap"]
SPECIALS = np.array(
    [np.nan, np.inf, -np.inf, -0.0, 1e-40, -1e-40, 3e38, -3e38], dtype=np.float32)
NEG_NAN = np.array([0xFFC00000, 0x7FA00001, 0xFFC12345], dtype=np.uint32).view(np.float32)


def reference(src, c, kernel, rowmap, colmap, pad_left, sy, sx, dy, dx, oh, ow):
    """The definition, vectorised over output pixels, one tap at a time."""
    h = src.shape[0]
    img = src.reshape(h, -1, c)
    acc = np.zeros((oh, ow, c), np.float32)
    oy = np.arange(oh)[:, None]
    ox = np.arange(ow)[None, :]
    for ky in range(kernel.shape[0]):
        for kx in range(kernel.shape[1]):
            w = kernel[ky, kx]
            if w == 0.0:
                continue
            iy = rowmap[oy * sy + ky * dy]
            ix = colmap[ox * sx + kx * dx]
            ok = (iy >= 0) & (ix >= 0)
            x = img[np.where(ok, iy, 0), np.where(ok, ix, 0)]
            with np.errstate(all="ignore"):
                p = w * x
                s = np.where(np.isnan(p), p, acc + p)
            acc = np.where(ok[..., None], s, acc)
    return acc.reshape(oh, ow * c)


def image(shape, seed, specials=True):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2.0, 3.0, size=shape).astype(np.float32)
    if specials:
        flat = x.reshape(-1)
        idx = rng.choice(flat.size, size=max(1, flat.size // 12), replace=False)
        pool = np.concatenate([SPECIALS, NEG_NAN])
        flat[idx] = pool[rng.integers(0, pool.size, size=idx.size)]
    return x


def kernel(kshape, seed):
    rng = np.random.default_rng(seed + 1)
    k = rng.uniform(-1.5, 1.5, size=kshape).astype(np.float32)
    k[rng.random(kshape) < 0.3] = 0.0
    return k


def run_both(x, k, stride, padding, mode, dilation):
    sy, sx = stride
    dy, dx = dilation
    pads, (oh, ow) = engine.geometry(x.shape, k.shape, stride, padding, dilation)
    rows, c = engine.rows_view(np.ascontiguousarray(x))
    rowmap = engine.source_index(x.shape[0], pads[0], mode)
    colmap = engine.source_index(x.shape[1], pads[1], mode)
    out = np.full((oh, ow * c), 12345.0, np.float32)  # every value must be overwritten
    _jit.correlate_rows(rows, c, k, rowmap, colmap, pads[1][0], sy, sx, dy, dx, out)
    want = reference(rows, c, k, rowmap, colmap, pads[1][0], sy, sx, dy, dx, oh, ow)
    return out, want


def assert_bits(got, want):
    assert got.shape == want.shape
    diff = got.view(np.uint32) != want.view(np.uint32)
    assert not diff.any(), f"{int(diff.sum())} values differ, first at {np.argwhere(diff)[0].tolist()}"


CASES = [
    # shape, kernel shape, stride, dilation
    ((37, 41), (3, 3), (1, 1), (1, 1)),       # the common one: unit stride, one channel
    ((37, 41, 3), (3, 3), (1, 1), (1, 1)),    # channels interleaved in a row
    ((20, 2100), (3, 3), (1, 1), (1, 1)),     # rows longer than one chunk
    ((20, 2100, 3), (1, 5), (1, 1), (1, 1)),  # more row elements than a chunk
    ((33, 2101), (3, 3), (2, 2), (1, 1)),     # stride 2, one channel, several chunks
    ((31, 29), (4, 6), (2, 2), (1, 2)),       # stride 2, even kernel, dilation
    ((31, 29, 4), (3, 3), (2, 2), (1, 1)),    # stride 2 with channels: strided path
    ((25, 40), (3, 5), (3, 3), (1, 1)),       # stride 3
    ((25, 40, 3), (5, 3), (1, 3), (2, 1)),    # mixed strides and dilations
    ((23, 19), (7, 7), (1, 1), (1, 1)),       # 49 taps: many groups of taps
    ((30, 30), (1, 15), (1, 1), (1, 1)),      # a separable pass along rows
    ((30, 30, 3), (15, 1), (1, 1), (1, 1)),   # ... and down columns
    ((1, 40), (3, 3), (1, 1), (1, 1)),
    ((40, 1), (3, 3), (1, 1), (1, 1)),
    ((1, 1, 3), (2, 2), (1, 1), (1, 1)),
    ((9, 9), (1, 1), (1, 1), (1, 1)),
]


#: (case, padding) pairs whose kernel fits the image ("valid" on the small
#: cases does not: that refusal is tested in test_engine).
FITTING = [(i, padding) for i, (shape, kshape, stride, dilation) in enumerate(CASES)
           for padding in ("same", "valid", "full", ((2, 0), (3, 1)))
           if kernel_fits(shape, kshape, padding, dilation)]


@pytest.mark.parametrize("mode", PAD_MODES)
@pytest.mark.parametrize("case, padding", FITTING)
def test_correlate_rows_bits(case, padding, mode):
    shape, kshape, stride, dilation = CASES[case]
    seed = 100 * case + len(mode) + (7 if isinstance(padding, str) else 3)
    x = image(shape, seed)
    k = kernel(kshape, seed)
    got, want = run_both(x, k, stride, padding, mode, dilation)
    assert_bits(got, want)


def test_overflow_makes_nan_from_finite_inputs():
    """inf - inf inside a row: the NaN rule holds for NaNs the sum creates."""
    x = np.full((8, 300), 3e38, np.float32)
    x[:, ::7] = -3e38
    x[3, 50] = np.nan
    x[4, 60] = NEG_NAN[0]
    k = np.array([[1.5, -2.0, 1.5], [2.0, 1.0, -1.5], [-2.0, 1.5, 2.0]], np.float32)
    for stride in ((1, 1), (2, 2)):
        got, want = run_both(x, k, stride, "same", "reflect", (1, 1))
        assert np.isnan(got).any()
        assert_bits(got, want)


def test_zero_weights_and_negative_zero():
    """Zero taps are skipped (0 * inf would be NaN); a sum of -0.0 products is +0.0."""
    x = np.full((6, 20), -0.0, np.float32)
    x[2, 5] = np.inf
    k = np.array([[0.0, 1.0, 0.0], [2.0, 0.0, 3.0], [0.0, 0.5, 0.0]], np.float32)
    got, want = run_both(x, k, (1, 1), "same", "zero", (1, 1))
    assert_bits(got, want)
    assert not np.signbit(got[np.isfinite(got)]).any()


def test_all_rows_padding():
    """Output rows whose taps all fall in zero padding are zeros."""
    x = image((3, 12), 5, specials=False)
    k = kernel((3, 3), 5)
    got, want = run_both(x, k, (1, 1), ((4, 4), (1, 1)), "zero", (1, 1))
    assert_bits(got, want)
    assert (got[:2] == 0).all()


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("channels", [1, 3])
def test_block_of_the_output_through_shifted_maps(stride, channels):
    """A block of outputs (as the engine recomputes FFT tiles): the maps start
    at the block and ``pad_left`` is shifted, negative once past the padding."""
    x = image((40, 90, channels) if channels > 1 else (40, 90), 21 + stride)
    k = kernel((3, 5), 4)
    pads, (oh, ow) = engine.geometry(x.shape, k.shape, stride, "same", 1)
    rows, c = engine.rows_view(x)
    rowmap = engine.source_index(x.shape[0], pads[0], "reflect")
    colmap = engine.source_index(x.shape[1], pads[1], "reflect")
    for oy0, oy1, ox0, ox1 in ((0, 5, 0, 7), (3, 11, 9, 25), (oh - 4, oh, ow - 6, ow)):
        rmap = np.ascontiguousarray(rowmap[oy0 * stride:])
        cmap = np.ascontiguousarray(colmap[ox0 * stride:])
        shift = pads[1][0] - ox0 * stride
        got = np.full((oy1 - oy0, (ox1 - ox0) * c), 12345.0, np.float32)
        _jit.correlate_rows(rows, c, k, rmap, cmap, shift, stride, stride, 1, 1, got)
        want = reference(rows, c, k, rmap, cmap, shift, stride, stride, 1, 1, oy1 - oy0, ox1 - ox0)
        assert_bits(got, want)


@pytest.mark.parametrize("channels", [1, 3])
def test_many_row_blocks_on_all_threads(channels):
    """Tall inputs: many parallel row blocks, each with its own tap lists."""
    shape = (700, 150) if channels == 1 else (700, 150, channels)
    x = image(shape, 11)
    for kshape, stride in (((3, 3), (1, 1)), ((5, 4), (2, 2)), ((3, 3), (1, 1))):
        k = kernel(kshape, kshape[1])
        got, want = run_both(x, k, stride, "same", "edge", (1, 1))
        assert_bits(got, want)


@pytest.mark.parametrize("stride", [1, 2, 3])
@pytest.mark.parametrize("shape", [(5, 9000), (4, 1500, 3), (3, 2500, 4)])
def test_rows_of_several_chunks(shape, stride):
    """Rows longer than one chunk (strided chunks are shorter, so that padding
    taps stay inside their zeros), with kernels whose last group of taps is
    filled up with padding taps (9 and 7 taps, five per pass)."""
    x = image(shape, 31)
    for k in (kernel((3, 3), 2), np.arange(1, 8, dtype=np.float32).reshape(1, 7)):
        k = k.copy()
        k[k == 0] = 0.5  # all taps nonzero
        got, want = run_both(x, k, (stride, stride), "same", "wrap", (1, 1))
        assert_bits(got, want)


def test_strided_taps_weigh_more_in_the_threading_threshold(monkeypatch):
    seen = []
    real = _jit._spread
    monkeypatch.setattr(_jit, "_spread", lambda run, n_rows, work: (seen.append(work), real(run, n_rows, work)))
    x = np.zeros((64, 64), np.float32)
    k = np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], np.float32)
    maps = engine.source_index(64, (1, 1), "zero")
    for sx, out in ((1, np.empty((64, 64), np.float32)), (2, np.empty((64, 32), np.float32))):
        _jit.correlate_rows(x, 1, k, maps, maps, 1, 1, sx, 1, 1, out)
    assert seen == [64 * 64 * 5, 64 * 32 * 5 * _jit._STRIDED_TAP]

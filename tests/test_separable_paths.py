"""kernelcli._jit.correlate_separable, bit for bit, against the two passes it fuses.

``correlate_separable`` runs, for each rank-1 factor, a pass down the columns
and a pass along the rows, a band of rows at a time (the intermediate stays
in cache), the bands spread over threads. Each value must be exactly what
two whole-array :func:`kernelcli._jit.correlate_rows` calls give (that
function is checked against the definition in test_jit_paths), the factors
added in order: compared as uint32, NaN payloads included.

One exception: with several factors, their results are added by NumPy, and
when both addends are NaN which payload survives depends on whether NumPy's
SIMD body or its scalar tail took the value (so on where a band ends); there
only the NaN positions are compared.
"""

from __future__ import annotations

import numpy as np
import pytest

from kernelcli import engine
from kernelcli.engine import _jit, _npkernels, ops

from .reference import kernel_fits
from .test_jit_paths import PAD_MODES, assert_bits, image

# Adding the factors' results (in NumPy, on any thread) overflows and makes
# NaN from the special values, as the whole-array additions did before.
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                                        "ignore:invalid value encountered:RuntimeWarning")


def two_passes(kernels, rows, c, factors, rowmap, colmap, pad_left, sy, sx, dy, dx, oh, ow):
    """What ops._separable computed before the passes were fused."""
    width = rows.shape[1] // c
    tmp = np.full((oh, width * c), 777.0, np.float32)
    out = np.full((oh, ow * c), 555.0, np.float32)
    part = np.empty_like(out)
    for i, (col, row) in enumerate(factors):
        kernels.correlate_rows(rows, c, col, rowmap, np.arange(width), 0, sy, 1, dy, 1, tmp)
        kernels.correlate_rows(tmp, c, row, np.arange(oh), colmap, pad_left, 1, sx, 1, dx, part if i else out)
        if i:
            out += part
    return out


def assert_same(got, want, rank):
    if rank == 1:
        assert_bits(got, want)
        return
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    assert_bits(np.where(nan, 0, got), np.where(nan, 0, want))


def factors_of(rank, kh, kw, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(rank):
        col = rng.uniform(-1.5, 1.5, size=(kh, 1)).astype(np.float32)
        row = rng.uniform(-1.5, 1.5, size=(1, kw)).astype(np.float32)
        col[rng.random((kh, 1)) < 0.2] = 0.0
        out.append((col, row))
    return out


def run_both(x, factors, stride, padding, mode, dilation):
    sy, sx = stride
    dy, dx = dilation
    kh, kw = factors[0][0].shape[0], factors[0][1].shape[1]
    pads, (oh, ow) = engine.geometry(x.shape, (kh, kw), stride, padding, dilation)
    rows, c = engine.rows_view(np.ascontiguousarray(x))
    rowmap = engine.source_index(x.shape[0], pads[0], mode)
    colmap = engine.source_index(x.shape[1], pads[1], mode)
    got = np.full((oh, ow * c), 12345.0, np.float32)  # every value must be overwritten
    _jit.correlate_separable(rows, c, factors, rowmap, colmap, pads[1][0], sy, sx, dy, dx, got)
    want = two_passes(_jit, rows, c, factors, rowmap, colmap, pads[1][0], sy, sx, dy, dx, oh, ow)
    return got, want


CASES = [
    # shape, kernel shape, rank, stride, dilation
    ((37, 41), (5, 5), 1, (1, 1), (1, 1)),
    ((37, 41, 3), (7, 5), 1, (1, 1), (1, 1)),
    ((40, 33), (5, 7), 2, (1, 1), (1, 1)),      # two factors, added in order
    ((31, 29), (5, 5), 1, (2, 2), (1, 1)),      # stride 2: the row pass is strided
    ((31, 29, 3), (6, 4), 2, (2, 3), (1, 2)),   # mixed strides, dilation, channels
    ((30, 26), (5, 5), 1, (3, 1), (2, 1)),      # row stride only
    ((9, 40), (15, 15), 1, (1, 1), (1, 1)),     # rows that are all padding
]


#: (case, padding) pairs whose kernel fits the image ("valid" on the small
#: cases does not: that refusal is tested in test_engine).
FITTING = [(i, padding) for i, (shape, kshape, _, stride, dilation) in enumerate(CASES)
           for padding in ("same", "valid", "full") if kernel_fits(shape, kshape, padding, dilation)]


@pytest.mark.parametrize("mode", PAD_MODES)
@pytest.mark.parametrize("case, padding", FITTING)
def test_separable_bits(case, padding, mode):
    shape, kshape, rank, stride, dilation = CASES[case]
    seed = 50 * case + len(mode)
    x = image(shape, seed)
    factors = factors_of(rank, *kshape, seed)
    got, want = run_both(x, factors, stride, padding, mode, dilation)
    assert_same(got, want, rank)


@pytest.mark.parametrize("band_bytes", [64 * 1024, None])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("shape", [(300, 2100), (160, 1500, 3)])
def test_many_bands_on_all_threads(shape, stride, band_bytes, monkeypatch):
    """Images of many bands of rows (each thread keeps its own intermediate
    and goes through several bands of its block of rows), with enough work
    to run on every thread."""
    if band_bytes:
        monkeypatch.setattr(_jit, "_BAND_BYTES", band_bytes)
    x = image(shape, 7)
    for rank in (1, 2):
        factors = factors_of(rank, 9, 11, rank)
        got, want = run_both(x, factors, (stride, stride), "same", "reflect", (1, 1))
        assert_same(got, want, rank)


def test_engine_uses_the_fused_passes_and_the_twins_agree():
    """ops._separable: the fused passes for the jitted loops, the two
    whole-array passes for the NumPy twins; the same numbers (NaN aside)."""
    x = image((120, 90, 3), 3, specials=False)
    factors = factors_of(2, 7, 7, 9)
    pads, (oh, ow) = engine.geometry(x.shape, (7, 7), 1, "same", 1)
    rows, c = engine.rows_view(x)
    rowmap = engine.source_index(x.shape[0], pads[0], "edge")
    colmap = engine.source_index(x.shape[1], pads[1], "edge")
    args = (rows, c, factors, rowmap, colmap, pads[1][0], (1, 1), (1, 1))
    fused = np.full((oh, ow * c), np.nan, dtype=np.float32)
    twins = np.full((oh, ow * c), np.nan, dtype=np.float32)
    ops._separable(_jit, *args, fused)
    ops._separable(_npkernels, *args, twins)
    assert_bits(fused, two_passes(_jit, rows, c, factors, rowmap, colmap, pads[1][0], 1, 1, 1, 1, oh, ow))
    assert_bits(fused, twins)

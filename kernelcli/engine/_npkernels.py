"""The kernels of :mod:`kernelcli.engine._jit` in plain NumPy, for small images.

Loading Numba costs about a third of a second per process, more than a small
image takes to filter in NumPy. These functions have the same signatures and
give the same numbers bit for bit: every output value starts at 0.0 and gets
``w * x`` (a float32 product, then a float32 sum) for each tap in the same
order (kernel row, then column, then channel), skipping zero weights and
zero padding, exactly as the jitted loops do. (Where a result is NaN it is
NaN in both, but the NaN's sign and payload bits may differ: which operand's
NaN survives an addition is up to the hardware.) The engine picks them when
Numba is not loaded yet and the work is small (:mod:`kernelcli.engine.backends`).

Each tap is applied to whole regions at once: the interior (plain strided
slices) and the border rows and columns (gathered through the padding maps).
The arithmetic is the arrays' own: :func:`kernelcli.engine.correlate_exact`
runs ``correlate_rows`` on int16 pixels, weights and output.
"""

from __future__ import annotations

import functools

import numpy as np

#: No ``correlate_separable`` here: the engine runs a low-rank kernel as two
#: ``correlate_rows`` passes over whole arrays.
FUSED_SEPARABLE = False


def _axis_plan(n_out: int, step: int, tap: int, index_map: np.ndarray):
    """For one tap along one axis: the interior as ``(out_slice, in_slice)``
    (source ``o*step + tap - pad`` inside the image, read directly) and the
    border as ``(out_positions, source_positions)`` through the map.
    Worked out once per process for each set of arguments: every band of an
    image asks for the same plans."""
    return _cached_axis_plan(n_out, step, tap, index_map.dtype.str, index_map.tobytes())


@functools.lru_cache(maxsize=256)
def _cached_axis_plan(n_out: int, step: int, tap: int, dtype: str, index_bytes: bytes):
    index_map = np.frombuffer(index_bytes, dtype=dtype)
    src = index_map[np.arange(n_out) * step + tap]
    inside = src >= 0
    direct = np.flatnonzero(inside)
    interior = None
    lo = hi = 0
    if direct.size:
        # The interior: the outputs whose source is the middle one's shifted
        # by whole steps, if they form one gap-free run (else all go through
        # the map, which is always right).
        shift = src[direct] - direct * step
        run = direct[shift == shift[len(shift) // 2]]
        lo, hi = int(run[0]), int(run[-1]) + 1
        base = int(src[lo])
        if np.array_equal(src[lo:hi], base + np.arange(hi - lo) * step):
            interior = (slice(lo, hi), slice(base, base + (hi - lo - 1) * step + 1, step))
        else:
            lo = hi = 0
    outer = np.concatenate([np.arange(0, lo), np.arange(hi, n_out)])
    outer = outer[inside[outer]]
    return interior, (outer, src[outer])


def _add(out3, src3, w, rows, cols, scratch):
    """``out3[rows, cols] += w * src3[rows', cols']`` over the interior and borders
    (the interior's products go through ``scratch``, reused from tap to tap)."""
    r_int, (r_out, r_src) = rows
    c_int, (c_out, c_src) = cols
    if r_int is not None and c_int is not None:
        target = out3[r_int[0], c_int[0]]
        if w == 1.0:  # 1 * x is x and a + -x is a - x, exactly: one pass instead of two
            target += src3[r_int[1], c_int[1]]
        elif w == -1.0:
            target -= src3[r_int[1], c_int[1]]
        else:
            product = scratch[:target.shape[0], :target.shape[1], :target.shape[2]]
            np.multiply(src3[r_int[1], c_int[1]], w, out=product)
            target += product
    if r_int is not None and c_out.size:
        out3[r_int[0], c_out] += w * src3[r_int[1]][:, c_src]
    if r_out.size:
        if c_int is not None:
            out3[r_out, c_int[0]] += w * src3[r_src, c_int[1]]
        if c_out.size:
            out3[np.ix_(r_out, c_out)] += w * src3[np.ix_(r_src, c_src)]


def _start(src, channels, out, out_channels, kw, sx, dx, colmap):
    """``src`` and ``out`` as (rows, columns, channels) views with ``out``
    zeroed, a scratch buffer the size of ``out``, and the column plan of each
    kernel column."""
    out3 = out.reshape(out.shape[0], out.shape[1] // out_channels, out_channels)
    out3[...] = 0.0
    cols = [_axis_plan(out3.shape[1], sx, kx * dx, colmap) for kx in range(kw)]
    return src.reshape(src.shape[0], src.shape[1] // channels, channels), out3, np.empty_like(out3), cols


def correlate_rows(src, channels, kernel, rowmap, colmap, pad_left, sy, sx, dy, dx, out):
    kh, kw = kernel.shape
    src3, out3, scratch, cols = _start(src, channels, out, channels, kw, sx, dx, colmap)
    for ky in range(kh):
        rows = _axis_plan(out3.shape[0], sy, ky * dy, rowmap)
        for kx in range(kw):
            w = kernel[ky, kx]
            if w != 0.0:
                _add(out3, src3, w, rows, cols[kx], scratch)


def correlate_depth(src, channels, kernel, rowmap, colmap, pad_left, sy, sx, dy, dx, out):
    kh, kw, _ = kernel.shape
    src3, out3, scratch, cols = _start(src, channels, out, 1, kw, sx, dx, colmap)
    for ky in range(kh):
        rows = _axis_plan(out3.shape[0], sy, ky * dy, rowmap)
        for kx in range(kw):
            for ch in range(channels):
                w = kernel[ky, kx, ch]
                if w != 0.0:
                    _add(out3, src3[:, :, ch:ch + 1], w, rows, cols[kx], scratch)


def pool_rows(src, channels, kind, ph, pw, sy, sx, out):
    c = channels
    h, width = src.shape[0], src.shape[1] // c
    out_h, out_w = out.shape[0], out.shape[1] // c
    src3 = src.reshape(h, width, c)
    out3 = out.reshape(out_h, out_w, c)
    if kind == 0:  # scratch for max, reused from tap to tap (fresh memory is slow)
        tap, bigger, nan = np.empty_like(out3), np.empty(out3.shape, bool), np.empty(out3.shape, bool)
    for py in range(ph):
        for px in range(pw):
            v = src3[py:py + (out_h - 1) * sy + 1:sy, px:px + (out_w - 1) * sx + 1:sx]
            if py == 0 and px == 0:
                out3[...] = v
            elif kind == 0:  # max; NaN wins, as in the jitted loop
                # the strided tap gathered once, then every pass over contiguous
                # memory: 1.8x faster than comparing the strided view twice
                np.copyto(tap, v)
                np.greater(tap, out3, out=bigger)
                np.not_equal(tap, tap, out=nan)
                bigger |= nan
                np.copyto(out3, tap, where=bigger)
            else:
                out3 += v
    if kind == 1:
        out3 /= np.float32(ph * pw)

"""The Numba kernels, and nothing else.

Every function here is private: it takes plain C-contiguous arrays and
integers, trusts its caller (:mod:`kernelcli.engine`) to have validated them,
allocates nothing large and does no I/O.

Layout convention: an image of shape ``(H, W, C)`` is passed as a 2-D view
``(H, W * C)`` plus the channel count ``C``, so that each row is one contiguous
run and the inner loops vectorise over columns and channels together.

Borders are handled without a padded copy: ``rowmap[p]`` / ``colmap[p]`` give,
for every coordinate ``p`` of the (virtually) padded input, the source
row/column it reads, or -1 where the padding is zero.
"""

import numba
import numpy as np

from . import config

_jit = numba.njit(parallel=config.PARALLEL, fastmath=config.FASTMATH, cache=config.CACHE)


@numba.njit(inline="always", cache=config.CACHE)
def _interior(off, width, sx, out_w):
    """Output columns ``lo <= ox < hi`` whose source column ``ox*sx + off`` lies
    inside the image (read directly); the rest go through the column map."""
    lo = 0
    if off < 0:
        lo = (-off + sx - 1) // sx
    hi = 0
    if width - 1 - off >= 0:
        hi = (width - 1 - off) // sx + 1
    if hi > out_w:
        hi = out_w
    if lo > out_w:
        lo = out_w
    if hi < lo:
        hi = lo
    return lo, hi


@numba.njit(inline="always", cache=config.CACHE)
def _add_border(orow, out_c, irow, in_c, ch0, nch, colmap, w, tap, sx, lo, hi, out_w):
    """Add ``w`` times the input to the output columns outside ``lo..hi``, reading
    through the column map (zero, reflect, wrap...): ``nch`` channels from input
    channel ``ch0`` on, into output pixels of ``out_c`` channels."""
    for side in range(2):
        start, stop = (0, lo) if side == 0 else (hi, out_w)
        for ox in range(start, stop):
            ix = colmap[ox * sx + tap]
            if ix >= 0:
                for k in range(nch):
                    orow[ox * out_c + k] += w * irow[ix * in_c + ch0 + k]


@_jit
def correlate_rows(src, channels, kernel, rowmap, colmap, pad_left, sy, sx, dy, dx, out):
    """Cross-correlate every channel of ``src`` with the 2-D ``kernel``.

    src:    (H, W*C) float32     kernel: (KH, KW) float32
    out:    (OH, OW*C) float32, fully overwritten
    Output pixel (oy, ox) reads padded coordinates
    (oy*sy + ky*dy, ox*sx + kx*dx) for every tap (ky, kx).
    """
    kh, kw = kernel.shape
    c = channels
    width = src.shape[1] // c
    out_h = out.shape[0]
    out_w = out.shape[1] // c
    for oy in numba.prange(out_h):
        orow = out[oy]
        for j in range(out_w * c):
            orow[j] = 0.0
        for ky in range(kh):
            iy = rowmap[oy * sy + ky * dy]
            if iy < 0:
                continue
            irow = src[iy]
            for kx in range(kw):
                w = kernel[ky, kx]
                if w == 0.0:
                    continue
                off = kx * dx - pad_left
                lo, hi = _interior(off, width, sx, out_w)
                # Interior through views, so that every index is a plain
                # non-negative loop counter and the loop vectorises.
                if hi > lo:
                    if sx == 1:
                        ov = orow[lo * c:hi * c]
                        iv = irow[(lo + off) * c:(hi + off) * c]
                        for j in range(ov.shape[0]):
                            ov[j] += w * iv[j]
                    else:
                        n = hi - lo
                        for ch in range(c):
                            ov = orow[lo * c + ch:hi * c:c]
                            iv = irow[(lo * sx + off) * c + ch::sx * c]
                            for j in range(n):
                                ov[j] += w * iv[j]
                # Borders: go through the column map (zero, reflect, wrap...).
                _add_border(orow, c, irow, c, 0, c, colmap, w, kx * dx, sx, lo, hi, out_w)


@_jit
def correlate_depth(src, channels, kernel, rowmap, colmap, pad_left, sy, sx, dy, dx, out):
    """Cross-correlate with a ``(KH, KW, C)`` kernel, summing over channels.

    src: (H, W*C) float32; kernel: (KH, KW, C) float32; out: (OH, OW) float32,
    fully overwritten: one feature map, as a ConvNet layer's filter gives.
    """
    kh, kw, _ = kernel.shape
    c = channels
    width = src.shape[1] // c
    out_h, out_w = out.shape
    for oy in numba.prange(out_h):
        orow = out[oy]
        for j in range(out_w):
            orow[j] = 0.0
        for ky in range(kh):
            iy = rowmap[oy * sy + ky * dy]
            if iy < 0:
                continue
            irow = src[iy]
            for kx in range(kw):
                off = kx * dx - pad_left
                lo, hi = _interior(off, width, sx, out_w)
                for ch in range(c):
                    w = kernel[ky, kx, ch]
                    if w == 0.0:
                        continue
                    if hi > lo:
                        ov = orow[lo:hi]
                        iv = irow[(lo * sx + off) * c + ch::sx * c]
                        for j in range(hi - lo):
                            ov[j] += w * iv[j]
                    _add_border(orow, 1, irow, c, ch, 1, colmap, w, kx * dx, sx, lo, hi, out_w)


@_jit
def pool_rows(src, channels, kind, ph, pw, sy, sx, out):
    """Pool windows of ``ph x pw`` every ``(sy, sx)``, no padding.

    src: (H, W*C) float32; out: (OH, OW*C) float32, fully overwritten.
    kind: 0 = max (NaN wins), 1 = average, 2 = sum. Each output row is built
    from whole input rows, one window tap and channel at a time, through
    strided views (plain loop counters, so the loops vectorise).
    """
    c = channels
    out_h = out.shape[0]
    out_w = out.shape[1] // c
    area = np.float32(ph * pw)
    for oy in numba.prange(out_h):
        orow = out[oy]
        for ch in range(c):
            ov = orow[ch::c]
            for py in range(ph):
                irow = src[oy * sy + py]
                for px in range(pw):
                    iv = irow[px * c + ch::sx * c]
                    if py == 0 and px == 0:
                        for j in range(out_w):
                            ov[j] = iv[j]
                    elif kind == 0:
                        for j in range(out_w):
                            a = ov[j]
                            v = iv[j]
                            ov[j] = v if (v > a or v != v) else a
                    else:
                        for j in range(out_w):
                            ov[j] += iv[j]
            if kind == 1:
                for j in range(out_w):
                    ov[j] /= area

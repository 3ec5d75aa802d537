"""The Numba kernels, and nothing else.

Every jitted function here is private: it takes plain C-contiguous arrays and
integers, trusts its caller (:mod:`kernelcli.engine`) to have validated them,
allocates nothing large and does no I/O. ``correlate_rows`` and
``correlate_separable`` are plain Python: they pick the loops for the
stride and spread blocks of rows over threads.

Layout convention: an image of shape ``(H, W, C)`` is passed as a 2-D view
``(H, W * C)`` plus the channel count ``C``, so that each row is one contiguous
run and the inner loops vectorise over columns and channels together.

Borders are handled without a padded copy: ``rowmap[p]`` / ``colmap[p]`` give,
for every coordinate ``p`` of the (virtually) padded input, the source
row/column it reads, or -1 where the padding is zero.
"""

import threading

import numba
import numpy as np

from .. import config
from . import _threads

#: This backend has ``correlate_separable``: both 1-D passes of a low-rank
#: kernel in one call, a band of rows at a time.
FUSED_SEPARABLE = True

_jit = numba.njit(parallel=config.PARALLEL, fastmath=config.FASTMATH, cache=config.CACHE)
#: Serial, GIL-free loops over a range of output rows, run side by side on
#: Python threads by :func:`_spread`. A parallel loop (``prange``, as in
#: correlate_depth and pool_rows) would do the same, but compiling one took
#: about 3 s more in an empty Numba cache.
_serial = numba.njit(nogil=True, fastmath=config.FASTMATH, cache=config.CACHE)


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


# --------------------------------------------------------------------------
# correlate_rows. Each column stride has its own loops, chosen in Python, so
# that a command compiles only the ones it runs. Each is one jitted function
# whose helpers are inlined: a jitted callee costs its own compile (0.3-0.4 s
# each here, however small) and is then optimised again inside its caller.
# Compile time otherwise grows with the length of the code: in an empty
# cache _rows_unit takes 1.7-2.4 s on top of Numba's own start (0.7-1 s,
# which a warm cache pays too); the pixel-by-pixel part alone about 0.5 s.

#: Output values per chunk of a row (a whole row of a 4096-pixel image): all
#: the taps of a chunk are applied before the next chunk, while it is in cache.
_CHUNK = 4096
#: Taps applied per pass over a chunk, summed in registers.
_GROUP = 5


@numba.njit(inline="always", cache=config.CACHE)
def _pixel(src, src_len, c, ch, ox, sx, tw, trow, tcol, m, colmap):
    """One output value, tap by tap through the column map.

    NaN payloads: when both operands of an addition are NaN, x86 returns the
    first. The one-tap-per-pass loops this module used to run compiled
    ``sum += w * x`` with the product first, so a NaN product replaced a NaN
    sum. The grouped passes leave the operand order to LLVM, so outputs that
    come out NaN are recomputed here with that rule spelled out.
    """
    acc = np.float32(0.0)
    for t in range(m):
        ix = colmap[ox * sx + tcol[t]]
        if ix >= 0:
            p = tw[t] * src[trow[t] * src_len + ix * c + ch]
            acc = p if p != p else acc + p
    return acc


@numba.njit(inline="always", cache=config.CACHE)
def _taps(kernel, rowmap, oy, sy, dy, dx, src_len, c, first_col, tw, trow, tcol, toff):
    """The taps that apply to output row ``oy``, in (ky, kx) order: weight
    ``tw``, source row ``trow``, padded column offset ``tcol`` (``kx*dx``)
    and ``toff``, where the tap reads its first interior output in the
    flattened source (``first_col``: that output's source column for
    ``kx = 0``). Returns their count ``m``.

    Up to the next multiple of ``_GROUP`` the lists go on with padding taps:
    weight 0, reading where the last tap reads. Each adds ``0*x``, which is
    +-0.0 and changes no sum (a sum that starts at +0.0 is never -0.0), or
    NaN when ``x`` is infinite or NaN, and NaN outputs are recomputed
    without them.
    """
    kh, kw = kernel.shape
    m = 0
    for ky in range(kh):
        iy = rowmap[oy * sy + ky * dy]
        if iy >= 0:
            for kx in range(kw):
                w = kernel[ky, kx]
                if w != 0.0:
                    tw[m] = w
                    trow[m] = iy
                    tcol[m] = kx * dx
                    toff[m] = iy * src_len + (first_col + kx * dx) * c
                    m += 1
    for t in range(m, (m + _GROUP - 1) // _GROUP * _GROUP):
        tw[t] = 0.0
        toff[t] = toff[m - 1]
    return m


@numba.njit(inline="always", cache=config.CACHE)
def _by_pixel(out, row, src, src_len, c, sx, tw, trow, tcol, m, colmap, lo, hi, out_w, nan_too):
    """The output columns outside ``lo..hi``, value by value through the
    column map; and, if ``nan_too``, the NaN values inside it."""
    for side in range(2):
        start, stop = (0, lo) if side == 0 else (lo if nan_too else hi, out_w)
        for ox in range(start, stop):
            for ch in range(c):
                q = row + ox * c + ch
                if ox < lo or ox >= hi or out[q] != out[q]:
                    out[q] = _pixel(src, src_len, c, ch, ox, sx, tw, trow, tcol, m, colmap)


@_serial
def _rows_unit(src, src_len, c, kernel, rowmap, colmap, pad_left, sy, dy, dx, out, out_len, y0, y1, oy0,
               lo, hi, tw, trow, tcol, toff):
    """Output rows ``y0 <= oy < y1`` of :func:`correlate_rows` at column
    stride 1, written to row ``oy - oy0`` of ``out``.

    ``src`` and ``out`` are flattened (rows of ``src_len`` and ``out_len``
    values), ``lo..hi`` is the interior, ``tw, trow, tcol, toff`` the
    thread's tap lists (:func:`_taps`). The interior of a row is one run of
    values, channels interleaved, done a chunk at a time, ``_GROUP`` taps
    per pass summed in registers. Offsets are unsigned, so the indexing
    needs no negative-index check and the loops vectorise. Only the last
    pass of a row looks for NaN; the others have loops without the check,
    which run faster for most kernels and widths.
    """
    out_w = out_len // c
    nval = (hi - lo) * c
    zero = np.float32(0.0)
    for oy in range(y0, y1):
        row = (oy - oy0) * out_len
        m = _taps(kernel, rowmap, oy, sy, dy, dx, src_len, c, lo - pad_left, tw, trow, tcol, toff)
        if m == 0:
            for j in range(out_len):
                out[row + j] = 0.0
            continue
        bad = False
        for j0 in range(0, nval, _CHUNK):
            n = np.uint64(min(_CHUNK, nval - j0))
            o = np.uint64(row + lo * c + j0)
            for t in range(0, m, _GROUP):
                ia, ib, ic = np.uint64(toff[t] + j0), np.uint64(toff[t + 1] + j0), np.uint64(toff[t + 2] + j0)
                id_, ie = np.uint64(toff[t + 3] + j0), np.uint64(toff[t + 4] + j0)
                wa, wb, wc, wd, we = tw[t], tw[t + 1], tw[t + 2], tw[t + 3], tw[t + 4]
                # NaN is looked for in the last pass only: a NaN partial sum stays NaN
                if t == 0 and t + _GROUP >= m:
                    for j in range(n):
                        v = ((((zero + wa * src[ia + j]) + wb * src[ib + j]) + wc * src[ic + j]) + wd * src[id_ + j]) + we * src[ie + j]
                        out[o + j] = v
                        bad |= v != v
                elif t == 0:
                    for j in range(n):
                        out[o + j] = ((((zero + wa * src[ia + j]) + wb * src[ib + j]) + wc * src[ic + j]) + wd * src[id_ + j]) + we * src[ie + j]
                elif t + _GROUP >= m:
                    for j in range(n):
                        v = ((((out[o + j] + wa * src[ia + j]) + wb * src[ib + j]) + wc * src[ic + j]) + wd * src[id_ + j]) + we * src[ie + j]
                        out[o + j] = v
                        bad |= v != v
                else:
                    for j in range(n):
                        out[o + j] = ((((out[o + j] + wa * src[ia + j]) + wb * src[ib + j]) + wc * src[ic + j]) + wd * src[id_ + j]) + we * src[ie + j]
        _by_pixel(out, row, src, src_len, c, 1, tw, trow, tcol, m, colmap, lo, hi, out_w, bad)


@_serial
def _rows_step(src, src_len, c, kernel, rowmap, colmap, pad_left, sy, sx, dy, dx, out, out_len, y0, y1, oy0,
               lo, hi, tw, trow, tcol, toff):
    """:func:`_rows_unit` for a column stride ``sx`` > 1: the interior of a
    row one channel at a time, inputs ``sx*c`` apart; step 2 on one channel,
    the common strided case, has its own loops with the step a constant."""
    out_w = out_len // c
    nval = hi - lo
    step = np.uint64(sx * c)
    ostep = np.uint64(c)
    two = np.uint64(2)
    zero = np.float32(0.0)
    for oy in range(y0, y1):
        row = (oy - oy0) * out_len
        m = _taps(kernel, rowmap, oy, sy, dy, dx, src_len, c, lo * sx - pad_left, tw, trow, tcol, toff)
        if m == 0:
            for j in range(out_len):
                out[row + j] = 0.0
            continue
        bad = False
        for ch in range(c):
            for j0 in range(0, nval, _CHUNK):
                n = np.uint64(min(_CHUNK, nval - j0))
                o = np.uint64(row + (lo + j0) * c + ch)
                i = ch + j0 * sx * c
                for t in range(0, m, _GROUP):
                    ia, ib, ic = np.uint64(toff[t] + i), np.uint64(toff[t + 1] + i), np.uint64(toff[t + 2] + i)
                    id_, ie = np.uint64(toff[t + 3] + i), np.uint64(toff[t + 4] + i)
                    wa, wb, wc, wd, we = tw[t], tw[t + 1], tw[t + 2], tw[t + 3], tw[t + 4]
                    if step == 2 and t == 0:
                        for j in range(n):
                            s = two * j
                            v = ((((zero + wa * src[ia + s]) + wb * src[ib + s]) + wc * src[ic + s]) + wd * src[id_ + s]) + we * src[ie + s]
                            out[o + j] = v
                            bad |= v != v
                    elif step == 2:
                        for j in range(n):
                            s = two * j
                            v = ((((out[o + j] + wa * src[ia + s]) + wb * src[ib + s]) + wc * src[ic + s]) + wd * src[id_ + s]) + we * src[ie + s]
                            out[o + j] = v
                            bad |= v != v
                    else:
                        for j in range(n):
                            s = step * j
                            q = o + ostep * j
                            start = zero if t == 0 else out[q]
                            v = ((((start + wa * src[ia + s]) + wb * src[ib + s]) + wc * src[ic + s]) + wd * src[id_ + s]) + we * src[ie + s]
                            out[q] = v
                            bad |= v != v
        _by_pixel(out, row, src, src_len, c, sx, tw, trow, tcol, m, colmap, lo, hi, out_w, bad)


def _interior_cols(kernel, width, pad_left, sx, dx, out_w):
    """Output columns ``lo <= ox < hi`` where every column of taps with a
    nonzero weight reads inside the image (as :func:`_interior` for each)."""
    lo, hi = 0, out_w
    for kx, used in enumerate(kernel.any(axis=0).tolist()):  # (plain ints: a third of the time)
        if not used:
            continue
        off = kx * dx - pad_left
        lo = max(lo, min(-(off // sx), out_w) if off < 0 else 0)
        hi = min(hi, (width - 1 - off) // sx + 1 if width - 1 - off >= 0 else 0)
    return lo, max(hi, lo)


#: Below this many multiply-adds one thread does all the rows (handing
#: blocks to a kept helper thread costs about 0.02-0.05 ms).
_MIN_THREADED_WORK = 4_000_000
#: A tap of a column stride above 1 counts as this many in that work: its
#: values are loaded one at a time (a strided 3x3 on about 768x768 takes as
#: long on one thread as on two).
_STRIDED_TAP = 4


def _spread(run, n_rows, work):
    """Call ``run(y0, y1)`` on blocks of rows that cover ``0..n_rows``, on
    ``numba.get_num_threads()`` threads (the caller's and kept helpers,
    :mod:`kernelcli.engine._threads`) when the work is large enough: each thread
    takes the next block when it is free, and every block writes only its
    own output rows."""
    threads = min(numba.get_num_threads() if config.PARALLEL else 1, n_rows)
    if threads <= 1 or work < _MIN_THREADED_WORK:
        run(0, n_rows)
        return
    block = -(-n_rows // (4 * threads))
    blocks = iter(range(0, n_rows, block))
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                y0 = next(blocks, None)
            if y0 is None:
                return
            run(y0, min(n_rows, y0 + block))

    _threads.run(worker, threads - 1)


def _tap_lists(taps):
    """Tap lists for :func:`_taps`, for up to ``taps`` taps: weights, rows,
    column offsets, flat offsets."""
    n = taps + _GROUP
    return (np.empty(n, np.float32), np.empty(n, np.int64), np.empty(n, np.int64), np.empty(n, np.int64))


def correlate_rows(src, channels, kernel, rowmap, colmap, pad_left, sy, sx, dy, dx, out):
    """Cross-correlate every channel of ``src`` with the 2-D ``kernel``.

    src:    (H, W*C) float32     kernel: (KH, KW) float32
    out:    (OH, OW*C) float32, fully overwritten
    rowmap, colmap: int64
    Output pixel (oy, ox) reads padded coordinates
    (oy*sy + ky*dy, ox*sx + kx*dx) for every tap (ky, kx).

    Every output value is ``0.0 + w*x + w*x + ...`` over the taps in (ky, kx)
    order, in float32, skipping zero weights and rows/columns that map to -1.
    Per output row: the list of taps that apply (:func:`_taps`); then the
    interior (columns where every tap reads inside the image), a chunk at a
    time, ``_GROUP`` taps per pass summed in registers; then the border
    columns, value by value through the column map (:func:`_by_pixel`).
    Blocks of rows run on several threads (:func:`_spread`).
    """
    c, pad_left, sy, sx, dy, dx = int(channels), int(pad_left), int(sy), int(sx), int(dy), int(dx)
    src_len, out_len = src.shape[1], out.shape[1]
    lo, hi = _interior_cols(kernel, src_len // c, pad_left, sx, dx, out_len // c)
    flat_src, flat_out = src.reshape(-1), out.reshape(-1)

    def run(y0, y1):
        if sx == 1:
            _rows_unit(flat_src, src_len, c, kernel, rowmap, colmap, pad_left, sy, dy, dx, flat_out, out_len,
                       y0, y1, 0, lo, hi, *_tap_lists(kernel.size))
        else:
            _rows_step(flat_src, src_len, c, kernel, rowmap, colmap, pad_left, sy, sx, dy, dx, flat_out, out_len,
                       y0, y1, 0, lo, hi, *_tap_lists(kernel.size))

    taps = max(1, int(np.count_nonzero(kernel)))
    _spread(run, out.shape[0], out.size * taps * (_STRIDED_TAP if sx > 1 else 1))


#: Bytes of the intermediate rows :func:`correlate_separable` keeps per
#: thread. A band of B output rows reads B + KH - 1 source rows, so small
#: bands read the rows they share with their neighbours many times over;
#: 2 MB bands ran large Gaussians faster than 256 KB ones, and no slower
#: elsewhere.
_BAND_BYTES = 2 * 1024 * 1024


def correlate_separable(src, channels, factors, rowmap, colmap, pad_left, sy, sx, dy, dx, out):
    """Cross-correlate every channel of ``src`` with the sum of the outer
    products of ``factors``, ``[(column (KH, 1), row (1, KW)), ...]``.

    src: (H, W*C) float32; out: (OH, OW*C) float32, fully overwritten;
    the other arguments as for :func:`correlate_rows`. For each factor, a
    pass down the columns (the rows' map, stride and dilation) into an
    ``(OH, W*C)`` intermediate, then a pass along its rows (the columns'
    map, stride and dilation); the factors' results are added in order.
    The numbers are those of two :func:`correlate_rows` calls per factor,
    bit for bit, but the intermediate is made a band of rows at a time and
    used at once, while it is in cache, instead of as a whole new array.
    """
    c, pad_left, sy, sx, dy, dx = int(channels), int(pad_left), int(sy), int(sx), int(dy), int(dx)
    src_len, out_len = src.shape[1], out.shape[1]
    width = src_len // c
    band = max(1, min(out.shape[0], _BAND_BYTES // (4 * src_len)))
    every_col = np.arange(width, dtype=np.int64)
    every_row = np.arange(band, dtype=np.int64)
    interiors = [(_interior_cols(col, width, 0, 1, 1, width), _interior_cols(row, width, pad_left, sx, dx, out_len // c))
                 for col, row in factors]
    flat_src = src.reshape(-1)
    taps = sum(col.shape[0] * src_len + row.shape[1] * out_len for col, row in factors)

    def run(y0, y1):
        tmp = np.empty(band * src_len, np.float32)
        part = np.empty(band * out_len, np.float32) if len(factors) > 1 else None
        lists = _tap_lists(max(max(col.size, row.size) for col, row in factors))
        for b0 in range(y0, y1, band):
            b1 = min(y1, b0 + band)
            for i, ((col, row), ((clo, chi), (rlo, rhi))) in enumerate(zip(factors, interiors)):
                dest = out[b0:b1].reshape(-1) if i == 0 else part[:(b1 - b0) * out_len]
                _rows_unit(flat_src, src_len, c, col, rowmap, every_col, 0, sy, dy, 1, tmp, src_len,
                           b0, b1, b0, clo, chi, *lists)
                if sx == 1:
                    _rows_unit(tmp, src_len, c, row, every_row, colmap, pad_left, 1, 1, dx, dest, out_len,
                               0, b1 - b0, 0, rlo, rhi, *lists)
                else:
                    _rows_step(tmp, src_len, c, row, every_row, colmap, pad_left, 1, sx, 1, dx, dest, out_len,
                               0, b1 - b0, 0, rlo, rhi, *lists)
                if i:
                    out[b0:b1].reshape(-1)[:] += dest

    _spread(run, out.shape[0], out.shape[0] * taps)


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

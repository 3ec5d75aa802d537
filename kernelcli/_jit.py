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


#: Output values per chunk of a row in ``correlate_rows`` (a whole row of a
#: 4096-pixel image; fewer for large strides, see there): all the taps of a
#: chunk are applied before the next chunk.
_CHUNK = 4096
#: Taps applied per pass over a chunk, summed in registers.
_GROUP = 5


@numba.njit(cache=config.CACHE)
def _pass(out, o, ostep, a, ia, b, ib, c, ic, d, id_, e, ie, wa, wb, wc, wd, we, n, step, first):
    """``out[q] = ((((start + wa*a[ia+s]) + wb*b[ib+s]) + wc*c[ic+s]) + wd*d[id_+s]) + we*e[ie+s]``
    for ``j < n``, ``q = o + ostep*j``, ``s = step*j``, in that order, in
    float32, where ``start`` is 0.0 on the ``first`` pass, else ``out[q]``.
    Returns whether any of these outputs is now NaN.

    Offsets, steps and ``n`` are unsigned, so the indexing needs no
    negative-index check and no array views (whose reference counts both
    threads would update). Unit steps vectorise; other steps load one value
    at a time (step 2 of one channel, the common strided case, has its own
    loops with the step a constant).
    """
    bad = False
    zero = np.float32(0.0)
    if step == 1 and ostep == 1:
        if first:
            for j in range(n):
                v = ((((zero + wa * a[ia + j]) + wb * b[ib + j]) + wc * c[ic + j]) + wd * d[id_ + j]) + we * e[ie + j]
                out[o + j] = v
                bad |= v != v
        else:
            for j in range(n):
                v = ((((out[o + j] + wa * a[ia + j]) + wb * b[ib + j]) + wc * c[ic + j]) + wd * d[id_ + j]) + we * e[ie + j]
                out[o + j] = v
                bad |= v != v
    elif step == 2 and ostep == 1:
        two = np.uint64(2)
        if first:
            for j in range(n):
                s = two * j
                v = ((((zero + wa * a[ia + s]) + wb * b[ib + s]) + wc * c[ic + s]) + wd * d[id_ + s]) + we * e[ie + s]
                out[o + j] = v
                bad |= v != v
        else:
            for j in range(n):
                s = two * j
                v = ((((out[o + j] + wa * a[ia + s]) + wb * b[ib + s]) + wc * c[ic + s]) + wd * d[id_ + s]) + we * e[ie + s]
                out[o + j] = v
                bad |= v != v
    else:
        for j in range(n):
            s = step * j
            q = o + ostep * j
            start = zero if first else out[q]
            v = ((((start + wa * a[ia + s]) + wb * b[ib + s]) + wc * c[ic + s]) + wd * d[id_ + s]) + we * e[ie + s]
            out[q] = v
            bad |= v != v
    return bad


@numba.njit(inline="always", cache=config.CACHE)
def _tap_input(src_flat, zeros, toff, t, m, i):
    """Where tap ``t`` reads the chunk that starts ``i`` inputs past output
    column lo: ``(array, offset)``; the zeros for a padding tap (``t >= m``)."""
    if t < m:
        return src_flat, np.uint64(toff[t] + i)
    return zeros, np.uint64(0)


@numba.njit(cache=config.CACHE)
def _pixel(src, c, ch, ox, sx, tw, trow, tcol, m, colmap):
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
            p = tw[t] * src[trow[t], ix * c + ch]
            if p != p:
                acc = p
            else:
                acc = acc + p
    return acc


@numba.njit(cache=config.CACHE)
def _rows_block(src, c, kernel, rowmap, colmap, pad_left, sy, sx, dy, dx, out, y0, y1, lo, hi,
                tw, trow, tcol, toff, zeros):
    """Output rows ``y0 <= oy < y1`` of ``correlate_rows``; ``lo..hi`` is its
    interior, the last five arrays are this task's buffers."""
    kh, kw = kernel.shape
    width = src.shape[1] // c
    out_w = out.shape[1] // c
    src_flat = src.reshape(-1)
    out_flat = out.reshape(-1)
    src_len = src.shape[1]
    out_len = out.shape[1]
    for oy in range(y0, y1):
        row = oy * out_len
        # the taps that apply to this row, in order
        m = 0
        for ky in range(kh):
            iy = rowmap[oy * sy + ky * dy]
            if iy < 0:
                continue
            for kx in range(kw):
                w = kernel[ky, kx]
                if w == 0.0:
                    continue
                tw[m] = w
                trow[m] = iy
                tcol[m] = kx * dx
                toff[m] = iy * src_len + (lo * sx + kx * dx - pad_left) * c
                m += 1
        if m == 0:
            for j in range(out_len):
                out_flat[row + j] = 0.0
            continue
        # The last group is filled with padding taps that read zeros with
        # weight 0: each adds 0*0 = +0.0, no change, as no sum is ever -0.0.
        mg = (m + _GROUP - 1) // _GROUP * _GROUP
        for t in range(m, mg):
            tw[t] = 0.0
        if hi > lo:
            if sx == 1:  # one run of (hi - lo) * c values, channels interleaved
                nval, chans, ostep, step, chunk = (hi - lo) * c, 1, 1, 1, _CHUNK
            else:  # each channel on its own, strided
                nval, chans, ostep, step = hi - lo, c, c, sx * c
                chunk = min(_CHUNK, (len(zeros) - 1) // step + 1)  # padding taps stay in zeros
            for ch in range(chans):
                for j0 in range(0, nval, chunk):
                    size = min(chunk, nval - j0)
                    o = row + lo * c + ch + j0 * ostep
                    i = ch + j0 * step
                    bad = False
                    for t in range(0, mg, _GROUP):
                        a, ia = _tap_input(src_flat, zeros, toff, t, m, i)
                        b, ib = _tap_input(src_flat, zeros, toff, t + 1, m, i)
                        cc, ic = _tap_input(src_flat, zeros, toff, t + 2, m, i)
                        d, id_ = _tap_input(src_flat, zeros, toff, t + 3, m, i)
                        e, ie = _tap_input(src_flat, zeros, toff, t + 4, m, i)
                        bad |= _pass(out_flat, np.uint64(o), np.uint64(ostep), a, ia, b, ib, cc, ic, d, id_, e, ie,
                                     tw[t], tw[t + 1], tw[t + 2], tw[t + 3], tw[t + 4],
                                     np.uint64(size), np.uint64(step), t == 0)
                    if bad:  # redo NaN outputs with the exact NaN rule
                        for j in range(size):
                            q = o + j * ostep
                            if out_flat[q] != out_flat[q]:
                                k = q - row
                                out_flat[q] = _pixel(src, c, k % c, k // c, sx, tw, trow, tcol, m, colmap)
        # border columns: every tap through the column map
        for ox in range(0, lo):
            for ch in range(c):
                out_flat[row + ox * c + ch] = _pixel(src, c, ch, ox, sx, tw, trow, tcol, m, colmap)
        for ox in range(hi, out_w):
            for ch in range(c):
                out_flat[row + ox * c + ch] = _pixel(src, c, ch, ox, sx, tw, trow, tcol, m, colmap)


@_jit
def correlate_rows(src, channels, kernel, rowmap, colmap, pad_left, sy, sx, dy, dx, out):
    """Cross-correlate every channel of ``src`` with the 2-D ``kernel``.

    src:    (H, W*C) float32     kernel: (KH, KW) float32
    out:    (OH, OW*C) float32, fully overwritten
    Output pixel (oy, ox) reads padded coordinates
    (oy*sy + ky*dy, ox*sx + kx*dx) for every tap (ky, kx).

    Every output value is ``0.0 + w*x + w*x + ...`` over the taps in (ky, kx)
    order, in float32, skipping zero weights and rows/columns that map to -1.
    Per output row (:func:`_rows_block`, blocks of rows in parallel): the
    list of taps that apply; then the interior (columns where every tap reads
    inside the image), a chunk at a time, ``_GROUP`` taps per pass summed in
    registers (:func:`_pass`); then the border columns, pixel by pixel
    through the column map (:func:`_pixel`).
    """
    kh, kw = kernel.shape
    c = channels
    width = src.shape[1] // c
    out_h = out.shape[0]
    out_w = out.shape[1] // c
    # Interior: the output columns lo..hi where every column of taps that has
    # a nonzero weight reads inside the image.
    lo = 0
    hi = out_w
    for kx in range(kw):
        used = False
        for ky in range(kh):
            if kernel[ky, kx] != 0.0:
                used = True
        if used:
            lo_k, hi_k = _interior(kx * dx - pad_left, width, sx, out_w)
            lo = max(lo, lo_k)
            hi = min(hi, hi_k)
    hi = max(hi, lo)
    ntap = kh * kw + _GROUP
    block = 16  # output rows per parallel task (its small buffers are reused)
    for blk in numba.prange((out_h + block - 1) // block):
        tw = np.zeros(ntap, np.float32)
        trow = np.zeros(ntap, np.int64)
        tcol = np.zeros(ntap, np.int64)
        toff = np.zeros(ntap, np.int64)  # where the tap reads output column lo, in src_flat
        zeros = np.zeros(2 * _CHUNK, np.float32)
        _rows_block(src, c, kernel, rowmap, colmap, pad_left, sy, sx, dy, dx, out,
                    blk * block, min(out_h, (blk + 1) * block), lo, hi, tw, trow, tcol, toff, zeros)


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

"""Cross-correlation by FFT, overlap-save in tiles, for large kernels.

Plain NumPy (``numpy.fft``, pocketfft), no Numba. The engine
(:func:`kernelcli.engine.convolve`) decides when to come here (see
:mod:`kernelcli.engine.plan`) and hands over the same arguments the jitted kernels get:
the image as ``(H, W*C)`` rows plus ``C``, the (already flipped) weights, the
padding maps ``rowmap`` / ``colmap`` (padded coordinate -> source index, or -1
for a zero), stride, dilation and the output size.

How one call runs:

* A dilated kernel is a kernel with zeros inserted: its reach ``RY x RX`` is
  what the transform sees. Its spectrum is computed once per call.
* The output is cut into tiles. A tile of ``TY x TX`` outputs at stride
  ``(SY, SX)`` needs ``((TY-1)*SY + RY) x ((TX-1)*SX + RX)`` padded input
  samples; they are gathered through ``rowmap`` / ``colmap`` (block copies,
  one per run of consecutive source indices; never a padded copy of the whole
  image) into an ``NY x NX`` transform (sizes from :func:`plan`). The
  circular correlation of that tile with the kernel is exact at the first
  ``NY - RY + 1`` by ``NX - RX + 1`` positions; the strided ones among them are
  the tile's outputs.
* A 2-D kernel is applied to each channel (one transform per channel of the
  tile); a ``KY x KX x C`` kernel is summed over the channels in the
  frequency domain (C forward transforms, one inverse).
* Tiles are independent, so they are spread over ``threads`` threads, the
  caller's included (numpy's FFT releases the GIL). Each thread takes the next tile when it is free,
  reuses its own buffers (fresh pages are expensive on these machines) and
  writes its tiles' blocks of the output.
* Every transform passes ``norm=``: with the default norm NumPy 2.4 runs a
  forward float32 transform about 7x slower (it is given a scale factor of
  integer 1); "ortho" on both data transforms gives the same result.
* Computed in float32. Measured error, 31x31 kernel on 4096x4096: at most
  7e-8 of ``sum(|w| * |x|)`` over the output's window (float64 transforms:
  2.5e-8, and 1.7x the time). The rounding error of a transform is spread
  over its tile, so a window that sees little of the image (the edge of
  "full" padding, a dark patch beside a bright one) gets an error of the
  size of its neighbours' values; outputs that read nothing but zero padding
  are set to exactly 0 by the engine.
* Unlike the direct loops, a NaN or infinity in a tile's input (or an
  overflow inside the transform) would spread over the whole tile, so a tile
  whose result is not all finite is reported back and the engine recomputes
  it with the direct kernel: non-finite values spread exactly as there.
* Results do not depend on the number of threads, but they do depend on the
  tiling: the same rows computed as part of a different image (a band of a
  larger one) may differ in the last bits.
"""

from __future__ import annotations

import functools
import math
import threading

import numpy as np

from .. import _memory
from . import _threads

#: The transforms below write into preallocated arrays (``out=``) and keep
#: float32 as float32: both need NumPy 2.0. On older NumPy the engine does not
#: choose this path.
AVAILABLE = np.lib.NumpyVersion(np.__version__) >= "2.0.0"


def _sizes(limit: int) -> np.ndarray:
    """2, 4, 6, 8, 10, 12, 16, 18, 20, 24, 30, 32, 36, ... up to ``limit``:
    even numbers whose odd part is 1, 3, 5, 9 or 15, sizes pocketfft does
    fast (a larger odd part such as 486 = 2 * 3**5 costs more)."""
    out = set()
    for odd in (1, 3, 5, 9, 15):
        n = 2 * odd
        while n <= limit:
            out.add(n)
            n *= 2
    return np.array(sorted(out), dtype=np.int64)


#: Transform sizes tried per axis.
SIZES = _sizes(8192)


def axis_tiles(n_out: int, stride: int, reach: int, sizes: np.ndarray = SIZES):
    """For each transform size: outputs per tile and tiles needed along one axis
    (0 tiles where the size is smaller than the reach)."""
    valid = sizes - reach + 1  # exact circular-correlation positions per tile
    per_tile = np.where(valid >= 1, (valid - 1) // stride + 1, 0)
    tiles = np.where(per_tile > 0, -(-n_out // np.maximum(per_tile, 1)), 0)
    return per_tile, tiles


@functools.lru_cache(maxsize=256)  # every band of an image asks the same
def plan(out_size, stride, reach, transforms: int, threads: int, tile_overhead: float,
         point_cost: float, cache_points: float):
    """The cheapest transform size ``(NY, NX)`` and its modelled cost in seconds.

    cost = ceil(tiles / threads) * (tile_overhead + transforms * P * log2(P)
                                    * (1 + P / cache_points) * point_cost)

    with ``P = NY * NX`` points per tile. ``transforms`` counts the 2-D real
    transforms per tile (forward and inverse, times channels); ``point_cost``
    is seconds per point per log2 of the size for one transform, with the
    spectrum product and the gathering folded in; ``cache_points`` models
    the slow-down of tiles that no longer fit in the cache. Returns ``(None, inf)`` when no size fits the reach.
    """
    ty, nty = axis_tiles(out_size[0], stride[0], reach[0])
    tx, ntx = axis_tiles(out_size[1], stride[1], reach[1])
    ny = SIZES[nty > 0]
    nx = SIZES[ntx > 0]
    if ny.size == 0 or nx.size == 0:
        return None, math.inf
    tiles = np.outer(nty[nty > 0], ntx[ntx > 0])
    points = np.outer(ny, nx).astype(np.float64)
    rounds = -(-tiles // max(1, threads))
    per_tile = transforms * points * np.log2(np.maximum(points, 2.0)) * (1.0 + points / cache_points)
    cost = rounds * (tile_overhead + per_tile * point_cost)
    i, j = np.unravel_index(int(np.argmin(cost)), cost.shape)
    return (int(ny[i]), int(nx[j])), float(cost[i, j])


def _runs(m: np.ndarray):
    """Split a stretch of a padding map into runs ``(start, stop, source, step)``
    of consecutive source indices: ``step`` +1, -1 (reflections run backwards)
    or 0 (edge padding repeats one index); ``source`` -1 marks a run of zeros."""
    n = len(m)
    if n and m[0] >= 0 and m[-1] - m[0] == n - 1 and (n == 1 or bool(np.all(np.diff(m) == 1))):
        return [(0, n, int(m[0]), 1)]
    vals = m.tolist()
    runs = []
    i = 0
    while i < n:
        v = vals[i]
        j = i + 1
        if v < 0:
            while j < n and vals[j] < 0:
                j += 1
            runs.append((i, j, -1, 0))
        else:
            step = vals[j] - v if j < n and vals[j] >= 0 and abs(vals[j] - v) <= 1 else 1
            while j < n and vals[j] >= 0 and vals[j] - vals[j - 1] == step:
                j += 1
            runs.append((i, j, v, step))
        i = j
    return runs


def _span(run):
    """The source slice of a run of source indices (length 1 for a repeat,
    which broadcasts)."""
    start, stop, src, step = run
    if step == 1:
        return slice(src, src + (stop - start))
    if step == 0:
        return slice(src, src + 1)
    last = src - (stop - start - 1)
    return slice(src, last - 1 if last > 0 else None, -1)


#: Above this many block copies a tile is gathered with one fancy index.
_MAX_BLOCKS = 16


def _gather(buf, src3, rmap, rruns, cmap, cruns):
    """Fill ``buf`` (``C x NY x NX``) with the padded input of one tile, given
    its stretch of each padding map and their :func:`_runs`: block copies,
    zeros where a map says -1 and beyond the stretch (one fancy index instead
    when there would be many blocks)."""
    ly, lx = len(rmap), len(cmap)
    buf[:, ly:, :] = 0
    buf[:, :ly, lx:] = 0
    view = buf.transpose(1, 2, 0)  # (NY, NX, C), as src3
    if len(rruns) * len(cruns) > _MAX_BLOCKS:
        view[:ly, :lx] = src3[np.ix_(np.maximum(rmap, 0), np.maximum(cmap, 0))]
        view[:ly][rmap < 0] = 0
        view[:ly, :lx][:, cmap < 0] = 0
        return
    for r in rruns:
        for q in cruns:
            if r[2] < 0 or q[2] < 0:
                view[r[0]:r[1], q[0]:q[1]] = 0
            else:
                view[r[0]:r[1], q[0]:q[1]] = src3[_span(r), _span(q)]


#: Below this many transform points in all (about 2 ms of work) one thread does it all.
_MIN_THREADED_POINTS = 1 << 18


def dilate(weights: np.ndarray, dilation) -> np.ndarray:
    """The kernel with ``dilation - 1`` zeros between taps (2-D or depth)."""
    dy, dx = dilation
    if dy == 1 and dx == 1:
        return weights
    kh, kw = weights.shape[:2]
    out = np.zeros((dy * (kh - 1) + 1, dx * (kw - 1) + 1) + weights.shape[2:], dtype=weights.dtype)
    out[::dy, ::dx] = weights
    return out


def correlate(rows, channels, weights, rowmap, colmap, stride, dilation, out_size, size, threads=1, out=None):
    """Cross-correlate by FFT; same meaning as ``_jit.correlate_rows`` (2-D
    ``weights``: each channel, output ``(OH, OW*C)``) or ``_jit.correlate_depth``
    (``KY x KX x C`` weights: summed over channels, output ``(OH, OW)``).

    size: the transform size ``(NY, NX)`` from :func:`plan`.
    out: the array to write into (every value is written), else a new one.
    Returns ``(out, redo)``: ``redo`` lists the output blocks
    ``(oy0, oy1, ox0, ox1)`` whose FFT result was not finite, for the caller
    to recompute directly.
    """
    sy, sx = stride
    oh, ow = out_size
    c = channels
    depth = weights.ndim == 3
    src3 = rows.reshape(rows.shape[0], rows.shape[1] // c, c)
    wd = dilate(weights, dilation)
    ry, rx = wd.shape[:2]
    ny, nx = size
    kern = wd.transpose(2, 0, 1) if depth else wd[None]  # (C or 1, RY, RX)
    # norm="forward" then scaled back: numpy 2.4 runs a float32 transform with
    # the default norm (a scale factor of integer 1) about 7x slower than with
    # a float scale factor, so every transform here passes a norm.
    spectrum = np.conj(np.fft.rfft2(kern, s=(ny, nx), norm="forward")) * np.float32(ny * nx)
    if out is None:
        out = _memory.empty((oh, ow) if depth else (oh, ow * c))
    out3 = out.reshape(oh, ow, 1 if depth else c)
    ty, _ = axis_tiles(oh, sy, ry, np.array([ny]))
    tx, _ = axis_tiles(ow, sx, rx, np.array([nx]))
    # Per row of tiles (and per column): output range, padding-map stretch, runs.
    bands = []
    for o0 in range(0, oh, int(ty[0])):
        o1 = min(o0 + int(ty[0]), oh)
        m = rowmap[o0 * sy:o0 * sy + (o1 - o0 - 1) * sy + ry]
        bands.append((o0, o1, m, _runs(m)))
    strips = []
    for o0 in range(0, ow, int(tx[0])):
        o1 = min(o0 + int(tx[0]), ow)
        m = colmap[o0 * sx:o0 * sx + (o1 - o0 - 1) * sx + rx]
        strips.append((o0, o1, m, _runs(m)))
    single = out3.shape[2] == 1
    fx = nx // 2 + 1
    tiles = [(band, strip) for band in bands for strip in strips]
    todo = iter(tiles)
    lock = threading.Lock()
    redo = []

    def take():
        with lock:
            return next(todo, None)

    def worker():
        # Buffers for one thread, reused for every tile it takes: fresh pages
        # are expensive here, and so would be a new array per transform.
        data = np.empty((c, ny, nx), dtype=np.float32)
        spec = np.empty((c, ny, fx), dtype=np.complex64)
        total = np.empty((1, ny, fx), dtype=np.complex64) if depth else spec
        res = np.empty((total.shape[0], ny, nx), dtype=np.float32)
        # NaN or infinity in the input is expected (the caller recomputes such
        # tiles): no warnings. numpy's error state is per thread.
        with np.errstate(all="ignore"):
            while (job := take()) is not None:  # each tile once, to whichever thread is free
                (oy0, oy1, rmap, rruns), (ox0, ox1, cmap, cruns) = job
                _gather(data, src3, rmap, rruns, cmap, cruns)
                np.fft.rfft2(data, norm="ortho", out=spec)
                spec *= spectrum
                if depth:
                    spec.sum(axis=0, keepdims=True, out=total)
                # Inverse in two steps so that only the needed rows and columns come back.
                np.fft.ifft(total, axis=-2, norm="ortho", out=total)
                rows_needed = total[:, :(oy1 - oy0 - 1) * sy + 1:sy]
                got = res[:, :rows_needed.shape[1]]
                np.fft.irfft(rows_needed, n=nx, axis=-1, norm="ortho", out=got)
                got = got[:, :, :(ox1 - ox0 - 1) * sx + 1:sx]
                if not np.isfinite(got.sum()):
                    with lock:
                        redo.append((oy0, oy1, ox0, ox1))
                elif single:
                    out3[oy0:oy1, ox0:ox1, 0] = got[0]
                else:
                    out3[oy0:oy1, ox0:ox1] = got.transpose(1, 2, 0)

    # The calling thread works too; threads - 1 helpers join it when there
    # is enough work for two.
    helpers = min(threads, len(tiles)) - 1 if ny * nx * len(tiles) >= _MIN_THREADED_POINTS else 0
    _threads.run(worker, helpers)
    return out, sorted(redo)

"""Bands of rows: the stages over an image a band of output rows at a time.

A band of output rows needs a band of input rows that overlaps its neighbours
by the kernel's reach (and the pooling window's). Those rows are gathered
through the engine's own padding map (:func:`kernelcli.engine.source_index`),
so zero, reflect, edge and wrap padding at the top and bottom read exactly the
rows the in-memory engine reads; the band is then convolved with no row
padding and the original column padding. Every output value is therefore
computed from the same inputs, by the same code, in the same order as for
the whole image: banded and whole results are identical, seams included.
(The one exception: a large kernel the engine runs by FFT is transformed in
tiles that fall differently in a band than in the whole image; such images
go whole.)

A picture in memory goes band by band into its output pixels
(:func:`apply_in_bands`), so that no full-size float32 intermediate is ever
made and every band stays in cache; a ``.npy`` file larger than memory goes
band by band between files (:mod:`kernelcli.run.tiled`).
"""

from __future__ import annotations

import contextlib
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

import numpy as np

from .. import _memory, engine
from ..errors import UsageError
from ..io.picture import Picture

#: Aim for input bands of about this many bytes (as float32) when the band
#: height is automatic: large enough to keep the engine busy, small enough
#: that two bands in flight stay far below a gigabyte.
BAND_BYTES = 32 * 2**20
#: The same for an image in memory: bands small enough that the float32
#: band, its result and the engine's scratch stay in recently used memory.
MEMORY_BAND_BYTES = 3 * 2**20
#: The output formats a file run in bands writes (:mod:`kernelcli.run.tiled`).
BAND_FORMATS = ("NPY", "TIFF", "PNG", "JPEG")


def may_not_fit(width: int, height: int, channels: int = 4) -> bool:
    """Could a ``width`` x ``height`` picture need more than half the
    available memory in the in-memory engine (as
    :func:`kernelcli.run.tiled.too_big_for_memory`, counting ``channels``: 4
    is the most a picture has)? Here, beside what every run imports, so that
    an ordinary picture is told from its size without loading the file runner."""
    free = _memory.available_memory()
    return free is not None and 3 * width * height * channels * 4 > free // 2


@dataclass(frozen=True)
class Source:
    """A ``.npy`` or TIFF file as its header describes it, or an array in memory."""

    path: str
    shape: tuple
    dtype: str
    offset: int  # of the first data byte (.npy)
    meta: Picture  # mode, range, labels... (pixels: a 1 x 1 placeholder)
    pixels: np.ndarray | None = field(default=None, repr=False, compare=False)  # in memory: the array
    kind: str = "npy"  # "npy" (memory-mapped), "tiff" or "zarr" (the strips, tiles or chunks a band touches),
    # or "png" (in order)
    layout: object = field(default=None, repr=False, compare=False)  # how a PNG's rows or a Zarr's are stored
    facts: dict | None = field(default=None, repr=False, compare=False)  # a picture's frames and orientation


@dataclass(frozen=True)
class Job:
    """Everything a band needs (picklable, small: paths and settings, no pixels)."""

    source: Source
    target: str  # the output file being written (a temporary beside the real one)
    out_offset: int
    out_shape: tuple
    conv: object  # stages.Conv with no row padding: rows are gathered instead
    row_pads: tuple
    pad_mode: str
    stride_y: int
    reach_y: int
    pool: object
    pool_rows: tuple  # (window, stride) along rows, or (1, 1)
    relu: object  # False, True (ReLU) or a stages.Activation
    gray: bool
    alpha: str


# --------------------------------------------------------------------------
# planning


#: Bytes per input row of a band besides its float32 values: the padded
#: axis's row map and the band's own (kernelcli.engine.INDEX_BYTES each), masks.
BAND_ROW_OVERHEAD = 64


def plan(source: Source, conv, relu=False, pool=None, gray=False, alpha="keep", check_memory: bool = True):
    """Work out the geometry; returns the job (with ``target`` still to be
    decided) and the number of final output rows. ``check_memory``: refuse
    (with the figure) a job whose smallest band would not fit in memory."""
    sy = engine.pair(conv.stride, "stride")[0]
    dy = engine.pair(conv.dilation, "dilation")[0]
    kh = conv.kernel.shape[0]
    reach_y = dy * (kh - 1) + 1
    pads, (oh, ow) = engine.geometry(source.shape, conv.kernel.shape, conv.stride, conv.padding, conv.dilation)
    band_conv = replace(conv, padding=((0, 0), pads[1]))
    if pool is not None:
        ph, pw = engine.pair(pool.size, "pool size")
        psy = engine.pair(pool.size if pool.stride is None else pool.stride, "pool stride")[0]
        if ph > oh or pw > ow:
            raise UsageError(f"pool window {ph}x{pw} is larger than its input {oh}x{ow}")
        final_h = (oh - ph) // psy + 1
    else:
        ph, psy, final_h = 1, 1, oh
    job = Job(source, "", 0, (), band_conv, pads[0], conv.pad_mode, sy, reach_y,
              pool, (ph, psy), relu or False, bool(gray), alpha)
    if not check_memory:
        return job, final_h
    p0, p1 = _input_rows(job, 0, 1)  # the fewest input rows a band reads
    pooled = f", pool window {ph} rows with stride {psy}" if pool is not None else ""
    _memory.ensure_memory((p1 - p0) * (math.prod(source.shape[1:]) * 4 + BAND_ROW_OVERHEAD),
                         f"a band of {p1 - p0} input rows (kernel reach {reach_y} rows with dilation {dy}, "
                         f"stride {sy}{pooled})", "use a smaller dilation, stride or pool window")
    return job, final_h


def _input_rows(job: Job, f0: int, f1: int) -> tuple[int, int]:
    """Padded input rows ``[p0, p1)`` that final output rows ``[f0, f1)`` read."""
    ph, psy = job.pool_rows
    c0, c1 = f0 * psy, (f1 - 1) * psy + ph  # conv output rows
    return c0 * job.stride_y, (c1 - 1) * job.stride_y + job.reach_y


def band_rows(job: Job, final_h: int, out_row_bytes: int, tile_rows: int | None,
              band_bytes: int | None = None) -> int:
    """Final output rows per band: ``tile_rows``, or about ``band_bytes``
    (default :data:`BAND_BYTES`) of float32 input."""
    band_bytes = band_bytes or BAND_BYTES
    if tile_rows:
        return max(1, min(tile_rows, final_h))
    in_row_bytes = math.prod(job.source.shape[1:]) * 4
    ph, psy = job.pool_rows
    per_row = job.stride_y * psy * in_row_bytes + psy * out_row_bytes
    halo = (job.reach_y + ph * job.stride_y) * in_row_bytes
    return max(1, min(final_h, (band_bytes - halo) // max(per_row, 1)))


# --------------------------------------------------------------------------
# one band (runs on a local thread or a Dask worker)


def read_rows(source: Source, rows: np.ndarray, dtype=np.float32, fill: float = 0.0) -> np.ndarray:
    """These source rows as float32 (or ``dtype``; ``-1``: a row of ``fill``), read from
    the array in memory or through a memory map that is dropped again before returning."""
    out = np.empty((len(rows),) + source.shape[1:], dtype=dtype)
    out[rows < 0] = fill  # padding rows; every other row is copied below
    if source.kind in ("tiff", "zarr"):
        _read_decoded_rows(source, rows, out)
        return out
    if source.pixels is not None:
        mm = source.pixels
    else:
        mm = np.memmap(source.path, dtype=np.dtype(source.dtype), mode="r", offset=source.offset,
                       shape=source.shape)
    try:
        # Runs of consecutive rows are copied in one go; padding rows (-1) make
        # no run (a long stretch of them costs no Python object per row).
        steps = np.diff(rows) == 1
        starts = np.flatnonzero(np.r_[True, ~steps | (rows[:-1] < 0)] & (rows >= 0))
        ends = np.r_[np.flatnonzero(~steps | (rows[1:] < 0)) + 1, len(rows)]
        for start in starts:
            end = ends[np.searchsorted(ends, start, side="right")]
            first = rows[start]
            out[start:end] = mm[first:first + end - start]
    finally:
        del mm
    return out


def _read_decoded_rows(source: Source, rows: np.ndarray, out: np.ndarray) -> None:
    """:func:`read_rows` for a file whose rows are decoded (TIFF, Zarr): each
    run of consecutive rows the band reads is decoded once, even when the
    padding map reads some rows twice (reflect) or from the other end (wrap)."""
    if source.kind == "zarr":
        from ..io.zarr_store import read_zarr_rows

        def read_tiff_rows(path, shape, dtype, first, stop, out=None):
            block = read_zarr_rows(path, shape, dtype, first, stop, source.layout)
            if out is None:
                return block
            out[...] = block
            return out
    else:
        from ..io.tiff_rows import read_tiff_rows

    wanted = np.unique(rows[rows >= 0])
    if not len(wanted):
        return
    breaks = np.flatnonzero(np.diff(wanted) > 1) + 1
    for run in np.split(wanted, breaks):
        first, stop = int(run[0]), int(run[-1]) + 1
        a, n = int(np.argmax(rows == first)), stop - first
        if np.count_nonzero((rows >= first) & (rows < stop)) == n and np.array_equal(rows[a:a + n], run):
            # each row once, in order (a band away from the edges): copied straight into its place
            read_tiff_rows(source.path, source.shape, np.dtype(source.dtype), first, stop, out[a:a + n])
            continue
        block = read_tiff_rows(source.path, source.shape, np.dtype(source.dtype), first, stop)
        sel = (rows >= first) & (rows < stop)
        out[sel] = block[rows[sel] - first]


def band_input(job: Job, f0: int, f1: int, dtype=np.float32) -> np.ndarray:
    """The input rows final output rows ``[f0, f1)`` read, padding rows
    included (gathered through the engine's row map), as ``dtype``."""
    p0, p1 = _input_rows(job, f0, f1)
    rowmap = engine.source_index(job.source.shape[0], job.row_pads, job.pad_mode)
    return read_rows(job.source, rowmap[p0:p1], dtype, job.conv.cval)


def compute_band(job: Job, f0: int, f1: int, lock=None, given: np.ndarray | None = None) -> Picture:
    """Final output rows ``[f0, f1)`` as a Picture (reads the input, writes
    nothing). ``lock``, if given, is held while computing (not while reading).
    ``given``: the band's input rows as :func:`band_input` gives them, read
    already (from a file read in order)."""
    from .. import stages

    picture = job.source.meta.with_pixels(band_input(job, f0, f1) if given is None else given)
    with lock or contextlib.nullcontext():
        result = stages.apply(picture, job.conv, relu=job.relu, pool=job.pool, gray=job.gray,
                                alpha=job.alpha)
    if result.pixels.shape[0] != f1 - f0:  # a planning bug, never the user's input
        raise RuntimeError(f"band {f0}:{f1} came out with {result.pixels.shape[0]} rows")
    return result


def exact_band(job: Job, weights: np.ndarray, f0: int, f1: int, given: np.ndarray | None = None) -> np.ndarray:
    """Final output rows ``[f0, f1)`` of an integer kernel (``weights``, from
    :func:`kernelcli.engine.exact_weights`) on 8-bit pixels with no stage but
    ReLU and max pooling, as uint8: computed in int16 and clipped to 0..255,
    which is exactly what the float32 pipeline gives after rounding and
    clipping. (Clipping to 0..255 leaves nothing for ReLU to do, and the
    largest of clipped values is the clipped largest.)"""
    conv = job.conv
    rows = band_input(job, f0, f1, np.int16) if given is None else given.astype(np.int16)  # (given: read already)
    values = engine.correlate_exact(rows, weights, conv.stride, conv.padding, conv.pad_mode, conv.dilation)
    np.clip(values, 0, 255, out=values)
    if job.pool is not None:
        values = _max_pool_integers(values, job.pool.size, job.pool.stride)
    return values.astype(np.uint8)


def _max_pool_integers(values: np.ndarray, size, stride) -> np.ndarray:
    """Max pooling as :func:`kernelcli.engine.pool` windows it, for integers
    (no NaN to mind): the elementwise maximum of the windows' taps."""
    ph, pw, sy, sx, oh, ow = engine.pool_geometry(values.shape, "max", size, stride)
    out = None
    for py in range(ph):
        for px in range(pw):
            tap = values[py:py + (oh - 1) * sy + 1:sy, px:px + (ow - 1) * sx + 1:sx]
            out = tap.copy() if out is None else np.maximum(out, tap, out=out)
    return out


# --------------------------------------------------------------------------
# an image in memory


def apply_in_bands(picture: Picture, conv, relu=False, pool=None, gray=False, alpha="keep",
                   convert=None, tile_rows: int | None = None, threads: int = 2, allocate=None,
                   clips_to_8bit: bool = False):
    """The pipeline over a picture in memory (8- or 16-bit pixels, or float32
    ones read from a .npy or a float TIFF), band by band:
    ``convert(band)`` turns each band of results (a Picture of float32 rows)
    into output rows (e.g. :func:`kernelcli.io.pixels.to_array`), which are
    stored in ``allocate(shape, dtype)`` (default ``np.empty``; anything that
    takes ``out[a:b] = rows``, e.g. :class:`kernelcli.io.encode.PillowCanvas`),
    and that is returned. Only the bands are ever float32.

    Returns None, computing nothing, when bands would not give exactly the
    numbers of :func:`kernelcli.stages.apply` on the whole picture: the
    engine would pick FFTs (transformed in tiles that fall differently in a
    band), or would compute a band differently from the whole image; and
    when one output row reads more input rows (padding included) than the
    picture has, and more than :data:`BAND_BYTES` of them.
    Bands run on ``threads`` threads; one at a time while Numba is involved
    (its parallel loops are not to be entered from two threads at once).

    ``clips_to_8bit``: the caller says ``convert`` does nothing but round and
    clip a band's values to uint8 in the same layout
    (:func:`kernelcli.io.pixels.clips_to_8bit` tells when). Then an integer
    kernel on 8-bit pixels with no stage but ReLU and max pooling never goes
    through float32: its bands are computed in int16 (:func:`exact_band`), to
    the same bytes.
    """
    import threading

    from ..stages import Activation

    if isinstance(relu, Activation) and not relu.clipped_away:
        clips_to_8bit = False  # tanh, sigmoid: values the int16 path does not compute
    px = picture.pixels
    source = Source("<memory>", px.shape, px.dtype.str, 0,
                    picture.with_pixels(np.zeros((1, 1) + px.shape[2:], dtype=np.float32)), pixels=px)
    job, final_h = plan(source, conv, relu, pool, gray, alpha, check_memory=False)
    p0, p1 = _input_rows(job, 0, 1)
    if p1 - p0 > px.shape[0] and (p1 - p0) * math.prod(px.shape[1:]) * 4 > BAND_BYTES:
        # One output row reads more rows than the picture has, and many (a
        # dilation or stride far beyond it, across padding): bands would
        # gather them all, the whole picture only indexes them.
        return None
    probe = compute_band(job, 0, 1)
    first = convert(probe)
    out_row_bytes = math.prod(probe.pixels.shape[1:]) * 4

    def cut(value_bytes: int):
        # (int16 rows are half the bytes of float32 ones: twice as many fit)
        rows = band_rows(job, final_h, out_row_bytes, tile_rows, MEMORY_BAND_BYTES * 4 // value_bytes)
        heights = tuple(p1 - p0 for p0, p1 in (_input_rows(job, 0, rows), _input_rows(job, 0, 1)))
        return engine.Bands(rows, heights, len(range(1, final_h, rows)),
                            (rows + job.reach_y) * math.prod(px.shape[1:]))

    how = engine.plan_bands(conv.kernels, conv.flip, px.shape, conv.stride, conv.padding, conv.dilation,
                            job.conv.padding, cut, integer_pixels=px.dtype == np.uint8,
                            output_is_plain_8bit=clips_to_8bit and not conv.cval, pool_kind=None if pool is None else pool.kind,
                            gray=gray, has_alpha=picture.has_alpha)
    if not how.as_whole:
        return None
    rows, exact = how.bands.rows, how.integer_weights
    out = (allocate or np.empty)((final_h,) + first.shape[1:], first.dtype)
    out[:1] = first
    bands = [(f0, min(f0 + rows, final_h)) for f0 in range(1, final_h, rows)]
    if how.load_numba:
        engine.load_numba()  # decided once for the image, not band by band
    lock = threading.Lock() if how.take_turns else None

    def one(band):
        f0, f1 = band
        if exact is not None:
            out[f0:f1] = exact_band(job, exact, f0, f1)
        else:
            out[f0:f1] = convert(compute_band(job, f0, f1, lock))

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool_:
        for _ in pool_.map(one, bands):
            pass
    return out


def load_numba_early(conv, pool, height: int, width: int, channels: int):
    """Start loading Numba and the loops ``conv`` and ``pool`` run (compiling
    them into an empty cache, else loading them from it) on another thread,
    when an image of ``height x width x channels`` will surely need them in
    :func:`apply_in_bands`: float32 bands of more multiply-adds than NumPy
    takes, and no kernel the engine would run by FFT (such a job goes whole,
    without Numba). Called once the header is read, it runs while the pixels
    are decoded (Pillow's decoders let go of the GIL).

    Returns a callable that waits until it is done: call it before the image
    is computed, so that no two threads ever enter Numba's parallel loops at
    once. Errors here are dropped; the computation itself meets and reports
    them.
    """
    import threading

    shape = (height, width, channels) if channels > 1 else (height, width)
    try:
        if not engine.numba_ahead(conv.kernels, conv.flip, shape, conv.stride, conv.padding, conv.dilation):
            return lambda: None
    except Exception:  # only a head start: never a reason for the read to fail
        return lambda: None

    def load():
        try:
            engine.load_numba()
            # the same loops on a few rows of the image's width: what the bands will call
            x = np.zeros((min(height, 8 + sum(k.shape[0] for k in conv.kernels)), width, channels), np.float32)
            for k in conv.kernels:
                y = conv.run(x, k)
            if pool is not None:
                engine.pool(y, pool.kind, pool.size, pool.stride)
        except Exception:
            pass

    thread = threading.Thread(target=load, name="kernelcli-load-numba", daemon=True)
    try:
        thread.start()
    except RuntimeError:  # no thread to be had: Numba loads later, as it would have
        return lambda: None
    return thread.join

"""Pictures and arrays larger than memory: a file band by band into a file.

The input (a ``.npy``, memory-mapped, or a TIFF, whose strips or tiles are
decoded as the bands reach them) is read one band at a time
(:mod:`kernelcli.run.bands`); each band of output rows is computed by the
ordinary stages and written: into its place in a memory-mapped ``.npy``
output, or as the next strips or tiles of a TIFF output
(:class:`kernelcli.io.tiff_rows.TiffRows`), so memory holds a few bands,
never the image. Bands run on local threads (reading and writing overlap the
computation), or as tasks on a Dask cluster whose workers see the same files.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .. import _memory
from ..errors import ImageReadError, ImageWriteError, UsageError
from ..io.encode import OutputSpec, fit_info, format_for
from ..io.npy import check_npy_header, header_of, npy_header, npy_metadata, npy_trailer
from ..io.pixels import to_array
from ..io.sinks import atomic_file
from ..stages import Stages
from .bands import BAND_FORMATS, Job, Source, band_rows, compute_band, exact_band, may_not_fit, plan  # noqa: F401
from .progress import Progress

#: At most this much kernelcli metadata is read after the array data.
_MAX_TRAILER = 64 * 2**20


def band_output(path, fmt: str | None = None) -> bool:
    """Is ``path`` (with ``--format`` ``fmt``) an output a run in bands writes?"""
    from ..io.zarr_store import is_zarr_name

    return (is_zarr_name(path) and not fmt) or format_for(path, fmt) in BAND_FORMATS


def open_source(path, max_pixels: int | None = None) -> Source:
    """Read and check the header of a ``.npy``, TIFF, PNG or JPEG file;
    nothing of the pixels is read. ``max_pixels`` bounds a picture (a small
    compressed file may claim a huge one); a ``.npy`` holds its pixels as
    they are."""
    name = str(path)
    from ..io.zarr_store import is_zarr_store

    if is_zarr_store(path):
        from ..io.zarr_store import open_zarr

        shape, dtype, meta, layout = open_zarr(path, max_pixels)
        return Source(os.path.abspath(path), shape, dtype.str, 0, meta, kind="zarr", layout=layout)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise ImageReadError(f"{name}: cannot open: {e.strerror or e}") from None
    with f:
        from ..io.jpeg_rows import is_jpeg
        from ..io.png_rows import is_png, open_png
        from ..io.tiff_rows import is_tiff, open_tiff

        head = f.read(8)
        facts: dict = {}
        if is_jpeg(head):
            return _jpeg_source(path, max_pixels)
        if is_tiff(head):
            shape, dtype, meta = open_tiff(path, max_pixels, facts)
            return Source(os.path.abspath(path), shape, dtype.str, 0, meta, kind="tiff", facts=facts)
        if is_png(head):
            shape, dtype, meta, layout = open_png(path, max_pixels, facts)
            if layout is None:
                raise ImageReadError(f"{name}: an interlaced PNG, or one of fewer than 8 bits per sample, "
                                     "cannot be read in bands")
            return Source(os.path.abspath(path), shape, dtype.str, 0, meta, kind="png", layout=layout,
                          facts=facts)
        f.seek(0)
        shape, fortran, dtype = header_of(f, name)
        offset = f.tell()
        check_npy_header(shape, dtype, name)  # no pixel limit: memory holds a band
        if fortran:
            raise ImageReadError(f"{name}: the .npy is Fortran-ordered; bands of rows need C order "
                                 "(save it with np.ascontiguousarray)")
        nbytes = math.prod(shape) * dtype.itemsize
        size = os.fstat(f.fileno()).st_size
        if size < offset + nbytes:
            raise ImageReadError(f"{name}: truncated .npy: {size - offset:,} of {nbytes:,} data bytes")
        f.seek(offset + nbytes)
        trailer = f.read(_MAX_TRAILER)
    meta = npy_metadata(shape, trailer, name, dtype)
    return Source(os.path.abspath(path), tuple(shape), dtype.str, offset, meta)


#: A ``.npy`` file with more float32 data than this goes out of core (bands
#: read from and written to the files) when its output is a ``.npy`` file:
#: past it, reading it whole costs more in fresh memory than the bands'
#: extra passes (docs: Performance).
OUT_OF_CORE_BYTES = 512 * 2**20


def goes_out_of_core(source: Source) -> bool:
    """Should a ``.npy`` file into a ``.npy`` file run band by band between the files?"""
    return math.prod(source.shape) * 4 >= OUT_OF_CORE_BYTES or too_big_for_memory(source)


def too_big_for_memory(source: Source) -> bool:
    """Would the in-memory engine need more than half the available memory?
    (Input and result as float32, plus one intermediate.)"""
    free = _memory.available_memory()
    need = 3 * math.prod(source.shape) * 4
    return free is not None and need > free // 2


def run_band(job: Job, f0: int, f1: int, lock=None) -> None:
    """Compute final rows ``[f0, f1)`` and write them into their place in the output file."""
    result = compute_band(job, f0, f1, lock)
    mm = np.memmap(job.target, dtype=np.float32, mode="r+", offset=job.out_offset, shape=job.out_shape)
    try:
        mm[f0:f1] = result.pixels
        mm.flush()
    finally:
        del mm


# --------------------------------------------------------------------------
# the whole file


@dataclass
class Report:
    bands: int
    rows_per_band: int
    shape: tuple
    seconds: float
    notes: list


def run(input_path, output_path, stages: Stages, tile_rows: int | None = None, client=None, threads: int = 2,
        progress: bool = False, output: OutputSpec | None = None, max_pixels: int | None = None,
        tiff_tile: int | None = None, tiff_compression: str | None = None, source: Source | None = None) -> Report:
    """Run ``stages`` over the ``.npy``, TIFF, PNG, JPEG or Zarr at ``input_path``
    band by band into ``output_path`` (a ``.npy``, a TIFF written as
    ``output`` says, striped, or in ``tiff_tile`` tiles with
    ``tiff_compression``, a PNG, a JPEG of ``output.quality``, or a Zarr store: :mod:`kernelcli.run.zarr_bands`).

    ``client``: a Dask client to run the bands on its cluster (workers must
    see both paths); otherwise ``threads`` local threads, one computing at a
    time while the others read and write. ``max_pixels`` bounds a TIFF input.
    ``source``: the input's header as :func:`open_source` read it (not read again).
    """
    started = time.monotonic()
    output = output or OutputSpec()
    from ..io.zarr_store import is_zarr_name

    if is_zarr_name(output_path) and output.fmt is None:
        from .zarr_bands import into_zarr

        return into_zarr(input_path, output_path, stages, tile_rows, client, threads, progress, output,
                         max_pixels, started, (tiff_tile, tiff_compression))
    fmt = format_for(output_path, output.fmt)
    if fmt not in BAND_FORMATS:
        raise UsageError(f"a picture or array processed in bands is written as a .npy, TIFF, PNG or JPEG file; "
                         f"OUTPUT must be one, not {str(output_path)!r}")
    if fmt == "JPEG":
        from ..io.jpeg_rows import INSTALL_HINT, available

        if not available():
            raise UsageError(f"a JPEG written in bands needs libvips: {INSTALL_HINT}")
    if fmt != "NPY" and output.scaling == "stretch":
        raise UsageError("--scaling stretch needs every value before the first is written; it cannot run in "
                         "bands (use clip or abs, or write .npy)")
    source = open_source(input_path, max_pixels) if source is None else source
    if source.kind in ("png", "jpeg") and (fmt == "NPY" or client is not None):
        what = source.kind.upper()
        raise UsageError(f"a {what} is read in bands in order, on this machine, into a PNG or TIFF file or a "
                         f"JPEG: write one, or convert the {what} to TIFF first"
                         + (" (no --scheduler)" if client else ""))
    output_path = Path(output_path)
    job, final_h = plan(source, stages.conv, stages.relu, stages.pool, stages.gray, stages.alpha)
    _load_numba_if_needed(stages.conv, source.shape, client)
    reader = _png_reader(job) if source.kind in ("png", "jpeg") else None
    try:
        # One output row tells the output's width, channels and metadata.
        probe = compute_band(job, 0, 1) if reader is None else compute_band(job, 0, 1, given=reader.band(job, 0, 1))
        if fmt == "NPY":
            rows, count, shape = _into_npy(job, final_h, probe, output_path, tile_rows, client, threads,
                                           progress)
            notes = probe.notes
        else:
            rows, count, shape, notes = _into_file(job, final_h, probe, output_path, output, fmt, tile_rows,
                                                   client, threads, progress, (tiff_tile, tiff_compression),
                                                   reader)
    finally:
        if reader is not None:
            reader.close()
        if source.kind == "tiff":
            from ..io.tiff_rows import forget_open_files

            forget_open_files(source.path)
    return Report(count, rows, shape, time.monotonic() - started, notes)


def _load_numba_if_needed(conv, shape: tuple, client) -> None:
    """Load Numba before the first band when the whole file's work needs it:
    each band alone is small enough for the NumPy twins, which would then
    compute every band of a large picture several times slower. (A cluster's
    workers decide for themselves.)"""
    from .. import engine

    if client is None and engine.numba_ahead(conv.kernels, conv.flip, shape, conv.stride, conv.padding,
                                             conv.dilation, integer_path=False):
        engine.load_numba()


class _PngBands:
    """A PNG's rows for the bands, in order (read on the thread that writes)."""

    def __init__(self, job: Job):
        source = job.source
        self.top = job.row_pads[0]
        keep = min(source.shape[0], max(job.row_pads) + 1) if job.pad_mode != "zero" else 0
        self.reader = self._reader(source, keep)
        if job.pad_mode == "wrap" and keep:
            self.reader.read_tail()

    @staticmethod
    def _reader(source: Source, keep: int):
        from ..io.png_rows import PngReader

        return PngReader(source.path, source.shape, source.dtype, source.layout, keep)

    def _take(self, job: Job, f0: int, f1: int) -> tuple:
        """``(row map, rows as read)`` for these final rows: the padded input
        rows they read (negative: padding) and the stored rows among them."""
        from .. import engine
        from .bands import _input_rows

        p0, p1 = _input_rows(job, f0, f1)
        h = job.source.shape[0]
        rows = engine.source_index(h, job.row_pads, job.pad_mode)[p0:p1]
        return rows, self.reader.take(rows, min(max(p0 - self.top, 0), h))

    def band(self, job: Job, f0: int, f1: int) -> np.ndarray:
        """What :func:`kernelcli.run.bands.band_input` gives for these final rows."""
        rows, raw = self._take(job, f0, f1)
        out = self.reader.pixels(raw).astype(np.float32)
        out[rows < 0] = job.conv.cval
        return out

    def close(self):
        self.reader.close()


class _JpegBands(_PngBands):
    """A JPEG's rows for the bands, in order (decoded by libvips in strips),
    as uint8: the thread that computes the band makes them float32
    (:func:`image_band`), so the reading thread only decodes."""

    @staticmethod
    def _reader(source: Source, keep: int):
        from ..io.jpeg_rows import JpegReader

        return JpegReader(source.path, source.shape, keep)

    def band(self, job: Job, f0: int, f1: int) -> np.ndarray:
        rows, out = self._take(job, f0, f1)
        if (rows < 0).any():
            return np.where((rows < 0).reshape((-1,) + (1,) * (out.ndim - 1)), np.float32(job.conv.cval),
                            out.astype(np.float32))
        return out


def _png_reader(job: Job) -> _PngBands:
    return _JpegBands(job) if job.source.kind == "jpeg" else _PngBands(job)


def _jpeg_source(path, max_pixels: int | None) -> Source:
    """A JPEG's Source (kind "jpeg"), from its header; refused here when it
    cannot be read in bands (no libvips, or CMYK/YCCK pixels)."""
    from ..io.jpeg_rows import INSTALL_HINT, available, open_jpeg

    shape, dtype, meta, usable = open_jpeg(path, max_pixels)
    if not usable:
        raise ImageReadError(f"{path}: a CMYK or YCCK JPEG is converted to sRGB in memory; it cannot be read "
                             "in bands")
    if not available():
        raise UsageError(f"a JPEG in bands needs libvips: {INSTALL_HINT}")
    return Source(os.path.abspath(path), shape, dtype.str, 0, meta, kind="jpeg")


def _into_npy(job: Job, final_h: int, probe, output_path: Path, tile_rows, client, threads, progress):
    """Bands written into their places in a memory-mapped ``.npy``; returns
    the rows per band, the number of bands and the output's shape."""
    import threading

    out_shape = (final_h,) + probe.pixels.shape[1:]
    out_row_bytes = math.prod(probe.pixels.shape[1:]) * 4
    rows = band_rows(job, final_h, out_row_bytes, tile_rows)
    bands = [(f0, min(f0 + rows, final_h)) for f0 in range(0, final_h, rows)]
    header = npy_header(out_shape)
    trailer = npy_trailer(probe.metadata())
    nbytes = final_h * out_row_bytes
    _check_space(output_path, len(header) + nbytes + len(trailer))
    with atomic_file(output_path) as tmp:
        with open(tmp, "wb") as f:
            f.write(header)
            f.truncate(len(header) + nbytes)
        job = replace(job, target=os.path.abspath(tmp), out_offset=len(header), out_shape=out_shape)
        bar = _rows_bar(job, final_h, progress)
        if client is not None:
            _run_cluster(client, job, bands, bar)
        else:
            lock = threading.Lock()
            with ThreadPoolExecutor(max_workers=max(1, threads)) as pool_:
                futures = [pool_.submit(run_band, job, f0, f1, lock) for f0, f1 in bands]
                try:
                    for i, future in enumerate(futures, 1):
                        future.result()
                        bar.update(bands[i - 1][1])
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
        bar.close()
        with open(tmp, "ab") as f:
            f.write(trailer)
    return rows, len(bands), out_shape


#: Aim for input bands of about this many bytes (as float32) into a TIFF or
#: PNG: a few bands are in flight (read, computed, converted, encoded), and
#: smaller bands keep that well under the memory of the picture itself.
PICTURE_BAND_BYTES = 8 * 2**20


#: An automatic band into a TIFF or PNG has at least this many times as many
#: output rows as its halo (the input rows its neighbour reads too): on a
#: wide picture, :data:`PICTURE_BAND_BYTES` alone would give bands of a row
#: or two, each reading, converting and filtering the kernel's reach anew.
HALO_SHARE = 4


def _halo_rows(job: Job) -> int:
    """Input rows a band shares with the next (the kernel's and the pooling window's reach)."""
    ph, _ = job.pool_rows
    return job.reach_y + (ph - 1) * job.stride_y


def _rows_bar(job: Job, final_h: int, enabled: bool) -> Progress:
    """A progress line counting output rows, with the input read per second."""
    ph, psy = job.pool_rows
    row_bytes = math.prod(job.source.shape[1:]) * np.dtype(job.source.dtype).itemsize
    return Progress(final_h, enabled, unit="rows", unit_bytes=row_bytes * job.stride_y * psy)


def image_band(job: Job, f0: int, f1: int, fmt: str, scaling: str, offset: float, lock=None, given=None,
               exact=None):
    """Final output rows ``[f0, f1)`` as ``fmt`` stores them (uint8, uint16
    or float32 pixels), with the notes of computing and converting them.
    ``exact``: the int16 weights of the integer path (:func:`_integer_weights`)."""
    if exact is not None:
        return exact_band(job, exact, f0, f1, given), []
    if given is not None and given.dtype != np.float32:
        given = given.astype(np.float32)  # (8-bit rows read in order: converted here, off the reading thread)
    result = compute_band(job, f0, f1, lock, given)
    notes = list(result.notes)
    return to_array(result, fmt, scaling, offset, notes), notes


#: The layout of output pixels by their channel count (the sample type is their dtype's).
_OUT_LAYOUTS = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def _into_file(job: Job, final_h: int, probe, output_path: Path, output: OutputSpec, fmt: str, tile_rows,
               client, threads, progress, tiff, reader):
    """Bands converted to the output's pixels and written, in order, as the
    next strips or tiles of a TIFF or the next rows of a PNG; returns the
    rows per band, the number of bands, the output's shape and the notes."""
    from ..io.encode import PNG_LEVEL
    from ..io.png_rows import PngRows
    from ..io.tiff_rows import TiffRows, tiff_layout

    notes = list(probe.notes)
    first = to_array(probe, fmt, output.scaling, output.offset, notes)
    out_shape = (final_h,) + first.shape[1:]
    mode = _OUT_LAYOUTS[first.shape[2] if first.ndim == 3 else 1]
    rows = band_rows(job, final_h, math.prod(probe.pixels.shape[1:]) * 4, tile_rows, PICTURE_BAND_BYTES)
    if not tile_rows:  # a wide picture: rows enough that the halo is read and converted a few times over at most
        rows = max(rows, min(final_h, HALO_SHARE * _halo_rows(job)))
    if fmt == "TIFF":
        layout = tiff_layout(out_shape, first.dtype, *tiff)
        if layout["compression"] is None:
            _check_space(output_path, math.prod(out_shape) * first.dtype.itemsize)
    bands = [(f0, min(f0 + rows, final_h)) for f0 in range(0, final_h, rows)]
    bar = _rows_bar(job, final_h, progress)
    info = fit_info(probe.info, fmt, str(output_path), notes)
    if fmt == "TIFF" and info.pop("exif", None) is not None:
        notes.append(f"{output_path}: dropped the EXIF: a TIFF written in bands is written without it")
    with atomic_file(output_path) as tmp:
        if fmt == "TIFF":
            sink = TiffRows(tmp, out_shape, first.dtype, mode, layout, info)
        elif fmt == "JPEG":
            from ..io.jpeg_rows import JpegRows

            sink = JpegRows(tmp, out_shape, probe.info, output.quality, notes)
        else:
            sink = PngRows(tmp, out_shape, first.dtype, info,
                           PNG_LEVEL if output.png_level is None else output.png_level)
        try:
            for i, (pixels, band_notes) in enumerate(_in_order(job, bands, client, threads, output, fmt,
                                                               reader), 1):
                notes += band_notes
                sink.write(pixels)
                bar.update(bands[i - 1][1])
        except BaseException:
            sink.abort()
            raise
        sink.close()
    bar.close()
    return rows, len(bands), out_shape, list(dict.fromkeys(notes))


def _in_order(job: Job, bands, client, threads: int, output: OutputSpec, fmt: str, reader=None):
    """``(pixels, notes)`` of each band as ``fmt`` stores them, in order,
    computed on local threads or on the cluster a few bands ahead of the
    writer (so memory holds a few bands, never the picture). ``reader``: a
    PNG's rows, read here, in order, for each band as it is submitted."""
    import collections
    import threading

    args = (fmt, output.scaling, output.offset)
    exact = _integer_weights(job, fmt, output, bands) if isinstance(reader, _JpegBands) else None
    if client is not None:
        from .cluster import serial

        ahead = 2 * max(1, len(client.scheduler_info().get("workers", {}))) + 1

        def submit(band):
            return client.submit(serial, image_band, job, *band, *args, pure=False)
        cancel = client.cancel
        pool_ = None
    else:
        ahead = max(1, threads) + 1
        lock = threading.Lock()
        pool_ = ThreadPoolExecutor(max_workers=max(1, threads))

        def submit(band):
            given = None if reader is None else reader.band(job, *band)
            return pool_.submit(image_band, job, *band, *args, lock, given, exact)

        def cancel(futures):
            for future in futures:
                future.cancel()
    pending = collections.deque()
    waiting = iter(bands)
    try:
        for band in itertools.islice(waiting, ahead):
            pending.append((band, submit(band)))
        while pending:
            (f0, f1), future = pending.popleft()
            try:
                got = future.result()
            except Exception as e:
                if client is None:
                    raise
                raise ImageWriteError(f"rows {f0}-{f1 - 1} failed on the cluster: {e}") from None
            band = next(waiting, None)
            if band is not None:
                pending.append((band, submit(band)))
            yield got
    except BaseException:
        cancel([future for _, future in pending])
        raise
    finally:
        if pool_ is not None:
            pool_.shutdown(wait=True, cancel_futures=True)


def _integer_weights(job: Job, fmt: str, output: OutputSpec, bands):
    """The int16 weights when the engine's plan computes these bands of 8-bit
    pixels in int16, to the bytes of the float32 path rounded and clipped
    (as :func:`kernelcli.run.bands.apply_in_bands` does), else None."""
    from .. import engine
    from ..io.pixels import clips_to_8bit
    from ..stages import Activation
    from .bands import _input_rows

    source, conv = job.source, job.conv
    if np.dtype(source.dtype) != np.uint8 or (isinstance(job.relu, Activation) and not job.relu.clipped_away):
        return None
    rows = bands[0][1] - bands[0][0]
    heights = tuple(p1 - p0 for p0, p1 in (_input_rows(job, 0, rows), _input_rows(job, 0, 1)))
    cut = engine.Bands(rows, heights, len(bands), (rows + job.reach_y) * math.prod(source.shape[1:]))
    how = engine.plan_bands(conv.kernels, conv.flip, source.shape, conv.stride, (job.row_pads, conv.padding[1]),
                            conv.dilation, conv.padding, lambda value_bytes: cut, integer_pixels=True,
                            output_is_plain_8bit=clips_to_8bit(source.meta, fmt, output.scaling, output.offset)
                            and not conv.cval, pool_kind=None if job.pool is None else job.pool.kind,
                            gray=job.gray, has_alpha=source.meta.has_alpha)
    return how.integer_weights if how.as_whole else None


def _run_cluster(client, job: Job, bands, bar) -> None:
    from distributed import as_completed

    from .cluster import serial

    futures = [client.submit(serial, run_band, job, f0, f1, pure=False) for f0, f1 in bands]
    done = 0
    try:
        for future in as_completed(futures, loop=client.loop):
            f0, f1 = bands[futures.index(future)]
            try:
                future.result()
            except Exception as e:
                raise ImageWriteError(f"rows {f0}-{f1 - 1} failed on the cluster: {e}") from None
            done += f1 - f0
            bar.update(done)
    except BaseException:
        client.cancel(futures)
        raise


def _check_space(path: Path, nbytes: int) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # the write itself will say what is wrong
    if nbytes > free:
        raise ImageWriteError(
            f"{path}: the output needs {nbytes / 2**30:.2f} GiB but {folder} has {free / 2**30:.2f} GiB free"
        )

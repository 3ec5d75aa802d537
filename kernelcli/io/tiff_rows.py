"""TIFF a band of rows at a time: reading only the strips or tiles a band
touches, and writing strips or tiles as the bands come.

TIFF and BigTIFF, striped or tiled, uncompressed or compressed (deflate, LZW,
zstd, JPEG...), 8/16-bit and float, gray, gray with alpha, RGB and RGBA, go
through tifffile (imported here only, when such a file is read or written in
bands); the codecs beyond deflate and PackBits come from imagecodecs. A picture
read whole still goes through Pillow (:mod:`kernelcli.io.decode`).
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ImageReadError, ImageWriteError, UsageError
from .picture import Picture

#: The first bytes of a TIFF (little- and big-endian) and a BigTIFF.
TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

#: Past this many bytes of pixels a TIFF output is written as BigTIFF (whose
#: offsets are 64-bit); the margin leaves room for the tags and strip tables.
BIGTIFF_BYTES = 2**32 - 2**25

#: Compressions a TIFF output may ask for (tifffile's names).
COMPRESSIONS = ("none", "deflate", "lzw", "zstd", "jpeg", "packbits")

#: Rows per strip of an uncompressed striped output.
STRIP_ROWS = 64

_INSTALL = "pip install 'kernelcli[codecs]'"


def is_tiff(head: bytes) -> bool:
    return head[:4] in TIFF_MAGICS


def _tifffile():
    try:
        import tifffile
    except ImportError:  # a broken install: tifffile is a dependency
        raise ImageReadError("reading or writing a TIFF in bands needs tifffile: pip install tifffile") from None
    return tifffile


def _mode(dtype: np.dtype, channels: int, name: str) -> tuple[str | None, float | None]:
    """The Picture mode (and value range top when no mode says it) of a TIFF's pixels."""
    if dtype == np.uint8 and channels in (1, 2, 3, 4):
        return {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels], None
    if dtype == np.uint16:
        return ("I;16", None) if channels == 1 else (None, 65535.0)
    if dtype.kind == "f":
        return ("F", None) if channels == 1 else (None, 1.0)
    if dtype.kind in "iu" and dtype.itemsize <= 4:
        return None, float(np.iinfo(dtype).max)
    raise ImageReadError(f"{name}: TIFF pixels of type {dtype} with {channels} channels cannot be read in bands")


def open_tiff(path, max_pixels: int | None, facts: dict | None = None) -> tuple[tuple, np.dtype, Picture]:
    """The first image of a TIFF as ``(shape, dtype, meta)``: ``H x W`` or
    ``H x W x C``, its sample type, and a Picture with 1 x 1 placeholder
    pixels that carries the mode, ICC profile and dpi. Nothing of the pixels
    is read; a picture over ``max_pixels`` is refused here. ``facts``, if
    given, gets the file's ``frames`` (pages) and ``orientation`` (1: upright)."""
    name = str(path)
    tifffile = _tifffile()
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages.first
            shape, dtype = tuple(page.shape), np.dtype(page.dtype) if page.dtype is not None else None
            planes = page.planarconfig
            icc = page.iccprofile
            depth = page.imagedepth
            dpi = _dpi(page.tags)
            if facts is not None:
                facts["frames"] = _count_pages(tif)
                turn = page.tags[274].value if 274 in page.tags else 1
                facts["orientation"] = int(turn) if int(turn) in range(1, 9) else 1
    except OSError as e:
        raise ImageReadError(f"{name}: cannot open: {e.strerror or e}") from None
    except Exception as e:  # tifffile says what is wrong with the structure
        raise ImageReadError(f"{name}: not a readable TIFF: {e}") from None
    if dtype is None or depth != 1:
        raise ImageReadError(f"{name}: this TIFF's pixels cannot be read in bands "
                             f"({'volume' if depth != 1 else 'packed or unusual samples'})")
    if planes == 2 and len(shape) == 3:  # separate planes: tifffile shows them first
        shape = shape[1:] + shape[:1]
    if len(shape) not in (2, 3):
        raise ImageReadError(f"{name}: a TIFF image of shape {shape} is not a picture")
    h, w = shape[:2]
    if max_pixels is not None and h * w > max_pixels:
        raise ImageReadError(f"{name}: image of {w}x{h} = {w * h:,} pixels is over the limit of "
                             f"{max_pixels:,}; raise it with --max-pixels")
    channels = shape[2] if len(shape) == 3 else 1
    mode, top = _mode(dtype, channels, name)
    info = {"icc_profile": bytes(icc)} if icc else {}
    if dpi is not None:
        info["dpi"] = dpi
    meta = Picture(np.zeros((1, 1) + shape[2:], np.float32), mode=mode, source_format="TIFF", info=info,
                   range_max=top)
    return shape, dtype, meta


def _count_pages(tif) -> int:
    """The pages of a TIFF, counted without tifffile's log lines on stderr
    (a damaged page chain is logged; the pages up to the damage are counted)."""
    import logging

    log = logging.getLogger("tifffile")
    level = log.level
    log.setLevel(logging.CRITICAL + 1)
    try:
        return len(tif.pages)
    finally:
        log.setLevel(level)


def _dpi(tags) -> tuple | None:
    """The dpi of a TIFF's resolution tags, read as Pillow reads them for the
    whole-picture path: per inch, per centimetre (x 2.54), or with no unit
    tag; none for the unit "none"."""
    try:
        x, y = (tags[code].value for code in (282, 283))
        x, y = (v[0] / v[1] if isinstance(v, tuple) else float(v) for v in (x, y))
    except (KeyError, TypeError, ValueError, ZeroDivisionError, IndexError):
        return None
    unit = tags[296].value if 296 in tags else None
    if unit == 3:
        return x * 2.54, y * 2.54
    return (x, y) if unit in (2, None) and x and y else None


#: Decoded rows of strips or tiles kept for the next band (a band of a few
#: rows reads a part of a tile row that the next band reads on from): at
#: most this many tile rows (or strips), the newest kept.
KEEP_BLOCKS = 2
_kept: list = []  # [(key, future of the rows)], newest last
_kept_lock = __import__("threading").Lock()


def read_tiff_rows(path, shape: tuple, dtype, first: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
    """Rows ``[first, stop)`` of the TIFF at ``path`` (``shape`` and
    ``dtype`` as :func:`open_tiff` gave them), decoding only the strips or
    tiles those rows touch, each once for consecutive bands (the last
    :data:`KEEP_BLOCKS` tile rows or strips are kept). ``out``: an array of
    those rows' shape to copy them into (converted to its type), else a new one."""
    import os

    tifffile = _tifffile()
    name = str(path)
    if out is None:
        out = np.empty((stop - first,) + tuple(shape[1:]), dtype)
    try:
        st = os.stat(path)
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        tif = _opened(tifffile, path, (name, stamp))
        page = tif.pages.first
        height = page.tilelength if page.is_tiled else min(page.rowsperstrip or shape[0], shape[0])
        for block in range(first // height, (stop - 1) // height + 1):
            b0 = block * height
            rows = _block(tif, page, shape, dtype, (name, stamp, block), b0, min(b0 + height, shape[0]))
            y0, y1 = max(first, b0), min(stop, b0 + len(rows))
            out[y0 - first:y1 - first] = rows[y0 - b0:y1 - b0]
    except (ValueError, KeyError, NotImplementedError) as e:
        raise ImageReadError(f"{name}: cannot decode this TIFF's pixels ({e}); for its codec: {_INSTALL}") \
            from None
    except OSError as e:
        raise ImageReadError(f"{name}: cannot read: {e.strerror or e}") from None
    return out


_open = __import__("threading").local()  # .key, .tif: the TIFF this thread read last, kept open
_all_open: list = []  # [(key, TiffFile)] of every thread, to close when a run is done


def _opened(tifffile, path, key):
    """The TIFF at ``path`` opened by this thread, kept open for its next
    band (its header and tile tables are parsed once, not once a band; a
    thread of its own holds its own file position). ``key``: its name and
    stamp, so a file replaced since is opened anew."""
    if getattr(_open, "key", None) != key or _open.tif.filehandle.closed:
        tif = tifffile.TiffFile(path)
        with _kept_lock:
            _all_open.append((key, tif))
        _open.key, _open.tif = key, tif
    return _open.tif


def forget_open_files(path) -> None:
    """Close the files :func:`read_tiff_rows` keeps open for ``path`` (its
    bands are done: no thread reads it any more)."""
    name = str(path)
    with _kept_lock:
        done = [tif for key, tif in _all_open if key[0] == name]
        _all_open[:] = [(key, tif) for key, tif in _all_open if key[0] != name]
        _kept[:] = [(key, rows) for key, rows in _kept if key[0] != name]
    for tif in done:
        tif.close()


def _block(tif, page, shape, dtype, key, first: int, stop: int) -> np.ndarray:
    """The decoded rows ``[first, stop)`` of one tile row or strip, kept for
    the next band. Two bands asking for the same rows at once (on two
    threads) share one decoding: the second waits for the first's."""
    from concurrent.futures import Future

    with _kept_lock:
        for k, rows in _kept:
            if k == key:
                break
        else:
            rows = None
            _kept.append((key, Future()))
            del _kept[:-KEEP_BLOCKS]
            mine = _kept[-1][1]
    if rows is not None:
        return rows.result()
    try:
        out = _decode_block(tif, page, shape, dtype, first, stop)
    except BaseException as e:
        with _kept_lock:
            _kept[:] = [(k, f) for k, f in _kept if f is not mine]
        mine.set_exception(e)
        raise
    mine.set_result(out)
    return out


def _decode_block(tif, page, shape, dtype, first: int, stop: int) -> np.ndarray:
    """Rows ``[first, stop)`` of one tile row or strip: its segments are read
    in file order, then decoded on the threads of :func:`_decoders` (the
    codecs let go of the GIL), each into its place."""
    out = np.empty((stop - first,) + tuple(shape[1:]), dtype)
    view = out if out.ndim == 3 else out[..., None]
    planar = page.planarconfig == 2 and len(shape) == 3
    fh = tif.filehandle
    indices = _segments(page, first, stop)
    raw = []
    for index in indices:
        fh.seek(page.dataoffsets[index])
        raw.append(fh.read(page.databytecounts[index]) if page.databytecounts[index] else None)
    decode = page.decode

    def one(i):
        seg, (s, _, y, x, _), (_, sh, sw, _) = decode(raw[i], indices[i], jpegtables=page.jpegtables)
        raw[i] = None
        y0, y1 = max(y, first), min(y + sh, stop)
        x1 = min(x + sw, shape[1])
        part = 0 if seg is None else seg[0, y0 - y:y1 - y, :x1 - x]
        target = view[y0 - first:y1 - first, x:x1]
        if planar:
            target[..., s] = part if np.isscalar(part) else part[..., 0]
        else:
            target[...] = part

    pool = _decoders() if len(indices) > 1 else None
    if pool is None:
        for i in range(len(indices)):
            one(i)
    else:
        for _ in pool.map(one, range(len(indices))):
            pass
    return out


_pool: list = []  # the decoding threads, made when first needed


def _decoders():
    """The threads that decode a block's segments (one per core), or None on one core."""
    from concurrent.futures import ThreadPoolExecutor

    from ..config import cpus

    if cpus() < 2:
        return None
    with _kept_lock:
        if not _pool:
            _pool.append(ThreadPoolExecutor(max_workers=cpus(), thread_name_prefix="kernelcli-tiff-decode"))
        return _pool[0]


def _segments(page, first: int, stop: int) -> list[int]:
    """The indices of the strips or tiles holding rows ``[first, stop)``."""
    n = len(page.dataoffsets)
    planes = page.samplesperpixel if page.planarconfig == 2 else 1
    per_plane = n // planes
    if page.is_tiled:
        th, tw = page.tilelength, page.tilewidth
        across = -(-page.imagewidth // tw)
        rows = range(first // th, (stop - 1) // th + 1)
        found = [ty * across + tx for ty in rows for tx in range(across)]
    else:
        rps = min(page.rowsperstrip or page.imagelength, page.imagelength)
        found = list(range(first // rps, (stop - 1) // rps + 1))
    return [p * per_plane + i for p in range(planes) for i in found if i < per_plane]


# --------------------------------------------------------------------------
# writing


def tiff_layout(shape: tuple, dtype, tile: int | None, compression: str | None) -> dict:
    """How a TIFF output is laid out: ``rows`` (bands come in multiples of
    it), ``tile`` (or None for strips), ``compression`` and ``bigtiff``.
    Compression asks for tiles (256 x 256 unless ``tile`` says)."""
    compression = None if compression in (None, "none") else compression
    if compression is not None and tile is None:
        tile = 256
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    return {"rows": tile or STRIP_ROWS, "tile": tile, "compression": compression, "bigtiff": nbytes > BIGTIFF_BYTES}


class TiffRows:
    """A TIFF written band by band, in order: ``write(rows)`` takes the next
    rows (any number: they wait for a whole tile row or strip), and
    ``close()`` ends the file. The pixels are the output's (uint8, uint16 or
    float32), as :func:`kernelcli.io.pixels.to_array` makes them."""

    def __init__(self, path, shape: tuple, dtype, mode: str, layout: dict, info: dict):
        import queue
        import threading

        self.shape, self.dtype, self.layout, self.name = tuple(shape), np.dtype(dtype), layout, str(path)
        self._queue = queue.Queue(maxsize=1)  # a tile row (or strip) waits while the writer writes the last
        self._error: list = []
        self._ended = False  # the writer has taken the end of the bands
        self._held, self._count = [], 0  # rows waiting for a whole tile row or strip
        tifffile = _tifffile()
        photometric = "rgb" if mode in ("RGB", "RGBA") else "minisblack"
        extras = ["unassalpha"] if mode in ("LA", "RGBA") else None
        kwargs = dict(shape=self.shape, dtype=self.dtype, photometric=photometric, extrasamples=extras,
                      compression=layout["compression"], metadata=None,
                      iccprofile=info.get("icc_profile"))
        if info.get("dpi"):
            kwargs["resolution"], kwargs["resolutionunit"] = tuple(info["dpi"][:2]), "INCH"
        if layout["tile"]:
            kwargs["tile"] = (layout["tile"], layout["tile"])
        else:
            kwargs["rowsperstrip"] = layout["rows"]
        if layout["compression"] is not None:
            # Tiles (or strips) are compressed on one thread per core, a tile
            # row (or a strip) at a time: what tifffile holds stays small.
            from ..config import cpus

            row_bytes = math.prod(self.shape[1:]) * self.dtype.itemsize
            kwargs["maxworkers"] = cpus()
            kwargs["buffersize"] = layout["rows"] * row_bytes
        if layout["compression"] == "jpeg" and mode not in ("L", "RGB"):
            raise UsageError(f"--tiff-compression jpeg stores gray or RGB only, not {mode} pixels")

        def write():
            try:
                with tifffile.TiffWriter(path, bigtiff=layout["bigtiff"]) as tif:
                    tif.write(self._pieces(), **kwargs)
            except BaseException as e:  # told to the writer of the bands
                self._error.append(e)
                while not self._ended:  # let the bands' writer finish
                    self._ended = self._queue.get() is None

        self._thread = threading.Thread(target=write, name="kernelcli-tiff-writer", daemon=True)
        self._thread.start()

    def _pieces(self):
        """Strips (as bytes) or tiles, in the file's order, from the bands in the queue."""
        tile = self.layout["tile"]
        while True:
            rows = self._queue.get()
            if rows is None:
                self._ended = True
                return
            if tile is None:
                for r in range(0, rows.shape[0], self.layout["rows"]):
                    yield np.ascontiguousarray(rows[r:r + self.layout["rows"]]).tobytes()
                continue
            for y in range(0, rows.shape[0], tile):
                for x in range(0, self.shape[1], tile):
                    yield rows[y:y + tile, x:x + tile]

    def write(self, rows: np.ndarray) -> None:
        """Take the next rows; whole tile rows (or strips) go to the file as
        soon as they are complete, the rest waits for the next band."""
        self._check()
        self._held.append(np.asarray(rows, dtype=self.dtype))
        self._count += len(rows)
        unit = self.layout["rows"]
        if self._count >= unit:
            block = np.concatenate(self._held) if len(self._held) > 1 else self._held[0]
            whole = self._count // unit * unit
            self._queue.put(block[:whole])
            # (a copy: a view of the rest would keep the whole block alive)
            self._held = [block[whole:].copy()] if whole < self._count else []
            self._count -= whole

    def close(self) -> None:
        if self._held:
            self._check()
            self._queue.put(np.concatenate(self._held))
            self._held = []
        self._queue.put(None)
        self._thread.join()
        self._check()

    def abort(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def _check(self):
        if self._error:
            e = self._error[0]
            if isinstance(e, OSError):
                raise ImageWriteError(f"{self.name}: cannot write: {e.strerror or e}") from None
            if isinstance(e, (ValueError, KeyError, ImportError)):
                raise ImageWriteError(f"{self.name}: cannot write this TIFF ({e}); for its codec: {_INSTALL}") \
                    from None
            raise e

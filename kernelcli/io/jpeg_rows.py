"""JPEG a band of rows at a time, through libvips (the optional ``jpeg``
extra: pyvips with its bundled libvips).

A JPEG's rows can only be decoded in order: :class:`JpegReader` has libvips
decode the file in strips, from the top down (``access="sequential"``), and
keeps only what later bands still read (the rows a band overlaps with the
next, the first and last rows that padding reads), as
:class:`kernelcli.io.png_rows.PngReader` does for a PNG. libvips decodes
with libjpeg-turbo's arithmetic (integer IDCT, smooth chroma upsampling), so
its pixels are Pillow's, byte for byte. Gray and YCbCr (RGB) JPEGs are read
so; CMYK and YCCK ones, which are converted to sRGB in memory, go whole.

Nothing here imports pyvips until a JPEG is read or written in bands.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from ..errors import ImageReadError, UsageError
from ._row_window import RowWindow
from .picture import Picture, checked_info

#: The optional extra that brings the streaming JPEG library.
EXTRA = "jpeg"
INSTALL_HINT = f"pip install 'kernelcli[{EXTRA}]'"
JPEG_MAGIC = b"\xff\xd8\xff"


def is_jpeg(head: bytes) -> bool:
    return head.startswith(JPEG_MAGIC)


def available() -> bool:
    """Is the streaming JPEG library installed? (Found, not imported.)"""
    try:
        return importlib.util.find_spec("pyvips") is not None
    except (ImportError, ValueError):
        return False


def _pyvips():
    try:
        import pyvips
    except (ImportError, OSError) as e:
        raise UsageError(f"a JPEG in bands needs libvips: {INSTALL_HINT} ({e})") from None
    pyvips.cache_set_max(0)  # nothing kept between operations: memory holds the strips in flight
    return pyvips


def _message(e) -> str:
    """libvips's own words from a pyvips error, on one line."""
    detail = " ".join(str(getattr(e, "detail", "") or e).split())
    return detail or type(e).__name__


def open_jpeg(path, max_pixels: int | None) -> tuple[tuple, np.dtype, Picture, bool]:
    """A JPEG's ``(shape, dtype, meta, usable)`` from its header (read by
    Pillow; nothing of the pixels is decoded): a picture over ``max_pixels``
    is refused here; ``usable`` is False for a JPEG that is not gray or
    YCbCr (CMYK, YCCK: converted in memory)."""
    from PIL import Image

    name = str(path)
    old_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with Image.open(path) as img:
            if img.format != "JPEG":
                raise ImageReadError(f"{name}: not a JPEG")
            (w, h), mode = img.size, img.mode
            raw_info = {k: img.info[k] for k in ("icc_profile", "dpi", "exif") if img.info.get(k)}
    except ImageReadError:
        raise
    except Exception as e:  # Pillow says what is wrong with the header
        raise ImageReadError(f"{name}: not a readable JPEG: {e}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit
    if max_pixels is not None and w * h > max_pixels:
        raise ImageReadError(f"{name}: image of {w}x{h} = {w * h:,} pixels is over the limit of "
                             f"{max_pixels:,}; raise it with --max-pixels")
    notes: list = []
    info = checked_info(raw_info, name, notes)
    shape = (h, w) if mode == "L" else (h, w, 3)
    meta = Picture(np.zeros((1, 1) + shape[2:], np.float32), mode="L" if mode == "L" else "RGB",
                   source_format="JPEG", info=info, notes=notes)
    return shape, np.dtype(np.uint8), meta, mode in ("L", "RGB")


#: libvips hands decoded rows over in blocks of about this many bytes.
BLOCK_BYTES = 1 << 20


class _RowFeed:
    """libvips decoding a JPEG from the top down on a thread of its own: its
    rows, as raw bytes written to a custom target, are gathered into blocks
    handed over through a short queue (memory holds a few blocks, and the
    decoding runs beside the thread that reads the rows)."""

    def __init__(self, name: str, shape: tuple):
        import queue
        import threading

        pyvips = _pyvips()
        self.name, self.shape = name, shape
        try:
            # (not turned: a JPEG with an EXIF orientation goes whole; failing on
            # a damaged file as Pillow does, rather than filling in grey)
            image = pyvips.Image.new_from_file(name, access="sequential", fail_on="error")
        except pyvips.Error as e:
            raise ImageReadError(f"{name}: cannot decode JPEG: {_message(e)}") from None
        bands = 1 if len(shape) == 2 else shape[2]
        got = (image.height, image.width, image.bands, image.format)
        if got != (shape[0], shape[1], bands, "uchar"):
            raise ImageReadError(f"{name}: libvips reads this JPEG as {got[1]}x{got[0]} with {got[2]} "
                                 f"{got[3]} bands, not as its header says")
        self.row_bytes = shape[1] * bands
        self._queue = queue.Queue(maxsize=3)
        self._stopped = False
        self._error = None
        self._part = np.empty((0,) + shape[1:], np.uint8)  # rows handed over, not yet taken
        self._ended = False
        self._thread = threading.Thread(target=self._run, args=(image,), name="kernelcli-jpeg-reader",
                                        daemon=True)
        self._thread.start()

    def _run(self, image) -> None:
        pyvips = _pyvips()
        size = max(1, BLOCK_BYTES // self.row_bytes) * self.row_bytes
        block = np.empty(size, np.uint8)
        state = {"block": block, "view": memoryview(block), "filled": 0}

        def write(buf):
            try:
                data = memoryview(buf).cast("B")
                i, total = 0, len(data)
                while i < total:
                    filled = state["filled"]
                    n = min(total - i, size - filled)
                    state["view"][filled:filled + n] = data[i:i + n]
                    state["filled"] = filled + n
                    i += n
                    if filled + n == size:
                        self._hand(state["block"])
                        block = np.empty(size, np.uint8)
                        state.update(block=block, view=memoryview(block), filled=0)
                return total
            except BaseException as e:  # never into libvips's thread
                self._error = self._error or e
                return -1

        target = pyvips.TargetCustom()
        target.on_write(write)
        target.on_end(lambda: 0)
        try:
            image.rawsave_target(target)
            whole = state["filled"] - state["filled"] % self.row_bytes
            if whole:
                self._hand(state["block"][:whole])
        except pyvips.Error as e:
            self._error = self._error or e
        except BaseException as e:
            self._error = self._error or e
        finally:
            self._hand(None, last=True)

    def _hand(self, block, last: bool = False) -> None:
        import queue

        while not self._stopped:
            try:
                self._queue.put(block, timeout=0.1)
                return
            except queue.Full:
                continue
        if not last:
            raise RuntimeError("stopped")

    def rows(self, n: int, first: int) -> np.ndarray:
        """The next ``n`` rows (``first``: the first of them, for messages)."""
        parts, have = [], 0
        while have < n:
            if not len(self._part):
                block = None if self._ended else self._queue.get()
                if block is None:
                    self._ended = True
                    e = self._error
                    why = _message(e) if e is not None else "the image data ends early"
                    raise ImageReadError(f"{self.name}: cannot decode JPEG at rows {first + have}-{first + n - 1}: "
                                         f"{why}")
                self._part = block.reshape((-1,) + self.shape[1:])
            take = self._part[:n - have]
            self._part = self._part[len(take):]
            parts.append(take)
            have += len(take)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def close(self) -> None:
        self._stopped = True
        while self._thread.is_alive():
            try:
                while True:
                    self._queue.get_nowait()
            except Exception:
                pass
            self._thread.join(0.05)


class JpegReader(RowWindow):
    """The rows of a JPEG in order, decoded by libvips in strips:
    :meth:`take` returns the rows asked for, decoding on to the last of
    them; rows before a band's first are let go, except the ``keep`` first
    and last rows of the picture (what padding reads again)."""

    def __init__(self, path, shape: tuple, keep: int = 0):
        self.name, self.shape = str(path), tuple(shape)
        self.keep = min(keep, shape[0])
        self._restart()

    def _restart(self) -> None:
        if getattr(self, "_feed", None) is not None:
            self._feed.close()
        self._feed = _RowFeed(self.name, self.shape)
        self._start(self.shape[1:])

    what = "JPEG rows"

    def close(self) -> None:
        self._feed.close()

    def _decode(self, n: int) -> np.ndarray:
        """The next ``n`` rows of pixels."""
        rows = self._feed.rows(n, self._next)
        self._next += n
        return rows

    @staticmethod
    def pixels(raw: np.ndarray) -> np.ndarray:
        return raw


# --------------------------------------------------------------------------
# JPEG written as the bands come


def _segments(data: bytes) -> bytes:
    """The marker segments of a JPEG between its SOI and its first table
    (JFIF, EXIF, ICC...): what an encoder writes before the pixels."""
    i, out = 2, []
    while i + 4 <= len(data) and data[i] == 0xFF and 0xE0 <= data[i + 1] <= 0xFE:
        length = int.from_bytes(data[i + 2:i + 4], "big")
        out.append(data[i:i + 2 + length])
        i += 2 + length
    return b"".join(out)


def pillow_header(mode: str, info: dict, quality: int, name: str, notes: list) -> bytes:
    """The JFIF, EXIF and ICC segments Pillow writes for a ``mode`` picture
    with ``info``'s metadata (:func:`kernelcli.io.encode.write_pixels`'s
    rules: what a JPEG cannot hold, or Pillow refuses, is dropped with a
    note), taken from a one-pixel JPEG that Pillow encodes with them."""
    import io

    from PIL import Image

    from .encode import _encode, fit_info

    info = fit_info(info, "JPEG", name, notes)
    buf = io.BytesIO()
    _encode(Image.new(mode, (1, 1)), "JPEG", info, quality, buf, name, notes)
    return _segments(buf.getvalue())


#: Bytes per strip of the uncompressed TIFF stream libvips reads the rows from.
STRIP_BYTES = 512 * 1024


class _TiffStream:
    """An uncompressed, striped BigTIFF of the rows, made as the bands come:
    the plain pixel stream libvips reads from a custom source (the bundled
    libvips has no PPM reader). Its header, directory and strip table come
    first, computed from the size alone, then the rows, read in order a
    strip at a time; :meth:`read` serves them at the positions libtiff
    seeks to, from the bands handed over through ``parts``."""

    def __init__(self, width: int, height: int, channels: int, parts):
        import struct

        row = width * channels
        rps = max(1, min(height, STRIP_BYTES // row))
        count = -(-height // rps)
        entries = 10 if channels == 3 else 9
        tables = 16 + 8 + entries * 20 + 8  # header, entry count, entries, next directory
        data = tables + 16 * count
        offsets = [data + i * rps * row for i in range(count)]
        sizes = [min(rps, height - i * rps) * row for i in range(count)]

        def entry(tag, kind, n, value):  # value: an int, or bytes of at most 8
            raw = value if isinstance(value, bytes) else value.to_bytes(8, "little")
            return struct.pack("<HHQ", tag, kind, n) + raw.ljust(8, b"\0")
        table = (lambda values, at: (values[0] if len(values) == 1 else at))
        fields = [entry(256, 16, 1, width), entry(257, 16, 1, height),
                  entry(258, 3, channels, struct.pack(f"<{channels}H", *[8] * channels)),
                  entry(259, 3, 1, 1), entry(262, 3, 1, 2 if channels == 3 else 1),
                  entry(273, 16, count, table(offsets, tables)), entry(277, 3, 1, channels),
                  entry(278, 16, 1, rps), entry(279, 16, count, table(sizes, tables + 8 * count))]
        if channels == 3:
            fields.append(entry(284, 3, 1, 1))
        head = (b"II+\0" + struct.pack("<HHQ", 8, 0, 16) + struct.pack("<Q", entries) + b"".join(fields)
                + b"\0" * 8 + struct.pack(f"<{count}Q", *offsets) + struct.pack(f"<{count}Q", *sizes))
        assert len(head) == data
        self.head, self.total, self.parts = head, data + height * row, parts
        self.pos = 0
        self._part, self._part_at = memoryview(b""), 0  # the band being read and its place in the pixel data
        self.ended = False  # the writer's last word (None) is taken

    def seek(self, offset: int, whence: int) -> int:
        self.pos = offset + (0 if whence == 0 else self.pos if whence == 1 else self.total)
        return self.pos

    def read(self, size: int):
        at = self.pos - len(self.head)
        if at < 0:
            chunk = self.head[self.pos:self.pos + size]
        else:
            while self._part_at + len(self._part) <= at:
                part = self.parts.get()
                if part is None:
                    self.ended = True
                    return None
                self._part_at += len(self._part)
                self._part = memoryview(part).cast("B")
            if at < self._part_at:  # a planning bug, never the file's
                raise RuntimeError(f"TIFF stream read at {at} after {self._part_at}")
            chunk = self._part[at - self._part_at:at - self._part_at + size]
        self.pos += len(chunk)
        return chunk


class JpegRows:
    """A JPEG written band by band, in order: ``write(rows)`` takes the next
    rows (uint8 gray or RGB, as :func:`kernelcli.io.pixels.to_array` makes
    them for JPEG), ``close()`` ends the file, ``abort()`` gives up.

    libvips encodes as the rows come, on a thread of its own (reading them
    as an uncompressed TIFF stream: :class:`_TiffStream`), with the
    quantisation, 4:2:0 chroma subsampling, baseline Huffman tables and
    integer DCT of Pillow's encoder (the same libjpeg-turbo code: the
    entropy-coded data is Pillow's, byte for byte); the metadata segments
    (JFIF with the dpi, EXIF, ICC profile) are Pillow's own, written before
    libvips's tables. Memory holds a few bands and libvips's strips."""

    def __init__(self, path, shape: tuple, info: dict, quality: int = 92, notes: list | None = None):
        import queue
        import threading

        self.name = str(path)
        h, w = shape[:2]
        channels = 1 if len(shape) == 2 else shape[2]
        if channels not in (1, 3):
            raise ValueError(f"a JPEG holds gray or RGB pixels, not {channels} channels")
        self._header = pillow_header("L" if channels == 1 else "RGB", info, quality, self.name,
                                     notes if notes is not None else [])
        self._queue = queue.Queue(maxsize=3)
        self._stream = _TiffStream(w, h, channels, self._queue)
        self._error = None
        self._f = open(path, "wb")
        self._thread = threading.Thread(target=self._encode, args=(quality,), name="kernelcli-jpeg-writer",
                                        daemon=True)
        self._thread.start()

    def _encode(self, quality: int) -> None:
        pyvips = _pyvips()
        stream = self._stream
        spliced = [False]

        def read(size):
            try:
                return stream.read(size)
            except BaseException as e:  # never into libvips's thread
                self._error = self._error or e
                return None

        def write(data):
            try:
                if not spliced[0]:  # SOI, then Pillow's segments, then libvips's tables and pixels
                    data = bytes(data)
                    self._f.write(data[:2] + self._header + data[2:])
                    spliced[0] = True
                else:
                    self._f.write(data)
                return len(data)
            except BaseException as e:
                self._error = self._error or e
                return -1

        source = pyvips.SourceCustom()
        source.on_read(read)
        source.on_seek(stream.seek)
        target = pyvips.TargetCustom()
        target.on_write(write)
        target.on_end(lambda: 0)
        try:
            image = pyvips.Image.new_from_source(source, "", access="sequential")
            image.jpegsave_target(target, Q=quality, subsample_mode="on", optimize_coding=False,
                                  interlace=False, keep="none")
        except pyvips.Error as e:
            self._error = self._error or e
        finally:
            while not stream.ended:  # let a writer waiting on a full queue go on to its end
                stream.ended = self._queue.get() is None

    def _put(self, part) -> None:
        import queue

        while True:
            if self._error is not None or not self._thread.is_alive():
                self._raise()
            try:
                self._queue.put(part, timeout=0.1)
                return
            except queue.Full:
                continue

    def _raise(self):
        from ..errors import ImageWriteError

        e = self._error
        if isinstance(e, OSError):
            raise ImageWriteError(f"{self.name}: cannot write: {e.strerror or e}") from None
        raise ImageWriteError(f"{self.name}: cannot encode JPEG: {_message(e) if e else 'the encoder stopped'}")

    def write(self, rows: np.ndarray) -> None:
        self._put(np.ascontiguousarray(rows, np.uint8))

    def close(self) -> None:
        from ..errors import ImageWriteError

        self._put(None)
        self._thread.join()
        try:
            self._f.close()
        except OSError as e:
            raise ImageWriteError(f"{self.name}: cannot write: {e.strerror or e}") from None
        if self._error is not None:
            self._raise()

    def abort(self) -> None:
        import queue

        self._error = self._error or RuntimeError("stopped")
        while self._thread.is_alive():
            try:
                self._queue.put(None, timeout=0.1)
            except queue.Full:
                pass
            self._thread.join(0.1)
        self._f.close()

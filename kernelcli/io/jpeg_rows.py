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


class JpegReader:
    """The rows of a JPEG in order, decoded by libvips in strips:
    :meth:`take` returns the rows asked for, decoding on to the last of
    them; rows before a band's first are let go, except the ``keep`` first
    and last rows of the picture (what padding reads again)."""

    def __init__(self, path, shape: tuple, keep: int = 0):
        self.name, self.shape = str(path), tuple(shape)
        self.keep = min(keep, shape[0])
        self._open()
        self.head = np.empty((0,) + self.shape[1:], np.uint8)
        self.tail = np.empty((0,) + self.shape[1:], np.uint8)

    def _open(self) -> None:
        pyvips = _pyvips()
        try:
            # (not turned: a JPEG with an EXIF orientation goes whole; failing on
            # a damaged file as Pillow does, rather than filling in grey)
            self._image = pyvips.Image.new_from_file(self.name, access="sequential", fail_on="error")
            self._region = pyvips.Region.new(self._image)
        except pyvips.Error as e:
            raise ImageReadError(f"{self.name}: cannot decode JPEG: {_message(e)}") from None
        bands = 1 if len(self.shape) == 2 else self.shape[2]
        got = (self._image.height, self._image.width, self._image.bands, self._image.format)
        if got != (self.shape[0], self.shape[1], bands, "uchar"):
            self.close()
            raise ImageReadError(f"{self.name}: libvips reads this JPEG as {got[1]}x{got[0]} with {got[2]} "
                                 f"{got[3]} bands, not as its header says")
        self._next = 0  # the next row to decode
        self._first = 0  # the first row of the window
        self._window = np.empty((0,) + self.shape[1:], np.uint8)

    def close(self) -> None:
        self._region = self._image = None

    def _decode(self, n: int) -> np.ndarray:
        """The next ``n`` rows of pixels."""
        import pyvips

        h, w = self.shape[:2]
        try:
            data = self._region.fetch(0, self._next, w, n)
        except pyvips.Error as e:
            raise ImageReadError(f"{self.name}: cannot decode JPEG at rows {self._next}-{self._next + n - 1}: "
                                 f"{_message(e)}") from None
        rows = np.frombuffer(data, np.uint8).reshape((n,) + self.shape[1:])
        self._next += n
        return rows

    def read_tail(self) -> None:
        """Decode the whole picture once to keep its last ``keep`` rows, then
        start again at the top (wrap padding reads the bottom rows for the
        first band)."""
        h = self.shape[0]
        while self._next < h:
            start = self._next
            self._keep_edges(self._decode(min(256, h - start)), start)
        self.close()
        self._open()

    def _keep_edges(self, rows: np.ndarray, start: int) -> None:
        h, k = self.shape[0], self.keep
        if start < k and len(self.head) < k:
            self.head = np.concatenate([self.head, rows[:k - start]])
        if start + len(rows) > h - k and len(self.tail) < k:
            self.tail = np.concatenate([self.tail, rows[max(0, h - k - start):]])

    def _cached(self, r: int) -> bool:
        return r < len(self.head) or (len(self.tail) == self.keep > 0 and r >= self.shape[0] - self.keep)

    def take(self, rows: np.ndarray, drop_below: int) -> np.ndarray:
        """Pixels of these rows (-1: a row of zeros), decoding on to the last
        one needed; afterwards rows before ``drop_below`` (but the first and
        last ``keep``) are forgotten."""
        h = self.shape[0]
        out = np.zeros((len(rows),) + self.shape[1:], np.uint8)
        ahead = [int(r) for r in rows if r >= self._first and not self._cached(int(r))]
        if ahead and max(ahead) >= self._next:
            start = self._next
            new = self._decode(max(ahead) + 1 - start)
            self._keep_edges(new, start)
            self._window = np.concatenate([self._window, new]) if len(self._window) else new
        for i, r in enumerate(rows):
            r = int(r)
            if r < 0:
                continue
            if self._first <= r < self._next:
                out[i] = self._window[r - self._first]
            elif r < len(self.head):
                out[i] = self.head[r]
            elif len(self.tail) == self.keep > 0 and r >= h - self.keep:
                out[i] = self.tail[r - (h - self.keep)]
            else:  # a planning bug, never the file's
                raise RuntimeError(f"JPEG row {r} asked for after it was let go")
        if drop_below > self._first:
            drop = min(drop_below, self._next) - self._first
            self._window, self._first = self._window[drop:], self._first + drop
        return out

    @staticmethod
    def pixels(raw: np.ndarray) -> np.ndarray:
        return raw

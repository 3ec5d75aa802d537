"""PNG a band of rows at a time: rows decoded as they are reached, and rows
encoded as they come.

A PNG's pixels are one zlib stream of filtered scanlines, so rows can only be
read in order: :class:`PngReader` inflates and unfilters the rows up to the
last one asked for and keeps only what later bands still read (the rows a
band overlaps with the next, the first and last rows that padding reads).
8- and 16-bit gray, gray with alpha, RGB and RGBA, and palette pictures (as
RGB or RGBA) are read; interlaced (Adam7) files are not, and go whole.

:class:`PngRows` writes a PNG as the bands come: each band's rows get the
"Up" filter (the row above may be the last one of the previous band) and are
deflated in pieces on threads into one zlib stream, as :mod:`kernelcli.io._png`
does for a whole picture.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from ..errors import ImageReadError, ImageWriteError
from . import _png
from ._row_window import RowWindow
from .picture import Picture

#: Compressed bytes read from the file at a time.
READ_BYTES = 1 << 20
_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}
_MODES = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def is_png(head: bytes) -> bool:
    return head.startswith(_png.SIGNATURE)


def _chunks(f, name: str):
    """``(type, data)`` of each chunk up to the first IDAT (whose data is not
    read: the file is left at its first byte, and the type is yielded last)."""
    f.seek(len(_png.SIGNATURE))
    while True:
        head = f.read(8)
        if len(head) < 8:
            raise ImageReadError(f"{name}: truncated PNG: no image data")
        length, kind = struct.unpack(">I4s", head)
        if kind == b"IDAT":
            yield kind, length
            return
        if length > 64 * 2**20:
            raise ImageReadError(f"{name}: a PNG chunk of {length:,} bytes before the image data")
        yield kind, f.read(length)
        f.read(4)  # CRC


def open_png(path, max_pixels: int | None, facts: dict | None = None) -> tuple[tuple, np.dtype, Picture, dict]:
    """A PNG's ``(shape, dtype, meta, layout)`` from its header: nothing of
    the pixels is read; a picture over ``max_pixels`` is refused here.
    ``layout``: what :class:`PngReader` needs (None when the file must be
    read whole: interlaced, or 1, 2 or 4 bits per sample). ``facts``, if
    given, gets its ``frames`` (an animated PNG's) and EXIF ``orientation``."""
    name = str(path)
    info, palette, alpha, frames = {}, None, None, 1
    try:
        with open(path, "rb") as f:
            for kind, data in _chunks(f, name):
                if kind == b"IHDR":
                    w, h, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[:13])
                elif kind == b"PLTE":
                    palette = np.frombuffer(data, np.uint8).reshape(-1, 3)
                elif kind == b"tRNS":
                    alpha = data
                elif kind == b"iCCP":
                    try:
                        info["icc_profile"] = zlib.decompress(data[data.index(b"\0") + 2:])
                    except (ValueError, zlib.error):
                        pass
                elif kind == b"pHYs" and len(data) >= 9:
                    px, py, unit = struct.unpack(">IIB", data[:9])
                    if unit == 1 and px and py:  # per metre; as Pillow gives it to the whole-picture path
                        info["dpi"] = (px * 0.0254, py * 0.0254)
                elif kind == b"eXIf":
                    info["exif"] = b"Exif\0\0" + data
                elif kind == b"acTL" and len(data) >= 4:
                    frames = max(1, struct.unpack(">I", data[:4])[0])
            if "exif" not in info:  # (PNG may store it after the pixels)
                from .header import png_exif_after_pixels

                exif = png_exif_after_pixels(f)
                if exif is not None:
                    info["exif"] = b"Exif\0\0" + exif
    except OSError as e:
        raise ImageReadError(f"{name}: cannot read: {e.strerror or e}") from None
    except (struct.error, UnboundLocalError):
        raise ImageReadError(f"{name}: not a readable PNG") from None
    if max_pixels is not None and w * h > max_pixels:
        raise ImageReadError(f"{name}: image of {w}x{h} = {w * h:,} pixels is over the limit of "
                             f"{max_pixels:,}; raise it with --max-pixels")
    channels = _CHANNELS.get(colour, 0)
    if colour == 3 and alpha is not None:
        channels = 4
    mode = _MODES.get(channels) if depth == 8 or colour == 3 else ("I;16" if channels == 1 else None)
    dtype = np.dtype(np.uint16 if depth == 16 else np.uint8)
    shape = (h, w) if channels == 1 else (h, w, channels)
    packed = depth < 8 and (colour == 3 or (colour == 0 and alpha is None))  # 1, 2 or 4 bits
    usable = (not interlace and channels and (depth in (8, 16) or packed) and (colour != 3 or palette is not None))
    if packed and colour == 0:
        mode, dtype = "L", np.dtype(np.uint8)
    layout = None
    if usable:
        lut = None
        if colour == 3:
            lut = np.zeros((256, channels), np.uint8)
            lut[:len(palette), :3] = palette
            if channels == 4:
                lut[:, 3] = 255
                lut[:len(alpha), 3] = np.frombuffer(alpha, np.uint8)[:256]
        elif packed:  # gray of 1, 2 or 4 bits, spread over 0..255
            lut = (np.arange(256) * 255 // (2**depth - 1)).clip(0, 255).astype(np.uint8)[:, None]
        samples = 1 if colour == 3 else channels
        layout = {"width_bytes": -(-w * samples * depth // 8), "bpp": max(1, samples * depth // 8), "lut": lut,
                  "bits": depth if packed else 8}
    if facts is not None:
        from .orientation import exif_orientation

        facts["frames"], facts["orientation"] = frames, exif_orientation(info.get("exif"))
    meta = Picture(np.zeros((1, 1) + shape[2:], np.float32), mode=mode, source_format="PNG", info=info,
                   range_max=65535.0 if depth == 16 and mode is None else None)
    return shape, dtype, meta, layout


def unfilter_simple_rows(lines: np.ndarray, bpp: int, prior: np.ndarray, out: np.ndarray) -> int:
    """Undo the filters None, Sub and Up of scanlines ``lines`` (a filter byte
    then the row's bytes, one row each) into ``out`` with NumPy, a row at a
    time: Sub is a running sum (mod 256) of every ``bpp``-th byte, Up adds
    the row above (``prior`` above the first). The rows of a PNG that uses
    no other filter are read without loading Numba (about 130 MB and half a
    second); :func:`kernelcli.io._png_filters.unfilter_rows` does all five.
    Returns -1, or the index of the first row with another filter."""
    above = prior
    for r in range(len(lines)):
        kind, line, row = lines[r, 0], lines[r, 1:], out[r]
        if kind == 0:
            row[:] = line
        elif kind == 1:
            np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.uint8, out=row.reshape(-1, bpp))
        elif kind == 2:
            np.add(line, above, out=row)
        else:
            return r
        above = row
    return -1


class PngReader(RowWindow):
    """The rows of a PNG in order: :meth:`rows` returns rows ``[first, stop)``
    decoded from the file's one zlib stream; rows before ``first`` may not be
    asked for again, except the ``keep`` first and last rows of the picture."""

    def __init__(self, path, shape: tuple, dtype, layout: dict, keep: int = 0):
        self.name, self.shape, self.dtype, self.layout = str(path), tuple(shape), np.dtype(dtype), layout
        self._f = open(path, "rb")
        self._chunk_left = 0
        for kind, length in _chunks(self._f, self.name):
            if kind == b"IDAT":
                self._chunk_left = length
        self._z = zlib.decompressobj()
        self._pending = b""
        width = layout["width_bytes"]
        self._prior = np.zeros(width, np.uint8)
        self.keep = min(keep, shape[0])
        self._start((width,))

    what = "PNG rows"

    def close(self):
        self._f.close()

    def _compressed(self) -> bytes:
        """The next compressed bytes of the IDAT chunks (b"" at their end)."""
        while self._chunk_left == 0:
            self._f.read(4)  # CRC of the chunk just read
            head = self._f.read(8)
            if len(head) < 8:
                return b""
            length, kind = struct.unpack(">I4s", head)
            if kind != b"IDAT":
                return b""
            self._chunk_left = length
        data = self._f.read(min(READ_BYTES, self._chunk_left))
        if not data:
            return b""
        self._chunk_left -= len(data)
        return data

    def _decode(self, n: int) -> np.ndarray:
        """The next ``n`` rows as raw unfiltered bytes."""
        stride = self.layout["width_bytes"] + 1
        need = n * stride
        parts, have = [self._pending], len(self._pending)
        while have < need:
            data = self._compressed()
            if not data:
                raise ImageReadError(f"{self.name}: truncated PNG: the image data ends at row {self._next + have // stride}")
            try:
                got = self._z.decompress(data)
            except zlib.error as e:
                raise ImageReadError(f"{self.name}: cannot decode PNG: {e}") from None
            parts.append(got)
            have += len(got)
        data = b"".join(parts)
        self._pending = data[need:]
        out = np.empty((n, stride - 1), np.uint8)
        lines = np.frombuffer(data, np.uint8, need)
        if lines[::stride].max(initial=0) > 2:  # Average or Paeth rows: the compiled loop
            from ._png_filters import unfilter_rows

            bad = unfilter_rows(lines, stride - 1, self.layout["bpp"], self._prior, out)
        else:
            bad = unfilter_simple_rows(lines.reshape(n, stride), self.layout["bpp"], self._prior, out)
        if bad >= 0:
            raise ImageReadError(f"{self.name}: PNG row {self._next + bad} has an unknown filter type")
        self._prior = out[-1].copy()
        self._next += n
        return out

    def _restart(self) -> None:
        self.close()
        self.__init__(self.name, self.shape, self.dtype, self.layout, self.keep)

    def pixels(self, raw: np.ndarray) -> np.ndarray:
        """Unfiltered bytes as pixels of the picture's shape and dtype."""
        lut, bits = self.layout["lut"], self.layout["bits"]
        if bits < 8:  # several samples in a byte, the first in the high bits
            shifts = np.arange(8 - bits, -1, -bits, dtype=np.uint8)
            raw = ((raw[:, :, None] >> shifts) & (2**bits - 1)).reshape(len(raw), -1)[:, :self.shape[1]]
        if lut is not None:
            px = lut[raw]
        elif self.dtype.itemsize == 2:
            px = raw.view(">u2").astype(np.uint16)
        else:
            px = raw
        return px.reshape((len(raw),) + self.shape[1:])


class PngRows:
    """A PNG written band by band, in order: ``write(rows)`` takes the next
    rows (uint8 or uint16, as :func:`kernelcli.io.pixels.to_array` makes
    them for PNG), ``close()`` ends the file."""

    def __init__(self, path, shape: tuple, dtype, info: dict, level: int = 1):
        self.name, self.level, self.total = str(path), level, 0
        channels = 1 if len(shape) == 2 else shape[2]
        depth = np.dtype(dtype).itemsize * 8
        self._f = open(path, "wb")
        parts = [_png.SIGNATURE, *_png.chunk(b"IHDR", struct.pack(">IIBBBBB", shape[1], shape[0], depth,
                                                                  _png.COLOUR_TYPES[channels], 0, 0, 0))]
        if info.get("icc_profile"):
            parts += _png.chunk(b"iCCP", b"ICC Profile\0\0" + zlib.compress(info["icc_profile"]))
        if info.get("dpi"):
            parts += _png.chunk(b"pHYs", struct.pack(">IIB", *(int(d / 0.0254 + 0.5) for d in info["dpi"][:2]), 1))
        exif = info.get("exif")
        if exif:
            parts += _png.chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\0\0") else exif)
        self._write(parts)
        self._last = None  # the previous band's last row, as big-endian bytes
        self._window = b""  # the last 32 KiB of filtered bytes, to prime the next band's pieces
        self._adler = 1
        self._plan = None
        self._started = False

    def _write(self, parts) -> None:
        try:
            for p in parts:
                self._f.write(p)
        except OSError as e:
            raise ImageWriteError(f"{self.name}: cannot write: {e.strerror or e}") from None

    def write(self, rows: np.ndarray) -> None:
        filtered = _png.up_filtered(rows)
        if self._last is not None:  # the band's first row against the previous band's last
            raw = np.ascontiguousarray(rows[:1])
            if raw.dtype.itemsize > 1:
                raw = raw.astype(raw.dtype.newbyteorder(">"))
            np.subtract(raw.view(np.uint8).reshape(-1), self._last, out=filtered[0, 1:])
        last = np.ascontiguousarray(rows[-1:])
        if last.dtype.itemsize > 1:
            last = last.astype(last.dtype.newbyteorder(">"))
        self._last = last.view(np.uint8).reshape(-1).copy()
        data = memoryview(filtered).cast("B")
        if self._plan is None:
            self._plan = _png._plan(data, self.level)
        pieces = self._deflate(data)
        self._adler = zlib.adler32(data, self._adler)
        self._window = (self._window + bytes(data[-_png.WINDOW:]))[-_png.WINDOW:]
        for piece in pieces:
            if piece:
                self._write(_png.chunk(b"IDAT", piece))

    def _deflate(self, data: memoryview) -> list:
        """Raw deflate pieces of ``data``, each primed with the 32 KiB before it and
        ended with a sync flush, so that every band's pieces continue one stream."""
        from concurrent.futures import ThreadPoolExecutor

        from .. import config

        level, strategy = self._plan
        n = len(data)
        count = max(1, -(-n // _png.PIECE_BYTES))
        cuts = [n * i // count for i in range(count + 1)]

        def piece(i):
            start, stop = cuts[i], cuts[i + 1]
            before = bytes(data[max(0, start - _png.WINDOW):start]) if start else self._window
            primed = {"zdict": before} if before else {}
            c = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, 9, strategy, **primed)
            return c.compress(data[start:stop]) + c.flush(zlib.Z_SYNC_FLUSH)

        header = [] if self._started else [bytes((0x78, 0x01))]
        self._started = True
        if count == 1 or config.cpus() < 2 or level == 0:
            return header + [piece(i) for i in range(count)]
        with ThreadPoolExecutor(min(count, config.cpus())) as pool:
            return header + list(pool.map(piece, range(count)))

    def close(self) -> None:
        end = zlib.compressobj(0, zlib.DEFLATED, -zlib.MAX_WBITS).flush(zlib.Z_FINISH)  # an empty last block
        self._write(_png.chunk(b"IDAT", end + struct.pack(">I", self._adler)) + _png.chunk(b"IEND", b""))
        try:
            self._f.close()
        except OSError as e:
            raise ImageWriteError(f"{self.name}: cannot write: {e.strerror or e}") from None

    def abort(self) -> None:
        self._f.close()

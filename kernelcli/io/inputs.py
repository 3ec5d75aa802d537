"""Opening inputs: a path, ``"-"`` (stdin), bytes or a binary file.

Inputs are recognised by their bytes, never by their name: ``.npy`` by NumPy's
magic ``\\x93NUMPY``, pictures by Pillow's raster decoders only
(:data:`~kernelcli.io.decode.RASTER_FORMATS`). Garbage is refused by its
first bytes; every input is opened and read once (a FIFO or pipe works like
a file), a pipe a chunk at a time within a bound (:func:`stream_limit`).
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ImageReadError, UsageError
from ..stopping import wait_readable
from .decode import JPEG_MAGIC, PNG_MAGIC, RASTER_FORMATS, declared_size, read_pillow
from .picture import bomb_message
from .npy import NPY_MAGIC, npy_header_checked, npy_picture, read_error
from .picture import Picture


#: Pillow's own default limit, made explicit (raise it with --max-pixels).
DEFAULT_MAX_PIXELS = 178_956_970


@dataclass(frozen=True)
class ReadSpec:
    """How pictures are read: ``auto_orient`` turns them upright from their
    EXIF orientation (``--no-auto-orient``: False); ``frame`` picks one frame
    (0-based) of a picture of several; ``all_frames`` reads every frame (into
    ``Picture.frames``), else the first is read, with a note."""

    auto_orient: bool = True
    frame: int | None = None
    all_frames: bool = False


def read_image(source, max_pixels: int | None = DEFAULT_MAX_PIXELS, integers: bool = False,
               on_header=None, reading: ReadSpec = ReadSpec()) -> Picture:
    """Read an image or ``.npy`` from a path, ``"-"`` (stdin), bytes or a binary file.

    ``max_pixels`` bounds ``H x W`` of images and arrays alike (None: no bound).
    ``integers``: 8- and 16-bit images keep their uint8/uint16 pixels instead
    of a float32 copy (``.npy`` and float images are float32 either way).
    ``on_header(height, width, bands)``, if given, is called for an image
    Pillow reads once its header is read and checked, before its pixels are
    decoded (``bands``: the file's, before any change of mode).
    ``reading``: a :class:`ReadSpec`.
    """
    with open_input(source, max_pixels, integers, on_header, reading) as got:
        return got.picture() if isinstance(got, NpyInput) else got


def _pillow_picture(stream, head: bytes, name: str, opened: bool, max_pixels, integers: bool = False,
                    on_header=None, reading: ReadSpec = ReadSpec()) -> Picture:
    """A picture Pillow reads, from ``stream`` whose first bytes ``head`` were read already."""
    if opened and _is_regular(stream):  # a file: Pillow reads it a block at a time, no copy in memory
        stream.seek(0)
        fp = stream
    else:  # a pipe, a device or a caller's stream: Pillow needs one it can seek in
        fp = _read_bounded(stream, head, name, max_pixels)
    return read_pillow(fp, name, max_pixels, integers, on_header, reading.auto_orient, reading.frame,
                       reading.all_frames)


def _is_regular(stream) -> bool:
    """Is ``stream`` a file in memory or a regular file on disk (a known,
    finite size), not a pipe, FIFO, socket or device?"""
    return isinstance(stream, io.BytesIO) or _stored_bytes(stream) is not None


#: A picture from a pipe may take this many bytes for each pixel the limit
#: allows (16-bit RGBA stored uncompressed takes 8), plus
#: :data:`STREAM_SLACK_BYTES` for its headers and metadata (ICC profile, EXIF).
STREAM_BYTES_PER_PIXEL = 8

STREAM_SLACK_BYTES = 16 << 20

#: Bytes read from a pipe at a time (between reads, Ctrl-C and SIGTERM are handled).
READ_CHUNK = 1 << 20


def stream_limit(max_pixels: int | None) -> int | None:
    """The most bytes a picture read from a pipe may take under ``max_pixels``."""
    return None if max_pixels is None else max_pixels * STREAM_BYTES_PER_PIXEL + STREAM_SLACK_BYTES


#: Bytes of a stream after which its header is looked for, to know the
#: picture's size before the rest is read (an ICC profile or EXIF block may
#: come before the size).
_PEEK_AT = (READ_CHUNK, 16 * READ_CHUNK)


def _read_bounded(stream, head: bytes, name: str, max_pixels: int | None) -> io.BytesIO:
    """The rest of ``stream`` after ``head``, in memory, a chunk at a time;
    refused once it is longer than any picture within ``max_pixels`` can be,
    or, once its header is read, than the picture it declares (a picture
    over ``max_pixels`` is refused then)."""
    limit = stream_limit(max_pixels)
    declared = None
    peeks = list(_PEEK_AT) if max_pixels is not None else []
    buf = io.BytesIO()
    buf.write(head)
    read1 = getattr(stream, "read1", None) or stream.read  # one read at a time: none waits once bytes are there
    while True:
        wait_readable(stream)
        chunk = read1(READ_CHUNK)
        if not chunk:
            break
        buf.write(chunk)
        if peeks and buf.tell() >= peeks[0]:
            while peeks and buf.tell() >= peeks[0]:
                peeks.pop(0)
            found = declared_size(buf.getvalue())
            if found is not None:
                peeks = []
                size, single = found
                if size[0] * size[1] > max_pixels:
                    raise ImageReadError(bomb_message(name, size, max_pixels))
                if single:  # (more frames may follow in other formats: the pixel limit bounds them)
                    declared = size
                    limit = min(limit, 2 * size[0] * size[1] * STREAM_BYTES_PER_PIXEL + STREAM_SLACK_BYTES)
        if limit is not None and buf.tell() > limit:
            what = (f"its {declared[0]}x{declared[1]} image" if declared
                    else f"an image of up to {max_pixels:,} pixels")
            raise ImageReadError(f"{name}: stopped reading after {limit:,} bytes, more than {what} takes"
                                 + ("" if declared else " (raise the limit with --max-pixels)"))
    buf.seek(0)
    return buf


#: Bytes read to recognise an input (Pillow's plugins judge the first 16;
#: a TGA header is 18).
SNIFF_BYTES = 32

#: The Pillow module of each format of :data:`~kernelcli.io.decode.RASTER_FORMATS` but PNG and
#: JPEG (recognised without Pillow).
_RASTER_PLUGINS = {"TIFF": "TiffImagePlugin", "BMP": "BmpImagePlugin", "DIB": "BmpImagePlugin",
                   "WEBP": "WebPImagePlugin", "GIF": "GifImagePlugin", "PPM": "PpmImagePlugin",
                   "TGA": "TgaImagePlugin", "ICO": "IcoImagePlugin", "PCX": "PcxImagePlugin",
                   "SGI": "SgiImagePlugin", "QOI": "QoiImagePlugin", "JPEG2000": "Jpeg2KImagePlugin",
                   "AVIF": "AvifImagePlugin"}

#: Documents that are programs for an interpreter, refused by name.
_DOCUMENTS = ((b"%!PS", "PostScript/EPS"), (b"\xc5\xd0\xd3\xc6", "EPS"), (b"%PDF", "PDF"))


def sniff(head: bytes, name: str) -> str:
    """``"NPY"`` or ``"IMAGE"`` for an input whose first bytes are ``head``
    (:data:`SNIFF_BYTES` of them, fewer for a shorter input), judged before
    anything more is read; anything else is refused at once."""
    if head.startswith(NPY_MAGIC):
        return "NPY"
    if head.startswith(PNG_MAGIC) or head.startswith(JPEG_MAGIC):
        return "IMAGE"
    for magic, kind in _DOCUMENTS:
        if head.lstrip(b"\r\n\t ").startswith(magic):
            raise ImageReadError(
                f"{name}: a {kind} document, not a raster image; kernelcli does not run PostScript "
                "or PDF interpreters: convert it to PNG or TIFF first"
            )
    if any(_accepts(fmt, head) for fmt in RASTER_FORMATS if fmt in _RASTER_PLUGINS):
        return "IMAGE"
    from ._extra import sniff_extra

    if sniff_extra(head):  # HEIC, JPEG XL, OpenEXR: read through the optional extra
        return "IMAGE"
    raise ImageReadError(f"{name}: not a recognised image or .npy file")


def _accepts(fmt: str, head: bytes) -> bool:
    """Does the Pillow plugin of ``fmt`` take a file starting with ``head``?"""
    import importlib

    from PIL import Image

    if fmt == "TGA":  # no signature: the fields Pillow's reader checks first
        return len(head) >= 17 and head[1] in (0, 1) and head[2] in (1, 2, 3, 9, 10, 11) \
            and head[16] in (1, 8, 15, 16, 24, 32)
    try:
        importlib.import_module(f"PIL.{_RASTER_PLUGINS[fmt]}")
    except ImportError:  # Pillow built without it
        return False
    accept = Image.OPEN.get(fmt, (None, None))[1]
    try:
        return bool(accept and accept(head[:16]))
    except Exception:
        return False


@dataclass
class NpyInput:
    """A ``.npy`` input whose header is read and checked, its stream at the
    first data byte: for a stage that reads it a band of rows at a time."""

    name: str
    stream: object
    shape: tuple
    fortran: bool
    dtype: np.dtype

    def picture(self) -> Picture:
        """The rest, read whole, as :func:`read_image` gives it."""
        return npy_picture(self.stream, self.name, self.shape, self.fortran, self.dtype)


@contextlib.contextmanager
def open_input(source, max_pixels: int | None = DEFAULT_MAX_PIXELS, integers: bool = False, on_header=None,
               reading: ReadSpec = ReadSpec()):
    """Open an input (as :func:`read_image` takes it) for a reader that may
    go through a ``.npy`` a band at a time: yields an :class:`NpyInput` for
    a ``.npy`` (its header checked), else the :class:`Picture`, read whole.
    A file opened here is closed afterwards."""
    name, stream, closer = _open_source(source)
    try:
        try:
            head = _read_exactly(stream, SNIFF_BYTES)
            if not head:
                raise ImageReadError(f"{name}: empty input")
            if sniff(head, name) == "NPY":
                stored = _stored_bytes(stream)
                rest = _Prefixed(head, stream)
                got = NpyInput(name, rest, *npy_header_checked(rest, name, max_pixels, stored=stored))
            else:
                got = _pillow_picture(stream, head, name, closer, max_pixels, integers, on_header, reading)
        except OSError as e:
            raise read_error(name, e) from None
        yield got  # (what the caller does with it raises its own errors: a closed pipe it writes to...)
    finally:
        if closer:
            stream.close()


def _open_source(source):
    """``(name, binary stream, whether we opened it)`` for any kind of source."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>", io.BytesIO(source), True
    if hasattr(source, "read"):
        return getattr(source, "name", "<stream>"), source, False
    if str(source) == "-":
        stdin = sys.stdin
        if stdin is None:  # (Python's, when the command started with descriptor 0 closed)
            raise UsageError("no input: stdin is closed; give an INPUT file or pipe data in")
        if stdin.isatty():
            raise UsageError("no input: stdin is a terminal; give an INPUT file or pipe data in")
        return "<stdin>", stdin.buffer, False
    path = Path(source)
    if path.is_dir():
        raise ImageReadError(f"{path}: is a folder, not an image")
    try:
        return str(path), open(path, "rb"), True
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except OSError as e:
        raise ImageReadError(f"{path}: cannot read: {e.strerror or e}") from None


def _read_exactly(stream, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        chunk = stream.read(n - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


class _Prefixed:
    """A read-only stream that first gives back bytes already consumed."""

    def __init__(self, prefix: bytes, stream):
        self.prefix, self.stream = prefix, stream

    def tell(self) -> int:
        return self.stream.tell() - len(self.prefix)

    def fileno(self) -> int:
        """The stream's descriptor, to wait on once the bytes given back are used up."""
        if self.prefix:
            raise io.UnsupportedOperation("bytes are waiting")
        return self.stream.fileno()

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            data, self.prefix = self.prefix + self.stream.read(), b""
            return data
        head, self.prefix = self.prefix[:n], self.prefix[n:]
        return head + (_read_exactly(self.stream, n - len(head)) if n > len(head) else b"")

    def readinto(self, view) -> int:
        return self._readinto(view, "readinto")

    def readinto1(self, view) -> int:
        """As ``readinto``, with at most one read of the stream (which does not
        wait once :func:`~kernelcli.stopping.wait_readable` has returned)."""
        return self._readinto(view, "readinto1")

    def _readinto(self, view, how: str) -> int:
        if not self.prefix:
            readinto = getattr(self.stream, how, None) or getattr(self.stream, "readinto", None)
            if readinto is not None:
                return readinto(view)
        data = self.read(len(view))
        view[:len(data)] = data
        return len(data)


def _stored_bytes(stream) -> int | None:
    """The bytes a regular file holds, else None (a pipe, a socket, bytes)."""
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def band_kind(path) -> str | None:
    """``"npy"``, ``"tiff"``, ``"png"`` or ``"jpeg"`` for a regular file that starts like one
    (judged by content), ``"zarr"`` for a Zarr store (a folder), else None:
    the inputs a run in bands reads. (Like :func:`is_npy`, nothing but a
    regular file is opened.)"""
    from .zarr_store import is_zarr_store

    if is_zarr_store(path):
        return "zarr"
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        with open(path, "rb") as f:
            head = f.read(len(PNG_MAGIC))
    except OSError:
        return None
    if head.startswith(NPY_MAGIC):
        return "npy"
    if head == PNG_MAGIC:
        return "png"
    if head.startswith(JPEG_MAGIC):
        return "jpeg"
    return "tiff" if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+") else None


def png_size(path) -> tuple[int, int]:
    """``(width, height)`` from a PNG file's IHDR chunk (its first 24 bytes);
    ``(0, 0)`` when they are not there (the reader will say what is wrong)."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError:
        return 0, 0
    if not head.startswith(PNG_MAGIC) or head[12:16] != b"IHDR":
        return 0, 0
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def is_npy(path) -> bool:
    """True for a regular file that starts like a ``.npy`` (judged by content).
    Anything else is not opened: a FIFO or a pipe (``/dev/fd/N``) is read once,
    by the reader, and what was read here would be lost to it."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        with open(path, "rb") as f:
            return f.read(len(NPY_MAGIC)) == NPY_MAGIC
    except OSError:
        return False

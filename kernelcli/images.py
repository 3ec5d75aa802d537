"""Reading and writing images and ``.npy`` arrays.

Inputs are recognised by their bytes, never by their name: ``.npy`` by NumPy's
magic ``\\x93NUMPY``, pictures by Pillow's raster decoders only
(:data:`RASTER_FORMATS`: never EPS, PostScript or PDF). Garbage is refused by
its first bytes; every input is opened and read once (a FIFO or pipe works
like a file), a pipe a chunk at a time within a bound (:func:`stream_limit`).

Pixels become float32 arrays in their own value range (8-bit: 0-255, 16-bit:
0-65535, float TIFF: as stored), ``H x W`` for one band and ``H x W x C``
otherwise, and the facts needed to write the same kind of picture back (mode,
bit depth, alpha, ICC profile, DPI, EXIF) travel with them in a :class:`Picture`.

Outputs are written to a temporary file beside the target and renamed into
place, so an existing file is only ever replaced by a complete new one.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import stat
import sys
import tempfile
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .errors import ImageReadError, ImageWriteError, UsageError

# json and base64 serve only kernelcli's .npy metadata: they are imported
# there, not by every command that reads or writes a picture.

NPY_MAGIC = b"\x93NUMPY"
#: Marks kernelcli's metadata after the array data of a .npy (np.load ignores it).
META_MAGIC = b"\nKERNELCLI-META "

#: Output formats by file extension.
EXTENSIONS = {
    ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF",
    ".bmp": "BMP", ".webp": "WEBP", ".npy": "NPY",
}
#: Names accepted by ``--format``.
FORMAT_NAMES = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "tif": "TIFF", "tiff": "TIFF",
                "bmp": "BMP", "webp": "WEBP", "npy": "NPY"}
#: The modes each output format can store (others are converted, with a note).
_FORMAT_MODES = {
    "PNG": ("L", "LA", "RGB", "RGBA", "I;16"),
    "TIFF": ("L", "LA", "RGB", "RGBA", "I;16", "F"),
    "JPEG": ("L", "RGB"),
    "BMP": ("L", "RGB"),
    "WEBP": ("L", "RGB", "RGBA"),
}
SCALINGS = ("clip", "abs", "stretch")
#: Pillow's own default limit, made explicit (raise it with --max-pixels).
DEFAULT_MAX_PIXELS = 178_956_970

_MODE_FOR_BANDS = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
_MODE_BANDS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "I;16": 1, "F": 1}
_RANGE = {"L": 255.0, "LA": 255.0, "RGB": 255.0, "RGBA": 255.0, "I;16": 65535.0}


#: The order of kernelcli's metadata keys in a ``.npy``.
_META_ORDER = {"mode": 0, "range_max": 1, "labels": 2, "icc_profile": 3, "dpi": 4, "exif": 5}


@dataclass
class Picture:
    """Pixels plus what is needed to write the same kind of picture back.

    pixels: float32, ``H x W`` (one band) or ``H x W x C``; uint8 or uint16
    only when read with ``read_image(..., integers=True)``, for the banded
    path (:func:`kernelcli.tiled.apply_in_bands`), which makes float32 bands.
    mode: the Pillow mode to write (``L``, ``LA``, ``RGB``, ``RGBA``, ``I;16``,
    ``F``), or ``None`` for a bare array (read from ``.npy``).
    """

    pixels: np.ndarray
    mode: str | None = None
    source_format: str = "NPY"
    info: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    #: The value range's top when no mode says it (a stack of feature maps
    #: computed from a 16-bit image keeps 65535).
    range_max: float | None = None
    #: Names of the channels (the kernels of a filter bank), for montages.
    labels: list | None = None

    @property
    def has_alpha(self) -> bool:
        return self.mode in ("LA", "RGBA")

    @property
    def max_value(self) -> float:
        """The top of the value range (255 for 8-bit, 65535 for 16-bit)."""
        if self.mode in _RANGE:
            return _RANGE[self.mode]
        return self.range_max or 255.0

    def with_pixels(self, pixels: np.ndarray, **changes) -> "Picture":
        return replace(self, pixels=pixels, notes=list(self.notes), **changes)

    # -- the metadata that travels with a .npy stream between kernelcli commands

    def metadata(self) -> dict:
        import base64

        meta = {}
        if self.mode:
            meta["mode"] = self.mode
        if self.range_max:
            meta["range_max"] = self.range_max
        if self.labels:
            meta["labels"] = [str(x) for x in self.labels]
        if self.info.get("dpi") and dpi_problem(self.info["dpi"]) is None:
            meta["dpi"] = [float(v) for v in self.info["dpi"]]
        room = META_LIMIT - 4096 - sum(len(str(v)) for v in meta.values())  # what a reader takes back
        for key in ("exif", "icc_profile"):
            if self.info.get(key) and 4 * (len(self.info[key]) + 2) // 3 <= room:
                meta[key] = base64.b64encode(self.info[key]).decode("ascii")
                room -= len(meta[key])
        return dict(sorted(meta.items(), key=lambda item: _META_ORDER.get(item[0], 9)))


# --------------------------------------------------------------------------
# metadata: an ICC profile, the resolution (dpi) and EXIF travel with the
# pixels when they are usable, and are dropped with a note when they are not:
# metadata never costs the pixels.

#: dpi each format can store, as (lowest, highest): JPEG's JFIF holds whole
#: numbers up to 65535; PNG's pHYs and BMP hold whole pixels per metre up to
#: 2**31 - 1; TIFF's rationals go through libtiff as 32-bit floats (4e9
#: came back as NaN). WebP keeps none (nothing is said about it).
_DPI_RANGE = {
    "JPEG": (0.5, 65535.49),
    "PNG": (0.0127, (2**31 - 1.5) * 0.0254),
    "BMP": (0.0127, (2**31 - 1.5) * 0.0254),
    "TIFF": (1e-6, 2**31 - 1.0),
}
#: Largest EXIF block (with its "Exif\0\0" header) a JPEG APP1 segment holds.
_JPEG_MAX_EXIF = 65533
#: Largest ICC profile a JPEG holds: 255 APP2 segments of 65519 bytes.
_JPEG_MAX_ICC = 255 * 65519


def dpi_problem(dpi, fmt: str | None = None) -> str | None:
    """Why ``dpi`` cannot be stored (in ``fmt``, if given), or None when it can."""
    import numbers

    if (not isinstance(dpi, (tuple, list)) or len(dpi) != 2
            or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in dpi)):
        return "not a pair of numbers"  # (Pillow gives TIFF's as IFDRational, a numbers.Real)
    try:
        dpi = [float(v) for v in dpi]
    except (TypeError, ValueError, OverflowError, ZeroDivisionError):
        return "not a pair of numbers"
    if not all(math.isfinite(v) and v > 0 for v in dpi):
        return "not positive and finite"
    if fmt in _DPI_RANGE:
        lo, hi = _DPI_RANGE[fmt]
        if not all(lo <= v <= hi for v in dpi):
            return f"{fmt} stores {lo:g} to {hi:.10g}"
    return None


def icc_problem(profile) -> str | None:
    """Why ``profile`` is not an ICC profile (its 128-byte header: the size, then
    the signature ``acsp`` at byte 36), or None when it looks like one."""
    if not isinstance(profile, (bytes, bytearray)):
        return "not bytes"
    if len(profile) < 128 or profile[36:40] != b"acsp":
        return "not an ICC profile"
    if int.from_bytes(profile[:4], "big") > len(profile):
        return "truncated"
    return None


def _show_dpi(dpi) -> str:
    try:
        return " x ".join(f"{float(v):g}" for v in dpi)
    except (TypeError, ValueError):
        return repr(dpi)[:40]


def checked_info(info: dict, name: str, notes: list) -> dict:
    """``info`` without the metadata no format can use (dpi that is not two
    positive finite numbers, bytes that are not an ICC profile, EXIF that is
    not bytes), with a note naming ``name`` and what was dropped."""
    kept = {}
    for key, value in info.items():
        if key == "dpi":
            why = dpi_problem(value)
            what = f"dpi {_show_dpi(value)}"
        elif key == "icc_profile":
            why = icc_problem(value)
            what = f"ICC profile ({len(value):,} bytes)" if isinstance(value, (bytes, bytearray)) else "ICC profile"
        elif key == "exif":
            why = None if isinstance(value, (bytes, bytearray)) else "not bytes"
            what = "EXIF"
        else:
            kept[key] = value
            continue
        if why is None:
            kept[key] = tuple(float(v) for v in value) if key == "dpi" else value
        else:
            notes.append(f"{name}: dropped its {what}: {why}")
    return kept


def fit_info(info: dict, fmt: str, name: str, notes: list) -> dict:
    """The metadata in ``info`` that ``fmt`` can store; a note naming the
    output ``name`` for each thing dropped."""
    kept = checked_info(info, name, notes)
    dpi = kept.get("dpi")
    if dpi is not None and dpi_problem(dpi, fmt):
        del kept["dpi"]
        notes.append(f"{name}: dropped the dpi {_show_dpi(dpi)}: {dpi_problem(dpi, fmt)}")
    exif = kept.get("exif")
    if exif is not None:
        if fmt == "JPEG" and len(exif) > _JPEG_MAX_EXIF:
            del kept["exif"]
            notes.append(f"{name}: dropped the EXIF ({len(exif):,} bytes): JPEG holds at most {_JPEG_MAX_EXIF:,}")
        elif fmt == "TIFF" and not _exif_parses(exif):
            del kept["exif"]
            notes.append(f"{name}: dropped the EXIF ({len(exif):,} bytes): TIFF stores EXIF as tags, "
                         "and these bytes are not readable as tags")
    icc = kept.get("icc_profile")
    if icc is not None and fmt == "JPEG" and len(icc) > _JPEG_MAX_ICC:
        del kept["icc_profile"]
        notes.append(f"{name}: dropped the ICC profile ({len(icc):,} bytes): JPEG holds at most {_JPEG_MAX_ICC:,}")
    elif icc is not None and fmt == "PNG" and len(icc) > _png_max_icc():
        del kept["icc_profile"]
        notes.append(f"{name}: dropped the ICC profile ({len(icc):,} bytes): Pillow opens no PNG "
                     f"whose profile passes {_png_max_icc():,} bytes")
    return kept


def _png_max_icc() -> int:
    """The largest ICC profile Pillow opens in a PNG (it refuses the whole
    file beyond: "Decompressed data too large")."""
    from PIL import PngImagePlugin

    return PngImagePlugin.MAX_TEXT_CHUNK


def _exif_parses(exif: bytes) -> bool:
    """Can Pillow read ``exif`` as tags (as its TIFF writer must)?"""
    from PIL import Image

    try:
        Image.Exif().load(bytes(exif))
        return True
    except Exception:  # Pillow raises SyntaxError, struct.error, ValueError... on scrambled EXIF
        return False


# --------------------------------------------------------------------------
# reading


def read_image(source, max_pixels: int | None = DEFAULT_MAX_PIXELS, integers: bool = False,
               on_header=None) -> Picture:
    """Read an image or ``.npy`` from a path, ``"-"`` (stdin), bytes or a binary file.

    ``max_pixels`` bounds ``H x W`` of images and arrays alike (None: no bound).
    ``integers``: 8- and 16-bit images keep their uint8/uint16 pixels instead
    of a float32 copy (``.npy`` and float images are float32 either way).
    ``on_header(height, width, bands)``, if given, is called for an image
    Pillow reads once its header is read and checked, before its pixels are
    decoded (``bands``: the file's, before any change of mode).
    """
    with open_input(source, max_pixels, integers, on_header) as got:
        return got.picture() if isinstance(got, NpyInput) else got


def _pillow_picture(stream, head: bytes, name: str, opened: bool, max_pixels, integers: bool = False,
                    on_header=None) -> Picture:
    """A picture Pillow reads, from ``stream`` whose first bytes ``head`` were read already."""
    if opened and _is_regular(stream):  # a file: Pillow reads it a block at a time, no copy in memory
        stream.seek(0)
        fp = stream
    else:  # a pipe, a device or a caller's stream: Pillow needs one it can seek in
        fp = _read_bounded(stream, head, name, max_pixels)
    return _read_pillow(fp, name, max_pixels, integers, on_header)


def _is_regular(stream) -> bool:
    """Is ``stream`` a file in memory or a regular file on disk (a known,
    finite size), not a pipe, FIFO, socket or device?"""
    if isinstance(stream, io.BytesIO):
        return True
    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False


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
    while True:
        chunk = stream.read(READ_CHUNK)
        if not chunk:
            break
        buf.write(chunk)
        if peeks and buf.tell() >= peeks[0]:
            while peeks and buf.tell() >= peeks[0]:
                peeks.pop(0)
            found = _declared_size(buf.getvalue())
            if found is not None:
                peeks = []
                size, single = found
                if size[0] * size[1] > max_pixels:
                    raise ImageReadError(_bomb_message(name, size, max_pixels))
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


#: Formats that hold one picture, whose header tells all there is to read
#: (an animated PNG says so in its header too).
_ONE_PICTURE = frozenset({"PNG", "JPEG", "BMP", "DIB", "PPM", "TGA", "PCX", "SGI", "QOI"})


def _declared_size(data: bytes) -> tuple[tuple[int, int], bool] | None:
    """``((width, height), one picture only)`` from the header at the start
    of ``data`` (the first part of a picture), or None when Pillow cannot
    tell yet."""
    from PIL import Image

    old_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # the size is what is asked, even a bomb's
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = _open_pillow(io.BytesIO(data))
            single = img.format in _ONE_PICTURE and not getattr(img, "is_animated", False)
            return tuple(img.size), single
    except Exception:  # not enough of it yet, or not a picture: the reader will say
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit


# --------------------------------------------------------------------------
# recognising an input by its first bytes

#: Bytes read to recognise an input (Pillow's plugins judge the first 16;
#: a TGA header is 18).
SNIFF_BYTES = 32

#: The Pillow decoders kernelcli reads with: raster formats only, by name
#: (``Image.open(..., formats=RASTER_FORMATS)``). Pillow would otherwise hand
#: an EPS file to Ghostscript, a PostScript interpreter that runs whatever
#: program the file holds (an endless loop, for one).
RASTER_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "DIB", "WEBP", "GIF", "PPM", "TGA", "ICO", "PCX",
                  "SGI", "QOI", "JPEG2000")
#: The Pillow module of each format of :data:`RASTER_FORMATS` but PNG and
#: JPEG (recognised without Pillow).
_RASTER_PLUGINS = {"TIFF": "TiffImagePlugin", "BMP": "BmpImagePlugin", "DIB": "BmpImagePlugin",
                   "WEBP": "WebPImagePlugin", "GIF": "GifImagePlugin", "PPM": "PpmImagePlugin",
                   "TGA": "TgaImagePlugin", "ICO": "IcoImagePlugin", "PCX": "PcxImagePlugin",
                   "SGI": "SgiImagePlugin", "QOI": "QoiImagePlugin", "JPEG2000": "Jpeg2KImagePlugin"}
#: Documents that are programs for an interpreter, refused by name.
_DOCUMENTS = ((b"%!PS", "PostScript/EPS"), (b"\xc5\xd0\xd3\xc6", "EPS"), (b"%PDF", "PDF"))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"


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
def open_input(source, max_pixels: int | None = DEFAULT_MAX_PIXELS, integers: bool = False, on_header=None):
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
                got = _pillow_picture(stream, head, name, closer, max_pixels, integers, on_header)
        except OSError as e:
            raise _read_error(name, e) from None
        yield got  # (what the caller does with it raises its own errors: a closed pipe it writes to...)
    finally:
        if closer:
            stream.close()


def _read_error(name: str, e: OSError) -> ImageReadError:
    return ImageReadError(f"{name}: cannot read: {e.strerror or e}")


#: The most of kernelcli's metadata read after a ``.npy``'s data (an ICC
#: profile of 16 MB, as much as a JPEG holds, takes 22 MB in base64); what
#: would not fit is not written (:meth:`Picture.metadata`).
META_LIMIT = 64 * 2**20


def read_rest(stream, name: str) -> bytes:
    """What follows a ``.npy``'s data, where kernelcli puts its metadata (:data:`META_LIMIT` at most)."""
    try:
        return stream.read(META_LIMIT)
    except OSError as e:
        raise _read_error(name, e) from None


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

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            data, self.prefix = self.prefix + self.stream.read(), b""
            return data
        head, self.prefix = self.prefix[:n], self.prefix[n:]
        return head + (_read_exactly(self.stream, n - len(head)) if n > len(head) else b"")

    def readinto(self, view) -> int:
        if not self.prefix:
            readinto = getattr(self.stream, "readinto", None)
            if readinto is not None:
                return readinto(view)
        data = self.read(len(view))
        view[:len(data)] = data
        return len(data)


def read_npy_header(f) -> tuple:
    """``(shape, fortran_order, dtype)`` from a ``.npy`` stream positioned at its
    start, leaving it at the first data byte; nothing is allocated or unpickled."""
    from numpy.lib import format as npformat

    version = npformat.read_magic(f)
    if version == (1, 0):
        return npformat.read_array_header_1_0(f)
    if version in ((2, 0), (3, 0)):
        return npformat.read_array_header_2_0(f)
    raise ValueError(f"unsupported .npy version {version}")


def check_npy_header(shape: tuple, dtype: np.dtype, name: str, max_pixels: int | None = None) -> None:
    """Refuse, naming the file, a ``.npy`` header that is not a usable image."""
    if dtype.hasobject:
        raise ImageReadError(f"{name}: .npy holds Python objects; refusing to unpickle it")
    if dtype.kind not in "biuf":
        raise ImageReadError(f"{name}: .npy holds {dtype} values; need a numeric array")
    if len(shape) not in (2, 3):
        raise ImageReadError(f"{name}: .npy array has shape {shape}; need H x W or H x W x C")
    if min(shape) < 1:
        raise ImageReadError(f"{name}: .npy array is empty (shape {shape})")
    if max_pixels is not None and shape[0] * shape[1] > max_pixels:
        raise ImageReadError(
            f"{name}: .npy array of {shape[0]}x{shape[1]} = {shape[0] * shape[1]:,} pixels is over "
            f"the limit of {max_pixels:,}; raise it with --max-pixels"
        )
    if len(shape) == 3 and shape[2] > 4096:
        raise ImageReadError(f"{name}: .npy array has {shape[2]} channels; at most 4096 are supported")


def _stored_bytes(stream) -> int | None:
    """The bytes a regular file holds, else None (a pipe, a socket, bytes)."""
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def npy_header_checked(stream, name: str, max_pixels: int | None, stored: int | None = None) -> tuple:
    """``(shape, fortran_order, dtype)`` of the ``.npy`` in ``stream``, at its
    start; the stream is left at the first data byte.

    The header is parsed by NumPy's format module (a literal, never pickled);
    object dtypes and arrays that are not images are refused here, before any
    data is read.

    ``stored``: the size of the file the stream reads, if it is one. A
    ``.npy`` file holds its pixels uncompressed, so its size is its claim:
    the pixel limit (meant for formats where a small file can claim a huge
    picture) does not apply to it; a file shorter than its header claims is
    refused as truncated instead. A stream is held to the limit.
    """
    try:
        shape, fortran, dtype = read_npy_header(stream)
    except ValueError as e:
        if "pickle" in str(e).lower() or "object" in str(e).lower():
            raise ImageReadError(f"{name}: .npy holds Python objects; refusing to unpickle it") from None
        raise ImageReadError(f"{name}: not a readable .npy array: {e}") from None
    except Exception as e:  # truncated or scrambled header
        raise ImageReadError(f"{name}: corrupt .npy header: {e}") from None
    if stored is not None:
        data = stream.tell() if hasattr(stream, "tell") else None
        need = math.prod(shape) * dtype.itemsize
        if data is not None and stored - data < need:
            raise ImageReadError(f"{name}: truncated .npy: {max(stored - data, 0):,} of {need:,} data bytes")
        max_pixels = None
    check_npy_header(shape, dtype, name, max_pixels)
    return shape, fortran, dtype


def npy_picture(stream, name: str, shape: tuple, fortran: bool, dtype: np.dtype) -> Picture:
    """The rest of a ``.npy`` after its header (:func:`npy_header_checked`):
    the array, straight from the stream into its final buffer, and kernelcli's
    metadata after it."""
    count = math.prod(shape)  # Python integers: a hostile header cannot overflow this
    from ._memory import ensure_memory

    ensure_memory(count * max(dtype.itemsize, 4), f"{name}: a {'x'.join(map(str, shape))} array")
    try:
        raw = np.empty(count * dtype.itemsize, dtype=np.uint8)
    except (ValueError, MemoryError):
        raise ImageReadError(f"{name}: .npy claims a {shape} array, too large to hold") from None
    read_into(stream, memoryview(raw), name)
    arr = raw.view(dtype).reshape(shape, order="F" if fortran else "C")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    picture = _picture_from_npy(arr, read_rest(stream, name), name)
    picture.notes.extend(nonfinite_note(arr, name))
    return picture


def read_into(stream, view: memoryview, name: str, total: int | None = None, done: int = 0) -> None:
    """Fill ``view`` from ``stream``; a truncated ``.npy`` when the data ends
    first (``total``, ``done``: the whole data's size and the bytes read
    before ``view``, for the message)."""
    got = 0
    readinto = getattr(stream, "readinto", None)
    while got < len(view):
        try:
            if readinto is not None:
                n = readinto(view[got:])
            else:
                chunk = stream.read(len(view) - got)
                n = len(chunk)
                view[got:got + n] = chunk
        except OSError as e:
            raise _read_error(name, e) from None
        if not n:
            total = len(view) if total is None else total
            raise ImageReadError(f"{name}: truncated .npy: {done + got:,} of {total:,} data bytes")
        got += n


def nonfinite_note(arr: np.ndarray, name: str, bad: int | None = None) -> list[str]:
    """A note when float data holds NaN or infinities (they propagate through
    filters); ``bad``: their count when already known."""
    if bad is None and arr.dtype.kind == "f":
        bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
    if bad:
        return [f"{name}: holds {bad:,} NaN or infinite values; they propagate through the "
                "filter (max pooling keeps NaN) and become 0 in pictures"]
    return []


def npy_metadata(shape: tuple, data: bytes, name: str) -> Picture:
    """What kernelcli's metadata after a ``.npy`` of ``shape`` says (``data``:
    the bytes after the array), as a Picture whose pixels are a 1 x 1
    placeholder with the array's channels: for readers that go a band at a time."""
    return _picture_from_npy(np.zeros((1, 1) + tuple(shape[2:]), dtype=np.float32), data, name)


def _picture_from_npy(arr: np.ndarray, data: bytes, name: str) -> Picture:
    """A bare array, or the picture a kernelcli command wrote (``data``: what
    follows the array, where kernelcli puts its metadata)."""
    at = data.find(META_MAGIC)
    if at < 0:
        return Picture(arr, None, "NPY")
    import base64
    import json

    try:
        meta = json.loads(data[at + len(META_MAGIC):].decode("utf-8"))
        if not isinstance(meta, dict):
            raise ValueError("not an object")
    except (ValueError, UnicodeDecodeError, RecursionError):
        return Picture(arr, None, "NPY", notes=[f"{name}: ignored unreadable kernelcli metadata"])
    bands = 1 if arr.ndim == 2 else arr.shape[2]
    mode = meta.get("mode")
    if not isinstance(mode, str) or mode not in _MODE_BANDS or _MODE_BANDS[mode] != bands:
        mode = None
    info = {}
    try:
        if isinstance(meta.get("icc_profile"), str):
            info["icc_profile"] = base64.b64decode(meta["icc_profile"], validate=True)
        if isinstance(meta.get("exif"), str):
            info["exif"] = base64.b64decode(meta["exif"], validate=True)
    except ValueError:
        info = {}
    if "dpi" in meta:
        info["dpi"] = meta["dpi"]
    notes: list[str] = []
    info = checked_info(info, name, notes)
    top = meta.get("range_max")
    top = float(top) if isinstance(top, (int, float)) and math.isfinite(top) and top > 0 else None
    labels = meta.get("labels")
    labels = [str(x) for x in labels] if isinstance(labels, list) and len(labels) == bands else None
    return Picture(arr, mode, "NPY", info, notes, top, labels)


#: Bytes of the file handed to Pillow's decoder at a time (Pillow's own is
#: 64 KiB). The decoder lets go of the GIL while it decodes a block, and takes
#: it back for the next: with another thread busy in Python (Numba loading
#: while a large image decodes: :func:`kernelcli.tiled.load_numba_early`),
#: each of those takes up to the interpreter's switch interval (5 ms).
#: Measured 2026-11-23 on a 48 MP JPEG with Numba loading beside it: decoding
#: took 0.75-0.81 s in 64 KiB blocks, 0.51-0.54 s in 1 MiB ones (0.40-0.42 s
#: alone, either way).
DECODE_BLOCK = 1 << 20


def _read_pillow(fp, name: str, max_pixels: int | None, integers: bool = False, on_header=None) -> Picture:
    """The picture in ``fp`` (a seekable binary file at its start), decoded
    completely: nothing is read from ``fp`` afterwards. (``on_header``: as
    :func:`read_image` takes it.)"""
    from PIL import Image, UnidentifiedImageError

    # Pillow's own bomb check is replaced by ours, which runs on the header's
    # size before any pixel is decoded and names the size in its message.
    old_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # damaged files: the error says it, not warnings
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = _open_pillow(fp)
            _check_pixels(img, name, max_pixels)
            if on_header is not None:
                on_header(img.size[1], img.size[0], len(img.getbands()))
            img.decodermaxblock = DECODE_BLOCK
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageReadError(_bomb_message(name, None, max_pixels)) from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{name}: not a recognised image or .npy file") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageReadError(f"{name}: cannot decode image: {e}") from None
    except ImageReadError:
        raise
    except Exception as e:  # Pillow's decoders raise many kinds on scrambled data
        raise ImageReadError(f"{name}: cannot decode image: {type(e).__name__}: {e}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit
    notes = []
    try:
        frames = getattr(img, "n_frames", 1)
    except Exception as e:  # counting frames reads the rest of the file
        raise ImageReadError(f"{name}: damaged after its first frame ({type(e).__name__}: {e})") from None
    if frames > 1:
        notes.append(f"{name}: has {frames} frames; using the first")
    info = checked_info({k: img.info[k] for k in ("icc_profile", "dpi", "exif") if img.info.get(k)}, name, notes)
    fmt = img.format
    try:
        img.seek(0)
        img.load()  # again if counting frames left it to be decoded anew: fp is not read after this
        img, mode = _normalise_mode(img, name, notes)
        if integers and mode != "F":
            # (_normalise_mode hands back a Pillow image, or an array for some 16-bit modes)
            pixels = np.ascontiguousarray(img) if isinstance(img, np.ndarray) else PillowRows(img)
        else:
            pixels = np.ascontiguousarray(np.asarray(img, dtype=np.float32))
    except ImageReadError:
        raise
    except Exception as e:
        raise ImageReadError(f"{name}: cannot decode image: {type(e).__name__}: {e}") from None
    if mode == "F":
        notes.extend(nonfinite_note(pixels, name))
    return Picture(pixels, mode, fmt or "UNKNOWN", info, notes)


class PillowRows:
    """A decoded Pillow image's pixels as a read-only array of rows, handed out
    a band at a time (``rows[a:b]``: a uint8 or uint16 array), so that no
    full-size NumPy copy of the image is made. ``np.asarray(rows)`` and
    ``rows.astype(...)`` give the whole image."""

    def __init__(self, img):
        self.img = img
        width, height = img.size
        bands = len(img.getbands())
        self.shape = (height, width) if bands == 1 else (height, width, bands)
        self.ndim = len(self.shape)
        self.dtype = np.dtype(np.uint16 if img.mode == "I;16" else np.uint8)

    def __getitem__(self, rows):
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError("PillowRows takes a slice of consecutive rows")
        start, stop, _ = rows.indices(self.shape[0])
        stop = max(start, stop)
        data = _raw_rows(self.img, start, stop)
        return np.frombuffer(data, self.dtype).reshape((stop - start,) + self.shape[1:])

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.img, dtype=dtype)

    def astype(self, dtype):
        return np.asarray(self.img, dtype=dtype)


# Rows go between Pillow images and NumPy through Pillow's "raw" codec, the
# one Image.tobytes and Image.frombytes use, pointed at just those rows: one
# copy, where crop + tobytes and fromarray + paste made three each (Pillow
# keeps RGB as 4 bytes a pixel, so its memory cannot be shared with NumPy).


def _raw_rows(img, start: int, stop: int) -> bytes:
    """Rows ``[start, stop)`` of a Pillow image as packed bytes (``img.mode``'s raw layout)."""
    from PIL import Image

    width = img.size[0]
    if stop <= start:
        return b""
    encoder = Image._getencoder(img.mode, "raw", img.mode)
    encoder.setimage(img.im, (0, start, width, stop))
    chunks = []
    size = (stop - start) * width * _ROW_BYTES.get(img.mode, 4) + 16  # room for all of it in one call
    while True:
        _, status, data = encoder.encode(size)
        chunks.append(data)
        if status:
            break
    if status < 0:
        raise ImageReadError(f"cannot read rows {start}-{stop - 1} of the decoded image (Pillow error {status})")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _put_raw_rows(img, start: int, values: np.ndarray) -> None:
    """Store packed rows (C-contiguous, ``img.mode``'s raw layout) into a Pillow image from row ``start``."""
    from PIL import Image

    decoder = Image._getdecoder(img.mode, "raw", img.mode)
    decoder.setimage(img.im, (0, start, img.size[0], start + values.shape[0]))
    consumed, status = decoder.decode(values.data.cast("B"))
    decoder.cleanup()
    if consumed >= 0 or status != 0:  # the raw decoder says -1 once the region is full
        raise ImageWriteError(f"cannot store rows from {start} in the output image "
                              f"(Pillow status {consumed}, {status})")


_ROW_BYTES = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "I;16": 2, "I;16B": 2}


#: The largest ICC profile read from a PNG.
PNG_READ_ICC = 64 * 2**20


def _open_pillow(fp):
    """``Image.open(fp)``, except that PNG and JPEG go straight to their plugin:
    ``Image.open`` first imports five plugins (about 25 ms of a command)."""
    from PIL import Image

    signature = fp.read(8)
    fp.seek(0)
    if signature.startswith(PNG_MAGIC):
        from PIL import PngImagePlugin

        # Pillow refuses a whole PNG whose ICC profile (read while the file is
        # opened) inflates past MAX_TEXT_CHUNK, 1 MiB; profiles are larger at
        # times (TIFF and JPEG carry them). Still bounded: zlib bombs stop there.
        limit = PngImagePlugin.MAX_TEXT_CHUNK
        PngImagePlugin.MAX_TEXT_CHUNK = max(limit, PNG_READ_ICC)
        try:
            return PngImagePlugin.PngImageFile(fp)
        finally:
            PngImagePlugin.MAX_TEXT_CHUNK = limit
    if signature.startswith(JPEG_MAGIC):
        from PIL import JpegImagePlugin

        return JpegImagePlugin.jpeg_factory(fp)  # JPEG, or MPO (several pictures)
    return Image.open(fp, formats=RASTER_FORMATS)


def _check_pixels(img, name, max_pixels):
    if max_pixels is not None:
        w, h = img.size
        if w * h > max_pixels:
            raise ImageReadError(_bomb_message(name, img.size, max_pixels))


def _bomb_message(name, size, max_pixels) -> str:
    what = f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels" if size else "too many pixels"
    return (f"{name}: image claims {what}, over the limit of {max_pixels:,}; "
            "if you trust the file, raise the limit with --max-pixels")


def _normalise_mode(img, name: str, notes: list):
    """Bring any Pillow mode to one kernelcli computes with; say when it changes."""
    fmt = img.format
    mode = img.mode
    if mode in ("L", "LA", "RGB", "RGBA", "I;16", "F"):
        out = img
    elif mode in ("I;16L", "I;16B", "I;16N"):
        out, mode = np.asarray(img).astype(np.uint16), "I;16"
    elif mode == "I":
        arr = np.asarray(img)
        if arr.min() < 0 or arr.max() > 65535:
            raise ImageReadError(f"{name}: 32-bit integer pixels outside 0..65535 are not supported; convert it to .npy")
        out, mode = arr.astype(np.uint16), "I;16"
    elif mode == "1":
        out, mode = img.convert("L"), "L"
        notes.append(f"{name}: 1-bit image read as 8-bit gray (0 and 255)")
    elif mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in img.info
        mode = "RGBA" if has_alpha else "RGB"
        out = img.convert(mode)
    elif mode in ("La", "RGBa"):
        mode = "LA" if mode == "La" else "RGBA"
        out = img.convert(mode)
    elif mode in ("RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        out, mode = img.convert("RGB"), "RGB"
        if img.mode != "RGBX":
            notes.append(f"{name}: {img.mode} image converted to RGB")
    else:
        raise ImageReadError(f"{name}: unsupported image mode {img.mode!r}")
    return out, mode


# --------------------------------------------------------------------------
# writing


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


def format_for(target, fmt: str | None = None) -> str:
    """The output format: ``fmt`` if given, else from the target's extension."""
    if fmt:
        key = fmt.lower().lstrip(".")
        if key not in FORMAT_NAMES:
            raise UsageError(f"unknown output format {fmt!r}; use one of {', '.join(sorted(FORMAT_NAMES))}")
        return FORMAT_NAMES[key]
    if str(target) == "-":
        return "NPY"
    ext = Path(str(target)).suffix.lower()
    if ext not in EXTENSIONS:
        raise UsageError(
            f"cannot tell the output format from {str(target)!r}; "
            f"use an extension ({', '.join(sorted(EXTENSIONS))}) or --format"
        )
    return EXTENSIONS[ext]


#: zlib level for PNG (--png-level): 1 is the fastest that still compresses;
#: 6 and 9 give files about 10-20% smaller for 2-10 times the time.
PNG_LEVEL = 1


def write_image(target, picture, fmt: str | None = None, scaling: str = "clip",
                offset: float = 0.0, quality: int = 92, png_level: int = PNG_LEVEL) -> list[str]:
    """Write a Picture (or a bare array) to a path, ``"-"`` (stdout) or a binary file.

    Image formats get ``map(values) + offset``, rounded and clipped to the
    output's range, where map is ``clip`` (nothing), ``abs`` or ``stretch``
    (min-max to the full range). ``.npy`` gets the float32 values untouched.
    Returns notes about conversions the format forced (alpha dropped...).
    """
    if not isinstance(picture, Picture):
        picture = Picture(np.asarray(picture, dtype=np.float32), None)
    if scaling not in SCALINGS:
        raise UsageError(f"scaling must be one of {', '.join(SCALINGS)}, got {scaling!r}")
    fmt = format_for(target, fmt)
    notes: list[str] = []
    if fmt == "NPY":
        _deliver(target, npy_chunks(picture), fmt)
    else:
        pixels = to_array(picture, fmt, scaling, offset, notes)
        notes += write_pixels(target, pixels, fmt, picture.info, quality, png_level)
    return notes


def write_pixels(target, pixels, fmt: str, info: dict, quality: int = 92, png_level: int = PNG_LEVEL) -> list[str]:
    """Write pixels already in the format's terms (:func:`to_array`) as an
    image: an array, or for Pillow's formats a :class:`PillowCanvas`.
    Returns notes about metadata the format could not store (dropped)."""
    notes: list[str] = []
    name = _target_name(target)
    info = fit_info(info, fmt, name, notes)
    if fmt == "PNG":
        _deliver(target, _encode_png(np.asarray(pixels), info, png_level), fmt)
        return notes
    if isinstance(pixels, PillowCanvas):
        img = pixels.img
    else:
        from PIL import Image

        # Pillow picks L, LA, RGB, RGBA, I;16 or F from the array's shape and dtype.
        img = Image.fromarray(pixels)
    _deliver(target, lambda f: _encode(img, fmt, info, quality, f, name, notes), fmt)
    return notes


def _target_name(target) -> str:
    if hasattr(target, "write"):
        return str(getattr(target, "name", "<stream>"))
    return "<stdout>" if str(target) == "-" else str(target)


class PillowCanvas:
    """An output Pillow image filled a band of rows at a time
    (``canvas[a:b] = rows``, rows as :func:`to_array` makes them), so that
    the result is not built as a NumPy array first and then copied into Pillow."""

    def __init__(self, shape: tuple, dtype):
        from PIL import Image

        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        mode = Image.fromarray(np.zeros((1, 1) + self.shape[2:], self.dtype)).mode
        # Not filled first (color None): every row is pasted before it is read.
        self.img = Image.new(mode, (self.shape[1], self.shape[0]), None)

    def __setitem__(self, rows: slice, values: np.ndarray) -> None:
        start = rows.indices(self.shape[0])[0]
        _put_raw_rows(self.img, start, np.ascontiguousarray(values, self.dtype))

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.img, dtype=dtype)


def to_array(picture: Picture, fmt: str, scaling: str = "clip", offset: float = 0.0, notes=None) -> np.ndarray:
    """The pixels as the format stores them: uint8 (L, LA, RGB, RGBA), uint16
    (16-bit gray) or float32 (TIFF's F), 2-D for one channel."""
    notes = [] if notes is None else notes
    px = picture.pixels
    bands = 1 if px.ndim == 2 else px.shape[2]
    mode = picture.mode
    if mode is None or _MODE_BANDS[mode] != bands:
        # A bare array: pick the mode from the channel count. A stack of
        # feature maps (labels set) has no alpha: only 1 or 3 maps make a picture.
        usable = (1, 3) if picture.labels else tuple(_MODE_FOR_BANDS)
        if bands not in usable:
            hint = "use kernelcli montage or " if picture.labels else ""
            raise UsageError(f"cannot store {bands} channels in a {fmt} image; {hint}write .npy instead")
        mode = _MODE_FOR_BANDS[bands]
        if bands == 1 and picture.max_value == 65535.0:
            mode = "I;16"
    allowed = _FORMAT_MODES[fmt]
    target_mode = mode
    if fmt == "WEBP" and mode in ("L", "I;16", "F"):
        notes.append("WEBP has no gray mode; written as RGB with three equal channels")
    if mode not in allowed:
        if mode in ("LA", "RGBA"):
            target_mode = mode[:-1]
            notes.append(f"{fmt} cannot store alpha; alpha dropped")
        elif mode in ("I;16", "F"):
            target_mode = "L"
            notes.append(f"{fmt} cannot store {'16-bit' if mode == 'I;16' else 'float'} pixels; written as 8-bit")
    colour = px if px.ndim == 2 else px[..., : _MODE_BANDS[mode] - (1 if mode in ("LA", "RGBA") else 0)]
    if px.ndim == 3 and colour.shape[2] == 1:
        colour = colour[..., 0]
    alpha = px[..., -1] if mode in ("LA", "RGBA") else None
    if target_mode == "F":
        return scale_values(colour, None, scaling, offset).astype(np.float32, copy=False)
    top = 65535.0 if target_mode == "I;16" else 255.0
    src_top = picture.max_value if mode != "F" else 255.0
    factor = top / src_top
    dtype = np.uint16 if target_mode == "I;16" else np.uint8
    if target_mode in ("LA", "RGBA"):
        arr = np.empty(colour.shape[:2] + (colour.shape[2] + 1 if colour.ndim == 3 else 2,), dtype)
        quantize(colour, top, scaling, offset, factor, out=arr[..., :-1] if colour.ndim == 3 else arr[..., 0])
        quantize(alpha, top, "clip", 0.0, factor, out=arr[..., -1])
    else:
        arr = quantize(colour, top, scaling, offset, factor)
    return arr


def clips_to_8bit(picture: Picture, fmt: str, scaling: str = "clip", offset: float = 0.0) -> bool:
    """Does :func:`to_array` turn values computed from this (L or RGB) picture,
    in the same layout, into ``fmt``'s pixels by nothing but rounding and
    clipping them to uint8?"""
    return (picture.mode in ("L", "RGB") and picture.mode in _FORMAT_MODES.get(fmt, ())
            and scaling == "clip" and offset == 0)


def scale_values(values: np.ndarray, top: float | None, scaling: str, offset: float) -> np.ndarray:
    """Map float values for an image: ``clip``/``abs``/``stretch``, then ``+ offset``,
    rounded (half up) and clipped to ``0..top`` (as uint8/uint16); with ``top``
    None, the mapped float32 values (no rounding)."""
    if top is not None:
        return quantize(values, top, scaling, offset)
    v = values.astype(np.float32, copy=True)
    if scaling == "abs":
        np.abs(v, out=v)
    elif scaling == "stretch":
        lo, hi = _finite_range(v)
        v -= np.float32(lo)
        v *= np.float32(1.0 / (hi - lo)) if hi > lo else np.float32(0.0)
    if offset:
        v += np.float32(offset)
    return v


def _finite_range(v: np.ndarray) -> tuple[float, float]:
    lo, hi = float(np.min(v)), float(np.max(v))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        finite = v[np.isfinite(v)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    return lo, hi


#: Rows of floats handled at once by :func:`quantize` (about 1 MB: stays in cache).
_CHUNK_BYTES = 1 << 20


def quantize(values: np.ndarray, top: float, scaling: str = "clip", offset: float = 0.0,
             factor: float = 1.0, out: np.ndarray | None = None) -> np.ndarray:
    """Float values to pixels: ``map(values * factor) + offset``, rounded half up,
    clipped to ``0..top``, NaN as 0, into ``out`` (uint8 for top 255, uint16 else).

    map is ``clip`` (nothing), ``abs``, or ``stretch`` (minimum..maximum onto
    0..top, ``factor`` then irrelevant). Works through a small buffer a few
    rows at a time, so no full-size float temporary is ever allocated.
    """
    if out is None:
        out = np.empty(values.shape, np.uint16 if top > 255 else np.uint8)
    if values.size == 0:
        return out
    mul, add = np.float32(factor), np.float32(offset + 0.5)
    if scaling == "stretch":
        lo, hi = _finite_range(values)
        mul = np.float32(top / (hi - lo)) if hi > lo else np.float32(0.0)
        add = np.float32(offset + 0.5 - lo * float(mul))
    per_row = max(1, values[0].size) * 4
    rows = max(1, _CHUNK_BYTES // per_row)
    buf = np.empty((min(rows, values.shape[0]),) + values.shape[1:], np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to infinity is clipped like it
        for r0 in range(0, values.shape[0], rows):
            chunk = values[r0:r0 + rows]
            b = buf[:chunk.shape[0]]
            if scaling == "abs":
                np.abs(chunk, out=b)
                if mul != 1:
                    b *= mul
                b += add
            elif mul != 1:
                np.multiply(chunk, mul, out=b)
                b += add
            else:
                np.add(chunk, add, out=b)
            # Rounding half up is floor(v + 0.5); clipped to 0..top first, the
            # cast's truncation is that floor. NaN stays NaN through the clip
            # and is set to 0 after the cast. (np.maximum/fmax would take NaN
            # in the same pass, but run 3x slower than clip here.)
            np.clip(b, 0, top, out=b)
            rows_out = out[r0:r0 + chunk.shape[0]]
            np.copyto(rows_out, b, casting="unsafe")
            nan = np.isnan(b)
            if nan.any():
                rows_out[nan] = 0
    return out


def _encode_png(pixels: np.ndarray, info: dict, level: int = PNG_LEVEL) -> list:
    """PNG through kernelcli's own encoder (:mod:`kernelcli._png`): the file
    as byte strings to write one after another."""
    from . import _png

    try:
        return _png.encode_parts(pixels, level, icc_profile=info.get("icc_profile"), dpi=info.get("dpi"),
                           exif=info.get("exif"))
    except ValueError as e:
        raise ImageWriteError(f"cannot encode as PNG: {e}") from None


def _encode(img, fmt: str, info: dict, quality: int, into, name: str = "the output", notes=None) -> None:
    """Every format but PNG and .npy, through Pillow, written into the binary
    file ``into`` (at its start). When Pillow refuses the metadata in ``info``
    the picture is encoded again without it, with a note (``notes``) naming
    the output ``name``: metadata never costs the pixels."""
    _load_plugin(fmt)
    try:
        _save(img, fmt, _save_options(img, fmt, info, quality), into)
        return
    except MemoryError:
        raise
    except Exception as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise  # writing into the file failed (disk full...): atomic_file names the file
        failure = e
    dropped = [what for key, what in (("icc_profile", "ICC profile"), ("dpi", "dpi"), ("exif", "EXIF"))
               if info.get(key) is not None and key in _save_options(img, fmt, info, quality)]
    if dropped:
        into.seek(0)
        into.truncate()
        try:
            _save(img, fmt, _save_options(img, fmt, {}, quality), into)
        except MemoryError:
            raise
        except Exception as e:
            if isinstance(e, OSError) and e.errno is not None:
                raise
        else:
            if notes is not None:
                notes.append(f"{name}: dropped the {' and '.join(dropped)}: the {fmt} encoder refused them "
                             f"({_reason(failure)})")
            return
    raise ImageWriteError(f"cannot encode {img.mode} pixels as {fmt}: {_reason(failure)}") from None


def _reason(e: Exception) -> str:
    reason = str(e) or type(e).__name__
    printed = getattr(e, "libtiff", None)
    return f"{reason}; libtiff: {printed}" if printed else reason


def _save_options(img, fmt: str, info: dict, quality: int) -> dict:
    """Pillow's keyword arguments for saving ``img`` as ``fmt`` with ``info``'s metadata."""
    kwargs = {}
    if fmt in ("JPEG", "WEBP"):
        kwargs["quality"] = quality
    if fmt in ("JPEG", "TIFF", "WEBP") and info.get("icc_profile"):
        kwargs["icc_profile"] = info["icc_profile"]
    if info.get("dpi") and fmt in ("JPEG", "TIFF", "BMP"):
        kwargs["dpi"] = info["dpi"]
    if info.get("exif") and fmt in ("JPEG", "TIFF", "WEBP"):
        kwargs["exif"] = info["exif"]
    if fmt == "TIFF" and img.mode != "F":
        kwargs["compression"] = "tiff_deflate"
    return kwargs


def _save(img, fmt: str, kwargs: dict, into) -> None:
    """``img.save`` into the binary file ``into``. TIFF is encoded in memory
    first, then written with Python's own writes: libtiff, given the file
    itself, reports a failed write (a full disk) as "encoder error -2" and
    prints its own lines on stderr; in memory it cannot fail that way, and
    what it prints while it encodes is kept off stderr (:func:`_stderr_kept`),
    its first line added to the error if encoding fails."""
    if fmt != "TIFF":
        img.save(into, fmt, **kwargs)
        return
    buf = io.BytesIO()
    with _stderr_kept() as printed:
        try:
            img.save(buf, fmt, **kwargs)
        except Exception as e:
            lines = printed()
            if lines:
                with contextlib.suppress(AttributeError):
                    e.libtiff = lines[0]
            raise
    into.write(buf.getbuffer())


@contextlib.contextmanager
def _stderr_kept():
    """File descriptor 2 pointed at a temporary file while the block runs
    (C libraries such as libtiff print there directly, past ``sys.stderr``);
    yields a function giving the lines printed so far. Without a usable
    descriptor 2, or a temporary file, nothing is redirected."""
    try:
        saved = os.dup(2)
    except OSError:
        yield lambda: []
        return
    try:
        kept = tempfile.TemporaryFile()
    except OSError:
        os.close(saved)
        yield lambda: []
        return

    def printed() -> list:
        kept.flush()
        kept.seek(0)
        return [line.strip() for line in kept.read(4096).decode("utf-8", "replace").splitlines() if line.strip()]

    try:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(kept.fileno(), 2)
        yield printed
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        kept.close()


#: Pillow's plugin module for each format kernelcli writes through Pillow.
_PLUGINS = {"JPEG": "JpegImagePlugin", "TIFF": "TiffImagePlugin", "WEBP": "WebPImagePlugin",
            "BMP": "BmpImagePlugin"}


def _load_plugin(fmt: str) -> None:
    """Import only ``fmt``'s Pillow plugin. ``Image.save(fp, format)`` would
    first import five plugins whatever the format (``preinit``: about 8 ms
    of a command here); once the one it needs is loaded, that step is marked
    done. (Opening a file of another format later still finds its plugin:
    ``Image.open`` imports them all when the loaded ones do not match.)"""
    import importlib

    from PIL import Image

    if fmt in _PLUGINS:
        try:
            importlib.import_module(f"PIL.{_PLUGINS[fmt]}")
        except ImportError:  # Pillow built without it: save() says so
            return
    if fmt in Image.SAVE and getattr(Image, "_initialized", 1) < 1:
        Image._initialized = 1


def npy_chunks(picture: Picture) -> list:
    """The ``.npy`` file as chunks: header, the float32 data itself (no copy
    when already float32 and contiguous), then kernelcli's metadata if any."""
    arr = np.ascontiguousarray(picture.pixels, dtype=np.float32)
    return [npy_header(arr.shape), memoryview(arr).cast("B"), npy_trailer(picture.metadata())]


class NpyRows:
    """A float32 ``.npy`` written into a binary file ``f`` as its rows come:
    ``rows[a:b] = values`` in any order, from several threads; a run of rows
    goes out as soon as every row above it has. Give ``allocate`` where an
    array would be made (:func:`kernelcli.tiled.apply_in_bands`); it writes
    the header. The caller writes what follows the data."""

    def __init__(self, f):
        import threading

        self.f, self.lock, self.waiting, self.done = f, threading.Lock(), {}, 0

    def allocate(self, shape: tuple, dtype) -> "NpyRows":
        if np.dtype(dtype) != np.float32:
            raise TypeError(f"a .npy of float32 rows, not {np.dtype(dtype)}")
        self.f.write(npy_header(shape))
        return self

    def __setitem__(self, rows: slice, values: np.ndarray) -> None:
        with self.lock:
            self.waiting[rows.start or 0] = np.ascontiguousarray(values, dtype=np.float32)
            while self.done in self.waiting:
                block = self.waiting.pop(self.done)
                self.f.write(memoryview(block).cast("B"))
                self.done += len(block)


def npy_header(shape: tuple) -> bytes:
    """The header of a C-ordered float32 ``.npy`` of this shape."""
    from numpy.lib import format as npformat

    head = io.BytesIO()
    npformat.write_array_header_1_0(head, {"shape": tuple(shape), "fortran_order": False,
                                           "descr": npformat.dtype_to_descr(np.dtype(np.float32))})
    return head.getvalue()


def npy_trailer(meta: dict) -> bytes:
    """kernelcli's metadata, written after the array data (empty when none)."""
    if not meta:
        return b""
    import json

    return META_MAGIC + json.dumps(meta, separators=(",", ":")).encode("ascii")


def _deliver(target, payload, fmt: str) -> None:
    """Send ``payload`` (byte chunks, or a function that writes them into a
    binary file) to a binary file, ``"-"`` or a path. A function writes a
    path's temporary file itself (Pillow encodes straight into it: for a
    12-megapixel JPEG, 10 MB less to grow and copy in memory; TIFF excepted,
    see :func:`_save`), and a stream's
    bytes into memory first, so that an encoder that fails sends nothing."""
    if callable(payload) and (hasattr(target, "write") or str(target) == "-"):
        buf = io.BytesIO()
        payload(buf)
        payload = [buf.getvalue()]
    if callable(payload):
        stream_to(target, payload, fmt)
    else:
        stream_to(target, lambda f: write_chunks(f, payload), fmt)


def write_chunks(f, chunks) -> None:
    """Write byte chunks into the binary file ``f``, in order."""
    for chunk in chunks:
        f.write(chunk)


def stream_to(target, write, fmt: str) -> None:
    """Let ``write(f)`` write the output into a binary file as it goes: a
    path's temporary file (renamed into place when ``write`` returns), or
    stdout and a caller's stream straight away, not through memory as
    :func:`_deliver` does. For outputs made a band at a time; in a pipe, an
    error part way leaves the rows before it sent (the next command then
    finds a truncated stream)."""
    if hasattr(target, "write"):
        write(target)
    elif str(target) == "-":
        out = _stdout(fmt)
        try:
            write(out)
            out.flush()
        except BrokenPipeError:
            raise  # the reader went away: the command line ends quietly
        except OSError as e:
            raise stdout_error(e) from None
    else:
        write_atomic(Path(str(target)), write)


def stdout_error(e: OSError) -> ImageWriteError:
    """The one-line error for a write to stdout that failed (a full disk, a closed stdout)."""
    return ImageWriteError(f"cannot write to stdout: {e.strerror or e}")


def _stdout(fmt: str):
    out = sys.stdout
    if out is None:  # (Python's, when the command started with descriptor 1 closed)
        raise ImageWriteError("cannot write to stdout: it is closed")
    if out.isatty():
        raise UsageError(
            f"refusing to write binary {fmt} data to a terminal; "
            "redirect it (> out.npy) or pipe it into another command"
        )
    return out.buffer


def write_atomic(path: Path, write) -> None:
    """Let ``write(f)`` write into a temporary file beside ``path``, then
    rename it into place."""
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as f:
            write(f)


#: Temporary files being written now (removed by the SIGTERM handler).
_TEMPORARIES: set = set()


def remove_temporaries() -> None:
    for tmp in list(_TEMPORARIES):
        try:
            os.unlink(tmp)
        except OSError:
            pass


@contextlib.contextmanager
def atomic_file(path: Path):
    """Yield the name of a new temporary file beside ``path``; when the block
    ends normally the file is synced and renamed to ``path``, otherwise it is
    removed. OS errors become one-line :class:`ImageWriteError` messages."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise ImageWriteError(f"{path}: the folder {folder} {what}")
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=temporary_prefix(path.name, folder), suffix=".part")
        os.close(fd)
    except OSError as e:
        raise ImageWriteError(f"{path}: cannot write in {folder}: {e.strerror or e}") from None
    _TEMPORARIES.add(tmp)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if path.exists():
            try:
                os.chmod(tmp, path.stat().st_mode & 0o7777)
            except OSError:
                pass
        else:
            os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        _TEMPORARIES.discard(tmp)
    except BaseException as e:
        _TEMPORARIES.discard(tmp)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise ImageWriteError(f"{path}: cannot write: {e.strerror or e}") from None
        raise


#: Characters tempfile.mkstemp puts between the prefix and the suffix.
_RANDOM_CHARS = 8


def temporary_prefix(name: str, folder) -> str:
    """``.NAME.`` for the temporary file ``.NAME.XXXXXXXX.part`` beside the
    output ``NAME``, with NAME cut short (at a character) when the whole
    would pass the longest file name ``folder``'s file system takes."""
    try:
        longest = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # (no pathconf on Windows)
        longest = 255
    if not longest or longest < 0:
        longest = 255
    room = longest - len(b"..") - _RANDOM_CHARS - len(b".part")
    raw = os.fsencode(name)
    if len(raw) > room:
        cut = max(room, 1)
        while 0 < cut < len(raw) and raw[cut] & 0xC0 == 0x80:  # not inside a UTF-8 character
            cut -= 1
        raw = raw[:cut]
    return f".{os.fsdecode(raw)}."


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

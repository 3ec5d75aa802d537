"""Reading and writing images and ``.npy`` arrays.

Inputs are recognised by their bytes, never by their name: ``.npy`` by NumPy's
magic ``\\x93NUMPY``, everything else by Pillow. Pixels become float32 arrays in
their own value range (8-bit: 0-255, 16-bit: 0-65535, float TIFF: as stored),
``H x W`` for one band and ``H x W x C`` otherwise, and the facts needed to
write the same kind of picture back (mode, bit depth, alpha, ICC profile, DPI,
EXIF) travel with them in a :class:`Picture`.

Outputs are written to a temporary file beside the target and renamed into
place, so an existing file is only ever replaced by a complete new one.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
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
        if self.info.get("icc_profile"):
            meta["icc_profile"] = base64.b64encode(self.info["icc_profile"]).decode("ascii")
        if self.info.get("dpi"):
            meta["dpi"] = [float(v) for v in self.info["dpi"]]
        if self.info.get("exif"):
            meta["exif"] = base64.b64encode(self.info["exif"]).decode("ascii")
        return meta


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
    if opened and stream.seekable():  # a file: Pillow reads it a block at a time, no copy in memory
        stream.seek(0)
        fp = stream
    else:  # a pipe or a caller's stream: Pillow needs one it can seek in
        fp = io.BytesIO(head + stream.read())
    return _read_pillow(fp, name, max_pixels, integers, on_header)


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
            head = _read_exactly(stream, len(NPY_MAGIC))
            if not head:
                raise ImageReadError(f"{name}: empty input")
            if head == NPY_MAGIC:
                got = NpyInput(name, stream, *npy_header_checked(stream, name, max_pixels))
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


def read_rest(stream, name: str) -> bytes:
    """What follows a ``.npy``'s data, where kernelcli puts its metadata (1 MB at most)."""
    try:
        return stream.read(1 << 20)
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
        if stdin is None or stdin.isatty():
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

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            data, self.prefix = self.prefix + self.stream.read(), b""
            return data
        head, self.prefix = self.prefix[:n], self.prefix[n:]
        return head + (_read_exactly(self.stream, n - len(head)) if n > len(head) else b"")


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


def npy_header_checked(stream, name: str, max_pixels: int | None) -> tuple:
    """``(shape, fortran_order, dtype)`` of the ``.npy`` in ``stream``, whose
    magic string has just been read; the stream is left at the first data byte.

    The header is parsed by NumPy's format module (a literal, never pickled);
    object dtypes and arrays that are not images are refused here, before any
    data is read.
    """
    try:
        shape, fortran, dtype = read_npy_header(_Prefixed(NPY_MAGIC, stream))
    except ValueError as e:
        if "pickle" in str(e).lower() or "object" in str(e).lower():
            raise ImageReadError(f"{name}: .npy holds Python objects; refusing to unpickle it") from None
        raise ImageReadError(f"{name}: not a readable .npy array: {e}") from None
    except Exception as e:  # truncated or scrambled header
        raise ImageReadError(f"{name}: corrupt .npy header: {e}") from None
    check_npy_header(shape, dtype, name, max_pixels)
    return shape, fortran, dtype


def npy_picture(stream, name: str, shape: tuple, fortran: bool, dtype: np.dtype) -> Picture:
    """The rest of a ``.npy`` after its header (:func:`npy_header_checked`):
    the array, straight from the stream into its final buffer, and kernelcli's
    metadata after it."""
    count = math.prod(shape)  # Python integers: a hostile header cannot overflow this
    from .engine import ensure_memory

    ensure_memory(count * max(dtype.itemsize, 4), f"{name}: a {'x'.join(map(str, shape))} array")
    try:
        raw = np.empty(count * dtype.itemsize, dtype=np.uint8)
    except (ValueError, MemoryError):
        raise ImageReadError(f"{name}: .npy claims a {shape} array, too large to hold") from None
    read_into(stream, memoryview(raw), name)
    arr = raw.view(dtype).reshape(shape, order="F" if fortran else "C")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    picture = _picture_from_npy(arr, read_rest(stream, name), name, dtype)
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


def npy_metadata(shape: tuple, data: bytes, name: str, dtype=None) -> Picture:
    """What kernelcli's metadata after a ``.npy`` of ``shape`` says (``data``:
    the bytes after the array), as a Picture whose pixels are a 1 x 1
    placeholder with the array's channels: for readers that go a band at a time."""
    return _picture_from_npy(np.zeros((1, 1) + tuple(shape[2:]), dtype=np.float32), data, name, dtype)


def _picture_from_npy(arr: np.ndarray, data: bytes, name: str, dtype=None) -> Picture:
    """A bare array, or the picture a kernelcli command wrote (``data``: what
    follows the array, where kernelcli puts its metadata). A bare array of
    ``dtype`` uint16 has the 16-bit range (0..65535): one channel is written
    as a 16-bit picture where the format allows, colour scaled to 8 bits."""
    at = data.find(META_MAGIC)
    if at < 0:
        sixteen = dtype is not None and np.dtype(dtype).kind == "u" and np.dtype(dtype).itemsize == 2
        return Picture(arr, None, "NPY", range_max=65535.0 if sixteen else None)
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
    dpi = meta.get("dpi")
    if isinstance(dpi, list) and len(dpi) == 2 and all(isinstance(v, (int, float)) for v in dpi):
        info["dpi"] = tuple(dpi)
    top = meta.get("range_max")
    top = float(top) if isinstance(top, (int, float)) and top > 0 else None
    labels = meta.get("labels")
    labels = [str(x) for x in labels] if isinstance(labels, list) and len(labels) == bands else None
    return Picture(arr, mode, "NPY", info, [], top, labels)


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
    info = {k: img.info[k] for k in ("icc_profile", "dpi", "exif") if img.info.get(k)}
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


def _open_pillow(fp):
    """``Image.open(fp)``, except that PNG and JPEG go straight to their plugin:
    ``Image.open`` first imports five plugins (about 25 ms of a command)."""
    from PIL import Image

    signature = fp.read(8)
    fp.seek(0)
    if signature.startswith(b"\x89PNG\r\n\x1a\n"):
        from PIL import PngImagePlugin

        return PngImagePlugin.PngImageFile(fp)
    if signature.startswith(b"\xff\xd8\xff"):
        from PIL import JpegImagePlugin

        return JpegImagePlugin.jpeg_factory(fp)  # JPEG, or MPO (several pictures)
    return Image.open(fp)


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
    """True for a file that starts like a ``.npy`` (judged by content)."""
    try:
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
        write_pixels(target, to_array(picture, fmt, scaling, offset, notes), fmt, picture.info, quality, png_level)
    return notes


def write_pixels(target, pixels, fmt: str, info: dict, quality: int = 92, png_level: int = PNG_LEVEL) -> None:
    """Write pixels already in the format's terms (:func:`to_array`) as an
    image: an array, or for Pillow's formats a :class:`PillowCanvas`."""
    if fmt == "PNG":
        _deliver(target, _encode_png(np.asarray(pixels), info, png_level), fmt)
        return
    if isinstance(pixels, PillowCanvas):
        img = pixels.img
    else:
        from PIL import Image

        # Pillow picks L, LA, RGB, RGBA, I;16 or F from the array's shape and dtype.
        img = Image.fromarray(pixels)
    _deliver(target, lambda f: _encode(img, fmt, info, quality, f), fmt)


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
    if picture.mode is None and mode not in ("I;16", "F") and picture.max_value == 65535.0:
        notes.append(f"{fmt} cannot store 16-bit colour; 0..65535 written as 8-bit 0..255")
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


def _encode(img, fmt: str, info: dict, quality: int, into) -> None:
    """Every format but PNG and .npy, through Pillow, written into the binary file ``into``."""
    kwargs = {}
    if fmt in ("JPEG", "WEBP"):
        kwargs["quality"] = quality
    if fmt in ("JPEG", "TIFF", "WEBP") and info.get("icc_profile"):
        kwargs["icc_profile"] = info["icc_profile"]
    if info.get("dpi") and fmt in ("JPEG", "TIFF", "BMP"):
        kwargs["dpi"] = info["dpi"]
    if info.get("exif") and fmt in ("JPEG", "TIFF", "WEBP"):
        kwargs["exif"] = info["exif"]
    if fmt == "TIFF":
        kwargs["compression"] = "tiff_deflate" if img.mode != "F" else None
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
    _load_plugin(fmt)
    try:
        img.save(into, fmt, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise  # writing into the file failed (disk full...): atomic_file names the file
        raise ImageWriteError(f"cannot encode {img.mode} pixels as {fmt}: {e}") from None


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
    12-megapixel JPEG, 10 MB less to grow and copy in memory), and a stream's
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
        write(out)
        out.flush()
    else:
        write_atomic(Path(str(target)), write)


def _stdout(fmt: str):
    out = sys.stdout
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
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".part")
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask

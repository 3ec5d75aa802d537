"""The ``.npy`` format: headers, data read straight into its buffer, rows
written as they come, and kernelcli's metadata after the data.

A ``.npy`` starts with NumPy's magic ``\\x93NUMPY``; its header is parsed by
NumPy's format module (a literal, never pickled). kernelcli puts its own
metadata (mode, value range, labels, ICC profile, dpi, EXIF) after the array
data, where ``np.load`` does not look.
"""

from __future__ import annotations

import io
import math
import re

import numpy as np

from .._memory import ensure_memory
from ..errors import ImageReadError
from ..stopping import wait_readable
from .picture import META_LIMIT, MODE_BANDS, Picture, checked_info, nonfinite_note


NPY_MAGIC = b"\x93NUMPY"

#: Marks kernelcli's metadata after the array data of a .npy (np.load ignores it).
META_MAGIC = b"\nKERNELCLI-META "


def read_error(name: str, e: OSError) -> ImageReadError:
    return ImageReadError(f"{name}: cannot read: {e.strerror or e}")


def read_rest(stream, name: str) -> bytes:
    """What follows a ``.npy``'s data, where kernelcli puts its metadata
    (:data:`~kernelcli.io.picture.META_LIMIT` at most)."""
    try:
        return stream.read(META_LIMIT)
    except OSError as e:
        raise read_error(name, e) from None


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


def header_of(stream, name: str) -> tuple:
    """:func:`read_npy_header`, its failures (NumPy raises ValueError,
    SyntaxError, EOFError... on a damaged header) as one ImageReadError
    naming the file, without the addresses of Python objects in its reason."""
    try:
        return read_npy_header(stream)
    except Exception as e:
        reason = re.sub(r"<[^<>]*? at 0x[0-9a-fA-F]+>", "a name", str(e)).strip() or type(e).__name__
        raise ImageReadError(f"{name}: not a readable .npy header: {reason}") from None


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
    shape, fortran, dtype = header_of(stream, name)
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
    # one read at a time, after waiting for bytes: no read waits where a stop could go unnoticed
    readinto = getattr(stream, "readinto1", None) or getattr(stream, "readinto", None)
    while got < len(view):
        wait_readable(stream)
        try:
            if readinto is not None:
                n = readinto(view[got:])
            else:
                chunk = stream.read(len(view) - got)
                n = len(chunk)
                view[got:got + n] = chunk
        except OSError as e:
            raise read_error(name, e) from None
        if not n:
            total = len(view) if total is None else total
            raise ImageReadError(f"{name}: truncated .npy: {done + got:,} of {total:,} data bytes")
        got += n


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
    if not isinstance(mode, str) or mode not in MODE_BANDS or MODE_BANDS[mode] != bands:
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


def npy_chunks(picture: Picture) -> list:
    """The ``.npy`` file as chunks: header, the float32 data itself (no copy
    when already float32 and contiguous), then kernelcli's metadata if any."""
    arr = np.ascontiguousarray(picture.pixels, dtype=np.float32)
    return [npy_header(arr.shape), memoryview(arr).cast("B"), npy_trailer(picture.metadata())]


class NpyRows:
    """A float32 ``.npy`` written into a binary file ``f`` as its rows come:
    ``rows[a:b] = values`` in any order, from several threads; a run of rows
    goes out as soon as every row above it has. Give ``allocate`` where an
    array would be made (:func:`kernelcli.run.bands.apply_in_bands`); it writes
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

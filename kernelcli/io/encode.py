"""Encoding pictures: PNG through kernelcli's own encoder (:mod:`kernelcli.io._png`),
JPEG, TIFF, WebP, BMP, AVIF and GIF through Pillow (16-bit and float colour
TIFF through tifffile, :mod:`kernelcli.io._tiff`), HEIC, JPEG XL and OpenEXR
through the optional extra (:mod:`kernelcli.io._extra`), ``.npy`` as it is; the metadata each
format can store, the rest dropped with a note.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ImageWriteError, UsageError
from . import _pillow
from .npy import npy_chunks
from .picture import Picture, checked_info, dpi_problem, show_dpi
from .pixels import SCALINGS, to_array
from .sinks import deliver


#: Output formats by file extension.
EXTENSIONS = {
    ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF",
    ".bmp": "BMP", ".webp": "WEBP", ".avif": "AVIF", ".gif": "GIF", ".npy": "NPY",
    ".heic": "HEIF", ".heif": "HEIF", ".jxl": "JXL", ".exr": "EXR",
}

#: Names accepted by ``--format``.
FORMAT_NAMES = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "tif": "TIFF", "tiff": "TIFF",
                "bmp": "BMP", "webp": "WEBP", "avif": "AVIF", "gif": "GIF", "npy": "NPY",
                "heic": "HEIF", "heif": "HEIF", "jxl": "JXL", "exr": "EXR"}

#: Largest EXIF block (with its "Exif\0\0" header) a JPEG APP1 segment holds.
_JPEG_MAX_EXIF = 65533

#: Largest ICC profile a JPEG holds: 255 APP2 segments of 65519 bytes.
_JPEG_MAX_ICC = 255 * 65519


@dataclass(frozen=True)
class OutputSpec:
    """How values become the output file: ``fmt`` (else from the file's
    extension), ``scaling``, ``offset`` and ``colormap`` (:func:`kernelcli.io.pixels.to_array`),
    JPEG/WebP ``quality``, the PNG compression ``png_level`` (None: the
    default) and the sample type ``depth``. The same bundle serves a single file, a folder and a stage."""

    fmt: str | None = None
    scaling: str = "clip"
    offset: float = 0.0
    quality: int = 92
    png_level: int | None = None
    colormap: str = "gray"
    #: The output's sample type (``8``, ``16``, ``float``); None: the input's.
    depth: str | None = None


def fit_info(info: dict, fmt: str, name: str, notes: list) -> dict:
    """The metadata in ``info`` that ``fmt`` can store; a note naming the
    output ``name`` for each thing dropped."""
    kept = checked_info(info, name, notes)
    dpi = kept.get("dpi")
    why = None if dpi is None else dpi_problem(dpi, fmt)
    if why:
        del kept["dpi"]
        notes.append(f"{name}: dropped the dpi {show_dpi(dpi)}: {why}")
    exif = kept.get("exif")
    if exif is not None:
        if fmt == "JPEG" and len(exif) > _JPEG_MAX_EXIF:
            del kept["exif"]
            notes.append(f"{name}: dropped the EXIF ({len(exif):,} bytes): JPEG holds at most {_JPEG_MAX_EXIF:,}")
        elif fmt == "TIFF" and not _exif_parses(exif):
            del kept["exif"]
            notes.append(f"{name}: dropped the EXIF ({len(exif):,} bytes): TIFF stores EXIF as tags, "
                         "and these bytes are not readable as tags")
    if kept.get("tiff_tags") and fmt != "TIFF":
        del kept["tiff_tags"]
        notes.append(f"{name}: dropped the TIFF tags that place the picture (GeoTIFF): only TIFF holds them")
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


def format_for(target, fmt: str | None = None) -> str:
    """The output format: ``fmt`` if given, else from the target's extension."""
    if fmt:
        key = fmt.lower().lstrip(".")
        if key not in FORMAT_NAMES:
            raise UsageError(f"unknown output format {fmt!r}; use one of {', '.join(sorted(FORMAT_NAMES))}")
        return _available(FORMAT_NAMES[key])
    if str(target) == "-":
        return "NPY"
    ext = Path(str(target)).suffix.lower()
    if ext not in EXTENSIONS:
        raise UsageError(
            f"cannot tell the output format from {str(target)!r}; "
            f"use an extension ({', '.join(sorted(EXTENSIONS))}) or --format"
        )
    return _available(EXTENSIONS[ext])


def _available(fmt: str) -> str:
    """``fmt``, once a format of the optional extra is known to be installed."""
    if fmt in ("HEIF", "JXL", "EXR"):
        from . import _extra

        _extra.check_available(fmt)
    return fmt


#: zlib level for PNG (--png-level): 1 is the fastest that still compresses;
#: 6 and 9 give files about 10-20% smaller for 2-10 times the time.
PNG_LEVEL = 1


def npy_colormap_notes(colormap: str) -> list[str]:
    """The note for a colormap asked of a ``.npy`` output, which keeps the values."""
    return [] if colormap == "gray" else [f"--colormap {colormap} is for pictures; the .npy keeps the values"]


def write_image(target, picture, fmt: str | None = None, scaling: str = "clip",
                offset: float = 0.0, quality: int = 92, png_level: int = PNG_LEVEL,
                colormap: str = "gray", depth: str | None = None) -> list[str]:
    """Write a Picture (or a bare array) to a path, ``"-"`` (stdout) or a binary file.

    Image formats get ``map(values) + offset``, rounded and clipped to the
    output's range, where map is ``clip`` (nothing), ``abs`` or ``stretch``
    (min-max to the full range); one channel may be drawn in colour through
    a ``colormap`` (``diverging``, ``heat``: :mod:`kernelcli.io.colormaps`);
    ``depth`` (``8``, ``16``, ``float``) sets the sample type, else the
    picture's own. ``.npy`` gets the float32 values untouched.
    Returns notes about conversions the format forced (alpha dropped...).
    """
    if not isinstance(picture, Picture):
        picture = Picture(np.asarray(picture, dtype=np.float32), None)
    if scaling not in SCALINGS:
        raise UsageError(f"scaling must be one of {', '.join(SCALINGS)}, got {scaling!r}")
    fmt = format_for(target, fmt)
    notes: list[str] = []
    if fmt == "NPY":
        notes += npy_colormap_notes(colormap)
        deliver(target, npy_chunks(picture), fmt)
    else:
        pixels = to_array(picture, fmt, scaling, offset, notes, depth, colormap)
        info = picture.info
        if colormap != "gray" and "icc_profile" in info:  # the input's colour space is not the colormap's
            info = {k: v for k, v in info.items() if k != "icc_profile"}
            notes.append(f"{_target_name(target)}: dropped the ICC profile: --colormap {colormap} draws "
                         "sRGB colours")
        notes += write_pixels(target, pixels, fmt, info, quality, png_level)
    return notes


def write_pixels(target, pixels, fmt: str, info: dict, quality: int = 92, png_level: int = PNG_LEVEL) -> list[str]:
    """Write pixels already in the format's terms (:func:`~kernelcli.io.pixels.to_array`) as an
    image: an array, or for Pillow's formats a :class:`PillowCanvas`.
    Returns notes about metadata the format could not store (dropped)."""
    notes: list[str] = []
    name = _target_name(target)
    info = fit_info(info, fmt, name, notes)
    if fmt == "PNG":
        deliver(target, _encode_png(np.asarray(pixels), info, png_level), fmt)
        return notes
    if fmt == "EXR":
        arr = np.asarray(pixels)
        from . import _extra

        deliver(target, lambda f: _extra.encode_exr(f, arr), fmt)
        return notes
    if fmt == "GIF" and len(pixels.shape) == 3:
        notes.append(f"{name}: GIF holds at most 256 colours; the colours were reduced to a palette")
        if pixels.shape[2] == 4:
            notes.append(GIF_ALPHA_NOTE.format(name=name))
    if fmt == "TIFF" and _tiff_writes(pixels, info):
        from . import _tiff

        arr = np.asarray(pixels)
        deliver(target, lambda f: _tiff.encode(f, arr, info, name, notes), fmt)
        return notes
    if isinstance(pixels, PillowCanvas):
        img = pixels.img
    else:
        from PIL import Image

        # Pillow picks L, LA, RGB, RGBA, I;16 or F from the array's shape and dtype.
        img = Image.fromarray(pixels)
    deliver(target, lambda f: _encode(img, fmt, info, quality, f, name, notes), fmt)
    return notes


#: GIF's one level of transparency.
GIF_ALPHA_NOTE = "{name}: GIF holds only clear or opaque pixels; alpha below 128 became clear, the rest opaque"


def write_frames(target, arrays: list, fmt: str, info: dict, quality: int = 92) -> list[str]:
    """Write frames (arrays as :func:`~kernelcli.io.pixels.to_array` makes
    them, all of one shape and type) as one file of a format that holds
    frames, with the timing in ``info["animation"]``. Returns notes."""
    from . import frames

    notes: list[str] = []
    name = _target_name(target)
    animation = info.get("animation", {})
    info = fit_info(info, fmt, name, notes)
    if fmt == "GIF" and arrays[0].ndim == 3:
        notes.append(f"{name}: GIF holds at most 256 colours; the colours were reduced to a palette")
        if arrays[0].shape[2] == 4:
            notes.append(GIF_ALPHA_NOTE.format(name=name))
    deliver(target, lambda f: frames.encode_frames(f, arrays, fmt, info, animation, quality), fmt)
    return notes


def _tiff_writes(pixels, info: dict) -> bool:
    """Does this TIFF go through tifffile (:func:`kernelcli.io._tiff.writes`)?"""
    if not (len(pixels.shape) == 3 and np.dtype(pixels.dtype) != np.uint8) and not info.get("tiff_tags"):
        return False
    from . import _tiff

    return _tiff.writes(pixels.shape, pixels.dtype, info)


def _target_name(target) -> str:
    if hasattr(target, "write"):
        return str(getattr(target, "name", "<stream>"))
    return "<stdout>" if str(target) == "-" else str(target)


class PillowCanvas:
    """An output Pillow image filled a band of rows at a time
    (``canvas[a:b] = rows``, rows as :func:`~kernelcli.io.pixels.to_array` makes them), so that
    the result is not built as a NumPy array first and then copied into Pillow."""

    def __init__(self, shape: tuple, dtype):
        from PIL import Image

        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        mode = Image.fromarray(np.zeros((1, 1) + self.shape[2:], self.dtype)).mode
        # Not filled first (color None): every row is pasted before it is read.
        self.img = Image.new(mode, (self.shape[1], self.shape[0]), None)

    def __setitem__(self, rows: slice, values: np.ndarray) -> None:
        start = rows.indices(self.shape[0])[0]
        _pillow.put_raw_rows(self.img, start, np.ascontiguousarray(values, self.dtype))

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.img, dtype=dtype)


def canvas_for(fmt: str):
    """What :func:`kernelcli.run.bands.apply_in_bands` fills band by band for
    ``fmt`` (its ``allocate``): a :class:`PillowCanvas` where Pillow encodes
    the result and holds its kind of pixels, else a NumPy array (None)."""
    if fmt == "PNG":
        return None

    def allocate(shape, dtype):
        if np.dtype(dtype) == np.uint8 or len(shape) == 2:
            return PillowCanvas(shape, dtype)
        return np.empty(shape, dtype)

    return allocate


def _encode_png(pixels: np.ndarray, info: dict, level: int = PNG_LEVEL) -> list:
    """PNG through kernelcli's own encoder (:mod:`kernelcli.io._png`): the file
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
    if fmt == "GIF":
        img = _pillow.gif_palette(img)
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
    if fmt in ("JPEG", "WEBP", "AVIF", "HEIF"):
        kwargs["quality"] = quality
    if fmt == "JXL":  # (its encoder refuses quality 100: that is lossless)
        kwargs.update({"lossless": True} if quality == 100 else {"quality": quality})
    if fmt in ("JPEG", "TIFF", "WEBP", "AVIF", "HEIF") and info.get("icc_profile"):
        kwargs["icc_profile"] = info["icc_profile"]
    if info.get("dpi") and fmt in ("JPEG", "TIFF", "BMP"):
        kwargs["dpi"] = info["dpi"]
    if info.get("exif") and fmt in ("JPEG", "TIFF", "WEBP", "AVIF", "HEIF", "JXL"):
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
            "BMP": "BmpImagePlugin", "AVIF": "AvifImagePlugin", "GIF": "GifImagePlugin"}


def _load_plugin(fmt: str) -> None:
    """Import only ``fmt``'s Pillow plugin. ``Image.save(fp, format)`` would
    first import five plugins whatever the format (``preinit``: about 8 ms
    of a command here); once the one it needs is loaded, that step is marked
    done. (Opening a file of another format later still finds its plugin:
    ``Image.open`` imports them all when the loaded ones do not match.)"""
    import importlib

    if fmt in ("HEIF", "JXL"):
        from . import _extra

        _extra.register_pillow_plugin(fmt)
    if fmt in _PLUGINS:
        try:
            importlib.import_module(f"PIL.{_PLUGINS[fmt]}")
        except ImportError:  # Pillow built without it: save() says so
            return
    _pillow.skip_preinit(fmt)

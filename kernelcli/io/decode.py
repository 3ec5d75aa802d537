"""Pictures decoded by Pillow, with raster decoders only
(:data:`RASTER_FORMATS`: never EPS, PostScript or PDF), into :class:`Picture`
objects in a mode kernelcli computes with.

Pillow's own decompression-bomb check is replaced by one on the header's size,
before any pixel is decoded, that names the size in its message.
"""

from __future__ import annotations

import io
import warnings

import numpy as np

from ..errors import ImageReadError, UsageError
from . import _pillow
from ._pillow import EXR_MAGIC, JPEG_MAGIC, PNG_MAGIC, RASTER_FORMATS, TIFF_MAGIC

# _extra, _tiff, colour, orientation and frames serve a few kinds of picture
# (the optional formats, 16-bit colour TIFF, CMYK with a profile, pictures
# with EXIF, several frames): each is imported where such a picture is met.
from .picture import Picture, bomb_message, checked_info, nonfinite_note, normalise_mode


#: Formats that hold one picture, whose header tells all there is to read
#: (an animated PNG says so in its header too).
_ONE_PICTURE = frozenset({"PNG", "JPEG", "BMP", "DIB", "PPM", "TGA", "PCX", "SGI", "QOI"})


def declared_size(data: bytes) -> tuple[tuple[int, int], bool] | None:
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


#: Bytes of the file handed to Pillow's decoder at a time (Pillow's own is
#: 64 KiB). The decoder lets go of the GIL while it decodes a block, and takes
#: it back for the next: with another thread busy in Python (Numba loading
#: while a large image decodes: :func:`kernelcli.run.bands.load_numba_early`),
#: each of those takes up to the interpreter's switch interval (5 ms), so
#: fewer, larger blocks wait less.
DECODE_BLOCK = 1 << 20


def read_pillow(fp, name: str, max_pixels: int | None, integers: bool = False, on_header=None,
                orient: bool = True, frame: int | None = None, all_frames: bool = False) -> Picture:
    """The picture in ``fp`` (a seekable binary file at its start), decoded
    completely: nothing is read from ``fp`` afterwards. (``on_header``: as
    :func:`~kernelcli.io.inputs.read_image` takes it.) ``orient``: turned
    upright from its EXIF orientation (:mod:`kernelcli.io.orientation`).
    ``frame``: the frame to read (0-based) from a picture of several;
    ``all_frames``: read them all (:mod:`kernelcli.io.frames`), the first as
    the picture's pixels, the others in ``Picture.frames``; else the first,
    with a note."""
    from PIL import Image, UnidentifiedImageError

    # Pillow's own bomb check is replaced by ours, which runs on the header's
    # size before any pixel is decoded and names the size in its message.
    old_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # damaged files: the error says it, not warnings
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if fp.read(4) == EXR_MAGIC:
                return _exr_picture(fp, name, max_pixels)
            fp.seek(0)
            try:
                img = _open_pillow(fp, name)
            except UnidentifiedImageError:
                if not _is_tiff(fp):
                    raise
                # float colour: Pillow has no mode for it
                return _wide_picture(fp, None, name, max_pixels, integers, orient, frame, all_frames)
            _check_pixels(img, name, max_pixels)
            if on_header is not None:
                on_header(img.size[1], img.size[0], len(img.getbands()))
            if _is_wide(img):
                return _wide_picture(fp, img, name, max_pixels, integers, orient, frame, all_frames)
            img.decodermaxblock = DECODE_BLOCK
            turned = _turned_by_pillow(img)
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageReadError(bomb_message(name, None, max_pixels)) from None
    except UnidentifiedImageError:
        raise ImageReadError(f"{name}: not a recognised image or .npy file") from None
    except (ImageReadError, UsageError):
        raise
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageReadError(f"{name}: cannot decode image: {e}") from None
    except Exception as e:  # Pillow's decoders raise many kinds on scrambled data
        raise ImageReadError(f"{name}: cannot decode image: {type(e).__name__}: {e}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit
    notes = []
    try:
        frames = getattr(img, "n_frames", 1)
    except Exception as e:  # counting frames reads the rest of the file
        raise ImageReadError(f"{name}: damaged after its first frame ({type(e).__name__}: {e})") from None
    if frame is not None and frame >= frames:
        raise UsageError(f"--frame {frame}: {name} has {frames} frame{'s' if frames > 1 else ''} "
                         f"(0 to {frames - 1})")
    if frames > 1 and frame is None and not all_frames:
        notes.append(f"{name}: has {frames} frames; using the first")
    info = checked_info({k: img.info[k] for k in ("icc_profile", "dpi", "exif") if img.info.get(k)}, name, notes)
    fmt = img.format
    if fmt == "TIFF":
        from . import _tiff

        if _tiff.place_tags_of_pillow(img):
            info["tiff_tags"] = _tiff.place_tags_of_pillow(img)
    if frames > 1 and frame is None and all_frames:
        return _all_frames(img, name, max_pixels, notes, info, orient, turned)
    return _one_frame(img, frame or 0, name, notes, info, integers, orient, turned)


def _one_frame(img, frame: int, name: str, notes: list, info: dict, integers: bool, orient: bool,
               turned: int = 1) -> Picture:
    """Frame ``frame`` of ``img``, decoded, upright (if ``orient``), in a
    mode kernelcli computes with (as :func:`read_pillow` gives it);
    ``turned``: the orientation Pillow turned it from as it loaded it."""
    fmt = img.format
    try:
        img.seek(frame)
        img.load()  # again if counting frames left it to be decoded anew: fp is not read after this
        turn, pixel_turn = _turns(img, orient, turned)
        if img.mode in ("CMYK", "LAB", "YCbCr") and info.get("icc_profile"):
            from . import colour

            img, info = colour.to_srgb(img, info, name, notes)
        img, mode = normalise_mode(img, name, notes)
        if turn != 1 or pixel_turn != 1:
            from . import orientation

            info = orientation.upright_info(info, turn)
            img = (orientation.upright_array(img, pixel_turn) if isinstance(img, np.ndarray)
                   else orientation.upright_image(img, pixel_turn))
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



def _orientation(img) -> int:
    """The EXIF (or TIFF) orientation of ``img``; 1 without EXIF, with no import."""
    if not img.info.get("exif") and img.format not in ("TIFF", "MPO"):
        return 1
    from . import orientation

    return orientation.stored_orientation(img)


def _turned_by_pillow(img) -> int:
    """The orientation Pillow turns ``img`` (opened, not loaded) upright
    from as it loads it (a TIFF's: Pillow deletes the tag then), else 1."""
    if img.format != "TIFF":
        return 1
    value = img.tag_v2.get(0x0112, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _turns(img, orient: bool, turned: int) -> tuple[int, int]:
    """``(orientation, pixel turn)`` of a loaded frame: the orientation the
    picture is read upright from (its metadata follows it), and the turn
    still to give its pixels. Pillow has turned a TIFF upright from
    ``turned`` as it loaded it: that turn is undone for ``--no-auto-orient``
    (each turn is its own inverse but the quarter turns 6 and 8, which undo
    each other)."""
    if not orient:
        return 1, {6: 8, 8: 6}.get(turned, turned)
    if turned != 1:
        return turned, 1
    turn = _orientation(img)
    return turn, turn


def _is_tiff(fp) -> bool:
    fp.seek(0)
    head = fp.read(4)
    fp.seek(0)
    return head in TIFF_MAGIC


def _is_wide(img) -> bool:
    """Does ``img`` (opened, not loaded) hold colour that Pillow would cut to 8 bits?"""
    if img.format == "PNG":
        raw = img.tile[0].args if img.tile else None
        return (raw[0] if isinstance(raw, tuple) else raw) in _pillow.PNG_WIDE_RAW
    if img.format != "TIFF":
        return False
    from . import _tiff

    return _tiff.needs_tifffile(img)


def _wide_picture(fp, img, name: str, max_pixels, integers: bool, orient: bool,
                  frame: int | None = None, all_frames: bool = False) -> Picture:
    """16-bit or float colour, which Pillow cannot hold: a PNG decoded
    through Pillow at 16 bits (:func:`kernelcli.io._pillow.png_wide_colour`),
    a TIFF through tifffile (:mod:`kernelcli.io._tiff`), its pages as
    :func:`read_pillow` takes ``frame`` and ``all_frames``."""
    from . import _tiff, orientation

    notes: list = []
    pages: list = []
    try:
        if img is not None and img.format == "PNG":
            pixels, found = _pillow.png_wide_colour(fp, img, PNG_READ_ICC)
            raw = img.tile[0].args
            mode, fmt = _pillow.PNG_WIDE_RAW[raw[0] if isinstance(raw, tuple) else raw] + ";16", "PNG"
            info = {k: found[k] for k in ("icc_profile", "dpi", "exif") if found.get(k)}
        else:
            pixels, mode, info, pages = _tiff.read(fp, name, max_pixels, notes, frame, all_frames)
            fmt = "TIFF"
        turn = info.pop("orientation", None) or orientation.exif_orientation(info.get("exif"))
        if orient and turn != 1:
            pixels, info = orientation.upright_array(pixels, turn), orientation.upright_info(info, turn)
            pages = [orientation.upright_array(p, turn) for p in pages]
    except (ImageReadError, UsageError):
        raise
    except Exception as e:
        raise ImageReadError(f"{name}: cannot decode image: {type(e).__name__}: {e}") from None
    place = info.pop("tiff_tags", None)
    info = checked_info(info, name, notes)
    if place:
        info["tiff_tags"] = place
    if pages:
        info["animation"] = {"durations": [0.0] * (1 + len(pages)), "count": 1 + len(pages)}
    if pixels.dtype.kind == "f":
        notes.extend(nonfinite_note(np.stack([pixels, *pages]) if pages else pixels, name))
    elif not integers or pages:
        pixels, pages = pixels.astype(np.float32), [p.astype(np.float32) for p in pages]
    return Picture(pixels, mode, fmt, info, notes, frames=pages or None)


def _all_frames(img, name: str, max_pixels, notes: list, info: dict, orient: bool, turned: int = 1) -> Picture:
    """Every frame of ``img``: the first as the picture's pixels, the others
    in ``frames`` (``turned``: as :func:`_one_frame` takes it)."""
    from . import frames, orientation

    turn, pixel_turn = _turns(img, orient, turned)
    try:
        arrays, mode, animation = frames.decode_frames(img, name, max_pixels, notes, pixel_turn)
    except (ImageReadError, UsageError):
        raise
    except Exception as e:
        raise ImageReadError(f"{name}: cannot decode its frames: {type(e).__name__}: {e}") from None
    info = dict(orientation.upright_info(info, turn), animation=animation)
    if mode == "F":
        notes.extend(nonfinite_note(np.stack(arrays), name))
    return Picture(arrays[0], mode, img.format or "UNKNOWN", info, notes, frames=arrays[1:])


def _exr_picture(fp, name: str, max_pixels) -> Picture:
    """An OpenEXR picture (through the optional extra): float pixels."""
    from . import _extra

    pixels, mode = _extra.read_exr(fp, name, max_pixels)
    return Picture(pixels, mode, "EXR", {}, nonfinite_note(pixels, name))


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
        data = _pillow.raw_rows(self.img, start, stop)
        return np.frombuffer(data, self.dtype).reshape((stop - start,) + self.shape[1:])

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self.img, dtype=dtype)

    def astype(self, dtype):
        return np.asarray(self.img, dtype=dtype)


#: The largest ICC profile read from a PNG.
PNG_READ_ICC = 64 * 2**20


def _open_pillow(fp, name: str | None = None):
    """``Image.open(fp)``, except that PNG and JPEG go straight to their plugin:
    ``Image.open`` first imports five plugins (about 25 ms of a command).
    HEIC and JPEG XL through the optional extra (without it, an
    ImageReadError naming the input ``name``)."""
    from PIL import Image

    signature = fp.read(8)
    fp.seek(0)
    if signature.startswith(PNG_MAGIC):
        return _pillow.open_png(fp, PNG_READ_ICC)
    if signature.startswith(JPEG_MAGIC):
        return _pillow.open_jpeg(fp)  # JPEG, or MPO (several pictures)
    from . import _extra

    fp.seek(0)
    extra = _extra.sniff_extra(fp.read(16))
    fp.seek(0)
    if extra in ("HEIF", "JXL"):  # the optional extra's Pillow plugins
        _extra.register_pillow_plugin(extra, name)
        return Image.open(fp, formats=(extra,))
    return Image.open(fp, formats=RASTER_FORMATS)


def _check_pixels(img, name, max_pixels):
    if max_pixels is not None:
        w, h = img.size
        if w * h > max_pixels:
            raise ImageReadError(bomb_message(name, img.size, max_pixels))

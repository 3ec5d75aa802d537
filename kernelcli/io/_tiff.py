"""TIFF through tifffile, for what Pillow cannot hold: 16-bit and float
colour, read and written exactly, and the tags that place a picture on the
ground (GeoTIFF), kept on the way out.

tifffile is imported inside each function, and only for such a TIFF: a
command that reads a JPEG, a PNG or an 8-bit TIFF never loads it.
"""

from __future__ import annotations

import numpy as np

from ..errors import ImageReadError, ImageWriteError, UsageError

#: Tags that say where a picture lies and at what scale (GeoTIFF, and GDAL's
#: own metadata and no-data value), kept from a TIFF input into a TIFF output
#: of the same size.
PLACE_TAGS = {
    33550: "ModelPixelScale", 33922: "ModelTiepoint", 34264: "ModelTransformation",
    34735: "GeoKeyDirectory", 34736: "GeoDoubleParams", 34737: "GeoAsciiParams",
    42112: "GDAL_METADATA", 42113: "GDAL_NODATA",
}

#: TIFF's ICC profile tag (InterColorProfile).
ICC_TAG = 34675

_SAMPLE_FLOAT = 3

#: The layout for a number of samples per pixel.
_LAYOUTS = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def needs_tifffile(img) -> bool:
    """Does the TIFF Pillow opened (header only) hold colour of more than 8
    bits a sample, which Pillow would cut to 8?"""
    tags = img.tag_v2
    bits = tags.get(258, (8,))
    bits = bits if isinstance(bits, tuple) else (bits,)
    samples = tags.get(277, 1)
    return samples >= 2 and max(bits) > 8


def place_tags_of_pillow(img) -> tuple:
    """The :data:`PLACE_TAGS` of a TIFF Pillow opened, as ``(code, TIFF type, value)``."""
    tags = getattr(img, "tag_v2", None)
    if tags is None:
        return ()
    kept = []
    for code in PLACE_TAGS:
        if code in tags:
            value = tags[code]
            kept.append((code, tags.tagtype.get(code, 2), value if isinstance(value, (tuple, str)) else (value,)))
    return tuple(kept)


def read(fp, name: str, max_pixels: int | None, notes: list, frame: int | None = None,
         all_frames: bool = False):
    """``(pixels, mode, info, pages)`` of the TIFF in ``fp``, read by
    tifffile: uint8, uint16 or float32 pixels, ``H x W`` or ``H x W x C``.
    ``frame``: the page to read (0-based); ``all_frames``: every page, the
    first as ``pixels``, the others in ``pages`` (else the first, with a note
    when there are more, and ``pages`` is empty)."""
    import tifffile

    from .picture import bomb_message

    fp.seek(0)
    try:
        with tifffile.TiffFile(fp) as tif:
            count = len(tif.pages)
            if frame is not None and frame >= count:
                raise UsageError(f"--frame {frame}: {name} has {count} frame{'s' if count > 1 else ''} "
                                 f"(0 to {count - 1})")
            if count > 1 and frame is None and not all_frames:
                notes.append(f"{name}: has {count} frames; using the first")
            chosen = range(count) if all_frames and frame is None else [frame or 0]
            pages = [tif.pages[i] for i in chosen]
            first = pages[0]
            height, width = first.imagelength, first.imagewidth
            if max_pixels is not None and len(pages) * height * width > max_pixels:
                message = bomb_message(name, (width, height), max_pixels)
                if len(pages) > 1:
                    message = message.replace("image claims", f"{len(pages)} frames of").replace(
                        "if you trust", "choose one with --frame N, or if you trust")
                raise ImageReadError(message)
            arrays = [_page_array(page, name) for page in pages]
            info = _info(first)
    except (ImageReadError, UsageError):
        raise
    except Exception as e:  # tifffile raises many kinds on damaged files
        raise ImageReadError(f"{name}: cannot decode TIFF: {type(e).__name__}: {e}") from None
    (arr, mode), rest = arrays[0], arrays[1:]
    if any(a.shape != arr.shape or m != mode for a, m in rest):
        raise ImageReadError(f"{name}: its pages differ in size or samples; choose one with --frame N")
    return arr, mode, info, [a for a, _ in rest]


def _page_array(page, name: str):
    """``(pixels, mode)`` of one TIFF page."""
    from .picture import MODES

    if page.photometric not in (0, 1, 2) or page.samplesperpixel not in _LAYOUTS:
        raise ImageReadError(f"{name}: TIFF of {page.samplesperpixel} samples with photometric "
                             f"{int(page.photometric)} is not supported; convert it to RGB")
    arr = page.asarray()
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    layout = _LAYOUTS[1 if arr.ndim == 2 else arr.shape[2]]
    if arr.dtype.kind == "f":
        depth, arr = "float", arr.astype(np.float32, copy=False)
    elif arr.dtype == np.uint16:
        depth = "16"
    elif arr.dtype == np.uint8:
        depth = "8"
    else:
        raise ImageReadError(f"{name}: TIFF samples of type {arr.dtype} are not supported; "
                             "use 8- or 16-bit unsigned or float samples")
    return np.ascontiguousarray(arr), MODES[layout, depth]


def _info(page) -> dict:
    info = {}
    tags = page.tags
    if ICC_TAG in tags:
        info["icc_profile"] = bytes(tags[ICC_TAG].value)
    if 282 in tags and 283 in tags:
        unit = int(tags[296].value) if 296 in tags else 2
        per = {2: 1.0, 3: 2.54}.get(unit)
        if per:
            x, y = (_rational(tags[code].value) for code in (282, 283))
            if x and y:
                info["dpi"] = (x * per, y * per)
    if 274 in tags and 1 <= int(tags[274].value) <= 8:
        info["orientation"] = int(tags[274].value)
    place = tuple((code, int(tags[code].dtype), tags[code].value) for code in PLACE_TAGS if code in tags)
    if place:
        info["tiff_tags"] = place
    return info


def _rational(value) -> float:
    if isinstance(value, tuple):
        return value[0] / value[1] if len(value) == 2 and value[1] else 0.0
    return float(value)


def writes(shape: tuple, dtype, info: dict) -> bool:
    """Must pixels of this shape and dtype (as :func:`~kernelcli.io.pixels.to_array`
    made them) go through tifffile: colour of 16 bits or float, which Pillow
    cannot hold, or place tags to keep?"""
    wide_colour = len(shape) == 3 and np.dtype(dtype) != np.uint8
    return wide_colour or bool(info.get("tiff_tags"))


def encode(into, pixels: np.ndarray, info: dict, name: str, notes: list, pages: list = ()) -> None:
    """Write ``pixels`` (uint8, uint16 or float32; ``H x W`` or
    ``H x W x C``), and after it the ``pages`` of the same shape and type, as
    a TIFF into the binary file ``into``, with the ICC profile, dpi and place
    tags of ``info`` on the first page (EXIF is not written: a note says so)."""
    import tifffile

    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    extratags = [(code, kind, _count(value), value, True) for code, kind, value in info.get("tiff_tags", ())]
    if info.get("icc_profile"):
        extratags.append((ICC_TAG, 7, len(info["icc_profile"]), bytes(info["icc_profile"]), True))
    options = {}
    if info.get("dpi"):
        options["resolution"] = tuple(float(v) for v in info["dpi"])
        options["resolutionunit"] = "INCH"
    if info.get("exif"):
        notes.append(f"{name}: dropped the EXIF: a TIFF of {pixels.dtype} samples in {channels} channels "
                     "is written without it")
    import io

    layout = {"photometric": "rgb" if channels >= 3 else "minisblack",
              "extrasamples": ("unassalpha",) if channels in (2, 4) else None,
              "compression": None if pixels.dtype.kind == "f" else "zlib", "metadata": None}
    buf = io.BytesIO()  # (tifffile seeks back as it writes; a pipe cannot)
    try:
        with tifffile.TiffWriter(buf) as tif:
            tif.write(pixels, extratags=extratags, **layout, **options)
            for page in pages:
                tif.write(page, **layout, **options)
    except MemoryError:
        raise
    except Exception as e:
        raise ImageWriteError(f"cannot encode as TIFF: {type(e).__name__}: {e}") from None
    into.write(buf.getbuffer())


def _count(value) -> int:
    if isinstance(value, str):
        return len(value.encode("latin-1", "replace")) + 1
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    return len(value) if isinstance(value, (tuple, list)) else 1

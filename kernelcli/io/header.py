"""What kernelcli reads from a file, told from its header alone.

:func:`describe` opens a picture with Pillow's lazy open (the header is read,
no pixel is decoded) and a ``.npy`` through its header and kernelcli's
metadata after the data. A picture is described without importing NumPy, so
``kernelcli info`` answers at once.
"""

from __future__ import annotations

import os
import warnings

from ..errors import ImageReadError
from ._pillow import EXR_MAGIC, JPEG_MAGIC, PNG_MAGIC, RASTER_FORMATS, TIFF_MAGIC

NPY_MAGIC = b"\x93NUMPY"

#: Bits per sample of Pillow's modes.
_BITS = {"1": 1, "L": 8, "LA": 8, "La": 8, "P": 8, "PA": 8, "RGB": 8, "RGBA": 8, "RGBa": 8, "RGBX": 8,
         "CMYK": 8, "YCbCr": 8, "LAB": 8, "HSV": 8, "I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16,
         "I": 32, "F": 32}

#: The mode kernelcli computes with for each mode it reads (as io.decode does).
READ_AS = {"1": "L", "P": "RGB", "PA": "RGBA", "La": "LA", "RGBa": "RGBA", "RGBX": "RGB", "CMYK": "RGB",
           "YCbCr": "RGB", "LAB": "RGB", "HSV": "RGB", "I;16L": "I;16", "I;16B": "I;16", "I;16N": "I;16",
           "I": "I;16"}

#: EXIF orientation values: where the first row and column of the stored pixels are shown.
ORIENTATIONS = {1: "top-left (normal)", 2: "top-right (mirrored)", 3: "bottom-right (rotated 180)",
                4: "bottom-left (flipped)", 5: "left-top (transposed)", 6: "right-top (rotated 90 clockwise)",
                7: "right-bottom (transversed)", 8: "left-bottom (rotated 90 anticlockwise)"}


def describe(path) -> dict:
    """The header of the picture or ``.npy`` at ``path`` as a dict: ``file``,
    ``format``, ``width``, ``height``, ``mode`` and the ``read_as`` mode,
    ``bits``, ``frames``, ``orientation``, ``icc_profile`` (its description
    and size), ``dpi``; for a ``.npy`` ``shape``, ``dtype`` and kernelcli's
    ``metadata``. Missing facts are None. Raises ImageReadError naming the
    file when it cannot be read or is not a picture kernelcli reads."""
    name = str(path)
    if os.path.isdir(name):  # (a picture's header is read without NumPy)
        from .zarr_store import describe_zarr, is_zarr_store

        if is_zarr_store(path):
            return describe_zarr(path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise ImageReadError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise ImageReadError(f"{name}: is a folder, not an image") from None
    except OSError as e:
        raise ImageReadError(f"{name}: cannot read: {e.strerror or e}") from None
    with f:
        if os.path.isdir(name):
            raise ImageReadError(f"{name}: is a folder, not an image")
        try:
            head = f.read(len(NPY_MAGIC))
            f.seek(0)
        except OSError as e:
            raise ImageReadError(f"{name}: cannot read: {e.strerror or e}") from None
        if not head:
            raise ImageReadError(f"{name}: empty input")
        if head.startswith(NPY_MAGIC):
            return _describe_npy(f, name)
        return _describe_picture(f, name)


def _blank(name: str, fmt: str) -> dict:
    return {"file": name, "format": fmt, "width": None, "height": None, "mode": None, "read_as": None,
            "bits": None, "frames": 1, "orientation": None, "icc_profile": None, "dpi": None}


def _describe_picture(f, name: str) -> dict:
    from PIL import Image

    if f.read(4) == EXR_MAGIC:
        return _describe_exr(f, name)
    f.seek(0)

    old_limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # a header is described whatever size it claims
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = _open(f, name)
            facts = _blank(name, img.format)
            facts["width"], facts["height"] = img.size
            if img.format == "TIFF" and 256 in img.tag_v2 and 257 in img.tag_v2:
                # (Pillow gives a TIFF of orientation 5 to 8 its upright size; the size stored is told)
                facts["width"], facts["height"] = img.tag_v2[256], img.tag_v2[257]
            facts["mode"] = img.mode
            facts["read_as"] = READ_AS.get(img.mode, img.mode)
            if img.mode == "P" and "transparency" in img.info:
                facts["read_as"] = "RGBA"
            facts["bits"] = _bits(img)
            if facts["bits"] == 16 and img.mode in ("RGB", "RGBA", "LA"):
                facts["read_as"] = img.mode + ";16"  # (16-bit colour is read at 16 bits)
            facts["frames"] = getattr(img, "n_frames", 1)
            facts["orientation"] = _orientation(img)
            facts["icc_profile"] = icc_summary(img.info.get("icc_profile"))
            dpi = img.info.get("dpi")
            facts["dpi"] = [round(float(v), 3) for v in dpi] if _is_pair(dpi) else None
    except Image.UnidentifiedImageError:
        f.seek(0)
        if f.read(4) in TIFF_MAGIC:  # float colour: Pillow has no mode for it, tifffile reads it
            return _describe_tiff(f, name)
        raise ImageReadError(f"{name}: not a recognised image or .npy file") from None
    except ImageReadError:
        raise
    except Exception as e:  # damaged headers raise many kinds
        raise ImageReadError(f"{name}: cannot read the header: {type(e).__name__}: {e}") from None
    finally:
        Image.MAX_IMAGE_PIXELS = old_limit
    return facts


def _describe_tiff(f, name: str) -> dict:
    """The header of a TIFF Pillow cannot open (float colour), read by
    tifffile as kernelcli reads its pixels (:mod:`kernelcli.io._tiff`)."""
    import tifffile

    from . import _tiff
    from .picture import MODES

    f.seek(0)
    try:
        with tifffile.TiffFile(f) as tif:
            page = tif.pages.first
            facts = _blank(name, "TIFF")
            facts["width"], facts["height"] = page.imagewidth, page.imagelength
            depth = {"f": "float", "u": str(page.dtype.itemsize * 8)}.get(page.dtype.kind)
            layout = _tiff._LAYOUTS.get(page.samplesperpixel)
            facts["mode"] = facts["read_as"] = MODES.get((layout, depth))
            facts["bits"] = page.dtype.itemsize * 8
            facts["frames"] = len(tif.pages)
            found = _tiff._info(page)
    except Exception as e:  # damaged headers raise many kinds
        raise ImageReadError(f"{name}: cannot read the header: {type(e).__name__}: {e}") from None
    facts["orientation"] = found.get("orientation") if found.get("orientation") in ORIENTATIONS else None
    facts["icc_profile"] = icc_summary(found.get("icc_profile"))
    facts["dpi"] = [round(float(v), 3) for v in found["dpi"]] if _is_pair(found.get("dpi")) else None
    return facts


def _describe_exr(f, name: str) -> dict:
    """The header of an OpenEXR file, read through the optional extra."""
    from . import _extra

    facts = _blank(name, "EXR")
    facts["width"], facts["height"], facts["mode"] = _extra.exr_header(f, name)
    facts["read_as"] = facts["mode"]
    return facts


def _pillow_open_other(f, name: str):
    """Pillow's open for formats other than PNG and JPEG: HEIC and JPEG XL
    through the optional extra's plugins (ImageReadError naming the file
    without it)."""
    from PIL import Image

    from . import _extra

    extra = _extra.sniff_extra(f.read(16))
    f.seek(0)
    if extra in ("HEIF", "JXL"):
        _extra.register_pillow_plugin(extra, name)
        return Image.open(f, formats=(extra,))
    return Image.open(f, formats=RASTER_FORMATS)


def _open(f, name: str):
    from PIL import Image

    from . import _pillow

    signature = f.read(8)
    f.seek(0)
    if signature.startswith(PNG_MAGIC):
        return _pillow.open_png(f, 64 * 2**20)
    if signature.startswith(JPEG_MAGIC):
        return _pillow.open_jpeg(f)
    return _pillow_open_other(f, name)


def _bits(img) -> int | None:
    """Bits per sample: by the mode, except where the mode hides 16-bit
    samples (a 16-bit colour PNG or TIFF opens as "RGB": its tile says ";16")."""
    rawmode = ""
    if img.tile:
        args = img.tile[0][3] if len(img.tile[0]) > 3 else None
        rawmode = args[0] if isinstance(args, tuple) and args and isinstance(args[0], str) else (
            args if isinstance(args, str) else "")
    if ";16" in rawmode and img.mode in ("RGB", "RGBA", "LA"):
        return 16
    return _BITS.get(img.mode)


def _orientation(img) -> int | None:
    try:
        if img.format == "PNG" and "exif" not in img.info:
            # Pillow would decode every pixel to look for an eXIf chunk after them
            exif = png_exif_after_pixels(img.fp)
            if exif is None:
                return None
            from PIL import Image

            found = Image.Exif()
            found.load(exif)
            value = found.get(0x0112)
        else:
            value = img.getexif().get(0x0112)
    except Exception:  # a damaged EXIF block: there is no orientation to tell
        return None
    return int(value) if isinstance(value, int) and value in ORIENTATIONS else None


#: A PNG walked for a chunk after its pixels gives up after this many chunks.
_MOST_CHUNKS = 1_000_000


def png_exif_after_pixels(f) -> bytes | None:
    """The eXIf chunk of a PNG that stores it after its image data, found by
    skipping from chunk header to chunk header (no pixel is read), or None.
    The file's position is put back."""
    import struct

    at = f.tell()
    try:
        f.seek(8)
        for _ in range(_MOST_CHUNKS):
            head = f.read(8)
            if len(head) < 8:
                return None
            length, kind = struct.unpack(">I4s", head)
            if kind == b"eXIf":
                data = f.read(length)
                return data if len(data) == length else None
            if kind == b"IEND":
                return None
            f.seek(length + 4, 1)  # the data and the CRC
        return None
    finally:
        f.seek(at)


def _is_pair(value) -> bool:
    try:
        return len(value) == 2 and all(float(v) > 0 for v in value)
    except (TypeError, ValueError):
        return False


def icc_summary(profile) -> dict | None:
    """``{"description": ..., "bytes": N}`` of an ICC profile (description
    None when its ``desc`` tag cannot be read), or None without one."""
    if not isinstance(profile, (bytes, bytearray)) or not profile:
        return None
    return {"description": icc_description(bytes(profile)), "bytes": len(profile)}


def icc_description(profile: bytes) -> str | None:
    """The ``desc`` tag of an ICC profile: ICC v2 ``desc`` (ASCII) or v4
    ``mluc`` (UTF-16, the first record); None when absent or damaged."""
    if len(profile) < 132 or profile[36:40] != b"acsp":
        return None
    count = int.from_bytes(profile[128:132], "big")
    for i in range(min(count, (len(profile) - 132) // 12)):
        at = 132 + 12 * i
        if profile[at:at + 4] != b"desc":
            continue
        offset = int.from_bytes(profile[at + 4:at + 8], "big")
        size = int.from_bytes(profile[at + 8:at + 12], "big")
        tag = profile[offset:offset + size]
        if tag[:4] == b"desc" and len(tag) >= 12:
            length = int.from_bytes(tag[8:12], "big")
            text = tag[12:12 + length].split(b"\0", 1)[0]
            return text.decode("latin-1").strip() or None
        if tag[:4] == b"mluc" and len(tag) >= 28:
            length = int.from_bytes(tag[20:24], "big")
            start = int.from_bytes(tag[24:28], "big")
            text = tag[start:start + length]
            return text.decode("utf-16-be", errors="replace").rstrip("\0").strip() or None
        return None
    return None


def _describe_npy(f, name: str) -> dict:
    from .npy import META_MAGIC, header_of

    shape, fortran, dtype = header_of(f, name)
    start = f.tell()
    facts = _blank(name, "NPY")
    facts.update(shape=list(shape), dtype=str(dtype), fortran_order=bool(fortran), metadata=None)
    if len(shape) >= 2:
        facts["height"], facts["width"] = int(shape[0]), int(shape[1])
    facts["bits"] = dtype.itemsize * 8
    data_end = start + int(dtype.itemsize) * _product(shape)
    total = os.fstat(f.fileno()).st_size
    if total < data_end:
        facts["truncated"] = True
    elif total > data_end:
        f.seek(data_end)
        tail = f.read(min(total - data_end, 64 * 2**20))
        at = tail.find(META_MAGIC)
        if at >= 0:
            facts["metadata"] = _npy_metadata(tail[at + len(META_MAGIC):])
    meta = facts["metadata"] or {}
    facts["mode"] = meta.get("mode") if isinstance(meta.get("mode"), str) else None
    facts["read_as"] = facts["mode"]
    facts["icc_profile"] = meta.pop("icc_profile", None)
    dpi = meta.get("dpi")
    facts["dpi"] = dpi if _is_pair(dpi) else None
    return facts


def _npy_metadata(data: bytes) -> dict | None:
    """kernelcli's metadata after a ``.npy``'s data, with the ICC profile and
    EXIF summarised instead of given whole."""
    import base64
    import json

    try:
        meta = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(meta, dict):
        return None
    for key in ("icc_profile", "exif"):
        if isinstance(meta.get(key), str):
            try:
                raw = base64.b64decode(meta[key], validate=True)
            except ValueError:
                raw = b""
            meta[key] = icc_summary(raw) if key == "icc_profile" else {"bytes": len(raw)}
    return meta


def _product(shape) -> int:
    total = 1
    for n in shape:
        total *= int(n)
    return total

"""Pictures turned upright from their EXIF (or TIFF) orientation tag, so that
a filter acts on the picture as it is displayed; the tag then says 1.

Orientation values (TIFF 6.0, tag 274): where the first stored row and
column are shown. 1 upright; 2 mirrored left-right; 3 turned 180 degrees;
4 mirrored top-bottom; 5 transposed; 6 to be turned 90 degrees clockwise;
7 transversed; 8 to be turned 90 degrees anticlockwise.
"""

from __future__ import annotations

import numpy as np

#: The EXIF and TIFF tag that holds the orientation.
ORIENTATION = 0x0112


def stored_orientation(img) -> int:
    """The orientation a Pillow image's EXIF (or TIFF tags) records, 1 when none or unreadable."""
    try:
        value = img.getexif().get(ORIENTATION, 1)
    except Exception:  # scrambled EXIF: treated as upright, as a viewer would
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def exif_orientation(exif: bytes | None) -> int:
    """The orientation recorded in EXIF bytes, 1 when none or unreadable."""
    if not exif:
        return 1
    from PIL import Image

    found = Image.Exif()
    try:
        found.load(bytes(exif))
        value = found.get(ORIENTATION, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def upright_image(img, orientation: int):
    """A Pillow image turned upright (a new image), or ``img`` itself for orientation 1."""
    if orientation == 1:
        return img
    from PIL import Image

    method = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}[orientation]
    return img.transpose(method)


def upright_array(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Pixels (``H x W`` or ``H x W x C``) turned upright, as a new C-ordered array."""
    turned = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: np.rot90(a, 2).swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }[orientation](pixels)
    return np.ascontiguousarray(turned)


def upright_info(info: dict, orientation: int) -> dict:
    """The metadata of a picture turned upright: the EXIF orientation set to
    1, dpi swapped for a quarter turn; place tags (GeoTIFF), which describe
    the stored grid, dropped."""
    if orientation == 1:
        return info
    info = dict(info)
    if info.get("exif"):
        from PIL import Image

        exif = Image.Exif()
        try:
            exif.load(bytes(info["exif"]))
            exif[ORIENTATION] = 1
            info["exif"] = exif.tobytes()
        except Exception:  # unreadable EXIF: not carried over with a wrong orientation
            del info["exif"]
    if orientation >= 5 and info.get("dpi"):
        info["dpi"] = tuple(info["dpi"])[::-1]
    info.pop("tiff_tags", None)
    return info

"""The picture that travels between reading, the engine and writing.

Pixels become float32 arrays in their own value range (8-bit: 0-255, 16-bit:
0-65535, float TIFF: as stored), ``H x W`` for one band and ``H x W x C``
otherwise, and the facts needed to write the same kind of picture back (mode,
bit depth, alpha, ICC profile, DPI, EXIF) travel with them in a :class:`Picture`.

Metadata: an ICC profile, the resolution (dpi) and EXIF travel with the
pixels when they are usable, and are dropped with a note when they are not:
metadata never costs the pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from ..errors import ImageReadError

# json and base64 serve only kernelcli's .npy metadata: they are imported
# there, not by every command that reads or writes a picture.


#: The modes kernelcli computes with, by layout (``L``, ``LA``, ``RGB``,
#: ``RGBA``) and sample type (8-bit, 16-bit, float). The 8-bit ones, ``I;16``
#: and ``F`` are Pillow's; Pillow holds no 16-bit or float colour, so those
#: modes are kernelcli's own names (``RGB;16``, ``RGB;F``...).
MODES = {
    ("L", "8"): "L", ("LA", "8"): "LA", ("RGB", "8"): "RGB", ("RGBA", "8"): "RGBA",
    ("L", "16"): "I;16", ("LA", "16"): "LA;16", ("RGB", "16"): "RGB;16", ("RGBA", "16"): "RGBA;16",
    ("L", "float"): "F", ("LA", "float"): "LA;F", ("RGB", "float"): "RGB;F", ("RGBA", "float"): "RGBA;F",
}

#: ``mode: (layout, sample type)``, the inverse of :data:`MODES`.
MODE_PARTS = {mode: parts for parts, mode in MODES.items()}

#: The sample types (``--depth``).
DEPTHS = ("8", "16", "float")

_LAYOUT_BANDS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4}

MODE_BANDS = {mode: _LAYOUT_BANDS[layout] for mode, (layout, _) in MODE_PARTS.items()}

_RANGE = {mode: 255.0 if depth == "8" else 65535.0 for mode, (_, depth) in MODE_PARTS.items() if depth != "float"}


def layout_of(mode: str | None) -> str | None:
    """``L``, ``LA``, ``RGB`` or ``RGBA`` for a mode of :data:`MODES`."""
    return MODE_PARTS[mode][0] if mode in MODE_PARTS else None


def depth_of(mode: str | None) -> str | None:
    """``8``, ``16`` or ``float`` for a mode of :data:`MODES`."""
    return MODE_PARTS[mode][1] if mode in MODE_PARTS else None

#: The order of kernelcli's metadata keys in a ``.npy``.
_META_ORDER = {"mode": 0, "range_max": 1, "labels": 2, "icc_profile": 3, "dpi": 4, "exif": 5}


@dataclass
class Picture:
    """Pixels plus what is needed to write the same kind of picture back.

    pixels: float32, ``H x W`` (one band) or ``H x W x C``; uint8 or uint16
    only when read with ``read_image(..., integers=True)``, for the banded
    path (:func:`kernelcli.run.bands.apply_in_bands`), which makes float32 bands.
    mode: the mode to write (one of :data:`MODES`: ``L``, ``LA``, ``RGB``,
    ``RGBA``, ``I;16``, ``F``, ``RGB;16``, ``RGB;F``...), or ``None`` for a
    bare array (read from ``.npy``).
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
    #: The other frames of a picture of several (animated, multi-page), as
    #: pixels in the same mode; their timing is ``info["animation"]``.
    frames: list | None = None

    @property
    def has_alpha(self) -> bool:
        return self.mode is not None and MODE_PARTS.get(self.mode, ("",))[0] in ("LA", "RGBA")

    @property
    def max_value(self) -> float:
        """The top of the value range (255 for 8-bit, 65535 for 16-bit)."""
        if self.mode in _RANGE:
            return _RANGE[self.mode]
        return self.range_max or 255.0

    def with_pixels(self, pixels: np.ndarray, **changes) -> "Picture":
        changes.setdefault("frames", None)  # (the frames are the input's, not a result's)
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


def show_dpi(dpi) -> str:
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
            what = f"dpi {show_dpi(value)}"
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


#: The most of kernelcli's metadata read after a ``.npy``'s data (an ICC
#: profile of 16 MB, as much as a JPEG holds, takes 22 MB in base64); what
#: would not fit is not written (:meth:`Picture.metadata`).
META_LIMIT = 64 * 2**20


def nonfinite_note(arr: np.ndarray, name: str, bad: int | None = None) -> list[str]:
    """A note when float data holds NaN or infinities (they propagate through
    filters); ``bad``: their count when already known."""
    if bad is None and arr.dtype.kind == "f":
        bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
    if bad:
        return [f"{name}: holds {bad:,} NaN or infinite values; they propagate through the "
                "filter (max pooling keeps NaN) and become 0 in pictures"]
    return []


def bomb_message(name, size, max_pixels) -> str:
    what = f"{size[0]}x{size[1]} = {size[0] * size[1]:,} pixels" if size else "too many pixels"
    return (f"{name}: image claims {what}, over the limit of {max_pixels:,}; "
            "if you trust the file, raise the limit with --max-pixels")


def normalise_mode(img, name: str, notes: list):
    """Bring any Pillow mode to one kernelcli computes with; say when it changes."""
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

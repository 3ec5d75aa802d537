"""Pixels for an output format: float values mapped (``clip``, ``abs``,
``stretch``), offset, rounded and clipped to the format's uint8 or uint16
range, or kept as float32 for TIFF's F mode."""

from __future__ import annotations

import numpy as np

from ..errors import UsageError
from .picture import MODE_BANDS, Picture


#: The modes each output format can store (others are converted, with a note).
_FORMAT_MODES = {
    "PNG": ("L", "LA", "RGB", "RGBA", "I;16"),
    "TIFF": ("L", "LA", "RGB", "RGBA", "I;16", "F"),
    "JPEG": ("L", "RGB"),
    "BMP": ("L", "RGB"),
    "WEBP": ("L", "RGB", "RGBA"),
}

SCALINGS = ("clip", "abs", "stretch")

_MODE_FOR_BANDS = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def to_array(picture: Picture, fmt: str, scaling: str = "clip", offset: float = 0.0, notes=None,
             colormap: str = "gray") -> np.ndarray:
    """The pixels as the format stores them: uint8 (L, LA, RGB, RGBA), uint16
    (16-bit gray) or float32 (TIFF's F), 2-D for one channel; RGB through
    ``colormap`` unless it is ``gray`` (:mod:`kernelcli.io.colormaps`)."""
    notes = [] if notes is None else notes
    if colormap != "gray":
        return _colormapped(picture, scaling, offset, colormap, notes)
    px = picture.pixels
    bands = 1 if px.ndim == 2 else px.shape[2]
    mode = picture.mode
    if mode is None or MODE_BANDS[mode] != bands:
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
    colour = px if px.ndim == 2 else px[..., : MODE_BANDS[mode] - (1 if mode in ("LA", "RGBA") else 0)]
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


def _colormapped(picture: Picture, scaling: str, offset: float, colormap: str, notes: list) -> np.ndarray:
    """One channel through a colormap: ``abs`` (for ``--scaling abs``) and
    ``+ offset`` first; the colormap sets its own scale (``stretch`` is implied)."""
    from .colormaps import check, colorize

    check(colormap)
    px = picture.pixels
    bands = 1 if px.ndim == 2 else px.shape[2]
    colour_bands = bands - (1 if picture.has_alpha and bands in (2, 4) else 0)
    if colour_bands != 1:
        hint = "use kernelcli montage, " if picture.labels else ""
        raise UsageError(f"--colormap {colormap} draws one channel; this picture has {colour_bands} "
                         f"({hint}--gray, or one kernel)")
    if bands == 2:
        notes.append(f"--colormap {colormap} draws the values' colours; alpha dropped")
    values = px if px.ndim == 2 else px[..., 0]
    if scaling == "abs" or offset:
        values = np.abs(values) if scaling == "abs" else values.astype(np.float32)
        values = values + np.float32(offset) if offset else values
    return colorize(values, colormap)


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

"""Pixels for an output format: float values mapped (``clip``, ``abs``,
``stretch``), offset, rounded and clipped to the format's uint8 or uint16
range, or kept as float32 for float TIFF and OpenEXR (``--depth float``)."""

from __future__ import annotations

import numpy as np

from ..errors import UsageError
from .picture import MODE_BANDS, MODE_PARTS, MODES, Picture


#: The layouts each output format can store (others are converted, with a note).
FORMAT_LAYOUTS = {
    "PNG": ("L", "LA", "RGB", "RGBA"),
    "TIFF": ("L", "LA", "RGB", "RGBA"),
    "JPEG": ("L", "RGB"),
    "BMP": ("L", "RGB"),
    "WEBP": ("L", "RGB", "RGBA"),
    "GIF": ("L", "RGB", "RGBA"),
    "AVIF": ("L", "RGB", "RGBA"),
    "HEIF": ("L", "RGB", "RGBA"),
    "JXL": ("L", "LA", "RGB", "RGBA"),
    "EXR": ("L", "LA", "RGB", "RGBA"),
}

#: The sample types each output format can store (``--depth``): the first
#: is what a picture of a sample type the format lacks is written as.
FORMAT_DEPTHS = {
    "PNG": ("8", "16"), "TIFF": ("8", "16", "float"), "JPEG": ("8",), "BMP": ("8",), "WEBP": ("8",),
    "GIF": ("8",), "AVIF": ("8",), "HEIF": ("8",), "JXL": ("8",), "EXR": ("float",),
}

SCALINGS = ("clip", "abs", "stretch")

_LAYOUT_FOR_BANDS = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}

_DEPTH_WORDS = {"8": "8-bit", "16": "16-bit", "float": "float"}


def formats_holding(depth: str) -> str:
    """The output formats that hold ``depth`` samples, for a message."""
    names = {"PNG": "png", "TIFF": "tif", "JXL": "jxl", "EXR": "exr"}
    return ", ".join(names.get(f, f.lower()) for f, depths in FORMAT_DEPTHS.items() if depth in depths)


def output_mode(picture: Picture, fmt: str, depth: str | None = None, notes=None) -> tuple[str, str]:
    """``(mode the values are in, mode written)`` for ``picture`` in ``fmt``:
    the picture's own mode (a bare array's from its channel count and value
    range), then the layout and sample type ``fmt`` stores, with ``depth``
    (``8``, ``16``, ``float``) asked for instead of the picture's sample type.
    Notes say what the format forced."""
    notes = [] if notes is None else notes
    px = picture.pixels
    bands = 1 if px.ndim == 2 else px.shape[2]
    mode = picture.mode
    if mode is None or MODE_BANDS[mode] != bands:
        # A bare array: pick the mode from the channel count. A stack of
        # feature maps (labels set) has no alpha: only 1 or 3 maps make a picture.
        usable = (1, 3) if picture.labels else tuple(_LAYOUT_FOR_BANDS)
        if bands not in usable:
            hint = "use kernelcli montage or " if picture.labels else ""
            raise UsageError(f"cannot store {bands} channels in a {fmt} image; {hint}write .npy instead")
        mode = MODES[_LAYOUT_FOR_BANDS[bands], "16" if picture.max_value == 65535.0 else "8"]
    layout, have = MODE_PARTS[mode]
    want = depth or have
    if want not in FORMAT_DEPTHS[fmt]:
        if depth:
            raise UsageError(f"{fmt} cannot store {_DEPTH_WORDS[depth]} samples; --depth {depth} needs "
                             f"one of: {formats_holding(depth)}")
        want = FORMAT_DEPTHS[fmt][0]
        notes.append(f"{fmt} cannot store {_DEPTH_WORDS[have]} pixels; written as {_DEPTH_WORDS[want]}")
    if fmt == "WEBP" and layout == "L":
        notes.append("WEBP has no gray mode; written as RGB with three equal channels")
    target = layout
    if layout not in FORMAT_LAYOUTS[fmt]:  # (every format holds L and RGB)
        target = layout[:-1]
        notes.append(f"{fmt} cannot store alpha; alpha dropped")
    return mode, MODES[target, want]


def to_array(picture: Picture, fmt: str, scaling: str = "clip", offset: float = 0.0, notes=None,
             depth: str | None = None, colormap: str = "gray") -> np.ndarray:
    """The pixels as the format stores them: uint8 (8-bit), uint16 (16-bit) or
    float32 (float: the values as computed, only ``scaling`` and ``offset``
    applied), 2-D for one channel; ``depth`` as :func:`output_mode` takes it.
    One channel is drawn as 8-bit RGB through ``colormap`` unless it is
    ``gray`` (:mod:`kernelcli.io.colormaps`)."""
    notes = [] if notes is None else notes
    if colormap != "gray":
        if depth not in (None, "8"):
            raise UsageError(f"--colormap {colormap} draws 8-bit colours; --depth {depth} goes without it")
        return _colormapped(picture, scaling, offset, colormap, notes)
    px = picture.pixels
    mode, target_mode = output_mode(picture, fmt, depth, notes)
    layout, have = MODE_PARTS[mode]
    want = MODE_PARTS[target_mode][1]
    keeps_alpha = MODE_PARTS[target_mode][0] in ("LA", "RGBA")
    colour = px if px.ndim == 2 else px[..., : MODE_BANDS[mode] - (1 if layout in ("LA", "RGBA") else 0)]
    if px.ndim == 3 and colour.shape[2] == 1:
        colour = colour[..., 0]
    alpha = px[..., -1] if keeps_alpha else None
    if want == "float":
        values = scale_values(colour, None, scaling, offset).astype(np.float32, copy=False)
        if alpha is None:
            return values
        return np.ascontiguousarray(np.dstack([values, alpha]), dtype=np.float32)
    top = 65535.0 if want == "16" else 255.0
    src_top = picture.max_value if have != "float" else 255.0
    factor = top / src_top
    dtype = np.uint16 if want == "16" else np.uint8
    if keeps_alpha:
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


def clips_to_8bit(picture: Picture, fmt: str, scaling: str = "clip", offset: float = 0.0,
                  depth: str | None = None) -> bool:
    """Does :func:`to_array` turn values computed from this (L or RGB) picture,
    in the same layout, into ``fmt``'s pixels by nothing but rounding and
    clipping them to uint8?"""
    return (picture.mode in ("L", "RGB") and picture.mode in FORMAT_LAYOUTS.get(fmt, ())
            and "8" in FORMAT_DEPTHS.get(fmt, ()) and depth in (None, "8")
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

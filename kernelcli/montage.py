"""Draw a stack of feature maps as one labelled grid picture."""

from __future__ import annotations

import math

import numpy as np

from .errors import UsageError
from .io.picture import Picture

GAP = 6
LABEL_HEIGHT = 14
BACKGROUND = 40
#: Bytes per pixel of the sheet at the peak of drawing it: the float32 sheet,
#: its 8-bit copy for the labels, the float32 result and the 8-bit one written.
SHEET_BYTES = 12


def montage(picture: Picture, columns: int | None = None, zoom: int | None = None,
            max_pixels: int | None = None, colormap: str | None = None) -> Picture:
    """One gray tile per channel, each stretched from its own min to its own max;
    with ``colormap`` (:mod:`kernelcli.io.colormaps`), RGB tiles each on its
    own scale, with a scale bar under each.

    ``columns`` is at most the number of maps. A sheet of more than
    ``max_pixels`` pixels is refused (a usage error), as is one whose
    memory is not available, before it is drawn."""
    px = picture.pixels
    maps = [px] if px.ndim == 2 else [px[..., i] for i in range(px.shape[2])]
    labels = picture.labels or [f"channel {i}" for i in range(len(maps))]
    if len(maps) == 1 and not picture.labels:
        labels = ["map"]
    h, w = maps[0].shape
    if zoom is None:
        zoom = max(1, min(16, 128 // max(h, w)))
    if colormap is not None:
        return _colour_sheet(maps, labels, columns, zoom, max_pixels, colormap)
    cols = min(columns or math.ceil(math.sqrt(len(maps))), len(maps))
    rows = math.ceil(len(maps) / cols)
    th, tw = h * zoom, w * zoom
    cell_w = max(tw, 8 * max(len(label) for label in labels) // 1 if labels else tw)
    sheet_h = rows * (th + LABEL_HEIGHT + GAP) + GAP
    sheet_w = cols * (cell_w + GAP) + GAP
    _check_sheet(sheet_h, sheet_w, len(maps), cols, zoom, max_pixels)
    sheet = np.full((sheet_h, sheet_w), BACKGROUND, dtype=np.float32)
    for i, m in enumerate(maps):
        r, c = divmod(i, cols)
        y = GAP + r * (th + LABEL_HEIGHT + GAP) + LABEL_HEIGHT
        x = GAP + c * (cell_w + GAP)
        tile = _stretch(m)
        if zoom > 1:
            tile = np.repeat(np.repeat(tile, zoom, axis=0), zoom, axis=1)
        sheet[y:y + th, x:x + tw] = tile
    sheet = _draw_labels(sheet, labels, cols, th, cell_w)
    return Picture(sheet, "L", "NPY")


#: Label text size (pixels) on a colour sheet.
LABEL_SIZE = 13


def _colour_sheet(maps, labels, columns, zoom: int, max_pixels, colormap: str) -> Picture:
    """The montage through a colormap: label, tile and scale bar per map."""
    from PIL import Image, ImageDraw

    from .figures import draw
    from .io import colormaps

    colormaps.check(colormap)
    h, w = maps[0].shape
    cols = min(columns or math.ceil(math.sqrt(len(maps))), len(maps))
    rows = math.ceil(len(maps) / cols)
    th, tw = h * zoom, w * zoom
    bar_w = max(tw, 96)
    cell_w = max(bar_w, max(draw.text_width(label, LABEL_SIZE) for label in labels) + 2)
    label_h = LABEL_SIZE + 5
    cell_h = label_h + th + 4 + draw.scale_bar_height()
    sheet_h, sheet_w = rows * (cell_h + GAP) + GAP, cols * (cell_w + 2 * GAP) + GAP
    _check_sheet(sheet_h, sheet_w, len(maps), cols, zoom, max_pixels)
    img = Image.new("RGB", (sheet_w, sheet_h), draw.BACKGROUND)
    pen = ImageDraw.Draw(img)
    for i, (m, label) in enumerate(zip(maps, labels)):
        r, c = divmod(i, cols)
        y = GAP + r * (cell_h + GAP)
        x = GAP + c * (cell_w + 2 * GAP)
        pen.text((x, y), label, fill=draw.INK, font=draw.font(LABEL_SIZE))
        lo, hi = colormaps.value_range(m, colormap)
        if colormap == "gray":
            tile = np.repeat(_stretch(m).round().clip(0, 255).astype(np.uint8)[..., None], 3, axis=2)
        else:
            tile = colormaps.colorize(m, colormap, (lo, hi))
        if zoom > 1:
            tile = np.repeat(np.repeat(tile, zoom, axis=0), zoom, axis=1)
        img.paste(Image.fromarray(np.ascontiguousarray(tile), "RGB"), (x, y + label_h))
        draw.scale_bar(img, x, y + label_h + th + 4, bar_w, colormap, lo, hi)
    return Picture(np.asarray(img, dtype=np.float32), "RGB", "NPY")


def _check_sheet(sheet_h: int, sheet_w: int, maps: int, cols: int, zoom: int, max_pixels: int | None) -> None:
    from ._memory import ensure_memory

    what = (f"a montage sheet of {sheet_h}x{sheet_w} = {sheet_h * sheet_w:,} pixels "
            f"({maps} maps, {cols} columns, --scale {zoom})")
    if max_pixels is not None and sheet_h * sheet_w > max_pixels:
        raise UsageError(f"{what} is over the limit of {max_pixels:,} pixels; use a smaller --scale or "
                         "fewer --columns, or raise --max-pixels")
    ensure_memory(sheet_h * sheet_w * SHEET_BYTES, what, "use a smaller --scale or fewer --columns")


def _stretch(m: np.ndarray) -> np.ndarray:
    finite = m[np.isfinite(m)]
    if finite.size == 0:
        return np.zeros_like(m)
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return np.full_like(m, 128.0)
    return np.nan_to_num((m - lo) * (255.0 / (hi - lo)), nan=0.0)


def _draw_labels(sheet: np.ndarray, labels, cols: int, th: int, cell_w: int) -> np.ndarray:
    from PIL import Image, ImageDraw, ImageFont

    img = Image.fromarray(sheet.astype(np.uint8))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    for i, label in enumerate(labels):
        r, c = divmod(i, cols)
        y = GAP + r * (th + LABEL_HEIGHT + GAP)
        x = GAP + c * (cell_w + GAP)
        draw.text((x, y), label, fill=230, font=font)
    return np.asarray(img, dtype=np.float32)

"""Kernels as pictures: each kernel a grid of cells coloured by weight
(``diverging``: negative blue, 0 light gray, positive red, on the kernel's own
symmetric scale), its values written in the cells when they are large enough
to read, a label and a scale bar; a filter bank (or a ``K x K x C`` kernel's
channels) side by side on one sheet."""

from __future__ import annotations

import math

import numpy as np

from ..io import colormaps
from ..io.picture import Picture
from . import draw

GAP = 14
LABEL_SIZE = 13
#: The grid of one kernel is about this many pixels across (cells 3..44 px).
GRID_SIDE = 300
MIN_CELL, MAX_CELL = 3, 44
#: Cells narrower than this carry no numbers.
MIN_CELL_FOR_TEXT = 18


def panels(kernels) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """``(title, subtitle, values as written, weights)`` per 2-D plane to draw."""
    found = []
    for k in kernels:
        size = "x".join(str(n) for n in k.values.shape)
        scale = f", scale {k.scale_text}" if k.scale_text != "1" else ""
        if k.depth is None:
            found.append((k.name, f"{size}{scale}", k.values, k.array))
        else:
            for c in range(k.depth):
                found.append((f"{k.name} [{c}]", f"channel {c} of {size}{scale}", k.values[..., c],
                              k.array[..., c]))
    return found


def cell_size(shape: tuple[int, int]) -> int:
    return max(MIN_CELL, min(MAX_CELL, GRID_SIDE // max(shape)))


def kernel_sheet(kernels, columns: int | None = None) -> Picture:
    """One RGB picture of ``kernels`` (Kernel objects), ``columns`` panels per row
    (default: all of them up to 4 per row)."""
    from PIL import Image, ImageDraw

    found = panels(kernels)
    cols = min(columns or min(4, len(found)), len(found))
    rows = math.ceil(len(found) / cols)
    cell = min(cell_size(p[2].shape) for p in found)
    grid_h = max(p[2].shape[0] for p in found) * cell
    grid_w = max(p[2].shape[1] for p in found) * cell
    text_w = max(max(draw.text_width(t, LABEL_SIZE), draw.text_width(s, LABEL_SIZE - 2)) for t, s, *_ in found)
    panel_w = max(grid_w, text_w, 110)
    label_h = LABEL_SIZE + (LABEL_SIZE - 2) + 8
    panel_h = label_h + grid_h + 6 + draw.scale_bar_height()
    img = Image.new("RGB", (GAP + cols * (panel_w + GAP), GAP + rows * (panel_h + GAP)), draw.BACKGROUND)
    pen = ImageDraw.Draw(img)
    for i, (title, subtitle, values, weights) in enumerate(found):
        r, c = divmod(i, cols)
        x, y = GAP + c * (panel_w + GAP), GAP + r * (panel_h + GAP)
        pen.text((x, y), title, fill=draw.INK, font=draw.font(LABEL_SIZE))
        pen.text((x, y + LABEL_SIZE + 3), subtitle, fill=draw.DIM, font=draw.font(LABEL_SIZE - 2))
        gx = x + (panel_w - values.shape[1] * cell) // 2
        lo, hi = _grid(img, pen, gx, y + label_h, values, weights, cell)
        draw.scale_bar(img, x, y + label_h + grid_h + 6, panel_w, "diverging", lo, hi)
    return Picture(np.asarray(img, dtype=np.float32), "RGB", "NPY")


def _grid(img, pen, x: int, y: int, values: np.ndarray, weights: np.ndarray, cell: int):
    """Draw one kernel's cells at ``(x, y)``; returns its scale's ends."""
    from PIL import Image

    lo, hi = draw.symmetric_span(weights)  # the exact extremes, however many weights
    rgb = colormaps.colorize(np.asarray(weights, np.float32), "diverging", (lo, hi))
    cells = np.repeat(np.repeat(rgb, cell, axis=0), cell, axis=1)
    img.paste(Image.fromarray(np.ascontiguousarray(cells), "RGB"), (x, y))
    kh, kw = values.shape
    if cell >= 6:  # grid lines between the cells
        for i in range(kh + 1):
            pen.line([(x, y + i * cell), (x + kw * cell, y + i * cell)], fill=draw.BACKGROUND)
        for j in range(kw + 1):
            pen.line([(x + j * cell, y), (x + j * cell, y + kh * cell)], fill=draw.BACKGROUND)
    texts = [[draw.number(v, 2) for v in row] for row in values]
    size = max(9, min(15, int(cell * 0.4)))
    widest = max(draw.text_width(t, size) for row in texts for t in row)
    if cell >= MIN_CELL_FOR_TEXT and widest <= cell - 3:
        for i, row in enumerate(texts):
            for j, t in enumerate(row):
                box = (x + j * cell, y + i * cell, x + (j + 1) * cell, y + (i + 1) * cell)
                draw.centred_text(pen, box, t, size, fill=draw.ink_on(rgb[i, j]))
    return lo, hi

"""Drawing helpers shared by the figures: a scalable font, numbers as text,
colour cells and scale bars, on Pillow RGB images."""

from __future__ import annotations

import functools
import math

import numpy as np

from ..io import colormaps
from ..kernel_forms import format_number

BACKGROUND = (40, 40, 40)
INK = (235, 235, 235)
DIM = (150, 150, 150)


@functools.lru_cache(maxsize=16)
def font(size: int):
    """Pillow's bundled scalable font at ``size`` pixels (FreeType); the
    bitmap default where Pillow has no FreeType."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1, or built without FreeType
        return ImageFont.load_default()


def number(v, digits: int = 3) -> str:
    """A value as the figures write it: integers as such, others to ``digits`` significant figures."""
    v = float(v)
    if not math.isfinite(v):
        return str(v)
    if v == int(v) and abs(v) < 1e7:
        return str(int(v))
    text = f"{v:.{digits}g}"
    return text if "e" in text else format_number(float(text))


def symmetric_span(values: np.ndarray) -> tuple[float, float]:
    """``-m, m`` for the largest finite absolute value ``m`` (0 when none is
    finite): a diverging scale on a map's or kernel's exact extremes."""
    finite = np.abs(values[np.isfinite(values)])
    m = float(finite.max()) if finite.size else 0.0
    return -m, m


def text_width(text: str, size: int) -> int:
    left, _, right, _ = font(size).getbbox(text)
    return int(math.ceil(right - left))


def centred_text(draw, box, text: str, size: int, fill=INK) -> None:
    """``text`` centred in ``box`` = (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    draw.text(((x0 + x1) / 2, (y0 + y1) / 2), text, fill=fill, font=font(size), anchor="mm")


def ink_on(rgb) -> tuple:
    """Black or white, whichever reads on a cell of colour ``rgb``."""
    r, g, b = (int(c) for c in rgb[:3])
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


SCALE_BAR_HEIGHT = 8
SCALE_TEXT_SIZE = 11


def scale_bar_height() -> int:
    """The bar and its numbers below it."""
    return SCALE_BAR_HEIGHT + 3 + SCALE_TEXT_SIZE + 2


def scale_bar(img, x: int, y: int, width: int, name: str, lo: float, hi: float) -> None:
    """A colour bar of ``width`` at ``(x, y)`` for colormap ``name`` over
    ``lo .. hi``, with both ends (and 0 for diverging) written below it."""
    from PIL import ImageDraw

    lut = colormaps.table(name)
    ramp = lut[np.linspace(0, 255, max(1, width)).round().astype(int)]
    strip = np.repeat(ramp[None, :, :], SCALE_BAR_HEIGHT, axis=0)
    from PIL import Image

    img.paste(Image.fromarray(strip, "RGB"), (x, y))
    draw = ImageDraw.Draw(img)
    ty = y + SCALE_BAR_HEIGHT + 3
    f = font(SCALE_TEXT_SIZE)
    draw.text((x, ty), number(lo), fill=INK, font=f, anchor="la")
    draw.text((x + width, ty), number(hi), fill=INK, font=f, anchor="ra")
    if name == "diverging" and width >= 3 * text_width(number(hi), SCALE_TEXT_SIZE) + 12:
        draw.text((x + width / 2, ty), "0", fill=INK, font=f, anchor="ma")

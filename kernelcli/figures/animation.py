"""The convolution, animated: the padded input as a grid of numbers, the
kernel's window moving over it position by position with its products and
their sum written below, and the feature map filling in beside it; then,
when asked, the rectified map and the pooling windows.

The numbers come in a :class:`Walk` (made by :func:`kernelcli.explain.walkthrough`
from the engine); this module only draws them, one RGB frame at a time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import UsageError
from ..io import colormaps
from . import draw

PAD = 18
PANEL_GAP = 44
TITLE_SIZE = 15
LABEL_SIZE = 14
TEXT_SIZE = 15
LINE = 21

WINDOW = (214, 40, 40)
WINDOW_FILL = (255, 232, 150)
INPUT_FILL = (238, 238, 238)
PADDING_FILL = (150, 150, 150)
EMPTY_FILL = (62, 62, 62)
WEIGHT_INK = (200, 20, 20)
ORIGIN = (60, 200, 90)
ORIGIN_TEXT = "green: the kernel's origin, the cell over the output pixel"

#: Milliseconds each kind of frame is shown.
INTRO_MS, STEP_MS, DONE_MS, STAGE_MS, POOL_MS, LAST_MS = 1600, 900, 1800, 2200, 1100, 3000
#: Kernels up to this many rows and columns get their products written out.
PRODUCTS_UP_TO = 5


@dataclass(frozen=True)
class PoolStep:
    kind: str
    size: tuple
    stride: tuple
    result: np.ndarray


@dataclass(frozen=True)
class Walk:
    """The numbers of one explanation: the kernel's name and weights, the
    input, the padded input and its padding, the stride, the padding as
    given, the feature map, the rectified map (or None), the pooling step
    (or None), the border value and the kernel's origin (None: the centre)."""

    kernel_name: str
    weights: np.ndarray
    x: np.ndarray
    padded: np.ndarray
    pads: tuple
    stride: tuple
    padding: str
    feature: np.ndarray
    rectified: np.ndarray | None = None
    pool: PoolStep | None = None
    cval: float = 0.0
    origin: tuple | None = None


class _Layout:
    """Sizes shared by every frame (an animation's frames are one size)."""

    def __init__(self, walk: Walk):
        values = [walk.padded, walk.weights, walk.feature]
        values += [a for a in (walk.rectified, walk.pool.result if walk.pool else None) if a is not None]
        side = max(walk.padded.shape)
        self.cell = int(np.clip(260 // side, 26, 48))
        self.size = int(np.clip(self.cell * 0.42, 11, 18))
        widest = max(draw.text_width(draw.number(v, 4), self.size) for a in values for v in a.ravel())
        self.cell = max(self.cell, widest + 8)
        c = self.cell
        labels = _panel_labels(walk)
        self.a = (max(walk.padded.shape[1] * c, labels[0]), walk.padded.shape[0] * c)
        self.b = (max(walk.weights.shape[1] * c, 150, labels[1]), walk.weights.shape[0] * c)
        self.c = (max(walk.feature.shape[1] * c, labels[2]), walk.feature.shape[0] * c)
        self.top = PAD + TITLE_SIZE + 14 + LABEL_SIZE + 8
        self.xa = PAD
        self.xb = self.xa + self.a[0] + PANEL_GAP
        self.xc = self.xb + self.b[0] + PANEL_GAP
        kh, kw = walk.weights.shape
        text_lines = kh + 1 if max(kh, kw) <= PRODUCTS_UP_TO else 1
        self.text_y = self.top + max(self.a[1], self.b[1], self.c[1]) + 16
        texts = _all_texts(walk)
        self.width = max(self.xc + self.c[0] + PAD, max(draw.text_width(t, TEXT_SIZE) for t in texts) + 2 * PAD)
        self.height = self.text_y + max(text_lines, 2) * LINE + PAD


def _panel_labels(walk: Walk) -> tuple[int, int, int]:
    """The widest label (or stage name) each of the three panels carries, in pixels:
    a panel is at least that wide, so no label runs into the next panel or off the frame."""
    def shape(a):
        return f"{a.shape[0]}x{a.shape[1]}"

    left = [f"input, padded {shape(walk.padded)}", f"feature map {shape(walk.feature)}"]
    right = [f"feature map {shape(walk.feature)}"]
    middle = [(f"kernel {shape(walk.weights)}", LABEL_SIZE)]
    if walk.rectified is not None:
        left.append(f"rectified map {shape(walk.rectified)}")
        right.append(f"rectified map {shape(walk.rectified)}")
        middle += [("ReLU", TEXT_SIZE + 2), ("max(0, x)", TEXT_SIZE + 2)]
    if walk.pool is not None:
        (ph, pw), (py, px) = walk.pool.size, walk.pool.stride
        right.append(f"pooled map {shape(walk.pool.result)}")
        middle += [(f"{walk.pool.kind} pooling", TEXT_SIZE + 2), (f"{ph}x{pw}, stride {py},{px}", TEXT_SIZE + 2)]
    return (max(draw.text_width(t, LABEL_SIZE) for t in left),
            max(draw.text_width(t, size) for t, size in middle),
            max(draw.text_width(t, LABEL_SIZE) for t in right))


def _all_texts(walk: Walk) -> list[str]:
    """The longest texts the frames write (for the width)."""
    texts = [_title(walk)] + ([ORIGIN_TEXT] if walk.origin is not None else [])
    kh, kw = walk.weights.shape
    sy, sx = walk.stride
    for oy in range(walk.feature.shape[0]):
        for ox in range(walk.feature.shape[1]):
            texts += _products(walk, oy * sy, ox * sx, walk.feature[oy, ox], oy, ox)
    if walk.pool is not None:
        current = walk.feature if walk.rectified is None else walk.rectified
        texts += [_pool_text(walk.pool, current, oy, ox) for oy in range(walk.pool.result.shape[0])
                  for ox in range(walk.pool.result.shape[1])]
        texts.append(pool_summary(walk.pool))
    return texts


def _title(walk: Walk) -> str:
    kh, kw = walk.weights.shape
    padded = any(p for pair in walk.pads for p in pair)
    border = f", border value {draw.number(walk.cval, 4)}" if padded and walk.cval else ""
    origin = f", origin {walk.origin[0]},{walk.origin[1]}" if walk.origin is not None else ""
    return (f"input {walk.x.shape[0]}x{walk.x.shape[1]}, kernel {walk.kernel_name} {kh}x{kw}{origin}, "
            f"stride {walk.stride[0]},{walk.stride[1]}, padding {walk.padding}{border}: "
            f"feature map {walk.feature.shape[0]}x{walk.feature.shape[1]}")


def _products(walk: Walk, y0: int, x0: int, total, oy: int, ox: int) -> list[str]:
    kh, kw = walk.weights.shape
    head = f"out[{oy},{ox}] = "
    if max(kh, kw) > PRODUCTS_UP_TO:
        return [f"{head}the sum of {kh * kw} products (input x weight) = {draw.number(total, 4)}"]
    window = walk.padded[y0:y0 + kh, x0:x0 + kw]
    rows = [" + ".join(f"{_factor(a)}\u00b7{_factor(b)}" for a, b in zip(window[i], walk.weights[i]))
            for i in range(kh)]
    pad = " " * len(head)
    lines = [(head if i == 0 else pad) + r + (" +" if i < kh - 1 else "") for i, r in enumerate(rows)]
    return lines + [f"{pad}= {draw.number(total, 4)}"]


def _factor(v) -> str:
    """A number in a product: negative ones in parentheses, ``2·(-1)``."""
    text = draw.number(v, 4)
    return f"({text})" if text.startswith("-") else text


def _pool_text(pool: PoolStep, current: np.ndarray, oy: int, ox: int) -> str:
    (ph, pw), (py, px) = pool.size, pool.stride
    win = current[oy * py:oy * py + ph, ox * px:ox * px + pw]
    return (f"out[{oy},{ox}] = {pool.kind}({', '.join(draw.number(v, 4) for v in win.ravel())}) = "
            f"{draw.number(pool.result[oy, ox], 4)}")


#: The most frames an animation may have (a 16x16 input at stride 1 with
#: "same" padding, ReLU and 2x2 pooling has 324).
MAX_FRAMES = 400


def frames(walk: Walk) -> list[tuple]:
    """The animation's frames, drawn when asked: ``(draw, milliseconds)`` pairs,
    where ``draw()`` returns the frame as an RGB Pillow image (all one size).
    Refuses (a usage error) more than :data:`MAX_FRAMES`."""
    lay = _Layout(walk)
    span = draw.symmetric_span(walk.feature)
    sy, sx = walk.stride
    oh, ow = walk.feature.shape
    n_pool = 0 if walk.pool is None else walk.pool.result.size + 1
    count = 2 + oh * ow + (walk.rectified is not None) + n_pool
    if count > MAX_FRAMES:
        raise UsageError(f"an animation of {count} frames ({oh}x{ow} positions) is more than {MAX_FRAMES}; "
                         "use a smaller input, a larger --stride or less --padding")
    intro = ["slide the kernel over the input; each position gives one number"]
    if walk.origin is not None:
        intro.append(ORIGIN_TEXT)
    out = [(lambda: _conv_frame(walk, lay, span, None, intro), INTRO_MS)]
    for oy in range(oh):
        for ox in range(ow):
            lines = _products(walk, oy * sy, ox * sx, walk.feature[oy, ox], oy, ox)
            out.append((lambda at=(oy, ox), lines=lines: _conv_frame(walk, lay, span, at, lines), STEP_MS))
    done = [f"feature map {oh}x{ow}: the sum at every position"]
    out.append((lambda: _conv_frame(walk, lay, span, oh * ow, done), DONE_MS))
    current = walk.feature
    if walk.rectified is not None:
        out.append((lambda: _map_frame(walk, lay, ("feature map", walk.feature, span), ("ReLU", "max(0, x)"),
                                       ("rectified map", walk.rectified, span), None, None,
                                       ["ReLU: every negative value becomes 0; the others stay"]), STAGE_MS))
        current = walk.rectified
    if walk.pool is not None:
        out += _pool_frames(walk, lay, span, current)
    else:
        out[-1] = (out[-1][0], LAST_MS)
    return out


def _pool_frames(walk: Walk, lay: _Layout, span, current: np.ndarray) -> list[tuple]:
    pool = walk.pool
    (ph, pw), (py, px) = pool.size, pool.stride
    before = "rectified map" if walk.rectified is not None else "feature map"
    words = (f"{pool.kind} pooling", f"{ph}x{pw}, stride {py},{px}")
    n = pool.result.size
    out = []
    for i in range(n + 1):
        at = divmod(i, pool.result.shape[1]) if i < n else None
        lines = [_pool_text(pool, current, *at)] if at else [pool_summary(pool)]
        out.append((lambda at=at, i=i, lines=lines: _map_frame(
            walk, lay, (before, current, span), words, ("pooled map", pool.result, span), at, i, lines),
            POOL_MS if at else LAST_MS))
    return out


#: What each pooling keeps of its window, in the last frame's sentence.
POOL_WORDS = {"max": "the largest value", "avg": "the mean", "sum": "the sum"}


def pool_summary(pool: PoolStep) -> str:
    """The last frame's sentence: the pooled map and what each of its cells holds."""
    (h, w), (ph, pw), (py, px) = pool.result.shape, pool.size, pool.stride
    return (f"pooled map {h}x{w}: {POOL_WORDS.get(pool.kind, pool.kind)} of each {ph}x{pw} window, "
            f"stride {py},{px}")


def _canvas(walk: Walk, lay: _Layout, labels):
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (lay.width, lay.height), draw.BACKGROUND)
    pen = ImageDraw.Draw(img)
    pen.text((PAD, PAD), _title(walk), fill=draw.INK, font=draw.font(TITLE_SIZE))
    for x, label in zip((lay.xa, lay.xb, lay.xc), labels):
        pen.text((x, lay.top - LABEL_SIZE - 6), label, fill=draw.DIM, font=draw.font(LABEL_SIZE))
    return img, pen


def _text(pen, lay: _Layout, lines) -> None:
    for i, line in enumerate(lines):
        pen.text((PAD, lay.text_y + i * LINE), line, fill=draw.INK, font=draw.font(TEXT_SIZE))


def _grid(pen, lay: _Layout, x: int, values: np.ndarray, fills, shown=None) -> None:
    """A grid of numbers at ``(x, lay.top)``: ``fills[i][j]`` the cell colours,
    ``shown`` (a boolean mask) the cells whose numbers are written."""
    c = lay.cell
    for (i, j), v in np.ndenumerate(values):
        box = (x + j * c, lay.top + i * c, x + (j + 1) * c, lay.top + (i + 1) * c)
        pen.rectangle(box, fill=tuple(int(t) for t in fills[i][j]), outline=draw.BACKGROUND)
        if shown is None or shown[i, j]:
            draw.centred_text(pen, box, draw.number(v, 4), lay.size, fill=draw.ink_on(fills[i][j]))


def _coloured(values: np.ndarray, span) -> np.ndarray:
    return colormaps.colorize(values.astype(np.float32), "diverging", span)


def _outline(pen, lay: _Layout, x: int, y0: int, x0: int, h: int, w: int, colour=WINDOW) -> None:
    c = lay.cell
    box = (x + x0 * c, lay.top + y0 * c, x + (x0 + w) * c, lay.top + (y0 + h) * c)
    pen.rectangle(box, outline=colour, width=3)


def _conv_frame(walk: Walk, lay: _Layout, span, at, lines):
    """``at``: None (before), (oy, ox) the window now, or the number of cells done."""
    ph, pw = walk.padded.shape
    oh, ow = walk.feature.shape
    kh, kw = walk.weights.shape
    sy, sx = walk.stride
    (top, _), (left, _) = walk.pads
    img, pen = _canvas(walk, lay, [f"input, padded {ph}x{pw}", f"kernel {kh}x{kw}", f"feature map {oh}x{ow}"])
    inside = np.zeros((ph, pw), bool)
    inside[top:top + walk.x.shape[0], left:left + walk.x.shape[1]] = True
    fills = np.where(inside[..., None], np.array(INPUT_FILL), np.array(PADDING_FILL))
    done = (at[0] * ow + at[1]) if isinstance(at, tuple) else (at or 0)
    if isinstance(at, tuple):
        y0, x0 = at[0] * sy, at[1] * sx
        fills[y0:y0 + kh, x0:x0 + kw] = WINDOW_FILL
    _grid(pen, lay, lay.xa, walk.padded, fills)
    _grid(pen, lay, lay.xb, walk.weights, _coloured(walk.weights, draw.symmetric_span(walk.weights)))
    filled = (np.arange(oh * ow).reshape(oh, ow) < done + (1 if isinstance(at, tuple) else 0))
    feature_fills = np.where(filled[..., None], _coloured(walk.feature, span), np.array(EMPTY_FILL))
    _grid(pen, lay, lay.xc, walk.feature, feature_fills, filled)
    if walk.origin is not None:
        _outline(pen, lay, lay.xb, walk.origin[0], walk.origin[1], 1, 1, ORIGIN)
    if isinstance(at, tuple):
        _outline(pen, lay, lay.xa, y0, x0, kh, kw)
        if walk.origin is not None:
            _outline(pen, lay, lay.xa, y0 + walk.origin[0], x0 + walk.origin[1], 1, 1, ORIGIN)
        _outline(pen, lay, lay.xc, at[0], at[1], 1, 1)
        _weights_in_window(pen, lay, walk, y0, x0)
    _text(pen, lay, lines)
    return img


def _weights_in_window(pen, lay: _Layout, walk: Walk, y0: int, x0: int) -> None:
    """Each window cell's kernel weight, small, in its lower right corner (as the articles draw it).
    (Pillow's bundled font has no multiplication sign: an x here, a middle dot in the products.)"""
    c = lay.cell
    size = max(9, lay.size * 2 // 3)
    for (i, j), wv in np.ndenumerate(walk.weights):
        corner = (lay.xa + (x0 + j + 1) * c - 2, lay.top + (y0 + i + 1) * c - 1)
        pen.text(corner, f"x{draw.number(wv, 3)}", fill=WEIGHT_INK, font=draw.font(size), anchor="rd")


def _map_frame(walk: Walk, lay: _Layout, left, words, right, at, done, lines):
    """A stage frame: the map before (``left``), the stage's name (``words``),
    the map after (``right``, filled up to cell ``done``; all with None), the
    pooling window ``at`` outlined on both."""
    (lname, lvals, lspan), (rname, rvals, rspan) = left, right
    img, pen = _canvas(walk, lay, [f"{lname} {lvals.shape[0]}x{lvals.shape[1]}", "",
                                   f"{rname} {rvals.shape[0]}x{rvals.shape[1]}"])
    _grid(pen, lay, lay.xa, lvals, _coloured(lvals, lspan))
    shown = np.ones(rvals.shape, bool) if done is None else (np.arange(rvals.size).reshape(rvals.shape) <= done)
    fills = np.where(shown[..., None], _coloured(rvals, rspan), np.array(EMPTY_FILL))
    _grid(pen, lay, lay.xc, rvals, fills, shown)
    for k, word in enumerate(words):
        pen.text((lay.xb, lay.top + k * (TEXT_SIZE + 8)), word, fill=draw.INK, font=draw.font(TEXT_SIZE + 2))
    if at is not None:
        (ph, pw), (py, px) = walk.pool.size, walk.pool.stride
        _outline(pen, lay, lay.xa, at[0] * py, at[1] * px, ph, pw)
        _outline(pen, lay, lay.xc, at[0], at[1], 1, 1)
    _text(pen, lay, lines)
    return img

"""Colormaps: one channel of float values to RGB pixels.

``gray`` is no colormap at all: the values are written as they are (with
``--scaling`` and ``--offset``). ``diverging`` puts 0 at a light neutral gray
and negative and positive values in blue and red on a symmetric scale,
``-m .. +m``, so the two signs of an edge map show apart. ``heat`` runs from
black through red and yellow to white over ``lo .. hi``. NaN is drawn black.

The ends of the scale leave out the extreme :data:`TAIL` of the values
(``m`` is the 99.5th percentile of the absolute values; ``lo`` and ``hi``
the 0.5th and 99.5th percentiles), which are drawn in the end colours: a
feature map's few strongest responses would otherwise push every other
value into the pale middle. Maps of up to :data:`EXACT_UP_TO` values (the
articles' small examples) use their exact extremes.
"""

from __future__ import annotations

import numpy as np

from ..errors import UsageError

COLORMAPS = ("gray", "diverging", "heat")

#: Anchors (position in 0..1, RGB) of each colormap's 256-entry table.
_ANCHORS = {
    "gray": [(0.0, (0, 0, 0)), (1.0, (255, 255, 255))],
    "diverging": [(0.0, (33, 102, 172)), (0.25, (146, 197, 222)), (0.5, (242, 242, 242)),
                  (0.75, (244, 165, 130)), (1.0, (178, 24, 43))],
    "heat": [(0.0, (0, 0, 0)), (0.35, (190, 30, 0)), (0.7, (255, 200, 0)), (1.0, (255, 255, 255))],
}

NAN_COLOUR = (0, 0, 0)

#: Percent of the values left beyond each end of the scale.
TAIL = 0.5
#: Maps of at most this many values are scaled to their exact extremes.
EXACT_UP_TO = 1024


def table(name: str) -> np.ndarray:
    """The colormap's 256 x 3 uint8 table (index 0 for the low end)."""
    check(name)
    stops = _ANCHORS[name]
    at = np.linspace(0.0, 1.0, 256)
    where = [p for p, _ in stops]
    rgb = [np.interp(at, where, [c[i] for _, c in stops]) for i in range(3)]
    return np.rint(np.stack(rgb, axis=1)).astype(np.uint8)


def check(name: str) -> str:
    if name not in COLORMAPS:
        raise UsageError(f"colormap must be one of {', '.join(COLORMAPS)}, got {name!r}")
    return name


def value_range(values: np.ndarray, name: str) -> tuple[float, float]:
    """The values drawn at the low and high ends: ``-m, +m`` for ``diverging``,
    else ``lo, hi`` (see the module's notes; 0, 0 when no value is finite)."""
    finite = values[np.isfinite(values)].astype(np.float64)
    if finite.size == 0:
        return 0.0, 0.0
    exact = finite.size <= EXACT_UP_TO
    if name == "diverging":
        size = np.abs(finite)
        m = float(size.max()) if exact else float(np.percentile(size, 100 - TAIL))
        return -(m or float(size.max())), m or float(size.max())
    if exact:
        return float(finite.min()), float(finite.max())
    lo, hi = (float(v) for v in np.percentile(finite, [TAIL, 100 - TAIL]))
    return (lo, hi) if hi > lo else (float(finite.min()), float(finite.max()))


def indices(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Each value's place in a 256-entry table spanning ``lo..hi`` (the middle when
    ``lo == hi``); -1 for NaN. Infinities land at the ends."""
    v = np.asarray(values, dtype=np.float64)
    if hi > lo:
        t = (v - lo) * (255.0 / (hi - lo))
    else:
        t = np.full(v.shape, 127.5)
    with np.errstate(invalid="ignore"):
        idx = np.clip(np.floor(t + 0.5), 0, 255)
    return np.where(np.isnan(v), -1, np.nan_to_num(idx)).astype(np.int16)


def colorize(values: np.ndarray, name: str, value_span: tuple[float, float] | None = None) -> np.ndarray:
    """One channel of values as ``H x W x 3`` uint8 RGB through the colormap,
    over ``value_span`` (default :func:`value_range`)."""
    lut = table(name)
    lo, hi = value_span if value_span is not None else value_range(values, name)
    idx = indices(values, lo, hi)
    out = lut[np.maximum(idx, 0)]
    out[idx < 0] = NAN_COLOUR
    return out

"""``kernelcli explain``: the arithmetic of a convolution, as text.

Every number shown comes from the engine (the feature map, the ReLU and the
pooled map); the products listed for each window are the terms whose sum the
engine computed, so a reader can check them by hand.
"""

from __future__ import annotations

import math
import os

import numpy as np

from . import engine
from .errors import UsageError
from .kernel_forms import Kernel, parse_inline
from .kernel_forms import format_number as _fmt_finite

MAX_SIDE = 16
#: The padded input shown is at most this many rows and columns: the text
#: grows with it (every window's products are listed).
MAX_PADDED_SIDE = 2 * MAX_SIDE


def _fmt(v) -> str:
    """A number as the explanation shows it (nan, inf and -inf too)."""
    v = float(v)
    return _fmt_finite(v) if math.isfinite(v) else str(v)


def load_small_input(spec: str) -> np.ndarray:
    """An inline matrix, or a small .npy / gray image file."""
    if not os.path.exists(spec) and (";" in spec or "," in spec or spec.replace(" ", "").isdigit()):
        arr = parse_inline(spec).values.astype(np.float32)
    else:
        from .io.inputs import read_image

        arr = read_image(spec).pixels
        if arr.ndim == 3:
            if arr.shape[2] != 1:
                raise UsageError(f"explain takes one channel; {spec} has {arr.shape[2]} (use a gray image or an H x W .npy)")
            arr = arr[..., 0]
    if max(arr.shape) > MAX_SIDE:
        raise UsageError(f"explain is for small inputs (up to {MAX_SIDE}x{MAX_SIDE}); this one is {arr.shape[0]}x{arr.shape[1]}")
    return arr


def _grid(a: np.ndarray, indent: str = "  ") -> str:
    cells = [[_fmt(v) for v in row] for row in a]
    width = max(len(c) for row in cells for c in row)
    return "\n".join(indent + " ".join(c.rjust(width) for c in row) for row in cells)


def _axis_rule(name: str, n: int, k: int, pad: tuple[int, int], s: int) -> str:
    out = engine.output_size(n, k, pad, s)
    return (f"  {name}: floor(({n} + {pad[0]} + {pad[1]} - {k}) / {s}) + 1 = "
            f"floor({n + pad[0] + pad[1] - k} / {s}) + 1 = {out}")


def walkthrough(kernel: Kernel, input_spec: str, stride=(1, 1), padding="valid", relu=False,
                pool=None, pool_size=(2, 2), pool_stride=None, cval=0.0, origin=None):
    """Every number of the explanation, from the engine: a
    :class:`kernelcli.figures.animation.Walk` (text and animation share it)."""
    from .figures.animation import PoolStep, Walk

    if kernel.depth is not None:
        raise UsageError("explain shows 2-D kernels only")
    x = load_small_input(input_spec)
    w = kernel.array
    kh, kw = w.shape
    sy, sx = engine.pair(stride, "stride")
    if origin is None and kernel.origin is not None and padding == "same":
        origin = kernel.origin
    asked = padding
    if origin is not None:
        padding = engine.origin_padding((kh, kw), origin, padding)
    pads = engine.resolve_padding(padding, (kh, kw))
    padded_h, padded_w = x.shape[0] + sum(pads[0]), x.shape[1] + sum(pads[1])
    if max(padded_h, padded_w) > MAX_PADDED_SIDE:
        raise UsageError(f"explain shows padded inputs up to {MAX_PADDED_SIDE}x{MAX_PADDED_SIDE}; "
                         f"{x.shape[0]}x{x.shape[1]} with padding {engine.padding_text(padding, pads)} "
                         f"is {padded_h}x{padded_w} (use less --padding)")
    feature = engine.convolve(x, kernel, stride=(sy, sx), padding=padding, cval=cval)
    rectified = engine.relu(feature) if relu else None
    pooled = None
    if pool:
        ph, pw = engine.pair(pool_size, "pool size")
        py, px = engine.pair(pool_stride or (ph, pw), "pool stride")
        current = feature if rectified is None else rectified
        pooled = PoolStep(pool, (ph, pw), (py, px), engine.pool(current, pool, (ph, pw), (py, px)))
    padding_word = asked if isinstance(asked, str) else str(pads[0][0])
    padded = np.pad(x, pads, constant_values=np.float32(cval))
    return Walk(kernel.name, w, x, padded, pads, (sy, sx), padding_word, feature, rectified, pooled,
                float(cval), origin)


def explain(kernel: Kernel, input_spec: str, stride=(1, 1), padding="valid", relu=False,
            pool=None, pool_size=(2, 2), pool_stride=None, cval=0.0, origin=None) -> str:
    walk = walkthrough(kernel, input_spec, stride, padding, relu, pool, pool_size, pool_stride, cval, origin)
    x, w, padded, pads, feature, origin = walk.x, walk.weights, walk.padded, walk.pads, walk.feature, walk.origin
    kh, kw = w.shape
    sy, sx = walk.stride
    lines = [
        f"input {x.shape[0]}x{x.shape[1]}, kernel {kernel.name} {kh}x{kw}, stride {sy},{sx}, "
        f"padding {walk.padding} "
        f"(rows {pads[0][0]}+{pads[0][1]}, columns {pads[1][0]}+{pads[1][1]})"
        + (f", border value {_fmt(walk.cval)}" if walk.cval else ""),
        "",
        "kernel (the filter slides over the input without being flipped: cross-correlation):",
        _grid(w), *([f"origin: row {origin[0]}, column {origin[1]} (the kernel cell over each output pixel; "
                     f"padding {pads[0][0]} rows before, {pads[1][0]} columns before)"] if origin is not None else []),
        "",
        f"padded input ({padded.shape[0]}x{padded.shape[1]}):", _grid(padded), "",
        "output size = floor((N + pad before + pad after - K) / stride) + 1",
        _axis_rule("rows", x.shape[0], kh, pads[0], sy),
        _axis_rule("columns", x.shape[1], kw, pads[1], sx), "",
        "each output = sum of (kernel x the window under it):",
    ]
    for oy in range(feature.shape[0]):
        for ox in range(feature.shape[1]):
            y0, x0 = oy * sy, ox * sx
            window = padded[y0:y0 + kh, x0:x0 + kw]
            terms = " + ".join(f"{_fmt(a)}*{_fmt(b)}" for a, b in zip(window.ravel(), w.ravel()))
            lines.append(f"  out[{oy},{ox}]  rows {y0}-{y0 + kh - 1}, cols {x0}-{x0 + kw - 1}:  "
                         f"{terms} = {_fmt(feature[oy, ox])}")
    lines += ["", f"feature map ({feature.shape[0]}x{feature.shape[1]}):", _grid(feature)]
    if np.isnan(feature).any():
        lines.append("  (nan: the window read a NaN, which spreads to every sum it is part of)")
    if np.isinf(feature).any():
        lines.append("  (inf: the sum is beyond float32's range, about 3.4e38)")
    current = feature
    if walk.rectified is not None:
        current = walk.rectified
        lines += ["", "after ReLU (negative values become 0):", _grid(current)]
    if walk.pool is not None:
        (ph, pw), (py, px), pooled, pool = walk.pool.size, walk.pool.stride, walk.pool.result, walk.pool.kind
        lines += ["", f"{pool} pooling, window {ph}x{pw}, stride {py},{px}, no padding:",
                  f"  rows: floor(({current.shape[0]} - {ph}) / {py}) + 1 = {pooled.shape[0]}",
                  f"  columns: floor(({current.shape[1]} - {pw}) / {px}) + 1 = {pooled.shape[1]}"]
        for oy in range(pooled.shape[0]):
            for ox in range(pooled.shape[1]):
                win = current[oy * py:oy * py + ph, ox * px:ox * px + pw]
                lines.append(f"  out[{oy},{ox}] = {pool}({', '.join(_fmt(v) for v in win.ravel())}) = {_fmt(pooled[oy, ox])}")
        lines += ["", f"pooled map ({pooled.shape[0]}x{pooled.shape[1]}):", _grid(pooled)]
    return "\n".join(lines)

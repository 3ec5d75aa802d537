"""Stages of a feature-extraction layer, composed: (gray) -> conv -> (ReLU) -> (pool).

This is where image semantics meet the engine: colour channels are filtered
one by one with the same 2-D kernel, and alpha is handled as ``alpha`` says:

``keep`` (default)
    Alpha is not filtered. It follows the output geometry, as if filtered with
    ``identity`` (same size, stride, padding, dilation), and is pooled with
    ``max`` for max pooling and ``avg`` otherwise.
``premultiply``
    Colour is multiplied by alpha, every channel (alpha too) is filtered, and
    colour is divided by the filtered alpha again (0 where alpha is 0).
``filter``
    Alpha is filtered like any colour channel (what ImageMagick and libvips do).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import engine
from .errors import UsageError
from .images import Picture
from .kernels import Kernel, get_kernel

ALPHA_MODES = ("keep", "premultiply", "filter")

#: ITU-R 601-2 luma, as Pillow's ``convert("L")`` uses.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class Conv:
    """The convolution stage's settings."""

    kernel: Kernel
    stride: object = 1
    padding: object = "same"
    pad_mode: str = "zero"
    dilation: object = 1
    flip: bool = False

    def run(self, x: np.ndarray, kernel: Kernel | None = None) -> np.ndarray:
        return engine.convolve(x, kernel or self.kernel, stride=self.stride, padding=self.padding,
                               pad_mode=self.pad_mode, dilation=self.dilation, flip=self.flip)

    def follow(self, x: np.ndarray) -> np.ndarray:
        """Move ``x`` through the same geometry without filtering it (identity kernel)."""
        kh, kw = self.kernel.shape
        ident = np.zeros((kh, kw))
        ident[(kh - 1) // 2, (kw - 1) // 2] = 1.0
        return self.run(x, Kernel("identity", ident))


@dataclass(frozen=True)
class Pool:
    kind: str = "max"
    size: object = 2
    stride: object = None

    def run(self, x: np.ndarray, kind: str | None = None) -> np.ndarray:
        return engine.pool(x, kind or self.kind, self.size, self.stride)


def to_gray(picture: Picture) -> Picture:
    """One luminance channel (alpha, if any, is kept)."""
    px = picture.pixels
    if px.ndim == 2 or px.shape[2] == 1:
        return picture
    colour_bands = px.shape[2] - (1 if picture.has_alpha else 0)
    if colour_bands == 1:
        return picture
    if colour_bands != 3:
        raise UsageError(f"--gray needs 3 colour channels (RGB), this input has {px.shape[2]}")
    luma = np.tensordot(px[..., :3], LUMA, axes=([2], [0])).astype(np.float32)
    if picture.has_alpha:
        return Picture(np.dstack([luma, px[..., 3]]), "LA", picture.source_format, picture.info, list(picture.notes))
    mode = None if picture.mode is None else "L"
    return Picture(np.ascontiguousarray(luma), mode, picture.source_format, picture.info, list(picture.notes))


def apply(picture: Picture, conv: Conv, relu: bool = False, pool: Pool | None = None,
          gray: bool = False, alpha: str = "keep") -> Picture:
    """Run the layer on a Picture and return a new Picture (same mode and metadata)."""
    if alpha not in ALPHA_MODES:
        raise UsageError(f"alpha must be one of {', '.join(ALPHA_MODES)}, got {alpha!r}")
    if gray:
        picture = to_gray(picture)
    px = picture.pixels
    if not picture.has_alpha or alpha == "filter":
        out = _layer(px, conv, relu, pool)
        return picture.with_pixels(out)
    colour, a = px[..., :-1], px[..., -1]
    if alpha == "premultiply":
        top = np.float32(picture.max_value)
        weight = a / top
        pre = np.dstack([colour * weight[..., None], a])
        filtered = _layer(pre, conv, relu, pool)
        fa = filtered[..., -1]
        scale = np.divide(top, fa, out=np.zeros_like(fa), where=fa > 0)
        colour_out = filtered[..., :-1] * scale[..., None]
        return picture.with_pixels(np.dstack([colour_out, fa]).astype(np.float32))
    colour_out = _layer(colour, conv, relu, pool)
    a_out = conv.follow(a)
    if pool is not None:
        a_out = pool.run(a_out, "max" if pool.kind == "max" else "avg")
    if colour_out.ndim == 2:
        colour_out = colour_out[..., None]
    return picture.with_pixels(np.dstack([colour_out, a_out]).astype(np.float32, copy=False))


def _layer(x: np.ndarray, conv: Conv, relu: bool, pool: Pool | None) -> np.ndarray:
    y = conv.run(x)
    if relu:
        y = engine.relu(y)
    if pool is not None:
        y = pool.run(y)
    return y


def make_conv(kernel_spec, stride=1, padding="same", pad_mode="zero", dilation=1,
              flip=False, normalize=False) -> tuple[Conv, list[str]]:
    """Build the conv stage from user-facing values; returns it with notes to show."""
    kernel = get_kernel(kernel_spec)
    notes = []
    if normalize:
        kernel, changed = kernel.normalized()
        if not changed:
            notes.append(f"kernel {kernel.name} sums to 0; --normalize left it as it is")
    return Conv(kernel, stride, padding, pad_mode, dilation, flip), notes

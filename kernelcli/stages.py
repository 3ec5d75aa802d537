"""The stages of a feature-extraction layer: (gray) -> conv -> (ReLU) -> (pool).

Each stage takes a :class:`~kernelcli.io.picture.Picture` and returns a new one, so
``kernelcli apply`` (all stages in one process) and a shell pipeline of
``kernelcli conv | kernelcli relu | kernelcli pool`` run exactly the same code
on exactly the same numbers.

Colour channels are filtered one by one with the same 2-D kernel. Alpha is
handled by the conv stage as ``alpha`` says:

``keep`` (default)
    Alpha is not filtered. It follows the output geometry, as if filtered with
    ``identity`` (same size, stride, padding, dilation).
``premultiply``
    Colour is multiplied by alpha, every channel (alpha too) is filtered, and
    colour is divided by the filtered alpha again (0 where alpha is 0).
``filter``
    Alpha is filtered like any colour channel (what ImageMagick and libvips do).

After the conv stage, ReLU acts on colour only, and pooling pools alpha with
``max`` for max pooling and ``avg`` otherwise.

A filter bank (several kernels) gives a stack of feature maps, one channel per
kernel and input colour channel, kernel-major: for kernels ``k1, k2`` on RGB the
channels are ``k1:R k1:G k1:B k2:R k2:G k2:B``. A ``K x K x C`` kernel sums over
the input's C channels and gives one map. Stacks carry no alpha.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import engine
from .errors import UsageError
from .io.picture import MODES, Picture, depth_of, layout_of
from .kernels import Kernel, get_kernels

ALPHA_MODES = ("keep", "premultiply", "filter")

#: ITU-R 601-2 luma, as Pillow's ``convert("L")`` uses.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_CHANNEL_NAMES = {"L": "L", "LA": "L", "RGB": "RGB", "RGBA": "RGB"}


@dataclass(frozen=True)
class Conv:
    """The convolution stage's settings: one kernel, or several (a filter bank)."""

    kernels: tuple
    stride: object = 1
    padding: object = "same"
    pad_mode: str = "zero"
    dilation: object = 1
    flip: bool = False

    @property
    def kernel(self) -> Kernel:
        return self.kernels[0]

    @property
    def is_bank(self) -> bool:
        return len(self.kernels) > 1 or self.kernels[0].depth is not None

    def run(self, x: np.ndarray, kernel: Kernel) -> np.ndarray:
        return engine.convolve(x, kernel, stride=self.stride, padding=self.padding,
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


@dataclass(frozen=True)
class Relu:
    """The ReLU stage: negatives times ``slope`` (0: set to 0)."""

    slope: float = 0.0


@dataclass(frozen=True)
class Stages:
    """One run's stages: ``conv``, then ReLU and pooling if asked, on
    luminance (``gray``) or every colour channel, alpha as ``alpha`` says
    (:data:`ALPHA_MODES`), in linear light if ``linear``. The same bundle serves a single file, a folder,
    bands and the cluster."""

    conv: Conv
    relu: bool = False
    pool: Pool | None = None
    gray: bool = False
    alpha: str = "keep"
    #: Filter in linear light: values decoded (the ICC profile's curve, else sRGB's) before the stages, encoded after.
    linear: bool = False


def make_conv(kernel_spec, stride=1, padding="same", pad_mode="zero", dilation=1,
              flip=False, normalize=False) -> tuple[Conv, list[str]]:
    """Build the conv stage from user-facing values; returns it with notes to show."""
    kernels = kernel_spec if isinstance(kernel_spec, (list, tuple)) else get_kernels(kernel_spec)
    notes, ready = [], []
    for kernel in kernels:
        if normalize:
            kernel, changed = kernel.normalized()
            if not changed:
                notes.append(f"kernel {kernel.name} sums to 0; --normalize left it as it is")
        ready.append(kernel)
    if len(ready) > 1 and any(k.shape != ready[0].shape for k in ready):
        sizes = ", ".join(f"{k.name} {k.shape[0]}x{k.shape[1]}" for k in ready)
        raise UsageError(f"the kernels of a bank must have one size, got {sizes}")
    if len(ready) > 1 and any(k.depth is not None for k in ready):
        raise UsageError("a filter bank takes 2-D kernels; a K x K x C kernel goes alone")
    return Conv(tuple(ready), stride, padding, pad_mode, dilation, flip), notes


# --------------------------------------------------------------------------
# stages


def luma_of(px: np.ndarray) -> np.ndarray:
    """``0.299 R + 0.587 G + 0.114 B`` in float32, added in that order.

    Element-wise on purpose: a BLAS product (``tensordot``, ``dot``, ``@``)
    picks its kernel by CPU and blocks by array shape, so a band of rows and
    the whole image would round differently, and so would two machines."""
    luma = px[..., 0].astype(np.float32) * LUMA[0]
    luma += px[..., 1].astype(np.float32) * LUMA[1]
    luma += px[..., 2].astype(np.float32) * LUMA[2]
    return luma


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
    luma = luma_of(px)
    if picture.has_alpha:
        return picture.with_pixels(np.dstack([luma, px[..., 3]]), mode=MODES["LA", depth_of(picture.mode)],
                                   labels=None)
    return picture.with_pixels(luma, mode=None if picture.mode is None else MODES["L", depth_of(picture.mode)],
                               labels=None)


def conv_stage(picture: Picture, conv: Conv, gray: bool = False, alpha: str = "keep") -> Picture:
    if alpha not in ALPHA_MODES:
        raise UsageError(f"alpha must be one of {', '.join(ALPHA_MODES)}, got {alpha!r}")
    if gray:
        picture = to_gray(picture)
    if conv.is_bank:
        return _bank(picture, conv)
    px, kernel = picture.pixels, conv.kernel
    if not picture.has_alpha or alpha == "filter":
        return picture.with_pixels(conv.run(px, kernel))
    colour, a = px[..., :-1], px[..., -1]
    if alpha == "premultiply":
        top = np.float32(picture.max_value)
        filtered = conv.run(np.dstack([colour * (a / top)[..., None], a]), kernel)
        fa = filtered[..., -1]
        scale = np.divide(top, fa, out=np.zeros_like(fa), where=fa > 0)
        colour_out = filtered[..., :-1] * scale[..., None]
        return picture.with_pixels(np.dstack([colour_out, fa]).astype(np.float32))
    colour_out = conv.run(colour, kernel)
    if colour_out.ndim == 2:
        colour_out = colour_out[..., None]
    return picture.with_pixels(np.dstack([colour_out, conv.follow(a)]).astype(np.float32, copy=False))


def _bank(picture: Picture, conv: Conv) -> Picture:
    px = picture.pixels
    dropped = picture.has_alpha
    if dropped:
        px = px[..., :-1]
    channel_names = _channel_names(picture, px)
    maps, labels = [], []
    for kernel in conv.kernels:
        y = conv.run(px, kernel)
        if y.ndim == 2:
            maps.append(y)
            labels.append(kernel.name)
        else:
            maps.extend(y[..., i] for i in range(y.shape[2]))
            labels.extend(f"{kernel.name}:{c}" for c in channel_names)
    stack = maps[0] if len(maps) == 1 else np.ascontiguousarray(np.stack(maps, axis=-1))
    result = picture.with_pixels(stack, mode=None, range_max=picture.max_value, labels=labels)
    if dropped:
        result.notes.append("alpha is not part of a stack of feature maps; dropped")
    return result


def _channel_names(picture: Picture, px: np.ndarray) -> list[str]:
    n = 1 if px.ndim == 2 else px.shape[2]
    if n == 1:
        return [""]
    names = _CHANNEL_NAMES.get(layout_of(picture.mode) or "", "")
    return list(names) if len(names) == n else [str(i) for i in range(n)]


def relu_stage(picture: Picture, slope: float = 0.0, inplace: bool = False) -> Picture:
    """ReLU on colour channels (alpha passes through).

    ``inplace=True`` reuses the picture's own buffer (when nothing else needs it).
    """
    px = picture.pixels
    if not picture.has_alpha:
        return picture.with_pixels(engine.relu(px, slope, inplace=inplace))
    out = px.copy()
    out[..., :-1] = engine.relu(px[..., :-1], slope)
    return picture.with_pixels(out)


def pool_stage(picture: Picture, pool: Pool) -> Picture:
    """Pool colour with ``pool.kind``; alpha with max (for max) or avg."""
    px = picture.pixels
    colour = engine.pool(px if not picture.has_alpha else px[..., :-1], pool.kind, pool.size, pool.stride)
    if not picture.has_alpha:
        return picture.with_pixels(colour)
    a = engine.pool(px[..., -1], "max" if pool.kind == "max" else "avg", pool.size, pool.stride)
    if colour.ndim == 2:
        colour = colour[..., None]
    return picture.with_pixels(np.dstack([colour, a]).astype(np.float32, copy=False))


def apply(picture: Picture, conv: Conv, relu: bool = False, pool: Pool | None = None,
          gray: bool = False, alpha: str = "keep", relu_slope: float = 0.0) -> Picture:
    """All stages in one go: the same numbers as running them one by one."""
    picture = conv_stage(picture, conv, gray=gray, alpha=alpha)
    if relu:
        picture = relu_stage(picture, relu_slope, inplace=True)  # the conv output is ours
    if pool is not None:
        picture = pool_stage(picture, pool)
    return picture

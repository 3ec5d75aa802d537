"""The stages of a feature-extraction layer: (gray) -> conv -> (ReLU or another activation) -> (pool).

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

After the conv stage, ReLU (or tanh, sigmoid, leaky ReLU) acts on colour only, and pooling pools alpha with
``max`` for max pooling and ``avg`` otherwise.

A filter bank (several kernels) gives a stack of feature maps, one channel per
kernel and input colour channel, kernel-major: for kernels ``k1, k2`` on RGB the
channels are ``k1:R k1:G k1:B k2:R k2:G k2:B``. A ``K x K x C`` kernel sums over
the input's C channels and gives one map. Stacks carry no alpha.

``combine`` reduces a bank's maps to one map per input channel, before ReLU
and pooling: ``magnitude`` (the square root of the sum of squares, as
``sqrt(sobel_x^2 + sobel_y^2)``), ``max``, ``min``, ``sum`` or ``mean``; the
result is a picture of the input's colour channels again (without alpha).

An unsharp mask with a threshold (``unsharp:RADIUS,AMOUNT,THRESHOLD``) keeps
the input value wherever the change the mask makes is smaller than
``THRESHOLD * range * AMOUNT / 2`` (that is, wherever twice the difference
between the input and its blur is smaller than ``THRESHOLD * range``, as
ImageMagick's ``UnsharpMaskImage`` compares them), the input being moved
through the same geometry as the output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import engine
from .errors import UsageError
from .io.picture import MODES, Picture, depth_of, layout_of
from .kernel_forms import turns
from .kernels import Kernel, get_kernels

ALPHA_MODES = ("keep", "premultiply", "filter")
COMBINE_MODES = ("magnitude", "max", "min", "sum", "mean")

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
    combine: str | None = None  # one of COMBINE_MODES: the bank's maps reduced to one per channel
    cval: float = 0.0  # the value of zero padding (pad mode zero: constant padding)
    origin: tuple | None = None  # the kernel cell over each output pixel (padding holds it), else the centre

    @property
    def kernel(self) -> Kernel:
        return self.kernels[0]

    @property
    def is_bank(self) -> bool:
        return len(self.kernels) > 1 or self.kernels[0].depth is not None

    def run(self, x: np.ndarray, kernel: Kernel) -> np.ndarray:
        return engine.convolve(x, kernel, stride=self.stride, padding=self.padding,
                               pad_mode=self.pad_mode, dilation=self.dilation, flip=self.flip, cval=self.cval)

    def filter(self, x: np.ndarray, kernel: Kernel, top: float) -> np.ndarray:
        """:meth:`run`, then a kernel's threshold (values ranging up to ``top``):
        outputs whose change is smaller than it keep the input's value."""
        y = self.run(x, kernel)
        if kernel.threshold:
            before = self.follow(x)
            small = np.abs(y - before) < np.float32(kernel.threshold * top * kernel.amount / 2)
            np.copyto(y, before, where=small)
        return y

    def follow(self, x: np.ndarray) -> np.ndarray:
        """Move ``x`` through the same geometry without filtering it (identity kernel)."""
        kh, kw = self.kernel.shape
        ident = np.zeros((kh, kw))
        ident[self.origin or ((kh - 1) // 2, (kw - 1) // 2)] = 1.0
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
class Activation:
    """The activation stage: ``kind`` (relu, leaky, tanh, sigmoid) and its
    ``param`` (leaky's slope; the factor tanh and sigmoid multiply the input
    by first), None for the default."""

    kind: str = "relu"
    param: float | None = None

    def __str__(self) -> str:
        return self.kind if self.param is None else f"{self.kind}:{self.param:g}"

    @property
    def clipped_away(self) -> bool:
        """Does clipping to ``0..top`` afterwards undo it (ReLU, or a leaky
        slope of 0 or more: every negative ends at 0 either way)?"""
        return self.kind == "relu" or (self.kind == "leaky" and (self.param is None or self.param >= 0))


#: What ``--activation`` and ``kernelcli activate`` take.
ACTIVATION_FORMS = "relu, leaky[:SLOPE], tanh[:K] or sigmoid[:K]"


def parse_activation(text: str) -> Activation:
    """``relu``, ``leaky:S``, ``tanh:K``, ``sigmoid:K``; a parameter may be
    a fraction (``tanh:1/255``)."""
    kind, _, param = str(text).strip().lower().partition(":")
    if kind not in engine.ACTIVATIONS:
        raise UsageError(f"unknown activation {text!r}; use {ACTIVATION_FORMS}")
    if not param:
        return Activation(kind)
    if kind == "relu":
        raise UsageError(f"relu takes no parameter, got {text!r} (leaky:SLOPE lets negatives through)")
    try:
        top, _, bottom = param.partition("/")
        value = float(top) / float(bottom) if bottom else float(top)
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"{text!r}: the parameter after ':' must be a number or a fraction like 1/255") from None
    if not np.isfinite(value):
        raise UsageError(f"{text!r}: the parameter after ':' must be a finite number")
    return Activation(kind, value)


@dataclass(frozen=True)
class Stages:
    """One run's stages: ``conv``, then ReLU and pooling if asked, on
    luminance (``gray``) or every colour channel, alpha as ``alpha`` says
    (:data:`ALPHA_MODES`), in linear light if ``linear``. The same bundle serves a single file, a folder,
    bands and the cluster."""

    conv: Conv
    relu: bool | Activation = False  # True: ReLU; an Activation: that one
    pool: Pool | None = None
    gray: bool = False
    alpha: str = "keep"
    #: Filter in linear light: values decoded (the ICC profile's curve, else sRGB's) before the stages, encoded after.
    linear: bool = False


def make_conv(kernel_spec, stride=1, padding="same", pad_mode="zero", dilation=1,
              flip=False, normalize=False, combine=None, cval=0.0, origin=None,
              rotate=None, rotations=None) -> tuple[Conv, list[str]]:
    """Build the conv stage from user-facing values; returns it with notes to show.

    ``origin`` (``(Y, X)``, else the kernels' own, else the centre) becomes
    the explicit padding that puts that cell over each output pixel.
    ``rotate`` (45 or 90) makes a bank of each kernel's turns in that step
    (``rotations`` of them; default a full turn)."""
    kernels = kernel_spec if isinstance(kernel_spec, (list, tuple)) else get_kernels(kernel_spec)
    if rotations is not None and rotate is None:
        raise UsageError("--rotations needs --rotate 45 or 90")
    if rotate is not None:
        kernels = [turned for kernel in kernels for turned in turns(kernel, rotate, rotations)]
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
    if combine is not None:
        if combine not in COMBINE_MODES:
            raise UsageError(f"combine must be one of {', '.join(COMBINE_MODES)}, got {combine!r}")
        if len(ready) < 2:
            raise UsageError(f"--combine {combine} needs a filter bank of two or more kernels "
                             "(such as sobel, or sobel-x,sobel-y)")
    padding, origin = _origin_padding(ready, origin, padding, dilation, flip)
    if cval and pad_mode != "zero":
        raise UsageError(f"--border-value is the constant of --pad-mode zero; --pad-mode {pad_mode} takes none")
    return Conv(tuple(ready), stride, padding, pad_mode, dilation, flip, combine, float(cval), origin), notes


def _origin_padding(kernels, origin, padding, dilation, flip):
    """``(padding, origin)``: ``padding`` made explicit for ``origin`` (or the
    kernels' own origin with ``same`` padding), and the origin it holds."""
    if origin is None:
        own = {k.origin for k in kernels}
        if len(own) > 1:
            raise UsageError("the kernels of a bank have different origins; give one with --origin")
        if own == {None} or not (isinstance(padding, str) and padding.strip().lower() == "same"):
            return padding, None
        origin = own.pop()
    origin = tuple(int(v) for v in origin)
    return engine.origin_padding(kernels[0].shape, engine.placed_origin(kernels[0], origin, flip), padding,
                                 dilation), origin


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
        return picture.with_pixels(conv.filter(px, kernel, picture.max_value))
    colour, a = px[..., :-1], px[..., -1]
    if alpha == "premultiply":
        top = np.float32(picture.max_value)
        filtered = conv.filter(np.dstack([colour * (a / top)[..., None], a]), kernel, picture.max_value)
        fa = filtered[..., -1]
        scale = np.divide(top, fa, out=np.zeros_like(fa), where=fa > 0)
        colour_out = filtered[..., :-1] * scale[..., None]
        return picture.with_pixels(np.dstack([colour_out, fa]).astype(np.float32))
    colour_out = conv.filter(colour, kernel, picture.max_value)
    if colour_out.ndim == 2:
        colour_out = colour_out[..., None]
    return picture.with_pixels(np.dstack([colour_out, conv.follow(a)]).astype(np.float32, copy=False))


def _bank(picture: Picture, conv: Conv) -> Picture:
    px = picture.pixels
    dropped = picture.has_alpha
    if dropped:
        px = px[..., :-1]
    channel_names = _channel_names(picture, px)
    if conv.combine:
        return _combined(picture, px, conv, channel_names)
    maps, labels = [], []
    for kernel in conv.kernels:
        y = conv.filter(px, kernel, picture.max_value)
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


def _combined(picture: Picture, px: np.ndarray, conv: Conv, channel_names: list[str]) -> Picture:
    """The bank's maps reduced to one per input channel as ``conv.combine``
    says, in float32, kernel by kernel (no stack of every map is made)."""
    how = conv.combine
    total = None
    for kernel in conv.kernels:
        y = conv.filter(px, kernel, picture.max_value)
        if total is None:
            total = y * y if how == "magnitude" else y
        elif how == "magnitude":
            total += y * y
        elif how in ("sum", "mean"):
            total += y
        elif how == "max":
            np.maximum(total, y, out=total)
        else:
            np.minimum(total, y, out=total)
    if how == "magnitude":
        np.sqrt(total, out=total)
    elif how == "mean":
        total /= np.float32(len(conv.kernels))
    what = f"{how}({','.join(k.name for k in conv.kernels)})"
    labels = [f"{what}:{c}" if c else what for c in channel_names]
    mode = {"LA": "L", "RGBA": "RGB"}.get(picture.mode, picture.mode)
    result = picture.with_pixels(total, mode=mode, labels=labels)
    if picture.has_alpha:
        result.notes.append("alpha is not part of combined feature maps; dropped")
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


def activation_stage(picture: Picture, activation: Activation, inplace: bool = False) -> Picture:
    """An activation on colour channels (alpha passes through)."""
    px = picture.pixels
    if not picture.has_alpha:
        return picture.with_pixels(engine.activate(px, activation.kind, activation.param, inplace=inplace))
    out = px.copy()
    out[..., :-1] = engine.activate(px[..., :-1], activation.kind, activation.param)
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


def apply(picture: Picture, conv: Conv, relu: bool | Activation = False, pool: Pool | None = None,
          gray: bool = False, alpha: str = "keep", relu_slope: float = 0.0) -> Picture:
    """All stages in one go: the same numbers as running them one by one.
    ``relu``: True for ReLU (``relu_slope`` for a leaky one), or an :class:`Activation`."""
    picture = conv_stage(picture, conv, gray=gray, alpha=alpha)
    if isinstance(relu, Activation):
        picture = activation_stage(picture, relu, inplace=True)  # the conv output is ours
    elif relu:
        picture = relu_stage(picture, relu_slope, inplace=True)
    if pool is not None:
        picture = pool_stage(picture, pool)
    return picture


def output_size(stages: Stages, height: int, width: int) -> tuple[int, int]:
    """The ``(height, width)`` ``stages`` give an input of this size, checked
    as a run would check it (a usage error when the kernel or the pool
    window does not fit)."""
    if height is None or width is None:
        raise UsageError("not an image: its shape has no height and width")
    conv = stages.conv
    _, (h, w) = engine.geometry((height, width), conv.kernel.shape, conv.stride, conv.padding, conv.dilation)
    if stages.pool is not None:
        *_, h, w = engine.pool_geometry((h, w), stages.pool.kind, stages.pool.size, stages.pool.stride)
    return h, w

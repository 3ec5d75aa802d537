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

import math
from dataclasses import dataclass

import numpy as np

from . import engine
from .errors import UsageError
from .io.encode import PNG_LEVEL, PillowCanvas, format_for, write_image, write_pixels
from .io.inputs import DEFAULT_MAX_PIXELS, NpyInput, open_input, read_image
from .io.npy import NpyRows, npy_chunks, npy_header, npy_metadata, npy_trailer, read_into, read_rest
from .io.picture import Picture, nonfinite_note
from .io.pixels import clips_to_8bit, to_array
from .io.sinks import stream_to, write_chunks
from .kernels import Kernel, get_kernels

ALPHA_MODES = ("keep", "premultiply", "filter")

#: ITU-R 601-2 luma, as Pillow's ``convert("L")`` uses.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_CHANNEL_NAMES = {"L": "L", "LA": "L", "RGB": "RGB", "RGBA": "RGB", "I;16": "L", "F": "L"}


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
        return picture.with_pixels(np.dstack([luma, px[..., 3]]), mode="LA", labels=None)
    return picture.with_pixels(luma, mode=None if picture.mode is None else "L", labels=None)


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
    names = _CHANNEL_NAMES.get(picture.mode or "", "")
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


def apply_file(source, target, conv: Conv, relu: bool = False, pool: Pool | None = None,
               gray: bool = False, alpha: str = "keep", fmt: str | None = None, scaling: str = "clip",
               offset: float = 0.0, quality: int = 92, png_level: int | None = None,
               max_pixels: int | None = None, threads: int = 2) -> tuple[tuple, list[str]]:
    """``kernelcli apply`` on one input: read ``source``, run every stage,
    write ``target`` (paths, ``"-"`` or binary files, as in :mod:`kernelcli.io`).

    The stages run in bands of rows (:func:`kernelcli.tiled.apply_in_bands`,
    on ``threads`` threads): the same numbers, without full-size float32
    intermediates, in bands small enough to stay in cache. 8- and 16-bit
    images are read as they are, and written as images band by band, except
    with ``stretch`` scaling, which needs every value first: its bands fill
    one float32 result, stretched as a whole. A ``.npy`` output gets each
    band's float32 rows as soon as the rows above them are written. Whole pictures go through
    :func:`apply` when the bands would not give the same numbers (kernels
    run by FFT).

    Returns the input's ``(height, width)`` and the notes to show the user.
    """
    from . import tiled

    out_format = format_for(target, fmt)
    png_level = PNG_LEVEL if png_level is None else png_level
    loading = []

    def header(height, width, bands):  # Numba, if the image will need it, loads while the pixels decode
        loading.append(tiled.load_numba_early(conv, pool, height, width, 1 if gray else bands))

    try:
        picture = read_image(source, max_pixels=max_pixels or DEFAULT_MAX_PIXELS, integers=True,
                                    on_header=header)
    finally:  # (on an error too: no thread is left compiling while the process ends)
        for wait in loading:
            wait()
    notes, picture.notes = picture.notes, []
    size = picture.pixels.shape[:2]

    if out_format == "NPY":
        return size, notes + _npy_in_bands(picture, target, conv, relu, pool, gray, alpha, threads)
    # each band made into the output's values at once, or float32 kept for
    # stretch (every value known before any is scaled)
    per_band = scaling != "stretch"
    band_notes: list[str] = []  # the stages' notes (the same for every band) and the conversions'
    first: list[Picture] = []
    keep = _float_rows(band_notes, first)

    def convert(band: Picture):
        if not per_band:
            return keep(band)
        band_notes.extend(band.notes)
        return to_array(band, out_format, scaling, offset, band_notes)

    pixels = tiled.apply_in_bands(picture, conv, relu, pool, gray, alpha, threads=threads, convert=convert,
                                  allocate=PillowCanvas if per_band and out_format != "PNG" else None,
                                  clips_to_8bit=per_band and clips_to_8bit(picture, out_format,
                                                                                  scaling, offset))
    if pixels is not None:
        if per_band:
            band_notes += write_pixels(target, pixels, out_format, picture.info, quality, png_level)
        else:
            band_notes += write_image(target, first[0].with_pixels(pixels), out_format, scaling, offset,
                                             quality, png_level)
        return size, notes + list(dict.fromkeys(band_notes))  # once, not once per band
    result = _apply_whole(picture, conv, relu, pool, gray, alpha)
    notes += result.notes
    notes += write_image(target, result, out_format, scaling, offset, quality, png_level)
    return size, notes


def _float_rows(notes: list, first: list):
    """A ``convert`` for :func:`kernelcli.tiled.apply_in_bands` that keeps each
    band's float32 rows as they are, adding the band's notes to ``notes``
    and the first band (whose metadata goes into the output) to ``first``."""
    def convert(band: Picture):
        notes.extend(band.notes)
        if not first:
            first.append(band)
        return band.pixels
    return convert


def _apply_whole(picture: Picture, conv: Conv, relu, pool, gray, alpha) -> Picture:
    """:func:`apply` on a picture read for bands (8- or 16-bit pixels made
    float32 first): for jobs the bands would not give the same numbers."""
    if picture.pixels.dtype != np.float32:
        picture = picture.with_pixels(np.asarray(picture.pixels, dtype=np.float32))
    return apply(picture, conv, relu=relu, pool=pool, gray=gray, alpha=alpha)


def _npy_in_bands(picture: Picture, target, conv: Conv, relu, pool, gray, alpha, threads) -> list[str]:
    """:func:`apply_file` into a ``.npy``: each band of float32 rows is
    written as soon as the rows above it are (into a pipe too, where the
    next command can start on them), after the header; the metadata last.
    Kernels run by FFT go whole."""
    from . import tiled

    notes: list[str] = []
    first: list[Picture] = []

    def write(f):
        rows = NpyRows(f)
        if tiled.apply_in_bands(picture, conv, relu, pool, gray, alpha, threads=threads,
                                convert=_float_rows(notes, first), allocate=rows.allocate) is not None:
            f.write(npy_trailer(first[0].metadata()))
            return
        result = _apply_whole(picture, conv, relu, pool, gray, alpha)
        notes.extend(result.notes)
        write_chunks(f, npy_chunks(result))

    stream_to(target, write, "NPY")
    return list(dict.fromkeys(notes))  # once, not once per band


# --------------------------------------------------------------------------
# one stage as a command: kernelcli relu, kernelcli pool

#: Input rows a stage streams at a time, in bytes (as float32): the band and
#: its result stay in cache, and no full-size array is made.
STREAM_BAND_BYTES = 4 * 2**20


def run_stage(source, target, stage, fmt: str | None = None, scaling: str = "clip", offset: float = 0.0,
              quality: int = 92, png_level: int = PNG_LEVEL,
              max_pixels: int | None = DEFAULT_MAX_PIXELS) -> list[str]:
    """Read ``source``, run one stage (:class:`Relu` or :class:`Pool`), write
    ``target``; returns the notes to show.

    A ``.npy`` into a ``.npy`` goes through a band of rows at a time, from a
    pipe into a pipe too, with the same numbers and bytes as reading it
    whole: ReLU and pooling see each value or window alone. Except when the
    array has 2 or 4 channels: its metadata, which comes after the data,
    tells whether the last one is alpha (which the stages treat apart), so
    such an array is read whole, as are pictures and Fortran-ordered arrays.
    """
    out_format = format_for(target, fmt)
    with open_input(source, max_pixels) as got:
        if isinstance(got, NpyInput):
            channels = got.shape[2] if len(got.shape) == 3 else 1
            if out_format == "NPY" and not got.fortran and channels not in (2, 4):
                return _stream_stage(got, target, stage)
            got = got.picture()
    notes, got.notes = got.notes, []
    picture = relu_stage(got, stage.slope, inplace=True) if isinstance(stage, Relu) else pool_stage(got, stage)
    notes += picture.notes
    return notes + write_image(target, picture, out_format, scaling, offset, quality, png_level)


def _stream_stage(npy: NpyInput, target, stage) -> list[str]:
    """:func:`run_stage` for a ``.npy`` without alpha, a band of rows at a time."""
    h, shape = npy.shape[0], npy.shape
    if isinstance(stage, Relu):
        ph = sy = 1
        out_shape = shape

        def compute(band):
            return engine.relu(band, stage.slope, inplace=True)
    else:
        ph, _, sy, _, oh, ow = engine.pool_geometry(shape, stage.kind, stage.size, stage.stride)
        out_shape = (oh, ow) + tuple(shape[2:])

        def compute(band):
            return engine.pool(band, stage.kind, stage.size, stage.stride)
    row_values = math.prod(shape[1:])
    row_bytes = row_values * npy.dtype.itemsize
    per_band = max(1, STREAM_BAND_BYTES // (4 * row_values * sy))  # output rows
    most = (per_band - 1) * sy + ph  # input rows a band reads at most
    raw = np.empty(most * row_bytes, dtype=np.uint8)
    total = h * row_bytes
    taken = [0, 0]  # input rows read, and how many of their values are NaN or infinite

    def take(n):
        """The next ``n`` input rows, as float32 (a new array)."""
        view = memoryview(raw)[:n * row_bytes]
        read_into(npy.stream, view, npy.name, total, taken[0] * row_bytes)
        rows = np.frombuffer(view, dtype=npy.dtype).reshape((n,) + tuple(shape[1:])).astype(np.float32)
        taken[0] += n
        taken[1] += rows.size - int(np.count_nonzero(np.isfinite(rows)))
        return rows

    def skip_to(row):
        while taken[0] < row:
            take(min(most, row - taken[0]))

    notes = []

    def write(f):
        f.write(npy_header(out_shape))
        band, first = None, 0  # the last band's input rows, from input row ``first``
        for r0 in range(0, out_shape[0], per_band):
            r1 = min(out_shape[0], r0 + per_band)
            lo, hi = r0 * sy, (r1 - 1) * sy + ph
            kept = band[lo - first:] if band is not None and first + len(band) > lo else None
            if kept is None:
                skip_to(lo)  # rows no window reads (a pooling stride longer than the window)
            new = take(hi - taken[0])
            band, first = (new if kept is None else np.concatenate([kept, new])), lo
            f.write(memoryview(np.ascontiguousarray(compute(band), dtype=np.float32)).cast("B"))
        skip_to(h)  # rows left over at the bottom, then kernelcli's metadata
        meta = npy_metadata(shape, read_rest(npy.stream, npy.name), npy.name, npy.dtype)
        notes.extend(meta.notes + nonfinite_note(meta.pixels, npy.name, taken[1]))
        f.write(npy_trailer(meta.metadata()))

    stream_to(target, write, "NPY")
    return notes

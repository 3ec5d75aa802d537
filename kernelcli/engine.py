"""Convolution, ReLU and pooling on float32 arrays.

This is the numeric core's public face. It validates arguments (with messages
saying what is allowed), works out padding and output sizes, allocates the
output (a large one on memory that an earlier result gave back:
:mod:`kernelcli._memory`) and hands plain arrays to the jitted kernels in :mod:`kernelcli._jit` (or,
for small work before Numba is loaded, to their NumPy twins in :mod:`kernelcli._npkernels`).

Geometry, per axis, for an input of N samples and a kernel of K taps::

    reach     R   = dilation * (K - 1) + 1
    output    out = floor((N + pad_before + pad_after - R) / stride) + 1

Padding ``same`` pads ``(R-1)//2`` before and ``R//2`` after (so the size is
kept at stride 1), ``valid`` pads nothing and ``full`` pads ``R-1`` on each
side. Padded samples are zeros unless ``pad_mode`` says otherwise::

    pad_mode     padded samples around   a b c d
    zero         0 0 0 | a b c d | 0 0 0
    reflect      c b a | a b c d | d c b
    reflect101   d c b | a b c d | c b a
    edge         a a a | a b c d | d d d
    wrap         b c d | a b c d | a b c

The engine computes cross-correlation, as ConvNets do: the kernel slides over
the image without being flipped. ``flip=True`` gives true convolution.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import threading
import time

import numpy as np

from . import _memory
from .config import MAX_SIZE
from .errors import UsageError

PAD_MODES = ("zero", "reflect", "reflect101", "edge", "wrap")
PADDING_WORDS = ("same", "valid", "full")
POOL_KINDS = ("max", "avg", "sum")
_POOL_CODES = {"max": 0, "avg": 1, "sum": 2}


# --------------------------------------------------------------------------
# argument checking


def pair(value, what: str) -> tuple[int, int]:
    """``3`` -> ``(3, 3)``; ``(2, 1)`` -> ``(2, 1)``; positive integers only."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        values = (int(value), int(value))
    else:
        try:
            values = tuple(value)
        except TypeError:
            raise UsageError(f"{what} must be a positive integer or a pair of them, got {value!r}") from None
        if len(values) != 2 or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values
        ):
            raise UsageError(f"{what} must be a positive integer or a pair of them, got {value!r}")
        values = (int(values[0]), int(values[1]))
    if min(values) < 1:
        raise UsageError(f"{what} must be at least 1, got {_show(values)}")
    if max(values) > MAX_SIZE:
        raise UsageError(f"{what} must be at most {MAX_SIZE}, got {_show(values)}")
    return values


def _show(values) -> str:
    return str(values[0]) if values[0] == values[1] else f"{values[0]},{values[1]}"


def resolve_padding(padding, reach: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """Padding spec -> ``((top, bottom), (left, right))`` for a kernel of this reach."""
    if isinstance(padding, str):
        word = padding.strip().lower()
        if word == "same":
            return tuple(((r - 1) // 2, r // 2) for r in reach)
        if word == "valid":
            return ((0, 0), (0, 0))
        if word == "full":
            return tuple((r - 1, r - 1) for r in reach)
        raise UsageError(
            f"padding must be same, valid, full or a number of pixels, got {padding!r}"
        )
    if isinstance(padding, (int, np.integer)) and not isinstance(padding, bool):
        py = px = int(padding)
    elif _is_explicit(padding):  # ((top, bottom), (left, right)), as this function returns
        if min(min(side) for side in padding) < 0:
            raise UsageError(f"padding must not be negative, got {padding!r}")
        if max(max(side) for side in padding) > MAX_SIZE:
            raise UsageError(f"padding must be at most {MAX_SIZE} pixels a side, got {padding!r}")
        return tuple((int(a), int(b)) for a, b in padding)
    else:
        try:
            py, px = padding
        except (TypeError, ValueError):
            raise UsageError(f"padding must be same, valid, full, P or (PY, PX), got {padding!r}") from None
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (py, px)):
            raise UsageError(f"padding must be same, valid, full, P or (PY, PX), got {padding!r}")
        py, px = int(py), int(px)
    if py < 0 or px < 0:
        raise UsageError(f"padding must not be negative, got {_show((py, px))}")
    if max(py, px) > MAX_SIZE:
        raise UsageError(f"padding must be at most {MAX_SIZE} pixels a side, got {_show((py, px))}")
    return ((py, py), (px, px))


def _is_explicit(padding) -> bool:
    try:
        return len(padding) == 2 and all(
            len(side) == 2 and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in side)
            for side in padding)
    except TypeError:
        return False


def geometry(shape, kernel_shape, stride, padding, dilation):
    """Padding and output size of a convolution: ``(pads, (oh, ow))``, where
    ``pads`` is ``((top, bottom), (left, right))``; a usage error when the
    kernel does not fit."""
    h, w = shape[:2]
    kh, kw = kernel_shape[:2]
    sy, sx = pair(stride, "stride")
    dy, dx = pair(dilation, "dilation")
    reach = (dy * (kh - 1) + 1, dx * (kw - 1) + 1)
    pads = resolve_padding(padding, reach)
    padded = (h + pads[0][0] + pads[0][1], w + pads[1][0] + pads[1][1])
    _memory.ensure_memory(INDEX_BYTES * (padded[0] + padded[1]),
                  f"indexing a {padded[0]}x{padded[1]} padded input (padding {_padding_text(padding, pads)}, "
                  f"dilation {_show((dy, dx))}, kernel reach {reach[0]}x{reach[1]})",
                  "use less padding or a smaller dilation")
    oh = output_size(h, kh, pads[0], sy, dy)
    ow = output_size(w, kw, pads[1], sx, dx)
    if oh < 1 or ow < 1:
        raise UsageError(
            f"kernel {kh}x{kw} (reach {reach[0]}x{reach[1]}) does not fit in the padded input: "
            f"{h}x{w} plus padding {pads[0][0]}+{pads[0][1]} rows, {pads[1][0]}+{pads[1][1]} columns; "
            "use more padding (e.g. same) or a smaller kernel"
        )
    return pads, (oh, ow)


#: Bytes per coordinate of a padded axis at the peak of a convolution's
#: index maps (:func:`source_index`; traced with tracemalloc on a padding of
#: ten million: 33 at the peak of building a reflected map, 16 kept by the
#: cached map and the caller's copy, 40 at the peak of a whole convolve).
INDEX_BYTES = 40
#: Index maps of more coordinates than this are not cached (each would keep
#: its memory until 64 others replaced it).
CACHE_INDEX_UP_TO = 1 << 20


def _padding_text(padding, pads) -> str:
    if isinstance(padding, str):
        return padding.strip().lower()
    (t, b), (l, r) = pads
    return str(t) if t == b == l == r else f"{t}+{b},{l}+{r}"


def output_size(n: int, k: int, pad: tuple[int, int], stride: int, dilation: int = 1) -> int:
    """``floor((n + pad_before + pad_after - reach) / stride) + 1`` (may be < 1)."""
    reach = dilation * (k - 1) + 1
    span = n + pad[0] + pad[1] - reach
    return span // stride + 1 if span >= 0 else 0


def source_index(n: int, pad: tuple[int, int], mode: str) -> np.ndarray:
    """For each coordinate of the padded axis, the source index (or -1 for a zero).
    (A fresh array each call; the same call on every band of an image is worked out once.)"""
    n, pad = int(n), (int(pad[0]), int(pad[1]))
    if n + pad[0] + pad[1] > CACHE_INDEX_UP_TO:
        return _build_index(n, pad, mode)
    return _source_index(n, pad, mode).copy()


@functools.lru_cache(maxsize=64)
def _source_index(n: int, pad: tuple[int, int], mode: str) -> np.ndarray:
    return _build_index(n, pad, mode)


def _build_index(n: int, pad: tuple[int, int], mode: str) -> np.ndarray:
    i = np.arange(-pad[0], n + pad[1], dtype=np.int64)
    if mode == "zero":
        return np.where((i >= 0) & (i < n), i, -1)
    if mode == "edge":
        return np.clip(i, 0, n - 1)
    if mode == "wrap":
        return np.mod(i, n)
    if mode == "reflect":  # d c b a | a b c d | d c b a
        j = np.mod(i, 2 * n)
        return np.where(j < n, j, 2 * n - 1 - j)
    if mode == "reflect101":  # d c b | a b c d | c b a
        if n == 1:
            return np.zeros_like(i)
        j = np.mod(i, 2 * n - 2)
        return np.where(j < n, j, 2 * n - 2 - j)
    raise UsageError(f"pad mode must be one of {', '.join(PAD_MODES)}, got {mode!r}")


def as_image_array(x, what: str = "input") -> np.ndarray:
    """A C-contiguous float32 ``H x W`` or ``H x W x C`` array (copies only if needed)."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise UsageError(f"{what} must be a numeric array, got dtype {arr.dtype}")
    if arr.ndim not in (2, 3):
        raise UsageError(f"{what} must be 2-D (H x W) or 3-D (H x W x C), got shape {arr.shape}")
    if min(arr.shape) < 1:
        raise UsageError(f"{what} is empty (shape {arr.shape})")
    if arr.dtype == np.float32 and arr.flags.c_contiguous:
        return arr
    copy = _memory.empty(arr.shape)
    np.copyto(copy, arr, casting="unsafe")
    return copy


def release_memory() -> None:
    """Give back to the system now the memory kept from large results that
    are gone (at most 256 MiB, kept for the next results of their sizes:
    :mod:`kernelcli._memory`)."""
    _memory.release()


def _rows_view(arr: np.ndarray) -> tuple[np.ndarray, int]:
    if arr.ndim == 2:
        return arr, 1
    h, w, c = arr.shape
    return arr.reshape(h, w * c), c


# --------------------------------------------------------------------------
# public operations


def _check_out(out, shape: tuple, x, src: np.ndarray) -> None:
    """Can the caller's ``out`` take a result of ``shape`` computed from ``x``?"""
    if not isinstance(out, np.ndarray):
        raise UsageError(f"out must be a NumPy array, got {type(out).__name__}")
    if out.dtype != np.float32 or out.shape != shape:
        raise UsageError(f"out must be a float32 array of shape {shape}, got {out.dtype} {out.shape}")
    if not (out.flags.c_contiguous and out.flags.writeable):
        raise UsageError("out must be a writable C-contiguous array")
    if np.may_share_memory(out, src) or (isinstance(x, np.ndarray) and np.may_share_memory(out, x)):
        raise UsageError("out must not overlap the input")


def _kernel_weights(kernel, flip: bool):
    """``(Kernel, weights)`` for :func:`convolve`: the kernel as it takes it,
    and its float32 weights, flipped for ``flip`` (rows and columns, never
    depth). A small array is looked up by its contents (a copy of the cached
    weights comes back): making a Kernel of it, checked and scaled, took
    15-17 us, a seventh of a whole call on a 64x64 image."""
    if isinstance(kernel, np.ndarray) and kernel.size <= 1024 and kernel.dtype.kind in "biuf":
        k, weights = _array_kernel_weights(kernel.tobytes(), kernel.shape, kernel.dtype.str, bool(flip))
        return k, weights.copy()
    return _make_kernel_weights(kernel, flip)


def _make_kernel_weights(kernel, flip: bool):
    from .kernels import as_kernel

    k = as_kernel(kernel)
    weights = k.array[::-1, ::-1] if flip else k.array
    return k, np.ascontiguousarray(weights, dtype=np.float32)


@functools.lru_cache(maxsize=64)
def _array_kernel_weights(data: bytes, shape: tuple, dtype: str, flip: bool):
    return _make_kernel_weights(np.frombuffer(data, dtype=dtype).reshape(shape).copy(), flip)


def convolve(x, kernel, stride=1, padding="same", pad_mode: str = "zero", dilation=1, flip: bool = False,
             out=None):
    """Cross-correlate ``x`` with a kernel.

    A 2-D kernel acts on each channel separately (the output has the input's
    channels); a ``K x K x C`` kernel sums over the input's C channels and
    gives one ``H x W`` feature map, as a ConvNet layer's filter does.

    x: ``H x W`` or ``H x W x C`` array (any real dtype; computed in float32).
    kernel: a name (``"sharpen"``), a spec string (``"1,0,1;0,1,0;1,0,1"``,
    ``"box:5"``, a file path), a :class:`kernelcli.kernels.Kernel` or a 2-D array.
    stride, dilation: ``S`` or ``(SY, SX)``. padding: ``"same"``, ``"valid"``,
    ``"full"``, ``P``, ``(PY, PX)`` or ``((TOP, BOTTOM), (LEFT, RIGHT))``. flip: convolve instead of correlate.
    out: a C-contiguous float32 array of the result's shape to write into
    (not overlapping ``x``), as with NumPy's ``out=``: it saves a new array
    per call when many images of one size go through.

    Returns a float32 array with the same number of dimensions as ``x``
    (``out`` itself when given). A result of 32 MiB or more is laid on the
    memory of an earlier result of the same size that is gone, when there is
    one, which saves the system zeroing fresh pages (:func:`release_memory`).

    The way it is computed follows a cost model (``_method`` tells which):
    a direct loop over the taps, 1-D passes for a low-rank kernel, or FFTs in
    tiles for a large kernel (:mod:`kernelcli._fft`). The last two agree with
    the direct loop to float32 rounding, not bit for bit.
    """
    k, weights = _kernel_weights(kernel, flip)
    src = as_image_array(x)
    sy, sx = pair(stride, "stride")
    dy, dx = pair(dilation, "dilation")
    if pad_mode not in PAD_MODES:
        raise UsageError(f"pad mode must be one of {', '.join(PAD_MODES)}, got {pad_mode!r}")
    pads, (oh, ow) = geometry(src.shape, weights.shape, (sy, sx), padding, (dy, dx))
    h, w = src.shape[:2]
    rows, c = _rows_view(src)
    out_channels = 1 if weights.ndim == 3 else c
    shape = (oh, ow) if src.ndim == 2 or weights.ndim == 3 else (oh, ow, c)
    if out is None:
        _memory.ensure_memory(oh * ow * out_channels * 4, f"a {oh}x{ow}x{out_channels} float32 result")
    else:
        _check_out(out, shape, x, src)
    if weights.ndim == 3 and weights.shape[2] != c:
        raise UsageError(
            f"kernel {k.name} has depth {weights.shape[2]} but the input has {c} channel(s); "
            "a K x K x C kernel needs C input channels"
        )
    rowmap = source_index(h, pads[0], pad_mode)
    colmap = source_index(w, pads[1], pad_mode)
    factors = low_rank_factors(weights) if weights.ndim == 2 else None
    method, size = _choose(weights, c, w, pads[1][0], (oh, ow), (sy, sx), (dy, dx), factors)

    dest = _memory.empty(shape) if out is None else out
    flat = dest.reshape(oh, ow * out_channels)
    if method == "fft":  # (FFTs need no Numba; it is asked for only where its loops run)
        _fft_correlate(rows, c, weights, rowmap, colmap, pads[1][0], (sy, sx), (dy, dx), (oh, ow), size, flat)
    else:
        kernels = backend(multiply_adds(weights, oh * ow * out_channels))
        with timed(kernels):
            if weights.ndim == 3:
                kernels.correlate_depth(rows, c, weights, rowmap, colmap, pads[1][0], sy, sx, dy, dx, flat)
            elif method == "direct":
                kernels.correlate_rows(rows, c, weights, rowmap, colmap, pads[1][0], sy, sx, dy, dx, flat)
            else:
                _separable(kernels, rows, c, factors, rowmap, colmap, pads[1][0], (sy, sx), (dy, dx), flat)
    if k.offset:
        dest += np.float32(k.offset)
    return dest


#: Kernels with fewer taps than this always run directly.
SEPARABLE_MIN_TAPS = 25
#: Every partial sum of :func:`correlate_exact` stays within this (int16).
_EXACT_LIMIT = 32767


def exact_weights(kernel, flip: bool = False, top: int = 255) -> np.ndarray | None:
    """A 2-D kernel's weights as int16 for :func:`correlate_exact` on integer
    pixels of ``0..top``, or None when that would not be both exact and cheaper.

    Exact: every weight is a whole number, there is no offset, and no partial
    sum can leave int16 (the weights' absolute values sum to at most
    32767 / top: 128 for 8-bit pixels). Then :func:`convolve`'s float32 sums
    are exact integers too (each below 2**24), so both give the same numbers.
    Cheaper: the kernel has fewer than :data:`SEPARABLE_MIN_TAPS` cells, so
    :func:`convolve` runs its taps directly, and int16 taps move half the
    bytes of float32 ones. (A larger kernel may run as a few 1-D passes.)
    """
    from .kernels import as_kernel

    k = as_kernel(kernel)
    if k.depth is not None or k.offset or k.shape[0] * k.shape[1] >= SEPARABLE_MIN_TAPS:
        return None
    weights = k.array[::-1, ::-1] if flip else k.array
    if not np.array_equal(weights, np.round(weights)) or np.abs(weights).sum() * top > _EXACT_LIMIT:
        return None
    return np.ascontiguousarray(weights, dtype=np.int16)


def correlate_exact(x: np.ndarray, weights: np.ndarray, stride=1, padding="same", pad_mode: str = "zero",
                    dilation=1) -> np.ndarray:
    """Cross-correlate integer pixels with integer weights in int16 arithmetic.

    x: an int16 ``H x W`` or ``H x W x C`` array of pixels in ``0..top``;
    weights: from :func:`exact_weights` for that ``top`` (already flipped if
    wanted). Same geometry and padding as :func:`convolve`, whose result this
    equals exactly (as int16 instead of float32). Runs on the NumPy loops of
    :mod:`kernelcli._npkernels`, whose arithmetic follows the arrays' dtype.
    """
    from . import _npkernels

    if x.dtype != np.int16 or getattr(weights, "dtype", None) != np.int16 or weights.ndim != 2:
        raise TypeError("correlate_exact takes int16 pixels and 2-D int16 weights from exact_weights")
    sy, sx = pair(stride, "stride")
    dy, dx = pair(dilation, "dilation")
    pads, (oh, ow) = geometry(x.shape, weights.shape, (sy, sx), padding, (dy, dx))
    rows, c = _rows_view(np.ascontiguousarray(x))
    out = np.empty((oh, ow * c), dtype=np.int16)
    _npkernels.correlate_rows(rows, c, weights, source_index(x.shape[0], pads[0], pad_mode),
                              source_index(x.shape[1], pads[1], pad_mode), pads[1][0], sy, sx, dy, dx, out)
    return out.reshape((oh, ow, c) if x.ndim == 3 else (oh, ow))


def low_rank_factors(weights: np.ndarray):
    """``[(column, row), ...]`` whose outer products sum to ``weights``, when
    running them as 1-D passes costs less than half the direct taps; else None.

    Found by elimination with complete pivoting (in float64): take the
    largest remaining weight as pivot, split off its row times its column,
    and repeat until what remains is below 1e-6 of the largest weight. The
    factors are used only if they rebuild the kernel to within 1e-6 of its
    largest weight (float32 noise). Plain element-wise arithmetic, not SVD:
    LAPACK and BLAS pick their kernels by CPU, and the factors (so every
    separable result) would differ in the last bit between machines. Done
    once per kernel per process (every band of an image asks again); the
    arrays are fresh copies.
    """
    weights = np.asarray(weights, dtype=np.float32)
    factors = _low_rank_factors(weights.shape, weights.tobytes())
    return None if factors is None else [(col.copy(), row.copy()) for col, row in factors]


@functools.lru_cache(maxsize=64)
def _low_rank_factors(shape: tuple, data: bytes):
    weights = np.frombuffer(data, dtype=np.float32).reshape(shape)
    kh, kw = weights.shape
    if kh * kw < SEPARABLE_MIN_TAPS or kh == 1 or kw == 1:
        return None
    w64 = weights.astype(np.float64)
    largest = float(np.max(np.abs(w64)))
    if largest == 0:
        return None
    most = (kh * kw) // (2 * (kh + kw))  # more factors than this cost more than the taps
    rest, factors = w64.copy(), []
    while True:
        i, j = np.unravel_index(int(np.argmax(np.abs(rest))), rest.shape)
        pivot = rest[i, j]
        if abs(pivot) <= largest * 1e-6:
            break
        if len(factors) == most:
            return None
        size = np.sqrt(abs(pivot))
        col, row = rest[:, j] / (size if pivot > 0 else -size), rest[i, :] / size
        factors.append((col, row))
        rest = rest - np.outer(col, row)
    rebuilt = sum(np.outer(col, row) for col, row in factors)
    if np.max(np.abs(rebuilt - w64)) > 1e-6 * np.max(np.abs(w64)):
        return None
    return [(np.ascontiguousarray(col.reshape(kh, 1), dtype=np.float32),
             np.ascontiguousarray(row.reshape(1, kw), dtype=np.float32)) for col, row in factors]


def _separable(kernels, rows, c, factors, rowmap, colmap, pad_left, stride, dilation, out):
    """Low-rank kernel as 1-D passes into ``out`` (``OH x OW*C``): down the
    columns (rows' padding and stride), then along the rows (columns'
    padding and stride), summed.
    ``kernels``: the module whose loops run them (see :func:`backend`);
    :mod:`kernelcli._jit` does both passes a band of rows at a time
    (``correlate_separable``), the NumPy twins over whole arrays."""
    sy, sx = stride
    dy, dx = dilation
    oh = out.shape[0]
    if hasattr(kernels, "correlate_separable"):
        kernels.correlate_separable(rows, c, factors, rowmap, colmap, pad_left, sy, sx, dy, dx, out)
        return
    width = rows.shape[1] // c
    every_col = np.arange(width, dtype=np.int64)
    every_row = np.arange(oh, dtype=np.int64)
    tmp = np.empty((oh, width * c), dtype=np.float32)
    part = np.empty_like(out) if len(factors) > 1 else out
    for i, (col, row) in enumerate(factors):
        kernels.correlate_rows(rows, c, col, rowmap, every_col, 0, sy, 1, dy, 1, tmp)
        kernels.correlate_rows(tmp, c, row, every_row, colmap, pad_left, 1, sx, 1, dx, part if i else out)
        if i:
            out += part


# --------------------------------------------------------------------------
# choosing how to compute a correlation
#
# Cost model, in modelled seconds of one thread; every method is spread over
# the engine's threads (numba.get_num_threads(); the FFT tiles go to as many
# Python threads), so the direct and separable costs are divided by the
# thread count and the FFT counts rounds of tiles:
#
#   direct     values * DIRECT_VALUE
#              + (values - border) * taps * tap       tap: DIRECT_TAP when the
#              + border * taps * DIRECT_TAP_BORDER     column stride is 1,
#                                                      DIRECT_TAP_STRIDED when not,
#                                                      DIRECT_TAP_DEPTH for K x K x C
#   separable  per rank-1 factor, the direct cost of its two 1-D passes
#              (KH x 1 down the columns, then 1 x KW along the rows)
#   fft        FFT_CALL + ceil(tiles / threads) * (FFT_TILE + transforms * P * log2(P)
#                                                  * (1 + P / FFT_CACHE_POINTS) * FFT_POINT)
#              P = NY * NX points per tile, transforms = 2C for a 2-D kernel on
#              C channels, C + 1 for a K x K x C kernel; _fft.plan picks the
#              tile size NY x NX that minimises this.
#
# values: output values (times channels for a 2-D kernel); taps: nonzero
# weights (a dilated kernel has the same taps, the FFT sees its whole reach);
# border: values in output columns where some tap reads outside the image
# (done value by value through the column map). Stride shrinks the direct
# cost (fewer values) but not the FFT's (each tile is computed whole, then
# subsampled; only the last inverse pass skips the rows not needed, which
# the model ignores).
#
# Constants fitted to wall-clock times on the 2-core development machine
# (2026-11, numpy 2.4, numba 0.68; the machine is shared and timings moved
# by +-25% between runs).
#   direct (kernelcli/_jit.py, the loops that sum 5 taps per pass), fitted
#   on one thread (numba.set_num_threads(1)), best of 5 interleaved runs,
#   a fresh output array per call as convolve makes, padding "valid":
#   4096x4096: 1x1 16.9 ms, 3x3 22.6 ms, 15x1 32.7 ms; 1024x1024: 15x15
#   14.9 ms, 31x31 62.2 ms (0.065 ns per value and tap, 0.8-1 ns per value
#   at 4096x4096, less on smaller images); column stride 2 on one channel
#   0.20-0.24 ns per value and tap beyond DIRECT_VALUE, stride 3-4 or
#   stride 2 on RGB 0.38-0.42; "same" padding on 128x128: 31x31 9.1 ms,
#   15x15 1.4 ms, so 2.3-2.9 ns per tap of a border value; 31x31x3 depth
#   on 1024x1024x3 (correlate_depth, not rewritten) 0.265 ns per value and tap.
#   fft, 31x31 on 4096x4096: 125-200 ms for tiles of 384..1024 (2 threads);
#   one 512x512 tile (forward, product, inverse) 2.1 ms on one thread; a
#   call on a 64x64 image 0.4 ms on one thread, mostly fixed costs.

DIRECT_VALUE = 0.8e-9
DIRECT_TAP = 0.065e-9
DIRECT_TAP_STRIDED = 0.3e-9
DIRECT_TAP_DEPTH = 0.26e-9
DIRECT_TAP_BORDER = 2.5e-9
FFT_POINT = 0.32e-9
FFT_TILE = 0.4e-3
FFT_CACHE_POINTS = 6e6
FFT_CALL = 0.3e-3


def _threads() -> int:
    if "numba" not in sys.modules:  # do not load Numba just to ask
        from . import config

        return config.cpus()
    import numba

    return max(1, int(numba.get_num_threads()))


#: While Numba is not loaded in this process, work up to this many
#: multiply-adds runs on the NumPy twins of the kernels (kernelcli._npkernels):
#: the same numbers bit for bit, without Numba's start-up (about 0.35 s here,
#: what NumPy needs for about 250 million multiply-adds; a 12-megapixel RGB
#: image with a 3x3 kernel is 324 million at most).
NUMPY_MAX_WORK = 250_000_000
#: The same for a whole image done in bands of rows (kernelcli.run.bands), each
#: band small enough to stay in cache, where NumPy loses much less to Numba.
#: Measured 2026-11-23 on a 12-megapixel RGB JPEG, tiled.apply_in_bands timed
#: in one process: a random 9x9 kernel (2.9 G multiply-adds) took 0.94-1.02 s
#: of NumPy bands against 0.40-0.42 s of Numba bands, and loading Numba and
#: its cached loop 1.1-1.3 s; even at about 6 G, NumPy's bands cost no more.
NUMPY_MAX_BANDED_WORK = 5_000_000_000


def multiply_adds(weights, values: int) -> int:
    """About how many multiply-adds :func:`convolve` spends on ``values``
    output values (channels counted) with these weights: the nonzero taps
    for each, or rank x (KH + KW) for a kernel it may run as 1-D passes."""
    weights = np.asarray(weights, dtype=np.float32)
    if weights.ndim == 2:
        factors = low_rank_factors(weights)
        if factors is not None:
            return values * len(factors) * (weights.shape[0] + weights.shape[1])
    return values * int(np.count_nonzero(weights))


def load_numba() -> None:
    """Load Numba and the jitted loops now: every later call in this process
    runs on them (:func:`backend`). For work that is large in total but
    comes in small pieces, such as an image's bands."""
    from . import _jit  # noqa: F401


#: A process that keeps calling (a notebook, a service) gets the compiled
#: loops: once the NumPy twins have spent this many seconds in it,
#: :func:`warm_up` starts on a background thread (when
#: ``config.AUTO_WARM_UP`` allows), the twins serving every call until it is
#: done. About Numba's own start-up: a process that has paid that much on
#: the twins is likely to go on, and loading Numba then costs it at most as
#: much again.
WARM_UP_AFTER_SECONDS = 0.3

_warming = threading.local()  # .active: this thread is the one warming up
_warm_lock = threading.Lock()
_warm_thread: threading.Thread | None = None
_warm_done = threading.Event()
_twin_seconds = 0.0


def warm_up(wait: bool = True) -> None:
    """Load Numba and the engine's loops (compiling them into an empty cache,
    else loading them from it), on a background thread; with ``wait``,
    return once they are ready. Calls made meanwhile run on the NumPy twins;
    every call after it runs on the compiled loops. Done once per process;
    calling again only waits (or not)."""
    thread = _start_warm_up()
    if wait and thread is not None and thread is not threading.current_thread():
        thread.join()


def _start_warm_up() -> threading.Thread | None:
    global _warm_thread
    with _warm_lock:
        if _warm_thread is None:
            thread = threading.Thread(target=_warm, name="kernelcli-warm-up", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # no thread to be had: Numba loads when work needs it
                return None
            _warm_thread = thread
        return _warm_thread


def _warm() -> None:
    """The loops that :func:`convolve` and :func:`pool` run, each called once
    on a small array (same argument types as real calls: that is what is
    compiled), on this thread while the others use the twins."""
    _warming.active = True
    try:
        load_numba()
        x = np.zeros((16, 16), np.float32)
        convolve(x, np.ones((3, 3), np.float32))  # direct loop
        convolve(x, np.ones((5, 5), np.float32))  # separable passes
        pool(x, "max", 2)
    except Exception:  # only a head start: a real call meets and reports the error
        pass
    finally:
        _warming.active = False
        _warm_done.set()


def _warming_elsewhere() -> bool:
    return _warm_thread is not None and not _warm_done.is_set() and not getattr(_warming, "active", False)


def uses_numba(work: int) -> bool:
    """Do ``work`` multiply-adds run on the Numba loops (:func:`backend`)?

    Yes for more than :data:`NUMPY_MAX_WORK`; else once Numba is loaded, except
    while :func:`warm_up` is still at work on another thread (the twins serve)."""
    if getattr(_warming, "active", False):
        return True
    if work > NUMPY_MAX_WORK:
        if _warming_elsewhere():
            _warm_done.wait()  # never two threads in the parallel loops at once
        return True
    return "numba" in sys.modules and not _warming_elsewhere()


def backend(work: int):
    """The module whose loops run ``work`` multiply-adds: :mod:`kernelcli._npkernels`
    for small work while Numba is not loaded, else :mod:`kernelcli._jit`.
    Run its loops inside :func:`timed` so that the twins' time counts
    towards :data:`WARM_UP_AFTER_SECONDS`."""
    if not uses_numba(work):
        from . import _npkernels

        return _npkernels
    from . import _jit

    return _jit


@contextlib.contextmanager
def timed(kernels):
    """Time what runs inside when ``kernels`` (from :func:`backend`) are the
    NumPy twins; past :data:`WARM_UP_AFTER_SECONDS` in all, :func:`warm_up`
    starts (if ``config.AUTO_WARM_UP``)."""
    if kernels.__name__ != "kernelcli._npkernels":
        yield
        return
    global _twin_seconds
    started = time.perf_counter()
    try:
        yield
    finally:
        _twin_seconds += time.perf_counter() - started
    from . import config

    if _twin_seconds >= WARM_UP_AFTER_SECONDS and _warm_thread is None and config.AUTO_WARM_UP:
        _start_warm_up()


def _direct_cost(out_rows, out_cols, per_col, taps, in_width, pad_left, sx, dx, kw, tap):
    """Modelled one-thread seconds of a direct loop (see the cost model above)."""
    lo = -(-pad_left // sx)  # first output column whose taps all read inside the image
    hi = (in_width - 1 - (kw - 1) * dx + pad_left) // sx + 1
    inner = max(0, min(hi, out_cols) - max(lo, 0))
    values = out_rows * out_cols * per_col
    border = out_rows * (out_cols - inner) * per_col
    return values * DIRECT_VALUE + (values - border) * taps * tap + border * taps * DIRECT_TAP_BORDER


def _choose(weights, channels, in_width, pad_left, out_size, stride, dilation, factors, threads=None):
    """``(method, fft_size)``: "direct", "separable" or "fft", the cheapest by
    the cost model above (``fft_size``: the FFT's tile size, else None)."""
    from . import _fft

    threads = _threads() if threads is None else threads
    oh, ow = out_size
    sy, sx = stride
    dy, dx = dilation
    kh, kw = weights.shape[:2]
    depth = weights.ndim == 3
    taps = int(np.count_nonzero(weights))
    tap = DIRECT_TAP_DEPTH if depth else DIRECT_TAP if sx == 1 else DIRECT_TAP_STRIDED
    per_col = 1 if depth else channels
    costs = {"direct": _direct_cost(oh, ow, per_col, taps, in_width, pad_left, sx, dx, kw, tap) / threads}
    if factors is not None:
        down = _direct_cost(oh, in_width, channels, kh, in_width, 0, 1, 1, 1, DIRECT_TAP)
        along = _direct_cost(oh, ow, channels, kw, in_width, pad_left, sx, dx, kw,
                             DIRECT_TAP if sx == 1 else DIRECT_TAP_STRIDED)
        costs["separable"] = len(factors) * (down + along) / threads
    size = None
    # (no FFT plan when the direct loop costs less than the FFT's fixed costs)
    if _fft.AVAILABLE and taps and costs["direct"] > FFT_CALL and np.isfinite(weights).all():
        reach = (dy * (kh - 1) + 1, dx * (kw - 1) + 1)
        transforms = channels + 1 if depth else 2 * channels
        size, tiles_cost = _fft.plan(out_size, stride, reach, transforms, threads, FFT_TILE, FFT_POINT,
                                     FFT_CACHE_POINTS)
        costs["fft"] = FFT_CALL + tiles_cost
    method = min(costs, key=costs.get)
    return method, (size if method == "fft" else None)


def _method(weights, image_shape, stride=1, padding="same", dilation=1) -> str:
    """How :func:`convolve` would compute these (already flipped) weights on
    an image of this shape: "direct", "separable" or "fft". Nothing is
    computed; for tests, reports and :func:`kernelcli.run.bands.load_numba_early`."""
    weights = np.asarray(weights, dtype=np.float32)
    sy, sx = pair(stride, "stride")
    dy, dx = pair(dilation, "dilation")
    pads, out_size = geometry(image_shape, weights.shape, (sy, sx), padding, (dy, dx))
    channels = image_shape[2] if len(image_shape) == 3 else 1
    factors = low_rank_factors(weights) if weights.ndim == 2 else None
    return _choose(weights, channels, image_shape[1], pads[1][0], out_size, (sy, sx), (dy, dx), factors)[0]


def _fft_correlate(rows, c, weights, rowmap, colmap, pad_left, stride, dilation, out_size, size, out):
    """Correlate through :mod:`kernelcli._fft` into ``out`` (``OH x OW*C``,
    or ``OH x OW`` for a depth kernel); tiles whose FFT result is not
    finite (NaN or infinity in their input, or overflow) are recomputed by the
    direct kernel, so non-finite values spread exactly as in the direct loop."""
    from . import _fft

    redo = _fft.correlate(rows, c, weights, rowmap, colmap, stride, dilation, out_size, size,
                          threads=_threads(), out=out)[1]
    sy, sx = stride
    dy, dx = dilation
    depth = weights.ndim == 3
    for oy0, oy1, ox0, ox1 in redo:
        # The same loop over the block's own stretch of the padding maps.
        cols = 1 if depth else c
        block = np.empty((oy1 - oy0, (ox1 - ox0) * cols), dtype=np.float32)
        rmap = np.ascontiguousarray(rowmap[oy0 * sy:])
        cmap = np.ascontiguousarray(colmap[ox0 * sx:])
        shift = pad_left - ox0 * sx
        kernels = backend(multiply_adds(weights, block.size))  # NumPy for a small block, unless Numba is loaded
        if depth:
            kernels.correlate_depth(rows, c, weights, rmap, cmap, shift, sy, sx, dy, dx, block)
        else:
            kernels.correlate_rows(rows, c, weights, rmap, cmap, shift, sy, sx, dy, dx, block)
        out[oy0:oy1, ox0 * cols:ox1 * cols] = block
    # Outputs whose every tap reads zero padding are exactly 0 in the direct
    # loop; the transform leaves rounding noise there (of the size of the
    # tile's other values), so they are cleared.
    kh, kw = weights.shape[:2]
    dead_rows = _all_padding(rowmap, out_size[0], sy, kh, dy)
    dead_cols = _all_padding(colmap, out_size[1], sx, kw, dx)
    if dead_rows.any():
        out[dead_rows] = 0
    if dead_cols.any():
        out.reshape(out_size[0], out_size[1], -1)[:, dead_cols] = 0
    return out


def _all_padding(index_map, n_out, stride, taps, dilation):
    """For each output along one axis: do all its taps read zero padding?"""
    inside = np.flatnonzero(index_map >= 0)
    first = np.arange(n_out, dtype=np.int64) * stride  # first tap of each output
    if inside.size == len(index_map):
        return np.zeros(n_out, dtype=bool)
    if inside.size == 0:
        return np.ones(n_out, dtype=bool)
    lo, hi = int(inside[0]), int(inside[-1]) + 1  # zero padding: the image is one stretch
    if hi - lo != inside.size:  # not a map source_index makes; check every tap
        at = first[:, None] + np.arange(taps, dtype=np.int64)[None, :] * dilation
        return np.all(index_map[at] < 0, axis=1)
    # the first tap at or after lo, and whether it is still a tap inside the stretch
    k = np.maximum(0, -(-(lo - first) // dilation))
    return (k > taps - 1) | (first + k * dilation >= hi)


def relu(x, slope: float = 0.0, inplace: bool = False):
    """``max(x, 0)`` elementwise (or ``x * slope`` for negatives when ``slope`` is set).

    ``inplace=True`` overwrites ``x`` when it is already a writable float32 array.
    """
    arr = as_image_array(x)
    inplace = inplace and arr is x and arr.flags.writeable
    if slope:
        out = arr if inplace else _memory.empty(arr.shape)
        if not inplace:
            np.copyto(out, arr)
        return np.multiply(out, np.float32(slope), out=out, where=out < 0)
    return np.maximum(arr, np.float32(0.0), out=arr if inplace else _memory.empty(arr.shape))


def pool_geometry(shape, kind: str = "max", size=2, stride=None) -> tuple:
    """``(PH, PW, SY, SX, OH, OW)``: the window, its stride and the output
    size of :func:`pool` on an input of ``shape`` (checked)."""
    if kind not in _POOL_CODES:
        raise UsageError(f"pool kind must be one of {', '.join(POOL_KINDS)}, got {kind!r}")
    ph, pw = pair(size, "pool size")
    sy, sx = pair(size if stride is None else stride, "pool stride")
    h, w = shape[:2]
    if ph > h or pw > w:
        raise UsageError(f"pool window {ph}x{pw} is larger than its input {h}x{w}")
    return ph, pw, sy, sx, (h - ph) // sy + 1, (w - pw) // sx + 1


def pool(x, kind: str = "max", size=2, stride=None):
    """Max, average or sum pooling over ``size`` windows every ``stride`` (default: size).

    No padding: rows and columns left over at the bottom/right are dropped.
    """
    src = as_image_array(x)
    ph, pw, sy, sx, oh, ow = pool_geometry(src.shape, kind, size, stride)
    rows, c = _rows_view(src)
    out = _memory.empty((oh, ow * c))
    kernels = backend(out.size * ph * pw)
    with timed(kernels):
        kernels.pool_rows(rows, c, _POOL_CODES[kind], ph, pw, sy, sx, out)
    return out.reshape((oh, ow, c) if src.ndim == 3 else (oh, ow))

"""How a computation runs: the one place that decides it.

:func:`plan_convolution` answers, for a kernel on an image of a given shape:
the method (a direct loop over the taps, 1-D passes for a low-rank kernel,
or FFTs in tiles for a large kernel, with the tile size), the low-rank
factors, and the backend whose loops run it (Numba or the NumPy twins:
:mod:`kernelcli.engine.backends`). :func:`plan_bands` answers the same
questions for an image computed in bands of rows (:mod:`kernelcli.run.bands`):
whether bands give the whole image's numbers, whether they run on int16
pixels, whether Numba is loaded for the image, whether bands take turns.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import backends
from .shapes import geometry, pair


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
#
# The constants are fitted to wall-clock times of the loops in
# kernelcli/engine/_jit.py (on one thread, padding "valid", a fresh output
# per call) and of FFT tiles on the development machine; benchmarks/
# bench_engine.py measures them (docs/performance.md).


DIRECT_VALUE = 0.8e-9
DIRECT_TAP = 0.065e-9
DIRECT_TAP_STRIDED = 0.3e-9
DIRECT_TAP_DEPTH = 0.26e-9
DIRECT_TAP_BORDER = 2.5e-9
FFT_POINT = 0.32e-9
FFT_TILE = 0.4e-3
FFT_CACHE_POINTS = 6e6
FFT_CALL = 0.3e-3


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

    threads = backends.threads() if threads is None else threads
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


#: Kernels with fewer taps than this always run directly.
SEPARABLE_MIN_TAPS = 25
#: Every partial sum of :func:`kernelcli.engine.correlate_exact` stays within this (int16).
_EXACT_LIMIT = 32767


def exact_weights(kernel, flip: bool = False, top: int = 255) -> np.ndarray | None:
    """A 2-D kernel's weights as int16 for :func:`kernelcli.engine.correlate_exact` on integer
    pixels of ``0..top``, or None when that would not be both exact and cheaper.

    Exact: every weight is a whole number, there is no offset, and no partial
    sum can leave int16 (the weights' absolute values sum to at most
    32767 / top: 128 for 8-bit pixels). Then :func:`kernelcli.engine.convolve`'s float32 sums
    are exact integers too (each below 2**24), so both give the same numbers.
    Cheaper: the kernel has fewer than :data:`SEPARABLE_MIN_TAPS` cells, so
    :func:`kernelcli.engine.convolve` runs its taps directly, and int16 taps move half the
    bytes of float32 ones. (A larger kernel may run as a few 1-D passes.)
    """
    from ..kernels import as_kernel

    k = as_kernel(kernel)
    if k.depth is not None or k.offset or k.shape[0] * k.shape[1] >= SEPARABLE_MIN_TAPS:
        return None
    weights = k.array[::-1, ::-1] if flip else k.array
    if not np.array_equal(weights, np.round(weights)) or np.abs(weights).sum() * top > _EXACT_LIMIT:
        return None
    return np.ascontiguousarray(weights, dtype=np.int16)


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


def multiply_adds(weights, values: int) -> int:
    """About how many multiply-adds :func:`kernelcli.engine.convolve` spends on ``values``
    output values (channels counted) with these weights: the nonzero taps
    for each, or rank x (KH + KW) for a kernel it may run as 1-D passes."""
    weights = np.asarray(weights, dtype=np.float32)
    if weights.ndim == 2:
        factors = low_rank_factors(weights)
        if factors is not None:
            return values * len(factors) * (weights.shape[0] + weights.shape[1])
    return values * int(np.count_nonzero(weights))

#: The same for a whole image done in bands of rows (kernelcli.run.bands),
#: each band small enough to stay in cache, where NumPy loses much less to
#: Numba: up to this many multiply-adds in all, NumPy's bands cost no more
#: than loading Numba and running its loops.
NUMPY_MAX_BANDED_WORK = 5_000_000_000


@dataclass(slots=True)
class Plan:
    """How :func:`kernelcli.engine.convolve` computes a kernel on an image
    (made for every call: a plain slotted class, quick to make)."""

    pads: tuple  # ((top, bottom), (left, right))
    out_size: tuple  # (OH, OW)
    method: str  # "direct", "separable" or "fft"
    fft_size: tuple | None  # the FFT's tile size (method "fft")
    factors: list | None = field(compare=False)  # [(column, row), ...] of a low-rank 2-D kernel
    work: int = 0  # multiply-adds of the loops (method "direct" or "separable")

    def kernels(self) -> backends.Kernels:
        """The backend whose loops run it. Asked when they are about to run:
        the answer follows whether Numba is loaded by then (FFTs need none)."""
        return backends.backend(self.work)


def _decide(weights, shape, stride, padding, dilation):
    """``(pads, out_size, factors, method, fft_size)`` (weights already flipped, float32)."""
    pads, out_size = geometry(shape, weights.shape, stride, padding, dilation)
    channels = shape[2] if len(shape) == 3 else 1
    factors = low_rank_factors(weights) if weights.ndim == 2 else None
    method, size = _choose(weights, channels, shape[1], pads[1][0], out_size, stride, dilation, factors)
    return pads, out_size, factors, method, size


def plan_convolution(weights, shape, stride=1, padding="same", dilation=1) -> Plan:
    """How to correlate these (already flipped) float32 ``weights`` with an
    image of ``shape`` (``H x W`` or ``H x W x C``): its geometry (checked:
    a usage error when the kernel does not fit), the cheapest method by the
    cost model above, and the work that picks the backend."""
    weights = np.asarray(weights, dtype=np.float32)
    stride, dilation = pair(stride, "stride"), pair(dilation, "dilation")
    pads, out_size, factors, method, size = _decide(weights, shape, stride, padding, dilation)
    channels = 1 if weights.ndim == 3 or len(shape) == 2 else shape[2]
    work = 0 if method == "fft" else multiply_adds(weights, out_size[0] * out_size[1] * channels)
    return Plan(pads, out_size, method, size, factors, work)


def method_for(weights, image_shape, stride=1, padding="same", dilation=1) -> str:
    """The method of :func:`plan_convolution`, and nothing else (no backend
    is picked, nothing is computed): "direct", "separable" or "fft"."""
    weights = np.asarray(weights, dtype=np.float32)
    stride, dilation = pair(stride, "stride"), pair(dilation, "dilation")
    return _decide(weights, image_shape, stride, padding, dilation)[3]


# --------------------------------------------------------------------------
# an image in bands of rows


@dataclass(frozen=True)
class Bands:
    """How an image is cut into bands: final output rows per band, the input
    heights (padding rows included) of a full band and of the smallest one,
    how many bands, and the input values a band reads."""

    rows: int
    heights: tuple
    count: int
    values: int


@dataclass(frozen=True)
class BandsPlan:
    """How :func:`kernelcli.run.bands.apply_in_bands` computes an image."""

    bands: Bands
    #: Bands give exactly the whole image's numbers (else the image goes whole).
    as_whole: bool
    #: The int16 weights when bands are computed on int16 pixels, else None.
    integer_weights: np.ndarray | None = field(compare=False)
    #: Load Numba for the image now (decided once, not band by band).
    load_numba: bool = False
    #: Bands run one at a time: Numba's parallel loops are not to be entered
    #: from two threads at once.
    take_turns: bool = False


def plan_bands(kernels, flip: bool, shape, stride, padding, dilation, band_padding,
               cut: Callable[[int], Bands], *, integer_pixels: bool, output_is_plain_8bit: bool,
               pool_kind: str | None, gray: bool, has_alpha: bool) -> BandsPlan:
    """How to compute an image of ``shape`` with ``kernels`` (Kernel objects,
    one or a bank; ``flip``: convolve) band by band, each band convolved with
    ``band_padding`` (no row padding: rows are gathered instead).
    ``cut(value_bytes)``: the bands for input values of that many bytes.

    Integer path: with ``integer_pixels`` (8-bit), ``output_is_plain_8bit``
    (the output conversion only rounds and clips to uint8), no stage but ReLU
    and max pooling (no gray, no alpha kept, one 2-D kernel), and an integer
    kernel (:func:`exact_weights`), bands are computed in int16 to the same
    bytes, half the size of float32 ones (so twice as many rows a band)."""
    integer = None
    single = len(kernels) == 1 and kernels[0].depth is None and not kernels[0].threshold
    if (integer_pixels and output_is_plain_8bit and not has_alpha and pool_kind in (None, "max")
            and not gray and single):
        integer = exact_weights(kernels[0], flip)
    bands = cut(4 if integer is None else 2)
    if not _bands_compute_as_whole(kernels, flip, shape, stride, padding, dilation, band_padding, bands):
        return BandsPlan(bands, False, integer)
    if integer is not None:
        return BandsPlan(bands, True, integer)
    work = sum(multiply_adds(k.array, bands.values) for k in kernels)
    load = work * bands.count > NUMPY_MAX_BANDED_WORK
    take_turns = backends.uses_numba(work) or (load and not backends.warming_elsewhere())
    return BandsPlan(bands, True, None, load, take_turns)


def _bands_compute_as_whole(kernels, flip, shape, stride, padding, dilation, band_padding, bands) -> bool:
    """Is the method the same (never FFT) for the whole image and for bands
    of these heights, for every kernel and for every channel count a stage
    may hand it?"""
    channels = shape[2] if len(shape) == 3 else 1
    for kernel in kernels:
        weights = kernel.array[::-1, ::-1] if flip else kernel.array
        for c in {1, max(1, channels - 1), channels}:
            tail = (c,) if len(shape) == 3 else ()
            whole = method_for(weights, shape[:2] + tail, stride, padding, dilation)
            if whole == "fft":
                return False
            for h in bands.heights:  # a whole band, and the smallest band
                if method_for(weights, (h, shape[1]) + tail, stride, band_padding, dilation) != whole:
                    return False
    return True


def numba_ahead(kernels, flip: bool, shape, stride, padding, dilation, integer_path: bool = True) -> bool:
    """Will an image of ``shape`` surely need Numba's loops when computed in
    bands? Yes when Numba is not loaded yet, the kernel does not take the
    integer path (``integer_path``: bands in memory may take it; a file in
    bands never does), the float32 bands add up to more multiply-adds than
    NumPy takes (counted without the bands' overlaps), and no kernel would
    run by FFT (such an image goes whole, and FFTs need no Numba)."""
    if backends.numba_loaded() or (integer_path and exact_weights(kernels[0], flip) is not None):
        return False
    if sum(multiply_adds(k.array, math.prod(shape)) for k in kernels) <= NUMPY_MAX_BANDED_WORK:
        return False
    return not any(method_for(k.array, shape, stride, padding, dilation) == "fft" for k in kernels)

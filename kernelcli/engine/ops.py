"""Convolution, ReLU and pooling on float32 arrays: each validates its
arguments (with messages saying what is allowed), allocates the output (a
large one on memory that an earlier result gave back: :mod:`kernelcli._memory`)
and hands plain arrays to the loops that :mod:`kernelcli.engine.plan` picks.

The engine computes cross-correlation, as ConvNets do: the kernel slides over
the image without being flipped. ``flip=True`` gives true convolution.
"""

from __future__ import annotations

import functools

import numpy as np

from .. import _memory
from ..errors import UsageError
from . import backends, plan
from .shapes import (PAD_MODES, geometry, POOL_CODES, as_image_array, origin_padding, origin_pair, pair, pool_geometry,
                     rows_view, source_index)

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
    weights comes back): making a Kernel of it, checked and scaled, costs a
    good part of a whole call on a small image."""
    if isinstance(kernel, np.ndarray) and kernel.size <= 1024 and kernel.dtype.kind in "biuf":
        k, weights = _array_kernel_weights(kernel.tobytes(), kernel.shape, kernel.dtype.str, bool(flip))
        return k, weights.copy()
    return _make_kernel_weights(kernel, flip)


def _make_kernel_weights(kernel, flip: bool):
    from ..kernels import as_kernel

    k = as_kernel(kernel)
    weights = k.array[::-1, ::-1] if flip else k.array
    return k, np.ascontiguousarray(weights, dtype=np.float32)


@functools.lru_cache(maxsize=64)
def _array_kernel_weights(data: bytes, shape: tuple, dtype: str, flip: bool):
    return _make_kernel_weights(np.frombuffer(data, dtype=dtype).reshape(shape).copy(), flip)


def convolve(x, kernel, stride=1, padding="same", pad_mode: str = "zero", dilation=1, flip: bool = False,
             out=None, cval=0.0, origin=None):
    """Cross-correlate ``x`` with a kernel.

    A 2-D kernel acts on each channel separately (the output has the input's
    channels); a ``K x K x C`` kernel sums over the input's C channels and
    gives one ``H x W`` feature map, as a ConvNet layer's filter does.

    x: ``H x W`` or ``H x W x C`` array (any real dtype; computed in float32).
    kernel: a name (``"sharpen"``), a spec string (``"1,0,1;0,1,0;1,0,1"``,
    ``"box:5"``, a file path), a :class:`kernelcli.kernels.Kernel` or a 2-D array.
    stride, dilation: ``S`` or ``(SY, SX)``. padding: ``"same"``, ``"valid"``,
    ``"full"``, ``P``, ``(PY, PX)`` or ``((TOP, BOTTOM), (LEFT, RIGHT))``. flip: convolve instead of correlate.
    cval: the value the padding holds with ``pad_mode="zero"`` (constant
    padding, as ``scipy.ndimage.correlate(mode="constant", cval=...)``); 0 by
    default. Computed as the correlation of ``x - cval`` with zero padding,
    plus ``cval`` times the sum of the weights.
    origin: ``(Y, X)``, the kernel cell (0-based, of the kernel as given)
    that lies over each output pixel, with ``padding="same"``; default: the
    kernel's own (an ImageMagick ``WxH+X+Y:`` string), else the centre.
    ``scipy.ndimage.correlate``'s origin is ``Y - KH // 2``, ``X - KW // 2``.
    out: a C-contiguous float32 array of the result's shape to write into
    (not overlapping ``x``), as with NumPy's ``out=``: it saves a new array
    per call when many images of one size go through.

    Returns a float32 array with the same number of dimensions as ``x``
    (``out`` itself when given). A result of 32 MiB or more is laid on the
    memory of an earlier result of the same size that is gone, when there is
    one, which saves the system zeroing fresh pages (:func:`release_memory`).

    The way it is computed follows a cost model (:mod:`kernelcli.engine.plan`):
    a direct loop over the taps, 1-D passes for a low-rank kernel, or FFTs in
    tiles for a large kernel (:mod:`kernelcli.engine._fft`). The last two agree with
    the direct loop to float32 rounding, not bit for bit.
    """
    k, weights = _kernel_weights(kernel, flip)
    src = as_image_array(x)
    sy, sx = pair(stride, "stride")
    dy, dx = pair(dilation, "dilation")
    if origin is not None or (k.origin is not None and padding == "same"):
        padding = origin_padding(weights.shape, placed_origin(k, origin, flip), padding, (dy, dx))
    if pad_mode not in PAD_MODES:
        raise UsageError(f"pad mode must be one of {', '.join(PAD_MODES)}, got {pad_mode!r}")
    how = plan.plan_convolution(weights, src.shape, (sy, sx), padding, (dy, dx))
    pads, (oh, ow) = how.pads, how.out_size
    h, w = src.shape[:2]
    rows, c = rows_view(src)
    out_channels = 1 if weights.ndim == 3 else c
    shape = (oh, ow) if src.ndim == 2 or weights.ndim == 3 else (oh, ow, c)
    if out is None:
        _memory.ensure_memory(oh * ow * out_channels * 4, f"a {oh}x{ow}x{out_channels} float32 result")
    else:
        _check_out(out, shape, x, src)
    if cval:
        rows, cval = _shifted(rows, cval, pad_mode)
    if weights.ndim == 3 and weights.shape[2] != c:
        raise UsageError(
            f"kernel {k.name} has depth {weights.shape[2]} but the input has {c} channel(s); "
            "a K x K x C kernel needs C input channels"
        )
    rowmap = source_index(h, pads[0], pad_mode)
    colmap = source_index(w, pads[1], pad_mode)

    dest = _memory.empty(shape) if out is None else out
    flat = dest.reshape(oh, ow * out_channels)
    if how.method == "fft":  # (FFTs need no Numba; it is asked for only where its loops run)
        _fft_correlate(rows, c, weights, rowmap, colmap, pads[1][0], (sy, sx), (dy, dx), (oh, ow), how.fft_size,
                       flat)
    else:
        kernels = how.kernels()
        loop = _exercise_depth if weights.ndim == 3 else _exercise_direct if how.method == "direct" else \
            _exercise_separable
        with backends.timed(kernels, loop):
            if weights.ndim == 3:
                kernels.correlate_depth(rows, c, weights, rowmap, colmap, pads[1][0], sy, sx, dy, dx, flat)
            elif how.method == "direct":
                kernels.correlate_rows(rows, c, weights, rowmap, colmap, pads[1][0], sy, sx, dy, dx, flat)
            else:
                _separable(kernels, rows, c, how.factors, rowmap, colmap, pads[1][0], (sy, sx), (dy, dx), flat)
    if cval:
        dest += np.float32(cval * float(weights.sum(dtype=np.float64)))
    if k.offset:
        dest += np.float32(k.offset)
    return dest


def _shifted(rows: np.ndarray, cval, pad_mode: str):
    """``rows - cval`` as a new float32 array (zero padding of it is padding
    with ``cval`` of ``rows``), and ``cval`` as a checked float."""
    import math

    try:
        value = float(cval)
    except (TypeError, ValueError):
        raise UsageError(f"the border value must be a number, got {cval!r}") from None
    if not math.isfinite(value):
        raise UsageError(f"the border value must be a finite number, got {cval!r}")
    if pad_mode != "zero":
        raise UsageError(f"a border value is the constant of pad mode zero; pad mode {pad_mode} takes none")
    return np.subtract(rows, np.float32(value), dtype=np.float32), value


def placed_origin(kernel, origin, flip: bool) -> tuple[int, int]:
    """The origin among the weights as correlated: ``origin`` (else the
    kernel's own), moved with the kernel when ``flip`` turns it."""
    oy, ox = origin_pair(kernel.origin if origin is None else origin)
    kh, kw = kernel.shape
    return (kh - 1 - oy, kw - 1 - ox) if flip else (oy, ox)


def correlate_exact(x: np.ndarray, weights: np.ndarray, stride=1, padding="same", pad_mode: str = "zero",
                    dilation=1) -> np.ndarray:
    """Cross-correlate integer pixels with integer weights in int16 arithmetic.

    x: an int16 ``H x W`` or ``H x W x C`` array of pixels in ``0..top``;
    weights: from :func:`exact_weights` for that ``top`` (already flipped if
    wanted). Same geometry and padding as :func:`convolve`, whose result this
    equals exactly (as int16 instead of float32). Runs on the NumPy loops of
    :mod:`kernelcli.engine._npkernels`, whose arithmetic follows the arrays' dtype.
    """
    from . import _npkernels

    if x.dtype != np.int16 or getattr(weights, "dtype", None) != np.int16 or weights.ndim != 2:
        raise TypeError("correlate_exact takes int16 pixels and 2-D int16 weights from exact_weights")
    sy, sx = pair(stride, "stride")
    dy, dx = pair(dilation, "dilation")
    pads, (oh, ow) = geometry(x.shape, weights.shape, (sy, sx), padding, (dy, dx))
    rows, c = rows_view(np.ascontiguousarray(x))
    out = np.empty((oh, ow * c), dtype=np.int16)
    _npkernels.correlate_rows(rows, c, weights, source_index(x.shape[0], pads[0], pad_mode),
                              source_index(x.shape[1], pads[1], pad_mode), pads[1][0], sy, sx, dy, dx, out)
    return out.reshape((oh, ow, c) if x.ndim == 3 else (oh, ow))


def _separable(kernels, rows, c, factors, rowmap, colmap, pad_left, stride, dilation, out):
    """Low-rank kernel as 1-D passes into ``out`` (``OH x OW*C``): down the
    columns (rows' padding and stride), then along the rows (columns'
    padding and stride), summed.
    ``kernels``: the module whose loops run them (:mod:`kernelcli.engine.backends`);
    the jitted loops do both passes a band of rows at a time
    (``correlate_separable``), the NumPy twins over whole arrays."""
    sy, sx = stride
    dy, dx = dilation
    oh = out.shape[0]
    if kernels.FUSED_SEPARABLE:
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


def _fft_correlate(rows, c, weights, rowmap, colmap, pad_left, stride, dilation, out_size, size, out):
    """Correlate through :mod:`kernelcli.engine._fft` into ``out`` (``OH x OW*C``,
    or ``OH x OW`` for a depth kernel); tiles whose FFT result is not
    finite (NaN or infinity in their input, or overflow) are recomputed by the
    direct kernel, so non-finite values spread exactly as in the direct loop."""
    from . import _fft

    redo = _fft.correlate(rows, c, weights, rowmap, colmap, stride, dilation, out_size, size,
                          threads=backends.threads(), out=out)[1]
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
        kernels = backends.backend(plan.multiply_adds(weights, block.size))  # NumPy for a small block, unless Numba is loaded
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


#: The element-wise activations :func:`activate` computes.
ACTIVATIONS = ("relu", "leaky", "tanh", "sigmoid")


def activate(x, kind: str = "relu", param: float | None = None, inplace: bool = False):
    """An activation function element by element, in float32.

    ``relu``: ``max(x, 0)``; ``leaky``: negatives times ``param`` (the slope,
    default 0.01); ``tanh``: ``tanh(param * x)``; ``sigmoid``:
    ``1 / (1 + exp(-param * x))`` (``param`` default 1, computed as
    ``0.5 + 0.5 * tanh(param * x / 2)``, which never overflows). ``relu`` and
    ``leaky`` are :func:`relu`, with the same numbers. ``inplace=True``
    overwrites ``x`` when it is already a writable float32 array.
    """
    if kind not in ACTIVATIONS:
        raise UsageError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {kind!r}")
    if param is not None and not np.isfinite(param):
        raise UsageError(f"the {kind} parameter must be a finite number, got {param!r}")
    if kind == "relu":
        return relu(x, 0.0, inplace=inplace)
    if kind == "leaky":
        return relu(x, 0.01 if param is None else param, inplace=inplace)
    arr = as_image_array(x)
    out = arr if inplace and arr is x and arr.flags.writeable else _memory.empty(arr.shape)
    k = np.float32(1.0 if param is None else param)
    if kind == "sigmoid":
        k = k * np.float32(0.5)
    with np.errstate(over="ignore", invalid="ignore"):  # k * x past float32's range is +-inf: tanh is +-1
        np.multiply(arr, k, out=out)
        np.tanh(out, out=out)
    if kind == "sigmoid":
        out *= np.float32(0.5)
        out += np.float32(0.5)
    return out


def pool(x, kind: str = "max", size=2, stride=None):
    """Max, average or sum pooling over ``size`` windows every ``stride`` (default: size).

    No padding: rows and columns left over at the bottom/right are dropped.
    """
    src = as_image_array(x)
    ph, pw, sy, sx, oh, ow = pool_geometry(src.shape, kind, size, stride)
    rows, c = rows_view(src)
    out = _memory.empty((oh, ow * c))
    kernels = backends.backend(out.size * ph * pw)
    with backends.timed(kernels, _exercise_pool):
        kernels.pool_rows(rows, c, POOL_CODES[kind], ph, pw, sy, sx, out)
    return out.reshape((oh, ow, c) if src.ndim == 3 else (oh, ow))


def release_memory() -> None:
    """Give back to the system now the memory kept from large results that
    are gone (at most 256 MiB, kept for the next results of their sizes:
    :mod:`kernelcli._memory`)."""
    _memory.release()


def warm_up(wait: bool = True) -> None:
    """Load Numba and the engine's loops (compiling them into an empty cache,
    else loading them from it), on a background thread; with ``wait``,
    return once they are ready. Calls made meanwhile run on the NumPy twins;
    every call after it runs on the compiled loops. Done once per process;
    calling again only waits (or not). A process whose calls have spent
    :data:`kernelcli.engine.backends.WARM_UP_AFTER_SECONDS` on the twins
    starts it by itself (when ``config.AUTO_WARM_UP`` allows)."""
    backends.warm_up(_exercise, wait)


def _exercise() -> None:
    """The loops that :func:`convolve` and :func:`pool` run most, each called
    once on a small array, with the argument types of real calls (a
    ``K x K x C`` kernel's loop loads when first used)."""
    for loop in (_exercise_direct, _exercise_separable, _exercise_pool):
        loop()


def _exercise_direct() -> None:
    convolve(np.zeros((16, 16), np.float32), np.ones((3, 3), np.float32))


def _exercise_separable() -> None:
    convolve(np.zeros((16, 16), np.float32), np.ones((5, 5), np.float32))


def _exercise_depth() -> None:
    convolve(np.zeros((16, 16, 2), np.float32), np.ones((3, 3, 2), np.float32))


def _exercise_pool() -> None:
    pool(np.zeros((16, 16), np.float32), "max", 2)

"""The public operations, for NumPy arrays and for Dask arrays alike.

:func:`convolve`, :func:`relu` and :func:`pool` hand a NumPy array (or
anything array-like) to :mod:`kernelcli.engine.ops` as it is. A
``dask.array.Array`` gets a lazy result instead: the output is cut into bands
of rows (as many as the input has row chunks), and each band is computed by
the same operation from the input rows it reads, gathered through the
engine's own padding map (so every pad mode, stride, dilation and origin
reads at the array's edges exactly what the in-memory operation reads). The
rows are the band's with the kernel's reach (or the pooling window's) above
and below; the columns are whole. Once computed, the result is the in-memory
result (kernels the engine runs by FFT agree to float32 rounding). Dask is
imported only when a Dask array is given.
"""

from __future__ import annotations

import numpy as np

from . import ops
from .shapes import geometry, origin_padding, pair, pool_geometry, source_index


def _is_dask(x) -> bool:
    return type(x).__module__.split(".")[0] == "dask"


def convolve(x, kernel, stride=1, padding="same", pad_mode: str = "zero", dilation=1, flip: bool = False,
             out=None, cval=0.0, origin=None):
    if not _is_dask(x):
        return ops.convolve(x, kernel, stride, padding, pad_mode, dilation, flip, out, cval, origin)
    if out is not None:
        raise ops.UsageError("out= takes a NumPy array; a Dask array's result is lazy")
    k, weights = ops._kernel_weights(kernel, flip)
    if origin is not None or (k.origin is not None and padding == "same"):
        padding = origin_padding(weights.shape, ops.placed_origin(k, origin, flip), padding, dilation)
        origin = None
    sy = pair(stride, "stride")[0]
    dy = pair(dilation, "dilation")[0]
    reach = dy * (weights.shape[0] - 1) + 1
    pads, (oh, ow) = geometry(x.shape, weights.shape, stride, padding, dilation)
    rowmap = source_index(x.shape[0], pads[0], pad_mode)
    channels = () if x.ndim == 2 or weights.ndim == 3 else (x.shape[2],)

    def band(rows):
        return ops.convolve(rows, k, stride, ((0, 0), pads[1]), pad_mode, dilation, flip, None, cval)
    return _in_bands(x, rowmap, oh, sy, reach, (ow,) + channels, band, cval)


def pool(x, kind: str = "max", size=2, stride=None):
    if not _is_dask(x):
        return ops.pool(x, kind, size, stride)
    ph, pw, sy, sx, oh, ow = pool_geometry(x.shape, kind, size, stride)
    rowmap = np.arange(x.shape[0], dtype=np.int64)
    return _in_bands(x, rowmap, oh, sy, ph, (ow,) + tuple(x.shape[2:]),
                     lambda rows: ops.pool(rows, kind, size, stride), 0.0)


def relu(x, slope: float = 0.0, inplace: bool = False):
    if not _is_dask(x):
        return ops.relu(x, slope, inplace)
    return x.map_blocks(lambda b: ops.relu(b, slope), dtype=np.float32)


def _in_bands(x, rowmap, out_h: int, step: int, reach: int, rest: tuple, compute, fill: float):
    """A lazy array of ``out_h`` rows (each ``rest`` in shape), band by band:
    output rows ``[a, b)`` are ``compute`` of the input rows ``rowmap[a *
    step:(b - 1) * step + reach]`` (``-1``: a row of ``fill``)."""
    import dask.array as da

    per_band = max(1, max(x.chunks[0]) // step)
    bands = []
    for a in range(0, out_h, per_band):
        b = min(out_h, a + per_band)
        rows = rowmap[a * step:(b - 1) * step + reach]
        taken = x[np.where(rows < 0, 0, rows)].rechunk({0: -1, 1: -1}).astype(np.float32)
        if (rows < 0).any():
            mask = (rows < 0).reshape((-1,) + (1,) * (x.ndim - 1))
            taken = da.where(mask, np.float32(fill), taken)
        dropped = {"drop_axis": list(range(len(rest) + 1, x.ndim))} if len(rest) + 1 < x.ndim else {}
        bands.append(taken.map_blocks(compute, dtype=np.float32, chunks=((b - a,),) + tuple((n,) for n in rest),
                                      **dropped))
    return da.concatenate(bands, axis=0)


_DASK_NOTE = """
    A ``dask.array.Array`` ``x`` gives a lazy Dask array: bands of output rows,
    one per row chunk of ``x``, each computed from the rows it reads (the
    reach at the array's edges taken through the pad mode), identical to the
    in-memory result once computed."""
convolve.__doc__ = ops.convolve.__doc__.rstrip() + "\n" + _DASK_NOTE
pool.__doc__ = ops.pool.__doc__.rstrip() + "\n" + _DASK_NOTE
relu.__doc__ = ops.relu.__doc__.rstrip() + "\n" + _DASK_NOTE.replace("bands of output rows,\n    one per row chunk of ``x``, each computed from the rows it reads (the\n    reach at the array's edges taken through the pad mode)", "the same chunks")

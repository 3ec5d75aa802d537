"""PNG's row filters undone, a scanline at a time (Numba: Average and Paeth
depend on the byte just decoded, so they cannot be written as array
operations). Only :mod:`kernelcli.io.png_rows` imports this, when a PNG is
read in bands; the engine's own loops live in :mod:`kernelcli.engine._jit`,
which the I/O layer may not import."""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def unfilter_rows(data, width_bytes, bpp, prior, out):  # pragma: no cover - compiled
    """Undo the filters of ``out.shape[0]`` scanlines in ``data`` (each a
    filter byte then ``width_bytes`` bytes) into ``out``; ``prior`` is the
    row above the first (zeros for the picture's first row). Returns -1, or
    the index of the first scanline with an unknown filter type."""
    rows = out.shape[0]
    stride = width_bytes + 1
    for r in range(rows):
        kind = data[r * stride]
        line = data[r * stride + 1:(r + 1) * stride]
        above = prior if r == 0 else out[r - 1]
        row = out[r]
        if kind == 0:
            for i in range(width_bytes):
                row[i] = line[i]
        elif kind == 1:
            for i in range(width_bytes):
                left = row[i - bpp] if i >= bpp else 0
                row[i] = (line[i] + left) & 0xFF
        elif kind == 2:
            for i in range(width_bytes):
                row[i] = (line[i] + above[i]) & 0xFF
        elif kind == 3:
            for i in range(width_bytes):
                left = np.int32(row[i - bpp]) if i >= bpp else np.int32(0)
                row[i] = (line[i] + ((left + np.int32(above[i])) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(width_bytes):
                a = np.int32(row[i - bpp]) if i >= bpp else np.int32(0)
                b = np.int32(above[i])
                c = np.int32(above[i - bpp]) if i >= bpp else np.int32(0)
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                if pa <= pb and pa <= pc:
                    pred = a
                elif pb <= pc:
                    pred = b
                else:
                    pred = c
                row[i] = (line[i] + pred) & 0xFF
        else:
            return r
    return -1

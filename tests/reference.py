"""Slow, obviously correct reference implementations for the engine tests.

Written independently of ``kernelcli`` (nothing from the package is imported
here): build the padded array explicitly with ``np.pad`` and loop over every
output position in float64.

Our pad-mode names differ from NumPy's::

    ours         np.pad mode      padded samples around   a b c d
    zero         "constant"       0 0 0 | a b c d | 0 0 0
    reflect      "symmetric"      c b a | a b c d | d c b
    reflect101   "reflect"        d c b | a b c d | c b a
    edge         "edge"           a a a | a b c d | d d d
    wrap         "wrap"           b c d | a b c d | a b c
"""

from __future__ import annotations

import numpy as np

NP_PAD_MODE = {
    "zero": "constant",
    "reflect": "symmetric",
    "reflect101": "reflect",
    "edge": "edge",
    "wrap": "wrap",
}


def pair(v):
    if isinstance(v, (int, np.integer)):
        return (int(v), int(v))
    a, b = v
    return (int(a), int(b))


def same_pads(reach):
    """``((R-1)//2, R//2)`` per axis, for reach ``(RY, RX)`` (or one int for both)."""
    ry, rx = pair(reach)
    return (((ry - 1) // 2, ry // 2), ((rx - 1) // 2, rx // 2))


def reach_of(kshape, dilation=(1, 1)):
    dy, dx = pair(dilation)
    kh, kw = kshape
    return (dy * (kh - 1) + 1, dx * (kw - 1) + 1)


def pads_for(padding, kshape, dilation=1):
    """Our padding words/numbers -> ``((top, bottom), (left, right))``, worked out by hand."""
    ry, rx = reach_of(kshape, dilation)
    if padding == "same":
        return same_pads((ry, rx))
    if padding == "valid":
        return ((0, 0), (0, 0))
    if padding == "full":
        return ((ry - 1, ry - 1), (rx - 1, rx - 1))
    if isinstance(padding, tuple) and isinstance(padding[0], tuple):
        return padding
    py, px = pair(padding)
    return ((py, py), (px, px))


def kernel_fits(shape, kshape, padding, dilation=1) -> bool:
    """Does the (dilated) kernel fit inside the padded image, so that there is an output?"""
    pads = pads_for(padding, kshape[:2], dilation)
    reach = reach_of(kshape[:2], pair(dilation))
    return all(shape[a] + pads[a][0] + pads[a][1] >= reach[a] for a in (0, 1))


def rand_image(shape, seed):
    return np.random.default_rng(seed).uniform(-2.0, 3.0, size=shape).astype(np.float32)


def rand_kernel(kshape, seed):
    return np.random.default_rng(seed + 10_000).uniform(-1.5, 1.5, size=kshape).astype(np.float32)


def pad_ref(x, pads, pad_mode="zero"):
    """The explicitly padded 2-D or 3-D array (channels are never padded)."""
    x = np.asarray(x, dtype=np.float64)
    (pt, pb), (pl, pr) = pads
    width = [(pt, pb), (pl, pr)] + [(0, 0)] * (x.ndim - 2)
    mode = NP_PAD_MODE[pad_mode]
    if mode == "constant":
        return np.pad(x, width, mode="constant", constant_values=0.0)
    return np.pad(x, width, mode=mode)


def correlate_ref(x, k, stride=(1, 1), pads=((0, 0), (0, 0)), pad_mode="zero", dilation=(1, 1)):
    """Cross-correlation (no kernel flip) of a 2-D or 3-D input with a 2-D kernel.

    ``out[oy, ox] = sum_{ky,kx} k[ky,kx] * P[oy*sy + ky*dy, ox*sx + kx*dx]``
    where ``P`` is the padded input; each channel separately; float64.
    """
    x = np.asarray(x, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    assert x.ndim in (2, 3) and k.ndim == 2
    sy, sx = pair(stride)
    dy, dx = pair(dilation)
    p = pad_ref(x, pads, pad_mode)
    kh, kw = k.shape
    ry, rx = reach_of(k.shape, (dy, dx))
    ph, pw = p.shape[:2]
    oh = (ph - ry) // sy + 1
    ow = (pw - rx) // sx + 1
    assert oh >= 1 and ow >= 1, "kernel does not fit"
    out = np.zeros((oh, ow) + x.shape[2:], dtype=np.float64)
    for oy in range(oh):
        for ox in range(ow):
            acc = np.zeros(x.shape[2:], dtype=np.float64)
            for ky in range(kh):
                for kx in range(kw):
                    acc = acc + k[ky, kx] * p[oy * sy + ky * dy, ox * sx + kx * dx]
            out[oy, ox] = acc
    return out


def pool_ref(x, kind, size, stride=None):
    """Max / avg / sum pooling with plain loops; no padding, leftovers dropped."""
    x = np.asarray(x, dtype=np.float64)
    ph, pw = pair(size)
    sy, sx = pair(size if stride is None else stride)
    h, w = x.shape[:2]
    oh = (h - ph) // sy + 1
    ow = (w - pw) // sx + 1
    out = np.zeros((oh, ow) + x.shape[2:], dtype=np.float64)
    for oy in range(oh):
        for ox in range(ow):
            window = x[oy * sy: oy * sy + ph, ox * sx: ox * sx + pw]
            if kind == "max":
                out[oy, ox] = window.max(axis=(0, 1))
            elif kind == "avg":
                out[oy, ox] = window.sum(axis=(0, 1)) / (ph * pw)
            elif kind == "sum":
                out[oy, ox] = window.sum(axis=(0, 1))
            else:
                raise ValueError(kind)
    return out


def relu_ref(x, slope=0.0):
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    flat_in, flat_out = x.ravel(), out.ravel()
    for i, v in enumerate(flat_in):
        flat_out[i] = v if v >= 0 else v * slope
    return out


def activation_ref(x, kind, param=None):
    """relu, leaky, tanh and sigmoid one value at a time, in float64."""
    import math

    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    flat_in, flat_out = x.ravel(), out.ravel()
    for i, v in enumerate(flat_in):
        if kind == "relu":
            flat_out[i] = v if v >= 0 else 0.0
        elif kind == "leaky":
            flat_out[i] = v if v >= 0 else v * (0.01 if param is None else param)
        elif kind == "tanh":
            flat_out[i] = math.tanh((1.0 if param is None else param) * v)
        elif kind == "sigmoid":
            z = (1.0 if param is None else param) * v
            flat_out[i] = 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))
        else:
            raise ValueError(kind)
    return out


# --------------------------------------------------------------------------
# PNG, written and read with plain NumPy and zlib: an encoder and a decoder
# independent of kernelcli's and Pillow's, with all five row filters


def _paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
    return np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))


def png_bytes(pixels, interlaced=False):
    """A PNG of uint8 or uint16 ``pixels`` (H x W or H x W x C), each row
    filtered by the next of the five filters in turn (None, Sub, Up, Average,
    Paeth), not interlaced."""
    import struct
    import zlib

    assert not interlaced
    px = np.asarray(pixels)
    h, w = px.shape[:2]
    c = 1 if px.ndim == 2 else px.shape[2]
    depth = px.dtype.itemsize * 8
    raw = px.astype(px.dtype.newbyteorder(">")).view(np.uint8).reshape(h, -1).astype(np.int32)
    bpp = c * px.dtype.itemsize
    rows = []
    for y in range(h):
        x = raw[y]
        up = raw[y - 1] if y else np.zeros_like(x)
        left = np.r_[np.zeros(bpp, np.int32), x[:-bpp]]
        upleft = np.r_[np.zeros(bpp, np.int32), up[:-bpp]]
        kind = y % 5
        pred = [0 * x, left, up, (left + up) // 2, _paeth(left, up, upleft)][kind]
        rows.append(bytes([kind]) + ((x - pred) % 256).astype(np.uint8).tobytes())

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    colour = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, colour, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))


def png_pixels(data):
    """The pixels of a non-interlaced 8- or 16-bit PNG (gray, gray+alpha,
    RGB, RGBA), decoded with plain loops."""
    import struct
    import zlib

    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h, depth, colour, _, _, interlace = header
    assert interlace == 0 and depth in (8, 16)
    c = {0: 1, 4: 2, 2: 3, 6: 4}[colour]
    bpp, stride = c * depth // 8, w * c * depth // 8
    raw = zlib.decompress(idat)
    out = np.zeros((h, stride), np.int64)
    for y in range(h):
        line = raw[y * (stride + 1):(y + 1) * (stride + 1)]
        kind, x = line[0], list(line[1:])
        up = out[y - 1].tolist() if y else [0] * stride
        for i in range(stride):
            a = x[i - bpp] if i >= bpp else 0
            b = up[i]
            cc = up[i - bpp] if i >= bpp else 0
            if kind == 4:
                p = a + b - cc
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - cc)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else cc)
            else:
                pred = (0, a, b, (a + b) // 2)[kind]
            x[i] = (x[i] + pred) % 256
        out[y] = x
    arr = out.astype(np.uint8)
    if depth == 16:
        arr = arr.view(">u2").astype(np.uint16)
    arr = arr.reshape(h, w, c)
    return arr[..., 0] if c == 1 else arr

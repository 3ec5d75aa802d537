"""Geometry of a convolution and of pooling: argument pairs, padding,
output sizes, and the padding maps the loops read through.

Per axis, for an input of N samples and a kernel of K taps::

    reach     R   = dilation * (K - 1) + 1
    output    out = floor((N + pad_before + pad_after - R) / stride) + 1

Padding ``same`` pads ``(R-1)//2`` before and ``R//2`` after (so the size is
kept at stride 1; with an origin, kernel cell ``(Y, X)`` over each output
pixel: ``Y * dilation`` before and the rest of the reach after), ``valid`` pads nothing and ``full`` pads ``R-1`` on each
side. Padded samples are zeros unless ``pad_mode`` says otherwise::

    pad_mode     padded samples around   a b c d
    zero         0 0 0 | a b c d | 0 0 0
    reflect      c b a | a b c d | d c b
    reflect101   d c b | a b c d | c b a
    edge         a a a | a b c d | d d d
    wrap         b c d | a b c d | a b c
"""

from __future__ import annotations

import functools

import numpy as np

from .. import _memory
from ..config import MAX_SIZE
from ..errors import UsageError

PAD_MODES = ("zero", "reflect", "reflect101", "edge", "wrap")
PADDING_WORDS = ("same", "valid", "full")
POOL_KINDS = ("max", "avg", "sum")
POOL_CODES = {"max": 0, "avg": 1, "sum": 2}


def pair(value, what: str) -> tuple[int, int]:
    """``3`` -> ``(3, 3)``; ``(2, 1)`` -> ``(2, 1)``; positive integers only."""
    if type(value) is tuple and len(value) == 2 and type(value[0]) is int and type(value[1]) is int \
            and 1 <= value[0] <= MAX_SIZE and 1 <= value[1] <= MAX_SIZE:
        return value  # already a checked pair (the engine passes them on)
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


def origin_pair(origin) -> tuple[int, int]:
    """``origin`` as a pair of whole numbers ``(Y, X)``, or a UsageError."""
    try:
        oy, ox = (int(v) for v in origin)
        whole = all(int(v) == v for v in origin)
    except (TypeError, ValueError):
        whole = False
    if not whole:
        raise UsageError(f"the origin must be a pair of kernel cells (Y, X), got {origin!r}")
    return oy, ox


def origin_padding(kernel_shape, origin, padding, dilation=1) -> tuple[tuple[int, int], tuple[int, int]]:
    """``same`` padding that puts kernel cell ``origin`` (``(Y, X)``, 0-based)
    over each output pixel: ``Y * DY`` rows before and the rest of the reach
    after (so the size is kept at stride 1), the same for columns. Only
    ``same`` padding takes an origin: the other paddings place the windows
    themselves."""
    kh, kw = kernel_shape[:2]
    oy, ox = origin_pair(origin)
    if not (0 <= oy < kh and 0 <= ox < kw):
        raise UsageError(f"the origin {oy},{ox} is not a cell of the {kh}x{kw} kernel (rows 0..{kh - 1}, "
                         f"columns 0..{kw - 1})")
    if not (isinstance(padding, str) and padding.strip().lower() == "same"):
        raise UsageError(f"an origin goes with padding same (the output keeps the input's size); "
                         f"padding {padding!r} places the windows itself")
    dy, dx = pair(dilation, "dilation")
    reach = (dy * (kh - 1) + 1, dx * (kw - 1) + 1)
    return ((oy * dy, reach[0] - 1 - oy * dy), (ox * dx, reach[1] - 1 - ox * dx))


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
    index_bytes = INDEX_BYTES * (padded[0] + padded[1])
    if index_bytes >= _memory.CHECK_MEMORY_FROM:  # (the message is made only where it may be needed)
        _memory.ensure_memory(index_bytes,
                              f"indexing a {padded[0]}x{padded[1]} padded input (padding "
                              f"{padding_text(padding, pads)}, dilation {_show((dy, dx))}, kernel reach "
                              f"{reach[0]}x{reach[1]})", "use less padding or a smaller dilation")
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


def padding_text(padding, pads) -> str:
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


def rows_view(arr: np.ndarray) -> tuple[np.ndarray, int]:
    """``H x W x C`` as its ``H x W*C`` rows and ``C`` (``H x W``: itself and 1),
    the layout the loops take."""
    if arr.ndim == 2:
        return arr, 1
    h, w, c = arr.shape
    return arr.reshape(h, w * c), c


def pool_geometry(shape, kind: str = "max", size=2, stride=None) -> tuple:
    """``(PH, PW, SY, SX, OH, OW)``: the window, its stride and the output
    size of :func:`kernelcli.engine.pool` on an input of ``shape`` (checked)."""
    if kind not in POOL_CODES:
        raise UsageError(f"pool kind must be one of {', '.join(POOL_KINDS)}, got {kind!r}")
    ph, pw = pair(size, "pool size")
    sy, sx = pair(size if stride is None else stride, "pool stride")
    h, w = shape[:2]
    if ph > h or pw > w:
        raise UsageError(f"pool window {ph}x{pw} is larger than its input {h}x{w}")
    return ph, pw, sy, sx, (h - ph) // sy + 1, (w - pw) // sx + 1


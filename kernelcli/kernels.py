"""The kernel library: named kernels, kernel files and inline matrices.

Named kernels are data files in the project's ``kernels/`` folder (installed as
``kernelcli/kernels/`` inside the wheel), one per kernel, in the same plain
text format users may write themselves::

    # comments and blank lines are ignored
    description: Gaussian blur, 3x3 binomial approximation
    scale: 1/16
    1 2 1
    2 4 2
    1 2 1

A kernel spec (the KERNEL argument) may be, tried in this order:

* an ImageMagick kernel string: ``"3x3: 1,2,1 2,4,2 1,2,1"`` (``nan`` taps are
  not part of the kernel and count as 0);
* a sized form: ``box:N`` / ``box:ROWS,COLS`` (mean over the window) or
  ``gaussian:SIGMA`` / ``gaussian:SIGMA,SIZE`` (normalised to sum 1; the size
  defaults to ``2*ceil(3*SIGMA)+1``);
* a name from the library (``kernelcli kernels`` lists them);
* a file: ``.npy`` (a 2-D numeric array, never unpickled), a libvips ``.mat``
  file (header ``W H [scale [offset]]``, the sum is divided by ``scale``), or
  the plain text format above;
* an inline matrix: rows separated by ``;``, values by commas or spaces:
  ``"1,0,1;0,1,0;1,0,1"``.

Values may be integers, decimals or fractions (``1/9``); NaN and infinities are
refused, except as ImageMagick's ``nan`` placeholder.
"""

from __future__ import annotations

import functools
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import KernelError

# NumPy is imported where arrays are made, not here: ``kernelcli kernels``
# lists the library without it (it costs about 0.1 s of start-up).

_FLOAT32_MAX = 3.4028234663852886e38  # np.finfo(np.float32).max

#: The largest kernel side accepted (a guard against sizes that cannot be meant).
MAX_SIDE = 1025

_SPLIT = re.compile(r"[\s,]+")
_MAGICK = re.compile(r"^\s*(\d+)(?:x(\d+))?(?:([+-]\d+)([+-]\d+))?\s*:(.*)$", re.S)
_SIZED = re.compile(r"^(box|gaussian):(.*)$", re.I)
_NUMBERISH = re.compile(r"^(?:[\s,;0-9eE.+\-/]|inf|nan)+$", re.I)


@dataclass(frozen=True)
class Kernel:
    """A 2-D kernel: ``values * scale``, plus ``offset`` added to every output."""

    name: str
    values: np.ndarray  # float64, as written (before scale)
    scale: float = 1.0
    scale_text: str = "1"
    offset: float = 0.0
    description: str = ""
    source: str = field(default="", compare=False)

    def __post_init__(self):
        import numpy as np

        with np.errstate(all="ignore"):
            weights = self.values * self.scale
            finite = bool(np.all(np.isfinite(weights.astype(np.float32))))
        if not finite or not math.isfinite(self.offset):
            raise KernelError(
                f"{self.source or self.name}: the weights (values x scale) must be finite float32 "
                "numbers (|w| < 3.4e38); this kernel overflows or holds NaN"
            )

    @property
    def array(self) -> np.ndarray:
        """The effective weights as a float32 array."""
        import numpy as np

        return (self.values * self.scale).astype(np.float32)

    def __array__(self, dtype=None, copy=None):
        """The effective weights, as :attr:`array`, wherever NumPy expects an
        array: ``np.asarray(kernel)``, ``np.allclose(kernel, expected)``.
        The offset is not part of them. Always a new array, so ``copy`` is
        satisfied whatever it asks."""
        weights = self.array
        return weights if dtype is None else weights.astype(dtype, copy=False)

    @property
    def shape(self) -> tuple[int, int]:
        """Rows and columns (a depth kernel's third axis is :attr:`depth`)."""
        return self.values.shape[:2]

    @property
    def depth(self) -> int | None:
        """The number of input channels a ``K x K x C`` kernel sums over, else None."""
        return self.values.shape[2] if self.values.ndim == 3 else None

    def normalized(self) -> tuple["Kernel", bool]:
        """Divide by the sum of the weights; zero-sum kernels come back unchanged.

        Returns ``(kernel, changed)``.
        """
        total = float(self.values.sum() * self.scale)
        if abs(total) < 1e-12:
            return self, False
        scale = self.scale / total
        inverse = 1.0 / scale
        text = f"1/{_fmt(inverse)}" if inverse == round(inverse) else _fmt(scale)
        return replace(self, scale=scale, scale_text=text), True

    def flipped(self) -> "Kernel":
        return replace(self, values=self.values[::-1, ::-1].copy())

    def format(self) -> str:
        """The matrix as text, one row per line, with its scale and offset."""
        planes = [self.values] if self.depth is None else [self.values[..., i] for i in range(self.depth)]
        lines = []
        for i, plane in enumerate(planes):
            cells = [[_fmt(v) for v in row] for row in plane]
            width = max(len(c) for row in cells for c in row)
            if self.depth is not None:
                lines.append(f"channel {i}:")
            lines += [" ".join(c.rjust(width) for c in row) for row in cells]
        size = "x".join(str(n) for n in self.values.shape)
        head = [f"{self.name} ({size})"]
        if self.description:
            head.append(self.description)
        if self.scale_text != "1":
            head.append(f"scale: {self.scale_text}")
        if self.offset:
            head.append(f"offset: {_fmt(self.offset)}")
        return "\n".join(head + lines)


def _fmt(v: float) -> str:
    v = float(v)
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.6g}"


# --------------------------------------------------------------------------
# numbers and matrices


def _number(token: str, where: str) -> float:
    try:
        if "/" in token:
            num, den = token.split("/", 1)
            value = float(num.strip()) / float(den.strip())
        else:
            value = float(token)
    except (ValueError, ZeroDivisionError, OverflowError):
        raise KernelError(f"{where}: {token!r} is not a number") from None
    if not math.isfinite(value):
        raise KernelError(f"{where}: {token!r} is not a finite number")
    if abs(value) > _FLOAT32_MAX:
        raise KernelError(f"{where}: {token!r} is too large for float32 weights (at most 3.4e38)")
    return value


def _matrix(rows: list[list[float]], where: str, row_wheres: list[str] | None = None) -> np.ndarray:
    if not rows:
        raise KernelError(f"{where}: the kernel is empty")
    width = len(rows[0])
    for i, row in enumerate(rows):
        if len(row) != width:
            at = row_wheres[i] if row_wheres else f"{where}, row {i + 1}"
            raise KernelError(
                f"{at}: ragged rows: this row has {len(row)} values, the first has {width}"
            )
    _check_size(len(rows), width, where)
    import numpy as np

    return np.array(rows, dtype=np.float64)


def _check_size(h: int, w: int, where: str) -> None:
    if h < 1 or w < 1:
        raise KernelError(f"{where}: the kernel is empty")
    if h > MAX_SIDE or w > MAX_SIDE:
        raise KernelError(f"{where}: a {h}x{w} kernel is too large (at most {MAX_SIDE} per side)")


# --------------------------------------------------------------------------
# parsers


def parse_text(text: str, source: str, name: str | None = None) -> Kernel:
    """Parse the plain text kernel format (see the module docstring)."""
    rows, wheres, scale, scale_text, offset, description = _text_fields(text, source)
    values = _matrix(rows, source, wheres)
    return Kernel(name or source, values, scale, scale_text, offset, description, source)


def _text_fields(text: str, source: str) -> tuple:
    """The text format's rows (lists of floats, each with its line for
    messages), scale, scale text, offset and description; no arrays yet."""
    rows, wheres = [], []
    scale, scale_text, offset, description = 1.0, "1", 0.0, ""
    seen: dict[str, int] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        where = f"{source}, line {lineno}"
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if ":" in line:
            key, _, value = line.partition(":")
            key, value = key.strip().lower(), value.strip()
            if key in seen:
                raise KernelError(f"{where}: {key} is set twice (first on line {seen[key]})")
            seen[key] = lineno
            if key == "scale":
                scale, scale_text = _number(value, where), value
                if scale == 0:
                    raise KernelError(f"{where}: the scale must not be 0")
            elif key == "offset":
                offset = _number(value, where)
            elif key == "description":
                description = value
            else:
                raise KernelError(f"{where}: unknown setting {key!r} (known: scale, offset, description)")
            continue
        rows.append([_number(t, where) for t in _SPLIT.split(line) if t])
        wheres.append(where)
    return rows, wheres, scale, scale_text, offset, description


def parse_vips_mat(text: str, source: str) -> Kernel:
    """Parse a libvips matrix file: ``W H [scale [offset]]`` then H rows of W values."""
    lines = [(n, l.split("#", 1)[0].strip()) for n, l in enumerate(text.splitlines(), 1)]
    lines = [(n, l) for n, l in lines if l]
    if not lines:
        raise KernelError(f"{source}: the kernel is empty")
    n0, header = lines[0]
    head = [_number(t, f"{source}, line {n0}") for t in _SPLIT.split(header) if t]
    if not 2 <= len(head) <= 4 or head[0] != int(head[0]) or head[1] != int(head[1]):
        raise KernelError(f"{source}, line {n0}: a .mat file starts with 'WIDTH HEIGHT [SCALE [OFFSET]]'")
    w, h = int(head[0]), int(head[1])
    scale = head[2] if len(head) > 2 else 1.0
    offset = head[3] if len(head) > 3 else 0.0
    if scale == 0:
        raise KernelError(f"{source}, line {n0}: the scale must not be 0")
    rows, wheres = [], []
    for n, line in lines[1:]:
        rows.append([_number(t, f"{source}, line {n}") for t in _SPLIT.split(line) if t])
        wheres.append(f"{source}, line {n}")
    values = _matrix(rows, source, wheres)
    if values.shape != (h, w):
        raise KernelError(f"{source}: the header says {w}x{h} (width x height), the rows give {values.shape[1]}x{values.shape[0]}")
    return Kernel(source, values, 1.0 / scale, _fmt_inverse(scale), offset, "", source)


def _fmt_inverse(scale: float) -> str:
    return "1" if scale == 1 else f"1/{_fmt(scale)}"


def parse_inline(spec: str) -> Kernel:
    """Parse ``"1,0,1;0,1,0;1,0,1"``: rows by ``;``, values by commas or spaces."""
    where = f"inline kernel {spec!r}"
    rows = []
    for i, part in enumerate(spec.split(";"), 1):
        tokens = [t for t in _SPLIT.split(part.strip()) if t]
        if not tokens:
            raise KernelError(f"{where}: row {i} is empty")
        rows.append([_number(t, f"{where}, row {i}") for t in tokens])
    return Kernel(spec, _matrix(rows, where), source="inline")


def parse_magick(spec: str) -> Kernel:
    """Parse ImageMagick's ``"WxH[+X+Y]: values"`` (``"3: ..."`` means 3x3)."""
    m = _MAGICK.match(spec)
    where = f"ImageMagick kernel {spec.strip()!r}"
    if not m:
        raise KernelError(f"{where}: expected 'WxH: v1,v2,...'")
    w = int(m.group(1))
    h = int(m.group(2) or w)
    _check_size(h, w, where)
    tokens = [t for t in _SPLIT.split(m.group(5).strip()) if t]
    values = []
    for t in tokens:
        if t.lower() in ("nan", "-"):
            values.append(0.0)  # ImageMagick: this tap is not part of the kernel
        else:
            values.append(_number(t, where))
    if len(values) != w * h:
        raise KernelError(f"{where}: {w}x{h} needs {w * h} values, got {len(values)}")
    if m.group(3) is not None:
        ox, oy = int(m.group(3)), int(m.group(4))
        if (ox, oy) != ((w - 1) // 2, (h - 1) // 2):
            raise KernelError(
                f"{where}: only the default origin +{(w - 1) // 2}+{(h - 1) // 2} is supported, got {m.group(3)}{m.group(4)}"
            )
    return Kernel(spec.strip(), _matrix([values[i * w:(i + 1) * w] for i in range(h)], where), source="imagemagick")


def parse_sized(spec: str) -> Kernel:
    """``box:N``, ``box:ROWS,COLS``, ``gaussian:SIGMA``, ``gaussian:SIGMA,SIZE``."""
    import numpy as np

    m = _SIZED.match(spec.strip())
    kind, args = m.group(1).lower(), [a for a in _SPLIT.split(m.group(2).strip()) if a]
    where = f"kernel {spec!r}"
    if kind == "box":
        if len(args) not in (1, 2):
            raise KernelError(f"{where}: write box:N or box:ROWS,COLS")
        sides = [_int(a, where) for a in args]
        h, w = sides[0], sides[-1]
        _check_size(h, w, where)
        return Kernel(f"box:{h},{w}", np.ones((h, w)), 1.0 / (h * w), f"1/{h * w}",
                      description=f"box blur: mean of the {h}x{w} neighbourhood", source="sized")
    if len(args) not in (1, 2):
        raise KernelError(f"{where}: write gaussian:SIGMA or gaussian:SIGMA,SIZE")
    sigma = _number(args[0], where)
    if sigma < 0.01:
        raise KernelError(f"{where}: sigma must be at least 0.01, got {args[0]}")
    if len(args) == 2:
        size = _int(args[1], where)
    else:
        if 3 * sigma > MAX_SIDE:
            raise KernelError(f"{where}: sigma {args[0]} needs a kernel wider than {MAX_SIDE} pixels")
        size = 2 * math.ceil(3 * sigma) + 1
    _check_size(size, size, where)
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x * x) / (2 * sigma * sigma))
    values = np.outer(g, g)
    values /= values.sum()
    return Kernel(f"gaussian:{_fmt(sigma)},{size}", values,
                  description=f"Gaussian blur, sigma {_fmt(sigma)}, {size}x{size}, sum 1", source="sized")


def _int(token: str, where: str) -> int:
    value = _number(token, where)
    if value != int(value) or value < 1:
        raise KernelError(f"{where}: {token!r} must be a positive whole number")
    return int(value)


#: The largest kernel file read (a 1025x1025 kernel as text with ten digits a
#: value takes about 12 MB): ``/dev/zero`` given as a kernel file is refused
#: after this much, not read forever.
MAX_FILE_BYTES = 32 << 20


def load_file(path: str | os.PathLike) -> Kernel:
    """Read a kernel file: ``.npy``, libvips ``.mat`` or plain text (detected
    by content). A FIFO or a pipe (``<(...)``) is read once, like a file."""
    path = Path(path)
    if path.is_dir():
        raise KernelError(f"{path}: is a folder, not a kernel file")
    data = _read_limited(path)
    if data.startswith(b"\x93NUMPY"):
        return _load_npy(path, data)
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark, as some editors write, is not a value
    except UnicodeDecodeError:
        raise KernelError(f"{path}: not a kernel file (neither .npy nor text)") from None
    if path.suffix.lower() == ".mat" or _looks_like_vips(text):
        return parse_vips_mat(text, str(path))
    return parse_text(text, str(path), name=path.name)


def _read_limited(path: Path) -> bytes:
    """The bytes of a kernel file, read a block at a time (Ctrl-C is heard
    between blocks); refused past :data:`MAX_FILE_BYTES`."""
    parts, size = [], 0
    try:
        with open(path, "rb") as f:
            while True:
                block = f.read(1 << 20)
                if not block:
                    break
                parts.append(block)
                size += len(block)
                if size > MAX_FILE_BYTES:
                    raise KernelError(f"{path}: more than {MAX_FILE_BYTES >> 20} MB: too large for a kernel "
                                      f"file (kernels are at most {MAX_SIDE}x{MAX_SIDE})")
    except OSError as e:
        raise KernelError(f"{path}: cannot read kernel file: {e.strerror or e}") from None
    return b"".join(parts)


def _looks_like_vips(text: str) -> bool:
    lines = [l.split("#", 1)[0].strip() for l in text.splitlines()]
    lines = [l for l in lines if l and ":" not in l]
    if len(lines) < 2:
        return False
    head = [t for t in _SPLIT.split(lines[0]) if t]
    rows = [[t for t in _SPLIT.split(l) if t] for l in lines[1:]]
    try:
        w, h = int(head[0]), int(head[1])
    except (ValueError, IndexError):
        return False
    # Only when the first line could not be a row of the plain format (it has a
    # different width from the rows below it) is it taken as a libvips header.
    return 2 <= len(head) <= 4 and len(head) != w and len(rows) == h and all(len(r) == w for r in rows)


def _load_npy(path: Path, data: bytes) -> Kernel:
    import io

    import numpy as np

    from .io.npy import read_npy_header

    try:  # check the shape the header claims before anything is allocated
        shape, _, _ = read_npy_header(io.BytesIO(data))
    except Exception as e:
        raise KernelError(f"{path}: unreadable .npy kernel: {e}") from None
    if len(shape) not in (2, 3):
        raise KernelError(f"{path}: a kernel must be 2-D (K x K) or 3-D (K x K x C), this .npy has shape {shape}")
    _check_size(*shape[:2], str(path))
    if len(shape) == 3 and shape[2] > 4096:
        raise KernelError(f"{path}: a kernel depth of {shape[2]} is too large (at most 4096)")
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, EOFError, OSError) as e:
        raise KernelError(f"{path}: unreadable .npy kernel: {e}") from None
    if arr.dtype.kind not in "biuf":
        raise KernelError(f"{path}: a kernel must be numeric, this .npy holds {arr.dtype}")
    if arr.ndim not in (2, 3):
        raise KernelError(f"{path}: a kernel must be 2-D (K x K) or 3-D (K x K x C), this .npy has shape {arr.shape}")
    _check_size(*arr.shape[:2], str(path))
    if min(arr.shape) < 1:
        raise KernelError(f"{path}: the kernel is empty")
    values = arr.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise KernelError(f"{path}: the kernel holds NaN or infinite values")
    return Kernel(path.name, values, source=str(path))


# --------------------------------------------------------------------------
# the library of named kernels


def kernels_dir() -> Path:
    """Where the named kernel files are: inside the installed package, or the checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "kernels", here.parent / "kernels"):
        if candidate.is_dir():
            return candidate
    raise KernelError(f"the kernel library is missing (looked in {here / 'kernels'} and {here.parent / 'kernels'})")


@functools.cache
def _library_files() -> dict[str, Path]:
    """The named kernels' files, by name, in name order (listed once)."""
    return {path.stem: path for path in sorted(kernels_dir().glob("*.txt"), key=lambda p: p.stem)}


@functools.cache
def _named(name: str) -> Kernel:
    """One named kernel, parsed from its own file only (once)."""
    path = _library_files()[name]
    return parse_text(path.read_text(encoding="utf-8"), str(path), name=name)


def library() -> dict[str, Kernel]:
    """Every named kernel, by name, in name order."""
    return {name: _named(name) for name in _library_files()}


def catalogue() -> list[tuple[str, int, int, str]]:
    """``(name, rows, columns, description)`` of every named kernel, in name
    order, read without NumPy (for ``kernelcli kernels``)."""
    found = []
    for name, path in _library_files().items():
        rows, _, _, _, _, description = _text_fields(path.read_text(encoding="utf-8"), str(path))
        found.append((name, len(rows), len(rows[0]) if rows else 0, description))
    return found


def names() -> list[str]:
    return list(_library_files())


def get_kernel(spec) -> Kernel:
    """Turn a spec (see the module docstring), an array or a Kernel into a Kernel."""
    if isinstance(spec, Kernel):
        return spec
    if isinstance(spec, os.PathLike):
        return load_file(spec)
    if not isinstance(spec, str):
        import numpy as np

        arr = np.asarray(spec)
        if arr.dtype.kind not in "biuf" or arr.ndim not in (2, 3) or min(arr.shape) < 1:
            raise KernelError(f"a kernel array must be 2-D or 3-D and numeric, got shape {arr.shape} dtype {arr.dtype}")
        _check_size(*arr.shape[:2], "kernel array")
        values = arr.astype(np.float64)
        if not np.all(np.isfinite(values)):
            raise KernelError("kernel array holds NaN or infinite values")
        return Kernel("array", values, source="array")
    text = spec.strip()
    if not text:
        raise KernelError("the kernel spec is empty")
    if _MAGICK.match(text):
        return parse_magick(text)
    if _SIZED.match(text):
        return parse_sized(text)
    if text.lower() in _library_files():
        return _named(text.lower())  # its file alone: the other kernels are not parsed
    if _is_kernel_file(text):
        return load_file(text)
    if os.path.isdir(text):
        raise KernelError(f"{text}: is a folder, not a kernel file")
    if _NUMBERISH.match(text) or ";" in text:
        return parse_inline(text)
    if "/" in text or os.sep in text or Path(text).suffix.lower() in (".txt", ".npy", ".mat"):
        raise KernelError(f"kernel file not found: {text}")
    import difflib

    known = names()
    close = difflib.get_close_matches(text.lower(), known, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise KernelError(
        f"unknown kernel {text!r}: not a name, a file or an inline matrix.{hint} "
        f"Known names: {', '.join(known)}"
    )


def _is_kernel_file(text: str) -> bool:
    """Does ``text`` name something to read a kernel from: a file, or a FIFO,
    pipe (``/dev/fd/N``) or device (anything that exists and is not a folder)?"""
    return os.path.exists(text) and not os.path.isdir(text)


def get_kernels(spec) -> list[Kernel]:
    """Like :func:`get_kernel`, but ``"edge,sharpen,box"`` gives a filter bank.

    A spec is split on commas only when it is not a single kernel already (an
    inline matrix, an ImageMagick string or a file); numbers after a sized form
    stay with it (``gaussian:1.5,9,box``).
    """
    if not isinstance(spec, str):
        return [get_kernel(spec)]
    text = spec.strip()
    if ("," not in text or ";" in text or _MAGICK.match(text) or _NUMBERISH.match(text)
            or _is_kernel_file(text)):
        return [get_kernel(text)]
    items: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if items and _SIZED.match(items[-1]) and re.fullmatch(r"[0-9.eE+\-]+", part):
            items[-1] += "," + part
        else:
            items.append(part)
    if any(not item for item in items):
        raise KernelError(f"kernel bank {text!r} has an empty name between commas")
    return [get_kernel(item) for item in items]


#: Used by the engine to accept names, specs, arrays and Kernels alike.
as_kernel = get_kernel

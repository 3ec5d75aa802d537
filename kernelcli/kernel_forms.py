"""A kernel (:class:`Kernel`) and the forms it is written in: the plain text
format, libvips ``.mat`` files, inline matrices, ImageMagick kernel strings
and the sized forms (``box:N``, ``gaussian:SIGMA``, ``log:SIGMA``,
``dog:S1,S2``, ``unsharp:RADIUS``). Parsing only: where
kernels come from (names, files) is :mod:`kernelcli.kernels`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

from .errors import KernelError

# NumPy is imported where arrays are made, not here: ``kernelcli kernels``
# lists the library without it (it costs about 0.1 s of start-up).

_FLOAT32_MAX = 3.4028234663852886e38  # np.finfo(np.float32).max

#: The largest kernel side accepted (a guard against sizes that cannot be meant).
MAX_SIDE = 1025

SEPARATORS = re.compile(r"[\s,]+")
MAGICK_FORM = re.compile(r"^\s*(\d+)(?:x(\d+))?(?:([+-]\d+)([+-]\d+))?\s*:(.*)$", re.S)
SIZED_FORM = re.compile(r"^(box|gaussian|log|dog|unsharp|sep):(.*)$", re.I)
NUMBERISH = re.compile(r"^(?:[\s,;0-9eE.+\-/]|inf|nan)+$", re.I)


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
    #: An unsharp mask's threshold (a fraction of the value range) and
    #: amount: where the change the kernel makes is smaller than
    #: ``threshold * range * amount / 2``, the input is kept (a stage, not part
    #: of the weights: :mod:`kernelcli.stages`). 0: none.
    threshold: float = 0.0
    amount: float = 1.0
    #: The cell ``(Y, X)`` over each output pixel (an ImageMagick ``WxH+X+Y:``
    #: string's), or None: the centre.
    origin: tuple | None = None

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
        text = f"1/{format_number(inverse)}" if inverse == round(inverse) else format_number(scale)
        return replace(self, scale=scale, scale_text=text), True

    def flipped(self) -> "Kernel":
        return replace(self, values=self.values[::-1, ::-1].copy())

    def format(self) -> str:
        """The matrix as text, one row per line, with its scale and offset."""
        planes = [self.values] if self.depth is None else [self.values[..., i] for i in range(self.depth)]
        lines = []
        for i, plane in enumerate(planes):
            cells = [[format_number(v) for v in row] for row in plane]
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
            head.append(f"offset: {format_number(self.offset)}")
        if self.origin is not None:
            head.append(f"origin: row {self.origin[0]}, column {self.origin[1]}")
        return "\n".join(head + lines)


#: The outer ring of a 3x3 kernel, clockwise from the top-left cell.
_RING = ((0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0))


def turns(kernel: Kernel, angle: int, count: int | None = None) -> list[Kernel]:
    """``kernel`` and its turns clockwise in steps of ``angle`` degrees
    (``count`` kernels in all; default ``360 / angle``), as ImageMagick's
    rotated kernel sets: 90 degrees turns a square kernel; 45 degrees moves
    the outer ring of a 3x3 kernel one cell. The origin (if any) turns with it."""
    import numpy as np

    if angle not in (45, 90):
        raise KernelError(f"kernels turn by 45 or 90 degrees, not {angle}")
    count = 360 // angle if count is None else count
    if not 1 <= count <= 360 // angle:
        raise KernelError(f"{count} turns of {angle} degrees: give 1 to {360 // angle}")
    if kernel.depth is not None:
        raise KernelError(f"{kernel.name}: only 2-D kernels turn, this one is {'x'.join(map(str, kernel.values.shape))}")
    h, w = kernel.shape
    if angle == 45 and (h, w) != (3, 3):
        raise KernelError(f"{kernel.name}: 45-degree turns move the outer ring of a 3x3 kernel; this one is "
                          f"{h}x{w} (turn it by 90)")
    if h != w:
        raise KernelError(f"{kernel.name}: 90-degree turns need a square kernel; this one is {h}x{w}")
    cells = np.arange(h * w).reshape(h, w)  # where each cell comes from, turn after turn
    out = []
    for step in range(count):
        values = kernel.values.ravel()[cells]
        origin = None
        if kernel.origin is not None:
            origin = tuple(int(v) for v in np.argwhere(cells == kernel.origin[0] * w + kernel.origin[1])[0])
        name = kernel.name if step == 0 else f"{kernel.name}@{step * angle}"
        out.append(replace(kernel, name=name, values=values, origin=origin))
        if angle == 90:
            cells = np.rot90(cells, -1)
        else:
            moved = cells.copy()
            for i, cell in enumerate(_RING):
                moved[_RING[(i + 1) % 8]] = cells[cell]
            cells = moved
    return out


def format_number(v: float) -> str:
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
    check_size(len(rows), width, where)
    import numpy as np

    return np.array(rows, dtype=np.float64)


def check_size(h: int, w: int, where: str) -> None:
    if h < 1 or w < 1:
        raise KernelError(f"{where}: the kernel is empty")
    if h > MAX_SIDE or w > MAX_SIDE:
        raise KernelError(f"{where}: a {h}x{w} kernel is too large (at most {MAX_SIDE} per side)")


# --------------------------------------------------------------------------
# parsers


def parse_text(text: str, source: str, name: str | None = None) -> Kernel:
    """Parse the plain text kernel format (see the module docstring)."""
    rows, wheres, scale, scale_text, offset, description = text_fields(text, source)
    values = _matrix(rows, source, wheres)
    return Kernel(name or source, values, scale, scale_text, offset, description, source)


def text_fields(text: str, source: str) -> tuple:
    """The text format's rows (lists of floats, each with its line for
    messages), scale, scale text, offset and description; no arrays yet."""
    rows, wheres = [], []
    scale, scale_text, offset, description = 1.0, "1", 0.0, ""
    seen: dict[str, int] = {}
    passes: dict[str, list[float]] = {}  # a separable kernel's "rows:" and "cols:" masks
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
            elif key in ("rows", "cols"):
                passes[key] = [_number(t, where) for t in SEPARATORS.split(value) if t]
                if not passes[key]:
                    raise KernelError(f"{where}: {key}: needs the values of a 1-D mask")
            else:
                raise KernelError(f"{where}: unknown setting {key!r} (known: scale, offset, description, rows, "
                                  "cols)")
            continue
        rows.append([_number(t, where) for t in SEPARATORS.split(line) if t])
        wheres.append(where)
    if passes:
        if rows:
            raise KernelError(f"{wheres[0]}: a kernel given by rows: and cols: masks has no matrix rows")
        across, down = passes.get("rows", [1.0]), passes.get("cols", [1.0])
        rows = [[c * r for r in across] for c in down]  # the outer product: cols down, rows across
        wheres = [f"{source}, line {seen.get('cols', seen.get('rows'))}"] * len(rows)
    return rows, wheres, scale, scale_text, offset, description


def parse_vips_mat(text: str, source: str) -> Kernel:
    """Parse a libvips matrix file: ``W H [scale [offset]]`` then H rows of W values."""
    lines = [(n, l.split("#", 1)[0].strip()) for n, l in enumerate(text.splitlines(), 1)]
    lines = [(n, l) for n, l in lines if l]
    if not lines:
        raise KernelError(f"{source}: the kernel is empty")
    n0, header = lines[0]
    head = [_number(t, f"{source}, line {n0}") for t in SEPARATORS.split(header) if t]
    if not 2 <= len(head) <= 4 or head[0] != int(head[0]) or head[1] != int(head[1]):
        raise KernelError(f"{source}, line {n0}: a .mat file starts with 'WIDTH HEIGHT [SCALE [OFFSET]]'")
    w, h = int(head[0]), int(head[1])
    scale = head[2] if len(head) > 2 else 1.0
    offset = head[3] if len(head) > 3 else 0.0
    if scale == 0:
        raise KernelError(f"{source}, line {n0}: the scale must not be 0")
    rows, wheres = [], []
    for n, line in lines[1:]:
        rows.append([_number(t, f"{source}, line {n}") for t in SEPARATORS.split(line) if t])
        wheres.append(f"{source}, line {n}")
    values = _matrix(rows, source, wheres)
    if values.shape != (h, w):
        raise KernelError(f"{source}: the header says {w}x{h} (width x height), the rows give {values.shape[1]}x{values.shape[0]}")
    return Kernel(source, values, 1.0 / scale, _fmt_inverse(scale), offset, "", source)


def _fmt_inverse(scale: float) -> str:
    return "1" if scale == 1 else f"1/{format_number(scale)}"


def parse_inline(spec: str) -> Kernel:
    """Parse ``"1,0,1;0,1,0;1,0,1"``: rows by ``;``, values by commas or spaces."""
    where = f"inline kernel {spec!r}"
    rows = []
    for i, part in enumerate(spec.split(";"), 1):
        tokens = [t for t in SEPARATORS.split(part.strip()) if t]
        if not tokens:
            raise KernelError(f"{where}: row {i} is empty")
        rows.append([_number(t, f"{where}, row {i}") for t in tokens])
    return Kernel(spec, _matrix(rows, where), source="inline")


def parse_magick(spec: str) -> Kernel:
    """Parse ImageMagick's ``"WxH[+X+Y]: values"`` (``"3: ..."`` means 3x3)."""
    m = MAGICK_FORM.match(spec)
    where = f"ImageMagick kernel {spec.strip()!r}"
    if not m:
        raise KernelError(f"{where}: expected 'WxH: v1,v2,...'")
    w = int(m.group(1))
    h = int(m.group(2) or w)
    check_size(h, w, where)
    tokens = [t for t in SEPARATORS.split(m.group(5).strip()) if t]
    values = []
    for t in tokens:
        if t.lower() in ("nan", "-"):
            values.append(0.0)  # ImageMagick: this tap is not part of the kernel
        else:
            values.append(_number(t, where))
    if len(values) != w * h:
        raise KernelError(f"{where}: {w}x{h} needs {w * h} values, got {len(values)}")
    origin = None
    if m.group(3) is not None:
        ox, oy = int(m.group(3)), int(m.group(4))
        if not (0 <= ox < w and 0 <= oy < h):
            raise KernelError(f"{where}: the origin {m.group(3)}{m.group(4)} (+X+Y) is not a cell of the {w}x{h} "
                              f"kernel (X 0..{w - 1}, Y 0..{h - 1})")
        if (ox, oy) != ((w - 1) // 2, (h - 1) // 2):
            origin = (oy, ox)
    return Kernel(spec.strip(), _matrix([values[i * w:(i + 1) * w] for i in range(h)], where), source="imagemagick",
                  origin=origin)


def parse_sized(spec: str) -> Kernel:
    """``box:N``, ``box:ROWS,COLS``, ``gaussian:SIGMA[,SIZE]``, ``log:SIGMA[,SIZE]``,
    ``dog:S1,S2[,SIZE]`` and ``unsharp:RADIUS[,AMOUNT[,THRESHOLD]]``."""
    import numpy as np

    m = SIZED_FORM.match(spec.strip())
    kind, args = m.group(1).lower(), [a for a in SEPARATORS.split(m.group(2).strip()) if a]
    where = f"kernel {spec!r}"
    if kind == "box":
        if len(args) not in (1, 2):
            raise KernelError(f"{where}: write box:N or box:ROWS,COLS")
        sides = [_int(a, where) for a in args]
        h, w = sides[0], sides[-1]
        check_size(h, w, where)
        return Kernel(f"box:{h},{w}", np.ones((h, w)), 1.0 / (h * w), f"1/{h * w}",
                      description=f"box blur: mean of the {h}x{w} neighbourhood", source="sized")
    return _SIZED[kind](args, where)


def _sigma(token: str, where: str) -> float:
    sigma = _number(token, where)
    if sigma < 0.01:
        raise KernelError(f"{where}: sigma must be at least 0.01, got {token}")
    return sigma


def _side(args: list, at: int, sigma: float, reach: int, where: str) -> int:
    """The kernel's side: ``args[at]`` when given, else ``2*ceil(reach*sigma)+1``."""
    if len(args) > at:
        size = _int(args[at], where)
    else:
        if reach * sigma > MAX_SIDE:
            raise KernelError(f"{where}: sigma {format_number(sigma)} needs a kernel wider than {MAX_SIDE} pixels")
        size = 2 * math.ceil(reach * sigma) + 1
    check_size(size, size, where)
    return size


def _gauss(sigma: float, size: int):
    """A ``size x size`` sampled Gaussian summing to 1, and the tap offsets."""
    import numpy as np

    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x * x) / (2 * sigma * sigma))
    values = np.outer(g, g)
    return values / values.sum(), x


def _gaussian(args, where) -> Kernel:
    if len(args) not in (1, 2):
        raise KernelError(f"{where}: write gaussian:SIGMA or gaussian:SIGMA,SIZE")
    sigma = _sigma(args[0], where)
    size = _side(args, 1, sigma, 3, where)
    values, _ = _gauss(sigma, size)
    return Kernel(f"gaussian:{format_number(sigma)},{size}", values,
                  description=f"Gaussian blur, sigma {format_number(sigma)}, {size}x{size}, sum 1", source="sized")


def _log(args, where) -> Kernel:
    """Laplacian of Gaussian: ``(x^2 + y^2 - 2 sigma^2) / sigma^4`` times the
    Gaussian (summing to 1), less its mean so that it sums to 0."""
    if len(args) not in (1, 2):
        raise KernelError(f"{where}: write log:SIGMA or log:SIGMA,SIZE")
    sigma = _sigma(args[0], where)
    size = _side(args, 1, sigma, 4, where)
    g, x = _gauss(sigma, size)
    r2 = x[:, None] ** 2 + x[None, :] ** 2
    values = (r2 - 2 * sigma * sigma) / sigma ** 4 * g
    values -= values.mean()
    return Kernel(f"log:{format_number(sigma)},{size}", values,
                  description=f"Laplacian of Gaussian, sigma {format_number(sigma)}, {size}x{size}, sum 0",
                  source="sized")


def _dog(args, where) -> Kernel:
    """Difference of Gaussians: the Gaussian of S1 less that of S2 (each
    summing to 1 on the same taps), sized for S2."""
    if len(args) not in (2, 3):
        raise KernelError(f"{where}: write dog:S1,S2 or dog:S1,S2,SIZE (S1 < S2)")
    s1, s2 = _sigma(args[0], where), _sigma(args[1], where)
    if not s1 < s2:
        raise KernelError(f"{where}: the first sigma must be the smaller, got {args[0]} and {args[1]}")
    size = _side(args, 2, s2, 3, where)
    values = _gauss(s1, size)[0] - _gauss(s2, size)[0]
    values -= values.mean()
    return Kernel(f"dog:{format_number(s1)},{format_number(s2)},{size}", values,
                  description=f"difference of Gaussians, sigmas {format_number(s1)} and {format_number(s2)}, "
                              f"{size}x{size}, sum 0", source="sized")


def _unsharp(args, where) -> Kernel:
    """The image plus AMOUNT times (image minus its Gaussian blur of sigma
    RADIUS); THRESHOLD is kept on the kernel for the conv stage."""
    if len(args) not in (1, 2, 3):
        raise KernelError(f"{where}: write unsharp:RADIUS[,AMOUNT[,THRESHOLD]]")
    sigma = _sigma(args[0], where)
    amount = _number(args[1], where) if len(args) > 1 else 1.0
    threshold = _number(args[2], where) if len(args) > 2 else 0.0
    if amount <= 0:
        raise KernelError(f"{where}: the amount must be more than 0, got {args[1]}")
    if not 0 <= threshold < 1:
        raise KernelError(f"{where}: the threshold is a fraction of the value range, from 0 to below 1; "
                          f"got {args[2]}")
    size = _side(args, 3, sigma, 3, where)
    g, _ = _gauss(sigma, size)
    values = -amount * g
    values[size // 2, size // 2] += 1 + amount
    text = f"unsharp:{format_number(sigma)},{format_number(amount)},{format_number(threshold)}"
    return Kernel(text, values, description=f"unsharp mask, radius (sigma) {format_number(sigma)}, amount "
                                            f"{format_number(amount)}, threshold {format_number(threshold)}, "
                                            f"{size}x{size}", source="sized", threshold=threshold, amount=amount)


def _sep(args, where) -> Kernel:
    """``sep:M[ scale:S]``: the 1-D mask M (times S) along the rows, then
    down the columns: the kernel is its outer product with itself."""
    import numpy as np

    scale, scale_text = 1.0, "1"
    if args and args[-1].lower().startswith("scale:"):
        scale_text = args.pop()[6:].strip()
        scale = _number(scale_text, where)
        if scale == 0:
            raise KernelError(f"{where}: the scale must not be 0")
    if not args:
        raise KernelError(f"{where}: write sep:V1,V2,... (a 1-D mask), optionally followed by scale:S")
    mask = np.array([_number(a, where) for a in args], dtype=np.float64)
    check_size(len(mask), len(mask), where)
    text = ",".join(format_number(v) for v in mask)
    square = "1" if scale_text == "1" else _square_fraction(scale_text, scale) if "/" in scale_text \
        else format_number(scale * scale)
    return Kernel(f"sep:{text}" + (f" scale:{scale_text}" if scale_text != "1" else ""), np.outer(mask, mask),
                  scale * scale, square,
                  description=f"separable: the mask {text}" + (f" times {scale_text}" if scale_text != "1" else "")
                              + " along the rows, then down the columns", source="sized")


def _square_fraction(text: str, value: float) -> str:
    num, den = (t.strip() for t in text.split("/", 1))
    try:
        return f"{format_number(float(num) ** 2)}/{format_number(float(den) ** 2)}"
    except ValueError:
        return format_number(value * value)


_SIZED = {"gaussian": _gaussian, "log": _log, "dog": _dog, "unsharp": _unsharp, "sep": _sep}


def _int(token: str, where: str) -> int:
    value = _number(token, where)
    if value != int(value) or value < 1:
        raise KernelError(f"{where}: {token!r} must be a positive whole number")
    return int(value)

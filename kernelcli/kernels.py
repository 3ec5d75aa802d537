"""Where kernels come from: the library of named kernels, kernel files, and
any kernel spec (:func:`get_kernel`); the forms are parsed in
:mod:`kernelcli.kernel_forms`.

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
* a named filter bank (:data:`BANKS`: ``sobel`` is ``sobel-x,sobel-y``), in
  :func:`get_kernels` only;
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
import os
import re
from pathlib import Path

from .errors import KernelError
from .kernel_forms import (MAGICK_FORM, NUMBERISH, SIZED_FORM, SEPARATORS, MAX_SIDE, Kernel, check_size, text_fields,
                           parse_inline, parse_magick, parse_sized, parse_text, parse_vips_mat)

__all__ = ["Kernel", "get_kernel", "get_kernels", "library", "names", "catalogue", "load_file", "parse_text",
           "BANKS"]

#: Named filter banks: each name stands for these named kernels, in order.
BANKS = {
    "sobel": ("sobel-x", "sobel-y"),
    "scharr": ("scharr-x", "scharr-y"),
    "prewitt": ("prewitt-x", "prewitt-y"),
    "kirsch": tuple(f"kirsch-{d}" for d in ("n", "ne", "e", "se", "s", "sw", "w", "nw")),
}

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
    head = [t for t in SEPARATORS.split(lines[0]) if t]
    rows = [[t for t in SEPARATORS.split(l) if t] for l in lines[1:]]
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
    check_size(*shape[:2], str(path))
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
    check_size(*arr.shape[:2], str(path))
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
        rows, _, _, _, _, description = text_fields(path.read_text(encoding="utf-8"), str(path))
        found.append((name, len(rows), len(rows[0]) if rows else 0, description))
    return found


def catalogue_records() -> list[dict]:
    """``kernelcli kernels --json``: every named kernel's name, size, scale
    and description (read without NumPy)."""
    found = []
    for name, path in _library_files().items():
        rows, _, scale, scale_text, _, description = text_fields(path.read_text(encoding="utf-8"), str(path))
        found.append({"name": name, "rows": len(rows), "columns": len(rows[0]) if rows else 0,
                      "scale": scale, "scale_text": scale_text, "description": description})
    return found


def kernel_record(kernel: Kernel) -> dict:
    """``kernelcli kernels show --json``: a kernel's values as written, its
    scale and offset, and the effective weights (values x scale)."""
    return {"name": kernel.name, "shape": list(kernel.values.shape), "description": kernel.description,
            "values": kernel.values.tolist(), "scale": kernel.scale, "scale_text": kernel.scale_text,
            "offset": kernel.offset, "weights": (kernel.values * kernel.scale).tolist()}


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
        check_size(*arr.shape[:2], "kernel array")
        values = arr.astype(np.float64)
        if not np.all(np.isfinite(values)):
            raise KernelError("kernel array holds NaN or infinite values")
        return Kernel("array", values, source="array")
    text = spec.strip()
    if not text:
        raise KernelError("the kernel spec is empty")
    if MAGICK_FORM.match(text):
        return parse_magick(text)
    if SIZED_FORM.match(text):
        return parse_sized(text)
    if text.lower() in _library_files():
        return _named(text.lower())  # its file alone: the other kernels are not parsed
    if text.lower() in BANKS:
        raise KernelError(f"{text!r} is a filter bank ({','.join(BANKS[text.lower()])}): give one of its "
                          "kernels here")
    if _is_kernel_file(text):
        return load_file(text)
    if os.path.isdir(text):
        raise KernelError(f"{text}: is a folder, not a kernel file")
    if NUMBERISH.match(text) or ";" in text:
        return parse_inline(text)
    if "/" in text or os.sep in text or Path(text).suffix.lower() in (".txt", ".npy", ".mat"):
        raise KernelError(f"kernel file not found: {text}")
    import difflib

    known = names()
    close = difflib.get_close_matches(text.lower(), known + list(BANKS), n=1)
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
    if text.lower() in BANKS:
        return [_named(name) for name in BANKS[text.lower()]]
    if ("," not in text or ";" in text or MAGICK_FORM.match(text) or NUMBERISH.match(text)
            or _is_kernel_file(text)):
        return [get_kernel(text)]
    items: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if items and SIZED_FORM.match(items[-1]) and re.fullmatch(r"[0-9.eE+\-]+(\s+scale:\s*[0-9./eE+\-]+)?",
                                                                   part, re.I):
            items[-1] += "," + part
        else:
            items.append(part)
    if any(not item for item in items):
        raise KernelError(f"kernel bank {text!r} has an empty name between commas")
    return [kernel for item in items for kernel in
            ([_named(name) for name in BANKS[item.lower()]] if item.lower() in BANKS else [get_kernel(item)])]


#: Used by the engine to accept names, specs, arrays and Kernels alike.
as_kernel = get_kernel

"""Naming a run's outputs, and the refusals that keep it from losing data.

An input's output goes into the output folder (mirroring a folder input's
relative path), or beside the input when no folder is given; its name is the
input's, the input's stem plus a suffix (``photo.jpg`` -> ``photo-sharpen.jpg``),
or a template with ``{stem}``, ``{ext}``, ``{kernel}`` and ``{parent}``.
Before anything runs, two inputs that would write the same output, and an
output that would replace an input (unless asked), are refused.
"""

from __future__ import annotations

import os
import re
import string
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError

#: Formats kernelcli reads but does not write, by extension: their outputs
#: are PNG (unless a format is forced).
READ_ONLY_EXTENSIONS = frozenset({".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".pcx", ".sgi", ".rgb",
                                  ".qoi", ".jp2", ".j2k", ".jpx", ".dib"})
#: The fields a ``--name`` template may use.
FIELDS = ("stem", "ext", "kernel", "parent")
#: Characters a kernel's name keeps in an output name; others become "_".
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


@dataclass(frozen=True)
class Naming:
    """How outputs are named: into ``outdir`` (None: beside each input), with
    ``suffix`` after the stem or by ``template``; ``ext`` (".png"), when a
    format is forced, replaces the input's extension; ``kernel`` fills
    ``{kernel}``; ``in_place`` allows an output to replace its own input."""

    outdir: Path | None = None
    suffix: str | None = None
    template: str | None = None
    kernel: str = ""
    ext: str | None = None
    in_place: bool = False


def kernel_label(kernels) -> str:
    """A file-name-safe name for a conv stage's kernels: ``sharpen``,
    ``edge+sobel-x`` for a bank, a kernel file's stem; other characters
    (an inline matrix's) become ``_``. The kernels are named as KERNEL was
    typed: a named bank's kernels, in its order, by the bank's name (``sobel``,
    not ``sobel-x+sobel-y``), and a kernel's turns (``--rotate``: ``NAME@45``...)
    by the kernel's."""
    from ..kernels import BANKS

    names: list[str] = []
    for kernel in kernels:
        base, at, angle = kernel.name.rpartition("@")
        if not (at and angle.isdigit() and names and names[-1] == base):
            names.append(kernel.name)
    labels, i = [], 0
    while i < len(names):
        bank = next((bank for bank, members in BANKS.items()
                     if tuple(names[i:i + len(members)]) == members), None)
        if bank is not None:
            labels.append(bank)
            i += len(BANKS[bank])
            continue
        name = names[i]
        if os.sep in name or "/" in name or re.search(r"\.(txt|npy|mat)$", name, re.I):
            name = Path(name).stem
        labels.append(_UNSAFE.sub("_", name).strip("_") or "kernel")
        i += 1
    return "+".join(labels)


def check_template(template: str) -> None:
    """Refuse a ``--name`` template with unknown fields or broken braces, or
    one that gives an empty name."""
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as e:
        raise UsageError(f"--name {template!r}: {e} (write {{{{ and }}}} for braces)") from None
    unknown = [f for f in fields if f not in FIELDS]
    if unknown:
        known = ", ".join("{" + f + "}" for f in FIELDS)
        raise UsageError(f"--name {template!r}: unknown field {{{unknown[0]}}}; the fields are {known}")
    if not template.strip() or template.endswith(("/", os.sep)):
        raise UsageError(f"--name {template!r} gives no file name")


def target_for(source: Path, rel: Path, naming: Naming) -> Path:
    """The output of ``source`` (``rel``: its path under the folder it was
    found in, or its name when given as a file)."""
    folder = naming.outdir / rel.parent if naming.outdir is not None else source.parent
    from ..io.zarr_store import is_zarr_store

    own = ".zarr" if is_zarr_store(source) else source.suffix
    ext = naming.ext or (".png" if source.suffix.lower() in READ_ONLY_EXTENSIONS else own)
    if naming.template is not None:
        name = naming.template.format(stem=source.stem, ext=ext.lstrip("."), kernel=naming.kernel,
                                      parent=source.absolute().parent.name)
    elif naming.suffix is not None:
        name = f"{source.stem}{naming.suffix}{ext}"
    else:
        name = f"{source.stem}{ext}" if source.stem else source.name
    return folder / name


def refuse_clashes(pairs, in_place: bool = False) -> None:
    """``pairs``: ``(source, target)`` of every input. Refused: two inputs
    whose outputs would have the same name (ignoring case, as
    case-insensitive file systems do), and, unless ``in_place``, an output
    that is an input (its own or another's)."""
    by_name: dict = {}
    for src, dst in pairs:
        by_name.setdefault(os.path.normcase(os.path.abspath(dst)).casefold(), []).append((src, dst))
    clashes = [group for group in by_name.values() if len(group) > 1]
    if clashes:
        group = clashes[0]
        names = [str(src) for src, _ in group]
        listed = ", ".join(names[:-1]) + " and " + names[-1]
        more = f" (and {len(clashes) - 1} more such groups)" if len(clashes) > 1 else ""
        raise UsageError(f"{listed} would be written to the same output, {group[0][1]} (names are compared "
                         f"ignoring case){more}; rename them or process them separately")
    if in_place:
        return
    sources = {os.path.realpath(src): src for src, _ in pairs}
    for src, dst in pairs:
        hit = sources.get(os.path.realpath(dst))
        if hit is None:
            continue
        if os.path.realpath(hit) == os.path.realpath(src):
            raise UsageError(f"the output of {src} would replace it; give -o DIR, --suffix or --name, "
                             f"or --in-place to replace the inputs")
        raise UsageError(f"the output of {src}, {dst}, would replace the input {hit}; choose other names")


def read_file_list(data: bytes, null: bool = False) -> list[str]:
    """The paths in a ``--files-from`` list: one a line (a final ``\\r`` is
    dropped), or separated by NUL bytes with ``null`` (``find -print0``).
    Empty entries are skipped."""
    if null:
        parts = data.split(b"\0")
    else:
        parts = [line[:-1] if line.endswith(b"\r") else line for line in data.split(b"\n")]
    return [os.fsdecode(p) for p in parts if p]

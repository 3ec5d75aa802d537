"""Click parameter types: they turn command-line text into library values."""

from __future__ import annotations

import math

import click

from ..config import MAX_SIZE as MAX_WHOLE
from ..errors import KernelcliError


class PairType(click.ParamType):
    """``S`` or ``SY,SX``: positive integers (at most :data:`MAX_WHOLE`)."""

    name = "N[,N]"

    def __init__(self, minimum: int = 1, maximum: int = MAX_WHOLE):
        self.minimum = minimum
        self.maximum = maximum

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        parts = str(value).replace("x", ",").split(",")
        try:
            numbers = tuple(int(p) for p in parts)
        except ValueError:
            self.fail(f"{value!r} is not a whole number or a pair N,N", param, ctx)
        if len(numbers) not in (1, 2):
            self.fail(f"{value!r}: give one number or two separated by a comma", param, ctx)
        if min(numbers) < self.minimum:
            self.fail(f"{value!r}: must be at least {self.minimum}", param, ctx)
        if max(numbers) > self.maximum:
            self.fail(f"{value!r}: must be at most {self.maximum}", param, ctx)
        return numbers * 2 if len(numbers) == 1 else numbers


class PaddingType(click.ParamType):
    """``same``, ``valid``, ``full``, ``P`` or ``PY,PX``."""

    name = "same|valid|full|P[,P]"

    def convert(self, value, param, ctx):
        if isinstance(value, (tuple, int)):
            return value
        text = str(value).strip().lower()
        if text in ("same", "valid", "full"):
            return text
        try:
            pair = PairType(minimum=0).convert(text, param, ctx)
        except click.BadParameter as e:
            if "at most" in e.message:  # numbers, too large: say so
                raise
            self.fail(f"{value!r}: use same, valid, full, a number of pixels P or PY,PX", param, ctx)
        return pair


#: The sized kernel forms offered by shell completion, as hints.
SIZED_HINTS = ("box:", "gaussian:", "log:", "dog:", "unsharp:", "sep:")


class KernelSpec(click.ParamType):
    """A kernel name, sized form, file or inline matrix, resolved to a Kernel
    (or, with ``bank=True``, a tuple of Kernels: ``edge,sharpen,box``)."""

    name = "KERNEL"

    def __init__(self, bank: bool = False):
        self.bank = bank

    def shell_complete(self, ctx, param, incomplete):
        """Named kernels, the named banks where a bank is taken, and the sized
        forms (after the last comma of a bank), then files: a kernel may be a
        file too."""
        from click.shell_completion import CompletionItem

        from ..kernels import BANKS, names

        head, _, word = incomplete.rpartition(",") if self.bank else ("", "", incomplete)
        head = head + "," if head else ""
        forms = [*names(), *(BANKS if self.bank else ()), *SIZED_HINTS]
        found = [CompletionItem(head + name) for name in forms if name.startswith(word)]
        if not found or "/" in word or "." in word:
            return [CompletionItem(incomplete, type="file"), *found]
        return found

    def convert(self, value, param, ctx):
        from ..kernels import Kernel, get_kernel, get_kernels

        if isinstance(value, (Kernel, tuple)):
            return value
        try:
            return tuple(get_kernels(value)) if self.bank else get_kernel(value)
        except KernelcliError as e:
            self.fail(str(e), param, ctx)


class ActivationType(click.ParamType):
    """``relu``, ``leaky[:SLOPE]``, ``tanh[:K]``, ``sigmoid[:K]`` (K may be a fraction: 1/255)."""

    name = "relu|leaky:S|tanh:K|sigmoid:K"

    def convert(self, value, param, ctx):
        from ..stages import Activation, parse_activation

        if isinstance(value, Activation):
            return value
        try:
            return parse_activation(value)
        except KernelcliError as e:
            self.fail(str(e), param, ctx)


class TileRowsType(click.ParamType):
    """``auto`` or a positive number of output rows per band."""

    name = "N|auto"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value is None:
            return value
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"
        try:
            rows = int(text)
        except ValueError:
            self.fail(f"{value!r}: give a number of rows or auto", param, ctx)
        if rows < 1:
            self.fail(f"{value!r}: must be at least 1", param, ctx)
        if rows > MAX_WHOLE:
            self.fail(f"{value!r}: must be at most {MAX_WHOLE}", param, ctx)
        return rows


class FiniteFloat(click.FloatRange):
    """A float that is a real number (not nan, inf or -inf), optionally in a range."""

    name = "float"

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx) if not isinstance(value, float) else value
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)

    def _describe_range(self) -> str:
        """Click writes an unbounded range as ``x<=None`` in the help: nothing to say then."""
        return "" if self.min is None and self.max is None else super()._describe_range()


def whole_range(minimum: int = 1, maximum: int = MAX_WHOLE) -> click.IntRange:
    """Click's IntRange with an upper end (:data:`MAX_WHOLE` unless told)."""
    return click.IntRange(minimum, maximum)


def complete_folders(ctx, param, incomplete):
    """Shell completion of a folder option (``-o DIR``)."""
    from click.shell_completion import CompletionItem

    return [CompletionItem(incomplete, type="dir")]


def complete_files(ctx, param, incomplete):
    """Shell completion of a file option (``--files-from FILE``)."""
    from click.shell_completion import CompletionItem

    return [CompletionItem(incomplete, type="file")]


class TiffTileType(click.ParamType):
    """A TIFF tile's side: a positive multiple of 16 (as TIFF requires)."""

    name = "N"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n < 16 or n % 16 or n > 2**16:
            self.fail(f"{value!r} is not a tile size: need a multiple of 16 from 16 to 65536", param, ctx)
        return n

"""``kernelcli info FILE...``: what kernelcli reads from each file, from its header."""

from __future__ import annotations


import click

from .._process import say
from ..errors import KernelcliError
from .base import CONTEXT, emit
from .many import to_json


@click.command(context_settings=CONTEXT)
@click.argument("files", metavar="FILE...", nargs=-1, required=True, type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per file.")
def info(files, as_json):
    """Show what kernelcli reads from each FILE, from its header alone.

    Format, size (width x height), mode (and the mode kernelcli computes
    with), bits per sample, frames, EXIF orientation, ICC profile and dpi;
    for a .npy its shape, dtype and kernelcli's metadata. No pixel is decoded.
    A file that cannot be read is reported on stderr; the others are shown
    and the exit status is 1.
    """
    from ..io.header import describe

    found, failed = [], 0
    for path in files:
        try:
            found.append(describe(path))
        except KernelcliError as e:
            failed += 1
            say(f"kernelcli: error: {e}")
    if as_json:
        emit(to_json(found, indent=2))
    elif found:
        emit("\n".join(_text(facts) for facts in found))
    if failed:
        raise click.exceptions.Exit(1)


def _text(facts: dict) -> str:
    from ..io.header import ORIENTATIONS

    size = f"{facts['width']}x{facts['height']}" if facts["width"] is not None else "?"
    lines = [f"{facts['file']}: {facts['format']} {size}"]
    if "shape" in facts:
        lines.append(f"  shape        {'x'.join(map(str, facts['shape']))}, {facts['dtype']}"
                     + (", Fortran order" if facts.get("fortran_order") else "")
                     + (", truncated" if facts.get("truncated") else ""))
    if facts["mode"]:
        read_as = f" (read as {facts['read_as']})" if facts["read_as"] != facts["mode"] else ""
        lines.append(f"  mode         {facts['mode']}{read_as}")
    if facts["bits"]:
        lines.append(f"  bits         {facts['bits']} per sample")
    if "shape" not in facts:
        lines.append(f"  frames       {facts['frames']}"
                     + ("  (apply and conv filter each; --frame N picks one)" if facts["frames"] > 1 else ""))
        orientation = facts["orientation"]
        lines.append(f"  orientation  {f'{orientation} {ORIENTATIONS[orientation]}' if orientation else 'none'}"
                     + _upright(facts))
    icc = facts["icc_profile"]
    lines.append(f"  icc profile  {_icc_text(icc)}")
    lines.append(f"  dpi          {' x '.join(f'{v:g}' for v in facts['dpi']) if facts['dpi'] else 'none'}")
    meta = facts.get("metadata")
    if meta:
        shown = {k: v for k, v in meta.items() if k not in ("mode", "dpi")}
        if shown:
            lines.append(f"  metadata     {to_json(shown, None)}")
    return "\n".join(lines)


def _upright(facts: dict) -> str:
    """What reading does with an orientation other than 1 (``--no-auto-orient`` keeps it)."""
    orientation, width, height = facts["orientation"], facts["width"], facts["height"]
    if not orientation or orientation == 1 or width is None:
        return ""
    size = f"{height}x{width}" if orientation >= 5 else f"{width}x{height}"
    return f"; read turned upright, {size}"


def _icc_text(icc) -> str:
    if not icc:
        return "none"
    return f"{icc.get('description') or 'unnamed'} ({icc['bytes']:,} bytes)"


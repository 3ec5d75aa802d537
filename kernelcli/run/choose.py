"""What goes band by band: the choice between a run in bands
(:mod:`kernelcli.run.tiled`) and the whole picture in memory
(:mod:`kernelcli.run.files`) for one INPUT and OUTPUT, from the options,
the input's kind and header, and the memory available."""

from __future__ import annotations

from ..errors import KernelcliError, UsageError


def in_bands_wanted(input, output, fmt, tile_rows, scheduler, max_pixels, picture):
    """Should this single INPUT go band by band (:func:`kernelcli.run.tiled.run`)?
    Bands of rows from a .npy, TIFF, PNG or JPEG file into a .npy, TIFF, PNG
    or JPEG file when asked (``tile_rows``, ``scheduler``), or when the input
    is large (tiled.goes_out_of_core); a Zarr store, in or out, always.
    ``picture``: ``(linear, colormap, depth, frame, auto_orient)``; a picture
    goes in bands only as it is stored, one frame, upright, with none of them.
    Returns False, True, or the input's :class:`~kernelcli.run.bands.Source`
    when its header was read to decide (the run takes it as read)."""
    from ..io import encode, inputs, jpeg_rows
    from .zarr_bands import zarr_run

    kind = None if input == "-" else inputs.band_kind(input)
    zarr = zarr_run(input, kind, output, fmt)  # a Zarr input or output always goes in bands
    if (tile_rows or scheduler) and kind is None:
        raise UsageError("--tile-rows and --scheduler need a folder, a .npy, TIFF, PNG or JPEG file INPUT")
    if kind == "jpeg" and not jpeg_rows.available():  # (without the extra: whole, as ever)
        if tile_rows or scheduler:
            raise UsageError(f"a JPEG in bands needs libvips: {jpeg_rows.INSTALL_HINT}")
        return False
    if kind is None:
        return False
    from . import bands

    asked = tile_rows or scheduler or zarr
    if not asked and (output == "-" or encode.format_for(output, fmt) not in bands.BAND_FORMATS
                      or (kind == "png" and not bands.may_not_fit(*inputs.png_size(input)))):
        return False  # (a PNG told from its first bytes alone: no header reader, no file runner is loaded)
    if not asked and encode.format_for(output, fmt) == "JPEG" and not jpeg_rows.available():
        return False  # written whole, as ever
    from . import tiled

    facts = None
    if kind != "npy":
        forced = None
        if (tile_rows or scheduler) and kind in ("tiff", "png") and not not_in_bands(input, *picture, facts={})[0]:
            forced = tiled.open_source(input, max_pixels or inputs.DEFAULT_MAX_PIXELS)  # read once, run as read
        why, facts = not_in_bands(input, *picture, facts=forced and forced.facts)
        if why and asked:
            what = "--tile-rows and --scheduler take" if tile_rows or scheduler else "a Zarr input or output takes"
            raise UsageError(f"{what} a picture as it is stored: {why}")
        if why or forced:
            return forced or False
    if asked:
        return True
    if facts and facts.get("width") and not tiled.may_not_fit(facts["width"], facts["height"]):
        return False  # known from the header alone: no TIFF reader is loaded for an ordinary picture
    try:
        source = tiled.open_source(input, max_pixels or inputs.DEFAULT_MAX_PIXELS)
    except KernelcliError:  # the ordinary reader says what is wrong with it
        return False
    if kind in ("png", "jpeg") and encode.format_for(output, fmt) == "NPY":
        return False
    if kind != "npy":
        return tiled.too_big_for_memory(source) and source
    return encode.format_for(output, fmt) == "NPY" and tiled.goes_out_of_core(source) and source


def not_in_bands(input, linear, colormap, depth, frame, auto_orient, facts=None) -> tuple:
    """``(why, facts)``: why a picture cannot go in bands (None: it can),
    from the options and pictures the whole-picture path alone handles, and what its
    header says (``facts``, else io.header.describe's; None when it cannot be read)."""
    asked = [name for name, on in (("--linear", linear), ("--colormap", colormap != "gray"),
                                   ("--depth", depth is not None), ("--frame", frame is not None)) if on]
    if asked:
        return f"not with {', '.join(asked)}", None
    if facts == {}:  # only the options are asked about
        return None, None
    if facts is None:
        from ..io import header

        try:
            facts = header.describe(input)
        except KernelcliError:  # the ordinary reader says what is wrong with it
            return None, None
    if facts.get("format") == "JPEG" and facts.get("mode") not in ("L", "RGB"):
        return f"{input} is a {facts.get('mode')} JPEG, converted to sRGB in memory", facts
    if (facts.get("frames") or 1) > 1:
        return f"{input} has {facts['frames']} frames (pages), which are filtered one by one in memory", facts
    if auto_orient and (facts.get("orientation") or 1) != 1:
        return (f"{input} is stored turned (EXIF orientation {facts['orientation']}) and is turned upright in "
                "memory (--no-auto-orient keeps it as stored)"), facts
    return None, facts

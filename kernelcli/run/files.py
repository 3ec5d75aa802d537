"""One input into one output: the stages over a file, a stream or stdin.

:func:`apply_file` is ``kernelcli apply`` on one input (and what a folder run
does for each file); :func:`run_stage` is ``kernelcli relu`` and
``kernelcli pool``, streaming a ``.npy`` a band of rows at a time.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from .. import engine
from ..io.encode import (PNG_LEVEL, OutputSpec, canvas_for, format_for, npy_colormap_notes, write_frames,
                         write_image, write_pixels)
from ..errors import UsageError
from ..io.inputs import DEFAULT_MAX_PIXELS, NpyInput, ReadSpec, open_input, read_image
from ..io.npy import NpyRows, npy_chunks, npy_header, npy_metadata, npy_trailer, read_into, read_rest
from ..io.picture import Picture, nonfinite_note
from ..io.pixels import clips_to_8bit, to_array
from ..io.sinks import stream_to, write_chunks
from ..stages import Activation, Conv, Relu, Stages, activation_stage, apply, pool_stage, relu_stage
from . import bands


def apply_file(source, target, stages: Stages, output: OutputSpec = OutputSpec(),
               max_pixels: int | None = None, threads: int = 2,
               reading: ReadSpec = ReadSpec()) -> tuple[tuple, list[str]]:
    """``kernelcli apply`` on one input: read ``source``, run ``stages``,
    write ``target`` as ``output`` says (paths, ``"-"`` or binary files, as
    in :mod:`kernelcli.io`), reading pictures as ``reading`` says.

    The stages run in bands of rows (:func:`kernelcli.run.bands.apply_in_bands`,
    on ``threads`` threads): the same numbers, without full-size float32
    intermediates, in bands small enough to stay in cache. 8- and 16-bit
    images are read as they are, and written as images band by band, except
    with ``stretch`` scaling or a colormap, which need every value first: its bands fill
    one float32 result, stretched as a whole. A ``.npy`` output gets each
    band's float32 rows as soon as the rows above them are written. Whole pictures go through
    :func:`apply` when the bands would not give the same numbers (kernels
    run by FFT).

    Returns the input's ``(height, width)`` and the notes to show the user.
    """
    conv, relu, pool, gray, alpha = stages.conv, stages.relu, stages.pool, stages.gray, stages.alpha
    scaling, offset, quality = output.scaling, output.offset, output.quality
    out_format = format_for(target, output.fmt)
    png_level = PNG_LEVEL if output.png_level is None else output.png_level
    loading = []

    def header(height, width, channels):  # Numba, if the image will need it, loads while the pixels decode
        loading.append(bands.load_numba_early(conv, pool, height, width, 1 if gray else channels))

    try:
        picture = read_image(source, max_pixels=max_pixels or DEFAULT_MAX_PIXELS, integers=True,
                             on_header=header, reading=replace(reading, all_frames=reading.frame is None))
    finally:  # (on an error too: no thread is left compiling while the process ends)
        for wait in loading:
            wait()
    notes, picture.notes = picture.notes, []
    size = picture.pixels.shape[:2]
    if picture.frames:
        return size, notes + _apply_frames(picture, source, target, stages, output, out_format)
    if stages.linear:
        result = _apply_linear(picture, stages)
        notes += result.notes
        result.info = _placed(result.info, size, result.pixels.shape, notes)
        return size, notes + write_image(target, result, out_format, scaling, offset, quality, png_level,
                                         colormap=output.colormap, depth=output.depth)

    if out_format == "NPY":
        notes += npy_colormap_notes(output.colormap)
        return size, notes + _npy_in_bands(picture, target, conv, relu, pool, gray, alpha, threads)
    # each band made into the output's values at once, or float32 kept for
    # stretch (every value known before any is scaled)
    per_band = scaling != "stretch" and output.colormap == "gray"
    band_notes: list[str] = []  # the stages' notes (the same for every band) and the conversions'
    first: list[Picture] = []
    keep = _float_rows(band_notes, first)

    def convert(band: Picture):
        if not per_band:
            return keep(band)
        band_notes.extend(band.notes)
        return to_array(band, out_format, scaling, offset, band_notes, output.depth)

    pixels = bands.apply_in_bands(picture, conv, relu, pool, gray, alpha, threads=threads, convert=convert,
                                  allocate=canvas_for(out_format) if per_band else None,
                                  clips_to_8bit=per_band and clips_to_8bit(picture, out_format, scaling,
                                                                           offset, output.depth))
    if pixels is not None:
        info = _placed(picture.info, size, pixels.shape, band_notes)
        if per_band:
            band_notes += write_pixels(target, pixels, out_format, info, quality, png_level)
        else:
            band_notes += write_image(target, first[0].with_pixels(pixels, info=info), out_format, scaling,
                                      offset, quality, png_level, colormap=output.colormap, depth=output.depth)
        return size, notes + list(dict.fromkeys(band_notes))  # once, not once per band
    result = _apply_whole(picture, conv, relu, pool, gray, alpha)
    result.info = _placed(result.info, size, result.pixels.shape, notes)
    notes += result.notes
    notes += write_image(target, result, out_format, scaling, offset, quality, png_level,
                         colormap=output.colormap, depth=output.depth)
    return size, notes


def _apply_linear(picture: Picture, stages: Stages) -> Picture:
    """The stages in linear light: the colour channels of 8- and 16-bit
    pictures decoded through their ICC profile's tone curves (the sRGB curve
    without one), filtered, encoded back (alpha as it is)."""
    from ..io import colour as cms

    if stages.conv.is_bank:
        raise UsageError("--linear needs one kernel: a filter bank's maps are not colours to encode back")
    top = picture.max_value
    px = np.array(picture.pixels, dtype=np.float32)
    if picture.mode is None or picture.mode in ("F", "LA;F", "RGB;F", "RGBA;F"):
        result = _apply_whole(picture.with_pixels(px), stages.conv, stages.relu, stages.pool, stages.gray,
                              stages.alpha)
        result.notes.append("--linear: float and .npy values are taken as linear already; filtered as they are")
        return result
    colour = slice(None) if px.ndim == 2 else slice(0, px.shape[2] - (1 if picture.has_alpha else 0))
    curves = cms.profile_curves(picture.info.get("icc_profile"), 1 if px.ndim == 2 else colour.stop)
    px[..., colour] = (cms.curve_to_linear(px[..., colour], top, curves) if curves
                       else cms.to_linear(px[..., colour], top))
    result = _apply_whole(picture.with_pixels(px), stages.conv, stages.relu, stages.pool, stages.gray,
                          stages.alpha)
    out = result.pixels
    colour = slice(None) if out.ndim == 2 else slice(0, out.shape[2] - (1 if result.has_alpha else 0))
    if curves and (1 if out.ndim == 2 else colour.stop) == len(curves):
        out[..., colour] = cms.curve_from_linear(out[..., colour], top, curves)
    else:  # (--gray made one luminance channel of linear RGB: encoded with the sRGB curve)
        out[..., colour] = cms.from_linear(out[..., colour], top)
    return result


def _apply_frames(picture: Picture, source, target, stages: Stages, output: OutputSpec, out_format: str):
    """:func:`apply_file` on a picture of several frames: every frame through
    the stages, written as one file of a format that holds frames."""
    from ..io.frames import FRAME_FORMATS, refuse_one_picture

    frames = [picture.pixels, *picture.frames]
    if out_format not in FRAME_FORMATS:
        name = str(getattr(source, "name", "<stdin>" if str(source) == "-" else source))
        refuse_one_picture(name, len(frames), out_format)
    notes: list[str] = []
    arrays = []
    for pixels in frames:
        frame = picture.with_pixels(pixels)
        result = (_apply_linear(frame, stages) if stages.linear else
                  _apply_whole(frame, stages.conv, stages.relu, stages.pool, stages.gray, stages.alpha))
        notes.extend(result.notes)
        arrays.append(to_array(result, out_format, output.scaling, output.offset, notes, output.depth,
                               output.colormap))
    info = _placed(picture.info, picture.pixels.shape[:2], arrays[0].shape, notes)
    notes += write_frames(target, arrays, out_format, info, output.quality)
    return list(dict.fromkeys(notes))


def _placed(info: dict, size: tuple, out_shape: tuple, notes: list) -> dict:
    """``info`` without the tags that place the picture on the ground
    (GeoTIFF) when the output's grid is not the input's (a stride, pooling or
    padding changed it): they would place it wrongly. A note says so."""
    if not info.get("tiff_tags") or tuple(out_shape[:2]) == tuple(size):
        return info
    notes.append(f"dropped the GeoTIFF tags: the output's {out_shape[0]}x{out_shape[1]} grid is not the "
                 f"input's {size[0]}x{size[1]}, so they would place it wrongly")
    return {k: v for k, v in info.items() if k != "tiff_tags"}


def _float_rows(notes: list, first: list):
    """A ``convert`` for :func:`kernelcli.run.bands.apply_in_bands` that keeps each
    band's float32 rows as they are, adding the band's notes to ``notes``
    and the first band (whose metadata goes into the output) to ``first``."""
    def convert(band: Picture):
        notes.extend(band.notes)
        if not first:
            first.append(band)
        return band.pixels
    return convert


def _apply_whole(picture: Picture, conv: Conv, relu, pool, gray, alpha) -> Picture:
    """:func:`apply` on a picture read for bands (8- or 16-bit pixels made
    float32 first): for jobs the bands would not give the same numbers."""
    if picture.pixels.dtype != np.float32:
        picture = picture.with_pixels(np.asarray(picture.pixels, dtype=np.float32))
    return apply(picture, conv, relu=relu, pool=pool, gray=gray, alpha=alpha)


def _npy_in_bands(picture: Picture, target, conv: Conv, relu, pool, gray, alpha, threads) -> list[str]:
    """:func:`apply_file` into a ``.npy``: each band of float32 rows is
    written as soon as the rows above it are (into a pipe too, where the
    next command can start on them), after the header; the metadata last.
    Kernels run by FFT go whole."""
    notes: list[str] = []
    first: list[Picture] = []

    def write(f):
        rows = NpyRows(f)
        if bands.apply_in_bands(picture, conv, relu, pool, gray, alpha, threads=threads,
                                convert=_float_rows(notes, first), allocate=rows.allocate) is not None:
            f.write(npy_trailer(first[0].metadata()))
            return
        result = _apply_whole(picture, conv, relu, pool, gray, alpha)
        notes.extend(result.notes)
        write_chunks(f, npy_chunks(result))

    stream_to(target, write, "NPY")
    return list(dict.fromkeys(notes))  # once, not once per band


# --------------------------------------------------------------------------
# one stage as a command: kernelcli relu, kernelcli pool

#: Input rows a stage streams at a time, in bytes (as float32): the band and
#: its result stay in cache, and no full-size array is made.
STREAM_BAND_BYTES = 4 * 2**20


def run_stage(source, target, stage, output: OutputSpec = OutputSpec(),
              max_pixels: int | None = DEFAULT_MAX_PIXELS, reading: ReadSpec = ReadSpec()) -> list[str]:
    """Read ``source``, run one stage (:class:`Relu`, :class:`Activation` or :class:`Pool`), write
    ``target`` as ``output`` says; returns the notes to show.

    A ``.npy`` into a ``.npy`` goes through a band of rows at a time, from a
    pipe into a pipe too, with the same numbers and bytes as reading it
    whole: ReLU and pooling see each value or window alone. Except when the
    array has 2 or 4 channels: its metadata, which comes after the data,
    tells whether the last one is alpha (which the stages treat apart), so
    such an array is read whole, as are pictures and Fortran-ordered arrays.
    """
    out_format = format_for(target, output.fmt)
    with open_input(source, max_pixels, reading=reading) as got:
        if isinstance(got, NpyInput):
            channels = got.shape[2] if len(got.shape) == 3 else 1
            if out_format == "NPY" and not got.fortran and channels not in (2, 4):
                return npy_colormap_notes(output.colormap) + _stream_stage(got, target, stage)
            got = got.picture()
    notes, got.notes = got.notes, []
    if isinstance(stage, Relu):
        picture = relu_stage(got, stage.slope, inplace=True)
    elif isinstance(stage, Activation):
        picture = activation_stage(got, stage, inplace=True)
    else:
        picture = pool_stage(got, stage)
    notes += picture.notes
    png_level = PNG_LEVEL if output.png_level is None else output.png_level
    return notes + write_image(target, picture, out_format, output.scaling, output.offset, output.quality,
                               png_level, colormap=output.colormap, depth=output.depth)


def _stream_stage(npy: NpyInput, target, stage) -> list[str]:
    """:func:`run_stage` for a ``.npy`` without alpha, a band of rows at a time."""
    h, shape = npy.shape[0], npy.shape
    if isinstance(stage, (Relu, Activation)):
        ph = sy = 1
        out_shape = shape

        def compute(band):
            if isinstance(stage, Activation):
                return engine.activate(band, stage.kind, stage.param, inplace=True)
            return engine.relu(band, stage.slope, inplace=True)
    else:
        ph, _, sy, _, oh, ow = engine.pool_geometry(shape, stage.kind, stage.size, stage.stride)
        out_shape = (oh, ow) + tuple(shape[2:])

        def compute(band):
            return engine.pool(band, stage.kind, stage.size, stage.stride)
    row_values = math.prod(shape[1:])
    row_bytes = row_values * npy.dtype.itemsize
    per_band = max(1, STREAM_BAND_BYTES // (4 * row_values * sy))  # output rows
    most = (per_band - 1) * sy + ph  # input rows a band reads at most
    raw = np.empty(most * row_bytes, dtype=np.uint8)
    total = h * row_bytes
    taken = [0, 0]  # input rows read, and how many of their values are NaN or infinite

    def take(n):
        """The next ``n`` input rows, as float32 (a new array)."""
        view = memoryview(raw)[:n * row_bytes]
        read_into(npy.stream, view, npy.name, total, taken[0] * row_bytes)
        rows = np.frombuffer(view, dtype=npy.dtype).reshape((n,) + tuple(shape[1:])).astype(np.float32)
        taken[0] += n
        taken[1] += rows.size - int(np.count_nonzero(np.isfinite(rows)))
        return rows

    def skip_to(row):
        while taken[0] < row:
            take(min(most, row - taken[0]))

    notes = []

    def write(f):
        f.write(npy_header(out_shape))
        band, first = None, 0  # the last band's input rows, from input row ``first``
        for r0 in range(0, out_shape[0], per_band):
            r1 = min(out_shape[0], r0 + per_band)
            lo, hi = r0 * sy, (r1 - 1) * sy + ph
            kept = band[lo - first:] if band is not None and first + len(band) > lo else None
            if kept is None:
                skip_to(lo)  # rows no window reads (a pooling stride longer than the window)
            new = take(hi - taken[0])
            band, first = (new if kept is None else np.concatenate([kept, new])), lo
            f.write(memoryview(np.ascontiguousarray(compute(band), dtype=np.float32)).cast("B"))
        skip_to(h)  # rows left over at the bottom, then kernelcli's metadata
        meta = npy_metadata(shape, read_rest(npy.stream, npy.name), npy.name, npy.dtype)
        notes.extend(meta.notes + nonfinite_note(meta.pixels, npy.name, taken[1]))
        f.write(npy_trailer(meta.metadata()))

    stream_to(target, write, "NPY")
    return notes

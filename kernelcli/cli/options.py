"""Option bundles shared by the commands (stacked as decorators)."""

from __future__ import annotations

import functools

import click

from .params import ActivationType, FiniteFloat, PaddingType, PairType, TiffTileType, TileRowsType, whole_range

# --------------------------------------------------------------------------
# option bundles


def _whole(ctx, param, value):
    return None if value is None else int(value)


def conv_options(f):
    """--stride, --padding, --pad-mode, --border-value, --origin, --dilation, --flip, --normalize, --gray,
    --alpha, --rotate, --rotations, --combine."""
    options = [
        click.option("--stride", "-s", type=PairType(), default="1", show_default=True,
                     help="Step between kernel positions: S or SY,SX."),
        click.option("--padding", "-p", type=PaddingType(), default="same", show_default=True,
                     help="same (keep size at stride 1), valid (none), full (K-1 each side), "
                          "or P / PY,PX pixels each side."),
        click.option("--pad-mode", type=click.Choice(["zero", "reflect", "reflect101", "edge", "wrap"]),
                     default="zero", show_default=True, help="What the padding holds."),
        click.option("--border-value", "cval", type=FiniteFloat(), default=0.0, show_default=True,
                     metavar="V", help="What zero padding holds: the constant V (as scipy's cval)."),
        click.option("--origin", type=PairType(minimum=0), default=None, metavar="Y,X",
                     help="The kernel cell (0-based row,column) over each output pixel, with --padding "
                          "same.  [default: the centre]"),
        click.option("--dilation", "-d", type=PairType(), default="1", show_default=True,
                     help="Spacing between kernel taps: D or DY,DX (as PyTorch)."),
        click.option("--flip", is_flag=True,
                     help="True convolution (kernel flipped on both axes) instead of cross-correlation."),
        click.option("--normalize", is_flag=True, help="Divide the kernel by the sum of its weights."),
        click.option("--gray", is_flag=True, help="Convert colour to one luminance channel first."),
        click.option("--alpha", type=click.Choice(["keep", "premultiply", "filter"]), default="keep",
                     show_default=True,
                     help="keep: alpha is not filtered, only moved; premultiply: filter "
                          "colour weighted by alpha; filter: alpha is filtered like a colour."),
        click.option("--rotate", type=click.Choice(["45", "90"]), default=None, callback=_whole,
                     help="Make a bank of each kernel turned clockwise in steps of 45 degrees (3x3 "
                          "kernels: the outer ring moves) or 90 (square kernels)."),
        click.option("--rotations", type=whole_range(1, 8), default=None, metavar="N",
                     help="How many turns --rotate makes (the kernel itself first).  [default: a full "
                          "turn: 8 or 4]"),
        click.option("--combine", type=click.Choice(["magnitude", "max", "min", "sum", "mean"]), default=None,
                     help="Reduce a filter bank's maps to one map per input channel (magnitude: square "
                          "root of the sum of squares), before --relu and --pool."),
    ]
    return functools.reduce(lambda g, o: o(g), reversed(options), f)


#: The --colormap names (kernelcli.io.colormaps.COLORMAPS, not imported here: it needs NumPy).
COLORMAPS = ("gray", "diverging", "heat")

#: --activation's help (apply and conv).
ACTIVATION_HELP = ("An activation after the convolution: relu, leaky:SLOPE, tanh:K or sigmoid:K. "
                   "K multiplies the values first (default 1): tanh:1/255 suits 0-255 pixels, where a "
                   "plain tanh or sigmoid is saturated (1) almost everywhere. tanh gives -1..1 and "
                   "sigmoid 0..1: write .npy, or use --scaling stretch or --colormap.")


def activation_option(f):
    return click.option("--activation", type=ActivationType(), default=None, metavar="FUNC",
                        help=ACTIVATION_HELP)(f)


def stage_options(f):
    """--relu, --activation, --pool, --pool-size, --pool-stride."""
    options = [
        click.option("--relu", is_flag=True, help="Set negative values to 0 after the convolution "
                                                  "(the short form of --activation relu)."),
        activation_option,
        click.option("--pool", type=click.Choice(["max", "avg", "sum"]), default=None,
                     help="Pool after the convolution (and the activation)."),
        click.option("--pool-size", type=PairType(), default=None, help="Pooling window: N or NY,NX.  [default: 2]"),
        click.option("--pool-stride", type=PairType(), default=None,
                     help="Step between pooling windows.  [default: the pool size]"),
    ]
    return functools.reduce(lambda g, o: o(g), reversed(options), f)


def output_options(f):
    """--format, --scaling, --offset, --colormap, --quality, --png-level, --depth."""
    options = [
        click.option("--format", "-f", "fmt", default=None, metavar="FORMAT",
                     help="Output format (png, jpg, tif, bmp, webp, avif, gif, npy; heic, jxl, exr with "
                          "the formats extra); default: from OUTPUT's "
                          "extension, npy for stdout."),
        click.option("--scaling", type=click.Choice(["clip", "abs", "stretch"]), default="clip",
                     show_default=True,
                     help="How values become pixels: clip to the range, absolute value, or "
                          "stretch min..max to the full range. Not applied to .npy."),
        click.option("--offset", type=FiniteFloat(), default=0.0, show_default=True,
                     help="Add this to every value before writing pixels (e.g. 128 to see negative edges)."),
        click.option("--colormap", type=click.Choice(COLORMAPS), default="gray",
                     show_default=True,
                     help="Pictures of one channel: gray writes the values as they are; diverging draws 0 "
                          "light gray, negatives blue and positives red on a symmetric scale; heat runs "
                          "black-red-yellow-white from the minimum to the maximum."),
        click.option("--quality", type=click.IntRange(1, 100), default=92, show_default=True,
                     envvar="KERNELCLI_QUALITY", show_envvar=True, help="JPEG/WebP quality."),
        click.option("--png-level", type=click.IntRange(0, 9), default=1, show_default=True,
                     envvar="KERNELCLI_PNG_LEVEL", show_envvar=True,
                     help="PNG zlib level: 1 is fast; 6-9 write files about 10-15% smaller, slowly."),
        click.option("--depth", type=click.Choice(["8", "16", "float"]), default=None,
                     help="Output sample type: 8- or 16-bit integers (png, tif), or 32-bit float "
                          "(tif, exr: the values as computed).  [default: the input's]"),
    ]
    return functools.reduce(lambda g, o: o(g), reversed(options), f)


def batch_options(f):
    """--recursive, --glob, --jobs, --skip-existing (for a folder INPUT)."""
    options = [
        click.option("--recursive", "-r", is_flag=True, help="Folders: descend into subfolders."),
        click.option("--glob", "pattern", default=None, metavar="PATTERN",
                     help="Folders: only files whose relative path or name matches (e.g. '*.jpg'; any case)."),
        click.option("--jobs", "-j", type=whole_range(1), default=None, envvar="KERNELCLI_JOBS", show_envvar=True,
                     help="Folders: worker processes (at most one per file, and as many as the "
                          "cores and memory allow).  [default: all cores]"),
        click.option("--skip-existing", is_flag=True,
                     help="Folders: leave outputs that already exist alone (resume a run)."),
        click.option("--quiet", "-q", "quiet", is_flag=True,
                     help="No notes, no progress bar, no summary (errors are still shown)."),
    ]
    return functools.reduce(lambda g, o: o(g), reversed(options), f)


def scale_options(f):
    """--tile-rows, --scheduler, --scheduler-timeout, --tiff-tile, --tiff-compression
    (large .npy and TIFF files, clusters)."""
    options = [
        click.option("--tile-rows", type=TileRowsType(), default=None,
                     help="A .npy, TIFF, PNG or JPEG INPUT into a .npy, TIFF, PNG or JPEG OUTPUT (JPEG: with the "
                          "jpeg extra): process it in bands of N output "
                          "rows (auto: about 32 MB each), reading and writing the files band by band so "
                          "memory holds a few bands, not the image. Automatic when the image would not fit "
                          "in memory, and always for a Zarr store (x.zarr), in or out."),
        click.option("--tiff-tile", type=TiffTileType(), default=None, metavar="N",
                     help="A TIFF OUTPUT written in bands: N x N tiles (a multiple of 16).  [default: strips]"),
        click.option("--tiff-compression", type=click.Choice(["none", "deflate", "lzw", "zstd", "jpeg",
                                                              "packbits"]), default=None,
                     help="A TIFF OUTPUT written in bands: compress its tiles (256 x 256 unless --tiff-tile)."),
        click.option("--scheduler", default=None, metavar="ADDRESS",
                     help="Run on a Dask cluster: tcp://HOST:PORT or a scheduler file. Folders go "
                          "file by file, a .npy or TIFF INPUT band by band; workers must see the same paths."),
        click.option("--scheduler-timeout", type=FiniteFloat(min=0.1, max=86400.0), default=10.0,
                     show_default=True, help="Seconds to wait for the scheduler before giving up."),
    ]
    return functools.reduce(lambda g, o: o(g), reversed(options), f)


def picture_options(f):
    """--no-auto-orient, --frame, --linear (how a picture INPUT is read and filtered)."""
    options = [
        click.option("--linear", is_flag=True,
                     help="Filter in linear light: values decoded to linear (the ICC profile's curve, else "
                          "sRGB's), filtered, encoded back (alpha unaffected). Suits blurs and sharpening."),
        click.option("--frame", type=whole_range(0), default=None, metavar="N",
                     help="Filter only frame N (0-based) of an animated or multi-page INPUT.  "
                          "[default: every frame, into a gif, webp, png or tif OUTPUT]"),
        click.option("--auto-orient/--no-auto-orient", "auto_orient", default=True, show_default=True,
                     help="Turn the picture upright from its EXIF orientation before filtering (the "
                          "output's tag then says 1); --no-auto-orient keeps the stored pixels and tag."),
    ]
    return functools.reduce(lambda g, o: o(g), reversed(options), f)


def input_options(f):
    return click.option("--max-pixels", type=whole_range(1, 2**62), default=None, envvar="KERNELCLI_MAX_PIXELS",
                        show_envvar=True, help="Refuse images with more pixels than this (default 178956970).")(f)


#: Options that take their default from the environment (click's envvar):
#: set once, e.g. in a shell profile; an option on the command line wins.
ENVIRONMENT = ("KERNELCLI_JOBS", "KERNELCLI_QUALITY", "KERNELCLI_PNG_LEVEL", "KERNELCLI_MAX_PIXELS")


def from_command_line(ctx, name: str, value):
    """``value`` if the option was given on the command line (or is its
    default), None when it came from the environment: a default set once
    must not turn a single-file run into a usage error."""
    from click.core import ParameterSource

    return None if ctx.get_parameter_source(name) == ParameterSource.ENVIRONMENT else value


# --------------------------------------------------------------------------
# commands

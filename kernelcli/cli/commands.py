"""The ``kernelcli`` command: parse, call the library, report errors in one line.

No numeric code lives here. Library errors (:class:`kernelcli.errors.KernelcliError`)
become ``kernelcli: error: ...`` on stderr with exit status 1 (processing) or 2
(usage); anything unexpected is reported the same way unless ``--debug`` (or
``KERNELCLI_DEBUG=1``) asks for the traceback. Ctrl-C exits with 130.
"""


from __future__ import annotations

import contextlib
import os
import sys

import click

from .. import _process
from .._process import say
from ..errors import KernelcliError
from . import many as many_run
from .base import CONTEXT, KernelcliGroup, MatrixArgsCommand, emit, note
from .many import many_options
from .options import (COLORMAPS, activation_option, batch_options, conv_options, from_command_line, input_options,
                      output_options, picture_options, scale_options, stage_options)
from .params import ActivationType, FiniteFloat, KernelSpec, PairType, PaddingType, whole_range

@click.group(cls=KernelcliGroup, context_settings=CONTEXT)
@click.version_option(None, "--version", "-V", package_name="kernelcli", message="kernelcli %(version)s")
@click.option("--debug", is_flag=True, envvar="KERNELCLI_DEBUG",
              help="Show the Python traceback when something fails (for bug reports).")
@click.option("--quiet", "-q", is_flag=True, help="Do not print notes on stderr.")
@click.pass_context
def cli(ctx, debug, quiet):
    """Apply convolution kernels, ReLU and pooling to images.

    \b
      kernelcli apply sharpen in.png out.png
      kernelcli apply edge in.jpg edges.png --relu --pool max
      kernelcli conv edge in.png | kernelcli relu | kernelcli pool max > out.npy
      kernelcli conv edge in.png | kernelcli activate tanh:1/255 > out.npy
      kernelcli explain "1,0,1;0,1,0;1,0,1" samples/example-5x5.npy
      kernelcli explain "1,0,1;0,1,0;1,0,1" samples/example-5x5.npy --animate conv.gif
      kernelcli kernels            list the named kernels
      kernelcli kernels show box   print a kernel's matrix (--image k.png draws it)

    The engine computes cross-correlation (the kernel is not flipped, as in
    ConvNets); --flip gives true convolution.
    """
    ctx.obj = {"quiet": quiet}


def _stage(ctx, input, output, stage, fmt, scaling, offset, colormap, quality, png_level, depth, max_pixels):
    """Run one stage (stages.Relu, stages.Activation or stages.Pool) from INPUT to OUTPUT."""
    from ..run import files
    from ..io import inputs

    spec = _output_spec(fmt, scaling, offset, colormap, quality, png_level, depth)
    note(ctx.obj["quiet"], files.run_stage(input, output, stage, spec, max_pixels or inputs.DEFAULT_MAX_PIXELS))


@cli.command(context_settings=CONTEXT)
@click.argument("kernel", type=KernelSpec(bank=True))
@click.argument("paths", metavar="INPUT... [OUTPUT]", nargs=-1, type=click.Path(allow_dash=True))
@conv_options
@stage_options
@output_options
@input_options
@picture_options
@batch_options
@many_options
@scale_options
@click.pass_context
def apply(ctx, kernel, paths, stride, padding, pad_mode, cval, origin, dilation, flip, normalize, gray,
          alpha, rotate, rotations, combine, relu, activation, pool, pool_size, pool_stride, fmt, scaling, offset,
          colormap, quality, png_level, depth, max_pixels, auto_orient, frame, linear, recursive, pattern, jobs,
          skip_existing, quiet, many, tile_rows, tiff_tile, tiff_compression, scheduler, scheduler_timeout):
    """Filter INPUT with KERNEL and write OUTPUT (conv, then --relu or --activation, then --pool).

    \b
    KERNEL is a name (kernelcli kernels), a sized form (box:5, gaussian:1.5),
    a file (.txt, .npy, libvips .mat), an inline matrix ("1,0,1;0,1,0;1,0,1"),
    an ImageMagick string ("3x3: 0,-1,0 -1,5,-1 0,-1,0"), or several kernels
    separated by commas (a filter bank: one output channel per kernel; sobel,
    scharr, prewitt and kirsch name banks). --combine magnitude makes one
    edge map of a bank: kernelcli apply sobel in.jpg edges.png --combine magnitude

    INPUT is an image (png, jpg, tif, bmp, webp, gif, avif...) or .npy array, or - for
    stdin. OUTPUT's extension chooses the format (- is stdout: .npy unless
    --format). Pixels keep their mode and bit depth.

    INPUT may be a folder: then OUTPUT is a folder too (created if missing),
    every image in it is processed on all cores, mirrored by relative path,
    in its own format unless --format says otherwise.

    \b
    Several inputs (files and folders) go into one folder with -o DIR:
      kernelcli apply sharpen *.jpg -o out/
      find . -name '*.png' -print0 | kernelcli apply edge --files-from - -0 -o edges/
      kernelcli apply sharpen *.jpg --suffix -sharpen     (photo-sharpen.jpg beside photo.jpg)

    A .npy, TIFF, PNG or JPEG INPUT too large for memory is processed in bands
    of rows into a .npy, TIFF, PNG or JPEG OUTPUT (see --tile-rows), and a Zarr
    store (x.zarr, in or out) always is; --scheduler runs folders and such
    bands on a Dask cluster.
    """
    from .. import stages
    from ..run import files

    ctx.obj["quiet"] = ctx.obj["quiet"] or quiet
    if pool is None and (pool_size or pool_stride):
        raise click.UsageError("--pool-size and --pool-stride need --pool max|avg|sum")
    inputs, output, batch_run = _paths(ctx, paths, many, False, recursive, pattern, jobs, skip_existing)
    input = inputs[0]
    conv, notes = stages.make_conv(kernel, stride, padding, pad_mode, dilation, flip, normalize, combine, cval,
                                   origin, rotate, rotations)
    note(ctx.obj["quiet"], notes)
    stage_pool = stages.Pool(pool, pool_size or 2, pool_stride) if pool else None
    run = stages.Stages(conv, _activation(relu, activation), stage_pool, gray, alpha, linear)
    _small_values_note(ctx, activation, output, fmt, scaling, colormap, depth)
    out = _output_spec(fmt, scaling, offset, colormap, quality, png_level, depth)
    reading = _read_spec(auto_orient, frame)
    if batch_run:
        if tile_rows:
            raise click.UsageError("--tile-rows needs a .npy, TIFF, PNG or JPEG file INPUT, not a folder or several inputs")
        _run_many(ctx, inputs, output, many, run, out, max_pixels, reading, recursive, pattern, jobs,
                  skip_existing, scheduler, scheduler_timeout)
        return
    from ..run.choose import in_bands_wanted

    in_bands = (tile_rows, scheduler, max_pixels, (linear, colormap, depth, frame, auto_orient))
    source = in_bands_wanted(input, output, fmt, *in_bands)
    if source:
        _run_tiled(ctx, input, output, fmt, run, out, tile_rows, scheduler, scheduler_timeout, max_pixels,
                   tiff_tile, tiff_compression, source)
        return
    if tiff_tile or tiff_compression:
        raise click.UsageError("--tiff-tile and --tiff-compression are for a TIFF OUTPUT written in bands "
                               "(with --tile-rows)")
    _, notes = files.apply_file(input, output, run, out, max_pixels, reading=reading)
    note(ctx.obj["quiet"], notes)


def _paths(ctx, paths, many, default_stdio, recursive, pattern, jobs, skip_existing):
    """``(inputs, output, batch_run)`` of apply and conv: ``batch_run`` for a
    folder, several inputs, --dry-run or --json (:func:`_run_many`); the
    folder options are refused for a single file."""
    inputs, output = many_run.split(paths, many, default_stdio=default_stdio)
    from ..io.zarr_store import is_zarr_store

    is_folder = inputs[0] != "-" and os.path.isdir(inputs[0]) and not is_zarr_store(inputs[0])
    batch_run = is_folder or output is None or many.dry_run or many.as_json
    if not batch_run and (recursive or pattern or from_command_line(ctx, "jobs", jobs) or skip_existing):
        raise click.UsageError("--recursive, --glob, --jobs and --skip-existing need a folder INPUT "
                               "or several inputs (-o DIR)")
    return inputs, output, batch_run


def _run_tiled(ctx, input, output, fmt, run, out, tile_rows, scheduler, scheduler_timeout, max_pixels, tiff_tile,
               tiff_compression, source=None):
    from ..run import tiled
    from ..io import encode, inputs

    if output == "-" or not tiled.band_output(output, fmt):
        raise click.UsageError(f"a picture or array processed in bands is written as a .npy, TIFF, PNG, JPEG "
                               f"or Zarr file; OUTPUT must be one, not {output!r}")
    with _cluster(ctx, scheduler, scheduler_timeout) as client:
        report = tiled.run(input, output, run, tile_rows=None if tile_rows == "auto" else tile_rows,
                           client=client, progress=not ctx.obj["quiet"] and sys.stderr.isatty(),
                           output=out, max_pixels=max_pixels or inputs.DEFAULT_MAX_PIXELS,
                           tiff_tile=tiff_tile, tiff_compression=tiff_compression,
                           source=source if source is not True else None)
    note(ctx.obj["quiet"], report.notes)
    if not ctx.obj["quiet"]:
        where = "on the cluster" if client is not None else "on local threads"
        say(f"kernelcli: {report.bands} bands of {report.rows_per_band} rows {where}, "
            f"{'x'.join(map(str, report.shape))} written in {report.seconds:.1f} s")


def _run_many(ctx, inputs, output, many, run, out, max_pixels, reading, recursive, pattern, jobs, skip_existing,
              scheduler=None, scheduler_timeout=10.0):
    """A folder, several inputs, or one file with --dry-run or --json (cli/many.py)."""
    from ..run import batch

    if out.fmt:
        from ..io.encode import format_for

        format_for("-", out.fmt)  # an unknown --format is a usage error before any work
    settings = batch.Settings(run, out, max_pixels, reading)
    with _cluster(ctx, None if many.dry_run else scheduler, scheduler_timeout) as client:
        many_run.run(ctx, inputs, output, many, settings, run.conv.kernels, recursive=recursive,
                     pattern=pattern, jobs=_workers(ctx, jobs), skip_existing=skip_existing, client=client)


def _activation(relu, activation):
    """``--relu`` and ``--activation`` as the stages take them (False, True or an Activation)."""
    if relu and activation is not None and activation.kind != "relu":
        raise click.UsageError(f"--relu and --activation {activation} ask for two activations; give one")
    if activation is None or activation.kind == "relu":
        return relu or activation is not None  # plain ReLU: the stages' own, same numbers
    return activation


def _small_values_note(ctx, activation, output, fmt, scaling, colormap, depth) -> None:
    """A note when tanh or sigmoid values (within -1..1) go into a picture of
    integer samples as they are (float samples keep them)."""
    if (activation is None or activation.kind not in ("tanh", "sigmoid") or scaling != "clip"
            or colormap != "gray" or depth == "float"):
        return
    from ..io import encode

    try:
        picture = (encode.format_for(output, fmt) not in ("NPY", "EXR")
                   if output not in ("-", None) or fmt else False)
    except KernelcliError:  # an unknown format is reported where it is used
        return
    if picture:
        note(ctx.obj["quiet"], [f"{activation.kind} gives values within -1..1, which round to the pixels 0 and 1; "
                                "use --scaling stretch or --colormap, or write .npy"])


def _output_spec(fmt, scaling, offset, colormap, quality, png_level, depth):
    from ..io.encode import OutputSpec

    return OutputSpec(fmt, scaling, offset, quality, png_level, colormap, depth)


def _read_spec(auto_orient, frame):
    from ..io.inputs import ReadSpec

    return ReadSpec(auto_orient, frame)


def _workers(ctx, jobs):
    """``--jobs``, lowered with a note to what the cores and memory allow (config.max_workers)."""
    from .. import config

    most = config.max_workers()
    if jobs is not None and jobs > most:
        note(ctx.obj["quiet"], [f"--jobs {jobs} is more than {config.cpus()} cores and the available memory "
                                f"can use; running {most} worker processes"])
        return most
    return jobs


@contextlib.contextmanager
def _cluster(ctx, scheduler, timeout):
    """A Dask client for ``--scheduler`` (None without it), closed afterwards."""
    if not scheduler:
        yield None
        return
    from ..run import cluster

    client = cluster.connect(scheduler, timeout, debug=bool(ctx.find_root().params.get("debug")))
    try:
        yield client
    finally:
        cluster.close(client)


@cli.command(context_settings=CONTEXT)
@click.argument("kernel", type=KernelSpec(bank=True))
@click.argument("paths", metavar="[INPUT...] [OUTPUT]", nargs=-1, type=click.Path(allow_dash=True))
@conv_options
@activation_option
@output_options
@input_options
@batch_options
@many_options
@picture_options
@click.pass_context
def conv(ctx, kernel, paths, stride, padding, pad_mode, cval, origin, dilation, flip, normalize, gray,
         alpha, rotate, rotations, combine, activation, fmt, scaling, offset, colormap, quality, png_level, depth,
         max_pixels, auto_orient, frame, linear, recursive, pattern, jobs, skip_existing, quiet, many):
    """Convolve INPUT with KERNEL: the conv stage of a pipeline.

    \b
      kernelcli conv edge in.png | kernelcli relu | kernelcli pool max > out.npy
      kernelcli conv edge,sobel-x,sobel-y in.png maps.npy     (a filter bank)
      kernelcli conv edge *.png -o maps/ --format npy          (several inputs)

    INPUT and OUTPUT default to - (stdin, stdout). Between commands the data
    is a lossless float32 .npy stream that also carries the picture's mode
    and bit depth; give OUTPUT a picture extension or --format to end in one.
    KERNEL takes the same forms as in apply; commas make a filter bank.
    Folders and several inputs go into a folder with -o DIR, as in apply.
    --activation runs an activation on the feature maps (as kernelcli activate).
    """
    from .. import stages
    from ..run import files

    ctx.obj["quiet"] = ctx.obj["quiet"] or quiet
    inputs, output, batch_run = _paths(ctx, paths, many, True, recursive, pattern, jobs, skip_existing)
    stage, notes = stages.make_conv(kernel, stride, padding, pad_mode, dilation, flip, normalize, combine, cval,
                                    origin, rotate, rotations)
    note(ctx.obj["quiet"], notes)
    run = stages.Stages(stage, _activation(False, activation), gray=gray, alpha=alpha, linear=linear)
    _small_values_note(ctx, activation, output, fmt, scaling, colormap, depth)
    out = _output_spec(fmt, scaling, offset, colormap, quality, png_level, depth)
    reading = _read_spec(auto_orient, frame)
    if batch_run:
        _run_many(ctx, inputs, output, many, run, out, max_pixels, reading, recursive, pattern, jobs,
                  skip_existing)
        return
    # apply with no stage but conv (and the activation): the same numbers, in cache-sized bands
    _, notes = files.apply_file(inputs[0], output, run, out, max_pixels, reading=reading)
    note(ctx.obj["quiet"], notes)


@cli.command(context_settings=CONTEXT)
@click.argument("input", metavar="[INPUT]", default="-")
@click.argument("output", metavar="[OUTPUT]", default="-")
@click.option("--leaky", type=FiniteFloat(), default=0.0, metavar="SLOPE",
              help="Leaky ReLU: multiply negative values by SLOPE instead of setting them to 0.")
@output_options
@input_options
@click.pass_context
def relu(ctx, input, output, leaky, fmt, scaling, offset, colormap, quality, png_level, depth, max_pixels):
    """Set the negative values of INPUT to 0 (alpha passes through).

    INPUT and OUTPUT default to - (stdin, stdout).
    """
    from .. import stages

    _stage(ctx, input, output, stages.Relu(leaky), fmt, scaling, offset, colormap, quality, png_level, depth,
           max_pixels)


@cli.command(context_settings=CONTEXT)
@click.argument("function", metavar="FUNC", type=ActivationType())
@click.argument("input", metavar="[INPUT]", default="-")
@click.argument("output", metavar="[OUTPUT]", default="-")
@output_options
@input_options
@click.pass_context
def activate(ctx, function, input, output, fmt, scaling, offset, colormap, quality, png_level, depth,
             max_pixels):
    """Run an activation FUNC on every value of INPUT (alpha passes through).

    \b
    FUNC is one of:
      relu         max(x, 0)
      leaky:S      x, or S * x where x < 0 (S default 0.01)
      tanh:K       tanh(K * x), in -1..1 (K default 1)
      sigmoid:K    1 / (1 + exp(-K * x)), in 0..1 (K default 1)

    K multiplies the values before the function and may be a fraction:
    tanh:1/255 suits 0-255 pixel values, where a plain tanh or sigmoid is
    saturated almost everywhere. tanh and sigmoid give small values: keep
    them as .npy (the default on stdout), or use --scaling stretch for a
    picture. INPUT and OUTPUT default to - (stdin, stdout).

    \b
      kernelcli conv edge in.png | kernelcli activate tanh:1/255 | kernelcli pool max > out.npy
    """
    _small_values_note(ctx, function, output, fmt, scaling, colormap, depth)
    _stage(ctx, input, output, function, fmt, scaling, offset, colormap, quality, png_level, depth, max_pixels)


@cli.command(context_settings=CONTEXT)
@click.argument("kind", type=click.Choice(["max", "avg", "sum"]))
@click.argument("input", metavar="[INPUT]", default="-")
@click.argument("output", metavar="[OUTPUT]", default="-")
@click.option("--size", type=PairType(), default="2", show_default=True, help="Pooling window: N or NY,NX.")
@click.option("--stride", type=PairType(), default=None,
              help="Step between windows: N or NY,NX.  [default: the size]")
@output_options
@input_options
@click.pass_context
def pool(ctx, kind, input, output, size, stride, fmt, scaling, offset, colormap, quality, png_level, depth,
         max_pixels):
    """Pool INPUT with KIND (max, avg or sum) over windows, without padding.

    Rows and columns left over at the bottom and right are dropped. Alpha is
    pooled with max for max pooling and with avg otherwise. INPUT and OUTPUT
    default to - (stdin, stdout).
    """
    from .. import stages

    _stage(ctx, input, output, stages.Pool(kind, size, stride), fmt, scaling, offset, colormap, quality,
           png_level, depth, max_pixels)


@cli.command(context_settings=CONTEXT)
@click.argument("stack", metavar="STACK")
@click.argument("output", metavar="OUTPUT")
@click.option("--columns", type=whole_range(1), default=None,
              help="Maps per row (default: about square; at most the number of maps).")
@click.option("--scale", "zoom", type=click.IntRange(1, 64), default=None,
              help="Enlarge each map by this factor (default: small maps are enlarged to ~128 px).")
@click.option("--format", "-f", "fmt", default=None, metavar="FORMAT", help="Output format (default: from OUTPUT).")
@click.option("--colormap", type=click.Choice(COLORMAPS), default=None,
              help="Draw each map in colour on its own scale, with a scale bar under it: diverging "
                   "(0 light gray, negatives blue, positives red), heat, or gray.  [default: gray "
                   "tiles without scale bars]")
@input_options
@click.pass_context
def montage(ctx, stack, output, columns, zoom, fmt, colormap, max_pixels):
    """Draw a stack of feature maps as one labelled picture.

    Each channel of STACK (an .npy stream or file, or an image) becomes one
    tile, stretched from its own minimum to its own maximum, labelled with the
    kernel that made it when the stack came from a kernelcli filter bank.
    --colormap draws the tiles in colour with a scale bar each.
    --max-pixels limits the sheet too.
    """
    from .. import montage as draw
    from ..io import encode, inputs

    out_format = encode.format_for(output, fmt)
    max_pixels = max_pixels or inputs.DEFAULT_MAX_PIXELS
    picture = inputs.read_image(stack, max_pixels=max_pixels)
    note(ctx.obj["quiet"], picture.notes)
    sheet = draw.montage(picture, columns=columns, zoom=zoom, max_pixels=max_pixels, colormap=colormap)
    note(ctx.obj["quiet"], encode.write_image(output, sheet, out_format))


@cli.command(context_settings=CONTEXT)
@click.argument("kernel", type=KernelSpec())
@click.argument("input", metavar="INPUT")
@click.option("--stride", "-s", type=PairType(), default="1", show_default=True, help="S or SY,SX.")
@click.option("--padding", "-p", type=PaddingType(), default="valid", show_default=True,
              help="same, valid, full, P or PY,PX.")
@click.option("--border-value", "cval", type=FiniteFloat(), default=0.0, show_default=True, metavar="V",
              help="What the padding holds.")
@click.option("--origin", type=PairType(minimum=0), default=None, metavar="Y,X",
              help="The kernel cell over each output pixel (0-based), with --padding same.")
@click.option("--relu", is_flag=True, help="Show the ReLU step.")
@click.option("--pool", type=click.Choice(["max", "avg", "sum"]), default=None, help="Show a pooling step.")
@click.option("--pool-size", type=PairType(), default="2", show_default=True, help="Pooling window: N or NY,NX.")
@click.option("--pool-stride", type=PairType(), default=None,
              help="Step between pooling windows.  [default: the pool size]")
@click.option("--animate", "animate", default=None, metavar="OUT",
              help="Draw the steps as an animation into OUT (.gif, .png for animated PNG, or .webp) "
                   "instead of printing them.")
def explain(kernel, input, stride, padding, cval, origin, relu, pool, pool_size, pool_stride, animate):
    """Show the arithmetic of a convolution on a small INPUT, step by step.

    INPUT is an inline matrix ("1,1,1,0,0;0,1,1,1,0;...") or a small .npy or
    gray image (up to 16x16, 32x32 with its padding). Prints the padded input, every window's
    products and sum, the feature map with the output-size arithmetic, then
    the ReLU and pooling steps when asked.

    --animate OUT draws the same numbers instead: the kernel's window moving
    over the padded input, its products and sum, the feature map filling in,
    then the ReLU and pooling steps.
    """
    from .. import explain as show

    if animate is None:
        emit(show.explain(kernel, input, stride, padding, relu, pool, pool_size, pool_stride, cval, origin))
        return
    from ..figures import animation
    from ..io.animation import animation_format, write_animation

    animation_format(animate)  # a wrong name is refused before any work
    walk = show.walkthrough(kernel, input, stride, padding, relu, pool, pool_size, pool_stride, cval, origin)
    write_animation(animate, animation.frames(walk))


@cli.group(context_settings=CONTEXT, invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="List the kernels as JSON (names, sizes, scales, descriptions).")
@click.pass_context
def kernels(ctx, as_json):
    """List the named kernels (kernelcli kernels show NAME prints one)."""
    if ctx.invoked_subcommand is None:
        from ..kernels import catalogue, catalogue_records

        if as_json:
            emit(many_run.to_json(catalogue_records()))
            return
        found = catalogue()
        width = max(len(name) for name, *_ in found)
        emit("\n".join(f"{name.ljust(width)}  {f'{rows}x{cols}':>5}  {description}"
                       for name, rows, cols, description in found))
        emit("\nSized forms: box:N, box:ROWS,COLS, gaussian:SIGMA, gaussian:SIGMA,SIZE, log:SIGMA, dog:S1,S2, "
             "unsharp:RADIUS[,AMOUNT[,THRESHOLD]], sep:V1,V2,... [scale:S]")
        from ..kernels import BANKS

        emit("Filter banks: " + "; ".join(f"{name} = {','.join(kernels)}" for name, kernels in BANKS.items()))


@kernels.command("show", cls=MatrixArgsCommand, context_settings=CONTEXT)
@click.argument("kernel", type=KernelSpec(bank=True))
@click.option("--json", "as_json", is_flag=True,
              help="Print the kernel as JSON (values, scale, offset, weights; a bank as a list).")
@click.option("--image", "image", default=None, metavar="OUT",
              help="Draw the kernel (or each kernel of a bank) as a grid of cells coloured by weight "
                   "(blue negative, gray 0, red positive), with the values written in cells large "
                   "enough, into the picture OUT (png, jpg, webp...).")
@click.option("--columns", type=whole_range(1), default=None,
              help="--image: kernels per row (default: up to 4).")
@click.pass_context
def kernels_show(ctx, kernel, as_json, image, columns):
    """Print KERNEL's matrix, scale and offset (any kernel spec works; commas
    make a bank, printed kernel by kernel).

    \b
      kernelcli kernels show curve-detector --image curve.png
      kernelcli kernels show edge,sobel-x,sobel-y,sharpen --image bank.png
    """
    if columns is not None and image is None:
        raise click.UsageError("--columns goes with --image")
    if as_json:
        if image is not None:
            raise click.UsageError("--json prints the kernel; --image draws it: give one")
        from ..kernels import kernel_record

        records = [kernel_record(k) for k in kernel]
        emit(many_run.to_json(records[0] if len(records) == 1 else records))
        return
    if image is None:
        emit("\n\n".join(k.format() for k in kernel))
        return
    from ..figures import kernel_sheet
    from ..io import encode

    out_format = encode.format_for(image)
    if out_format == "NPY":
        raise click.UsageError(f"--image writes a picture (png, jpg, webp...), not {image!r}")
    note(ctx.obj["quiet"], encode.write_image(image, kernel_sheet.kernel_sheet(kernel, columns), out_format))


def main(argv=None):
    """Console-script entry point."""
    _process.command_process(argv)
    try:
        cli.main(args=argv, prog_name="kernelcli")
    except SystemExit as done:
        if argv is None:  # this process is the command's own: no caller to return to
            raise SystemExit(_process.exit_now(done.code)) from None
        raise


from .info import info  # noqa: E402  (a command in its own module, added to the group)

cli.add_command(info)

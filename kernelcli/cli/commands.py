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
from pathlib import Path

import click

from .. import _process
from .._process import say
from ..errors import KernelcliError
from .base import CONTEXT, KernelcliGroup, MatrixArgsCommand, emit, note
from .options import batch_options, conv_options, input_options, output_options, scale_options, stage_options
from .params import FiniteFloat, KernelSpec, PairType, PaddingType, whole_range

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
      kernelcli explain "1,0,1;0,1,0;1,0,1" samples/example-5x5.npy
      kernelcli kernels            list the named kernels
      kernelcli kernels show box   print a kernel's matrix

    The engine computes cross-correlation (the kernel is not flipped, as in
    ConvNets); --flip gives true convolution.
    """
    ctx.obj = {"quiet": quiet}


def _stage(ctx, input, output, stage, fmt, scaling, offset, quality, png_level, max_pixels):
    """Run one stage (stages.Relu or stages.Pool) from INPUT to OUTPUT."""
    from ..run import files
    from ..io import inputs

    note(ctx.obj["quiet"], files.run_stage(input, output, stage, _output_spec(fmt, scaling, offset, quality,
                                                                              png_level),
                                           max_pixels or inputs.DEFAULT_MAX_PIXELS))


@cli.command(context_settings=CONTEXT)
@click.argument("kernel", type=KernelSpec(bank=True))
@click.argument("input", metavar="INPUT")
@click.argument("output", metavar="OUTPUT")
@conv_options
@stage_options
@output_options
@input_options
@batch_options
@scale_options
@click.pass_context
def apply(ctx, kernel, input, output, stride, padding, pad_mode, cval, origin, dilation, flip, normalize, gray,
          alpha, rotate, rotations, combine, relu, pool, pool_size, pool_stride, fmt, scaling, offset, quality,
          png_level, max_pixels, recursive, pattern, jobs, skip_existing, quiet, tile_rows, tiff_tile, tiff_compression,
          scheduler, scheduler_timeout):
    """Filter INPUT with KERNEL and write OUTPUT (conv, then --relu, then --pool).

    \b
    KERNEL is a name (kernelcli kernels), a sized form (box:5, gaussian:1.5),
    a file (.txt, .npy, libvips .mat), an inline matrix ("1,0,1;0,1,0;1,0,1"),
    an ImageMagick string ("3x3: 0,-1,0 -1,5,-1 0,-1,0"), or several kernels
    separated by commas (a filter bank: one output channel per kernel; sobel,
    scharr, prewitt and kirsch name banks). --combine magnitude makes one
    edge map of a bank: kernelcli apply sobel in.jpg edges.png --combine magnitude

    INPUT is an image (png, jpg, tif, bmp, webp...) or .npy array, or - for
    stdin. OUTPUT's extension chooses the format (- is stdout: .npy unless
    --format). Pixels keep their mode and bit depth.

    INPUT may be a folder: then OUTPUT is a folder too (created if missing),
    every image in it is processed on all cores, mirrored by relative path,
    in its own format unless --format says otherwise.

    A .npy or TIFF INPUT too large for memory is processed in bands of rows
    into a .npy or TIFF OUTPUT (see --tile-rows); --scheduler runs folders and
    such bands on a Dask cluster.
    """
    from .. import stages
    from ..run import files

    ctx.obj["quiet"] = ctx.obj["quiet"] or quiet
    if pool is None and (pool_size or pool_stride):
        raise click.UsageError("--pool-size and --pool-stride need --pool max|avg|sum")
    is_folder = input != "-" and os.path.isdir(input)
    if not is_folder and (recursive or pattern or jobs or skip_existing):
        raise click.UsageError("--recursive, --glob, --jobs and --skip-existing need a folder INPUT")
    conv, notes = stages.make_conv(kernel, stride, padding, pad_mode, dilation, flip, normalize, combine, cval,
                                   origin, rotate, rotations)
    note(ctx.obj["quiet"], notes)
    stage_pool = stages.Pool(pool, pool_size or 2, pool_stride) if pool else None
    run = stages.Stages(conv, relu, stage_pool, gray, alpha)
    out = _output_spec(fmt, scaling, offset, quality, png_level)
    if is_folder:
        from ..run import batch

        jobs = _workers(ctx, jobs)
        if tile_rows:
            raise click.UsageError("--tile-rows needs a .npy or TIFF file INPUT, not a folder")
        settings = batch.Settings(run, out, max_pixels)
        with _cluster(ctx, scheduler, scheduler_timeout) as client:
            _run_folder(ctx, batch, input, output, settings, recursive, pattern, jobs, skip_existing, client)
        return
    if _tiled_run_wanted(input, output, fmt, tile_rows, scheduler, max_pixels):
        from ..run import tiled
        from ..io import encode

        if output == "-" or encode.format_for(output, fmt) not in tiled.BAND_FORMATS:
            raise click.UsageError(f"a picture or array processed in bands is written as a .npy, TIFF or PNG "
                                   f"file; OUTPUT must be one, not {output!r}")
        with _cluster(ctx, scheduler, scheduler_timeout) as client:
            report = tiled.run(input, output, run, tile_rows=None if tile_rows == "auto" else tile_rows,
                               client=client, progress=not ctx.obj["quiet"] and sys.stderr.isatty(),
                               output=out, max_pixels=max_pixels or _default_max_pixels(),
                               tiff_tile=tiff_tile, tiff_compression=tiff_compression)
        note(ctx.obj["quiet"], report.notes)
        if not ctx.obj["quiet"]:
            where = "on the cluster" if client is not None else "on local threads"
            say(f"kernelcli: {report.bands} bands of {report.rows_per_band} rows {where}, "
                f"{'x'.join(map(str, report.shape))} written in {report.seconds:.1f} s")
        return
    if tiff_tile or tiff_compression:
        raise click.UsageError("--tiff-tile and --tiff-compression are for a TIFF OUTPUT written in bands "
                               "(with --tile-rows)")
    _, notes = files.apply_file(input, output, run, out, max_pixels)
    note(ctx.obj["quiet"], notes)


def _default_max_pixels():
    from ..io import inputs

    return inputs.DEFAULT_MAX_PIXELS


def _output_spec(fmt, scaling, offset, quality, png_level):
    from ..io.encode import OutputSpec

    return OutputSpec(fmt, scaling, offset, quality, png_level)


def _workers(ctx, jobs):
    """``--jobs``, lowered with a note to what the cores and memory allow (config.max_workers)."""
    from .. import config

    most = config.max_workers()
    if jobs is not None and jobs > most:
        note(ctx.obj["quiet"], [f"--jobs {jobs} is more than {config.cpus()} cores and the available memory "
                                f"can use; running {most} worker processes"])
        return most
    return jobs


def _tiled_run_wanted(input, output, fmt, tile_rows, scheduler, max_pixels) -> bool:
    """Bands of rows from a .npy, TIFF or PNG file into a .npy, TIFF or PNG
    file when asked, or when the input is large (tiled.goes_out_of_core)."""
    from ..io import encode, inputs

    kind = None if input == "-" else inputs.band_kind(input)
    if (tile_rows or scheduler) and kind is None:
        raise click.UsageError("--tile-rows and --scheduler need a folder, a .npy, TIFF or PNG file INPUT")
    if kind is None:
        return False
    if tile_rows or scheduler:
        return True
    from ..run import tiled

    if output == "-" or encode.format_for(output, fmt) not in tiled.BAND_FORMATS:
        return False
    try:
        source = tiled.open_source(input, max_pixels or inputs.DEFAULT_MAX_PIXELS)
    except KernelcliError:  # the ordinary reader says what is wrong with it
        return False
    if kind == "png" and encode.format_for(output, fmt) == "NPY":
        return False
    if kind != "npy":
        return tiled.too_big_for_memory(source)
    return encode.format_for(output, fmt) == "NPY" and tiled.goes_out_of_core(source)


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


def _run_folder(ctx, batch, input, output, settings, recursive, pattern, jobs, skip_existing, client=None):
    quiet = ctx.obj["quiet"]
    if settings.output.fmt:
        from ..io.encode import format_for

        format_for("-", settings.output.fmt)  # an unknown --format is a usage error before any work
    outdir = batch.check_output_folder(output, input)

    def report(path, reason):
        message = reason if reason.startswith(path) else f"{path}: {reason}"
        say(f"kernelcli: failed: {message}")

    summary = batch.run(Path(input), outdir, settings, recursive=recursive, pattern=pattern, jobs=jobs,
                        skip_existing=skip_existing, progress=not quiet and sys.stderr.isatty(),
                        report=report, client=client, note=lambda message: note(quiet, [message]))
    if not quiet:
        say(f"kernelcli: {summary.line()}")
    if summary.interrupted:
        raise click.exceptions.Exit(summary.interrupted_status)
    if summary.failed:
        raise click.exceptions.Exit(1)


@cli.command(context_settings=CONTEXT)
@click.argument("kernel", type=KernelSpec(bank=True))
@click.argument("input", metavar="[INPUT]", default="-")
@click.argument("output", metavar="[OUTPUT]", default="-")
@conv_options
@output_options
@input_options
@click.pass_context
def conv(ctx, kernel, input, output, stride, padding, pad_mode, cval, origin, dilation, flip, normalize, gray,
         alpha, rotate, rotations, combine, fmt, scaling, offset, quality, png_level, max_pixels):
    """Convolve INPUT with KERNEL: the conv stage of a pipeline.

    \b
      kernelcli conv edge in.png | kernelcli relu | kernelcli pool max > out.npy
      kernelcli conv edge,sobel-x,sobel-y in.png maps.npy     (a filter bank)

    INPUT and OUTPUT default to - (stdin, stdout). Between commands the data
    is a lossless float32 .npy stream that also carries the picture's mode
    and bit depth; give OUTPUT a picture extension or --format to end in one.
    KERNEL takes the same forms as in apply; commas make a filter bank.
    """
    from .. import stages
    from ..run import files

    stage, notes = stages.make_conv(kernel, stride, padding, pad_mode, dilation, flip, normalize, combine, cval,
                                    origin, rotate, rotations)
    note(ctx.obj["quiet"], notes)
    # apply with no stage but conv: the same numbers, in cache-sized bands
    _, notes = files.apply_file(input, output, stages.Stages(stage, gray=gray, alpha=alpha),
                                _output_spec(fmt, scaling, offset, quality, png_level), max_pixels)
    note(ctx.obj["quiet"], notes)


@cli.command(context_settings=CONTEXT)
@click.argument("input", metavar="[INPUT]", default="-")
@click.argument("output", metavar="[OUTPUT]", default="-")
@click.option("--leaky", type=FiniteFloat(), default=0.0, metavar="SLOPE",
              help="Leaky ReLU: multiply negative values by SLOPE instead of setting them to 0.")
@output_options
@input_options
@click.pass_context
def relu(ctx, input, output, leaky, fmt, scaling, offset, quality, png_level, max_pixels):
    """Set the negative values of INPUT to 0 (alpha passes through).

    INPUT and OUTPUT default to - (stdin, stdout).
    """
    from .. import stages

    _stage(ctx, input, output, stages.Relu(leaky), fmt, scaling, offset, quality, png_level, max_pixels)


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
def pool(ctx, kind, input, output, size, stride, fmt, scaling, offset, quality, png_level, max_pixels):
    """Pool INPUT with KIND (max, avg or sum) over windows, without padding.

    Rows and columns left over at the bottom and right are dropped. Alpha is
    pooled with max for max pooling and with avg otherwise. INPUT and OUTPUT
    default to - (stdin, stdout).
    """
    from .. import stages

    _stage(ctx, input, output, stages.Pool(kind, size, stride), fmt, scaling, offset, quality, png_level,
           max_pixels)


@cli.command(context_settings=CONTEXT)
@click.argument("stack", metavar="STACK")
@click.argument("output", metavar="OUTPUT")
@click.option("--columns", type=whole_range(1), default=None,
              help="Maps per row (default: about square; at most the number of maps).")
@click.option("--scale", "zoom", type=click.IntRange(1, 64), default=None,
              help="Enlarge each map by this factor (default: small maps are enlarged to ~128 px).")
@click.option("--format", "-f", "fmt", default=None, metavar="FORMAT", help="Output format (default: from OUTPUT).")
@input_options
@click.pass_context
def montage(ctx, stack, output, columns, zoom, fmt, max_pixels):
    """Draw a stack of feature maps as one labelled picture.

    Each channel of STACK (an .npy stream or file, or an image) becomes one
    tile, stretched from its own minimum to its own maximum, labelled with the
    kernel that made it when the stack came from a kernelcli filter bank.
    --max-pixels limits the sheet too.
    """
    from .. import montage as draw
    from ..io import encode, inputs

    out_format = encode.format_for(output, fmt)
    max_pixels = max_pixels or inputs.DEFAULT_MAX_PIXELS
    picture = inputs.read_image(stack, max_pixels=max_pixels)
    note(ctx.obj["quiet"], picture.notes)
    sheet = draw.montage(picture, columns=columns, zoom=zoom, max_pixels=max_pixels)
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
def explain(kernel, input, stride, padding, cval, origin, relu, pool, pool_size, pool_stride):
    """Show the arithmetic of a convolution on a small INPUT, step by step.

    INPUT is an inline matrix ("1,1,1,0,0;0,1,1,1,0;...") or a small .npy or
    gray image (up to 16x16, 32x32 with its padding). Prints the padded input, every window's
    products and sum, the feature map with the output-size arithmetic, then
    the ReLU and pooling steps when asked.
    """
    from .. import explain as show

    emit(show.explain(kernel, input, stride, padding, relu, pool, pool_size, pool_stride, cval, origin))


@cli.group(context_settings=CONTEXT, invoke_without_command=True)
@click.pass_context
def kernels(ctx):
    """List the named kernels (kernelcli kernels show NAME prints one)."""
    if ctx.invoked_subcommand is None:
        from ..kernels import catalogue

        found = catalogue()
        width = max(len(name) for name, *_ in found)
        emit("\n".join(f"{name.ljust(width)}  {f'{rows}x{cols}':>5}  {description}"
                       for name, rows, cols, description in found))
        emit("\nSized forms: box:N, box:ROWS,COLS, gaussian:SIGMA, gaussian:SIGMA,SIZE, log:SIGMA, dog:S1,S2, "
             "unsharp:RADIUS[,AMOUNT[,THRESHOLD]]")
        from ..kernels import BANKS

        emit("Filter banks: " + "; ".join(f"{name} = {','.join(kernels)}" for name, kernels in BANKS.items()))


@kernels.command("show", cls=MatrixArgsCommand, context_settings=CONTEXT)
@click.argument("kernel", type=KernelSpec())
def kernels_show(kernel):
    """Print KERNEL's matrix, scale and offset (any kernel spec works)."""
    emit(kernel.format())


def main(argv=None):
    """Console-script entry point."""
    _process.command_process(argv)
    try:
        cli.main(args=argv, prog_name="kernelcli")
    except SystemExit as done:
        if argv is None:  # this process is the command's own: no caller to return to
            raise SystemExit(_process.exit_now(done.code)) from None
        raise

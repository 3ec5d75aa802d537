"""Runs over several inputs: ``-o DIR``, ``--files-from``, ``--dry-run``,
``--json``, ``--suffix``, ``--name``, ``--in-place``. This module parses them
and prints; choosing inputs, naming outputs and the run are
:mod:`kernelcli.run.batch` and :mod:`kernelcli.run.naming`."""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from .._process import say
from ..errors import UsageError
from .base import emit, note
from .params import complete_files, complete_folders

#: A --files-from list is read up to this many bytes.
MAX_LIST_BYTES = 256 * 2**20


@dataclass(frozen=True)
class Many:
    """The options of a run over several inputs, as given."""

    output_dir: str | None = None
    files_from: str | None = None
    null: bool = False
    dry_run: bool = False
    as_json: bool = False
    suffix: str | None = None
    name: str | None = None
    in_place: bool = False

    @property
    def several(self) -> bool:
        """Are the positional paths all inputs (not INPUT OUTPUT)?"""
        return bool(self.output_dir is not None or self.files_from is not None or self.suffix is not None
                    or self.name is not None or self.in_place)


_FIELDS = tuple(Many.__dataclass_fields__)


def many_options(f):
    """-o/--output, --files-from, -0/--null, --dry-run, --json, --suffix, --name,
    --in-place: handed to the command as one ``many`` argument (:class:`Many`)."""

    @functools.wraps(f)
    def command(*args, **kwargs):
        kwargs["many"] = Many(**{key: kwargs.pop(key) for key in _FIELDS})
        return f(*args, **kwargs)

    options = [
        click.option("--output", "-o", "output_dir", default=None, metavar="DIR", shell_complete=complete_folders,
                     help="Write the outputs into DIR (created if missing); every path given is an INPUT."),
        click.option("--files-from", default=None, metavar="FILE", shell_complete=complete_files,
                     help="Read more INPUT paths from FILE (- for stdin), one a line."),
        click.option("--null", "-0", "null", is_flag=True,
                     help="--files-from paths are separated by NUL bytes (find -print0, xargs -0)."),
        click.option("--dry-run", is_flag=True,
                     help="Print each input -> output, the output size and what would be skipped; "
                          "write nothing."),
        click.option("--json", "as_json", is_flag=True,
                     help="Print a JSON summary on stdout at the end (and nothing else there)."),
        click.option("--suffix", default=None, metavar="TEXT",
                     help="Name outputs STEM+TEXT+EXT (photo.jpg -> photo-sharpen.jpg with -sharpen), "
                          "beside the input unless -o DIR."),
        click.option("--name", "name", default=None, metavar="TEMPLATE",
                     help="Name outputs by TEMPLATE: {stem}, {ext}, {kernel}, {parent} "
                          "(e.g. '{stem}-{kernel}.{ext}'); beside the input unless -o DIR."),
        click.option("--in-place", is_flag=True,
                     help="Allow outputs to replace their inputs (with no -o, --suffix or --name: "
                          "each input is replaced by its output)."),
    ]
    return functools.reduce(lambda g, o: o(g), reversed(options), command)


def split(paths: tuple, many: Many, default_stdio: bool):
    """``(inputs, output)``: every path an input (``output`` None) for a run
    over several inputs, else the positional ``INPUT [OUTPUT]`` form (``-``
    standing for stdin/stdout where ``default_stdio``)."""
    if many.null and many.files_from is None:
        raise click.UsageError("-0/--null describes a --files-from list; give --files-from too")
    if many.suffix is not None and many.name is not None:
        raise click.UsageError("--suffix and --name both name the outputs; give one")
    if many.several:
        inputs = list(paths) + _read_list(many)
        if not inputs:
            raise click.UsageError("no INPUT given" + (f" (--files-from {many.files_from} lists none)"
                                                       if many.files_from is not None else ""))
        if "-" in inputs:
            raise click.UsageError("- (stdin) is one stream, not a file among several inputs; give paths")
        return inputs, None
    if len(paths) > 2:
        raise click.UsageError(f"{len(paths)} paths given: several INPUTs need -o/--output DIR (or --suffix, "
                               f"--name, --in-place); INPUT OUTPUT takes one input")
    if default_stdio:
        paths = tuple(paths) + ("-",) * (2 - len(paths))
    if len(paths) < 2:
        missing = "OUTPUT" if paths else "INPUT"
        raise click.UsageError(f"Missing argument '{missing}' (or give -o DIR, --suffix or --name)")
    if (many.as_json or many.dry_run) and "-" in paths:
        raise click.UsageError(f"{'--json' if many.as_json else '--dry-run'} needs an INPUT and OUTPUT that "
                               f"are files, not - (stdin or stdout)")
    return [paths[0]], paths[1]


def _read_list(many: Many) -> list:
    from ..run.naming import read_file_list

    if many.files_from is None:
        return []
    if many.files_from == "-":
        if sys.stdin is None or sys.stdin.isatty():
            raise click.UsageError("--files-from -: stdin is a terminal; pipe a list of paths in")
        data = sys.stdin.buffer.read(MAX_LIST_BYTES + 1)
    else:
        try:
            with open(many.files_from, "rb") as f:
                data = f.read(MAX_LIST_BYTES + 1)
        except OSError as e:
            raise UsageError(f"--files-from {many.files_from}: {e.strerror or e}") from None
    if len(data) > MAX_LIST_BYTES:
        raise UsageError(f"--files-from {many.files_from}: more than {MAX_LIST_BYTES >> 20} MB of paths")
    return read_file_list(data, many.null)


def run(ctx, inputs, output, many: Many, settings, kernels, recursive=False, pattern=None, jobs=None,
        skip_existing=False, client=None):
    """Plan the run (and show it, for ``--dry-run``), or run it and print its
    summary: a line on stderr, or JSON on stdout with ``--json``."""
    from ..run import batch
    from ..run.naming import Naming, check_template, kernel_label

    quiet = ctx.obj["quiet"]
    if many.name is not None:
        check_template(many.name)
    outdir = many.output_dir if output is None else output
    if output is not None and Path(inputs[0]).is_dir():
        outdir = batch.check_output_folder(output, inputs[0])
    elif outdir is not None:
        if outdir == "-" or Path(outdir).is_file():
            raise click.UsageError(f"-o/--output takes a folder (created if missing), not {outdir!r}")
        outdir = Path(outdir)
    naming = Naming(outdir, many.suffix, many.name, kernel_label(kernels), batch.format_ext(settings.output.fmt),
                    many.in_place)
    if output is not None and not Path(inputs[0]).is_dir():  # INPUT OUTPUT, for --dry-run or --json
        planned = [batch.Job(Path(inputs[0]), Path(output), skip_existing and Path(output).exists())]
        outdir = None
    else:
        if many.suffix is None and many.name is None and outdir is None and not many.in_place:
            raise click.UsageError("give -o DIR, --suffix or --name for the outputs")
        planned = batch.plan(inputs, naming, settings, recursive=recursive, pattern=pattern,
                             skip_existing=skip_existing, note=lambda message: note(quiet, [message]))
    if many.dry_run:
        return _dry_run(batch.preview(planned, settings), many.as_json, quiet)

    def report(path, reason):
        message = reason if reason.startswith(path) else f"{path}: {reason}"
        say(f"kernelcli: failed: {message}")

    summary = batch.run_jobs(planned, settings, jobs=jobs, progress=not quiet and sys.stderr.isatty(),
                             report=report, client=client, outdir=outdir)
    if many.as_json:
        emit(to_json(summary.as_dict(), indent=2))
    elif not quiet:
        say(f"kernelcli: {summary.line()}")
    if summary.interrupted:
        raise click.exceptions.Exit(summary.interrupted_status)
    if summary.failed:
        raise click.exceptions.Exit(1)


def _dry_run(shown: list, as_json: bool, quiet: bool):
    """Print what a run would do; exit status 1 when an input could not be read."""
    failing = sum(1 for entry in shown if "error" in entry)
    skipping = sum(1 for entry in shown if entry["skip"])
    if as_json:
        emit(to_json({"dry_run": True, "files": shown, "to_write": len(shown) - skipping - failing,
                         "to_skip": skipping, "unreadable": failing}, indent=2))
    else:
        lines = []
        for entry in shown:
            if entry["skip"]:
                what = "skipped (the output exists)"
            elif "error" in entry:
                what = f"cannot be read: {entry['error']}"
            else:
                what = f"{entry['width']}x{entry['height']}"
            lines.append(f"{entry['input']} -> {entry['output']}  {what}")
        emit("\n".join(lines))
        if not quiet:
            say(f"kernelcli: dry run: {len(shown) - skipping - failing} to write, {skipping} to skip, "
                f"{failing} unreadable; nothing written")
    if failing:
        raise click.exceptions.Exit(1)


def to_json(value, indent=2) -> str:
    """``value`` as JSON text (for --json)."""
    import json  # only when asked: a plain run does not load it

    return json.dumps(value, indent=indent)

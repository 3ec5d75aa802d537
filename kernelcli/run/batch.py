"""Whole folders: find the images, spread them over processes, report honestly.

Every file goes through exactly the same code as a single-file ``apply``
(:func:`process_file`), whichever ``jobs`` is. Outputs are written atomically
by :func:`kernelcli.io.sinks.write_atomic`, so an interrupted run leaves complete
files and no temporaries; ``skip_existing`` resumes such a run.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from .. import stopping
from ..errors import ImageWriteError, KernelcliError, UsageError
from ..io.encode import EXTENSIONS, OutputSpec
from ..io.inputs import ReadSpec
from ..io.zarr_store import is_zarr_name, is_zarr_store
from ..stages import Stages
from .naming import READ_ONLY_EXTENSIONS, Naming, refuse_clashes, target_for
from .progress import Progress
from .workers import run_pool

#: Input files are chosen by these extensions (any case): every format kernelcli reads.
INPUT_EXTENSIONS = frozenset(EXTENSIONS) | READ_ONLY_EXTENSIONS
_FORMAT_EXT = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "BMP": ".bmp", "WEBP": ".webp", "NPY": ".npy",
               "AVIF": ".avif", "GIF": ".gif", "HEIF": ".heic", "JXL": ".jxl", "EXR": ".exr"}


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs to process one file (picklable): the same
    bundles as a single file's run."""

    stages: Stages
    output: OutputSpec = OutputSpec()
    max_pixels: int | None = None
    reading: ReadSpec = ReadSpec()


@dataclass
class Summary:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    megapixels: float = 0.0
    seconds: float = 0.0
    interrupted: bool = False
    #: The exit status an interrupted run ends with: 130 (SIGINT), 143 (SIGTERM).
    interrupted_status: int = 130
    failures: list = field(default_factory=list)

    def line(self) -> str:
        rate = self.megapixels / self.seconds if self.seconds > 0 else 0.0
        head = "interrupted: " if self.interrupted else ""
        return (f"{head}{self.done} done, {self.skipped} skipped, {self.failed} failed "
                f"in {self.seconds:.1f} s ({rate:.1f} megapixels/s)")

    def as_dict(self) -> dict:
        """The summary for ``--json``: counts, failures, time and speed."""
        rate = self.megapixels / self.seconds if self.seconds > 0 else 0.0
        return {"done": self.done, "skipped": self.skipped, "failed": self.failed,
                "interrupted": self.interrupted,
                "failures": [{"path": path, "message": reason} for path, reason in self.failures],
                "seconds": round(self.seconds, 3), "megapixels": round(self.megapixels, 3),
                "megapixels_per_second": round(rate, 3)}


@dataclass
class Job:
    """One input file and its output; ``skip`` when ``--skip-existing`` finds the output."""

    source: Path
    target: Path
    skip: bool = False


# --------------------------------------------------------------------------
# choosing files


def find_inputs(indir: Path, outdir: Path, recursive: bool = False, pattern: str | None = None,
                note=None) -> list[Path]:
    """Relative paths of the images under ``indir``, sorted.

    Symlinked folders are followed once (a loop cannot hang the walk); the
    output folder, when it lies inside ``indir``, is never taken as input.
    Only regular files are taken: a FIFO (reading it could wait forever), a
    socket or a device with an image's name is left out, and ``note(message)``
    is called naming it.
    """
    indir = Path(indir)
    out_real = os.path.realpath(outdir)
    seen: set = set()
    found: list[Path] = []
    for root, dirs, files in os.walk(indir, followlinks=True):
        try:
            st = os.stat(root)
        except OSError:
            dirs[:] = []
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen or os.path.realpath(root) == out_real:
            dirs[:] = []
            continue
        seen.add(key)
        dirs.sort()
        stores = [d for d in dirs if is_zarr_store(os.path.join(root, d))]  # each one input, never walked
        if not recursive:
            dirs[:] = []
        else:
            dirs[:] = [d for d in dirs if os.path.realpath(os.path.join(root, d)) != out_real and d not in stores]
        for name in sorted(files + stores):
            if name in stores:
                rel = Path(os.path.relpath(os.path.join(root, name), indir))
                if os.path.realpath(os.path.join(root, name)) != out_real and (
                        not pattern or _matches(rel.as_posix(), name, pattern)):
                    found.append(rel)
                continue
            if Path(name).suffix.lower() not in INPUT_EXTENSIONS:
                continue
            rel = Path(os.path.relpath(os.path.join(root, name), indir))
            if pattern and not _matches(rel.as_posix(), name, pattern):
                continue
            kind = _not_regular(os.path.join(root, name))
            if kind:
                if note is not None:
                    note(f"{Path(indir) / rel}: skipped, a {kind}, not a regular file")
                continue
            found.append(rel)
    return found


def _not_regular(path: str) -> str:
    """What ``path`` is when it is not a regular file ("FIFO", "socket",
    "device"...), else "" (also when it cannot be examined: reading it will say why)."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return ""
    if stat.S_ISREG(mode):
        return ""
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def _matches(rel: str, name: str, pattern: str) -> bool:
    """Shell-style, case-insensitive (camera files are often ``.JPG``), on the
    relative path or on the name alone."""
    pattern = pattern.lower()
    return fnmatch.fnmatchcase(rel.lower(), pattern) or fnmatch.fnmatchcase(name.lower(), pattern)


def output_for(rel: Path, outdir: Path, fmt: str | None) -> Path:
    """``outdir/rel``, with the extension of ``fmt`` when a format is forced
    (``.png`` for a format kernelcli only reads)."""
    return target_for(Path(outdir) / rel, rel, Naming(outdir=Path(outdir), ext=format_ext(fmt)))


def format_ext(fmt: str | None) -> str | None:
    """The extension of a forced output format (None without one)."""
    if not fmt:
        return None
    from ..io.encode import format_for

    return _FORMAT_EXT[format_for("-", fmt)]


def check_output_folder(output: str, input: str | None = None) -> Path:
    """A folder INPUT needs a folder OUTPUT, and not the input folder itself:
    outputs written among the inputs would be taken as inputs by the next run
    (and, with the same format, replace them). The folder is created by
    :func:`run` once there is something to write."""
    path = Path(output)
    if output == "-" or path.is_file() or (not path.exists() and path.suffix.lower() in EXTENSIONS):
        raise UsageError(f"the input is a folder, so OUTPUT must be a folder too, not {output!r}")
    if input is not None and os.path.realpath(output) == os.path.realpath(input):
        raise UsageError(f"OUTPUT {output!r} is the input folder: the outputs would be written among "
                         f"the inputs; choose another folder")
    return path


def _make_folder(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KernelcliError(f"{path}: cannot create the output folder: {e.strerror or e}") from None
    if not path.is_dir():
        raise KernelcliError(f"{path}: cannot create the output folder: it is not a folder")


def _nothing_found(indir: Path, recursive: bool, pattern: str | None) -> KernelcliError:
    if pattern:
        return KernelcliError(f"{indir}: no image matches --glob {pattern!r}"
                              + ("" if recursive else " (subfolders are searched with --recursive)"))
    kinds = ", ".join(sorted(e.lstrip(".") for e in INPUT_EXTENSIONS))
    where = "this folder or its subfolders" if recursive else "this folder"
    return KernelcliError(f"{indir}: no images in {where} ({kinds})"
                          + ("" if recursive else "; subfolders are searched with --recursive"))


# --------------------------------------------------------------------------
# one file (the same code for every job count)


def process_file(src: Path, dst: Path, settings: Settings, threads: int = 1) -> float:
    """Read, filter, write one file; returns its megapixels."""
    from ..io import encode
    from . import files

    to_zarr = is_zarr_name(dst) and not settings.output.fmt
    output = settings.output if to_zarr else replace(settings.output, fmt=settings.output.fmt or encode.format_for(dst))
    missing = [p for p in (dst.parent, *dst.parent.parents) if not p.exists()]
    try:
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # a file in the way, a read-only file system...
            where = e.filename or dst.parent
            raise ImageWriteError(f"cannot create the output folder {where}: {e.strerror or e}") from None
        if is_zarr_store(src) or to_zarr:  # (always in bands)
            from ..io.inputs import DEFAULT_MAX_PIXELS
            from . import tiled

            report = tiled.run(src, dst, settings.stages, threads=threads, output=output,
                               max_pixels=settings.max_pixels or DEFAULT_MAX_PIXELS)
            return report.shape[0] * report.shape[1] / 1e6
        # one thread per file: the worker processes share the cores already
        (h, w), _ = files.apply_file(src, dst, settings.stages, output, settings.max_pixels, threads=threads,
                                      reading=settings.reading)
    except BaseException:
        for folder in missing:  # a failed file leaves no empty folders behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return h * w / 1e6


def run_task(task, threads: int = 1):
    """One file's task ``(source, target, settings)``: ``(source, ok, megapixels, reason)``."""
    src, dst, settings = task
    try:
        return str(src), True, process_file(src, dst, settings, threads), ""
    except KernelcliError as e:
        return str(src), False, 0.0, str(e)
    except MemoryError:
        return str(src), False, 0.0, "not enough memory"
    except Exception as e:  # a bug, but one file must not stop the run
        return str(src), False, 0.0, f"internal error: {type(e).__name__}: {e}"


class Interrupted(KeyboardInterrupt):
    """A signal stopped a folder run; ``status`` is the exit status it asks for
    (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, status: int = 130):
        super().__init__(status)
        self.status = status


# --------------------------------------------------------------------------
# the run


def run(indir: Path, outdir: Path, settings: Settings, recursive=False, pattern=None, jobs=None,
        skip_existing=False, progress=False, report=None, client=None, note=None) -> Summary:
    """Process a folder into ``outdir``, mirrored by relative path
    (:func:`plan` and :func:`run_jobs`)."""
    started = time.monotonic()
    planned = plan([indir], Naming(outdir=Path(outdir), ext=format_ext(settings.output.fmt)), settings,
                   recursive=recursive, pattern=pattern, skip_existing=skip_existing, note=note)
    return run_jobs(planned, settings, jobs=jobs, progress=progress, report=report, client=client,
                    outdir=Path(outdir), started=started)


def plan(inputs, naming: Naming, settings: Settings, recursive=False, pattern=None, skip_existing=False,
         note=None) -> list[Job]:
    """The jobs of a run over ``inputs`` (files and folders), named as
    ``naming`` says; nothing is read or written. A folder gives its images
    (:func:`find_inputs`), mirrored by relative path under the output folder.

    Refused before any work: a folder with no image (or none matching
    ``pattern``), an output folder that is an input folder, two inputs whose
    outputs would have the same name, an output that would replace an input
    (unless ``naming.in_place``), and an output whose format is unknown.
    """
    from ..io.encode import format_for

    found = []
    for given in inputs:
        path = Path(given)
        if not path.is_dir() or is_zarr_store(path):  # a Zarr store is one input
            found.append((path, Path(path.name)))
            continue
        if naming.outdir is not None and os.path.realpath(naming.outdir) == os.path.realpath(path):
            raise UsageError(f"OUTPUT {str(naming.outdir)!r} is the input folder: the outputs would be written "
                             f"among the inputs; choose another folder")
        rels = find_inputs(path, naming.outdir if naming.outdir is not None else Path(os.devnull),
                           recursive, pattern, note=note)
        if not rels:
            raise _nothing_found(path, recursive, pattern)
        found.extend((path / rel, rel) for rel in rels)
    jobs = [Job(src, target_for(src, rel, naming)) for src, rel in found]
    refuse_clashes([(job.source, job.target) for job in jobs], naming.in_place)
    for job in jobs:
        if settings.output.fmt or not is_zarr_name(job.target):
            format_for(job.target, settings.output.fmt)  # an unknown output format: refused before any work
        job.skip = skip_existing and job.target.exists()
    return jobs


def run_jobs(planned: list, settings: Settings, jobs=None, progress=False, report=None, client=None,
             outdir: Path | None = None, started: float | None = None) -> Summary:
    """Process ``planned`` (:func:`plan`): ``report(path, reason)`` is called
    for each failure. With a Dask ``client`` the files are processed on its
    cluster (whose workers must see the same paths) instead of local
    processes. ``outdir`` is created first when given."""
    report = report or (lambda path, reason: None)
    started = time.monotonic() if started is None else started
    summary = Summary()
    if outdir is not None:
        _make_folder(Path(outdir))
    tasks = []
    for job in planned:
        if job.skip:
            summary.skipped += 1
            continue
        tasks.append((job.source, job.target, settings))
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(tasks) or 1))
    bar = Progress(len(tasks), progress)

    def record(result):
        path, ok, mp, reason = result
        if ok:
            summary.done += 1
            summary.megapixels += mp
        else:
            summary.failed += 1
            summary.failures.append((path, reason))
            bar.close()
            report(path, reason)
        bar.update(summary.done + summary.failed)

    try:
        if client is not None:
            with stopping.raising(Interrupted):  # a SIGTERM: stop the cluster's work, then the summary
                _run_cluster(client, tasks, record)
        elif jobs == 1:
            for task in tasks:  # one file alone gets the threads a single-file run has
                record(run_task(task, threads=2 if len(tasks) == 1 else 1))
        else:
            with stopping.raising(Interrupted):  # a SIGTERM: stop the workers, then the summary
                run_pool(tasks, jobs, record)
    except KeyboardInterrupt as e:
        summary.interrupted = True
        summary.interrupted_status = getattr(e, "status", 130)
    bar.close()
    summary.seconds = time.monotonic() - started
    return summary


def preview(planned: list, settings: Settings) -> list[dict]:
    """What a dry run shows of each job: ``input``, ``output``, ``skip`` and
    the output's ``width`` and ``height`` from the input's header (or the
    ``error`` reading it would give). Nothing is written."""
    from ..io.header import describe
    from ..stages import output_size

    shown = []
    for job in planned:
        entry = {"input": str(job.source), "output": str(job.target), "skip": job.skip}
        if not job.skip:
            try:
                facts = describe(job.source)
                height, width = output_size(settings.stages, facts["height"], facts["width"])
                entry.update(width=width, height=height)
            except KernelcliError as e:
                entry["error"] = str(e)
        shown.append(entry)
    return shown


def _run_cluster(client, tasks, record):
    """The same per-file work as local processes, as tasks on a Dask cluster."""
    from distributed import as_completed

    from .cluster import first_line, serial

    futures = {}
    for src, dst, settings in tasks:  # workers have their own working folder
        future = client.submit(serial, run_task, (src.absolute(), dst.absolute(), settings), pure=False)
        futures[future] = (str(src), str(src.absolute()))
    try:
        for future in as_completed(futures, loop=client.loop):
            try:
                _, ok, mp, reason = future.result()
                shown, absolute = futures[future]
                record((shown, ok, mp, reason.replace(absolute, shown)))
            except Exception as e:  # the worker died, the task or the scheduler was lost
                reason = first_line(e)
                if isinstance(future.key, str):
                    reason = reason.replace(future.key, "task")
                record((futures[future][0], False, 0.0, f"the cluster could not run it: {reason}"))
    except KeyboardInterrupt:
        client.cancel(list(futures))
        raise

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
import signal
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from .errors import KernelcliError, UsageError
from .io.encode import EXTENSIONS

#: Input files are chosen by these extensions (any case).
INPUT_EXTENSIONS = frozenset(EXTENSIONS)
_FORMAT_EXT = {"PNG": ".png", "JPEG": ".jpg", "TIFF": ".tif", "BMP": ".bmp", "WEBP": ".webp", "NPY": ".npy"}


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs to process one file (picklable)."""

    conv: object
    relu: bool = False
    pool: object = None
    gray: bool = False
    alpha: str = "keep"
    fmt: str | None = None
    scaling: str = "clip"
    offset: float = 0.0
    quality: int = 92
    max_pixels: int | None = None
    png_level: int = 1


@dataclass
class Summary:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    megapixels: float = 0.0
    seconds: float = 0.0
    interrupted: bool = False
    failures: list = field(default_factory=list)

    def line(self) -> str:
        rate = self.megapixels / self.seconds if self.seconds > 0 else 0.0
        head = "interrupted: " if self.interrupted else ""
        return (f"{head}{self.done} done, {self.skipped} skipped, {self.failed} failed "
                f"in {self.seconds:.1f} s ({rate:.1f} megapixels/s)")


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
        if not recursive:
            dirs[:] = []
        else:
            dirs[:] = [d for d in dirs if os.path.realpath(os.path.join(root, d)) != out_real]
        for name in sorted(files):
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
    """``outdir/rel``, with the extension of ``fmt`` when a format is forced."""
    target = Path(outdir) / rel
    if fmt:
        from .io.encode import format_for

        target = target.with_suffix(_FORMAT_EXT[format_for(target, fmt)])
    return target


def check_output_folder(output: str) -> Path:
    """A folder INPUT needs a folder OUTPUT (created if missing)."""
    path = Path(output)
    if output == "-" or path.is_file() or (not path.exists() and path.suffix.lower() in EXTENSIONS):
        raise UsageError(f"the input is a folder, so OUTPUT must be a folder too, not {output!r}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise KernelcliError(f"{path}: cannot create the output folder: {e.strerror or e}") from None
    return path


# --------------------------------------------------------------------------
# one file (the same code for every job count)


def process_file(src: Path, dst: Path, settings: Settings) -> float:
    """Read, filter, write one file; returns its megapixels."""
    from . import pipeline
    from .io import encode

    fmt = settings.fmt or encode.format_for(dst)
    missing = [p for p in (dst.parent, *dst.parent.parents) if not p.exists()]
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        # one thread per file: the worker processes share the cores already
        (h, w), _ = pipeline.apply_file(src, dst, settings.conv, settings.relu, settings.pool, settings.gray,
                                        settings.alpha, fmt, settings.scaling, settings.offset, settings.quality,
                                        settings.png_level, settings.max_pixels, threads=1)
    except BaseException:
        for folder in missing:  # a failed file leaves no empty folders behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    return h * w / 1e6


def _work(task):
    src, dst, settings = task
    try:
        return str(src), True, process_file(src, dst, settings), ""
    except KernelcliError as e:
        return str(src), False, 0.0, str(e)
    except MemoryError:
        return str(src), False, 0.0, "not enough memory"
    except Exception as e:  # a bug, but one file must not stop the run
        return str(src), False, 0.0, f"internal error: {type(e).__name__}: {e}"


def _worker_init():
    # The parent decides what Ctrl-C means; a worker told to stop (SIGTERM)
    # unwinds, so write_atomic removes its temporary file.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_exit)
    from .cli import reuse_freed_memory, skip_numba_blas

    skip_numba_blas()
    reuse_freed_memory()
    try:
        import numba

        numba.set_num_threads(1)  # the processes share the cores already
    except Exception:
        pass


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)


# --------------------------------------------------------------------------
# the run


class Progress:
    """A one-line progress display on stderr (only when it is a terminal)."""

    def __init__(self, total: int, enabled: bool, unit: str = "files"):
        self.total, self.enabled, self.unit, self.start = total, enabled, unit, time.monotonic()

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        left = (self.total - done) / rate if rate > 0 else 0.0
        sys.stderr.write(f"\r{done}/{self.total} {self.unit}  {rate:.1f}/s  {left:.0f} s left ")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 60 + "\r")
            sys.stderr.flush()


def run(indir: Path, outdir: Path, settings: Settings, recursive=False, pattern=None, jobs=None,
        skip_existing=False, progress=False, report=None, client=None, note=None) -> Summary:
    """Process a folder. ``report(path, reason)`` is called for each failure,
    ``note(message)`` for each file left out (:func:`find_inputs`).

    With a Dask ``client`` the files are processed on its cluster (whose
    workers must see the same paths) instead of local processes.
    """
    report = report or (lambda path, reason: None)
    started = time.monotonic()
    summary = Summary()
    tasks = []
    for rel in find_inputs(indir, outdir, recursive, pattern, note=note):
        dst = output_for(rel, outdir, settings.fmt)
        if skip_existing and dst.exists():
            summary.skipped += 1
            continue
        tasks.append((Path(indir) / rel, dst, settings))
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
            _run_cluster(client, tasks, record)
        elif jobs == 1:
            for task in tasks:
                record(_work(task))
        else:
            _run_pool(tasks, jobs, record)
    except KeyboardInterrupt:
        summary.interrupted = True
    bar.close()
    summary.seconds = time.monotonic() - started
    return summary


#: True while this process is the parent of a pool of worker processes.
POOL_RUNNING = False


def _run_pool(tasks, jobs, record):
    global POOL_RUNNING
    POOL_RUNNING = True
    try:
        _run_pool_inner(tasks, jobs, record)
    finally:
        POOL_RUNNING = False


def _run_pool_inner(tasks, jobs, record):
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init)
    pending = set()
    queue = iter(tasks)
    try:
        # Keep a few tasks per worker in flight, so an interrupt has little to cancel.
        for task in queue:
            pending.add(pool.submit(_work, task))
            if len(pending) >= 2 * jobs:
                break
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                record(future.result())
                nxt = next(queue, None)
                if nxt is not None:
                    pending.add(pool.submit(_work, nxt))
        pool.shutdown(wait=True)
    except KeyboardInterrupt:
        _stop_workers(pool)
        for future in pending:  # files that completed while we were stopping
            if future.done() and not future.cancelled() and future.exception() is None:
                record(future.result())
        raise


def _stop_workers(pool, grace: float = 2.0) -> None:
    """Cancel queued files, let running ones finish for ``grace`` seconds, then
    terminate the workers (SIGTERM: they unwind and remove their temporary files)."""
    processes = list(getattr(pool, "_processes", {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + grace
    for p in processes:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in processes:
        if p.is_alive():
            p.terminate()
    for p in processes:
        p.join(2.0)
        if p.is_alive():
            p.kill()


def _run_cluster(client, tasks, record):
    """The same per-file work as local processes, as tasks on a Dask cluster."""
    from distributed import as_completed

    from .cluster import serial

    futures = {}
    for src, dst, settings in tasks:  # workers have their own working folder
        future = client.submit(serial, _work, (src.absolute(), dst.absolute(), settings), pure=False)
        futures[future] = (str(src), str(src.absolute()))
    try:
        for future in as_completed(futures, loop=client.loop):
            try:
                _, ok, mp, reason = future.result()
                shown, absolute = futures[future]
                record((shown, ok, mp, reason.replace(absolute, shown)))
            except Exception as e:  # the worker died or the task was lost
                record((futures[future][0], False, 0.0, f"the cluster could not run it: {e}"))
    except KeyboardInterrupt:
        client.cancel(list(futures))
        raise

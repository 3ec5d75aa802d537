"""Into a Zarr store band by band: every band writes its own chunks.

The output array is chunked in whole bands (a chunk holds the rows of one
band, :data:`kernelcli.io.zarr_store.CHUNK_COLUMNS` columns and every
channel), so bands are computed and written in any order, on local threads
or as tasks on a Dask cluster whose workers write their chunks straight into
the store (tasks carry the paths and rows, never pixels), and no two bands
ever write the same chunk. The store is written in a temporary folder beside
the target and renamed into place when every band is in
(:func:`kernelcli.io.sinks.atomic_folder`).

A Zarr input goes in bands whatever its size (its chunks are read as the
bands reach them); a Zarr output takes a ``.npy``, TIFF, PNG or Zarr input.
"""

from __future__ import annotations

import collections
import math
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as futures_wait
from pathlib import Path

import numpy as np

from .. import engine
from ..errors import ImageWriteError, UsageError
from ..io.pixels import to_array
from .bands import band_rows, compute_band, plan

#: Seconds a failed or stopped run waits for the bands still running before
#: it removes the store they write into.
STOP_WAIT = 10.0

#: The inputs a Zarr output is written from (:func:`kernelcli.io.inputs.band_kind`).
ZARR_INPUTS = ("npy", "tiff", "png", "zarr")


def zarr_run(input, kind: str | None, output, fmt: str | None) -> bool:
    """Does this run go in bands because of Zarr: a Zarr input (into a
    ``.npy``, TIFF, PNG or Zarr output), or a Zarr output? An input a Zarr
    output cannot be written from is refused here."""
    from ..io.zarr_store import is_zarr_name

    to_zarr = output not in (None, "-") and is_zarr_name(output) and not fmt
    if to_zarr and kind not in ZARR_INPUTS:
        raise UsageError(f"a Zarr OUTPUT is written band by band from a .npy, TIFF, PNG or Zarr INPUT, "
                         f"not {str(input)!r}; convert it to one of them first")
    if kind == "zarr" and output == "-":
        raise UsageError("a Zarr INPUT goes in bands into a .npy, TIFF, PNG or Zarr file; OUTPUT cannot be stdout")
    return to_zarr or kind == "zarr"


def write_band(job, layout, target: str, f0: int, f1: int, scaling: str, offset: float, lock=None,
               given=None) -> list:
    """Compute final rows ``[f0, f1)``, convert them to the output's pixels
    and write them into their chunks of the store at ``target``; returns
    the notes. (Runs on a local thread or a Dask worker.)"""
    from ..io.zarr_store import write_zarr_rows

    result = compute_band(job, f0, f1, lock, given)
    notes = list(result.notes)
    write_zarr_rows(target, layout, f0, zarr_pixels(result, scaling, offset, notes))
    return notes


def zarr_pixels(result, scaling: str, offset: float, notes: list) -> np.ndarray:
    """What a Zarr output stores of a band of results: a picture's pixels as
    a TIFF holds them (8- or 16-bit, or float), and float32 values as a
    ``.npy`` holds them for anything else (a bare array, a filter bank's
    maps, more than four channels)."""
    channels = 1 if result.pixels.ndim == 2 else result.pixels.shape[2]
    if result.labels or channels > 4 or (result.mode is None and result.range_max is None):
        return np.ascontiguousarray(result.pixels, dtype=np.float32)
    return to_array(result, "TIFF", scaling, offset, notes)


def into_zarr(input_path, output_path, stages, tile_rows, client, threads: int, progress: bool, output,
              max_pixels, started: float, tiff=(None, None)):
    """:func:`kernelcli.run.tiled.run` into a Zarr store: the same report."""
    from ..io.sinks import atomic_folder
    from ..io.zarr_store import create_zarr, is_zarr_store, output_layout, zarr_module
    from .tiled import Report, _png_reader, _rows_bar, open_source

    if any(tiff):
        raise UsageError("--tiff-tile and --tiff-compression are for a TIFF OUTPUT, not a Zarr store")
    if output.scaling == "stretch":
        raise UsageError("--scaling stretch needs every value before the first is written; it cannot run in "
                         "bands (use clip or abs, or write .npy)")
    zarr_module(str(output_path))  # missing: said before any work
    source = open_source(input_path, max_pixels)
    if source.kind == "png" and client is not None:
        raise UsageError("a PNG is read in bands in order, on this machine: convert the PNG to TIFF first "
                         "(no --scheduler)")
    job, final_h = plan(source, stages.conv, stages.relu, stages.pool, stages.gray, stages.alpha)
    reader = _png_reader(job) if source.kind == "png" else None
    try:
        probe = compute_band(job, 0, 1, given=None if reader is None else reader.band(job, 0, 1))
        notes = list(probe.notes)
        first = zarr_pixels(probe, output.scaling, output.offset, notes)
        out_shape = (final_h,) + first.shape[1:]
        rows = band_rows(job, final_h, math.prod(probe.pixels.shape[1:]) * 4, tile_rows)
        bands = [(f0, min(f0 + rows, final_h)) for f0 in range(0, final_h, rows)]
        layout = output_layout(source.layout if source.kind == "zarr" else None, out_shape, rows,
                               _steps(stages))
        bar = _rows_bar(job, final_h, progress)
        with atomic_folder(Path(output_path), is_zarr_store) as tmp:
            tmp = os.path.abspath(tmp)
            create_zarr(tmp, layout, out_shape, first.dtype)
            settings = (job, layout, tmp, output.scaling, output.offset)
            # The first band alone: its compressed size tells the disk space the store needs.
            notes += write_band(*settings[:3], *bands[0], *settings[3:],
                                given=None if reader is None else reader.band(job, *bands[0]))
            bar.update(bands[0][1])
            _check_space(Path(output_path), tmp, len(bands))
            if client is not None:
                notes += _on_cluster(client, settings, bands[1:], bar)
            else:
                notes += _on_threads(settings, bands[1:], threads, reader, bar)
        bar.close()
    finally:
        if reader is not None:
            reader.close()
    return Report(len(bands), rows, out_shape, time.monotonic() - started, list(dict.fromkeys(notes)))


def _steps(stages) -> tuple:
    """Input pixels per output pixel along rows and columns (stride, then pooling)."""
    sy, sx = engine.pair(stages.conv.stride, "stride")
    if stages.pool is None:
        return sy, sx
    py, px = engine.pair(stages.pool.size if stages.pool.stride is None else stages.pool.stride, "pool stride")
    return sy * py, sx * px


def _on_threads(settings, bands, threads: int, reader, bar) -> list:
    """The bands on local threads, a few ahead of the oldest (a PNG's rows are
    read here, in order, as each band is submitted); each writes its chunks."""
    job, layout, target, scaling, offset = settings
    lock = threading.Lock()
    notes: list = []
    pending: collections.deque = collections.deque()
    waiting = iter(bands)
    pool_ = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="kernelcli-zarr-band")

    def submit(band):
        given = None if reader is None else reader.band(job, *band)
        pending.append((band, pool_.submit(write_band, job, layout, target, *band, scaling, offset, lock, given)))
    try:
        for band in waiting:
            submit(band)
            if len(pending) > max(1, threads):
                break
        while pending:
            (_, f1), future = pending.popleft()
            notes += future.result()
            bar.update(f1)
            band = next(waiting, None)
            if band is not None:
                submit(band)
    except BaseException as e:
        # No band may write after the store is removed (it would leave chunks
        # behind). On Ctrl-C the process ends: the chunks being written are
        # finished and no other starts (a band may be stuck reading its
        # input); after an error the running bands are waited for a while.
        pool_.shutdown(wait=False, cancel_futures=True)
        if isinstance(e, KeyboardInterrupt):
            from ..io.zarr_store import stop_writing

            stop_writing()
        else:
            futures_wait([future for _, future in pending if not future.cancelled()], timeout=STOP_WAIT)
        raise
    pool_.shutdown(wait=True)
    return notes


def _on_cluster(client, settings, bands, bar) -> list:
    """The bands as tasks on the cluster; each worker writes its band's chunks."""
    from distributed import as_completed

    from .cluster import serial

    futures = {client.submit(serial, write_band, *settings[:3], f0, f1, *settings[3:], pure=False): (f0, f1)
               for f0, f1 in bands}
    notes: list = []
    done = bands[0][0] if bands else 0
    try:
        for future in as_completed(list(futures), loop=client.loop):
            f0, f1 = futures[future]
            try:
                notes += future.result()
            except Exception as e:
                raise ImageWriteError(f"rows {f0}-{f1 - 1} failed on the cluster: {e}") from None
            done += f1 - f0
            bar.update(done)
    except BaseException:
        client.cancel(list(futures))
        raise
    return notes


def _stored_bytes(folder: str) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


def _check_space(path: Path, tmp: str, count: int) -> None:
    """Refuse, once the first band is written, a store whose bands would not
    fit on the disk if each took as much room as the first (compressed sizes
    are not known before: an upper bound by the raw size would refuse stores
    that compress well)."""
    need = _stored_bytes(tmp) * (count - 1)
    try:
        free = shutil.disk_usage(tmp).free
    except OSError:
        return  # the writes themselves will say what is wrong
    if need > free:
        raise ImageWriteError(f"{path}: the store needs about {need / 2**30:.2f} GiB (its first band's size "
                              f"times {count} bands) but {path.parent or '.'} has {free / 2**30:.2f} GiB free")
